"""Table of malformed B-SD model outputs: what decode_bsd's repair mode returns (objects, boxes, bricks,
repair kinds and where they point), and what strict mode raises (st.DecodeError .kind / .line / .column).

Image 100 x 200 (H x W), resolution 4 (16 cells), so that every 0..1000 number used here maps to an
exact pixel (q * 200 / 1000 and q * 100 / 1000 are integers) and the tables stay readable.
"""

from __future__ import annotations

import numpy as np
import pytest

import naive_bricks as nb
import segtext as st

SIZE = (100, 200)
S = 4

BSD_KINDS = {
    "missing_ref",
    "missing_ref_close",
    "missing_box",
    "missing_box_close",
    "box_malformed",
    "box_out_of_range",
    "box_swapped",
    "box_empty",
    "missing_seg",
    "missing_seg_close",
    "unknown_token",
    "bad_brick",
    "bricks_too_many",
    "bricks_too_few",
}

B = "<bg_5><fg_2><bg_2><fg_2><bg_5>"  # a 2 x 2 square in the middle of the 4 x 4 cells
G1 = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
FULL = np.ones((S, S), bool)
EMPTY = np.zeros((S, S), bool)
FG3 = np.array([1, 1, 1] + [0] * 13, bool).reshape(S, S)

QBOX = "[100,200,500,600]"
BOX = (20, 20, 100, 60)  # its pixel box
DOG = f"<ref>dog</ref><box>{QBOX}</box><seg>{B}</seg>"
CAT = "<ref>cat</ref><box>[600,100,900,500]</box><seg><fg_16></seg>"
CAT_BOX = (120, 10, 180, 50)
QDOG = f"<|object_ref_start|>dog<|object_ref_end|><|box_start|>(100,200),(500,600)<|box_end|><seg>{B}</seg>"

ANY = object()  # label not checked
SKIP = object()  # repairs not checked (and no strict-mode expectation)
END = object()


def span(text, sub, nth=0, to_end=False):
    """Offsets (lo, hi) of the nth occurrence of sub in text (hi inclusive: just after it), or of END;
    to_end: from there to the end of the text."""
    if sub is END:
        return (max(0, len(text) - 1), len(text))
    start = -1
    for _ in range(nth + 1):
        start = text.index(sub, start + 1)
    return (start, len(text) if to_end else start + len(sub))


def P(id, text, objects, kinds, where=None, **kw):
    """objects: list of (label | ANY, pixel box | None, (S, S) cells | None), or None (not checked);
    kinds: set of kinds that must be among the repairs (set() -> none at all), None -> at least one repair,
    SKIP -> not checked;  where: {kind: [(lo, hi) offsets]} where that kind's repair must point."""
    where = {k: [span(text, *s) if isinstance(s, tuple) else span(text, s) for s in v] for k, v in (where or {}).items()}
    return pytest.param(text, objects, kinds, where, kw, id=id)


def block(label="<ref>dog</ref>", box=f"<box>{QBOX}</box>", seg=f"<seg>{B}</seg>"):
    return label + box + seg


CASES = [
    # ------------------------------------------------------------------ well-formed controls
    P("valid_one", DOG, [("dog", BOX, G1)], set()),
    P("valid_two", DOG + CAT, [("dog", BOX, G1), ("cat", CAT_BOX, FULL)], set()),
    P("valid_qwen2vl", QDOG, [("dog", BOX, G1)], set(), box_format="qwen2vl"),
    P("valid_pixel", f"<ref>dog</ref><box>[20,20,100,60]</box><seg>{B}</seg>", [("dog", BOX, G1)], set(),
      box_format="pixel"),
    P("empty_text", "", [], set()),
    P("no_block_prose", "I could not find it in the image.", [], SKIP),
    P("no_block_prose_with_tags", "Sorry, there is no <ref>unicorn</ref> here.", [], SKIP),
    P("text_before_and_after", "Sure, here it is: " + DOG + " Hope this helps.", [("dog", BOX, G1)], set()),
    P("text_before_multiline", "Sure.\nHere you go:\n" + DOG + "\n", [("dog", BOX, G1)], set()),
    P("newline_between_blocks", DOG + "\n" + CAT, [("dog", BOX, G1), ("cat", CAT_BOX, FULL)], SKIP),
    # ------------------------------------------------------------------ ref
    P("missing_ref", block(label=""), [("", BOX, G1)], {"missing_ref"}, {"missing_ref": ["<box>"]}),
    P(
        "missing_ref_second_block",
        DOG + "<box>[600,100,900,500]</box><seg><fg_16></seg>",
        [("dog", BOX, G1), ("", CAT_BOX, FULL)],
        {"missing_ref"},
        {"missing_ref": [("<box>", 1)]},
    ),
    P("missing_ref_close", block(label="<ref>dog"), [(ANY, BOX, G1)], {"missing_ref_close"},
      {"missing_ref_close": ["<ref>dog<box>"]}),
    # ------------------------------------------------------------------ box tags
    P("missing_box", block(box="") + CAT, [("cat", CAT_BOX, FULL)], {"missing_box"},
      {"missing_box": ["<ref>dog</ref><seg>"]}),
    P("bricks_without_block", "<seg><fg_16></seg>", [], {"missing_box"}, {"missing_box": ["<seg>"]}),
    P("bricks_after_block", CAT + " <seg><fg_3></seg>", [("cat", CAT_BOX, FULL)], {"missing_box"},
      {"missing_box": [("<seg>", 1)]}),
    P("missing_box_close", block(box=f"<box>{QBOX}"), [("dog", BOX, G1)], {"missing_box_close"},
      {"missing_box_close": [f"<box>{QBOX}<seg>"]}),
    P("missing_box_close_qwen2vl", QDOG.replace("<|box_end|>", ""), [("dog", BOX, G1)], {"missing_box_close"},
      box_format="qwen2vl"),
    # ------------------------------------------------------------------ box numbers
    P("box_malformed_spaces", block(box="<box>[100, 200, 500, 600]</box>"), [("dog", BOX, G1)], {"box_malformed"},
      {"box_malformed": ["<box>[100, 200, 500, 600]</box>"]}),
    P("box_malformed_qwen_spelling_in_norm1000", block(box="<box>(100,200),(500,600)</box>"), [("dog", BOX, G1)],
      {"box_malformed"}, {"box_malformed": ["<box>(100,200),(500,600)</box>"]}),
    P("box_malformed_norm1000_spelling_in_qwen2vl",
      QDOG.replace("(100,200),(500,600)", "[100,200,500,600]"), [("dog", BOX, G1)], {"box_malformed"},
      box_format="qwen2vl"),
    P("box_malformed_spaces_qwen2vl", QDOG.replace("(100,200),(500,600)", "(100, 200), (500, 600)"),
      [("dog", BOX, G1)], {"box_malformed"}, box_format="qwen2vl"),
    P("box_malformed_non_ascii_digits", block(box="<box>[\u0661\u0660\u0660,200,500,600]</box>"),
      None, {"box_malformed"}),  # kept (read as 100) or dropped (three ASCII integers): not pinned
    P("box_malformed_no_brackets", block(box="<box>100,200,500,600</box>"), [("dog", BOX, G1)], {"box_malformed"}),
    P("box_malformed_five_numbers", block(box="<box>[100,200,500,600,700]</box>"), [("dog", BOX, G1)],
      {"box_malformed"}),
    P("box_malformed_three_numbers", block(box="<box>[100,200,500]</box>") + CAT, [("cat", CAT_BOX, FULL)],
      {"box_malformed"}, {"box_malformed": ["<box>[100,200,500]</box>"]}),
    P("box_malformed_words", block(box="<box>[left,top,right,bottom]</box>") + CAT, [("cat", CAT_BOX, FULL)],
      {"box_malformed"}),
    P("box_malformed_empty", block(box="<box></box>") + CAT, [("cat", CAT_BOX, FULL)], {"box_malformed"}),
    P("box_out_of_range_x", block(box="<box>[100,200,1200,600]</box>"), [("dog", (20, 20, 200, 60), G1)],
      {"box_out_of_range"}, {"box_out_of_range": ["<box>[100,200,1200,600]</box>"]}),
    P("box_out_of_range_y", block(box="<box>[100,200,500,1500]</box>"), [("dog", (20, 20, 100, 100), G1)],
      {"box_out_of_range"}),
    P("box_out_of_range_huge", block(box="<box>[100,200,99999999999999999999999,600]</box>"),
      [("dog", (20, 20, 200, 60), G1)], {"box_out_of_range"}),
    P("box_out_of_range_pixel", f"<ref>dog</ref><box>[20,20,300,60]</box><seg>{B}</seg>",
      [("dog", (20, 20, 200, 60), G1)], {"box_out_of_range"}, box_format="pixel"),
    P("box_swapped_x", block(box="<box>[500,200,100,600]</box>"), [("dog", BOX, G1)], {"box_swapped"},
      {"box_swapped": ["<box>[500,200,100,600]</box>"]}),
    P("box_swapped_y", block(box="<box>[100,600,500,200]</box>"), [("dog", BOX, G1)], {"box_swapped"}),
    P("box_swapped_both_qwen2vl", QDOG.replace("(100,200),(500,600)", "(500,600),(100,200)"),
      [("dog", BOX, G1)], {"box_swapped"}, box_format="qwen2vl"),
    P("box_swapped_pixel", f"<ref>dog</ref><box>[100,20,20,60]</box><seg>{B}</seg>", [("dog", BOX, G1)],
      {"box_swapped"}, box_format="pixel"),
    P("box_empty", block(box="<box>[500,200,500,600]</box>") + CAT, [("cat", CAT_BOX, FULL)], {"box_empty"},
      {"box_empty": ["<box>[500,200,500,600]</box>"]}),
    P("box_empty_after_clipping", block(box="<box>[1000,200,1200,600]</box>") + CAT, [("cat", CAT_BOX, FULL)],
      {"box_out_of_range", "box_empty"}),
    P("box_empty_pixel", f"<ref>dog</ref><box>[20,20,20,60]</box><seg>{B}</seg>", [], {"box_empty"},
      box_format="pixel"),
    # ------------------------------------------------------------------ seg tags
    P("missing_seg_then_block", block(seg="") + CAT, [("cat", CAT_BOX, FULL)], {"missing_seg"}),
    P("missing_seg_final_block", DOG + "<ref>cat</ref><box>[600,100,900,500]</box>", [("dog", BOX, G1)],
      {"missing_seg"}),
    P("missing_seg_close_at_end", block(seg=f"<seg>{B}"), [("dog", BOX, G1)], {"missing_seg_close"},
      {"missing_seg_close": [("<seg>", 0, True)]}),
    P("missing_seg_close_before_next_block", block(seg=f"<seg>{B}") + CAT,
      [("dog", BOX, G1), ("cat", CAT_BOX, FULL)], {"missing_seg_close"},
      {"missing_seg_close": [(f"<seg>{B}<ref>", 0)]}),
    # ------------------------------------------------------------------ bricks
    P("unknown_token_tag", block(seg="<seg><bg_5><cat><fg_2><bg_2><fg_2><bg_5></seg>"), [("dog", BOX, G1)],
      {"unknown_token"}, {"unknown_token": ["<cat>"]}),
    P("unknown_token_word", block(seg="<seg><bg_5><fg_2>hello<bg_2><fg_2><bg_5></seg>"), [("dog", BOX, G1)],
      {"unknown_token"}, {"unknown_token": ["hello"]}),
    P("unknown_token_other_kind", block(seg="<seg><bg_5><mg_3><fg_2><bg_2><fg_2><bg_5></seg>"),
      [("dog", BOX, G1)], {"unknown_token"}, {"unknown_token": ["<mg_3>"]}),
    P("unknown_token_multiline", "Sure.\nHere:\n" + block(seg="<seg><bg_5><cat><fg_2><bg_2><fg_2><bg_5></seg>"),
      [("dog", BOX, G1)], {"unknown_token"}, {"unknown_token": ["<cat>"]}),
    P("bad_brick_zero", block(seg="<seg><bg_5><fg_0><fg_2><bg_2><fg_2><bg_5></seg>"), [("dog", BOX, G1)],
      {"bad_brick"}, {"bad_brick": ["<fg_0>"]}),
    P("bad_brick_over_cap", DOG, [("dog", BOX, G1)], {"bad_brick"}, {"bad_brick": [("<bg_5>", 0), ("<bg_5>", 1)]},
      max_run=4),
    P("bad_brick_huge", block(seg="<seg><fg_99999999999999999999></seg>"), [("dog", BOX, FULL)],
      {"bad_brick", "bricks_too_many"}),
    P("bricks_too_many_extra_brick", block(seg=f"<seg>{B}<fg_3></seg>"), [("dog", BOX, G1)], {"bricks_too_many"},
      {"bricks_too_many": [(f"<seg>{B}<fg_3></seg>", 0)]}),
    P("bricks_too_many_single_brick", block(seg="<seg><fg_20></seg>"), [("dog", BOX, FULL)], {"bricks_too_many"}),
    P("bricks_too_many_single_brick_over_cap", block(seg="<seg><fg_64></seg>"), [("dog", BOX, FULL)],
      {"bad_brick", "bricks_too_many"}),
    P("bricks_too_many_last_brick", block(seg="<seg><bg_5><fg_2><bg_2><fg_2><bg_9></seg>"), [("dog", BOX, G1)],
      {"bricks_too_many"}, {"bricks_too_many": ["<seg><bg_5><fg_2><bg_2><fg_2><bg_9></seg>"]}),
    P("bricks_too_few", block(seg="<seg><bg_5><fg_2><bg_2><fg_2></seg>"), [("dog", BOX, G1)], {"bricks_too_few"},
      {"bricks_too_few": ["<seg><bg_5><fg_2><bg_2><fg_2></seg>"]}),
    P("bricks_too_few_pads_background", block(seg="<seg><fg_3></seg>"), [("dog", BOX, FG3)], {"bricks_too_few"}),
    P("bricks_none", block(seg="<seg></seg>"), [("dog", BOX, EMPTY)], {"bricks_too_few"}),
    # ------------------------------------------------------------------ truncated final block
    P("truncated_in_seg", DOG + "<ref>cat</ref><box>[600,100,900,500]</box><seg><fg_3>",
      [("dog", BOX, G1), ("cat", CAT_BOX, FG3)], {"missing_seg_close", "bricks_too_few"}),
    P("truncated_in_token", DOG + "<ref>cat</ref><box>[600,100,900,500]</box><seg><fg_3><bg",
      [("dog", BOX, G1), ("cat", CAT_BOX, FG3)], {"missing_seg_close", "bricks_too_few"}),
    P("truncated_after_seg_open", DOG + "<ref>cat</ref><box>[600,100,900,500]</box><seg>",
      [("dog", BOX, G1), ("cat", CAT_BOX, EMPTY)], {"missing_seg_close", "bricks_too_few"}),
    P("truncated_in_box", DOG + "<ref>cat</ref><box>[600,1", [("dog", BOX, G1)], None),
    P("truncated_after_ref", DOG + "<ref>cat</ref>", [("dog", BOX, G1)], None),
    P("truncated_in_ref", DOG + "<ref>ca", [("dog", BOX, G1)], None),
    P("truncated_in_tag", DOG + "<re", [("dog", BOX, G1)], SKIP),
]


def offset_of(text, line, column):
    lines = text.split("\n")
    assert 1 <= line <= len(lines), (line, len(lines))
    return sum(len(l) + 1 for l in lines[: line - 1]) + column - 1


def check_position(text, kind, line, column, where):
    if kind not in where:
        return
    off = offset_of(text, line, column)
    assert any(lo <= off <= hi for lo, hi in where[kind]), (
        f"{kind} at line {line} column {column} (offset {off}); expected offsets in {where[kind]}"
    )


def check_objects(res, objects):
    for o in res.objects:
        assert o.mask.shape == SIZE and o.mask.dtype == bool
    if objects is None:
        return
    assert len(res.objects) == len(objects), f"objects {[(o.label, tuple(o.box)) for o in res.objects]}"
    for o, (label, box, cells) in zip(res.objects, objects):
        if label is not ANY:
            assert o.label == label
        if box is not None:
            assert tuple(int(v) for v in o.box) == box
        assert o.bricks.shape == (S, S) and o.bricks.dtype == bool
        if cells is not None:
            np.testing.assert_array_equal(o.bricks, cells)
        assert o.mask.shape == SIZE and o.mask.dtype == bool
        np.testing.assert_array_equal(o.mask, nb.paste(nb.expand(o.bricks, o.box), tuple(o.box), SIZE))


@pytest.mark.parametrize("text, objects, kinds, where, kw", CASES)
def test_repair_table(text, objects, kinds, where, kw):
    res = st.decode_bsd(text, image_size=SIZE, resolution=S, mode="repair", **kw)
    got = [r.kind for r in res.repairs]
    assert all(isinstance(r, st.Repair) for r in res.repairs)
    assert set(got) <= set(st.REPAIR_KINDS), got
    assert res.ok == (not res.repairs)
    check_objects(res, objects)
    if kinds is SKIP:
        return
    if kinds is None:
        assert got, "expected at least one repair"
    elif not kinds:
        assert res.repairs == [], res.repairs
    else:
        assert kinds <= set(got), f"expected {sorted(kinds)} among {got}"
    for r in res.repairs:
        assert r.line >= 1 and r.column >= 1
        check_position(text, r.kind, r.line, r.column, where)


@pytest.mark.parametrize("text, objects, kinds, where, kw", CASES)
def test_strict_table(text, objects, kinds, where, kw):
    if kinds is SKIP:
        return
    if kinds == set():
        res = st.decode_bsd(text, image_size=SIZE, resolution=S, mode="strict", **kw)
        assert res.ok
        check_objects(res, objects)
        return
    with pytest.raises(st.DecodeError) as exc:
        st.decode_bsd(text, image_size=SIZE, resolution=S, mode="strict", **kw)
    e = exc.value
    assert isinstance(e, ValueError)
    assert isinstance(e.line, int) and isinstance(e.column, int) and e.line >= 1 and e.column >= 1
    assert str(e)
    if kinds is None:
        assert e.kind in st.REPAIR_KINDS, e.kind
    else:
        assert e.kind in kinds, f"strict raised {e.kind!r} ({e}); expected one of {sorted(kinds)}"
    check_position(text, e.kind, e.line, e.column, where)
    # strict raises at the first repair that repair mode reports
    first = st.decode_bsd(text, image_size=SIZE, resolution=S, mode="repair", **kw).repairs[0]
    assert (first.kind, first.line, first.column) == (e.kind, e.line, e.column)


def test_repair_kinds_are_registered():
    missing = BSD_KINDS - set(st.REPAIR_KINDS)
    assert not missing, f"REPAIR_KINDS lacks {sorted(missing)}"
    for kind in BSD_KINDS:
        assert isinstance(st.REPAIR_KINDS[kind], str) and st.REPAIR_KINDS[kind]


def test_every_bsd_kind_is_in_the_table():
    covered = set()
    for p in CASES:
        kinds = p.values[2]
        if isinstance(kinds, set):
            covered |= kinds
    assert BSD_KINDS <= covered, sorted(BSD_KINDS - covered)


def test_realistic_messy_answer():
    text = (
        "Sure! I found two dogs.\n"
        "<ref>dog</ref><box>[100, 200, 500, 600]</box><seg><bg_5><fg_2><bg_2><fg_2><bg_5></seg>\n"
        "<ref>dog</ref><box>[900,500,600,100]</box><seg><fg_10><fg_0><fg_9>"
    )
    res = st.decode_bsd(text, image_size=SIZE, resolution=S)
    kinds = {r.kind for r in res.repairs}
    assert {"box_malformed", "box_swapped", "bad_brick", "bricks_too_many", "missing_seg_close"} <= kinds, kinds
    check_objects(res, [("dog", BOX, G1), ("dog", CAT_BOX, FULL)])
    np.testing.assert_array_equal(res.mask(), res.objects[0].mask | res.objects[1].mask)
