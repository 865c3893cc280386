"""Fuzzing decode_bsd: random strings, soups of format tokens and mutated valid encodings never make
repair mode raise; every object has an (S, S) bool brick grid, an (H, W) bool mask that is exactly its
bricks expanded into its box, and a non-empty box inside the image; every repair is a registered kind
pointing inside the text.  Strict mode raises only st.DecodeError."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as hs

import naive_bricks as nb
import segtext as st

PRESETS = ["norm1000", "qwen2vl", "pixel"]
size_st = hs.tuples(hs.integers(1, 50), hs.integers(1, 50))
S_st = hs.sampled_from([1, 3, 8, 16])
max_run_st = hs.sampled_from([63, 4, 1])
preset_st = hs.sampled_from(PRESETS)


def check_result(res, size, S, text):
    H, W = size
    assert isinstance(res.objects, list)
    for o in res.objects:
        assert isinstance(o.label, str)
        assert len(o.box) == 4
        x1, y1, x2, y2 = (int(v) for v in o.box)
        assert all(isinstance(v, (int, np.integer)) for v in o.box), o.box
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, (o.box, size)
        assert isinstance(o.bricks, np.ndarray) and o.bricks.shape == (S, S) and o.bricks.dtype == bool
        assert isinstance(o.mask, np.ndarray) and o.mask.shape == (H, W) and o.mask.dtype == bool
        np.testing.assert_array_equal(o.mask, nb.paste(nb.expand(o.bricks, (x1, y1, x2, y2)), (x1, y1, x2, y2), size))
    lines = text.split("\n")
    for r in res.repairs:
        assert isinstance(r, st.Repair), r
        assert r.kind in st.REPAIR_KINDS, r.kind
        assert isinstance(r.message, str)
        assert 1 <= r.line <= len(lines), (r, len(lines))
        assert 1 <= r.column <= len(lines[r.line - 1]) + 1, (r, lines[r.line - 1])
    assert res.ok == (not res.repairs)
    m = res.mask()
    assert m.shape == (H, W) and m.dtype == bool
    want = np.zeros((H, W), bool)
    for o in res.objects:
        want |= o.mask
    np.testing.assert_array_equal(m, want)


def decode_and_check(text, size, S=8, max_run=63, box_format="norm1000"):
    res = st.decode_bsd(text, image_size=size, resolution=S, max_run=max_run, box_format=box_format, mode="repair")
    check_result(res, size, S, text)
    return res


# ------------------------------------------------------------------------------------- random strings


@settings(max_examples=300)
@given(text=hs.text(max_size=300), size=size_st, S=S_st, max_run=max_run_st, box_format=preset_st)
def test_repair_never_raises_on_random_text(text, size, S, max_run, box_format):
    decode_and_check(text, size, S, max_run, box_format)


TOKENS = [
    "<ref>", "</ref>", "<box>", "</box>", "<seg>", "</seg>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<ref", "ref>", "</", "<", ">", "|", "[", "]", "(", ")", ",", ", ", " ", "\n", "\t", "_",
    "dog", "white horse", "fg", "bg", "<fg_", "<bg_", "<fg_3>", "<bg_5>", "<fg_63>", "<bg_64>", "<fg_0>",
    "<bg_-1>", "<fg_1.5>", "<fg_٣>", "<fg_99999999999999999999>", "<mg_2>",
    "0", "1", "7", "500", "999", "1000", "1001", "1200", "-5", "+3", "99999999999999999999999", "٣", "1e3",
    "[100,200,500,600]", "(100,200),(500,600)", "[0,0,0,0]", "[1000,1000,0,0]",
    "é", "狗", "🐕", "\x00", "\u2028", "\r\n",
]
token_st = hs.sampled_from(TOKENS)


@settings(max_examples=400)
@given(parts=hs.lists(token_st, max_size=60), size=size_st, S=S_st, max_run=max_run_st, box_format=preset_st)
def test_repair_never_raises_on_format_soup(parts, size, S, max_run, box_format):
    text = "".join(parts)
    decode_and_check(text, size, S, max_run, box_format)


@hs.composite
def block_soup(draw):
    """Blocks made of right and wrong parts: more often close to the format than a plain soup."""
    out = []
    for _ in range(draw(hs.integers(0, 4))):
        ref = draw(hs.sampled_from(["<ref>dog</ref>", "<ref>dog", "dog</ref>", "", "<ref></ref>", "<ref>a<ref>b</ref>"]))
        nums = draw(hs.lists(hs.sampled_from(["0", "1", "250", "500", "1000", "1500", "-3", "x", ""]), min_size=0, max_size=6))
        sep = draw(hs.sampled_from([",", ", ", " ", ";"]))
        box = draw(hs.sampled_from(["<box>[{}]</box>", "<box>[{}]", "[{}]</box>", "<box>({})</box>", "", "<box>{}</box>"]))
        bricks = draw(hs.lists(hs.sampled_from(["<fg_3>", "<bg_7>", "<fg_63>", "<bg_0>", "<fg_64>", "x", "<fg_", " "]), max_size=12))
        seg = draw(hs.sampled_from(["<seg>{}</seg>", "<seg>{}", "{}</seg>", "{}", "<seg><seg>{}</seg></seg>"]))
        out.append(ref + box.format(sep.join(nums)) + seg.format("".join(bricks)))
    return draw(hs.sampled_from(["", "Sure: ", "Sure.\n"])) + "".join(out) + draw(hs.sampled_from(["", " ok", "\n"]))


@settings(max_examples=300)
@given(text=block_soup(), size=size_st, S=hs.sampled_from([1, 3, 8]))
def test_repair_never_raises_on_block_soup(text, size, S):
    decode_and_check(text, size, S, 63, "norm1000")


# ------------------------------------------------------------------------------------------- mutations

INSERTS = [
    "<ref>", "</ref>", "<box>", "</box>", "<seg>", "</seg>", "<|box_start|>", "<|box_end|>",
    "<fg_0>", "<fg_3>", "<bg_2>", "<bg_64>", "<fg_1000000000000000000000>", "<cat>", "hello", "<fg_", ">",
    "[", "]", ",", "(", ")", "0", "7", "1200", "-1", " ", "\n", "\x00", "狗", "🐕", "\u2028",
]
MUTATIONS = ["drop_char", "drop_span", "insert", "unicode", "truncate", "swap_chars", "swap_numbers", "number",
             "dup_span"]


@hs.composite
def mutated_texts(draw):
    H, W = draw(size_st)
    S = draw(hs.sampled_from([1, 3, 8]))
    box_format = draw(preset_st)
    n = draw(hs.integers(1, 3))
    objs = []
    for _ in range(n):
        kind = draw(hs.sampled_from(nb.OBJECT_KINDS))
        seed = draw(hs.integers(0, 2**32 - 1))
        objs.append((draw(hs.sampled_from(["dog", "white horse", "狗"])), nb.make_object(np.random.default_rng(seed), H, W, kind)))
    text = st.encode_bsd(objs, image_size=(H, W), resolution=S, box_format=box_format)
    if draw(hs.booleans()):
        text = draw(hs.sampled_from(["Sure: ", "Here:\n"])) + text + draw(hs.sampled_from(["", ".", "\n"]))
    for _ in range(draw(hs.integers(1, 4))):
        op = draw(hs.sampled_from(MUTATIONS))
        L = len(text)
        i = draw(hs.integers(0, L))
        if op == "drop_char" and L:
            i = min(i, L - 1)
            text = text[:i] + text[i + 1 :]
        elif op == "drop_span" and L:
            j = draw(hs.integers(i, L))
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(hs.sampled_from(INSERTS)) + text[i:]
        elif op == "unicode":
            text = text[:i] + draw(hs.text(min_size=1, max_size=3)) + text[i:]
        elif op == "truncate":
            text = text[:i]
        elif op == "swap_chars" and L >= 2:
            i = min(i, L - 2)
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        elif op == "swap_numbers":
            nums = list(re.finditer(r"\d+", text))
            if len(nums) >= 2:
                a, b = sorted(draw(hs.lists(hs.integers(0, len(nums) - 1), min_size=2, max_size=2, unique=True)))
                ma, mb = nums[a], nums[b]
                text = text[: ma.start()] + mb.group() + text[ma.end() : mb.start()] + ma.group() + text[mb.end() :]
        elif op == "number":
            nums = list(re.finditer(r"\d+", text))
            if nums:
                m = draw(hs.sampled_from(nums))
                new = draw(hs.sampled_from(["0", "1", "63", "64", "999", "1000", "1001", "-1", "", "x", "99999999999999999999"]))
                text = text[: m.start()] + new + text[m.end() :]
        elif op == "dup_span" and L:
            j = draw(hs.integers(i, min(L, i + 40)))
            text = text[:j] + text[i:j] + text[j:]
    note(f"text={text!r}")
    return (H, W), S, box_format, text


@settings(max_examples=400)
@given(data=mutated_texts(), max_run=hs.sampled_from([63, 4]))
def test_repair_never_raises_on_mutations(data, max_run):
    size, S, box_format, text = data
    decode_and_check(text, size, S, max_run, box_format)
    # read with the wrong preset or resolution: still never raises
    other = PRESETS[(PRESETS.index(box_format) + 1) % 3]
    decode_and_check(text, size, S, max_run, other)
    decode_and_check(text, size, 5, max_run, box_format)


@settings(max_examples=300)
@given(data=mutated_texts())
def test_strict_raises_only_decode_error(data):
    size, S, box_format, text = data
    try:
        res = st.decode_bsd(text, image_size=size, resolution=S, box_format=box_format, mode="strict")
    except st.DecodeError as e:
        assert e.kind in st.REPAIR_KINDS
        assert e.line >= 1 and e.column >= 1
        return
    # accepted by strict mode: clean, and repair mode agrees
    assert res.ok and res.repairs == []
    rep = decode_and_check(text, size, S, 63, box_format)
    assert rep.repairs == []
    assert [(o.label, tuple(int(v) for v in o.box)) for o in rep.objects] == [
        (o.label, tuple(int(v) for v in o.box)) for o in res.objects
    ]
    for a, b in zip(rep.objects, res.objects):
        np.testing.assert_array_equal(a.mask, b.mask)


# ------------------------------------------------------------------------------- truncation everywhere

TWO = (30, 40)
A = np.zeros(TWO, bool)
A[3:17, 5:22] = nb.make_object(np.random.default_rng(5), 14, 17, "ellipse")
Bm = np.zeros(TWO, bool)
Bm[12:30, 25:40] = True
Bm[20:24, 30:33] = False
OBJS = [("white horse", A), ("dog", Bm)]


def _block_ends(text):
    return [m.end() for m in re.finditer(re.escape("</seg>"), text)]


@pytest.mark.parametrize("box_format", PRESETS)
@pytest.mark.parametrize("wrap", [False, True])
def test_truncation_at_every_position(box_format, wrap):
    S = 8
    body = st.encode_bsd(OBJS, image_size=TWO, resolution=S, box_format=box_format)
    text = ("Sure, here they are:\n" + body + "\nDone.") if wrap else body
    full = st.decode_bsd(text, image_size=TWO, resolution=S, box_format=box_format, mode="strict")
    assert len(full.objects) == 2
    ends = _block_ends(text)
    for i in range(len(text) + 1):
        prefix = text[:i]
        res = decode_and_check(prefix, TWO, S, 63, box_format)
        assert len(res.objects) <= 2
        complete = sum(e <= i for e in ends)
        # blocks whose text is complete in the prefix come back exactly
        assert len(res.objects) >= complete, (i, prefix[-30:])
        for k in range(complete):
            o, f = res.objects[k], full.objects[k]
            assert o.label == f.label and tuple(o.box) == tuple(f.box), (i, prefix[-30:])
            np.testing.assert_array_equal(o.mask, f.mask, err_msg=f"prefix of {i} chars")
        # a block that has begun (its label tag is complete) but not ended is a repair
        last_end = max([e for e in ends if e <= i], default=0)
        if nb.TAGS[box_format][0] in prefix[last_end:] and i < len(text):
            assert not res.ok, f"truncated text decoded without a repair: {prefix!r}"


@pytest.mark.parametrize("box_format", ["norm1000"])
def test_single_deletion_at_every_position(box_format):
    S = 8
    text = st.encode_bsd(OBJS, image_size=TWO, resolution=S, box_format=box_format)
    for i in range(len(text)):
        t = text[:i] + text[i + 1 :]
        res = decode_and_check(t, TWO, S, 63, box_format)
        assert len(res.objects) <= 2
        if text[i] in "<>/[]_":  # a broken tag, box or brick is always noticed
            assert not res.ok, f"deleting char {i} ({text[i]!r}) went unnoticed: {t!r}"


@pytest.mark.slow
@pytest.mark.parametrize("box_format", PRESETS)
def test_deletion_and_insertion_everywhere(box_format):
    S = 16
    text = st.encode_bsd(OBJS, image_size=TWO, resolution=S, box_format=box_format)
    for i in range(len(text) + 1):
        for t in [text[:i] + text[i + 1 :]] + [text[:i] + junk + text[i:] for junk in ("<cat>", "\n", "9", "<fg_0>")]:
            decode_and_check(t, TWO, S, 63, box_format)


@pytest.mark.slow
@settings(max_examples=1000)
@given(text=hs.text(max_size=3000), size=size_st, S=S_st, box_format=preset_st)
def test_repair_never_raises_long_random_text(text, size, S, box_format):
    decode_and_check(text, size, S, 63, box_format)


# ------------------------------------------------------------------------------------ huge numbers


@pytest.mark.parametrize(
    "text",
    [
        "<ref>a</ref><box>[0,0,99999999999999999999999999,500]</box><seg><fg_64></seg>",
        "<ref>a</ref><box>[0,0,18446744073709551617,9223372036854775808]</box><seg><fg_64></seg>",
        "<ref>a</ref><box>[0,0,500,500]</box><seg><fg_99999999999999999999999999></seg>",
        "<ref>a</ref><box>[0,0,500,500]</box><seg><bg_9223372036854775807><fg_9223372036854775807></seg>",
        "<ref>a</ref><box>[0,0,500,500]</box><seg>" + "<fg_63>" * 2000 + "</seg>",
        "<ref>a</ref><box>[0,0,500,500]</box><seg><fg_" + "9" * 5000 + "></seg>",
        "<ref>a</ref><box>[" + "1" * 5000 + ",0,500,500]</box><seg><fg_64></seg>",
    ],
)
@pytest.mark.parametrize("box_format", ["norm1000", "pixel"])
def test_huge_numbers(text, box_format):
    res = decode_and_check(text, (20, 30), 8, 63, box_format)
    assert not res.ok
