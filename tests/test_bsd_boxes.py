"""Box helpers (box_from_mask, quantize_box, dequantize_box) against the naive integer arithmetic, and
merging decoded objects (st.merge_objects, res.mask())."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import naive_bricks as nb
import segtext as st

size_st = hs.tuples(hs.integers(1, 2500), hs.integers(1, 2500))
scale_st = hs.sampled_from([1000, 1000, 1, 7, 100, 999, 1024, 4096])


def as_box(box):
    assert len(box) == 4
    assert all(isinstance(v, (int, np.integer)) for v in box), box
    return tuple(int(v) for v in box)


@hs.composite
def boxes_in(draw, size_strategy=size_st):
    H, W = draw(size_strategy)
    x1 = draw(hs.integers(0, W - 1))
    x2 = draw(hs.integers(x1 + 1, W))
    y1 = draw(hs.integers(0, H - 1))
    y2 = draw(hs.integers(y1 + 1, H))
    return (H, W), (x1, y1, x2, y2)


# --------------------------------------------------------------------------------------- box_from_mask


@settings(max_examples=100)
@given(
    H=hs.integers(1, 70),
    W=hs.integers(1, 70),
    kind=hs.sampled_from(nb.OBJECT_KINDS),
    seed=hs.integers(0, 2**32 - 1),
    rle=hs.booleans(),
)
def test_box_from_mask_is_tight(H, W, kind, seed, rle):
    m = nb.make_object(np.random.default_rng(seed), H, W, kind)
    got = as_box(st.box_from_mask(nb.coco_rle(m) if rle else m))
    assert got == nb.box_from_mask(m)
    x1, y1, x2, y2 = got
    assert m[y1:y2, x1:x2].sum() == m.sum()
    assert m[y1, :].any() and m[y2 - 1, :].any() and m[:, x1].any() and m[:, x2 - 1].any()


def test_box_from_mask_literal():
    m = np.zeros((5, 7), np.uint8)
    m[1, 2] = 1
    m[3, 5] = 1
    assert as_box(st.box_from_mask(m)) == (2, 1, 6, 4)
    assert as_box(st.box_from_mask(np.ones((5, 7), bool))) == (0, 0, 7, 5)


@pytest.mark.parametrize("rle", [False, True])
def test_box_from_mask_empty(rle):
    m = np.zeros((4, 6), bool)
    with pytest.raises(ValueError, match=r"(?i)empty|no box|no foreground"):
        st.box_from_mask(nb.coco_rle(m) if rle else m)


# ----------------------------------------------------------------------------- quantize / dequantize


@settings(max_examples=300)
@given(data=boxes_in(), scale=scale_st)
def test_quantize_box_matches_naive(data, scale):
    size, box = data
    assert as_box(st.quantize_box(box, size, scale=scale)) == nb.quantize_box(box, size, scale)


@settings(max_examples=300)
@given(data=boxes_in())
def test_quantize_box_default_scale_is_1000(data):
    size, box = data
    assert as_box(st.quantize_box(box, size)) == nb.quantize_box(box, size, 1000)


@settings(max_examples=300)
@given(size=size_st, scale=scale_st, q=hs.lists(hs.integers(-50, 5000), min_size=4, max_size=4))
def test_dequantize_box_matches_naive(size, scale, q):
    q = [min(v, 2 * scale) for v in q]
    got = as_box(st.dequantize_box(tuple(q), size, scale=scale))
    assert got == nb.dequantize_box(q, size, scale)
    H, W = size
    assert 0 <= got[0] <= W and 0 <= got[2] <= W and 0 <= got[1] <= H and 0 <= got[3] <= H


@settings(max_examples=300)
@given(data=boxes_in(), scale=scale_st)
def test_dequantised_box_covers_the_box(data, scale):
    size, box = data
    back = as_box(st.dequantize_box(st.quantize_box(box, size, scale=scale), size, scale=scale))
    assert back[0] <= box[0] and back[1] <= box[1] and back[2] >= box[2] and back[3] >= box[3]


DIVISORS_OF_1000 = [1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000]


@settings(max_examples=200)
@given(data=boxes_in(hs.tuples(hs.sampled_from(DIVISORS_OF_1000), hs.sampled_from(DIVISORS_OF_1000))))
def test_quantisation_is_lossless_when_the_side_divides_1000(data):
    size, box = data
    assert as_box(st.dequantize_box(st.quantize_box(box, size), size)) == box


@pytest.mark.parametrize(
    "box, size, q",
    [
        ((20, 20, 100, 60), (100, 200), (100, 200, 500, 600)),
        ((0, 0, 640, 480), (480, 640), (0, 0, 1000, 1000)),
        ((1, 1, 2, 2), (3, 3), (333, 333, 667, 667)),
        ((617, 1, 618, 2), (3, 1234), (500, 333, 501, 667)),
        ((0, 0, 1, 1), (1, 1), (0, 0, 1000, 1000)),
    ],
)
def test_quantize_literal(box, size, q):
    assert as_box(st.quantize_box(box, size)) == q


@pytest.mark.parametrize(
    "q, size, box",
    [
        ((100, 200, 500, 600), (100, 200), (20, 20, 100, 60)),
        ((333, 333, 667, 667), (3, 3), (0, 0, 3, 3)),
        ((500, 333, 501, 667), (3, 1234), (617, 0, 619, 3)),
        ((0, 0, 1200, 1500), (100, 200), (0, 0, 200, 100)),  # clipped
        ((-10, -10, 500, 500), (100, 200), (0, 0, 100, 50)),  # clipped
    ],
)
def test_dequantize_literal(q, size, box):
    assert as_box(st.dequantize_box(q, size)) == box


# ------------------------------------------------------------------------------------------- merging


def _decoded(objs, size, S=16):
    text = st.encode_bsd(objs, image_size=size, resolution=S)
    return st.decode_bsd(text, image_size=size, resolution=S)


@settings(max_examples=100)
@given(
    H=hs.integers(1, 60),
    W=hs.integers(1, 60),
    kinds=hs.lists(hs.sampled_from(nb.OBJECT_KINDS), min_size=0, max_size=5),
    seed=hs.integers(0, 2**32 - 1),
    names=hs.lists(hs.sampled_from(["dog", "cat", "bird"]), min_size=5, max_size=5),
)
def test_merge_objects_union_and_label_map(H, W, kinds, seed, names):
    rng = np.random.default_rng(seed)
    objs = [(names[i], nb.make_object(rng, H, W, k)) for i, k in enumerate(kinds)]
    res = _decoded(objs, (H, W))
    assert len(res.objects) == len(objs)
    pairs = [(o.label, o.mask) for o in res.objects]

    union = st.merge_objects(res.objects, (H, W))
    assert union.shape == (H, W) and union.dtype == bool
    np.testing.assert_array_equal(union, nb.merge(pairs, (H, W)))
    np.testing.assert_array_equal(st.merge_objects(res.objects, (H, W), labels=None), union)
    m = res.mask()
    assert m.shape == (H, W) and m.dtype == bool
    np.testing.assert_array_equal(m, union)

    labels = ["others", "dog", "cat", "bird"]
    lm = st.merge_objects(res.objects, (H, W), labels=labels)
    assert lm.shape == (H, W) and lm.dtype == np.int32
    np.testing.assert_array_equal(lm, nb.merge(pairs, (H, W), labels))


def test_merge_objects_later_objects_win_and_first_index_counts():
    a = np.zeros((10, 10), bool)
    a[0:6, 0:6] = True
    b = np.zeros((10, 10), bool)
    b[4:10, 4:10] = True
    res = _decoded([("cat", a), ("dog", b)], (10, 10))
    lm = st.merge_objects(res.objects, (10, 10), labels=["others", "dog", "cat", "dog"])
    want = np.zeros((10, 10), np.int32)
    want[a] = 2
    want[b] = 1  # "dog" is labels.index("dog") == 1, and it is painted last
    np.testing.assert_array_equal(lm, want)
    lm = st.merge_objects(res.objects[::-1], (10, 10), labels=["others", "dog", "cat"])
    want = np.zeros((10, 10), np.int32)
    want[b] = 1
    want[a] = 2
    np.testing.assert_array_equal(lm, want)


def test_merge_objects_no_objects():
    u = st.merge_objects([], (4, 5))
    assert u.shape == (4, 5) and u.dtype == bool and not u.any()
    lm = st.merge_objects([], (4, 5), labels=["others", "dog"])
    assert lm.shape == (4, 5) and lm.dtype == np.int32 and not lm.any()


def test_merge_objects_unknown_label():
    m = np.zeros((8, 8), bool)
    m[2:4, 2:5] = True
    res = _decoded([("dog", m), ("zebra", m)], (8, 8))
    with pytest.raises(ValueError, match=r"zebra"):
        st.merge_objects(res.objects, (8, 8), labels=["others", "dog"])


def test_res_mask_is_union_of_decoded_objects():
    a = np.zeros((12, 12), bool)
    a[1:4, 1:4] = True
    b = np.zeros((12, 12), bool)
    b[6:11, 5:12] = True
    res = _decoded([("x", a), ("y", b)], (12, 12))
    np.testing.assert_array_equal(res.mask(), a | b)


# --------------------------------------------------------------------------------------- pasting


@settings(max_examples=150)
@given(
    H=hs.integers(1, 50),
    W=hs.integers(1, 50),
    S=hs.integers(1, 20),
    n=hs.integers(0, 4),
    seed=hs.integers(0, 2**32 - 1),
)
def test_res_mask_pastes_hand_built_objects_like_the_naive_expansion(H, W, S, n, seed):
    """Overlapping objects with random cells (many runs per row) and boxes smaller or larger
    than S: res.mask() and each .mask are the naive cell-centre expansion, ORed."""
    rng = np.random.default_rng(seed)
    objs, want = [], np.zeros((H, W), bool)
    for i in range(n):
        x1, y1 = int(rng.integers(0, W)), int(rng.integers(0, H))
        box = (x1, y1, int(rng.integers(x1 + 1, W + 1)), int(rng.integers(y1 + 1, H + 1)))
        cells = rng.random((S, S)) < rng.random()
        objs.append(st.BsdObject(f"o{i}", box, cells, (H, W)))
        alone = nb.paste(nb.expand(cells, box), box, (H, W))
        np.testing.assert_array_equal(objs[-1].mask, alone)
        want |= alone
    got = st.DecodedObjects(objs, (H, W)).mask()
    assert got.dtype == bool and got.shape == (H, W)
    np.testing.assert_array_equal(got, want)


def test_hand_built_objects_with_numpy_ints_and_01_cells():
    cells = np.array([[1, 0], [0, 1]], np.uint8)
    a = st.BsdObject("a", tuple(np.int64(v) for v in (1, 0, 5, 4)), cells, (4, 6))
    b = st.BsdObject("b", (1, 0, 5, 4), cells.astype(bool), (4, 6))
    np.testing.assert_array_equal(a.mask, b.mask)
    assert b.mask[:, 1:5].astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert not b.mask[:, [0, 5]].any()


@pytest.mark.parametrize(
    "box, cells, error, match",
    [
        ((0, 0, 7, 2), np.ones((2, 2), bool), ValueError, r"not a box with area inside the image \(4, 6\)"),
        ((-1, 0, 2, 2), np.ones((2, 2), bool), ValueError, r"inside the image"),
        ((2, 0, 2, 2), np.ones((2, 2), bool), ValueError, r"with area"),
        ((0, 0, 2.5, 2), np.ones((2, 2), bool), TypeError, r"four ints"),
        ((0, 0, 2), np.ones((2, 2), bool), TypeError, r"four ints"),
        ((0, 0, 2, 2), np.ones(4, bool), ValueError, r"2-D binary array"),
        ((0, 0, 2, 2), np.ones((0, 3), bool), ValueError, r"with cells"),
        ((0, 0, 2, 2), np.ones((2, 2), np.float32), ValueError, r"dtype float32"),
    ],
)
def test_hand_built_objects_with_bad_boxes_or_cells(box, cells, error, match):
    obj = st.BsdObject("cat", box, cells, (4, 6))
    with pytest.raises(error, match=match):
        _ = obj.mask
    with pytest.raises(error, match=match):
        st.DecodedObjects([obj], (4, 6)).mask()
