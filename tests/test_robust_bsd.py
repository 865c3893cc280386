"""B-SD on untrusted input (issue 8): masks in either memory order, bounded parameters and text
length, repair positions and tag look-ups that stay linear in the text, and kernels that never
see a box outside the image."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive_bricks as nb
import segtext as st
from segtext import _kernels as K
from segtext import bricks
from segtext.limits import MAX_RESOLUTION, MAX_TEXT_LENGTH
from segtext.repairs import RepairLog

SIZE = (20, 30)
ORDERS = [pytest.param(np.ascontiguousarray, id="C"), pytest.param(np.asfortranarray, id="F")]


# ------------------------------------------------------------------------------- memory order


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(3, 4), (1, 1), (5, 1), (1, 5), (20, 30)])
def test_box_from_empty_mask_raises_in_both_orders(order, shape):
    m = order(np.zeros(shape, bool))
    with pytest.raises(ValueError, match="the mask is empty"):
        st.box_from_mask(m)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("fmt", sorted(st.BOX_FORMATS))
def test_encode_empty_mask_in_both_orders(order, fmt):
    m = order(np.zeros(SIZE, bool))
    assert st.encode_bsd([("dog", m)], SIZE, box_format=fmt, skip_empty=True) == ""
    full = np.zeros(SIZE, bool)
    full[2:5, 3:9] = True
    text = st.encode_bsd([("dog", m), ("cat", order(full))], SIZE, box_format=fmt, skip_empty=True)
    assert text == nb.encode([("cat", full)], SIZE, box_format=fmt)
    with pytest.raises(ValueError, match="empty"):
        st.encode_bsd([("dog", m)], SIZE, box_format=fmt)


def test_issue_reproducers():
    m = np.asfortranarray(np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="the mask is empty"):
        st.box_from_mask(m)
    assert st.encode_bsd([("a", m)], (3, 4), skip_empty=True) == ""


@given(hs.integers(1, 12), hs.integers(1, 12), hs.integers(0, 2**32 - 1),
       hs.sampled_from([0.05, 0.3, 0.8]), hs.sampled_from([1, 3, 5, 16]),
       hs.sampled_from(["majority", "nearest", "any"]), hs.sampled_from(sorted(st.BOX_FORMATS)))
def test_fortran_order_equals_c_order(H, W, seed, density, S, policy, fmt):
    m = np.random.default_rng(seed).random((H, W)) < density
    f = np.asfortranarray(m)
    assert f.flags.f_contiguous and (H == 1 or W == 1 or not f.flags.c_contiguous)
    if not m.any():
        for a in (m, f):
            with pytest.raises(ValueError, match="empty"):
                st.box_from_mask(a)
            assert st.encode_bsd([("x", a)], (H, W), resolution=S, policy=policy, box_format=fmt,
                                 skip_empty=True) == ""
        return
    assert st.box_from_mask(f) == st.box_from_mask(m) == nb.box_from_mask(m)
    want = nb.encode([("x", m)], (H, W), resolution=S, policy=policy, box_format=fmt)
    for a in (m, f, f.astype(np.uint8), np.asfortranarray(m.astype(np.int64))):
        assert st.encode_bsd([("x", a)], (H, W), resolution=S, policy=policy, box_format=fmt) == want


@pytest.mark.parametrize("box", [(-1, 2, 0, 3), (0, 0, 0, 3), (0, 4, 0, 3), (0, 2, 0, 5), (0, 2, 2, 2),
                                 (2, 1, 0, 3)])
@pytest.mark.parametrize("policy", [0, 1, 2])
def test_crop_kernel_refuses_a_box_outside_the_mask(box, policy):
    mask = np.ones((3, 4), np.uint8)
    samples = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="crop"):
        K.crop_grid(mask, *box, 2, policy, 0.5, samples, samples)


def test_crop_kernel_refuses_samples_outside_the_crop():
    mask = np.ones((3, 4), np.uint8)
    ok = np.array([0, 1])
    with pytest.raises(ValueError, match="row sample"):
        K.crop_grid(mask, 0, 2, 0, 3, 2, 0, 0.5, np.array([0, 2]), ok)
    with pytest.raises(ValueError, match="column sample"):
        K.crop_grid(mask, 0, 2, 0, 3, 2, 0, 0.5, ok, np.array([-1, 1]))
    assert K.crop_grid(mask, 0, 2, 0, 3, 2, 0, 0.5, ok, ok).tolist() == [[1, 1], [1, 1]]


@pytest.mark.parametrize("H,W", [(1, 1), (7, 1000), (1000, 7), (3, 65536)])
@pytest.mark.parametrize("fmt", sorted(st.BOX_FORMATS))
def test_crop_of_any_tight_box_is_inside_the_image(H, W, fmt):
    scale = st.BOX_FORMATS[fmt].scale
    for tight in [(0, 0, W, H), (W - 1, H - 1, W, H), (0, H - 1, 1, H), (W // 3, 0, W // 2 + 1, 1)]:
        written, (x0, y0, x1, y1) = bricks._written_and_crop(tight, H, W, scale)
        assert 0 <= x0 <= tight[0] < tight[2] <= x1 <= W
        assert 0 <= y0 <= tight[1] < tight[3] <= y1 <= H


# ------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("resolution", [MAX_RESOLUTION + 1, 100_000, 10**30, np.int64(2**40)])
def test_resolution_above_the_limit(resolution):
    with pytest.raises(ValueError, match=r"resolution must be at most 1024 \(segtext.limits.MAX_RESOLUTION\)"):
        st.decode_bsd("", (4, 4), resolution=resolution)
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match=r"MAX_RESOLUTION"):
        st.encode_bsd([("a", m)], (4, 4), resolution=resolution)
    with pytest.raises(ValueError, match=r"MAX_RESOLUTION"):
        st.encode_bsd([("a", nb.coco_rle(m))], (4, 4), resolution=resolution)


def test_resolution_at_the_limit_works():
    m = np.zeros((3, 5), bool)
    m[1, 2:4] = True
    text = st.encode_bsd([("a", m)], (3, 5), resolution=MAX_RESOLUTION, max_run=MAX_RESOLUTION ** 2)
    # the crop (rows 0..2, columns 2..3) is smaller than the bricks: each brick row is one pixel
    # row (brick row r takes pixel row (2r + 1) * 3 // 2048), so the bricks are 341 rows of
    # background (pixel row 0), 342 of foreground (row 1, all True), 341 of background (row 2)
    assert text == ("<ref>a</ref><box>[400,333,800,667]</box><seg>"
                    f"<bg_{341 * 1024}><fg_{342 * 1024}><bg_{341 * 1024}></seg>")
    res = st.decode_bsd(text, (3, 5), resolution=MAX_RESOLUTION, max_run=MAX_RESOLUTION ** 2, mode="strict")
    assert res.objects[0].bricks.shape == (MAX_RESOLUTION, MAX_RESOLUTION)
    np.testing.assert_array_equal(res.mask(), m)
    assert st.decode_bsd("", (4, 4), resolution=MAX_RESOLUTION).objects == []


@pytest.mark.parametrize("max_run", [MAX_RESOLUTION ** 2 + 1, 10**30, 2**63, np.uint64(2**64 - 1)])
def test_max_run_above_the_limit(max_run):
    with pytest.raises(ValueError, match=r"max_run must be at most 1048576 \(segtext.limits.MAX_RESOLUTION \*\* 2"):
        st.decode_bsd("<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_4></seg>", (4, 4), resolution=2,
                      max_run=max_run)
    with pytest.raises(ValueError, match=r"max_run must be at most"):
        st.encode_bsd([("a", np.ones((4, 4), bool))], (4, 4), resolution=2, max_run=max_run)


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
@pytest.mark.parametrize("name", ["resolution", "max_run"])
def test_resolution_and_max_run_must_be_positive_ints(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive int"):
        st.decode_bsd("", (4, 4), **{name: value})


def test_huge_max_run_within_the_limit_decodes_long_bricks():
    text = "<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_999999></seg>"
    res = st.decode_bsd(text, (4, 4), resolution=1000, max_run=10**6)
    assert [r.kind for r in res.repairs] == ["bricks_too_few"]
    assert res.objects[0].bricks.reshape(-1)[:999_999].all() and not res.objects[0].bricks.reshape(-1)[-1]


# ------------------------------------------------------------------------------- text length


def test_text_at_the_limit_is_read_whole():
    res = st.decode_bsd("x" * MAX_TEXT_LENGTH, (4, 4))
    assert res.ok and res.objects == []


def test_text_over_the_limit_is_read_up_to_it():
    block = "<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>"
    pad = MAX_TEXT_LENGTH - len(block) - 2
    text = block + "\n" * pad + "ab" + "<ref>dog</ref><box>[0,0,1000,1000]</box><seg><fg_4></seg>"
    res = st.decode_bsd(text, (4, 4), resolution=2)
    assert [(o.label, o.box) for o in res.objects] == [("cat", (0, 0, 2, 2))]
    assert [(r.kind, r.line, r.column) for r in res.repairs] == [("text_too_long", pad + 1, 3)]
    assert str(MAX_TEXT_LENGTH) in res.repairs[0].message and str(len(text)) in res.repairs[0].message
    with pytest.raises(st.DecodeError) as e:
        st.decode_bsd(text, (4, 4), resolution=2, mode="strict")
    assert (e.value.kind, e.value.line, e.value.column) == ("text_too_long", pad + 1, 3)
    assert "MAX_TEXT_LENGTH" in str(e.value)


def test_text_over_the_limit_cuts_a_block():
    block = "<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>"
    text = "y" * (MAX_TEXT_LENGTH - block.index("<fg_4>")) + block
    res = st.decode_bsd(text, (4, 4), resolution=2)
    assert [r.kind for r in res.repairs] == ["text_too_long", "missing_seg_close", "bricks_too_few"]
    assert [(o.label, o.box) for o in res.objects] == [("cat", (0, 0, 2, 2))]
    assert not res.objects[0].bricks.any()
    with pytest.raises(st.DecodeError, match="more than the limit") as e:
        st.decode_bsd(text, (4, 4), resolution=2, mode="strict")
    assert e.value.kind == "text_too_long"


# ------------------------------------------------------------------------------- positions


texts_with_newlines = hs.text(alphabet=hs.sampled_from("ab\n\r<>"), max_size=60)


@given(texts_with_newlines)
def test_repair_positions_are_the_counted_line_and_column(text):
    log = RepairLog(text, strict=False)
    for offset in range(-3, len(text) + 4):
        o = max(0, min(offset, len(text)))
        want = (text.count("\n", 0, o) + 1, o - (text.rfind("\n", 0, o) + 1) + 1)
        assert log.position(offset) == want, offset


OVERLAPPING = bricks._Spelling("aa", "ab", "ba", "aab", None, False, "b", "abab")


@given(hs.text(alphabet="ab<x", max_size=40), hs.data())
def test_tag_lookups_are_str_find(text, data):
    for sp in (OVERLAPPING, *st.BOX_FORMATS.values()):
        tags = bricks._Tags(text, sp)
        for tag in sp.tags:
            start = data.draw(hs.integers(0, len(text) + 2))
            stop = data.draw(hs.integers(0, len(text) + 2))
            assert tags.find(tag, start) == text.find(tag, start)
            assert tags.find(tag, start, stop) == text.find(tag, start, stop)
            want, i = [], text.find(tag, start, stop)
            while i >= 0:
                want.append(i)
                i = text.find(tag, i + 1, stop)
            assert tags.all(tag, start, stop) == want


class _ScanningTags:
    """The parser's former look-ups: str.find from the position, every time."""

    def __init__(self, text, spelling):
        self.text = text
        self.n = len(text)

    def find(self, tag, start, stop=None):
        return self.text.find(tag, start, self.n if stop is None else stop)

    def all(self, tag, start, stop):
        out, i = [], self.text.find(tag, start, stop)
        while i >= 0:
            out.append(i)
            i = self.text.find(tag, i + 1, stop)
        return out


TOKENS = ["<ref>", "</ref>", "<box>", "</box>", "<seg>", "</seg>", "<|object_ref_start|>",
          "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "[", "]", "(", ")", ",", "0", "1", "7",
          "500", "1000", "-3", "<fg_2>", "<bg_3>", "<fg_0>", "<bg_07>", "<fg_", "cat", "\n", " ", "<", ">"]


@given(hs.lists(hs.sampled_from(TOKENS), max_size=40).map("".join), hs.sampled_from(sorted(st.BOX_FORMATS)))
def test_repairing_parser_equals_the_scanning_one(text, fmt):
    cfg = bricks._config(3, 4, False, fmt, "<fg_{k}>", "<bg_{k}>")
    log = RepairLog(text, strict=False)
    got = bricks._decode_blocks(text, cfg, 10, 20, log)
    saved = bricks._Tags
    bricks._Tags = _ScanningTags
    try:
        old_log = RepairLog(text, strict=False)
        want = bricks._decode_blocks(text, cfg, 10, 20, old_log)
    finally:
        bricks._Tags = saved
    assert log.repairs == old_log.repairs
    assert [(o.label, o.box) for o in got] == [(o.label, o.box) for o in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.bricks, b.bricks)


# ------------------------------------------------------------------------------- linear time


JUNK = ["<box>", "<ref>", "<seg>", "<ref>a</ref><box>[1,2,3,4]</box>", "\n<box>[1,2,3,4]<seg><fg_0>"]


@pytest.mark.parametrize("unit", JUNK)
def test_junk_of_200_kb_decodes_in_seconds(unit):
    n = 200_000 // len(unit)
    text = unit * n
    t0 = time.perf_counter()
    res = st.decode_bsd(text, (480, 640))
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"{elapsed:.1f} s for {len(text)} characters of {unit!r}"
    kinds = [r.kind for r in res.repairs]
    where = [(r.line, r.column) for r in res.repairs]
    if unit == "<box>":  # each box: no label, no numbers, no bricks
        assert res.objects == [] and kinds == ["missing_ref", "box_malformed", "missing_seg"] * n
        assert where[::3] == [(1, 5 * k + 1) for k in range(n)]
        assert where[1::3] == [(1, 5 * k + 6) for k in range(n)]
    elif unit == "<ref>":  # each ref: no box (pointing after where its close tag would end)
        assert res.objects == [] and kinds == ["missing_box"] * n
        assert where == [(1, min(5 * (k + 1) + 6, 5 * n) + 1) for k in range(n)]
    elif unit == "<seg>":  # bricks outside any block
        assert res.objects == [] and kinds == ["missing_box"] * n
        assert where == [(1, 5 * k + 1) for k in range(n)]
    elif unit.startswith("<ref>"):  # a label and a box, no bricks
        assert res.objects == [] and kinds == ["missing_seg"] * n
        assert where == [(1, 32 * (k + 1) + 1) for k in range(n)]
    else:  # one object a line (from line 2), with a brick of length 0 at column 20
        assert [o.box for o in res.objects] == [(0, 0, 2, 2)] * n
        assert [w for w, k in zip(where, kinds) if k == "bad_brick"] == [(k + 2, 20) for k in range(n)]
        assert kinds.count("missing_ref") == kinds.count("bricks_too_few") == n


def test_brick_soup_allocates_no_more_than_its_grid():
    # a million cells a brick, seventy thousand bricks: the cells kept are the grid's 4096
    body = "<fg_999999999>" * 70_000
    text = "<ref>a</ref><box>[0,0,1000,1000]</box><seg>" + body + "</seg>"
    assert len(text) <= MAX_TEXT_LENGTH
    res = st.decode_bsd(text, (8, 8))
    assert res.objects[0].bricks.all()
    assert [r.kind for r in res.repairs].count("bad_brick") == 70_000
    assert res.repairs[-1].kind == "bricks_too_many"
    assert str(70_000 * 4097) in res.repairs[-1].message  # each brick counts as at most S*S + 1


@pytest.mark.parametrize("text", [
    "<ref>a</ref><box>[99999999999999999999,0,1,1]</box><seg><fg_99999999999999999999></seg>",
    "<ref>a</ref><box>[-99999999999999999999,-5,99999999999999999999,7]</box><seg><fg_1></seg>",
    "<box>[0,0,1000,1000]</box><seg>" + "<fg_" + "9" * 5000 + ">" + "</seg>",
    "<|object_ref_start|>a<|object_ref_end|><|box_start|>(0,0),(99999999999,99999999999)<|box_end|>"
    "<seg><bg_" + "9" * 30 + "></seg>",
])
@pytest.mark.parametrize("fmt", sorted(st.BOX_FORMATS))
def test_huge_numbers_are_repaired(text, fmt):
    for S in (1, 4, 64):
        res = st.decode_bsd(text, (5, 7), resolution=S, box_format=fmt)
        for o in res.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 7 and 0 <= y0 < y1 <= 5
            assert o.bricks.shape == (S, S) and o.mask.shape == (5, 7)
        with pytest.raises(st.DecodeError):
            st.decode_bsd(text, (5, 7), resolution=S, box_format=fmt, mode="strict")


def test_merging_many_decoded_objects_builds_no_mask_per_object():
    text = "".join(f"<ref>{'ab'[k % 2]}</ref><box>[{k % 900},{k % 700},{k % 900 + 99},{k % 700 + 300}]</box>"
                   f"<seg><fg_{k % 15 + 1}><bg_{15 - k % 15}></seg>" for k in range(2000))
    res = st.decode_bsd(text, (480, 640), resolution=4)
    union = st.merge_objects(res.objects, (480, 640))
    label_map = st.merge_objects(res.objects, (480, 640), labels=["others", "b", "a"])
    assert all("_mask" not in o.__dict__ for o in res.objects)  # nothing cached: no (H, W) per object
    np.testing.assert_array_equal(union, res.mask())
    want = np.zeros((480, 640), np.int32)
    for o in res.objects:  # the plain way: each object's (H, W) mask
        want[o.mask] = {"a": 2, "b": 1}[o.label]
    np.testing.assert_array_equal(label_map, want)
    np.testing.assert_array_equal(st.merge_objects(res.objects, (480, 640), labels=["others", "b", "a"]), want)
    with pytest.raises(ValueError, match="not in labels"):
        st.merge_objects(res.objects, (480, 640), labels=["others", "a"])
    with pytest.raises(ValueError, match="shape"):
        st.merge_objects(st.decode_bsd(text, (480, 641), resolution=4).objects[:1], (480, 640))


@pytest.mark.parametrize("S", [1024, 512])
def test_objects_past_the_brick_cells_limit_are_dropped(S):
    limit = bricks.MAX_BRICK_CELLS // (S * S)
    assert limit == {1024: 64, 512: 256}[S]
    block = f"<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_{S * S}></seg>"
    kw = dict(resolution=S, max_run=S * S)
    res = st.decode_bsd(block * limit, (8, 8), mode="strict", **kw)  # the compiled path
    assert len(res.objects) == limit and res.ok
    text = block * (limit + 5)
    res = st.decode_bsd(text, (8, 8), **kw)
    assert len(res.objects) == limit and all(o.bricks.all() for o in res.objects)
    assert [(r.kind, r.line, r.column) for r in res.repairs] == [("objects_too_many", 1, len(block) * limit + 1)]
    with pytest.raises(st.DecodeError) as e:
        st.decode_bsd(text, (8, 8), mode="strict", **kw)
    assert (e.value.kind, e.value.column) == ("objects_too_many", len(block) * limit + 1)
    # blocks that pad out to S*S cells from a few characters count alike
    junk = "<box>[0,0,1,1]<seg>" * (limit + 3) + "<ref>b</ref><box>[5,5,0,0]</box><seg><fg_1></seg>"
    res = st.decode_bsd(junk, (8, 8), **kw)
    assert len(res.objects) == limit
    assert [r.kind for r in res.repairs].count("objects_too_many") == 1
    assert res.repairs[-1].kind == "objects_too_many"


# ------------------------------------------------------------------------------- issue 9: tags in another case


@pytest.mark.parametrize("fmt", ["norm1000", "qwen2vl", "pixel"])
def test_tags_in_another_case_are_the_tags(fmt):
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    clean = st.encode_bsd([("cat", m)], (4, 4), resolution=2, box_format=fmt)
    sp = st.BOX_FORMATS[fmt]
    shouted = clean
    for tag in sp.tags:
        shouted = shouted.replace(tag, tag.upper())
    res = st.decode_bsd(shouted, (4, 4), resolution=2, box_format=fmt)
    want = st.decode_bsd(clean, (4, 4), resolution=2, box_format=fmt)
    assert [(o.label, o.box) for o in res.objects] == [(o.label, o.box) for o in want.objects]
    assert (res.mask() == want.mask()).all()
    kinds = [r.kind for r in res.repairs]
    assert kinds == ["tag_case"] * sum(t != t.upper() for t in sp.tags)
    with pytest.raises(st.DecodeError) as e:
        st.decode_bsd(shouted, (4, 4), resolution=2, box_format=fmt, mode="strict")
    assert e.value.kind == "tag_case" and e.value.column == 1


def test_tag_case_repairs_merge_in_text_order_and_strict_raises_the_first_deviation():
    text = "<ref>cat</ref><box>[0,0,9999,500]</box><SEG><fg_4></seg>"
    res = st.decode_bsd(text, (4, 4), resolution=2)
    assert [(r.kind, r.column) for r in res.repairs] == [("box_out_of_range", 20), ("tag_case", 40)]
    with pytest.raises(st.DecodeError) as e:
        st.decode_bsd(text, (4, 4), resolution=2, mode="strict")
    assert (e.value.kind, e.value.column) == ("box_out_of_range", 20)
