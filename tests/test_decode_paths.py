"""The decoder has two paths: a compiled parser for text exactly as the encoders write it,
and the repairing Python parser for everything else. They must agree wherever both apply,
and the repairing parser alone must give the same answer as the two together."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hst

import segtext as st
from segtext import rrle
from segtext.repairs import RepairLog

LABELS = ["others", "dog", "white horse", "a|b", "猫", "x*y", "*", "|x"]
ENCODERS = {"rrle": st.encode_rrle, "isd": st.encode_isd, "irle": st.encode_irle}


def full_parser(text, labels=None, grid_size=None, mode="repair", unknown="background"):
    """Decode with the repairing parser only (the fast path skipped)."""
    log = RepairLog(text, strict=mode == "strict")
    body, base, _ = rrle._extract(text, log)
    vocab = None if labels is None else tuple(labels)
    size = None if grid_size is None else tuple(grid_size)
    return rrle._decode_full(text, body, base, vocab, size, unknown, log)


@hst.composite
def grids_and_labels(draw):
    h = draw(hst.integers(1, 6))
    w = draw(hst.integers(1, 6))
    n = draw(hst.integers(1, 4))
    labels = ["others"] + draw(
        hst.lists(hst.sampled_from(LABELS[1:]), min_size=n - 1, max_size=n - 1, unique=True)
    )
    grid = np.array(
        draw(hst.lists(hst.integers(0, len(labels) - 1), min_size=h * w, max_size=h * w))
    ).reshape(h, w)
    return grid, labels


@given(grids_and_labels(), hst.sampled_from(sorted(ENCODERS)), hst.booleans(), hst.booleans())
def test_fast_and_full_parsers_agree_on_clean_text(data, fmt, give_labels, give_size):
    grid, labels = data
    text = ENCODERS[fmt](grid, labels)
    size = grid.shape if (give_size or fmt == "irle") else None
    vocab = labels if give_labels else None
    both = st.decode_rrle(text, labels=vocab, grid_size=size, mode="strict")
    full = full_parser(text, labels=vocab, grid_size=size, mode="strict")
    assert both.ok and full.ok
    assert both.labels == full.labels
    assert both.format == full.format
    np.testing.assert_array_equal(both.grid, full.grid)
    if vocab is not None and size is not None:
        np.testing.assert_array_equal(both.grid, grid)


@given(grids_and_labels(), hst.data())
def test_full_parser_matches_decoder_on_damaged_text(data, draw):
    """Whatever the damage, the answer may not depend on which path handled it."""
    grid, labels = data
    text = st.encode_rrle(grid, labels)
    i = draw.draw(hst.integers(0, len(text)))
    j = draw.draw(hst.integers(i, len(text)))
    junk = draw.draw(hst.sampled_from(["", "x", " ", "\n", "| ", " *", "*0", "7", "<seg>"]))
    damaged = text[:i] + junk + text[j:]
    for size in (grid.shape, None):
        a = st.decode_rrle(damaged, labels=labels, grid_size=size)
        b = full_parser(damaged, labels=labels, grid_size=size)
        np.testing.assert_array_equal(a.grid, b.grid)
        assert [r.kind for r in a.repairs] == [r.kind for r in b.repairs]


@pytest.mark.parametrize(
    "text, size, expected",
    [
        ("others *4\n", None, (2, 2)),  # one line, perfect square: I-RLE
        ("others *3\n", None, (1, 3)),  # one line, not a square: one row
        ("others *4\n", (1, 4), (1, 4)),  # one row asked for: R-RLE
        ("a| b\n c| d\n", None, (2, 2)),  # I-SD
        ("a *1| b *2\n c *3\n", None, (2, 3)),
    ],
)
def test_inferred_grid_size(text, size, expected):
    assert st.decode_rrle(text, grid_size=size).grid.shape == expected
    assert full_parser(text, grid_size=size).grid.shape == expected


def test_every_grid_repair_kind_is_documented():
    from strategies import KNOWN_KINDS

    assert KNOWN_KINDS <= set(st.REPAIR_KINDS)
    assert all(isinstance(v, str) and v for v in st.REPAIR_KINDS.values())
