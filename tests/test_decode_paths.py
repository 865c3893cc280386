"""The decoder has two paths: a compiled parser for text exactly as the encoders write it,
and the repairing Python parser for everything else. They must agree wherever both apply,
and the repairing parser alone must give the same answer as the two together."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
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


# ------------------------------------------------------------------------------------------ one-pass row reader

ROW_LABELS = ["dog", "dog park", "d", "do", "o", "others x", "猫", "x*y", "|x", "park"]


def _general_grid(raw, buf, off, shape):
    """What the general compiled reader (parse_runs, then the layout check) gives: (fmt, grid)."""
    from segtext._kernels import rrle as KR

    h, w = shape
    ok, ids, counts, row_ends, n_runs, n_rows, counted, _, _ = KR.parse_runs(raw, buf, off, False)
    if not ok or counted < 0:
        return -1, None
    ok, h2, w2, fmt = KR._grid_layout(counts, row_ends, n_runs, n_rows, counted, h, w, h * w)
    if not ok:
        return -1, None
    out = np.zeros(h * w, np.int64)
    KR._fill_runs(ids, counts, n_runs, out)
    return fmt, out.reshape(h, w)


SLIPS = ("short row", "long row", "count up", "count down", "no count", "zero count", "leading zero",
         "doubled count", "cut label", "longer label", "unknown label", "bad run separator",
         "bad row separator", "missing row", "extra row", "no last newline", "doubled newline", "trailing text")


@hst.composite
def near_row_texts(draw):
    """(text, labels, (h, w)): row-wise texts put together run by run, well formed or with one
    slip of :data:`SLIPS` at one place (what a one-pass reader could let through)."""
    h, w = draw(hst.integers(1, 4)), draw(hst.integers(1, 5))
    labels = ["others"] + draw(hst.lists(hst.sampled_from(ROW_LABELS), min_size=1, max_size=4, unique=True))
    with_counts = draw(hst.booleans())
    slip = draw(hst.sampled_from((None,) * 8 + SLIPS))
    at = draw(hst.integers(0, 10 ** 6))
    rows = []
    for _ in range(h):
        cells, runs = w, []
        while cells > 0:
            n = draw(hst.integers(1, cells)) if with_counts else 1
            runs.append([draw(hst.sampled_from(labels)), n])
            cells -= n
        rows.append(runs)
    r = at % len(rows)
    run = rows[r][at % len(rows[r])]
    if slip == "short row":
        if run[1] > 1:
            run[1] -= 1
        else:
            rows[r].remove(run) if len(rows[r]) > 1 else run.__setitem__(1, 0)
    elif slip == "long row":
        rows[r].append([labels[0], 1])
    elif slip == "count up":
        run[1] += 1
    elif slip == "count down":
        run[1] -= 1
    elif slip in ("cut label", "longer label", "unknown label"):
        run[0] = {"cut label": run[0][:-1] or "x", "longer label": run[0] + "s", "unknown label": "zebra"}[slip]
    elif slip == "missing row" and len(rows) > 1:
        del rows[r]
    elif slip == "extra row":
        rows.append([[labels[0], w]])

    def run_text(label, n, chosen):
        if chosen and with_counts and slip in ("no count", "zero count", "leading zero", "doubled count"):
            return label + {"no count": "", "zero count": " *0", "leading zero": f" *0{n}",
                            "doubled count": f" *{n}{n}"}[slip]
        return label + (f" *{n}" if with_counts else "")

    texts = []
    for k, runs in enumerate(rows):
        sep = "|" if slip == "bad run separator" and k == r else "| "
        texts.append(sep.join(run_text(x[0], x[1], x is run) for x in runs))
    join = "\n " if slip != "bad row separator" else draw(hst.sampled_from(["\n", "\n  ", " \n "]))
    end = {"no last newline": "", "doubled newline": "\n\n", "trailing text": "\n x"}.get(slip, "\n")
    return join.join(texts) + end, labels, (h, w)


def _check_one_pass_reader(raw, labels, shape):
    from segtext._kernels import rrle as KR
    from segtext.labels import label_table

    buf, off, _ = label_table(tuple(labels))
    want_fmt, want = _general_grid(raw, buf, off, shape)
    if KR.plain_labels(buf, off):
        got = np.full(shape, 99, np.int64)
        fmt = KR.rows_into_grid(raw, buf, off, got)
        if fmt >= 0:
            assert fmt == want_fmt and np.array_equal(got, want), (raw, labels, shape)
    both = np.full(shape, 99, np.int64)
    assert KR.decode_grid_into(raw, buf, off, both) == want_fmt
    if want_fmt >= 0:
        np.testing.assert_array_equal(both, want)
    return want_fmt


@settings(max_examples=300)
@given(near_row_texts())
def test_one_pass_row_reader_agrees_with_the_general_reader(case):
    """rows_into_grid (the one-pass reader of row-wise texts) accepts only what parse_runs and the
    layout check accept and gives the same grid: vocabularies with labels that are prefixes of
    others, texts with every slip a one-pass reader could let through."""
    text, labels, shape = case
    _check_one_pass_reader(text.encode("utf-8"), labels, shape)


@given(grids_and_labels(), hst.sampled_from(sorted(ENCODERS)))
def test_one_pass_row_reader_reads_what_the_encoders_write(data, fmt):
    grid, labels = data
    text = ENCODERS[fmt](grid, labels)
    assert _check_one_pass_reader(text.encode("utf-8"), labels, grid.shape) >= 0


# (text, grid shape, the general reader's format code or -1): one case per slip, vocabulary
# others / dog / dog park / d (labels that are prefixes of others)
NEAR_MISSES = [
    (b"others *2\n dog *2\n", (2, 2), 0), (b"others *2\n dog park *2\n", (2, 2), 0),
    (b"others *1| d *1\n dog *2\n", (2, 2), 0), (b"others| dog\n dog| d\n", (2, 2), 1),
    (b"others *4\n", (2, 2), 2),  # I-RLE: the general reader alone
    (b"others *1\n dog *2\n", (2, 2), -1), (b"others *2\n dog *3\n", (2, 2), -1),
    (b"others *2\n dog *02\n", (2, 2), -1), (b"others *2\n dog *0\n", (2, 2), -1),
    (b"others *2\n dog| dog\n", (2, 2), -1), (b"others *2\n dogs *2\n", (2, 2), -1),
    (b"others *2\n do *2\n", (2, 2), -1), (b"others *2\n dog *2", (2, 2), -1),
    (b"others *2\n dog *2\n\n", (2, 2), -1), (b"others *2\ndog *2\n", (2, 2), -1),
    (b"others *1|dog *1\n dog *2\n", (2, 2), -1), (b"others *1|xdog *1\n dog *2\n", (2, 2), -1),
    (b"others *1| dog x1\n dog *2\n", (2, 2), -1), (b"others *2\n dog *2\n x", (2, 2), -1),
    (b"others *2\n", (2, 2), -1), (b"others *2\n dog *2\n others *2\n", (2, 2), -1),
    (b"others *2\n dog *1234567890\n", (2, 2), -1), (b"dog park *1| others *1\n d *2\n", (2, 2), 0),
    (b"others *2\nxdog *2\n", (2, 2), -1), (b"others *2\n do", (2, 2), -1), (b"others *2\n dog park", (2, 2), -1),
    (b"", (1, 1), -1), (b"\n", (1, 1), -1), (b"others *1\n", (1, 1), 0),
]


@pytest.mark.parametrize("raw, shape, fmt", NEAR_MISSES)
def test_one_pass_row_reader_on_near_misses(raw, shape, fmt):
    assert _check_one_pass_reader(raw, ["others", "dog", "dog park", "d"], shape) == fmt


def test_plain_labels():
    from segtext._kernels import rrle as KR
    from segtext.labels import label_table

    for labels, plain in [(("others", "dog", "dog park"), True), (("others", "a|"), False),
                          (("others", "x *y"), False), (("others", " lead"), False), (("others", "a| b"), False),
                          (("others", "\tt"), False), (("others", "猫", "x*y", "|x"), True)]:
        buf, off, _ = label_table(labels)
        assert KR.plain_labels(buf, off) == plain, labels
    # a vocabulary that is not plain goes to the general reader, with the same result
    buf, off, _ = label_table(("others", "a|"))
    assert _check_one_pass_reader(b"others *1| a| *1\n", ["others", "a|"], (1, 2)) == -1


@given(hst.text(alphabet=hst.sampled_from(list("ab |*\n\t\u3000\u2028\x1c猫")), min_size=0, max_size=6))
def test_every_checked_label_is_plain(label):
    """Every vocabulary the decoders accept is read by the one-pass row reader (decode_grid_into
    falls back to the general reader for one that is not plain): whatever check_label accepts,
    plain_labels must accept."""
    from segtext._kernels import rrle as KR
    from segtext.labels import check_label, label_table

    try:
        check_label(label)
    except ValueError:
        return
    buf, off, _ = label_table(("others", label))
    assert KR.plain_labels(buf, off), label



def test_compiled_for_is_the_kernel_for_those_types():
    """K.compiled_for: the kernel's code for exactly its arguments' types, giving what the
    dispatcher gives; a plain function (no dispatcher, as under NUMBA_DISABLE_JIT) as it is."""
    from segtext import _kernels as K

    g = np.array([[3, 9], [1, 4]], np.uint8)
    f = K.compiled_for(K.id_range, g)
    assert f is not K.id_range and f(g) == K.id_range(g) == (1, 9)
    h = np.array([[700, 2]], np.uint16)  # another dtype: another compiled code
    assert K.compiled_for(K.id_range, h)(h) == (2, 700)

    def plain(x):
        return x + 1

    assert K.compiled_for(plain, 1) is plain
