#!/usr/bin/env python3
"""st.encode_bsd on masks and RLE dicts (C and Fortran order, strided views, empty, not binary,
of the wrong size), and the dense-mask readers beside it: st.box_from_mask, st.metrics.mask_iou.

Input: raw bytes that a FuzzedDataProvider turns into the masks, labels and options.
Contract: only ValueError/TypeError. encode_bsd's text decodes in strict mode with the same
options to one object per non-empty mask, with its label (and, for box_format="pixel", the
mask's tight box); box_from_mask is the tight box (an empty mask raises); mask_iou's counts
equal numpy's.
"""

from __future__ import annotations

import atheris

import common
from common import Call, Case, expect, np, st
from fuzz_rle import random_rle

DICT = ["<ref>", "</ref>", "<seg>", "<box>", "\x00\x00\x00\x00", "\xff\xff\xff\xff"]
LABELS = ["cat", "white horse", "狗", "", " ", "a<ref>b", "x</seg>", "<box>", "a\nb", "<fg_3>", "|", 5, None]
POLICIES = ["majority", "majority", "nearest", "any", "mode"]
THRESHOLDS = [0.5, 0.5, 1.0, 1e-9, 0.0, 2.0, float("nan")]
SETUP = ""


def dense(fdp: atheris.FuzzedDataProvider, H: int, W: int) -> np.ndarray:
    fill = fdp.ConsumeIntInRange(0, 5)
    if fill == 0:
        bits = np.zeros((H, W), np.uint8)
    elif fill == 1:
        bits = np.ones((H, W), np.uint8)
    else:
        raw = fdp.ConsumeBytes(H * W).ljust(H * W, b"\0")
        bits = (np.frombuffer(raw, np.uint8).reshape(H, W) % fill == 0).astype(np.uint8)
    dtype = fdp.PickValueInList([np.bool_, np.bool_, np.uint8, np.int64, np.float64, np.int8])
    m = bits.astype(dtype)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        m = m * 2  # not binary
    layout = fdp.ConsumeIntInRange(0, 4)
    if layout == 1:
        return np.asfortranarray(m)
    if layout == 2:  # a strided view
        big = np.zeros((2 * H, 2 * W), m.dtype)
        big[::2, ::2] = m
        return big[::2, ::2]
    if layout == 3:
        return np.ascontiguousarray(m.T).T  # Fortran-ordered view of a C array
    return m


def a_mask(fdp: atheris.FuzzedDataProvider, H: int, W: int):
    k = fdp.ConsumeIntInRange(0, 9)
    if k <= 5:
        return dense(fdp, H, W)
    if k == 6:
        return common.dense_rle(dense(fdp, H, W) != 0)
    if k == 7:
        rle = common.dense_rle(dense(fdp, H, W) != 0)
        return {"size": rle["size"], "counts": common.coco_string(rle["counts"])}
    if k == 8:
        return random_rle(fdp)
    return fdp.PickValueInList([np.zeros((0, W), bool), np.zeros((H, W, 1), bool), np.zeros(W, bool), [[1, 0]],
                                np.zeros((H + 1, W), bool), "mask", None])


def foreground(mask):
    """Whether the mask has a foreground pixel (None when it cannot be read)."""
    try:
        if isinstance(mask, dict):
            counts, _ = st.coco.rle_runs(mask)
            return bool(counts[1::2].sum() > 0)
        return bool((np.asarray(mask) != 0).any())
    except (TypeError, ValueError):
        return None


def tight_box(mask):
    m = np.asarray(mask) != 0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def check_encode(objects, size, kw):
    def check(text) -> None:
        expect(isinstance(text, str), "text type", type(text))
        dkw = {k: kw[k] for k in ("resolution", "max_run", "row_wise", "box_format") if k in kw}
        res = st.decode_bsd(text, size, mode="strict", **dkw)
        kept = [(label, m) for label, m in objects if foreground(m)]
        expect([o.label for o in res.objects] == [label for label, _ in kept], "objects decoded",
               ([o.label for o in res.objects], [label for label, _ in kept]))
        if kw.get("box_format") == "pixel":
            for o, (_, m) in zip(res.objects, kept):
                if not isinstance(m, dict):
                    expect(o.box == tight_box(m), "pixel box is the tight box", (o.box, tight_box(m)))
    return check


def check_box(mask):
    def check(box) -> None:
        expect(foreground(mask), "box of an empty mask", box)
        expect(tuple(box) == tight_box(mask), "tight box", (box, tight_box(mask)))
    return check


def check_iou(a, b):
    def check(s) -> None:
        pa, pb = np.asarray(a) != 0, (st.evaluation.rle_to_mask(b) if isinstance(b, dict) else np.asarray(b) != 0)
        want = (int((pa & pb).sum()), int((pa | pb).sum()), int(pa.sum()), int(pb.sum()))
        got = (s.intersection, s.union, s.pred_area, s.gt_area)
        expect(got == want, "mask_iou counts", (got, want))
    return check


def build(data: bytes) -> Case:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    H, W = fdp.ConsumeIntInRange(1, 24), fdp.ConsumeIntInRange(1, 24)
    if which == 1:
        m = dense(fdp, H, W)
        return Case(Call("st.box_from_mask", st.box_from_mask, (m,)), check=check_box(m))
    if which == 2:
        a = dense(fdp, H, W)
        b = dense(fdp, H, W) if fdp.ConsumeBool() else common.dense_rle(dense(fdp, H, W) != 0)
        ok = all(np.isfinite(np.asarray(x, float)).all() for x in (a, b) if not isinstance(x, dict))
        return Case(Call("st.metrics.mask_iou", st.metrics.mask_iou, (a, b)), check=check_iou(a, b) if ok else None)
    size = (H, W) if fdp.ConsumeIntInRange(0, 7) else fdp.PickValueInList([(H + 1, W), (0, W), (2**16, 2**16), (H,)])
    objects = [(fdp.PickValueInList(LABELS[:3]) if fdp.ConsumeIntInRange(0, 3) else fdp.PickValueInList(LABELS),
                a_mask(fdp, H, W)) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    kw = {"resolution": fdp.PickValueInList([1, 2, 3, 4, 8, 16, 64, 1024, 0, 1025, 2**40]),
          "policy": fdp.PickValueInList(POLICIES), "threshold": fdp.PickValueInList(THRESHOLDS),
          "max_run": fdp.PickValueInList(common.MAX_RUNS), "row_wise": fdp.ConsumeBool(),
          "box_format": fdp.PickValueInList(common.BOX_FORMATS), "skip_empty": fdp.ConsumeIntInRange(0, 3) > 0}
    return Case(Call("st.encode_bsd", st.encode_bsd, (objects, size), kw), check=check_encode(objects, size, kw))


def seeds() -> list[bytes]:
    import random

    rnd = random.Random(0)
    return [bytes(rnd.randrange(256) for _ in range(n)) for n in (8, 16, 32, 64, 128, 256, 512, 1024) for _ in range(3)]


if __name__ == "__main__":
    common.main(__name__)
