"""Encoders: byte-compatibility with Text4Seg's R-RLE loop, I-SD and I-RLE, label validation."""

import numpy as np
import pytest
from hypothesis import given

import naive
import segtext as st
from strategies import grids_and_labels

ENCODERS = {
    "rrle": (st.encode_rrle, naive.encode_rrle),
    "isd": (st.encode_isd, naive.encode_isd),
    "irle": (st.encode_irle, naive.encode_irle),
}

EXAMPLE_GRID = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=np.int32)
EXAMPLE_LABELS = ["others", "dog"]


def test_formats_md_examples():
    assert st.encode_rrle(EXAMPLE_GRID, EXAMPLE_LABELS) == "others *2| dog *2\n others *4\n"
    assert (
        st.encode_isd(EXAMPLE_GRID, EXAMPLE_LABELS)
        == "others| others| dog| dog\n others| others| others| others\n"
    )
    assert st.encode_irle(EXAMPLE_GRID, EXAMPLE_LABELS) == "others *2| dog *2| others *4\n"
    # the naive references agree with the document too
    assert naive.encode_rrle(EXAMPLE_GRID, EXAMPLE_LABELS) == "others *2| dog *2\n others *4\n"
    assert (
        naive.encode_isd(EXAMPLE_GRID, EXAMPLE_LABELS)
        == "others| others| dog| dog\n others| others| others| others\n"
    )
    assert naive.encode_irle(EXAMPLE_GRID, EXAMPLE_LABELS) == "others *2| dog *2| others *4\n"


def test_formats_md_model_answer_row():
    grid = np.zeros((3, 16), dtype=np.int32)
    grid[1, 7] = 1
    text = st.encode_rrle(grid, ["others", "white horse"])
    assert text.startswith("others *16\n others *7| white horse *1| others *8\n ")
    assert text == "others *16\n others *7| white horse *1| others *8\n others *16\n"


@pytest.mark.parametrize("name", list(ENCODERS))
@given(data=grids_and_labels(max_h=12, max_w=12, unique=False, others_first=False))
def test_encoders_match_reference_with_duplicate_texts(name, data):
    grid, labels = data
    ours, ref = ENCODERS[name]
    if labels[0] in labels[1:]:  # a foreground spelled as the background would be lost (issue 9)
        with pytest.raises(ValueError, match="background word"):
            ours(grid, labels)
        return
    assert ours(grid, labels) == ref(grid, labels)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_refuse_a_foreground_named_like_the_background(name):
    ours, _ = ENCODERS[name]
    with pytest.raises(ValueError, match="label 1 is 'others', the background word"):
        ours(np.array([[0, 1]]), ["others", "others"])
    assert ours(np.array([[0, 1]]), ["others", "dog", "dog"])  # two foreground ids may share a text


def test_rle_encoders_refuse_the_background_word_as_label():
    rle = {"size": [2, 2], "counts": [2, 2]}
    with pytest.raises(ValueError, match="background word"):
        st.rle_to_text(rle, "others", grid_size=1)
    with pytest.raises(ValueError, match="background word"):
        st.rles_to_texts([rle], "others", grid_size=1)
    with pytest.raises(ValueError, match=r"labels\[1\] is 'others'"):
        st.rles_to_texts([rle, rle], ["dog", "others"], grid_size=1)
    with pytest.raises(ValueError, match="background word"):
        st.rle_to_text(rle, "bg", grid_size=1, background="bg")


@pytest.mark.parametrize("name", list(ENCODERS))
@given(data=grids_and_labels(max_h=12, max_w=12, unique=True, others_first=False))
def test_encoders_match_reference_unique_labels(name, data):
    grid, labels = data
    ours, ref = ENCODERS[name]
    assert ours(grid, labels) == ref(grid, labels)


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 7), (7, 1), (1, 32), (32, 1), (16, 16), (24, 24), (32, 32), (5, 64)]
)
def test_encoders_single_row_col_and_standard_sizes(name, shape):
    rng = np.random.default_rng(hash(shape) % 2**32)
    labels = ["others", "dog", "狗", "a|b", "x*"]
    ours, ref = ENCODERS[name]
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        grid = np.where(rng.random(shape) < p, rng.integers(1, len(labels), size=shape), 0).astype(np.int32)
        assert ours(grid, labels) == ref(grid, labels)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int16, np.uint16, np.intp])
def test_encoders_accept_integer_dtypes(dtype):
    grid = EXAMPLE_GRID.astype(dtype)
    assert st.encode_rrle(grid, EXAMPLE_LABELS) == "others *2| dog *2\n others *4\n"
    assert (
        st.encode_isd(grid, EXAMPLE_LABELS) == "others| others| dog| dog\n others| others| others| others\n"
    )
    assert st.encode_irle(grid, EXAMPLE_LABELS) == "others *2| dog *2| others *4\n"


def test_encoders_accept_label_tuple_and_noncontiguous_grid():
    big = np.zeros((4, 8), dtype=np.int64)
    big[0, 4:8] = 1
    view = big[::2, ::2]  # [[0,0,1,1],[0,0,0,0]]
    assert st.encode_rrle(view, tuple(EXAMPLE_LABELS)) == "others *2| dog *2\n others *4\n"
    assert (
        st.encode_rrle(np.asfortranarray(EXAMPLE_GRID), EXAMPLE_LABELS) == "others *2| dog *2\n others *4\n"
    )


def test_duplicate_label_texts_merge_runs():
    grid = np.array([[0, 1, 2, 2, 1]], dtype=np.int32)
    labels = ["others", "dog", "dog"]
    assert st.encode_rrle(grid, labels) == "others *1| dog *4\n"
    assert st.encode_irle(grid, labels) == "others *1| dog *4\n"
    assert st.encode_isd(grid, labels) == "others| dog| dog| dog| dog\n"


def test_irle_runs_cross_rows_rrle_runs_do_not():
    grid = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=np.int32)
    labels = ["others", "cat"]
    assert st.encode_rrle(grid, labels) == "others *1| cat *2\n cat *2| others *1\n others *3\n"
    assert st.encode_irle(grid, labels) == "others *1| cat *4| others *4\n"


def test_counts_are_decimal_and_multi_digit():
    grid = np.zeros((2, 123), dtype=np.int32)
    grid[1, 100:] = 1
    assert st.encode_rrle(grid, ["others", "x"]) == "others *123\n others *100| x *23\n"
    assert st.encode_irle(grid, ["others", "x"]) == "others *223| x *23\n"


@pytest.mark.parametrize("name", list(ENCODERS))
def test_unused_labels_may_be_anything_valid_and_labels_may_be_longer(name):
    ours, ref = ENCODERS[name]
    labels = ["others", "dog", "never used", "zebra"]
    assert ours(EXAMPLE_GRID, labels) == ref(EXAMPLE_GRID, labels)


# -------------------------------------------------------------------------------------- bad labels

INVALID_LABELS = [
    pytest.param("", id="empty"),
    pytest.param("a| b", id="pipe-space"),
    pytest.param("| b", id="leading-pipe-space"),
    pytest.param("a *b", id="space-star"),
    pytest.param("dog *3", id="space-star-count"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\rb", id="carriage-return"),
    pytest.param("a<seg>b", id="seg-open"),
    pytest.param("</seg>", id="seg-close"),
    pytest.param("dog|", id="ends-with-pipe"),
    pytest.param(" dog", id="leading-space"),
    pytest.param("dog ", id="trailing-space"),
    pytest.param("\tdog", id="leading-tab"),
    pytest.param("dog\t", id="trailing-tab"),
]


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("bad", INVALID_LABELS)
def test_invalid_label_raises_and_names_it(name, bad):
    ours, _ = ENCODERS[name]
    grid = np.array([[0, 1]], dtype=np.int32)
    with pytest.raises(ValueError) as exc:
        ours(grid, ["others", bad])
    msg = str(exc.value)
    if bad:
        assert bad in msg or repr(bad) in msg or repr(bad)[1:-1] in msg, msg
    else:
        assert "empty" in msg.lower() or "''" in msg or '""' in msg, msg


@pytest.mark.parametrize("name", list(ENCODERS))
def test_labels_list_too_short(name):
    ours, _ = ENCODERS[name]
    grid = np.array([[0, 1], [2, 3]], dtype=np.int32)
    with pytest.raises(ValueError, match="too short"):
        ours(grid, ["others", "dog"])
    with pytest.raises(ValueError):
        ours(np.array([[0, -1]]), ["others", "dog"])
