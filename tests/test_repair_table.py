"""Table of malformed model outputs: what repair mode returns (grid + repair kinds), and where strict
mode points (DecodeError .line / .column, 1-based)."""

import numpy as np
import pytest

import naive
import segtext as st
from strategies import KNOWN_KINDS

G = (2, 4)
S = "<seg>{}</seg>".format  # a text as Text4Seg's decoder needs it
DOG = [[0, 0, 1, 1], [0, 0, 0, 0]]
ZEROS_2x4 = [[0] * 4] * 2
ANY = [(None, None, None)]  # strict: only check that it raises with a position


def P(text, grid_size, labels, expected, kinds, where, id):
    """where: list of acceptable (line, first_column, last_column) for the strict-mode error."""
    return pytest.param(text, grid_size, labels, expected, kinds, where, id=id)


CASES = [
    P(
        "others *2| dog *2\n others *4\n</seg>",
        G,
        None,
        DOG,
        {"missing_seg_open"},
        ANY,
        id="missing_seg_open",
    ),
    P(
        "Sure:\n<seg>others *2| dog *2\n others *4\n",
        G,
        None,
        DOG,
        {"missing_seg_close"},
        ANY,
        id="missing_seg_close",
    ),
    P(
        "others *2| dog *2\nothers *4\n",
        G,
        None,
        DOG,
        {"row_separator"},
        [(2, 1, 1), (1, 18, 18)],
        id="row_separator",
    ),
    P("others *2| dog\n others *4\n", G, None, DOG, {"missing_count"}, [(1, 12, 15)], id="missing_count"),
    P(
        "others *2| dog *2| others *x\n others *4\n",
        G,
        None,
        DOG,
        {"bad_count"},
        [(1, 20, 28)],
        id="bad_count",
    ),
    P(
        "others *2| dog *0| dog *2\n others *4\n",
        G,
        None,
        DOG,
        {"zero_count"},
        [(1, 12, 17)],
        id="zero_count",
    ),
    P("others *2| dog *1\n others *4\n", G, None, DOG, {"row_too_short"}, [(1, 1, 18)], id="row_too_short"),
    P(
        "others *1\n others *4\n",
        G,
        None,
        ZEROS_2x4,
        {"row_too_short"},
        [(1, 1, 10)],
        id="row_too_short_others",
    ),
    P("others *2| dog *3\n others *4\n", G, None, DOG, {"row_too_long"}, [(1, 1, 18)], id="row_too_long"),
    P(
        "others *2| dog *2| others *5\n others *4\n",
        G,
        None,
        DOG,
        {"row_too_long"},
        [(1, 1, 30)],
        id="row_too_long_2",
    ),
    P(
        "others *4\n others *4\n",
        (3, 4),
        None,
        [[0] * 4] * 3,
        {"missing_rows"},
        [(2, 1, 99), (3, 1, 99)],
        id="missing_rows",
    ),
    P(
        "others *2| dog *2\n others *1| dog *3\n",
        (3, 4),
        None,
        None,
        {"missing_rows"},
        [(2, 1, 99), (3, 1, 99)],
        id="missing_rows_fill",
    ),
    P("others *4\n others *4\n dog *4\n", G, None, ZEROS_2x4, {"extra_rows"}, [(3, 1, 99)], id="extra_rows"),
    P(
        "others *2| cat *2\n others *4\n",
        G,
        ["others", "dog"],
        ZEROS_2x4,
        {"unknown_label"},
        [(1, 12, 17)],
        id="unknown_label",
    ),
    P("others *2|  *2\n others *4\n", G, None, ZEROS_2x4, {"empty_label"}, [(1, 11, 14)], id="empty_label"),
    P(
        "others *2| dog *2\n others *4",
        G,
        None,
        DOG,
        {"missing_final_newline"},
        [(2, 1, 12)],
        id="missing_final_newline",
    ),
    P("others *2| dog *2\n\n others *4\n", G, None, DOG, {"blank_line"}, [(2, 1, 2)], id="blank_line"),
    P("", G, None, ZEROS_2x4, {"empty_text"}, [(1, 1, 1)], id="empty_text"),
    P("Sure: <seg></seg>", G, None, ZEROS_2x4, {"empty_text"}, ANY, id="empty_text_in_seg"),
    P(
        "others *3| dog *2| others *2\n",
        G,
        None,
        None,
        {"total_mismatch"},
        [(1, 1, 99)],
        id="total_mismatch_short",
    ),
    P(
        "others *3| dog *2| others *9\n",
        G,
        None,
        None,
        {"total_mismatch", "count_too_large"},
        [(1, 1, 99)],
        id="total_mismatch_long",
    ),
    P("others *2| dog *99999999999999999999999\n others *4\n", G, None, DOG, {"count_too_large", "row_too_long"},
      [(1, 1, 1), (1, 17, 17)], id="count_too_large"),
    P("others *2| dog *" + "7" * 5000 + "\n others *4\n", G, None, DOG, {"count_too_large"},
      [(1, 17, 17)], id="count_thousands_of_digits"),
    P("others *2| dog *2\r\n others *4\r\n", G, None, DOG, {"row_separator"}, [(1, 18, 18)],
      id="crlf_rows"),
    # "|\t" is not the run separator: the count reads "2|\tdog *2" (reported, not silent)
    P("others *2|\tdog *2\n others *4\n", G, None, None, {"bad_count", "row_too_short"}, ANY,
      id="tab_separator"),
    P("others *2| dog\u00a0*2\n others *4\n", G, None, DOG, {"count_separator", "label_whitespace"}, ANY,
      id="nbsp_before_star"),
    P("others *2| dog\u3000 *2\n others *4\n", G, None, DOG, {"label_whitespace"}, [(1, 12, 12)],
      id="ideographic_space_after_label"),
    # issue 9: a slip is a repair, never a new class
    P("Others *2| dog *2\n others *4\n", G, None, DOG, {"label_case"}, [(1, 1, 1)], id="Others"),
    P("OTHERS. *2| dog *2\n others *4\n", G, ["others", "dog"], DOG, {"label_case"}, [(1, 1, 1)],
      id="OTHERS_dot_with_labels"),
    P("others *2| Dog *2\n others *4\n", G, ["others", "dog"], DOG, {"label_case"}, [(1, 12, 12)],
      id="Dog_with_labels"),
    P("<SEG>others *2| dog *2\n others *4\n</Seg>", G, None, DOG, {"tag_case"}, [(1, 1, 1), (3, 1, 1)],
      id="tags_in_another_case"),
    P("others*2| dog*2\n others *4\n", G, None, DOG, {"count_separator"}, [(1, 7, 7), (1, 14, 14)],
      id="no_space_before_star"),
    P("others *2| dog *2\n othe", G, None, DOG, {"truncated_label", "missing_final_newline"},
      [(2, 2, 2), (2, 6, 6)], id="cut_inside_others"),
    P("others *2| dog *2\n others *2| do", G, ["others", "dog"], [[0, 0, 1, 1], [0, 0, 1, 1]],
      {"truncated_label", "missing_final_newline"}, [(2, 13, 13), (2, 15, 15)], id="cut_inside_dog"),
    P("<seg>others *2| dog *2\n others *4\n</seg> or <seg>dog *8\n</seg>", G, None, DOG, {"extra_seg_block"},
      [(3, 11, 11)], id="second_seg_block"),
    P("others *2| dog *2\n others *4\n", G, ["others", "dog"], DOG, set(), None, id="valid_control"),
]


@pytest.mark.parametrize("text, grid_size, labels, expected, kinds, where", CASES)
def test_repair_table(text, grid_size, labels, expected, kinds, where):
    res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="repair")
    assert res.grid.shape == grid_size
    assert res.grid.dtype == np.min_scalar_type(len(res.labels) - 1)  # the smallest unsigned
    got_kinds = [r.kind for r in res.repairs]
    assert all(isinstance(r, st.Repair) for r in res.repairs)
    assert set(got_kinds) <= KNOWN_KINDS, got_kinds
    assert kinds <= set(got_kinds), f"expected {sorted(kinds)} among {got_kinds}"
    assert res.ok == (not res.repairs)
    if not kinds:
        assert res.repairs == []
    if expected is not None:
        np.testing.assert_array_equal(res.grid, np.array(expected), err_msg=f"repairs: {res.repairs}")
    if labels is not None:
        assert res.labels == labels
    # the repair points where strict mode does
    if kinds and where is not ANY:
        for kind in kinds:
            r = next(r for r in res.repairs if r.kind == kind)
            ok = any(line == r.line and lo <= r.column <= hi for line, lo, hi in where)
            assert ok, f"{r} not at one of {where}"


@pytest.mark.parametrize("text, grid_size, labels, expected, kinds, where", CASES)
def test_strict_table(text, grid_size, labels, expected, kinds, where):
    if not kinds:
        res = st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="strict")
        np.testing.assert_array_equal(res.grid, np.array(expected))
        return
    with pytest.raises(st.DecodeError) as exc:
        st.decode_rrle(text, labels=labels, grid_size=grid_size, mode="strict")
    e = exc.value
    assert isinstance(e, ValueError)
    assert isinstance(e.line, int) and isinstance(e.column, int)
    assert e.line >= 1 and e.column >= 1, (e.line, e.column)
    assert hasattr(e, "expected") and hasattr(e, "found")
    assert str(e)
    if where is not ANY:
        ok = any(line == e.line and lo <= e.column <= hi for line, lo, hi in where)
        assert ok, f"error at line {e.line} column {e.column}, expected one of {where}: {e}"


def test_missing_rows_keeps_the_rows_present():
    res = st.decode_rrle("others *2| dog *2\n others *1| dog *3\n", grid_size=(3, 4))
    np.testing.assert_array_equal(res.grid[:2], [[0, 0, 1, 1], [0, 1, 1, 1]])
    # 'filled from the row above or background'
    assert res.grid[2].tolist() in ([0, 1, 1, 1], [0, 0, 0, 0])


def test_row_padding_uses_last_label_and_truncation_is_per_row():
    res = st.decode_rrle("dog *1\n others *1| dog *9\n dog *2| others *1\n", grid_size=(3, 4))
    np.testing.assert_array_equal(res.grid, [[1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]])
    kinds = {r.kind for r in res.repairs}
    assert {"row_too_short", "row_too_long"} <= kinds


def test_t4s_parse_error_gives_background_and_one_repair():
    res = st.decode_rrle(
        "others *2| dog two\n others *4\n", labels=["others", "dog"], grid_size=G, mode="t4s"
    )
    np.testing.assert_array_equal(res.grid, np.zeros(G))
    assert [r.kind for r in res.repairs] == ["t4s_parse_error"]
    assert not res.ok


def test_t4s_flattens_pads_with_last_value_and_truncates():
    labels = ["others", "dog"]
    # rows are not respected: everything is flattened
    res = st.decode_rrle(S("others *3| dog *3\n others *2\n"), labels=labels, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.grid, [[0, 0, 0, 1], [1, 1, 0, 0]])
    # too short: pad with the last value
    res = st.decode_rrle(S("others *1| dog *2\n"), labels=labels, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.grid, [[0, 1, 1, 1], [1, 1, 1, 1]])
    # too long: truncate
    res = st.decode_rrle(S("dog *5| others *9\n"), labels=labels, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.grid, [[1, 1, 1, 1], [1, 0, 0, 0]])
    # a missing ' *' anywhere is a parse error: all background
    res = st.decode_rrle(S("dog *5| others\n"), labels=labels, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.grid, np.zeros(G))
    assert [r.kind for r in res.repairs] == ["t4s_parse_error"]
    # and so is a text without <seg>, however well formed (Text4Seg's split("<seg>")[1])
    res = st.decode_rrle("others *3| dog *3\n others *2\n", labels=labels, grid_size=G, mode="t4s")
    assert [r.kind for r in res.repairs] == ["t4s_parse_error"] and not res.grid.any()


def test_realistic_messy_answer():
    text = (
        "Sure, the dog is here: <seg>others *16\n others *5| dog *6| others *5\n"
        "others *4| dog *8| others *4\n others *3| dog *9\n others *16\n"
    )
    res = st.decode_rrle(text, labels=["others", "dog"], grid_size=(6, 16))
    assert res.grid.shape == (6, 16)
    kinds = {r.kind for r in res.repairs}
    assert {"missing_seg_close", "row_separator", "row_too_short", "missing_rows"} <= kinds
    np.testing.assert_array_equal(res.grid[1], [0] * 5 + [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(res.grid[2], [0] * 4 + [1] * 8 + [0] * 4)
    np.testing.assert_array_equal(res.grid[3], [0] * 3 + [1] * 13)
    np.testing.assert_array_equal(res.grid[4], [0] * 16)


# ----------------------------------------------------------------------------- t4s mode, case by case

T4S_LABELS = ["others", "dog"]
T4S_CASES = [
    pytest.param(S("dog *2| others *2\n others *4\n"), [[1, 1, 0, 0], [0, 0, 0, 0]], False, id="valid"),
    pytest.param(S("others *2| dog *2\n others *4"), [[0, 0, 1, 1], [0, 0, 0, 0]], False, id="no-final-newline"),
    pytest.param(S("dog *2\n others *2\n\n"), [[1, 1, 0, 0], [0, 0, 0, 0]], False, id="trailing-newlines"),
    # Text4Seg strips '\n' from both ends of the text between the tags before splitting rows
    pytest.param(S("\ndog *4\n"), [[1, 1, 1, 1], [1, 1, 1, 1]], False, id="leading-newline"),
    pytest.param(S("\n\ndog *1\n others *3\n"), [[1, 0, 0, 0], [0, 0, 0, 0]], False, id="two-leading-newlines"),
    pytest.param("Sure <seg>dog *3| others *5\n</seg> done", [[1, 1, 1, 0], [0, 0, 0, 0]], False, id="wrapped"),
    pytest.param("dog *4\n others *4\n", [[0] * 4] * 2, True, id="no-seg-is-a-parse-error"),
    pytest.param("<seg>dog *2| others *6\n", [[1, 1, 0, 0], [0, 0, 0, 0]], False, id="no-seg-close"),
    pytest.param(S("dog *2|dog *2\n"), [[0] * 4] * 2, True, id="pipe-without-space"),
    pytest.param(S("dog *2| others\n"), [[0] * 4] * 2, True, id="run-without-count"),
    pytest.param(S("dog *2| others *x\n"), [[0] * 4] * 2, True, id="non-numeric-count"),
    pytest.param(S("dog *2 *3\n"), [[0] * 4] * 2, True, id="three-parts"),
    pytest.param(S("dog *+2| others * 06 \n"), [[1, 1, 0, 0], [0, 0, 0, 0]], False, id="python-int-counts"),
    pytest.param(S("dog *3| others *-4| dog *5\n"), [[1, 1, 1, 1], [1, 1, 1, 1]], False, id="negative-count"),
    pytest.param(S("dog *" + "9" * 5000 + "\n"), [[0] * 4] * 2, True, id="int-refuses-5000-digits"),
    pytest.param("garbage", [[0] * 4] * 2, True, id="garbage"),
    pytest.param(S("dog *3\nothers *5\n"), [[0] * 4] * 2, True, id="newline-without-space"),
    pytest.param(S("dog *3\n others *2| dog *1\n"), [[1, 1, 1, 0], [0, 1, 1, 1]], False, id="pad-last"),
    pytest.param(S("cat *3| dog *9\n"), [[0, 0, 0, 1], [1, 1, 1, 1]], False, id="unknown-label-background"),
    # Text4Seg joins the expanded labels with '|', splits them again and strips each
    pytest.param(S("dog|dog *2| others *2\n"), [[1, 1, 1, 1], [0, 0, 0, 0]], False, id="label-resplit-on-pipe"),
    pytest.param(S("dog *2|  dog *2| others *9\n"), [[1, 1, 1, 1], [0, 0, 0, 0]], False, id="label-stripped"),
    pytest.param("  \n<seg>dog *1\n others *3\n</seg>  ", [[1, 0, 0, 0], [0, 0, 0, 0]], False, id="output-stripped"),
    # Text4Seg's split("<seg>")[1]: a second <seg> ends the text read, like </seg>
    pytest.param("<seg>dog *2<seg>others *8</seg>", [[1] * 4] * 2, False, id="first-seg-segment"),
    pytest.param("<seg>dog *2\n others *6</seg><seg>others *8</seg>", [[1, 1, 0, 0], [0, 0, 0, 0]], False,
                 id="first-seg-block"),
    pytest.param(S("dog *0| others *0\n"), [[0] * 4] * 2, False, id="nothing-expanded"),
]

# issue 9's examples of Text4Seg's referring decoder (no label list), h = 2, w = 4, foreground shown
T4S_REFERRING = [
    pytest.param("<seg>dog *4\n dog *4\n</seg>", [[0] * 4] * 2, id="only-dog-is-background"),
    pytest.param("<seg>cat *2| dog *2\n dog *4\n</seg>", [[0, 0, 1, 1], [1, 1, 1, 1]], id="first-label-is-background"),
    pytest.param("others *4\n dog *4\n", [[0] * 4] * 2, id="no-seg"),
    pytest.param("<seg>dog *4\n Others *4\n</seg>", [[0, 0, 0, 0], [1, 1, 1, 1]], id="Others-is-another-label"),
    pytest.param("<seg>others *3\n dog *5\n</seg>", [[0, 0, 0, 1], [1, 1, 1, 1]], id="rows-never-checked"),
    pytest.param("<seg>others *4\ndog *4\n</seg>", [[0] * 4] * 2, id="newline-without-space"),
    # "others" only past the cells kept still takes id 0, so dog is foreground
    pytest.param("<seg>dog *4\n dog *4\n others *4\n</seg>", [[1] * 4] * 2, id="others-past-the-grid"),
]


@pytest.mark.parametrize("text, expected", T4S_REFERRING)
def test_t4s_referring_examples(text, expected):
    naive_grid, _, _ = naive.t4s_decode(text, None, G)
    np.testing.assert_array_equal(naive_grid > 0, np.array(expected, bool))  # the table agrees with the reference
    res = st.decode_rrle(text, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.foreground(), np.array(expected, bool), err_msg=f"{res.repairs}")
    np.testing.assert_array_equal(res.grid, naive_grid)


@pytest.mark.parametrize("text, expected, parse_error", T4S_CASES)
def test_t4s_cases(text, expected, parse_error):
    naive_grid, naive_error, _ = naive.t4s_decode(text, T4S_LABELS, G)
    np.testing.assert_array_equal(naive_grid, expected)  # the table agrees with the reference
    assert naive_error == parse_error
    res = st.decode_rrle(text, labels=T4S_LABELS, grid_size=G, mode="t4s")
    np.testing.assert_array_equal(res.grid, np.array(expected), err_msg=f"repairs: {res.repairs}")
    assert ("t4s_parse_error" in [r.kind for r in res.repairs]) == parse_error
