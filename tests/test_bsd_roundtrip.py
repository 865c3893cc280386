"""B-SD (Text4Seg++ semantic bricks) encoding and decoding, held to the plain reference in naive_bricks.py:

- encode_bsd writes exactly the text of the naive encoder (all three box presets, every policy, both
  orders, any resolution and run cap);
- decode_bsd(encode_bsd(...)) gives exactly crop -> resample -> expand -> paste;
- every block's bricks add up to S*S, none is 0 or longer than max_run; the box covers the mask;
- RLE input gives the same text as the dense mask; several objects are separate blocks, in order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as hs

import naive_bricks as nb
import segtext as st

RESOLUTIONS = [1, 3, 7, 32, 64, 80]
LABELS = ["dog", "white horse", "the man on the left in a red shirt", "person 1", "狗", "a|b *3", "Others"]

resolution_st = hs.sampled_from(RESOLUTIONS)
policy_st = hs.sampled_from(["majority", "any", "nearest"])
threshold_st = hs.sampled_from([0.5, 0.3, 1.0, 0.75])
max_run_st = hs.sampled_from([63, 63, 1, 5, 200])
box_format_st = hs.sampled_from(["norm1000", "qwen2vl", "pixel"])


@hs.composite
def image_sizes(draw, max_side=120):
    if draw(hs.integers(0, 11)) == 0:  # wider or taller than the 0..1000 scale
        a, b = draw(hs.integers(1, 40)), draw(hs.integers(1001, 1300))
        return (a, b) if draw(hs.booleans()) else (b, a)
    return draw(hs.integers(1, max_side)), draw(hs.integers(1, max_side))


@hs.composite
def object_lists(draw, min_n=1, max_n=3, max_side=120):
    """(image_size, [(label, mask), ...]) with non-empty masks of many shapes."""
    H, W = draw(image_sizes(max_side))
    n = draw(hs.integers(min_n, max_n))
    objs = []
    for _ in range(n):
        kind = draw(hs.sampled_from(nb.OBJECT_KINDS))
        seed = draw(hs.integers(0, 2**32 - 1))
        label = draw(hs.sampled_from(LABELS))
        objs.append((label, nb.make_object(np.random.default_rng(seed), H, W, kind)))
    note(f"image {(H, W)}, boxes {[nb.box_from_mask(m) for _, m in objs]}")
    return (H, W), objs


def params(S, policy, threshold, max_run, row_wise, box_format):
    return dict(
        resolution=S, policy=policy, threshold=threshold, max_run=max_run, row_wise=row_wise, box_format=box_format
    )


def decode_params(p):
    return {k: p[k] for k in ("resolution", "max_run", "row_wise", "box_format")}


def as_box(box):
    assert len(box) == 4
    return tuple(int(v) for v in box)


# ---------------------------------------------------------------------------------------- exact text


@settings(max_examples=200)
@given(
    data=object_lists(),
    S=resolution_st,
    policy=policy_st,
    threshold=threshold_st,
    max_run=max_run_st,
    row_wise=hs.booleans(),
    box_format=box_format_st,
)
def test_text_matches_naive(data, S, policy, threshold, max_run, row_wise, box_format):
    size, objs = data
    p = params(S, policy, threshold, max_run, row_wise, box_format)
    want = nb.encode(objs, size, **p)
    got = st.encode_bsd(objs, image_size=size, **p)
    assert isinstance(got, str)
    assert got == want


# ---------------------------------------------------------------------------------------- round trip


def check_roundtrip(size, objs, p):
    text = st.encode_bsd(objs, image_size=size, **p)
    note(f"text[:300]={text[:300]!r}")
    preds = [nb.predict(lab, m, size, p["resolution"], p["policy"], p["threshold"], p["box_format"]) for lab, m in objs]
    for mode in ("strict", "repair"):
        res = st.decode_bsd(text, image_size=size, mode=mode, **decode_params(p))
        assert res.repairs == [] and res.ok
        assert len(res.objects) == len(objs)
        for o, want, (label, mask) in zip(res.objects, preds, objs):
            assert isinstance(o, st.BsdObject)
            assert o.label == label
            assert as_box(o.box) == want.box
            assert o.bricks.shape == (p["resolution"],) * 2 and o.bricks.dtype == bool
            np.testing.assert_array_equal(o.bricks, want.bricks)
            assert o.mask.shape == size and o.mask.dtype == bool
            np.testing.assert_array_equal(o.mask, want.mask)
        np.testing.assert_array_equal(res.mask(), np.logical_or.reduce([w.mask for w in preds]))
    # the naive decoder reads the same text to the same objects
    for o, n in zip(res.objects, nb.decode(text, size, p["resolution"], p["box_format"])):
        assert as_box(o.box) == n.box
        np.testing.assert_array_equal(o.mask, n.mask)
    return text, res


@settings(max_examples=200)
@given(
    data=object_lists(),
    S=resolution_st,
    policy=policy_st,
    threshold=threshold_st,
    max_run=max_run_st,
    row_wise=hs.booleans(),
    box_format=box_format_st,
)
def test_decode_encode_is_the_naive_prediction(data, S, policy, threshold, max_run, row_wise, box_format):
    size, objs = data
    check_roundtrip(size, objs, params(S, policy, threshold, max_run, row_wise, box_format))


@settings(max_examples=150)
@given(
    data=object_lists(max_n=2),
    S=resolution_st,
    policy=policy_st,
    max_run=max_run_st,
    row_wise=hs.booleans(),
    box_format=box_format_st,
)
def test_bricks_sum_to_S2_and_respect_the_cap(data, S, policy, max_run, row_wise, box_format):
    size, objs = data
    text = st.encode_bsd(
        objs, image_size=size, resolution=S, policy=policy, max_run=max_run, row_wise=row_wise, box_format=box_format
    )
    per_block = nb.block_bricks(text)
    assert len(per_block) == len(objs)
    for bricks in per_block:
        assert sum(k for _, k in bricks) == S * S
        assert all(1 <= k <= max_run for _, k in bricks), bricks
        # runs are maximal: two neighbouring bricks of one kind only where the first is a full max_run
        # brick (or, row-wise, at a row boundary)
        pos = 0
        for (v0, k0), (v1, _) in zip(bricks, bricks[1:]):
            pos += k0
            if v0 == v1:
                assert k0 == max_run or (row_wise and pos % S == 0), bricks
        if row_wise:  # no brick crosses a row boundary
            pos = 0
            for _, k in bricks:
                assert pos // S == (pos + k - 1) // S, bricks
                pos += k


@settings(max_examples=150)
@given(data=object_lists(), S=resolution_st, box_format=box_format_st)
def test_decoded_box_covers_the_mask(data, S, box_format):
    size, objs = data
    H, W = size
    text = st.encode_bsd(objs, image_size=size, resolution=S, box_format=box_format)
    res = st.decode_bsd(text, image_size=size, resolution=S, box_format=box_format)
    assert len(res.objects) == len(objs)
    for o, (_, m) in zip(res.objects, objs):
        x1, y1, x2, y2 = as_box(o.box)
        tx1, ty1, tx2, ty2 = nb.box_from_mask(m)
        assert 0 <= x1 <= tx1 < tx2 <= x2 <= W
        assert 0 <= y1 <= ty1 < ty2 <= y2 <= H
        if box_format == "pixel":
            assert (x1, y1, x2, y2) == (tx1, ty1, tx2, ty2)
        # nothing outside the box
        outside = np.ones(size, bool)
        outside[y1:y2, x1:x2] = False
        assert not o.mask[outside].any()


@settings(max_examples=150)
@given(
    data=object_lists(max_side=80),
    S=hs.sampled_from([32, 64, 80]),
    policy=policy_st,
    threshold=threshold_st,
    row_wise=hs.booleans(),
    box_format=box_format_st,
)
def test_crop_smaller_than_S_comes_back_exactly(data, S, policy, threshold, row_wise, box_format):
    size, objs = data
    H, W = size
    if H > S or W > S:  # every crop is at most S x S on both axes: shrink the image to fit
        objs = [(lab, m[:S, :S]) for lab, m in objs if m[:S, :S].any()]
        size = (min(H, S), min(W, S))
    if not objs:
        return
    text = st.encode_bsd(
        objs, image_size=size, resolution=S, policy=policy, threshold=threshold, row_wise=row_wise,
        box_format=box_format,
    )
    res = st.decode_bsd(text, image_size=size, resolution=S, row_wise=row_wise, box_format=box_format)
    assert res.ok, res.repairs
    for o, (_, m) in zip(res.objects, objs):
        np.testing.assert_array_equal(o.mask, m.astype(bool))


@pytest.mark.parametrize("S", [1, 2, 3, 7, 32, 64, 80])
@pytest.mark.parametrize("n", [1, 2, 5, 31, 63, 64, 65, 81, 129])
def test_naive_axis_geometry(S, n):
    """Sanity of the reference itself: for n >= S the voters partition the pixels and every cell has
    one; for n <= S expanding the single-pixel samples gives every pixel back."""
    v = nb.voters(n, S)
    assert len(v) == S
    if n >= S:
        assert sorted(y for cell in v for y in cell) == list(range(n))
        assert all(cell for cell in v)
    if n <= S:
        samples = [cell[0] for cell in v]
        assert [samples[nb.cell_of(y, n, S)] for y in range(n)] == list(range(n))
        # Pillow's NEAREST (the "nearest" policy) upsamples so that expanding gives every pixel back too
        ramp = np.asarray(nb.Image.fromarray(np.arange(n, dtype=np.int32)[None, :]).resize((S, 1), nb.Image.NEAREST))[0]
        assert [int(ramp[nb.cell_of(y, n, S)]) for y in range(n)] == list(range(n))


# ---------------------------------------------------------------------------------- literal examples

H0, W0 = 100, 200
RECT = np.zeros((H0, W0), bool)
RECT[20:60, 20:100] = True  # tight box (20, 20, 100, 60) -> [100,200,500,600] on the 0..1000 scale


@pytest.mark.parametrize(
    "box_format, text",
    [
        pytest.param("norm1000", "<ref>dog</ref><box>[100,200,500,600]</box><seg><fg_16></seg>", id="norm1000"),
        pytest.param(
            "qwen2vl",
            "<|object_ref_start|>dog<|object_ref_end|><|box_start|>(100,200),(500,600)<|box_end|><seg><fg_16></seg>",
            id="qwen2vl",
        ),
        pytest.param("pixel", "<ref>dog</ref><box>[20,20,100,60]</box><seg><fg_16></seg>", id="pixel"),
    ],
)
def test_literal_presets(box_format, text):
    assert st.encode_bsd([("dog", RECT)], image_size=(H0, W0), resolution=4, box_format=box_format) == text
    res = st.decode_bsd(text, image_size=(H0, W0), resolution=4, box_format=box_format, mode="strict")
    assert [o.label for o in res.objects] == ["dog"]
    assert as_box(res.objects[0].box) == (20, 20, 100, 60)
    np.testing.assert_array_equal(res.objects[0].mask, RECT)


def test_literal_default_resolution_splits_4096_cells():
    text = st.encode_bsd([("dog", RECT)], image_size=(H0, W0))
    assert text == "<ref>dog</ref><box>[100,200,500,600]</box><seg>" + "<fg_63>" * 65 + "<fg_1></seg>"


def _m130():
    """12 x 12 image: 130 fg cells, 13 bg, 1 fg (the box is the whole image)."""
    m = np.zeros((12, 12), bool)
    m.ravel()[:130] = True
    m[11, 11] = True
    return m


@pytest.mark.parametrize("box_format", ["norm1000", "pixel"])
def test_literal_run_split_130_is_63_63_4(box_format):
    text = st.encode_bsd([("x", _m130())], image_size=(12, 12), resolution=12, box_format=box_format)
    box = "[0,0,1000,1000]" if box_format == "norm1000" else "[0,0,12,12]"
    assert text == f"<ref>x</ref><box>{box}</box><seg><fg_63><fg_63><fg_4><bg_13><fg_1></seg>"


def test_literal_row_wise():
    text = st.encode_bsd([("x", _m130())], image_size=(12, 12), resolution=12, row_wise=True, box_format="pixel")
    bricks = "<fg_12>" * 10 + "<fg_10><bg_2>" + "<bg_11><fg_1>"
    assert text == f"<ref>x</ref><box>[0,0,12,12]</box><seg>{bricks}</seg>"
    res = st.decode_bsd(text, image_size=(12, 12), resolution=12, row_wise=True, box_format="pixel", mode="strict")
    np.testing.assert_array_equal(res.objects[0].mask, _m130())


def test_literal_max_run_parameter():
    text = st.encode_bsd([("x", _m130())], image_size=(12, 12), resolution=12, max_run=50, box_format="pixel")
    assert text == "<ref>x</ref><box>[0,0,12,12]</box><seg><fg_50><fg_50><fg_30><bg_13><fg_1></seg>"


@pytest.mark.parametrize(
    "policy, threshold, bricks",
    [
        # a 4 x 4 crop read at S = 2: each cell votes over a 2 x 2 block holding 4, 3, 1 and 2 fg pixels
        ("majority", 0.5, "<fg_2><bg_1><fg_1>"),
        ("majority", 0.75, "<fg_2><bg_2>"),
        ("majority", 1.0, "<fg_1><bg_3>"),
        ("majority", 0.25, "<fg_4>"),
        ("any", 0.5, "<fg_4>"),
    ],
)
def test_literal_policies(policy, threshold, bricks):
    m = np.array(
        [
            [1, 1, 1, 1],
            [1, 1, 0, 1],
            [1, 0, 1, 0],
            [0, 0, 1, 0],
        ],
        dtype=np.uint8,
    )
    text = st.encode_bsd([("x", m)], image_size=(4, 4), resolution=2, policy=policy, threshold=threshold,
                         box_format="pixel")
    assert text == f"<ref>x</ref><box>[0,0,4,4]</box><seg>{bricks}</seg>"


def test_literal_wide_image_quantisation():
    """W > 1000: the 0..1000 scale loses pixels; the crop is the dequantised box, which still covers."""
    H, W = 4, 1234
    m = np.zeros((H, W), bool)
    m[1, 617] = True
    q = nb.quantize_box((617, 1, 618, 2), (H, W))
    assert q == (500, 250, 501, 500)
    box = nb.dequantize_box(q, (H, W))
    assert box == (617, 1, 619, 2)
    text = st.encode_bsd([("x", m)], image_size=(H, W), resolution=2)
    assert text == "<ref>x</ref><box>[500,250,501,500]</box><seg><fg_1><bg_1><fg_1><bg_1></seg>"
    res = st.decode_bsd(text, image_size=(H, W), resolution=2, mode="strict")
    assert as_box(res.objects[0].box) == box
    np.testing.assert_array_equal(res.objects[0].mask, m)
    # one row less: y1 = 333 * 3 // 1000 = 0, so the crop grows a row and the mask comes back taller
    m3 = m[:3]
    text = st.encode_bsd([("x", m3)], image_size=(3, W), resolution=2)
    assert text == "<ref>x</ref><box>[500,333,501,667]</box><seg><bg_2><fg_1><bg_1></seg>"
    res = st.decode_bsd(text, image_size=(3, W), resolution=2, mode="strict")
    assert as_box(res.objects[0].box) == (617, 0, 619, 3)
    assert sorted(map(tuple, np.argwhere(res.objects[0].mask))) == [(1, 617), (2, 617)]


# ------------------------------------------------------------------------------------- input forms


def _rle_str(m):
    r = nb.coco_rle(m)
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def _rle_uncompressed(m):
    flat = np.asarray(m).astype(bool).ravel(order="F")
    counts, cur, n = [], False, 0
    for v in flat:
        if bool(v) == cur:
            n += 1
        else:
            counts.append(n)
            cur, n = not cur, 1
    counts.append(n)
    return {"size": list(m.shape), "counts": counts}


@settings(max_examples=150)
@given(
    data=object_lists(max_n=2),
    S=resolution_st,
    policy=policy_st,
    box_format=box_format_st,
    form=hs.sampled_from(["bytes", "str", "uncompressed"]),
)
@example(data=((3, 1), [("dog", np.array([[0], [0], [1]], bool))]), S=3, policy="nearest", box_format="norm1000",
         form="bytes")
@example(data=((20, 30), [("dog", nb.make_object(np.random.default_rng(1), 20, 30, "blob"))]), S=32,
         policy="nearest", box_format="pixel", form="str")
def test_rle_input_gives_the_same_text(data, S, policy, box_format, form):
    size, objs = data
    kw = dict(image_size=size, resolution=S, policy=policy, box_format=box_format)
    dense = st.encode_bsd(objs, **kw)
    if form == "bytes":
        rles = [(lab, nb.coco_rle(m)) for lab, m in objs]
    elif form == "str":
        rles = [(lab, _rle_str(m)) for lab, m in objs]
    else:
        rles = [(lab, _rle_uncompressed(m)) for lab, m in objs]
    assert st.encode_bsd(rles, **kw) == dense
    # mixed: dense and RLE in one call
    mixed = [(lab, nb.coco_rle(m) if i % 2 else m) for i, (lab, m) in enumerate(objs)]
    assert st.encode_bsd(mixed, **kw) == dense


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int32, np.int64, np.float32, np.float64])
def test_binary_dtypes_give_the_same_text(dtype):
    m = nb.make_object(np.random.default_rng(3), 37, 41, "blob")
    want = st.encode_bsd([("x", m)], image_size=(37, 41), resolution=7)
    assert st.encode_bsd([("x", m.astype(dtype))], image_size=(37, 41), resolution=7) == want
    # non-contiguous views too
    big = np.zeros((74, 82), dtype=dtype)
    big[::2, ::2] = m
    assert st.encode_bsd([("x", big[::2, ::2])], image_size=(37, 41), resolution=7) == want
    assert st.encode_bsd([("x", np.asfortranarray(m.astype(dtype)))], image_size=(37, 41), resolution=7) == want


# --------------------------------------------------------------------------------- several objects


@settings(max_examples=100)
@given(data=object_lists(min_n=2, max_n=4, max_side=60), box_format=box_format_st, S=hs.sampled_from([3, 7, 32]))
def test_several_objects_are_blocks_in_order(data, box_format, S):
    size, objs = data
    kw = dict(image_size=size, resolution=S, box_format=box_format)
    text = st.encode_bsd(objs, **kw)
    assert text == "".join(st.encode_bsd([o], **kw) for o in objs)
    assert st.encode_bsd(tuple(objs), **kw) == text  # any sequence
    res = st.decode_bsd(text, image_size=size, resolution=S, box_format=box_format)
    assert [o.label for o in res.objects] == [lab for lab, _ in objs]


def test_masks_under_one_label_stay_separate():
    a = np.zeros((30, 40), bool)
    a[2:8, 3:9] = True
    b = np.zeros((30, 40), bool)
    b[20:28, 30:38] = True
    text = st.encode_bsd([("dog", a), ("dog", b)], image_size=(30, 40), resolution=8)
    assert text.count("<ref>dog</ref>") == 2 and text.count("<seg>") == 2
    res = st.decode_bsd(text, image_size=(30, 40), resolution=8, mode="strict")
    assert [o.label for o in res.objects] == ["dog", "dog"]
    np.testing.assert_array_equal(res.objects[0].mask, a)
    np.testing.assert_array_equal(res.objects[1].mask, b)
    np.testing.assert_array_equal(res.mask(), a | b)


def test_overlapping_objects_keep_their_own_masks():
    a = np.zeros((20, 20), bool)
    a[2:12, 2:12] = True
    b = np.zeros((20, 20), bool)
    b[8:18, 8:18] = True
    res = st.decode_bsd(st.encode_bsd([("a", a), ("b", b)], image_size=(20, 20), resolution=32), image_size=(20, 20),
                        resolution=32)
    np.testing.assert_array_equal(res.objects[0].mask, a)
    np.testing.assert_array_equal(res.objects[1].mask, b)


@pytest.mark.parametrize("box_format", ["norm1000", "qwen2vl", "pixel"])
@pytest.mark.parametrize("objects", [[], ()], ids=["list", "tuple"])
def test_no_objects_is_empty_text(objects, box_format):
    assert st.encode_bsd(objects, image_size=(10, 10), box_format=box_format) == ""
    res = st.decode_bsd("", image_size=(10, 10), box_format=box_format)
    assert res.objects == [] and res.ok
    m = res.mask()
    assert m.shape == (10, 10) and m.dtype == bool and not m.any()
    assert st.decode_bsd("", image_size=(10, 10), box_format=box_format, mode="strict").objects == []


@pytest.mark.parametrize("form", ["dense", "rle"])
def test_empty_mask_raises_unless_skipped(form):
    e = np.zeros((10, 12), bool)
    full = np.zeros((10, 12), bool)
    full[3:5, 4:9] = True
    if form == "rle":
        e = nb.coco_rle(e)
    with pytest.raises(ValueError, match=r"(?i)empty|no box|no foreground"):
        st.encode_bsd([("a", full), ("b", e)], image_size=(10, 12))
    got = st.encode_bsd([("a", full), ("b", e), ("c", full)], image_size=(10, 12), skip_empty=True)
    assert got == st.encode_bsd([("a", full), ("c", full)], image_size=(10, 12))
    assert st.encode_bsd([("b", e)], image_size=(10, 12), skip_empty=True) == ""


@pytest.mark.parametrize(
    "label",
    ["[1,2,3,4]", "(1,2),(3,4)", "x<fg_3>y", "<bg_2>", "ref", "<ref", "ref>", "a b  c", "狗 🐕", "seg", "a|b *2"],
)
@pytest.mark.parametrize("box_format", ["norm1000", "pixel"])
def test_unusual_labels_round_trip(label, box_format):
    """Anything but the format's tags is a valid label and comes back as written."""
    m = np.zeros((9, 9), bool)
    m[2:5, 3:7] = True
    text = st.encode_bsd([(label, m), ("dog", m)], image_size=(9, 9), resolution=4, box_format=box_format)
    assert text.startswith(f"<ref>{label}</ref>")
    res = st.decode_bsd(text, image_size=(9, 9), resolution=4, box_format=box_format, mode="strict")
    assert [o.label for o in res.objects] == [label, "dog"]


# ----------------------------------------------------------------------------------- real COCO masks


@pytest.mark.slow
@pytest.mark.parametrize("S", [32, 64])
def test_coco_sample_text_matches_naive(sample_annotations, S):
    rng = np.random.default_rng(0)
    picks = rng.choice(len(sample_annotations), size=25, replace=False)
    for i in picks:
        ann = sample_annotations[int(i)]
        rle = ann["segmentation"]
        if isinstance(rle, dict) and isinstance(rle.get("counts"), list):
            rle = nb.mask_utils.frPyObjects(rle, *rle["size"])
        size = tuple(rle["size"])
        m = nb.to_dense(rle)
        if not m.any():
            continue
        want = nb.encode([("x", m)], size, resolution=S)
        assert st.encode_bsd([("x", rle)], image_size=size, resolution=S) == want
        res = st.decode_bsd(want, image_size=size, resolution=S, mode="strict")
        np.testing.assert_array_equal(res.objects[0].mask, nb.predict("x", m, size, S).mask)


@pytest.mark.slow
@settings(max_examples=1000)
@given(
    data=object_lists(max_side=200),
    S=resolution_st,
    policy=policy_st,
    threshold=threshold_st,
    max_run=max_run_st,
    row_wise=hs.booleans(),
    box_format=box_format_st,
)
def test_text_and_roundtrip_thorough(data, S, policy, threshold, max_run, row_wise, box_format):
    size, objs = data
    p = params(S, policy, threshold, max_run, row_wise, box_format)
    assert st.encode_bsd(objs, image_size=size, **p) == nb.encode(objs, size, **p)
    check_roundtrip(size, objs, p)
