#!/usr/bin/env python3
"""st.coco.to_rle on polygons: lists of floats with inf, nan, huge and negative values, odd
lengths, non-numbers, and image sizes past the limits.

Input: bytes 0-1 pick the image size (common.IMAGE_SIDES; byte 0 >= 250 gives an odd one);
the rest is the polygon list as JSON when it parses, else raw bytes that a FuzzedDataProvider
turns into one (coordinates from common.FLOATS, near the image, or any double; big ints).
Contract: only ValueError/TypeError (pycocotools must never see a polygon it crashes on); the
result is a compressed RLE of the image's size whose runs sum to H*W.
"""

from __future__ import annotations

import json

import atheris

import common
from common import Call, Case, any_float, big_int, expect, pick, st

DICT = common.NUMBER_TOKENS + ["[[", "]]", "], ["]
ODD_SIZES = [None, (2.5, 3), ("4", "4"), (4,), (True, 4), (4, 4, 4)]


def coordinate(fdp: atheris.FuzzedDataProvider, side: int):
    k = fdp.ConsumeIntInRange(0, 9)
    if k <= 4:
        return fdp.ConsumeIntInRange(-3, max(3, side + 3)) + (0.5 if k == 0 else 0)
    if k <= 7:
        return any_float(fdp)
    if k == 8:
        return big_int(fdp) * fdp.PickValueInList([1, 10**300, 10**400])
    return fdp.PickValueInList([None, "1", [1.0], True, {}, "nan"])


def random_polygons(fdp: atheris.FuzzedDataProvider, side: int):
    n = fdp.ConsumeIntInRange(0, 3)
    polys = [[coordinate(fdp, side) for _ in range(fdp.ConsumeIntInRange(0, 16))] for _ in range(n)]
    return fdp.PickValueInList([polys, polys, polys, tuple(polys), polys[:1] + ["x"], [[polys]]])


def check(H: int, W: int):
    def check_result(rle) -> None:
        expect(isinstance(rle, dict) and rle.get("size") == [H, W], "size", rle)
        expect(isinstance(rle["counts"], str) and rle["counts"].isascii(), "counts", type(rle["counts"]))
        counts, size = st.coco.rle_runs(rle)
        expect(size == (H, W) and int(counts.sum()) == H * W, "runs", size)
    return check_result


def build(data: bytes) -> Case:
    (b0, b1), rest = common.header(data, 2)
    size = pick(ODD_SIZES, b0) if b0 >= 250 else (pick(common.IMAGE_SIDES, b0), pick(common.IMAGE_SIDES, b1))
    polys = common.json_or_none(rest)
    if polys is None:
        side = size[1] if size is not None and len(size) > 1 and isinstance(size[1], int) else 8
        polys = random_polygons(atheris.FuzzedDataProvider(rest), side)
    ok = size is not None and len(size) == 2 and all(type(v) is int for v in size)
    return Case(Call("st.coco.to_rle", st.coco.to_rle, (polys, size)), check=check(*size) if ok else None)


def seeds() -> list[bytes]:
    out = []
    sq = [[0, 0, 4, 0, 4, 4, 0, 4]]
    for i, (label, mask) in enumerate(common.real_masks(2)):
        H, W = mask.shape
        x1, y1, x2, y2 = st.box_from_mask(mask)
        poly = [[x1, y1, x2, y1, (x1 + x2) / 2, y2, x1, (y1 + y2) / 2]]
        out.append(bytes([common.index(common.IMAGE_SIDES, H), common.index(common.IMAGE_SIDES, W)])
                   + json.dumps(poly).encode())
    for polys in (sq, [[0, 0, 1e30, 0, 1e30, 1e30]], [[-5, -5, 100, 0, 3, 200]], sq + sq, [[0.5, 0.5, 7.5, 0.5, 4, 7.5]]):
        out.append(bytes([6, 6]) + json.dumps(polys).encode())
    return out


if __name__ == "__main__":
    common.main(__name__)
