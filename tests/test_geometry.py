"""Cell geometry, Pillow's NEAREST sampling, grid -> mask and the grid -> mask -> grid identity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import naive
import segtext as st


@pytest.mark.parametrize("n_pixels", [1, 2, 3, 5, 7, 15, 16, 17, 31, 32, 33, 100, 333, 478, 640, 1200])
def test_cell_index_formula(n_pixels):
    for n_cells in sorted({1, 2, 3, 5, 7, 16, 24, 32, 64, n_pixels}):
        if n_cells > n_pixels:
            continue
        got = st.cell_index(n_pixels, n_cells)
        assert got.dtype == np.int64
        assert got.shape == (n_pixels,)
        np.testing.assert_array_equal(got, naive.cell_index(n_pixels, n_cells))


@given(hs.integers(1, 2000), hs.data())
def test_cell_index_properties(n_pixels, data):
    n_cells = data.draw(hs.integers(1, n_pixels))
    got = st.cell_index(n_pixels, n_cells)
    np.testing.assert_array_equal(got, naive.cell_index(n_pixels, n_cells))
    # monotone, starts at 0, ends at n_cells - 1, and (n_pixels >= n_cells) every cell is non-empty
    assert got[0] == 0 and got[-1] == n_cells - 1
    assert np.all(np.diff(got) >= 0) and np.all(np.diff(got) <= 1)
    assert len(np.unique(got)) == n_cells


def test_pillow_nearest_index_exhaustive_small():
    """Every (H, h) with H <= 300 and a spread of h, including the exact-tie cases (h | H, 2h | H)."""
    for H in range(1, 301):
        cells = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 20, 24, 25, 30, 32, 48, 64, 100, H}
        cells |= {d for d in range(1, min(H, 40) + 1) if H % d == 0}
        for h in sorted(c for c in cells if c <= H):
            got = st.pillow_nearest_index(H, h)
            want = naive.pillow_nearest_index(H, h)
            assert got.dtype == np.int64, (H, h)
            assert got.shape == (h,), (H, h)
            assert np.array_equal(got, want), (H, h, got, want)


@given(hs.integers(1, 1500), hs.data())
def test_pillow_nearest_index_random(H, data):
    h = data.draw(hs.integers(1, min(H, 128)))
    np.testing.assert_array_equal(st.pillow_nearest_index(H, h), naive.pillow_nearest_index(H, h))


@given(hs.integers(1, 1200), hs.data())
def test_pillow_sample_lies_in_its_cell(H, data):
    h = data.draw(hs.integers(1, min(H, 100)))
    idx = st.pillow_nearest_index(H, h)
    cells = st.cell_index(H, h)
    np.testing.assert_array_equal(cells[idx], np.arange(h))


# ---------------------------------------------------------------------------------------- grid_to_mask


@given(
    hnp.arrays(
        np.int32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8), elements=hs.integers(0, 9)
    ),
    hs.data(),
)
def test_grid_to_mask_matches_naive(grid, data):
    h, w = grid.shape
    H = data.draw(hs.integers(h, 40))
    W = data.draw(hs.integers(w, 40))
    for method in ("exact", "t4s"):
        got = st.grid_to_mask(grid, (H, W), method=method)
        assert got.shape == (H, W)
        np.testing.assert_array_equal(got, naive.grid_to_mask(grid, (H, W), method=method), err_msg=method)



@given(
    hs.integers(1, 8).flatmap(lambda w: hs.lists(
        hs.lists(hs.integers(0, 1), min_size=w, max_size=w) | hs.integers(0, 1).map(lambda v: [v] * w),
        min_size=1, max_size=8)),
    hs.lists(hs.integers(0, 7), min_size=0, max_size=8),
    hs.integers(1, 40), hs.integers(1, 40),
)
def test_grid_to_mask_rows_repeated_uniform_or_empty(rows, repeats, H, W):
    """The upsampler's shortcuts (a one-value grid row is one fill; a row equal to one written
    before is copied from it; a band of no pixel rows is skipped) agree with the naive twin:
    grids of 0/1 rows, uniform rows and rows repeated further down, any output size (smaller
    than the grid too, where bands and columns of no pixels occur)."""
    for k in repeats:  # repeat some earlier rows further down
        rows.append(list(rows[k % len(rows)]))
    grid = np.array(rows[:12], np.uint8)
    for method in ("exact", "t4s"):
        got = st.grid_to_mask(grid, (H, W), method=method)
        np.testing.assert_array_equal(got, naive.grid_to_mask(grid, (H, W), method=method), err_msg=method)

def test_grid_to_mask_default_is_exact():
    grid = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(st.grid_to_mask(grid, (7, 9)), naive.grid_to_mask(grid, (7, 9), "exact"))


def test_grid_to_mask_t4s_is_pytorch_legacy_nearest():
    grid = np.array([[0, 1], [2, 3]], dtype=np.int32)
    got = st.grid_to_mask(grid, (5, 3), method="t4s")
    # rows floor(y*2/5) = 0,0,0,1,1 ; cols floor(x*2/3) = 0,0,1
    want = np.array([[0, 0, 1]] * 3 + [[2, 2, 3]] * 2)
    np.testing.assert_array_equal(got, want)
    # ... and exact picks the centre cell: rows (2y+1)*2//10 = 0,0,1,1,1 ; cols (2x+1)*2//6 = 0,1,1
    got = st.grid_to_mask(grid, (5, 3), method="exact")
    np.testing.assert_array_equal(got, np.array([[0, 1, 1]] * 2 + [[2, 3, 3]] * 3))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int16, np.uint16, bool])
def test_grid_to_mask_smallest_unsigned_dtype(dtype):
    grid = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    out = st.grid_to_mask(grid, (5, 7))
    assert out.dtype == (np.bool_ if dtype is bool else np.uint8)
    np.testing.assert_array_equal(out, naive.grid_to_mask(grid, (5, 7)))
    assert st.grid_to_mask(grid, (5, 7), dtype=dtype).dtype == np.dtype(dtype)  # unless dtype is given


@pytest.mark.parametrize("top, want", [(1, np.uint8), (255, np.uint8), (256, np.uint16),
                                       (65535, np.uint16), (65536, np.uint32), (2**32, np.uint64)])
def test_grid_to_mask_dtype_holds_the_largest_id(top, want):
    grid = np.array([[0, top]], np.int64)
    out = st.grid_to_mask(grid, (2, 4))
    assert out.dtype == want
    assert out.tolist() == [[0, 0, top, top]] * 2


def test_grid_to_mask_keeps_bool_and_negative_ids():
    assert st.grid_to_mask(np.array([[False, True]]), (1, 4)).dtype == np.bool_
    out = st.grid_to_mask(np.array([[-1, 3]], np.int16), (1, 4))  # no unsigned dtype holds -1
    assert out.dtype == np.int16 and out.tolist() == [[-1, -1, 3, 3]]


def test_grid_to_mask_same_size_is_copy_of_grid():
    grid = np.arange(20, dtype=np.int32).reshape(4, 5)
    np.testing.assert_array_equal(st.grid_to_mask(grid, (4, 5)), grid)
    np.testing.assert_array_equal(st.grid_to_mask(grid, (4, 5), method="t4s"), grid)


# ------------------------------------------------------------------------- grid -> mask -> grid identity


@given(
    hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=hs.integers(0, 5),
    ),
    hs.data(),
)
def test_grid_mask_grid_identity(grid, data):
    h, w = grid.shape
    H = data.draw(hs.integers(h, 4 * h + 20), label="H")
    W = data.draw(hs.integers(w, 4 * w + 20), label="W")
    mask = st.grid_to_mask(grid, (H, W))
    for policy in ("nearest", "majority", "any"):
        back = st.mask_to_grid(mask, (h, w), policy=policy)
        assert back.dtype == np.int32
        np.testing.assert_array_equal(back, grid, err_msg=f"policy={policy} H={H} W={W}")


@given(
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)),
    hs.data(),
)
def test_grid_mask_grid_identity_binary(grid, data):
    h, w = grid.shape
    H = data.draw(hs.integers(h, 4 * h + 20), label="H")
    W = data.draw(hs.integers(w, 4 * w + 20), label="W")
    thr = data.draw(hs.sampled_from([0.5, 1e-9, 0.25, 1.0]), label="threshold")
    mask = st.grid_to_mask(grid, (H, W))
    assert mask.dtype == bool
    for policy in ("nearest", "majority", "any"):
        back = st.mask_to_grid(mask, (h, w), policy=policy, threshold=thr)
        np.testing.assert_array_equal(back, grid.astype(np.int32), err_msg=f"policy={policy}")


@pytest.mark.slow
@given(
    hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=64),
        elements=hs.integers(0, 200),
    ),
    hs.data(),
)
def test_grid_mask_grid_identity_large(grid, data):
    h, w = grid.shape
    H = data.draw(hs.integers(h, 1200))
    W = data.draw(hs.integers(w, 1200))
    mask = st.grid_to_mask(grid, (H, W))
    for policy in ("nearest", "majority", "any"):
        np.testing.assert_array_equal(st.mask_to_grid(mask, (h, w), policy=policy), grid)


def test_grid_to_mask_bool_is_foreground_and_small_dtypes_refuse_large_ids():
    grid = np.array([[0, 256, 512, 3]], np.int64)  # 256 and 512 are 0 modulo 256
    assert st.grid_to_mask(grid, (1, 4), dtype=bool).tolist() == [[False, True, True, True]]
    with pytest.raises(ValueError, match="id 512, which dtype uint8 cannot hold"):
        st.grid_to_mask(grid, (1, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="id -1, which dtype uint16 cannot hold"):
        st.grid_to_mask(np.array([[-1, 2]]), (1, 4), dtype=np.uint16)
    assert st.grid_to_mask(np.array([[1, 2]], np.int64), (1, 2), dtype=np.uint8).tolist() == [[1, 2]]
