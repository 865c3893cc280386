"""The B-SD decoder's compiled fast path (clean text only) and its repairing parser must give
the same objects wherever the fast path answers."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as hst

import segtext as st
from segtext import bricks
from segtext.repairs import RepairLog

def config(fmt, S, max_run, row_wise):
    return bricks._config(S, max_run, row_wise, fmt, "<fg_{k}>", "<bg_{k}>")


def full_parser(text, image_size, cfg):
    log = RepairLog(text, strict=False)
    objs = bricks._decode_blocks(text, cfg, *image_size, log)
    return objs, log.repairs


def same(a, b):
    assert [(o.label, o.box) for o in a] == [(o.label, o.box) for o in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.bricks, y.bricks)


@hst.composite
def texts(draw):
    H = draw(hst.integers(1, 40))
    W = draw(hst.integers(1, 40))
    S = draw(hst.sampled_from([1, 3, 8]))
    fmt = draw(hst.sampled_from(sorted(st.BOX_FORMATS)))
    max_run = draw(hst.sampled_from([63, 2]))
    row_wise = draw(hst.booleans())
    objects = []
    for k in range(draw(hst.integers(0, 3))):
        m = np.zeros((H, W), bool)
        y0, x0 = draw(hst.integers(0, H - 1)), draw(hst.integers(0, W - 1))
        m[y0:draw(hst.integers(y0 + 1, H)), x0:draw(hst.integers(x0 + 1, W))] = True
        objects.append((f"obj {k}", m))
    text = st.encode_bsd(objects, (H, W), resolution=S, box_format=fmt, max_run=max_run, row_wise=row_wise)
    i = draw(hst.integers(0, len(text)))
    j = draw(hst.integers(i, min(len(text), i + 4)))
    junk = draw(hst.sampled_from(["", "x", "<", ">", "0", "9", ",", "<fg_1>", "<ref>", "</seg>", " "]))
    return text[:i] + junk + text[j:], (H, W), fmt, S, max_run, row_wise


@given(texts())
def test_fast_path_agrees_with_the_repairing_parser(case):
    text, size, fmt, S, max_run, row_wise = case
    cfg = config(fmt, S, max_run, row_wise)
    fast = bricks._fast_bsd(text.encode("utf-8"), cfg, *size)
    objs, repairs = full_parser(text, size, cfg)
    if fast is not None:
        assert repairs == [], f"the fast path accepted a text the parser repairs: {repairs}"
        same(fast, objs)
    res = st.decode_bsd(text, size, resolution=S, box_format=fmt, max_run=max_run, row_wise=row_wise)
    same(res.objects, objs)
    assert [r.kind for r in res.repairs] == [r.kind for r in repairs]


@given(
    S=hst.sampled_from([1, 3, 7, 8, 9, 16, 24, 64]),
    H=hst.integers(1, 90),
    W=hst.integers(1, 90),
    data=hst.data(),
)
def test_paste_kernel_equals_the_naive_cell_expansion(S, H, W, data):
    """K.paste reads rows of 8 cells a word at a time (S a multiple of 8) or cell by cell:
    both must set exactly the pixels whose cell (exact geometry) is 1, leaving the rest."""
    from segtext import _kernels as K

    import naive

    x0 = data.draw(hst.integers(0, W - 1))
    y0 = data.draw(hst.integers(0, H - 1))
    x1 = data.draw(hst.integers(x0 + 1, W))
    y1 = data.draw(hst.integers(y0 + 1, H))
    style = data.draw(hst.sampled_from(["random", "runs", "all", "none", "alternate"]))
    rng = np.random.default_rng(data.draw(hst.integers(0, 2**32 - 1)))
    if style == "random":
        cells = rng.random((S, S)) < rng.random()
    elif style == "runs":  # long runs crossing word edges
        cells = np.cumsum(rng.random((S, S)) < 0.15, axis=1) % 2 == 1
    else:
        cells = {"all": np.ones((S, S), bool), "none": np.zeros((S, S), bool),
                 "alternate": (np.arange(S)[None, :] + np.arange(S)[:, None]) % 2 == 0}[style]
    before = rng.random((H, W)) < 0.3
    out = before.astype(np.uint8)
    K.paste(np.ascontiguousarray(cells).view(np.uint8), out, y0, y1, x0, x1)
    want = before.copy()
    window = naive.grid_to_mask(cells.astype(np.int64), (y1 - y0, x1 - x0)).astype(bool)
    want[y0:y1, x0:x1] |= window
    np.testing.assert_array_equal(out.astype(bool), want)


# --------------------------------------------------------------------------- decode_bsd(...).mask()
# K.bsd_mask reads a clean text and paints its objects straight into the canvas as it reads
# them; against plain Python here (the objects the older fast parser K.parse_bsd returns, each
# enlarged by naive.grid_to_mask). These tests run again under NUMBA_BOUNDSCHECK=1 in .ci/run.

TOKENS = [("<fg_{k}>", "<bg_{k}>"), ("<f{k}>", "<bg_{k}/>"), ("F{k}", "B{k}"), ("<|fore|>{k};", "<|b|>{k};;")]


@hst.composite
def spelled_texts(draw):
    """texts() with other brick spellings too (prefixes of other lengths, empty suffixes), and
    half of them left clean (several objects, overlapping or not)."""
    if draw(hst.booleans()):
        text, size, fmt, S, max_run, row_wise = draw(texts())
    else:
        H = draw(hst.integers(1, 70))
        W = draw(hst.integers(1, 70))
        S = draw(hst.sampled_from([1, 2, 3, 8, 9, 16, 64]))
        fmt = draw(hst.sampled_from(sorted(st.BOX_FORMATS)))
        max_run = draw(hst.sampled_from([63, 2, 4096]))
        row_wise = draw(hst.booleans())
        rng = np.random.default_rng(draw(hst.integers(0, 2**32 - 1)))
        objects = []
        for k in range(draw(hst.integers(1, 4))):
            m = np.zeros((H, W), bool)
            y0, x0 = draw(hst.integers(0, H - 1)), draw(hst.integers(0, W - 1))
            y1, x1 = draw(hst.integers(y0 + 1, H)), draw(hst.integers(x0 + 1, W))
            m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < draw(hst.sampled_from([0.3, 0.8, 1.0]))
            m[y0, x0] = True
            objects.append((f"obj {k}", m))
        text = st.encode_bsd(objects, (H, W), resolution=S, box_format=fmt, max_run=max_run, row_wise=row_wise)
        text = draw(hst.sampled_from(["", "Here: ", "x\n"])) + text + draw(hst.sampled_from(["", " done"]))
        size = (H, W)
    fg, bg = draw(hst.sampled_from(TOKENS))
    if (fg, bg) != TOKENS[0]:
        text = text.replace("<fg_", "\0f").replace("<bg_", "\0b")  # respell the bricks
        fpre, fpost = fg.split("{k}")
        bpre, bpost = bg.split("{k}")
        import re

        text = re.sub("\0([fb])([0-9]+)>", lambda m: (fpre if m.group(1) == "f" else bpre) + m.group(2)
                      + (fpost if m.group(1) == "f" else bpost), text)
        text = text.replace("\0f", fpre).replace("\0b", bpre)
    return text, size, fmt, S, max_run, row_wise, fg, bg


def plain_paint(before, boxes_and_cells):
    import naive

    want = before.copy()
    for (x0, y0, x1, y1), cells in boxes_and_cells:
        want[y0:y1, x0:x1] |= naive.grid_to_mask(np.asarray(cells).astype(np.int64), (y1 - y0, x1 - x0)).astype(bool)
    return want


@given(spelled_texts(), hst.integers(0, 2**32 - 1))
def test_mask_kernel_equals_the_plain_reference(case, seed):
    """K.bsd_mask accepts exactly the texts K.parse_bsd accepts, and ORs exactly the pixels of
    their objects (each pixel taking the cell that holds its centre) into any canvas."""
    from segtext import _kernels as K

    text, (H, W), fmt, S, max_run, row_wise, fg, bg = case
    cfg = bricks._config(S, max_run, row_wise, fmt, fg, bg)
    raw = text.encode("utf-8")
    ok, meta, cells = K.parse_bsd(raw, cfg.tab, cfg.toff, S, max_run, row_wise, H, W, cfg.spelling.scale or 0,
                                  bricks._max_objects(cfg))
    rng = np.random.default_rng(seed)
    before = rng.random((H, W)) < draw_density(seed)
    out = before.copy()  # a bool canvas, as DecodedObjects.mask() passes (there all False)
    m = K.bsd_mask(raw, cfg.plan, out)
    assert (m >= 0) == bool(ok), f"bsd_mask says {m}, parse_bsd says {ok}"
    if m < 0:
        assert (out | ~before).all(), "a refused text cleared pixels"
        return
    assert m == len(meta)
    np.testing.assert_array_equal(out, plain_paint(before, [(tuple(meta[i, 2:]), cells[i]) for i in range(m)]))


def draw_density(seed):
    return (0.0, 0.2, 0.9)[seed % 3]


@given(spelled_texts())
def test_decoded_mask_equals_the_repairing_parser(case):
    """decode_bsd(...).mask(), fast path or not, is the union of the objects the repairing
    parser finds, with the same repairs; so are the objects read afterwards."""
    text, size, fmt, S, max_run, row_wise, fg, bg = case
    cfg = bricks._config(S, max_run, row_wise, fmt, fg, bg)
    objs, repairs = full_parser(text, size, cfg)
    kw = dict(resolution=S, box_format=fmt, max_run=max_run, row_wise=row_wise, fg_token=fg, bg_token=bg)
    res = st.decode_bsd(text, size, **kw)
    mask = res.mask()
    assert mask.dtype == bool and mask.shape == size
    np.testing.assert_array_equal(mask, plain_paint(np.zeros(size, bool), [(o.box, o.bricks) for o in objs]))
    assert res.repairs == repairs
    same(res.objects, objs)
    np.testing.assert_array_equal(res.mask(), mask)  # again, from the objects now
    if not repairs:
        strict = st.decode_bsd(text, size, mode="strict", **kw)
        np.testing.assert_array_equal(strict.mask(), mask)
        same(strict.objects, objs)


def test_mask_kernel_hand_made():
    """A 3 x 3 cell grid on a 5 x 7 box whose foreground runs cross row ends, on a 6 x 9 image
    (pixel boxes), and a second object over the first."""
    from segtext import _kernels as K

    import naive

    cells = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 1]], bool)
    text = ("<ref>a</ref><box>[1,0,8,5]</box><seg><bg_1><fg_4><bg_3><fg_1></seg>"
            "<ref>b</ref><box>[0,4,2,6]</box><seg><fg_1><bg_8></seg>")
    cfg = config("pixel", 3, 63, False)
    out = np.zeros((6, 9), bool)
    assert K.bsd_mask(text.encode(), cfg.plan, out) == 2
    want = np.zeros((6, 9), bool)
    want[0:5, 1:8] = naive.grid_to_mask(cells.astype(np.int64), (5, 7)).astype(bool)
    want[4, 0] = True  # cell (0, 0) of a 3 x 3 grid on 2 x 2 pixels: only pixel (0, 0)
    np.testing.assert_array_equal(out, want)
    # the same text cut inside the second object: -1, the first one painted
    out = np.zeros((6, 9), bool)
    assert K.bsd_mask(text[:-12].encode(), cfg.plan, out) == -1
    np.testing.assert_array_equal(out[:4], want[:4])


@given(n=hst.integers(1, 5000), m=hst.integers(1, 1024))
def test_cell_starts_by_steps_equal_the_plain_rule(n, m):
    """bsd_mask's cell starts (two divisions per axis, then steps): cell r's first pixel is the
    first i with (2i + 1) * m // (2n) >= r, as tests/naive.py's cell_of puts pixels in cells."""
    import naive

    got = _stepped_starts()(n, m).tolist()
    cells = [naive.cell_of(i, n, m) for i in range(n)] if n <= 600 else None
    want = [0] * (m + 1)
    for r in range(m + 1):
        # first pixel whose cell is >= r (n when none)
        want[r] = next((i for i in range(n) if cells[i] >= r), n) if cells is not None \
            else min(max(-((m - 2 * n * r) // (2 * m)), 0), n)
    assert got == want


_STEPPED = []


def _stepped_starts():
    """A compiled wrapper of the inline kernel K.cell_starts_into, made once."""
    if not _STEPPED:
        from numba import njit

        from segtext import _kernels as K

        @njit(cache=False)
        def starts(n, m):
            out = np.empty(m + 1, np.int64)
            K.cell_starts_into(n, m, out)
            return out

        _STEPPED.append(starts)
    return _STEPPED[0]
