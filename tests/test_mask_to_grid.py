"""mask_to_grid against the plain references: Pillow NEAREST, exact per-cell votes, 'any'."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive
import segtext as st
from strategies import binary_masks, grid_sizes_for, label_maps, make_mask

THRESHOLDS = [0.5, 1.0, 0.25, 0.75, 1e-6, 0.3, 0.7, 0.1, 0.9, 1 / 3, 2 / 3, 0.125]
threshold_st = hs.one_of(hs.sampled_from(THRESHOLDS), hs.floats(min_value=1e-6, max_value=1.0))


# ----------------------------------------------------------------------------------------- nearest


def test_nearest_equals_pillow_1d_many_sizes():
    """A (1, H) and an (H, 1) mask resized by Pillow itself, for every H in 1..300."""
    rng = np.random.default_rng(0)
    for H in range(1, 301):
        values = rng.integers(0, 250, size=H)
        cells = {1, 2, 3, 4, 5, 7, 8, 10, 16, 24, 32, 64, H} | {d for d in range(1, 41) if H % d == 0}
        for h in sorted(c for c in cells if c <= H):
            row = values[None, :]
            got = st.mask_to_grid(row, (1, h), policy="nearest")
            want = naive.pillow_resize_nearest(row, 1, h)
            assert np.array_equal(got, want), (H, h)
            col = values[:, None]
            got = st.mask_to_grid(col, (h, 1), policy="nearest")
            want = naive.pillow_resize_nearest(col, h, 1)
            assert np.array_equal(got, want), (H, h)


@given(hs.integers(1, 300), hs.integers(1, 300), hs.data())
def test_nearest_equals_pillow_2d(H, W, data):
    h = data.draw(
        hs.one_of(hs.integers(1, min(H, 64)), hs.sampled_from([d for d in range(1, H + 1) if H % d == 0]))
    )
    w = data.draw(
        hs.one_of(hs.integers(1, min(W, 64)), hs.sampled_from([d for d in range(1, W + 1) if W % d == 0]))
    )
    seed = data.draw(hs.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    label_map = rng.integers(0, 250, size=(H, W)).astype(np.int32)
    got = st.mask_to_grid(label_map, (h, w), policy="nearest")
    assert got.dtype == np.int32 and got.shape == (h, w)
    np.testing.assert_array_equal(got, naive.pillow_resize_nearest(label_map, h, w))
    binary = rng.random((H, W)) < 0.5
    got = st.mask_to_grid(binary, (h, w), policy="nearest")
    np.testing.assert_array_equal(got, naive.pillow_resize_nearest(binary, h, w))


def test_nearest_equals_pillow_large_labels_int32_mode():
    rng = np.random.default_rng(1)
    for H, W, h, w in [
        (478, 640, 16, 16),
        (333, 500, 24, 24),
        (640, 427, 32, 32),
        (100, 100, 64, 64),
        (37, 91, 37, 13),
    ]:
        m = rng.integers(0, 100_000, size=(H, W)).astype(np.int32)
        np.testing.assert_array_equal(
            st.mask_to_grid(m, (h, w), policy="nearest"), naive.pillow_resize_nearest(m, h, w)
        )


# ------------------------------------------------------------------------------------- binary masks


@given(binary_masks(max_side=48), hs.data())
def test_binary_all_policies_match_naive(mask, data):
    H, W = mask.shape
    h, w = data.draw(grid_sizes_for(H, W), label="grid_size")
    thr = data.draw(threshold_st, label="threshold")
    dtype = data.draw(
        hs.sampled_from([bool, np.uint8, np.int32, np.int64, np.float32, np.float64]), label="dtype"
    )
    m = mask.astype(dtype)
    for policy in ("nearest", "majority", "any"):
        got = st.mask_to_grid(m, (h, w), policy=policy, threshold=thr)
        assert got.dtype == np.int32 and got.shape == (h, w)
        want = naive.mask_to_grid(mask, (h, w), policy=policy, threshold=thr)
        np.testing.assert_array_equal(got, want, err_msg=f"policy={policy} thr={thr!r} dtype={dtype}")


def test_binary_majority_ties_go_to_foreground_at_half():
    # checkerboard with 2x2 cells: each cell has exactly 2 of 4 pixels set
    y, x = np.mgrid[0:8, 0:8]
    mask = (y + x) % 2 == 0
    np.testing.assert_array_equal(st.mask_to_grid(mask, (4, 4), policy="majority"), np.ones((4, 4)))
    np.testing.assert_array_equal(
        st.mask_to_grid(mask, (4, 4), policy="majority", threshold=0.51), np.zeros((4, 4))
    )
    np.testing.assert_array_equal(st.mask_to_grid(mask, (4, 4), policy="any"), np.ones((4, 4)))


def test_binary_threshold_exact_fractions():
    # one cell of 10 pixels with 3 set: fraction 0.3 >= 0.3 -> foreground
    mask = np.zeros((1, 10), dtype=bool)
    mask[0, :3] = True
    assert st.mask_to_grid(mask, (1, 1), threshold=0.3)[0, 0] == 1
    assert st.mask_to_grid(mask, (1, 1), threshold=0.31)[0, 0] == 0
    # 1/10 >= 0.1 and 7/10 >= 0.7: a threshold written as a decimal means that decimal
    one = np.arange(10)[None, :] < 1
    assert st.mask_to_grid(one, (1, 1), threshold=0.1)[0, 0] == 1
    seven = np.arange(10)[None, :] < 7
    assert st.mask_to_grid(seven, (1, 1), threshold=0.7)[0, 0] == 1
    assert st.mask_to_grid(seven, (1, 1), threshold=0.71)[0, 0] == 0
    mask = np.zeros((3, 1), dtype=np.uint8)
    mask[0, 0] = 1
    assert st.mask_to_grid(mask, (1, 1), threshold=1 / 3)[0, 0] == 1
    assert st.mask_to_grid(mask, (1, 1), threshold=1.0)[0, 0] == 0
    assert st.mask_to_grid(np.ones((3, 1), dtype=np.uint8), (1, 1), threshold=1.0)[0, 0] == 1


def test_default_policy_is_majority_and_default_size_16():
    rng = np.random.default_rng(3)
    mask = rng.random((50, 70)) < 0.4
    got = st.mask_to_grid(mask)
    assert got.shape == (16, 16)
    np.testing.assert_array_equal(got, naive.mask_to_grid(mask, (16, 16), "majority"))


def test_grid_size_int_means_square():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 3:20] = True
    np.testing.assert_array_equal(st.mask_to_grid(mask, 8), st.mask_to_grid(mask, (8, 8)))
    assert st.mask_to_grid(mask, 8).shape == (8, 8)


def test_non_contiguous_and_strided_views():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 5, size=(60, 80))
    for m in (base[::2, ::3], base.T, np.asfortranarray(base), base[5:45, 10:70]):
        for policy in ("nearest", "majority", "any"):
            np.testing.assert_array_equal(
                st.mask_to_grid(m, (8, 9), policy=policy),
                naive.mask_to_grid(m, (8, 9), policy=policy),
                err_msg=policy,
            )


# ---------------------------------------------------------------------------------------- label maps


@given(label_maps(max_side=40), hs.data())
def test_label_map_all_policies_match_naive(mask, data):
    H, W = mask.shape
    h, w = data.draw(grid_sizes_for(H, W), label="grid_size")
    dtype = data.draw(
        hs.sampled_from([np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float64]), label="dtype"
    )
    m = mask.astype(dtype)
    for policy in ("nearest", "majority", "any"):
        got = st.mask_to_grid(m, (h, w), policy=policy)
        assert got.dtype == np.int32 and got.shape == (h, w)
        np.testing.assert_array_equal(got, naive.mask_to_grid(mask, (h, w), policy=policy), err_msg=policy)


@given(label_maps(max_side=40, ignore=True), hs.data())
def test_label_map_ignore_index_matches_naive(mask, data):
    H, W = mask.shape
    h, w = data.draw(grid_sizes_for(H, W), label="grid_size")
    empty_label = data.draw(hs.sampled_from([0, 0, 7, 1]), label="empty_label")
    for policy in ("nearest", "majority", "any"):
        got = st.mask_to_grid(mask, (h, w), policy=policy, ignore_index=255, empty_label=empty_label)
        want = naive.mask_to_grid(mask, (h, w), policy=policy, ignore_index=255, empty_label=empty_label)
        np.testing.assert_array_equal(got, want, err_msg=f"policy={policy} empty_label={empty_label}")


def test_label_map_majority_ties_go_to_lower_id():
    m = np.array([[3, 5], [5, 3]])
    assert st.mask_to_grid(m, (1, 1), policy="majority")[0, 0] == 3
    m = np.array([[0, 4, 4, 0], [2, 2, 2, 2]])
    assert st.mask_to_grid(m, (1, 1), policy="majority")[0, 0] == 2
    m = np.array([[0, 0, 4, 4, 2]])
    assert st.mask_to_grid(m, (1, 1), policy="majority")[0, 0] == 0


def test_label_map_any_picks_most_frequent_nonzero():
    m = np.array([[0, 0, 0, 0, 0, 3, 2, 2, 9]])
    assert st.mask_to_grid(m, (1, 1), policy="any")[0, 0] == 2
    m = np.array([[0, 0, 0, 0, 0, 3, 2, 2, 3]])
    assert st.mask_to_grid(m, (1, 1), policy="any")[0, 0] == 2  # tie 2 vs 3 -> lower id
    m = np.array([[0, 0, 0, 2]])
    assert st.mask_to_grid(m, (1, 2), policy="any").tolist() == [[0, 2]]


def test_ignore_index_examples():
    m = np.array([[255, 255, 3, 255], [255, 255, 255, 0]])
    # left cell only ignore -> empty_label; right cell: 3 and 0 vote once each -> tie -> 0
    assert st.mask_to_grid(m, (1, 2), policy="majority", ignore_index=255).tolist() == [[0, 0]]
    assert st.mask_to_grid(m, (1, 2), policy="majority", ignore_index=255, empty_label=9).tolist() == [[9, 0]]
    assert st.mask_to_grid(m, (1, 2), policy="any", ignore_index=255, empty_label=9).tolist() == [[9, 3]]
    # ignore pixels must not win a majority even when they are the most frequent value
    m = np.array([[255, 255, 255, 4]])
    assert st.mask_to_grid(m, (1, 1), policy="majority", ignore_index=255).tolist() == [[4]]


def test_label_map_float_integral_equals_int():
    rng = np.random.default_rng(7)
    m = make_mask(rng, 33, 41, "noise", n_labels=5)
    m[0, 0] = 4
    for policy in ("nearest", "majority", "any"):
        np.testing.assert_array_equal(
            st.mask_to_grid(m.astype(np.float32), (7, 9), policy=policy),
            st.mask_to_grid(m, (7, 9), policy=policy),
        )


@pytest.mark.slow
@given(label_maps(min_side=64, max_side=400, ignore=True), hs.data())
def test_label_map_large_match_naive(mask, data):
    H, W = mask.shape
    h = data.draw(hs.integers(1, min(H, 64)))
    w = data.draw(hs.integers(1, min(W, 64)))
    for policy in ("nearest", "majority", "any"):
        np.testing.assert_array_equal(
            st.mask_to_grid(mask, (h, w), policy=policy, ignore_index=255),
            naive.mask_to_grid(mask, (h, w), policy=policy, ignore_index=255),
        )


def test_label_map_extreme_label_values():
    rng = np.random.default_rng(9)
    m = rng.choice(np.array([0, 5, 70_000, 2**31 - 1]), size=(37, 41)).astype(np.int64)
    for policy in ("nearest", "majority", "any"):
        np.testing.assert_array_equal(
            st.mask_to_grid(m, (7, 9), policy=policy), naive.mask_to_grid(m, (7, 9), policy=policy)
        )
    m[:6] = 255
    for policy in ("nearest", "majority", "any"):
        np.testing.assert_array_equal(
            st.mask_to_grid(m, (7, 9), policy=policy, ignore_index=255),
            naive.mask_to_grid(m, (7, 9), policy=policy, ignore_index=255),
        )


@given(n=hs.integers(1, 400), threshold=threshold_st)
def test_votes_needed_is_the_smallest_count_whose_fraction_reaches_the_threshold(n, threshold):
    """The kernels decide `majority` cells on integers; this must be exactly Python's f / n >= t."""
    from segtext import _kernels as K

    want = next((f for f in range(n + 1) if f / n >= threshold), n + 1)
    assert K.votes_needed(n, threshold) == want


# ------------------------------------------------------------------------------- many labels


@given(hs.integers(1, 24), hs.integers(1, 24), hs.integers(0, 2**32 - 1), hs.floats(0, 1), hs.data())
def test_label_map_many_labels_match_naive(H, W, seed, spread, data):
    """Up to one label a pixel (most cells then tie, and go to their lowest label), with or without
    background 0 (for 'any'), ignored pixels and an empty_label."""
    rng = np.random.default_rng(seed)
    n_labels = max(2, int(round(spread * H * W)))
    pool = np.unique(rng.integers(1, 2**31 - 1, size=n_labels))  # distinct, any size
    if data.draw(hs.booleans(), label="with background"):
        pool[0] = 0
    m = rng.choice(pool, size=(H, W)).astype(np.int64)
    h, w = data.draw(grid_sizes_for(H, W), label="grid_size")
    ignore = data.draw(hs.sampled_from([None, 255, int(pool[len(pool) // 2])]), label="ignore_index")
    if ignore is not None:
        m = np.where(rng.random((H, W)) < data.draw(hs.sampled_from([0.1, 0.5, 1.0])), ignore, m)
    m.flat[int(rng.integers(0, H * W))] = 2 if ignore != 2 else 3  # never read as binary
    empty_label = data.draw(hs.sampled_from([0, 7]), label="empty_label")
    for policy in ("majority", "any"):
        got = st.mask_to_grid(m, (h, w), policy=policy, ignore_index=ignore, empty_label=empty_label)
        want = naive.mask_to_grid(m, (h, w), policy=policy, ignore_index=ignore, empty_label=empty_label)
        np.testing.assert_array_equal(got, want, err_msg=f"policy={policy} ignore={ignore}")


@pytest.mark.parametrize("grid_size", [(4, 4), (16, 16), (5, 11)])
def test_label_map_of_65536_labels_matches_naive(grid_size):
    m = np.random.default_rng(3).permutation(65536).reshape(256, 256)
    for policy in ("majority", "any"):
        np.testing.assert_array_equal(st.mask_to_grid(m, grid_size, policy=policy),
                                      naive.mask_to_grid(m, grid_size, policy=policy), err_msg=policy)
    m[m % 3 == 0] = 255
    np.testing.assert_array_equal(st.mask_to_grid(m, grid_size, ignore_index=255, empty_label=9),
                                  naive.mask_to_grid(m, grid_size, ignore_index=255, empty_label=9))


def test_label_map_of_one_label_a_pixel_costs_no_more_than_its_pixels():
    """512 x 512 distinct labels on a 256 x 256 grid: each 2 x 2 cell ties four ways and takes its
    lowest label. A vote over every label in every cell would take minutes (262,144 x 65,536)."""
    import time

    m = np.random.default_rng(5).permutation(512 * 512).reshape(512, 512)
    t0 = time.perf_counter()
    got = st.mask_to_grid(m, 256)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(got, m.reshape(256, 2, 256, 2).min(axis=(1, 3)))
    assert elapsed < 10, f"{elapsed:.1f} s"
