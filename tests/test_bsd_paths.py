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
