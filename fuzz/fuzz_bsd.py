#!/usr/bin/env python3
"""st.decode_bsd in repair and strict mode, with each box_format.

Input: byte 0 picks the mode, row_wise, the box format (bits 2-4) and the vocabulary (bits 5-7:
none, or VOCAB with one of the unknown-label policies); bytes 1-2 the image size (from
common.IMAGE_SIDES), byte 3 the resolution (common.RESOLUTIONS), byte 4 max_run; the rest is
the text.
Contract: repair never raises on a str (only for bad non-text arguments, or a DecodeError for an
unknown label under unknown="error"); strict raises only ValueError/TypeError; every object has
a label (one of VOCAB unless the policy keeps unknown labels), a non-empty box inside the image
and (S, S) bool bricks; its mask (built for images up to 2**20 pixels) is (H, W) bool and empty
outside the box.
"""

from __future__ import annotations

import common
from common import Call, Case, expect, np, pick, st

DICT = common.TEXT_TOKENS
MAX_LEN = 8192
VOCAB = ["cat", "dog", "white horse"]
POLICIES = [None, None, None, None, "foreground", "background", "nearest", "error"]


def check(kw: dict, H: int, W: int, S: int):
    def check_result(res) -> None:
        expect(isinstance(res, st.DecodedObjects) and isinstance(res.objects, list), "type", type(res))
        for o in res.objects:
            expect(isinstance(o.label, str), "label", o.label)
            if kw.get("labels") and kw["unknown"] != "foreground":
                expect(o.label in VOCAB or o.label == "", "label outside the vocabulary", o.label)
            expect(len(o.box) == 4 and all(type(v) is int for v in o.box), "box type", o.box)
            x1, y1, x2, y2 = o.box
            expect(0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, "box inside image", (o.box, (H, W)))
            b = o.bricks
            expect(isinstance(b, np.ndarray) and b.shape == (S, S) and b.dtype == bool, "bricks",
                   (getattr(b, "shape", None), getattr(b, "dtype", None)))
            if H * W <= 1 << 20:
                m = o.mask
                expect(m.shape == (H, W) and m.dtype == bool, "mask", (m.shape, m.dtype))
                outside = m.copy()
                outside[y1:y2, x1:x2] = False
                expect(not outside.any(), "mask outside its box")
        if H * W <= 1 << 20:
            u = res.mask()
            expect(u.shape == (H, W) and u.dtype == bool, "union mask", (u.shape, u.dtype))
        expect(all(isinstance(r, st.Repair) and r.kind in st.REPAIR_KINDS for r in res.repairs), "repair kinds")
        if kw["mode"] == "strict":
            expect(not res.repairs, "strict mode repaired", res.repairs[:3])
    return check_result


def build(data: bytes) -> Case:
    (b0, b1, b2, b3, b4), rest = common.header(data, 5)
    H, W = pick(common.IMAGE_SIDES, b1), pick(common.IMAGE_SIDES, b2)
    kw = {"resolution": pick(common.RESOLUTIONS, b3), "mode": ("repair", "strict")[b0 & 1],
          "max_run": pick(common.MAX_RUNS, b4), "row_wise": bool(b0 & 2),
          "box_format": pick(common.BOX_FORMATS, (b0 >> 2) & 7)}
    policy = POLICIES[b0 >> 5]
    if policy is not None:
        kw["labels"], kw["unknown"] = VOCAB, policy
    call = Call("st.decode_bsd", st.decode_bsd, (common.text_of(rest), (H, W)), kw)
    unknown_error = (lambda e: isinstance(e, st.DecodeError) and e.kind == "unknown_label") \
        if policy == "error" else None
    return Case(call, check=check(kw, H, W, kw["resolution"]), text_arg=0 if kw["mode"] == "repair" else None,
                excuse=unknown_error)


def seeds() -> list[bytes]:
    out = []
    for i, (label, mask) in enumerate(common.real_masks(4)):
        H, W = mask.shape
        for j, S in enumerate((64, 8, 1)):
            for k, fmt in enumerate(common.BOX_FORMATS):
                text = st.encode_bsd([(label, mask)], (H, W), resolution=S, box_format=fmt)
                if (i + j) % 2:
                    text = "The object is " + text + " and that is all."
                b0 = ((i + j + k) & 1) | (common.BOX_FORMATS.index(fmt) << 2)
                out.append(bytes([b0, common.index(common.IMAGE_SIDES, H), common.index(common.IMAGE_SIDES, W),
                                  common.index(common.RESOLUTIONS, S), 0]) + text.encode())
    for m in common.masks()[1:]:
        text = st.encode_bsd([("Cat.", m), ("cow", m), ("dog", m)], m.shape, resolution=4)
        for policy in range(4, 8):  # with the vocabulary, each policy
            out.append(bytes([policy << 5, common.index(common.IMAGE_SIDES, m.shape[0]),
                              common.index(common.IMAGE_SIDES, m.shape[1]), common.index(common.RESOLUTIONS, 4),
                              0]) + text.encode())
        text = st.encode_bsd([("cat", m), ("dog", m)], m.shape, resolution=4, max_run=2)
        out.append(bytes([1, common.index(common.IMAGE_SIDES, m.shape[0]), common.index(common.IMAGE_SIDES, m.shape[1]),
                          common.index(common.RESOLUTIONS, 4), common.index(common.MAX_RUNS, 2)]) + text.encode())
    return out


if __name__ == "__main__":
    common.main(__name__)
