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
