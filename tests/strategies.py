"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

KNOWN_KINDS = {
    "missing_seg_open",
    "missing_seg_close",
    "row_separator",
    "missing_count",
    "bad_count",
    "zero_count",
    "row_too_short",
    "row_too_long",
    "missing_rows",
    "extra_rows",
    "unknown_label",
    "empty_label",
    "missing_final_newline",
    "blank_line",
    "empty_text",
    "t4s_parse_error",
    "total_mismatch",
    "label_whitespace",
    "count_too_large",
    "grid_too_large",
    "text_too_long",
    "tag_case",
    "extra_seg_block",
    "label_case",
    "count_separator",
    "truncated_label",
}

FORBIDDEN_IN_LABEL = ("| ", " *", "\n", "\r", "<seg>", "</seg>")


def is_valid_label(s: str) -> bool:
    """The label rules of the spec: non-empty, none of the forbidden patterns, not ending with '|',
    no leading or trailing whitespace."""
    return bool(s) and not any(f in s for f in FORBIDDEN_IN_LABEL) and not s.endswith("|") and s == s.strip()


CURATED_LABELS = [
    "others",
    "dog",
    "cat",
    "white horse",
    "the man on the left in a red shirt",
    "person 1",
    "person 2",
    "a|b",
    "|x",
    "x*",
    "*x",
    "*",
    "a*3",
    "3",
    "42",
    "0",
    "狗",
    "chien méchant",
    "🐕 dog",
    "a\tb",
    "a\u2028b",
    "a\x1cb",
    "a\x85b",
    "<seg",
    "seg>",
    "</se",
    "c++",
    "a|b|c",
    "others2",
    "Others",
    "x\u200by",
]
assert all(is_valid_label(s) for s in CURATED_LABELS)

_label_alphabet = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 |*<>/-_.,'\"()[]{}#:;!?+=\t")
    + ["é", "ß", "中", "狗", "ж", "🐕", "\u2028", "\x1c", "\x85", "\u00a0", "\u200b", "\x00"]
)

random_label = st.text(alphabet=_label_alphabet, min_size=1, max_size=10).filter(is_valid_label)
any_label = st.one_of(st.sampled_from(CURATED_LABELS), random_label)


@st.composite
def label_lists(draw, min_size=1, max_size=6, unique=True, others_first=True):
    """A list of valid labels; unique texts unless unique=False (then duplicates are likely)."""
    n = draw(st.integers(min_size, max_size))
    if unique:
        if others_first:
            rest = draw(
                st.lists(
                    any_label.filter(lambda s: s != "others"), min_size=n - 1, max_size=n - 1, unique=True
                )
            )
            return ["others"] + rest
        return draw(st.lists(any_label, min_size=n, max_size=n, unique=True))
    pool = draw(st.lists(any_label, min_size=1, max_size=3, unique=True))
    return draw(st.lists(st.sampled_from(pool + ["others"]), min_size=n, max_size=n))


@st.composite
def grids_and_labels(draw, max_h=10, max_w=10, unique=True, others_first=True, min_labels=1, max_labels=6):
    labels = draw(
        label_lists(min_size=min_labels, max_size=max_labels, unique=unique, others_first=others_first)
    )
    h = draw(st.integers(1, max_h))
    w = draw(st.integers(1, max_w))
    n = len(labels)
    # few distinct ids in a region -> realistic runs; sometimes all ids
    k = draw(st.integers(1, n))
    ids = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    grid = draw(hnp.arrays(np.int32, (h, w), elements=st.sampled_from(ids)))
    return grid, labels


@st.composite
def binary_masks(draw, min_side=1, max_side=64):
    """Seeded random binary masks of several structures (noise, blobs, stripes, checkerboards)."""
    H = draw(st.integers(min_side, max_side))
    W = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(["noise", "rects", "stripes", "checker", "empty", "full"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return make_mask(rng, H, W, kind, n_labels=2)


def make_mask(rng, H, W, kind, n_labels=2):
    if kind == "empty":
        return np.zeros((H, W), dtype=np.int64)
    if kind == "full":
        return np.full((H, W), n_labels - 1, dtype=np.int64)
    if kind == "noise":
        p = rng.dirichlet(np.ones(n_labels))
        return rng.choice(n_labels, size=(H, W), p=p).astype(np.int64)
    if kind == "rects":
        m = np.zeros((H, W), dtype=np.int64)
        for _ in range(rng.integers(1, 6)):
            y0, y1 = sorted(rng.integers(0, H + 1, size=2))
            x0, x1 = sorted(rng.integers(0, W + 1, size=2))
            m[y0:y1, x0:x1] = rng.integers(1, n_labels) if n_labels > 1 else 0
        return m
    if kind == "stripes":
        period = int(rng.integers(1, 5))
        axis = int(rng.integers(0, 2))
        idx = np.arange(H if axis == 0 else W) // period % n_labels
        return (np.repeat(idx[:, None], W, 1) if axis == 0 else np.repeat(idx[None, :], H, 0)).astype(
            np.int64
        )
    if kind == "checker":
        y, x = np.mgrid[0:H, 0:W]
        return ((y + x) % n_labels).astype(np.int64)
    raise ValueError(kind)


@st.composite
def label_maps(draw, min_side=1, max_side=48, max_label=6, ignore=False):
    """Seeded label maps that always contain a label >= 2 (so they are never read as binary)."""
    H = draw(st.integers(min_side, max_side))
    W = draw(st.integers(min_side, max_side))
    n_labels = draw(st.integers(3, max_label + 1))
    kind = draw(st.sampled_from(["noise", "rects", "stripes", "checker"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    m = make_mask(rng, H, W, kind, n_labels=n_labels)
    if ignore:
        frac = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
        m = np.where(rng.random((H, W)) < frac, 255, m)
    # guarantee a non-binary, non-ignore label somewhere
    y = int(rng.integers(0, H))
    x = int(rng.integers(0, W))
    m[y, x] = 2
    return m


@st.composite
def grid_sizes_for(draw, H, W):
    h = draw(st.integers(1, H))
    w = draw(st.integers(1, W))
    return h, w
