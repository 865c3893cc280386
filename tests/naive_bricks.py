"""Plain, obviously-correct references for the box-wise descriptors (B-SD, Text4Seg++ "semantic bricks").

Nothing here imports segtext.  Every function is written from the format contract
(../shared/docs/FORMATS.md sections 1 and 4, issue 3 and the B-SD API spec) with loops where loops
are the clearest statement of the rule; Pillow and pycocotools are used as the external oracles they
are.  The steps, for one object:

    tight box -> quantise (0..1000) -> dequantise = the crop box -> crop -> resample to S x S with a
    cell policy -> raster (or row-wise) runs -> bricks split at max_run -> tokens -> text block

and back: bricks -> S x S cells -> expand to the crop box's pixel size ("the cell holding the pixel's
centre") -> paste into an empty (H, W) canvas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

SCALE = 1000
BOX_FORMATS = ("norm1000", "qwen2vl", "pixel")
POLICIES = ("majority", "any", "nearest")

# the tags of each preset: (ref open, ref close, box open, box close, seg open, seg close)
TAGS = {
    "norm1000": ("<ref>", "</ref>", "<box>", "</box>", "<seg>", "</seg>"),
    "pixel": ("<ref>", "</ref>", "<box>", "</box>", "<seg>", "</seg>"),
    "qwen2vl": ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<seg>", "</seg>"),
}

# --------------------------------------------------------------------------------------------------
# masks and boxes
# --------------------------------------------------------------------------------------------------


def to_dense(mask) -> np.ndarray:
    """(H, W) bool array of a binary array or of a COCO RLE dict (decoded by pycocotools)."""
    if isinstance(mask, dict):
        H, W = mask["size"]
        rle = mask
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects({"size": [H, W], "counts": list(rle["counts"])}, H, W)
        return mask_utils.decode(rle).astype(bool)
    return np.asarray(mask).astype(bool)


def coco_rle(mask) -> dict:
    """The compressed COCO RLE of a dense mask, exactly as the brief asks for it."""
    return mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))


def box_from_mask(mask) -> tuple[int, int, int, int]:
    """Tight pixel box (x1, y1, x2, y2) of the foreground, x2 / y2 exclusive; ValueError when empty."""
    m = to_dense(mask)
    H, W = m.shape
    ys = [y for y in range(H) if any(bool(v) for v in m[y, :])]
    xs = [x for x in range(W) if any(bool(v) for v in m[:, x])]
    if not ys:
        raise ValueError("empty mask has no box")
    return (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers, exactly (b > 0)."""
    return -((-a) // b)


def quantize_box(box, image_size, scale: int = SCALE) -> tuple[int, int, int, int]:
    """qx1 = x1*scale//W, qy1 = y1*scale//H, qx2 = ceil(x2*scale/W), qy2 = ceil(y2*scale/H)."""
    H, W = image_size
    x1, y1, x2, y2 = (int(v) for v in box)
    return (x1 * scale // W, y1 * scale // H, ceil_div(x2 * scale, W), ceil_div(y2 * scale, H))


def _clip(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def dequantize_box(qbox, image_size, scale: int = SCALE) -> tuple[int, int, int, int]:
    """x1 = qx1*W//scale, x2 = ceil(qx2*W/scale) (y likewise with H), clipped to [0, W] / [0, H]."""
    H, W = image_size
    qx1, qy1, qx2, qy2 = (int(v) for v in qbox)
    return (
        _clip(qx1 * W // scale, 0, W),
        _clip(qy1 * H // scale, 0, H),
        _clip(ceil_div(qx2 * W, scale), 0, W),
        _clip(ceil_div(qy2 * H, scale), 0, H),
    )


def crop_box(mask, image_size, box_format: str = "norm1000") -> tuple[tuple[int, int, int, int], tuple]:
    """(the pixel box whose crop is written, the numbers written in the text)."""
    tight = box_from_mask(mask)
    if box_format == "pixel":
        return tight, tight
    q = quantize_box(tight, image_size)
    return dequantize_box(q, image_size), q


def crop(mask, box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return to_dense(mask)[y1:y2, x1:x2]


# --------------------------------------------------------------------------------------------------
# crop -> S x S cells (the core's cell policies, FORMATS section 1 geometry)
# --------------------------------------------------------------------------------------------------


def cell_of(i: int, n_pixels: int, n_cells: int) -> int:
    """The cell holding the centre of pixel i."""
    return (2 * i + 1) * n_cells // (2 * n_pixels)


def voters(n_pixels: int, S: int) -> list[list[int]]:
    """Per cell r, the pixels whose value decides it along one axis:
    n >= S: every pixel y with (2y+1)*S//(2n) == r;  n < S: the single pixel (2r+1)*n//(2S)."""
    if n_pixels >= S:
        return [[y for y in range(n_pixels) if cell_of(y, n_pixels, S) == r] for r in range(S)]
    return [[(2 * r + 1) * n_pixels // (2 * S)] for r in range(S)]


def pillow_nearest(crop_mask: np.ndarray, S: int) -> np.ndarray:
    img = Image.fromarray(np.asarray(crop_mask).astype(np.uint8))  # mode "L", values 0 / 1
    return np.asarray(img.resize((S, S), Image.NEAREST)).astype(bool)


def resample(crop_mask: np.ndarray, S: int, policy: str = "majority", threshold: float = 0.5) -> np.ndarray:
    """The (S, S) bool cells of a crop."""
    c = np.asarray(crop_mask).astype(bool)
    if policy == "nearest":
        return pillow_nearest(c, S)
    ch, cw = c.shape
    rv = voters(ch, S)
    cv = voters(cw, S)
    out = np.zeros((S, S), dtype=bool)
    for r in range(S):
        for col in range(S):
            px = c[np.ix_(rv[r], cv[col])].ravel()
            fg = int(np.count_nonzero(px))
            total = int(px.size)
            if policy == "majority":
                out[r, col] = fg / total >= threshold  # the fraction, as Python computes it (as the core)
            elif policy == "any":
                out[r, col] = fg > 0
            else:
                raise ValueError(policy)
    return out


# --------------------------------------------------------------------------------------------------
# cells -> runs -> bricks -> tokens
# --------------------------------------------------------------------------------------------------


def runs(values) -> list[tuple[bool, int]]:
    """Maximal runs (value, length) of a flat sequence."""
    out: list[tuple[bool, int]] = []
    for v in values:
        v = bool(v)
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


def split_run(value: bool, n: int, max_run: int) -> list[tuple[bool, int]]:
    """A run of n cells as bricks of max_run plus the remainder, in order (130, 63 -> 63, 63, 4)."""
    out = []
    while n > max_run:
        out.append((value, max_run))
        n -= max_run
    out.append((value, n))
    return out


def bricks(cells: np.ndarray, max_run: int = 63, row_wise: bool = False) -> list[tuple[bool, int]]:
    """Bricks of an (S, S) grid, in raster order (runs cross rows) or row-wise (runs restart at each row)."""
    cells = np.asarray(cells).astype(bool)
    if row_wise:
        seqs = [list(row) for row in cells]
    else:
        seqs = [[v for row in cells for v in row]]
    out = []
    for seq in seqs:
        for v, n in runs(seq):
            out.extend(split_run(v, n, max_run))
    return out


def token(value: bool, k: int) -> str:
    return f"<fg_{k}>" if value else f"<bg_{k}>"


def bricks_text(brick_list) -> str:
    return "".join(token(v, k) for v, k in brick_list)


def box_text(numbers, box_format: str) -> str:
    a, b, c, d = numbers
    if box_format == "qwen2vl":
        return f"<|box_start|>({a},{b}),({c},{d})<|box_end|>"
    return f"<box>[{a},{b},{c},{d}]</box>"


def block(label: str, numbers, brick_list, box_format: str = "norm1000") -> str:
    ro, rc, _, _, so, sc = TAGS[box_format]
    return f"{ro}{label}{rc}{box_text(numbers, box_format)}{so}{bricks_text(brick_list)}{sc}"


# --------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------


@dataclass
class Obj:
    label: str
    box: tuple  # pixel box of the crop (x1, y1, x2, y2), exclusive ends
    numbers: tuple  # what the text says (quantised, or pixels for the "pixel" preset)
    bricks: np.ndarray  # (S, S) bool
    mask: np.ndarray  # (H, W) bool


def predict(label, mask, image_size, resolution=64, policy="majority", threshold=0.5, box_format="norm1000") -> Obj:
    """What one object becomes: the crop box, the S x S cells, and the mask a decoder gives back."""
    m = to_dense(mask)
    box, numbers = crop_box(m, image_size, box_format)
    cells = resample(crop(m, box), resolution, policy, threshold)
    return Obj(label, box, numbers, cells, paste(expand(cells, box), box, image_size))


def encode(
    objects,
    image_size,
    resolution: int = 64,
    policy: str = "majority",
    threshold: float = 0.5,
    max_run: int = 63,
    row_wise: bool = False,
    box_format: str = "norm1000",
    skip_empty: bool = False,
) -> str:
    """The exact text encode_bsd must write."""
    out = []
    for label, mask in objects:
        m = to_dense(mask)
        if not m.any():
            if skip_empty:
                continue
            raise ValueError("empty mask")
        o = predict(label, m, image_size, resolution, policy, threshold, box_format)
        out.append(block(label, o.numbers, bricks(o.bricks, max_run, row_wise), box_format))
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# the decoder (well-formed text only: asserts on anything odd)
# --------------------------------------------------------------------------------------------------


def expand(cells: np.ndarray, box) -> np.ndarray:
    """(S, S) cells -> (ch, cw) pixels: pixel y takes cell (2y+1)*S//(2*ch), columns likewise."""
    cells = np.asarray(cells).astype(bool)
    S = cells.shape[0]
    x1, y1, x2, y2 = box
    ch, cw = y2 - y1, x2 - x1
    rows = [cell_of(y, ch, S) for y in range(ch)]
    cols = [cell_of(x, cw, S) for x in range(cw)]
    return cells[np.ix_(rows, cols)].reshape(ch, cw)


def paste(sub: np.ndarray, box, image_size) -> np.ndarray:
    H, W = image_size
    x1, y1, x2, y2 = box
    canvas = np.zeros((H, W), dtype=bool)
    canvas[y1:y2, x1:x2] = sub
    return canvas


def _block_regex(box_format: str) -> re.Pattern:
    ro, rc, bo, bc, so, sc = (re.escape(t) for t in TAGS[box_format])
    if box_format == "qwen2vl":
        nums = r"\((\d+),(\d+)\),\((\d+),(\d+)\)"
    else:
        nums = r"\[(\d+),(\d+),(\d+),(\d+)\]"
    return re.compile(f"{ro}(.*?){rc}{bo}{nums}{bc}{so}(.*?){sc}", re.DOTALL)


def parse_bricks(seg: str) -> list[tuple[bool, int]]:
    found = re.findall(r"<(fg|bg)_(\d+)>", seg)
    out = [(kind == "fg", int(k)) for kind, k in found]
    assert bricks_text(out) == seg, f"not only bricks: {seg!r}"
    return out


def expand_bricks(brick_list, S: int) -> np.ndarray:
    flat = []
    for v, k in brick_list:
        flat.extend([v] * k)
    assert len(flat) == S * S, (len(flat), S * S)
    return np.array(flat, dtype=bool).reshape(S, S)


def decode(text: str, image_size, resolution: int = 64, box_format: str = "norm1000") -> list[Obj]:
    """Decode well-formed text: every block, nothing between the blocks."""
    rx = _block_regex(box_format)
    objs = []
    pos = 0
    for m in rx.finditer(text):
        assert m.start() == pos, f"text between blocks at {pos}: {text[pos:m.start()]!r}"
        pos = m.end()
        label = m.group(1)
        numbers = tuple(int(m.group(i)) for i in range(2, 6))
        if box_format == "pixel":
            box = numbers
        else:
            box = dequantize_box(numbers, image_size)
        cells = expand_bricks(parse_bricks(m.group(6)), resolution)
        objs.append(Obj(label, box, numbers, cells, paste(expand(cells, box), box, image_size)))
    assert pos == len(text), f"trailing text: {text[pos:]!r}"
    return objs


def block_bricks(text: str) -> list[list[tuple[bool, int]]]:
    """The bricks of every <seg>...</seg> in a text (any preset)."""
    return [parse_bricks(seg) for seg in re.findall(r"<seg>(.*?)</seg>", text, re.DOTALL)]


# --------------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------------


def merge(masks_and_labels, image_size, labels=None) -> np.ndarray:
    """labels None: union (bool); else an int32 label map painted in order, id = labels.index(label)."""
    H, W = image_size
    if labels is None:
        out = np.zeros((H, W), dtype=bool)
        for _, mask in masks_and_labels:
            out |= mask
        return out
    out = np.zeros((H, W), dtype=np.int32)
    for label, mask in masks_and_labels:
        out[mask] = labels.index(label)
    return out


# --------------------------------------------------------------------------------------------------
# test data: one object's mask (never empty), seeded
# --------------------------------------------------------------------------------------------------

OBJECT_KINDS = ("pixel", "tiny", "rect", "blob", "border", "full", "noise", "disjoint", "ellipse", "line")


def make_object(rng: np.random.Generator, H: int, W: int, kind: str) -> np.ndarray:
    """A non-empty (H, W) bool mask of one of OBJECT_KINDS."""
    m = np.zeros((H, W), dtype=bool)

    def rect(max_h=H, max_w=W):
        h = int(rng.integers(1, max(1, max_h) + 1))
        w = int(rng.integers(1, max(1, max_w) + 1))
        y = int(rng.integers(0, H - h + 1))
        x = int(rng.integers(0, W - w + 1))
        return y, x, h, w

    if kind == "pixel":
        m[int(rng.integers(0, H)), int(rng.integers(0, W))] = True
    elif kind == "tiny":
        y, x, h, w = rect(min(H, 3), min(W, 3))
        m[y : y + h, x : x + w] = True
    elif kind == "rect":
        y, x, h, w = rect()
        m[y : y + h, x : x + w] = True
    elif kind == "blob":
        y, x, h, w = rect()
        p = float(rng.uniform(0.15, 0.9))
        m[y : y + h, x : x + w] = rng.random((h, w)) < p
    elif kind == "border":
        y, x, h, w = rect()
        side = int(rng.integers(0, 4))
        if side == 0:
            y = 0
        elif side == 1:
            y = H - h
        elif side == 2:
            x = 0
        else:
            x = W - w
        m[y : y + h, x : x + w] = rng.random((h, w)) < 0.8
        m[y if side != 1 else H - 1, x if side != 3 else W - 1] = True  # really touches that border
    elif kind == "full":
        m[:, :] = True
    elif kind == "noise":
        m = rng.random((H, W)) < float(rng.uniform(0.05, 0.95))
    elif kind == "disjoint":
        for _ in range(2):
            y, x, h, w = rect(min(H, 4), min(W, 4))
            m[y : y + h, x : x + w] = True
        m[0, int(rng.integers(0, W))] = True
        m[H - 1, int(rng.integers(0, W))] = True
    elif kind == "ellipse":
        y, x, h, w = rect()
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = (h - 1) / 2, (w - 1) / 2
        e = ((yy - cy) / max(h / 2, 0.5)) ** 2 + ((xx - cx) / max(w / 2, 0.5)) ** 2 <= 1.0
        m[y : y + h, x : x + w] = e
    elif kind == "line":
        if rng.integers(0, 2):
            m[int(rng.integers(0, H)), :] = True
        else:
            m[:, int(rng.integers(0, W))] = True
    else:
        raise ValueError(kind)
    if not m.any():
        m[int(rng.integers(0, H)), int(rng.integers(0, W))] = True
    return m
