"""decode_bsd in repair mode reads the text when its result is first asked for objects or
repairs, and ``.mask()`` paints a clean text straight into the canvas in one compiled call.
Whatever is read first, and however the result is copied or changed, it behaves as one built
from the repairing parser's objects and repairs."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest

import segtext as st
from segtext import bricks
from segtext.limits import MAX_TEXT_LENGTH
from segtext.repairs import RepairLog


def _objects(H=40, W=50):
    rng = np.random.default_rng(3)
    out = []
    for k, (y0, y1, x0, x1) in enumerate([(2, 30, 5, 40), (10, 38, 20, 49), (0, 1, 0, 1), (5, 6, 7, 40)]):
        m = np.zeros((H, W), bool)
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
        m[y0, x0] = True
        out.append((f"thing {k}", m))
    return out


SIZE = (40, 50)
CLEAN = st.encode_bsd(_objects(), SIZE, resolution=8)


def reference(text, size=SIZE, **kw):
    """The repairing parser's objects and repairs, and the union of their masks."""
    cfg = bricks._config(kw.get("resolution", 8), 63, False, "norm1000", "<fg_{k}>", "<bg_{k}>")
    log = RepairLog(text, strict=False)
    objs = bricks._decode_blocks(text, cfg, *size, log)
    union = np.zeros(size, bool)
    for o in objs:
        union |= o.mask
    return objs, log.repairs, union


def same_objects(a, b):
    assert [(o.label, o.box, o.image_size) for o in a] == [(o.label, o.box, o.image_size) for o in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.bricks, y.bricks)
        np.testing.assert_array_equal(x.mask, y.mask)


def test_clean_text_takes_the_fast_path_and_builds_objects_only_when_read():
    res = st.decode_bsd("Sure: " + CLEAN + " done.", SIZE, resolution=8)
    assert "_text" in res.__dict__ and "objects" not in res.__dict__ and "repairs" not in res.__dict__
    objs, repairs, union = reference(CLEAN)
    mask = res.mask()
    assert mask.dtype == bool and mask.shape == SIZE and mask.flags.c_contiguous
    np.testing.assert_array_equal(mask, union)
    assert "objects" not in res.__dict__ and "repairs" not in res.__dict__  # the mask did not need them
    assert res.ok and res.repairs == [] == repairs
    same_objects(res.objects, objs)
    assert res.objects is res.objects  # built once
    np.testing.assert_array_equal(res.mask(), union)  # now from the objects


def test_each_mask_call_gives_a_new_array():
    res = st.decode_bsd(CLEAN, SIZE, resolution=8)
    a = res.mask()
    a[:] = True
    b = res.mask()
    assert b is not a
    np.testing.assert_array_equal(b, reference(CLEAN)[2])


def test_the_objects_can_be_changed_and_the_mask_follows():
    res = st.decode_bsd(CLEAN, SIZE, resolution=8)
    res.objects.pop(0)
    want = np.zeros(SIZE, bool)
    for o in res.objects:
        want |= o.mask
    np.testing.assert_array_equal(res.mask(), want)
    res2 = st.decode_bsd(CLEAN, SIZE, resolution=8)
    res2.objects = []
    assert not res2.mask().any()
    res3 = st.decode_bsd(CLEAN, SIZE, resolution=8)
    res3.image_size = (41, 50)  # a changed size goes the slow way: objects pasted into that canvas
    assert res3.mask().shape == (41, 50)


def test_equality_repr_copy_pickle_and_replace_see_the_objects():
    fast = st.decode_bsd(CLEAN, SIZE, resolution=8)
    objs, repairs, union = reference(CLEAN)
    plain = st.DecodedObjects(objs, SIZE, repairs)
    assert repr(fast) == repr(plain)  # (== on two results compares numpy arrays: ambiguous, as before)
    assert dataclasses.astuple(st.decode_bsd(CLEAN, SIZE, resolution=8))[1:] == (SIZE, [])
    for other in (copy.copy(st.decode_bsd(CLEAN, SIZE, resolution=8)),
                  copy.deepcopy(st.decode_bsd(CLEAN, SIZE, resolution=8)),
                  pickle.loads(pickle.dumps(st.decode_bsd(CLEAN, SIZE, resolution=8))),
                  dataclasses.replace(st.decode_bsd(CLEAN, SIZE, resolution=8))):
        np.testing.assert_array_equal(other.mask(), union)
        same_objects(other.objects, objs)
    assert [f.name for f in dataclasses.fields(st.DecodedObjects)] == ["objects", "image_size", "repairs"]
    with pytest.raises(AttributeError):
        st.DecodedObjects.__new__(st.DecodedObjects).objects  # neither built nor from a text


def test_merge_objects_and_strict_mode_on_the_fast_path():
    res = st.decode_bsd(CLEAN, SIZE, resolution=8, mode="strict")
    objs, _, union = reference(CLEAN)
    np.testing.assert_array_equal(res.mask(), union)
    labels = ["others"] + [o.label for o in objs]
    np.testing.assert_array_equal(st.merge_objects(res.objects, SIZE, labels), st.merge_objects(objs, SIZE, labels))


@pytest.mark.parametrize("cut", [5, 20, 47, 60, 61, len(CLEAN) // 2, len(CLEAN) - 7, len(CLEAN) - 1])
def test_cut_off_text_falls_back_with_the_same_repairs(cut):
    text = CLEAN[:cut]
    res = st.decode_bsd(text, SIZE, resolution=8)
    objs, repairs, union = reference(text)
    np.testing.assert_array_equal(res.mask(), union)  # read first, before the objects
    assert res.repairs == repairs and repairs
    same_objects(res.objects, objs)
    np.testing.assert_array_equal(res.mask(), union)
    with pytest.raises(st.DecodeError):
        st.decode_bsd(text, SIZE, resolution=8, mode="strict")


@pytest.mark.parametrize("text", [
    "",
    "no blocks at all",
    "<seg><fg_64></seg>",
    CLEAN.replace("<fg_", "<fg_0", 1),
    CLEAN.replace("</seg>", "</seg> junk <seg><bg_3></seg>", 1),
    CLEAN.replace("<ref>", "<REF>", 1),
    CLEAN.replace("<bg_", "<xx_", 1),
    CLEAN.replace("[", "[ ", 1),
    CLEAN + CLEAN[:30],
    CLEAN.replace("thing 1", "", 1),
])
def test_garbage_falls_back_with_the_same_objects_and_repairs(text):
    res = st.decode_bsd(text, SIZE, resolution=8)
    objs, repairs, union = reference(text)
    if "<REF>" not in text:  # tags in another case: the decoder's own fix, not the block parser's
        assert res.repairs == repairs
        same_objects(res.objects, objs)
        np.testing.assert_array_equal(res.mask(), union)
    else:
        assert [r.kind for r in res.repairs] == ["tag_case"]
        np.testing.assert_array_equal(res.mask(), reference(CLEAN)[2])


def test_a_text_over_the_limit_is_cut_and_then_read_fast():
    text = CLEAN + " " * MAX_TEXT_LENGTH
    res = st.decode_bsd(text, SIZE, resolution=8)
    assert [r.kind for r in res.repairs] == ["text_too_long"]
    np.testing.assert_array_equal(res.mask(), reference(CLEAN)[2])
    same_objects(res.objects, reference(CLEAN)[0])
    with pytest.raises(st.DecodeError):
        st.decode_bsd(text, SIZE, resolution=8, mode="strict")


def test_overlapping_objects_paint_as_their_union_on_real_masks():
    anns = [a for a in st.coco.sample_annotations() if a["image_id"] == 74]
    H, W = anns[0]["segmentation"]["size"]
    names = st.coco.COCO_CATEGORY_NAMES
    for S in (8, 32, 64, 80):
        text = st.encode_bsd([(names[a["category_id"]], a["segmentation"]) for a in anns], (H, W), resolution=S)
        res = st.decode_bsd(text, (H, W), resolution=S)
        cfg = bricks._config(S, 63, False, "norm1000", "<fg_{k}>", "<bg_{k}>")
        log = RepairLog(text, strict=False)
        objs = bricks._decode_blocks(text, cfg, H, W, log)
        assert len(objs) == len(anns) and not log.repairs
        np.testing.assert_array_equal(res.mask(), st.merge_objects(objs, (H, W)))


def test_assigned_attributes_are_kept_when_the_text_is_read():
    res = st.decode_bsd(CLEAN[:-3], SIZE, resolution=8)
    res.repairs = ["mine"]
    assert len(res.objects) == len(reference(CLEAN[:-3])[0])
    assert res.repairs == ["mine"]
    res = st.decode_bsd(CLEAN, SIZE, resolution=8)
    res.objects = []
    assert res.repairs == [] and res.objects == [] and res.ok


def test_strict_mode_reads_the_text_at_once():
    res = st.decode_bsd(CLEAN, SIZE, resolution=8, mode="strict")
    assert "objects" in res.__dict__ and "repairs" in res.__dict__
    np.testing.assert_array_equal(res.mask(), reference(CLEAN)[2])


def test_evaluation_style_use_reads_objects_then_the_mask():
    """What segtext.evaluation does: the objects first (are there any?), then the mask."""
    for text in (CLEAN, CLEAN[:-10], "nothing", CLEAN.replace("<seg>", "<SEG>")):
        res = st.decode_bsd(text, SIZE, resolution=8)
        objs = res.objects
        union = np.zeros(SIZE, bool)
        for o in objs:
            union |= o.mask
        np.testing.assert_array_equal(res.mask(), union)


def test_the_compiled_painter_serves_every_configuration():
    # .mask() calls bsd_mask compiled once, on the first plan it met; plans of other
    # resolutions, spellings and box formats (other lengths, other bytes) must paint the same
    objs = _objects()
    configs = [dict(resolution=8), dict(resolution=5, fg_token="<F{k}>", bg_token="<B{k}>"),
               dict(resolution=3, box_format="pixel", row_wise=True, max_run=3),
               dict(resolution=8, box_format="qwen2vl")]
    for kw in configs + configs[::-1]:
        text = st.encode_bsd(objs, SIZE, **kw)
        res = st.decode_bsd(text, SIZE, **kw)
        fast = res.mask()
        assert "objects" not in res.__dict__, kw  # painted by the kernel, not from the objects
        union = np.zeros(SIZE, bool)
        for o in st.decode_bsd(text, SIZE, mode="strict", **kw).objects:
            union |= o.mask
        assert union.any() and not union.all()
        np.testing.assert_array_equal(fast, union, err_msg=str(kw))
    assert bricks._PAINT is not None
