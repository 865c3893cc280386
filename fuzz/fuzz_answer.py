#!/usr/bin/env python3
"""st.evaluation.decode_answer (what `segtext eval` does with each answer), every format and mode.

Input: byte 0 picks the format (auto/rrle/bsd), the mode (repair/strict/t4s) and upsampling;
byte 1 the grid size (none or common.GRID_SIDES), bytes 2-3 the image size, byte 4 the B-SD
resolution and box format; the rest is the answer text.
Contract: never raises on a str in any mode (strict rejects an answer, it does not raise);
bad non-text arguments raise ValueError/TypeError. The answer's status is one of the four;
its mask and label map are (H, W); its score against an empty ground truth is in [0, 1].
"""

from __future__ import annotations

import common
from common import Call, Case, expect, pick, st

DICT = common.TEXT_TOKENS
MAX_LEN = 8192
FORMATS = ["auto", "auto", "rrle", "bsd"]
MODES = ["repair", "strict", "t4s"]
UPSAMPLE = [None, "exact", "t4s"]
# ordinary answers of each format: an argument that one of them rejects too is a bad argument
PROBES = ("", "<seg>others *1\n</seg>", "<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_1></seg>")


def check(H: int, W: int):
    def check_result(a) -> None:
        expect(isinstance(a, st.evaluation.DecodedAnswer), "type", type(a))
        expect(a.status in ("rejected", "no_mask", "repaired", "clean"), "status", a.status)
        expect(a.format in ("rrle", "isd", "irle", "bsd", "none"), "format", a.format)
        gs = a.grid_size
        expect(gs is None or (len(gs) == 2 and gs[0] * gs[1] <= st.limits.MAX_GRID_CELLS), "grid size", gs)
        boxes = a.boxes()
        expect(all(0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H for x1, y1, x2, y2, _ in boxes), "boxes", boxes[:3])
        if H * W <= 1 << 20:
            m = a.mask()
            expect(m.shape == (H, W) and m.dtype == bool, "mask", (m.shape, m.dtype))
            lm, labels = a.label_map()
            expect(lm.shape == (H, W) and (lm.size == 0 or 0 <= lm.min() <= lm.max() < len(labels)), "label map",
                   (lm.shape, labels))
        s = a.score({"size": [H, W], "counts": [H * W]})
        expect(0.0 <= s.iou <= 1.0 and s.intersection == 0, "score against an empty mask", s)
    return check_result


def build(data: bytes) -> Case:
    (b0, b1, b2, b3, b4), rest = common.header(data, 5)
    H, W = pick(common.IMAGE_SIDES, b2), pick(common.IMAGE_SIDES, b3)
    kw = {"format": pick(FORMATS, b0), "mode": pick(MODES, b0 >> 2), "upsample": pick(UPSAMPLE, b0 >> 4),
          "grid_size": None if b1 < 128 else pick(common.GRID_SIDES, b1),
          "resolution": pick(common.RESOLUTIONS, b4), "box_format": pick(common.BOX_FORMATS, b4 >> 4)}
    call = Call("st.evaluation.decode_answer", st.evaluation.decode_answer, (common.text_of(rest), (H, W)), kw)
    return Case(call, check=check(H, W), text_arg=0, probes=PROBES)


def seeds() -> list[bytes]:
    out = []
    for i, (label, mask) in enumerate(common.real_masks(4)):
        H, W = mask.shape
        size = bytes([common.index(common.IMAGE_SIDES, H), common.index(common.IMAGE_SIDES, W)])
        grid = st.mask_to_grid(mask, grid_size=(16, 16))
        rrle = "Sure, <seg>" + st.encode_rrle(grid, ["others", label]) + "</seg>"
        bsd = st.encode_bsd([(label, mask)], (H, W), resolution=8)
        for mode in range(3):
            out.append(bytes([mode << 2, 0]) + size + bytes([common.index(common.RESOLUTIONS, 8)]) + rrle.encode())
            out.append(bytes([mode << 2 | 3, 0]) + size + bytes([common.index(common.RESOLUTIONS, 8)]) + bsd.encode())
    out.append(bytes([0, 0, 0, 0, 0]) + b"There is no such object in the image.")
    return out


if __name__ == "__main__":
    common.main(__name__)
