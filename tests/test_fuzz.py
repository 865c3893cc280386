"""Fuzzing decode_rrle: random strings and mutated valid encodings never make repair mode raise, the
requested shape always comes back, every repair is a known st.Repair; t4s mode never raises and
matches the plain Text4Seg decoder."""

import re

import numpy as np
import pytest
from hypothesis import assume, example, given, note
from hypothesis import strategies as hs

import naive
import segtext as st
from strategies import KNOWN_KINDS, grids_and_labels

ENCODE = {"rrle": st.encode_rrle, "isd": st.encode_isd, "irle": st.encode_irle}

grid_size_st = hs.tuples(hs.integers(1, 12), hs.integers(1, 12))


def check_result(res, grid_size=None, labels=None):
    assert isinstance(res.grid, np.ndarray)
    assert res.grid.dtype == np.min_scalar_type(len(res.labels) - 1)  # the smallest unsigned
    assert res.grid.ndim == 2
    if grid_size is not None:
        assert res.grid.shape == tuple(grid_size)
    else:
        assert res.grid.shape[0] >= 1 and res.grid.shape[1] >= 1
    assert isinstance(res.labels, list) and len(res.labels) >= 1
    if labels is not None:
        assert res.labels == list(labels)
    if res.grid.size:
        assert res.grid.min() >= 0 and res.grid.max() < len(res.labels)
    for r in res.repairs:
        assert isinstance(r, st.Repair), r
        assert r.kind in KNOWN_KINDS, r.kind
    assert res.ok == (len(res.repairs) == 0)
    assert res.format in ("rrle", "isd", "irle")


# --------------------------------------------------------------------------------------- random strings

format_tokens = hs.sampled_from(
    [
        "others",
        "dog",
        "white horse",
        "cat",
        " *",
        "| ",
        "|",
        "*",
        " ",
        "\n",
        "\n ",
        "\r\n",
        "\t",
        "<seg>",
        "</seg>",
        "<seg",
        "seg>",
        "0",
        "1",
        "2",
        "3",
        "4",
        "16",
        "x",
        "-",
        "+",
        "٣",
        "é",
        "\x00",
        "\u2028",
    ]
)


@given(
    text=hs.text(max_size=200),
    grid_size=hs.none() | grid_size_st,
    with_labels=hs.booleans(),
    unknown=hs.sampled_from(["background", "nearest"]),
)
def test_repair_never_raises_on_random_text(text, grid_size, with_labels, unknown):
    labels = ["others", "dog", "white horse"] if with_labels else None
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="repair", unknown=unknown)
    check_result(res, grid_size, labels)


@given(
    parts=hs.lists(format_tokens, max_size=60),
    grid_size=grid_size_st,
    with_labels=hs.booleans(),
    unknown=hs.sampled_from(["background", "nearest"]),
)
def test_repair_never_raises_on_format_soup(parts, grid_size, with_labels, unknown):
    text = "".join(parts)
    labels = ["others", "dog", "white horse"] if with_labels else None
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="repair", unknown=unknown)
    check_result(res, grid_size, labels)
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="t4s")
    check_result(res, grid_size, labels)


@given(parts=hs.lists(format_tokens, max_size=40))
def test_repair_never_raises_on_format_soup_inferred_size(parts):
    text = "".join(parts)
    # keep counts small: an inferred size comes from the counts themselves
    assume(not re.search(r"[0-9٣]{4,}", text))
    res = st.decode_rrle(text, mode="repair")
    check_result(res)


@given(text=hs.text(max_size=200), grid_size=grid_size_st)
def test_t4s_never_raises_on_random_text(text, grid_size):
    labels = ["others", "dog"]
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="t4s")
    check_result(res, grid_size, labels)


@pytest.mark.parametrize(
    "count", ["99999999999999999999", "18446744073709551617", "9223372036854775808", "1" * 60]
)
@pytest.mark.parametrize("mode", ["repair", "t4s"])
def test_huge_counts_with_given_size(count, mode):
    text = f"others *2| dog *{count}\n others *4\n"
    res = st.decode_rrle(text, labels=["others", "dog"], grid_size=(2, 4), mode=mode)
    check_result(res, (2, 4), ["others", "dog"])
    if mode == "repair":
        np.testing.assert_array_equal(res.grid[0], [0, 0, 1, 1])


# ------------------------------------------------------------------------------------------- mutations

INSERTS = [
    "<seg>",
    "</seg>",
    "\n",
    "\n ",
    " ",
    "|",
    "| ",
    "*",
    " *",
    "0",
    "7",
    "99",
    "-1",
    "x",
    "cat",
    "\r\n",
    "\r",
    "\x00",
    "\u2028",
    "狗",
    "🐕",
    "others *3",
    "| dog *2",
    "\n others *16",
    "  ",
    "\t",
]
MUTATIONS = [
    "drop_char",
    "drop_span",
    "insert",
    "count",
    "drop_line",
    "dup_line",
    "truncate",
    "swap",
    "junk_label",
    "unicode",
]


@hs.composite
def mutated_texts(draw, max_h=8, max_w=8):
    grid, labels = draw(grids_and_labels(max_h=max_h, max_w=max_w))
    fmt = draw(hs.sampled_from(["rrle", "isd", "irle"]))
    text = ENCODE[fmt](grid, labels)
    if draw(hs.booleans()):
        text = draw(hs.sampled_from(["", "Sure: ", "Sure, here it is:\n"])) + "<seg>" + text + "</seg>"
    n = draw(hs.integers(1, 4))
    for _ in range(n):
        op = draw(hs.sampled_from(MUTATIONS))
        L = len(text)
        i = draw(hs.integers(0, max(L, 0)))
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
        elif op == "count":
            counts = list(re.finditer(r"\*(\d+)", text))
            if counts:
                m = draw(hs.sampled_from(counts))
                new = draw(
                    hs.sampled_from(
                        ["0", "1", "2", "3", "15", "17", "40", "", "x", "1x", " 2", "2 ", "-3", "+2", "٣"]
                    )
                )
                text = text[: m.start(1)] + new + text[m.end(1) :]
        elif op == "drop_line":
            lines = text.split("\n")
            if len(lines) > 1:
                k = draw(hs.integers(0, len(lines) - 1))
                text = "\n".join(lines[:k] + lines[k + 1 :])
        elif op == "dup_line":
            lines = text.split("\n")
            k = draw(hs.integers(0, len(lines) - 1))
            text = "\n".join(lines[: k + 1] + lines[k:])
        elif op == "truncate":
            text = text[:i]
        elif op == "swap" and L >= 2:
            i = min(i, L - 2)
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        elif op == "junk_label":
            present = [lab for lab in labels if lab in text]
            if present:
                lab = draw(hs.sampled_from(present))
                junk = draw(hs.sampled_from(["cat", "dgo", "others2", "", "??", "white  horse", lab.upper()]))
                text = text.replace(lab, junk, 1)
    note(f"fmt={fmt} text={text!r}")
    return grid, labels, text


@given(data=mutated_texts(), unknown=hs.sampled_from(["background", "nearest"]), with_labels=hs.booleans())
def test_repair_never_raises_on_mutations(data, unknown, with_labels):
    grid, labels, text = data
    lab = labels if with_labels else None
    res = st.decode_rrle(text, labels=lab, grid_size=grid.shape, mode="repair", unknown=unknown)
    check_result(res, grid.shape, lab)


@given(data=mutated_texts())
def test_repair_never_raises_on_mutations_inferred_size(data):
    grid, labels, text = data
    assume(not re.search(r"[0-9]{4,}", text))
    res = st.decode_rrle(text, labels=labels, mode="repair")
    check_result(res, None, labels)


@given(data=mutated_texts())
def test_strict_raises_only_decode_error(data):
    grid, labels, text = data
    try:
        res = st.decode_rrle(text, labels=labels, grid_size=grid.shape, mode="strict")
    except st.DecodeError as e:
        assert e.line >= 1 and e.column >= 1
        return
    # accepted by strict mode: then it is clean and repair mode agrees
    assert res.repairs == []
    rep = st.decode_rrle(text, labels=labels, grid_size=grid.shape, mode="repair")
    assert rep.repairs == []
    np.testing.assert_array_equal(rep.grid, res.grid)


# --------------------------------------------------------------------------------------- t4s vs naive


def _t4s_comparable(text):
    """Text4Seg expands every run in memory: keep counts small enough for the reference."""
    return not re.search(r"\d{6,}", text)


def check_t4s(text, labels, grid_size):
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="t4s")
    check_result(res, grid_size, labels)
    want, parse_error, names = naive.t4s_decode(text, labels, grid_size)
    np.testing.assert_array_equal(res.grid, want, err_msg=f"text={text!r} repairs={res.repairs}")
    kinds = [r.kind for r in res.repairs]
    assert kinds.count("t4s_parse_error") == int(parse_error), (text, kinds)
    if not parse_error and labels is None:
        assert res.labels == names  # first appearance, with "others" moved to id 0


@given(data=mutated_texts())
@example(data=(np.full((4, 1), 2, np.int32), ["others", "dog", "00000:000"], "\n 00000:000 *1\n"))
@example(data=(np.ones((2, 2), np.int32), ["others", "dog"], "<seg>\ndog *4\n</seg>"))
def test_t4s_matches_naive_on_mutations(data):
    grid, labels, text = data
    assume(_t4s_comparable(text))
    check_t4s(text, labels, grid.shape)


@given(parts=hs.lists(format_tokens, max_size=40), grid_size=grid_size_st)
def test_t4s_matches_naive_on_format_soup(parts, grid_size):
    text = "".join(parts)
    assume(_t4s_comparable(text))
    check_t4s(text, ["others", "dog", "white horse"], grid_size)


# ------------------------------------------------------------------------------- truncation everywhere

TRUNC_GRID = np.array(
    [
        [0, 0, 0, 1, 1, 0],
        [0, 2, 2, 1, 1, 0],
        [0, 2, 2, 2, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 2, 2],
    ],
    dtype=np.int32,
)
TRUNC_LABELS = ["others", "dog", "white horse"]


@pytest.mark.parametrize("fmt", ["rrle", "isd", "irle"])
@pytest.mark.parametrize("wrap", [False, True])
def test_truncation_at_every_position(fmt, wrap):
    body = ENCODE[fmt](TRUNC_GRID, TRUNC_LABELS)
    text = ("Sure, here is the mask:\n<seg>" + body + "</seg>") if wrap else body
    start = text.index(body)
    for i in range(len(text) + 1):
        prefix = text[:i]
        for labels in (TRUNC_LABELS, None):
            res = st.decode_rrle(prefix, labels=labels, grid_size=TRUNC_GRID.shape, mode="repair")
            check_result(res, TRUNC_GRID.shape, labels)
            res2 = st.decode_rrle(prefix, labels=labels, mode="repair")
            check_result(res2, None, labels)
        if _t4s_comparable(prefix):
            check_t4s(prefix, TRUNC_LABELS, TRUNC_GRID.shape)
        # rows whose text is complete in the prefix come back exactly (row formats)
        if fmt in ("rrle", "isd"):
            res = st.decode_rrle(prefix, labels=TRUNC_LABELS, grid_size=TRUNC_GRID.shape, mode="repair")
            n_complete = prefix[start:].count("\n")
            if n_complete:
                np.testing.assert_array_equal(
                    res.grid[:n_complete], TRUNC_GRID[:n_complete], err_msg=repr(prefix)
                )
        # and the whole text is clean
    res = st.decode_rrle(text, labels=TRUNC_LABELS, grid_size=TRUNC_GRID.shape, mode="strict")
    np.testing.assert_array_equal(res.grid, TRUNC_GRID)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["rrle", "isd", "irle"])
def test_truncation_and_single_deletion_everywhere_16x16(fmt):
    rng = np.random.default_rng(11)
    grid = np.zeros((16, 16), dtype=np.int32)
    grid[3:12, 4:13] = 1
    grid[rng.random((16, 16)) < 0.05] = 2
    text = "<seg>" + ENCODE[fmt](grid, TRUNC_LABELS) + "</seg>"
    for i in range(len(text) + 1):
        for t in (text[:i], text[:i] + text[i + 1 :]):
            res = st.decode_rrle(t, labels=TRUNC_LABELS, grid_size=(16, 16))
            check_result(res, (16, 16), TRUNC_LABELS)
            if _t4s_comparable(t):
                check_t4s(t, TRUNC_LABELS, (16, 16))


@pytest.mark.slow
@given(text=hs.text(max_size=2000), grid_size=hs.none() | grid_size_st)
def test_repair_never_raises_long_random_text(text, grid_size):
    res = st.decode_rrle(text, grid_size=grid_size)
    check_result(res, grid_size)


@given(parts=hs.lists(format_tokens, max_size=40), grid_size=grid_size_st, wrap=hs.booleans())
def test_t4s_referring_decoder_matches_naive_on_format_soup(parts, grid_size, wrap):
    """Without a label list: ids by first appearance, "others" moved to id 0 (issue 9)."""
    text = "".join(parts)
    text = "<seg>" + text + "</seg>" if wrap else text
    assume(_t4s_comparable(text))
    check_t4s(text, None, grid_size)


@given(data=mutated_texts())
def test_t4s_matches_naive_on_wrapped_mutations(data):
    grid, labels, text = data
    text = "<seg>" + text + "</seg>"
    assume(_t4s_comparable(text))
    check_t4s(text, labels, grid.shape)
    check_t4s(text, None, grid.shape)
