"""torch tensors are accepted wherever a mask is (when torch is installed)."""

import numpy as np
import pytest

import naive
import segtext as st

torch = pytest.importorskip("torch")


def _masks():
    rng = np.random.default_rng(0)
    binary = rng.random((37, 53)) < 0.4
    labels = rng.integers(0, 6, size=(37, 53))
    labels[0, 0] = 5
    return binary, labels


@pytest.mark.parametrize("policy", ["nearest", "majority", "any"])
def test_torch_binary_masks(policy):
    binary, _ = _masks()
    want = naive.mask_to_grid(binary, (8, 11), policy=policy)
    for t in (
        torch.from_numpy(binary),
        torch.from_numpy(binary.astype(np.uint8)),
        torch.from_numpy(binary).float(),
    ):
        got = st.mask_to_grid(t, (8, 11), policy=policy)
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("policy", ["nearest", "majority", "any"])
def test_torch_label_maps(policy):
    _, labels = _masks()
    want = naive.mask_to_grid(labels, (8, 11), policy=policy)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.int16):
        got = st.mask_to_grid(torch.from_numpy(labels).to(dtype), (8, 11), policy=policy)
        np.testing.assert_array_equal(got, want, err_msg=str(dtype))


def test_torch_non_contiguous_and_ignore():
    _, labels = _masks()
    t = torch.from_numpy(labels).t()  # non-contiguous view
    np.testing.assert_array_equal(st.mask_to_grid(t, (5, 5)), naive.mask_to_grid(labels.T, (5, 5)))
    lab = labels.copy()
    lab[:10] = 255
    np.testing.assert_array_equal(
        st.mask_to_grid(torch.from_numpy(lab), (6, 6), ignore_index=255),
        naive.mask_to_grid(lab, (6, 6), ignore_index=255),
    )


def test_torch_errors():
    with pytest.raises(ValueError):
        st.mask_to_grid(torch.zeros(10, dtype=torch.bool), (2, 2))
    m = torch.zeros((8, 8))
    m[0, 0] = float("nan")
    with pytest.raises(ValueError):
        st.mask_to_grid(m, (2, 2))


def test_torch_requires_grad():
    binary, labels = _masks()
    t = torch.from_numpy(binary.astype(np.float32)).requires_grad_(True)
    np.testing.assert_array_equal(st.mask_to_grid(t, (4, 4)), naive.mask_to_grid(binary, (4, 4)))
