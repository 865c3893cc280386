"""Bad input gets a clear error: the exception type and a meaningful part of the message."""

import numpy as np
import pytest

import naive
import segtext as st

VE = (ValueError, TypeError)
MASK = np.zeros((20, 30), dtype=bool)
MASK[5:15, 10:20] = True


# ------------------------------------------------------------------------------------------ mask_to_grid


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.zeros(10, dtype=bool), id="1-D"),
        pytest.param(np.zeros((4, 5, 3), dtype=np.uint8), id="3-D"),
        pytest.param(np.zeros((1, 4, 5), dtype=bool), id="3-D-batch"),
        pytest.param(np.array(1), id="0-D"),
    ],
)
def test_mask_not_2d(mask):
    with pytest.raises(ValueError, match=r"(?i)2-?D|two[- ]dim|ndim|dimension"):
        st.mask_to_grid(mask, (1, 1))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_mask_empty(shape):
    with pytest.raises(ValueError, match=r"(?i)empty|zero|at least|positive"):
        st.mask_to_grid(np.zeros(shape, dtype=bool), (1, 1))


@pytest.mark.parametrize("grid_size", [(21, 16), (16, 31), (64, 64)])
def test_grid_larger_than_image(grid_size):
    with pytest.raises(ValueError, match=r"(?i)larger|exceed|bigger|greater|smaller|at most|<="):
        st.mask_to_grid(MASK, grid_size)


def test_grid_equal_to_image_is_fine():
    np.testing.assert_array_equal(st.mask_to_grid(MASK, (20, 30)), MASK.astype(np.int32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_mask_nan_inf(bad):
    m = MASK.astype(np.float64)
    m[3, 4] = bad
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        st.mask_to_grid(m, (4, 4))


def test_float_mask_non_integral():
    m = MASK.astype(np.float32) * 0.7
    with pytest.raises(ValueError, match=r"(?i)integ"):
        st.mask_to_grid(m, (4, 4))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.float64])
def test_negative_labels(dtype):
    m = MASK.astype(dtype) * 3
    m[0, 0] = -1
    with pytest.raises(ValueError, match=r"(?i)negative"):
        st.mask_to_grid(m, (4, 4))


def test_negative_ignore_index_is_allowed():
    m = np.zeros((8, 8), dtype=np.int32)
    m[:4, :4] = 3
    m[4:, :] = -1
    got = st.mask_to_grid(m, (2, 2), ignore_index=-1, empty_label=5)
    np.testing.assert_array_equal(got, [[3, 0], [5, 5]])


@pytest.mark.parametrize("policy", ["mode", "Majority", "", "bilinear", None])
def test_bad_policy(policy):
    with pytest.raises(VE, match=r"(?i)policy"):
        st.mask_to_grid(MASK, (4, 4), policy=policy)


@pytest.mark.parametrize("threshold", [0, 0.0, -0.5, 1.0000001, 2, float("nan")])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match=r"(?i)threshold"):
        st.mask_to_grid(MASK, (4, 4), threshold=threshold)


@pytest.mark.parametrize(
    "grid_size",
    [
        pytest.param((0, 4), id="zero"),
        pytest.param((4, -1), id="negative"),
        pytest.param((4,), id="one-elem"),
        pytest.param((4, 4, 4), id="three-elem"),
        pytest.param((4.5, 4), id="float"),
        pytest.param("16", id="str"),
        pytest.param(0, id="int-zero"),
        pytest.param(-3, id="int-negative"),
        pytest.param(None, id="none"),
    ],
)
def test_bad_grid_size(grid_size):
    with pytest.raises(VE, match=r"(?i)grid[_ ]size"):
        st.mask_to_grid(MASK, grid_size)


def test_numpy_integer_grid_size_is_fine():
    np.testing.assert_array_equal(
        st.mask_to_grid(MASK, (np.int64(4), np.int32(5))), naive.mask_to_grid(MASK, (4, 5))
    )


# ------------------------------------------------------------------------------------------- rle_to_grid


@pytest.mark.parametrize(
    "rle",
    [
        pytest.param([20, 30], id="list"),
        pytest.param("VQi31m>0O2N", id="str"),
        pytest.param(None, id="none"),
        pytest.param(MASK, id="ndarray"),
    ],
)
def test_rle_not_a_dict(rle):
    with pytest.raises(VE, match=r"(?i)dict|mapping|rle"):
        st.rle_to_grid(rle, (4, 4))


def test_rle_missing_keys():
    with pytest.raises(VE, match=r"size"):
        st.rle_to_grid({"counts": [600]}, (4, 4))
    with pytest.raises(VE, match=r"counts"):
        st.rle_to_grid({"size": [20, 30]}, (4, 4))


@pytest.mark.parametrize("counts", [[10, 10], [0, 599], [601], [300, 300, 1]])
def test_rle_counts_do_not_sum(counts):
    with pytest.raises(ValueError, match=r"(?i)sum|total|600|H ?\* ?W"):
        st.rle_to_grid({"size": [20, 30], "counts": counts}, (4, 4))


def test_rle_compressed_counts_do_not_sum():
    rle = naive.compressed_rle(MASK)
    with pytest.raises(ValueError, match=r"(?i)sum|total|H ?\* ?W|size"):
        st.rle_to_grid({"size": [20, 31], "counts": rle["counts"]}, (4, 4))


def test_rle_negative_counts():
    with pytest.raises(ValueError, match=r"(?i)negative"):
        st.rle_to_grid({"size": [20, 30], "counts": [-5, 605]}, (4, 4))


@pytest.mark.parametrize("counts", ["~~~", "ab\x01", "\u00e9", "0" * 3 + "p"])
def test_rle_malformed_compressed_string(counts):
    with pytest.raises(ValueError):
        st.rle_to_grid({"size": [20, 30], "counts": counts}, (4, 4))


def test_rle_grid_larger_than_image():
    rle = naive.compressed_rle(MASK)
    with pytest.raises(ValueError, match=r"(?i)larger|exceed|bigger|greater|smaller|at most|<="):
        st.rle_to_grid(rle, (32, 32))


def test_rle_bad_policy_and_threshold():
    rle = naive.compressed_rle(MASK)
    with pytest.raises(VE, match=r"(?i)policy"):
        st.rle_to_grid(rle, (4, 4), policy="median")
    with pytest.raises(ValueError, match=r"(?i)threshold"):
        st.rle_to_grid(rle, (4, 4), threshold=0)


def test_rles_to_grids_reports_bad_member():
    good = naive.compressed_rle(MASK)
    with pytest.raises(VE):
        st.rles_to_grids([good, {"size": [20, 30], "counts": [1, 2]}], (4, 4))
    with pytest.raises(VE):
        st.rles_to_grids([good, "not a dict"], (4, 4))


# ---------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("enc", [st.encode_rrle, st.encode_isd, st.encode_irle])
def test_labels_list_too_short(enc):
    with pytest.raises(ValueError, match=r"too short"):
        enc(np.array([[0, 1, 2]], dtype=np.int32), ["others", "dog"])
    with pytest.raises(ValueError, match=r"too short|empty"):
        enc(np.array([[0]], dtype=np.int32), [])


# ---------------------------------------------------------------------------------------------- decoder


def test_decode_bad_mode():
    with pytest.raises(ValueError, match=r"(?i)mode"):
        st.decode_rrle("others *4\n", mode="lenient")


def test_decode_bad_unknown_policy():
    with pytest.raises(ValueError, match=r"(?i)unknown"):
        st.decode_rrle("others *4\n", labels=["others"], unknown="closest")


@pytest.mark.parametrize("grid_size", [(0, 4), (4,), (-1, -1), (2.5, 4), "16"])
def test_decode_bad_grid_size(grid_size):
    with pytest.raises(VE, match=r"(?i)grid[_ ]size"):
        st.decode_rrle("others *4\n", grid_size=grid_size)


# ---------------------------------------------------------------------------------------------- grid_to_mask


def test_grid_to_mask_bad_method():
    with pytest.raises(ValueError, match=r"(?i)method"):
        st.grid_to_mask(np.zeros((2, 2), dtype=np.int32), (4, 4), method="bilinear")
