#!/usr/bin/env python3
"""st.decode_rrle in every mode (repair, strict, t4s), with and without labels and grid_size.

Input: byte 0 picks the mode, whether labels and a grid size are given, and the unknown-label
policy; bytes 1-2 pick the grid size (from common.GRID_SIDES, some past the limits); the rest
is the text (UTF-8, bad bytes replaced).
Contract: repair and t4s never raise on a str (only for bad non-text arguments); strict raises
only ValueError/TypeError (DecodeError); a result is a 2-D integer grid of at most
MAX_GRID_CELLS cells, of the given size, every id < len(labels), with known repair kinds.
"""

from __future__ import annotations

import common
from common import Case, Call, expect, np, pick, st

MODES = ["repair", "strict", "t4s"]
UNKNOWN = ["background", "nearest", "error"]
DICT = common.TEXT_TOKENS
MAX_LEN = 8192


def options(b0: int, b1: int, b2: int) -> dict:
    kw: dict = {"mode": pick(MODES, b0)}
    if b0 & 4:
        kw["labels"] = pick(common.LABEL_SETS, b0 >> 6)
        kw["unknown"] = pick(UNKNOWN, b0 >> 4)
    if b0 & 8:
        kw["grid_size"] = (pick(common.GRID_SIDES, b1), pick(common.GRID_SIDES, b2))
    return kw


def check(kw: dict):
    def check_result(res) -> None:
        expect(isinstance(res, st.DecodedGrid), "type", type(res))
        g = res.grid
        expect(isinstance(g, np.ndarray) and g.ndim == 2 and g.dtype.kind in "iu", "grid", (type(g), getattr(g, "shape", None)))
        expect(1 <= g.size <= st.limits.MAX_GRID_CELLS, "grid size", g.shape)
        if "grid_size" in kw:
            expect(g.shape == tuple(kw["grid_size"]), "grid shape", (g.shape, kw["grid_size"]))
        expect(isinstance(res.labels, list) and all(isinstance(s, str) for s in res.labels), "labels", res.labels)
        expect(g.min() >= 0 and g.max() < len(res.labels), "ids", (int(g.min()), int(g.max()), len(res.labels)))
        if "labels" in kw:
            expect(res.labels == list(kw["labels"]), "given labels", res.labels)
        expect(all(isinstance(r, st.Repair) and r.kind in st.REPAIR_KINDS for r in res.repairs), "repair kinds")
        expect(res.format in st.FORMATS, "format", res.format)
        if kw["mode"] == "strict":
            expect(not res.repairs, "strict mode repaired", res.repairs[:3])
    return check_result


def unknown_label(e: BaseException) -> bool:
    return isinstance(e, st.DecodeError) and e.kind == "unknown_label"


def build(data: bytes) -> Case:
    (b0, b1, b2), rest = common.header(data, 3)
    kw = options(b0, b1, b2)
    call = Call("st.decode_rrle", st.decode_rrle, (common.text_of(rest),), kw)
    if kw["mode"] == "strict":
        return Case(call, check=check(kw))
    # documented: unknown="error" raises DecodeError for an unknown label, in any mode
    return Case(call, check=check(kw), text_arg=0,
                excuse=unknown_label if kw.get("unknown") == "error" else None)


def seeds() -> list[bytes]:
    out = []
    for i, ann in enumerate(common.sample(4)):
        for j, (h, w) in enumerate([(16, 16), (3, 5), (24, 32)]):
            grid = st.rle_to_grid(ann["segmentation"], grid_size=(h, w))
            for k, enc in enumerate((st.encode_rrle, st.encode_isd, st.encode_irle)):
                text = enc(grid, ["others", ann["label"]])
                if (i + j + k) % 2:
                    text = f"Sure, here it is:\n<seg>{text}</seg>"
                b0 = (i + j + k) % 3 | (8 if j == 1 else 0)
                out.append(bytes([b0, h - 1, w - 1]) + text.encode())
    out.append(bytes([4 | 8, 1, 3]) + b"others *2| dog *2\n dog *4\n")
    out.append(bytes([0, 0, 0]) + b"others *99999999999999999999\n")
    out.append(bytes([2, 0, 0]) + b"others *" + b"9" * 4400 + b"\n")  # past int()'s 4300 digits
    return out


if __name__ == "__main__":
    common.main(__name__)
