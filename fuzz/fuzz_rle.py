#!/usr/bin/env python3
"""Every reader of COCO RLE dicts: st.rle_to_grid, st.rles_to_grids, st.rle_to_text,
st.coco.decode_counts, st.coco.rle_runs, st.coco.to_rle, st.metrics.mask_iou / grid_iou,
st.box_from_mask, st.evaluation.rle_to_mask.

Input: byte 0 picks the reader, byte 1 its options (grid size, policy); the rest is the RLE:
JSON when it parses (the seeds are JSON, so reproducers are readable), else raw bytes that a
FuzzedDataProvider turns into one (sizes and counts from common.BIG_INTS, numpy arrays, long
compressed strings of huge or negative runs, strings of raw bytes).
Contract: only ValueError/TypeError; results of the right type, shape and range (grids of
0/1, runs that sum to H*W, scores with I <= min(areas), U = A + B - I, boxes inside the image).
"""

from __future__ import annotations

import atheris

import common
from common import Call, Case, big_int, expect, np, pick, st

DICT = common.NUMBER_TOKENS + ['"size"', '"counts"', '{"size": [', '], "counts": ', "0O", "N", "\\\\"]
GRIDS = [(16, 16), (1, 1), (2, 3), (4, 4), (3, 1), (32, 32), (0, 4), (2**31, 1)]
POLICIES = ["majority", "nearest", "any", "majority"]
SMALL = 1 << 22  # readers that build an (H, W) mask are only given RLEs up to this many pixels


def random_rle(fdp: atheris.FuzzedDataProvider):
    """A dict that looks more or less like a COCO RLE."""
    k = fdp.ConsumeIntInRange(0, 15)
    if k == 0:
        return fdp.PickValueInList([None, 0, "", [], [1, 2], {"size": [2, 2]}, {"counts": [4]}])
    if k <= 8:
        H, W = fdp.ConsumeIntInRange(1, 12), fdp.ConsumeIntInRange(1, 12)
    else:
        H, W = big_int(fdp), big_int(fdp)
    size = fdp.PickValueInList([[H, W], [H, W], [H, W], (H, W), [float(H), W], [H], [H, W, 1], [str(H), W],
                                [True, W], np.array([H, W])])
    c = fdp.ConsumeIntInRange(0, 6)
    n = fdp.ConsumeIntInRange(0, 10)
    runs = [big_int(fdp) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 20) for _ in range(n)]
    if c <= 1:
        counts = runs
    elif c == 2:
        counts = common.coco_string(runs)  # a compressed string of arbitrary runs
    elif c == 3:
        counts = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    elif c == 4:
        counts = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
    elif c == 5:
        dt = fdp.PickValueInList([np.int64, np.uint64, np.int32, np.uint8, np.float64, np.bool_])
        counts = np.array([v % (1 << 63) for v in runs], dtype=np.uint64).astype(dt)
    else:
        counts = fdp.PickValueInList([None, 5, 2.5, [1.5, 2], [[1, 2]], [True, False], ["1"], {}, [None]])
    fix = fdp.ConsumeIntInRange(0, 5)
    if fix <= 1 and c <= 2 and type(H) is int and type(W) is int:  # sometimes the total made right,
        last = H * W - sum(runs)  # or right modulo 2**64 (int64 sums wrap)
        runs = runs + [last if fix == 0 or last >= 0 else last % (1 << 64)]
        counts = runs if c <= 1 else common.coco_string(runs)
    return {"size": size, "counts": counts}


def rle_of(data: bytes):
    value = common.json_or_none(data)
    if value is not None:
        return value
    return random_rle(atheris.FuzzedDataProvider(data))


def size_of(rle) -> tuple[int, int] | None:
    """(H, W) when the RLE reads cleanly, else None."""
    try:
        _, size = st.coco.rle_runs(rle)
    except (TypeError, ValueError):
        return None
    return size


def check_grid(shape):
    def check(g):
        expect(isinstance(g, np.ndarray) and g.shape == shape, "grid shape", (getattr(g, "shape", None), shape))
        expect(g.dtype.kind in "iu" and np.isin(g, (0, 1)).all(), "grid values", np.unique(g)[:5])
    return check


def check_runs(res) -> None:
    counts, (H, W) = res
    expect(counts.ndim == 1 and counts.dtype.kind == "i" and (counts >= 0).all(), "runs", counts[:8])
    expect(int(counts.sum()) == H * W, "runs sum to H*W", (int(counts.sum()), H, W))


def check_score(size):
    def check(s) -> None:
        expect(size is not None, "accepts an RLE that st.coco.rle_runs rejects")
        H, W = size
        i, u, a, b = s.intersection, s.union, s.pred_area, s.gt_area
        expect(0 <= i <= min(a, b) and u == a + b - i and max(a, b) <= H * W, "score", s)
        expect(0.0 <= s.iou <= 1.0, "iou", s.iou)
        for box in (s.pred_box, s.gt_box):
            expect(box is None or (0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H), "score box", box)
    return check


def check_box(size):
    def check(box) -> None:
        expect(size is not None, "accepts an RLE that st.coco.rle_runs rejects")
        H, W = size
        expect(len(box) == 4 and 0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H, "box", (box, size))
    return check


def build(data: bytes) -> Case | None:
    (b0, b1), rest = common.header(data, 2)
    rle = rle_of(rest)
    grid, policy = pick(GRIDS, b1), pick(POLICIES, b1 >> 3)
    kw = {"grid_size": grid, "policy": policy}
    size = size_of(rle)
    which = b0 % 12
    if which in (4, 7) and not isinstance(rle, dict):
        return None  # these read dense arrays too: a list is a mask, not a malformed RLE
    if which == 0:
        return Case(Call("st.rle_to_grid", st.rle_to_grid, (rle,), kw), check=check_grid(grid))
    if which == 1:
        rles = rle if isinstance(rle, list) else [rle, rle]
        return Case(Call("st.rles_to_grids", st.rles_to_grids, (rles,), kw),
                    check=check_grid((len(rles), *grid)))
    if which == 2:
        counts = rle.get("counts") if isinstance(rle, dict) else rle
        return Case(Call("st.coco.decode_counts", st.coco.decode_counts, (counts,)),
                    check=lambda c: expect(c.ndim == 1 and c.dtype == np.int64 and (c >= 0).all(), "runs", c[:8]))
    if which == 3:
        return Case(Call("st.coco.rle_runs", st.coco.rle_runs, (rle,)), check=check_runs)
    if which == 4:
        other = rle if b1 & 1 or size is None else {"size": list(size), "counts": [size[0] * size[1]]}
        return Case(Call("st.metrics.mask_iou", st.metrics.mask_iou, (rle, other)), check=check_score(size))
    if which == 5:
        if size is None or size[0] * size[1] > SMALL:
            return None
        dense = np.zeros(size, bool)
        dense[: size[0] // 2] = True
        return Case(Call("st.metrics.mask_iou", st.metrics.mask_iou, (dense, rle)), check=check_score(size),
                    setup=f"dense = np.zeros({size}, bool); dense[:{size[0] // 2}] = True")
    if which == 6:
        g = np.eye(*grid[:2], dtype=np.int32) if 0 < grid[0] * grid[1] <= 1024 else np.ones((1, 1), np.int32)
        return Case(Call("st.metrics.grid_iou", st.metrics.grid_iou, (g, rle), {"method": ("exact", "t4s")[b1 & 1]}),
                    check=check_score(size))
    if which == 7:
        return Case(Call("st.box_from_mask", st.box_from_mask, (rle,)), check=check_box(size))
    if which == 8:
        if size is not None and size[0] * size[1] > SMALL:
            return None
        return Case(Call("st.evaluation.rle_to_mask", st.evaluation.rle_to_mask, (rle,)),
                    check=lambda m: expect(m.shape == size and m.dtype == bool, "mask", (m.shape, m.dtype)))
    if which == 9:
        def check_text(t):
            expect(isinstance(t, str), "text type", type(t))
            res = st.decode_rrle(t, grid_size=grid, mode="strict")
            expect(res.grid.shape == grid, "text grid", res.grid.shape)
        return Case(Call("st.rle_to_text", st.rle_to_text, (rle, "dog"), kw), check=check_text)
    if which == 10:
        image_size = None if b1 & 1 or size is None else size
        return Case(Call("st.coco.to_rle", st.coco.to_rle, (rle, image_size)),
                    check=lambda r: expect(r is rle, "to_rle returns the RLE dict itself"))
    rles = rle if isinstance(rle, list) else [rle]
    return Case(Call("st.rles_to_texts", st.rles_to_texts, (rles, "dog"), kw),
                check=lambda ts: expect(isinstance(ts, list) and len(ts) == len(rles), "texts", type(ts)))


def seeds() -> list[bytes]:
    import json

    out = []
    anns = common.sample(3)
    for which in range(12):
        for i, a in enumerate(anns):
            rle = a["segmentation"]
            if i == 1:
                rle = {"size": rle["size"], "counts": st.coco.decode_counts(rle["counts"]).tolist()}
            if i == 2:
                rle = [rle, anns[0]["segmentation"]] if which in (1, 11) else {"size": [2, 3], "counts": [1, 2, 3]}
            out.append(bytes([which, i]) + json.dumps(rle).encode())
    out.append(bytes([4, 1]) + json.dumps({"size": [1, 2], "counts": [2**62, -(2**62) + 2]}).encode())
    out.append(bytes([0, 0]) + json.dumps({"size": [65536, 65536], "counts": common.coco_string([2**32])}).encode())
    return out


if __name__ == "__main__":
    common.main(__name__)
