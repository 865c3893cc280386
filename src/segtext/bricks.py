"""Box-wise semantic descriptors (B-SD, Text4Seg++): a box per object, its mask as bricks.

The contract
------------
Each object is one block, and blocks are concatenated with nothing between them::

    <ref>LABEL</ref><box>[x1,y1,x2,y2]</box><seg><bg_63><bg_12><fg_3>...</seg>

No objects is the empty text. Text around and between blocks is ignored by the decoder.

Box
    The tight box of the mask in pixel edges (``x2``, ``y2`` are the last column and row
    plus one), quantised to the 0..1000 scale of the image width and height with
    ``x1 = floor(1000*x1/W)``, ``y1 = floor(1000*y1/H)``, ``x2 = ceil(1000*x2/W)``,
    ``y2 = ceil(1000*y2/H)``, so the box always covers the mask. Decoding maps back with
    the inverse rule (``floor(q*W/1000)`` for the first corner, ``ceil`` for the second),
    which again covers the mask. Presets (``box_format``):

    ============  ======================================================================
    ``norm1000``  ``<ref>L</ref><box>[x1,y1,x2,y2]</box>`` on the 0..1000 scale (default)
    ``qwen2vl``   ``<|object_ref_start|>L<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``,
                  0..1000
    ``pixel``     ``<ref>L</ref><box>[x1,y1,x2,y2]</box>`` in pixel edges
    ============  ======================================================================

Bricks
    The crop of the mask inside the *decoded* box (so encoding and decoding see the same
    pixels) is resampled to ``S x S`` cells (``resolution``, 64 by default) with the cell
    policies of :mod:`segtext.grid` (``majority`` by default). Where the crop has at least
    ``S`` pixels along an axis a cell votes over the pixels whose centres it holds; where it
    has fewer, each cell takes the pixel that contains its centre, so a small object comes
    back exactly. The ``S*S`` cells are read in raster order and run-length coded; a run of
    ``k`` foreground cells is ``<fg_k>``, of background cells ``<bg_k>``, with
    ``1 <= k <= max_run`` (63); longer runs are split (130 -> 63, 63, 4). With
    ``row_wise=True`` runs restart at every row.

Decoding
    Bricks are expanded to ``S x S`` cells, the cells to the box's pixel size (each pixel
    takes the cell holding its centre) and pasted into an empty canvas. In ``repair`` mode
    the decoder never raises on any ``str`` and lists every fix it made (see
    :data:`segtext.REPAIR_KINDS`); in ``strict`` mode the first deviation raises
    :class:`segtext.DecodeError`.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from segtext import _kernels as K
from segtext._validate import (
    as_array,
    image_size_arg,
    label_map_arg,
    pillow_index,
    policy_code,
)
from segtext.coco import check_status, rle_runs, rle_source
from segtext.labels import LabelMatcher
from segtext.limits import MAX_BRICK_CELLS, MAX_RESOLUTION, MAX_TEXT_LENGTH
from segtext.repairs import DecodeError, Repair, RepairLog, bounded_log, with_repairs, without_surrogates

__all__ = [
    "BOX_FORMATS",
    "BsdObject",
    "BsdSpelling",
    "DecodedObjects",
    "box_from_mask",
    "bsd_spelling",
    "decode_bsd",
    "dequantize_box",
    "encode_bsd",
    "merge_objects",
    "quantize_box",
]

BOX_SCALE = 1000


@dataclass(frozen=True)
class _Spelling:
    ref_open: str
    ref_close: str
    box_open: str
    box_close: str
    scale: int | None  # None: pixel coordinates
    pairs: bool  # "(x1,y1),(x2,y2)" instead of "[x1,y1,x2,y2]"
    seg_open: str = "<seg>"
    seg_close: str = "</seg>"

    def box_text(self, box: tuple[int, int, int, int]) -> str:
        x1, y1, x2, y2 = box
        inner = f"({x1},{y1}),({x2},{y2})" if self.pairs else f"[{x1},{y1},{x2},{y2}]"
        return self.box_open + inner + self.box_close

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.ref_open, self.ref_close, self.box_open, self.box_close,
                self.seg_open, self.seg_close)


#: the box presets: how a block spells its label and box
BOX_FORMATS: dict[str, _Spelling] = {
    "norm1000": _Spelling("<ref>", "</ref>", "<box>", "</box>", BOX_SCALE, False),
    "qwen2vl": _Spelling("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                         "<|box_end|>", BOX_SCALE, True),
    "pixel": _Spelling("<ref>", "</ref>", "<box>", "</box>", None, False),
}

_BOX_EXACT = {
    False: re.compile(r"\[([0-9]+),([0-9]+),([0-9]+),([0-9]+)\]"),
    True: re.compile(r"\(([0-9]+),([0-9]+)\),\(([0-9]+),([0-9]+)\)"),
}
_INTS = re.compile(r"-?[0-9]+")
_HUGE = 10**9  # any number with more digits reads as this (it is out of range anyway)


def _int(digits: str) -> int:
    """A decimal from the text, with more than 9 digits read as +-10**9."""
    neg = digits.startswith("-")
    if len(digits) - neg > 9:
        return -_HUGE if neg else _HUGE
    return int(digits)


# --------------------------------------------------------------------------- boxes


def _box_arg(box: Any, name: str = "box") -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be four ints (x1, y1, x2, y2), got {box!r}") from None
    return x1, y1, x2, y2


def _scale_arg(scale: Any) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    return int(scale)


def quantize_box(box: Sequence[int], image_size: tuple[int, int],
                 scale: int = BOX_SCALE) -> tuple[int, int, int, int]:
    """Pixel-edge box to the ``0..scale`` grid, first corner floored and second ceiled.

    Args:
        box: ``(x1, y1, x2, y2)`` in pixel edges (``x2`` = last column + 1), inside the image.
        image_size: ``(H, W)``.
        scale: the normalised range (1000 for Text4Seg++ and Qwen2-VL).

    Raises:
        ValueError: a box outside the image or with ``x2 < x1`` / ``y2 < y1``.

    Example:
        >>> import segtext as st
        >>> st.quantize_box((1, 2, 3, 3), image_size=(3, 7))
        (142, 666, 429, 1000)
    """
    H, W = image_size_arg(image_size)
    _scale_arg(scale)
    x1, y1, x2, y2 = _box_arg(box)
    if not (0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H):
        raise ValueError(f"box {box!r} is not inside the image {(H, W)} with x1 <= x2, y1 <= y2")
    return _quantize((x1, y1, x2, y2), H, W, scale)


def _quantize(box: Sequence[int], H: int, W: int, scale: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (x1 * scale // W, y1 * scale // H, -(-x2 * scale // W), -(-y2 * scale // H))


def _dequantize(qbox: Sequence[int], H: int, W: int, scale: int) -> tuple[int, int, int, int]:
    qx1, qy1, qx2, qy2 = qbox
    return (min(max(qx1 * W // scale, 0), W), min(max(qy1 * H // scale, 0), H),
            min(max(-(-qx2 * W // scale), 0), W), min(max(-(-qy2 * H // scale), 0), H))


def dequantize_box(qbox: Sequence[int], image_size: tuple[int, int],
                   scale: int = BOX_SCALE) -> tuple[int, int, int, int]:
    """Box on the ``0..scale`` grid back to pixel edges, covering what it covered.

    ``x1 = floor(qx1*W/scale)``, ``x2 = ceil(qx2*W/scale)``, clipped to the image.

    Example:
        >>> import segtext as st
        >>> st.dequantize_box((142, 666, 429, 1000), image_size=(3, 7))
        (0, 1, 4, 3)
    """
    H, W = image_size_arg(image_size)
    _scale_arg(scale)
    return _dequantize(_box_arg(qbox, "qbox"), H, W, scale)


def _mask_source(mask: Any, image_size: tuple[int, int], where: str):
    """('rle', counts) or ('dense', uint8 array) of a binary mask of the image's size."""
    H, W = image_size
    if isinstance(mask, dict):
        counts, size = rle_runs(mask, where)
        if size != (H, W):
            raise ValueError(f"{where}: RLE size {list(size)} does not match image_size {(H, W)}")
        return "rle", counts
    m, binary = label_map_arg(mask, None)
    if m.shape != (H, W):
        raise ValueError(f"{where}: mask shape {m.shape} does not match image_size {(H, W)}")
    if not binary:
        raise ValueError(f"{where}: B-SD masks must be binary (bool or 0/1), got labels up to {int(m.max())}")
    return "dense", m


def _tight_box(kind: str, data: np.ndarray, H: int) -> tuple[int, int, int, int] | None:
    """The mask's tight box ``(x1, y1, x2, y2)``, or None for an empty mask."""
    transposed = kind == "dense" and _column_major(data)
    if kind == "rle":
        box = K.rle_bbox(data, H)
    elif transposed:  # e.g. pycocotools' masks: read along memory, swap the axes back
        box = K.mask_bbox(data.T)
    else:
        box = K.mask_bbox(data)
    # (first0, first1, second0, second1) over the axes of the array the kernel read, with
    # first0 = -1 for an empty mask (whichever axis that is)
    a0, a1, b0, b1 = (int(v) for v in box)
    if a0 < 0:
        return None
    return (a0, b0, a1, b1) if transposed else (b0, a0, b1, a1)


def _column_major(a: np.ndarray) -> bool:
    return a.flags.f_contiguous and not a.flags.c_contiguous


def box_from_mask(mask: Any) -> tuple[int, int, int, int]:
    """Tight box ``(x1, y1, x2, y2)`` of a binary mask in pixel edges (``x2`` = last column + 1).

    Args:
        mask: ``(H, W)`` binary array, or a COCO RLE dict (read from its runs).

    Raises:
        ValueError: an empty mask (it has no box), or a mask that is not binary.

    Example:
        >>> import numpy as np, segtext as st
        >>> m = np.zeros((4, 5), bool); m[1:3, 2] = True
        >>> st.box_from_mask(m)
        (2, 1, 3, 3)
    """
    if isinstance(mask, dict):
        counts, (H, W) = rle_runs(mask, "mask")
        kind, data = "rle", counts
    else:
        m = as_array(mask)
        if m.ndim != 2:
            raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
        H, W = m.shape
        kind, data = _mask_source(m, (H, W), "mask")
    box = _tight_box(kind, data, H)
    if box is None:
        raise ValueError("the mask is empty: it has no box")
    return box


# --------------------------------------------------------------------------- tokens


def _split_token(token: str, name: str) -> tuple[str, str]:
    if not isinstance(token, str) or token.count("{k}") != 1:
        raise ValueError(f"{name} must be a str with one '{{k}}' for the run length, got {token!r}")
    pre, post = token.split("{k}")
    if not pre or pre[-1].isdigit() or (post and post[0].isdigit()):
        raise ValueError(f"{name} {token!r} needs a non-empty prefix and no digits next to '{{k}}'")
    return pre, post


def _brick_spellings(fg_token: str, bg_token: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """``((bg prefix, fg prefix), (bg suffix, fg suffix))``: index 0 background, 1 foreground."""
    fpre, fpost = _split_token(fg_token, "fg_token")
    bpre, bpost = _split_token(bg_token, "bg_token")
    if fpre.startswith(bpre) or bpre.startswith(fpre):
        raise ValueError(f"fg_token {fg_token!r} and bg_token {bg_token!r} must start differently")
    return (bpre, fpre), (bpost, fpost)


@dataclass(frozen=True)
class _Config:
    """The checked B-SD parameters, with the byte tables the kernels read."""

    S: int
    max_run: int
    row_wise: bool
    spelling: _Spelling
    prefixes: tuple[str, str]  # of the bricks: background, foreground
    suffixes: tuple[str, str]
    pattern: re.Pattern  # a brick's prefix and digits, for the repairing parser
    tab: np.ndarray  # the spelling table of the kernels: tags, box separators, brick parts
    toff: np.ndarray
    plan: np.ndarray  # the parameters and the table in one array, for the fast decoder


#: the longest brick a configuration may allow: the cells of the largest brick grid
MAX_RUN = MAX_RESOLUTION * MAX_RESOLUTION


def _build_config(resolution: Any, max_run: Any, row_wise: Any, box_format: Any, fg_token: Any,
                  bg_token: Any) -> _Config:
    for name, v, limit, limit_name in (
            ("resolution", resolution, MAX_RESOLUTION, "segtext.limits.MAX_RESOLUTION"),
            ("max_run", max_run, MAX_RUN, "segtext.limits.MAX_RESOLUTION ** 2, the cells of the "
                                          "largest brick grid")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
        if v > limit:
            raise ValueError(f"{name} must be at most {limit} ({limit_name}), got {v}")
    if not isinstance(box_format, str) or box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {tuple(BOX_FORMATS)}, got {box_format!r}")
    sp = BOX_FORMATS[box_format]
    pres, posts = _brick_spellings(fg_token, bg_token)
    pattern = re.compile(f"({re.escape(pres[0])}|{re.escape(pres[1])})([0-9]+)")
    seps = ("(", ",", "),(", ",", ")") if sp.pairs else ("[", ",", ",", ",", "]")
    parts = [t.encode("utf-8") for t in (*sp.tags, *seps, *pres, *posts)]
    toff = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(e) for e in parts], out=toff[1:])
    tab = np.frombuffer(b"".join(parts), np.uint8)
    S = int(resolution)
    bpre, fpre = (e.encode("utf-8") for e in pres)
    split = next(i for i, (a, b) in enumerate(zip(bpre, fpre)) if a != b)  # they start differently
    plan = np.zeros(K.BSD_PLAN_TAB + len(tab), np.int64)
    plan[K.BSD_PLAN_S] = S
    plan[K.BSD_PLAN_MAX_RUN] = int(max_run)
    plan[K.BSD_PLAN_ROW_WISE] = bool(row_wise)
    plan[K.BSD_PLAN_SCALE] = sp.scale or 0
    plan[K.BSD_PLAN_MAX_OBJECTS] = MAX_BRICK_CELLS // (S * S)
    plan[K.BSD_PLAN_SPLIT] = split
    plan[K.BSD_PLAN_TOFF:K.BSD_PLAN_TAB] = toff
    plan[K.BSD_PLAN_TAB:] = tab
    return _Config(S, int(max_run), bool(row_wise), sp, pres, posts, pattern, tab, toff, plan)


_cached_config = lru_cache(maxsize=64, typed=True)(_build_config)
_PLAIN_CONFIGS: dict[tuple, _Config] = {}


def _config(resolution: Any, max_run: Any, row_wise: Any, box_format: Any, fg_token: Any,
            bg_token: Any) -> _Config:
    """Checked parameters, cached (a decoder is called once per answer with the same ones)."""
    args = (resolution, max_run, row_wise, box_format, fg_token, bg_token)
    if type(resolution) is int and type(max_run) is int and type(row_wise) is bool:
        # the usual call: one dict look-up (exact types, so True and 1 never share a key)
        try:
            cfg = _PLAIN_CONFIGS.get(args)
        except TypeError:  # an unhashable argument: check it uncached, for the clear error
            return _build_config(*args)
        if cfg is None:
            cfg = _cached_config(*args)  # raises for bad parameters (and caches nothing then)
            if len(_PLAIN_CONFIGS) < 64:
                _PLAIN_CONFIGS[args] = cfg
        return cfg
    try:
        hash(args)
    except TypeError:  # an unhashable argument: check it uncached, for the clear error
        return _build_config(*args)
    return _cached_config(*args)


def _fast_bsd(raw: bytes, cfg: _Config, H: int, W: int,
              starts: list[int] | None = None) -> list[BsdObject] | None:
    """Objects of a text whose blocks are exactly as :func:`encode_bsd` writes them, else None;
    the byte offset of each label is appended to ``starts`` when it is given."""
    ok, meta, cells = K.parse_bsd(raw, cfg.tab, cfg.toff, cfg.S, cfg.max_run,
                                  cfg.row_wise, H, W, cfg.spelling.scale or 0, MAX_BRICK_CELLS // (cfg.S * cfg.S))
    if not ok:
        return None
    size = (H, W)
    rows = meta.tolist()
    if starts is not None:
        starts.extend(r[0] for r in rows)
    return [BsdObject(raw[a:b].decode("utf-8"), (x1, y1, x2, y2), cells[i], size)
            for i, (a, b, x1, y1, x2, y2) in enumerate(rows)]


def _max_objects(cfg: _Config) -> int:
    """How many objects of ``S x S`` cells one text may decode to (``limits.MAX_BRICK_CELLS``)."""
    return MAX_BRICK_CELLS // (cfg.S * cfg.S)


@dataclass(frozen=True)
class BsdSpelling:
    """How a B-SD configuration spells its texts, for code that writes or constrains them
    (token sets, grammars, logits processors): see :func:`bsd_spelling`.

    Attributes:
        resolution, max_run, row_wise: as :func:`encode_bsd` takes them (checked).
        box: the box preset (an entry of :data:`BOX_FORMATS`: ``ref_open``, ``ref_close``,
            ``box_open``, ``box_close``, ``seg_open``, ``seg_close``, ``scale`` (``None`` for
            pixels), ``pairs`` (``(x1,y1),(x2,y2)`` instead of ``[x1,y1,x2,y2]``)).
        prefixes, suffixes: ``(background, foreground)`` brick spellings around the length.

    Example:
        >>> import segtext as st
        >>> sp = st.bsd_spelling(max_run=15, fg_token="[F{k}]", bg_token="[B{k}]")
        >>> sp.prefixes, sp.suffixes, sp.box.scale
        (('[B', '[F'), (']', ']'), 1000)
    """

    resolution: int
    max_run: int
    row_wise: bool
    box: _Spelling
    prefixes: tuple[str, str]
    suffixes: tuple[str, str]

    def brick(self, foreground: bool, k: int) -> str:
        """The brick of ``k`` cells."""
        kind = int(bool(foreground))
        return f"{self.prefixes[kind]}{k}{self.suffixes[kind]}"

    def check_label(self, label: Any, where: str = "label") -> str:
        """``label`` if a block can hold it (a non-empty str without the preset's tags), else a
        ``TypeError`` / ``ValueError`` naming ``where``."""
        return _check_bsd_label(label, self.box, where)


def bsd_spelling(resolution: int = 64, max_run: int = 63, row_wise: bool = False, box_format: str = "norm1000",
                 fg_token: str = "<fg_{k}>", bg_token: str = "<bg_{k}>") -> BsdSpelling:
    """The checked spelling of a B-SD configuration (the arguments of :func:`encode_bsd`).

    Raises:
        ValueError: the same bad arguments :func:`encode_bsd` refuses.

    Example:
        >>> import segtext as st
        >>> sp = st.bsd_spelling(resolution=32, box_format="qwen2vl")
        >>> sp.box.ref_open, sp.brick(True, 12), sp.brick(False, 3)
        ('<|object_ref_start|>', '<fg_12>', '<bg_3>')
        >>> sp.check_label("a <|box_start|> b")
        Traceback (most recent call last):
        ...
        ValueError: label: label 'a <|box_start|> b' contains the tag '<|box_start|>'
    """
    cfg = _config(resolution, max_run, row_wise, box_format, fg_token, bg_token)
    return BsdSpelling(cfg.S, cfg.max_run, cfg.row_wise, cfg.spelling, cfg.prefixes, cfg.suffixes)


def _check_bsd_label(label: Any, spelling: _Spelling, where: str) -> str:
    if not isinstance(label, str):
        raise TypeError(f"{where}: the label must be str, got {type(label).__name__}")
    if not label:
        raise ValueError(f"{where}: the label is empty")
    for tag in spelling.tags:
        if tag in label:
            raise ValueError(f"{where}: label {label!r} contains the tag {tag!r}")
    return label


# --------------------------------------------------------------------------- encoding


def encode_bsd(
    objects: Sequence[tuple[str, Any]],
    image_size: tuple[int, int],
    resolution: int = 64,
    policy: str = "majority",
    threshold: float = 0.5,
    max_run: int = 63,
    row_wise: bool = False,
    box_format: str = "norm1000",
    skip_empty: bool = False,
    fg_token: str = "<fg_{k}>",
    bg_token: str = "<bg_{k}>",
) -> str:
    """Write objects as B-SD blocks: ``<ref>label</ref><box>[...]</box><seg>bricks</seg>``.

    Args:
        objects: ``(label, mask)`` pairs, written in order; a mask is an ``(H, W)`` binary
            array or a COCO RLE dict of that size. Several masks under one label stay
            separate blocks.
        image_size: ``(H, W)``.
        resolution: bricks per side ``S`` (64 in Text4Seg++; 32..80 in its ablation), at most
            :data:`segtext.limits.MAX_RESOLUTION`.
        policy: cell policy inside the box: ``"majority"``, ``"nearest"`` or ``"any"``.
        threshold: foreground fraction for ``majority``.
        max_run: the longest brick (63), at most ``MAX_RESOLUTION ** 2``.
        row_wise: restart runs at every row instead of running on in raster order.
        box_format: ``"norm1000"``, ``"qwen2vl"`` or ``"pixel"`` (see the module docstring).
        skip_empty: leave out empty masks instead of raising.
        fg_token, bg_token: brick spellings, with ``{k}`` for the run length.

    Returns:
        The blocks, concatenated (``""`` for no objects).

    Raises:
        ValueError: an empty mask (unless ``skip_empty``), a mask of the wrong size or not
            binary, a label that is empty or holds a tag, bad parameters (``resolution`` or
            ``max_run`` out of range included).
        TypeError: objects that are not ``(label, mask)`` pairs.

    Example:
        >>> import numpy as np, segtext as st
        >>> m = np.zeros((4, 4), bool); m[:2, :2] = True
        >>> st.encode_bsd([("cat", m)], image_size=(4, 4), resolution=2)
        '<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>'
    """
    H, W = image_size_arg(image_size)
    cfg = _config(resolution, max_run, row_wise, box_format, fg_token, bg_token)
    spelling, S, max_run, row_wise = cfg.spelling, cfg.S, cfg.max_run, cfg.row_wise
    code = policy_code(policy, threshold)
    if isinstance(objects, (str, bytes, dict)) or not isinstance(objects, Sequence):
        raise TypeError(f"objects must be a sequence of (label, mask) pairs, got {type(objects).__name__}")
    parts = []
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, (tuple, list)) or len(obj) != 2:
            raise TypeError(f"{where} must be a (label, mask) pair, got {type(obj).__name__}")
        label = _check_bsd_label(obj[0], spelling, where)
        if isinstance(obj[1], dict) and code != 0:  # the hot path: one compiled call
            block = _rle_block(obj[1], label, H, W, code, float(threshold), cfg, where)
            if block is None:
                if skip_empty:
                    continue
                raise ValueError(f"{where}: the mask of {label!r} is empty, so it has no box "
                                 "(pass skip_empty=True to leave empty masks out)")
            parts.append(block)
            continue
        kind, data = _mask_source(obj[1], (H, W), where)
        tight = _tight_box(kind, data, H)
        if tight is None:
            if skip_empty:
                continue
            raise ValueError(f"{where}: the mask of {label!r} is empty, so it has no box "
                             "(pass skip_empty=True to leave empty masks out)")
        written, (x0, y0, x1, y1) = _written_and_crop(tight, H, W, spelling.scale)
        py = pillow_index(y1 - y0, S) if code == 0 else _EMPTY
        px = pillow_index(x1 - x0, S) if code == 0 else _EMPTY
        if kind == "rle":
            grid = K.rle_crop_grid(data, H, y0, y1, x0, x1, S, code, float(threshold), py, px)
        elif _column_major(data):  # the cell policies treat both axes alike: work transposed
            grid = K.crop_grid(data.T, x0, x1, y0, y1, S, code, float(threshold), px, py).T.copy()
        else:
            grid = K.crop_grid(data, y0, y1, x0, x1, S, code, float(threshold), py, px)
        bricks, _ = K.encode_bricks(grid, max_run, row_wise, cfg.tab, cfg.toff)
        parts.append(spelling.ref_open + label + spelling.ref_close + spelling.box_text(written)
                     + spelling.seg_open + bricks.tobytes().decode("utf-8") + spelling.seg_close)
    text = "".join(parts)
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"the text would be {len(text)} characters, more than the {MAX_TEXT_LENGTH} "
                         "decode_bsd reads (segtext.limits.MAX_TEXT_LENGTH); use a lower resolution "
                         "or a longer max_run")
    return text


_EMPTY = np.zeros(0, np.int64)


def _written_and_crop(tight: tuple[int, int, int, int], H: int, W: int, scale: int | None
                      ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The box as written (pixels, or the ``0..scale`` grid) and the decoded box it stands for,
    which is the crop the bricks are read from. The crop kernels do not check their bounds,
    so the crop is checked here: it must be a box with area inside the image."""
    if scale is None:
        written = crop = tight
    else:
        written = _quantize(tight, H, W, scale)
        crop = _dequantize(written, H, W, scale)
    x0, y0, x1, y1 = crop
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise RuntimeError(f"segtext bug: crop {crop} of the tight box {tight} is not a box with "
                           f"area inside the image {(H, W)}")
    return written, crop


def _rle_block(rle: dict, label: str, H: int, W: int, code: int, threshold: float, cfg: _Config,
               where: str) -> str | None:
    """The block of one COCO RLE object (majority or any), or None for an empty mask."""
    data, compressed, size = rle_source(rle, where)
    if size != (H, W):
        raise ValueError(f"{where}: RLE size {list(size)} does not match image_size {(H, W)}")
    sp = cfg.spelling
    bricks, status, box = K.rle_bsd_object(data, compressed, H, W, cfg.S, code, threshold, sp.scale or 0,
                                           cfg.max_run, cfg.row_wise, cfg.tab, cfg.toff)
    if status == K.EMPTY_MASK:
        return None
    check_status(status, where, H, W)
    return (sp.ref_open + label + sp.ref_close + sp.box_text(tuple(box.tolist())) + sp.seg_open
            + bricks.tobytes().decode("utf-8") + sp.seg_close)


# --------------------------------------------------------------------------- decoding


@dataclass
class BsdObject:
    """One decoded object.

    Attributes:
        label: the text between the ref tags.
        box: ``(x1, y1, x2, y2)`` in pixel edges (``x2`` = last column + 1).
        bricks: ``(S, S)`` bool grid of the mask inside the box.
        image_size: ``(H, W)`` of the image.
        mask: ``(H, W)`` bool mask in the image, built from the bricks when first read.

    Example:
        >>> import numpy as np, segtext as st
        >>> obj = st.BsdObject("cat", box=(1, 0, 3, 1), bricks=np.array([[True, False]]), image_size=(1, 4))
        >>> obj.mask.astype(int).tolist()
        [[0, 1, 0, 0]]
    """

    label: str
    box: tuple[int, int, int, int]
    bricks: np.ndarray
    image_size: tuple[int, int]

    @property
    def mask(self) -> np.ndarray:
        cached = self.__dict__.get("_mask")
        if cached is None:
            cached = np.zeros(self.image_size, np.uint8)
            _paste(self, cached)
            cached = self.__dict__["_mask"] = cached.view(bool)
        return cached


_BOOL = np.dtype(bool)


def _own(obj: BsdObject, H: int, W: int) -> tuple | None:
    """``(cells, x0, y0, x1, y1)`` of an object as the decoder makes them (a tuple box of ints
    inside ``H x W``, a C-contiguous 2-D bool cell array), ready for the kernels; None for any
    other."""
    box = obj.box
    cells = obj.bricks
    if type(box) is tuple and len(box) == 4 and type(cells) is np.ndarray and cells.dtype == _BOOL \
            and cells.ndim == 2 and cells.size and cells.flags.c_contiguous:
        x0, y0, x1, y1 = box
        if type(x0) is int and type(y0) is int and type(x1) is int and type(y1) is int \
                and 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H:
            return cells.view(np.uint8), x0, y0, x1, y1
    return None


def _paste(obj: BsdObject, canvas: np.ndarray) -> None:
    """OR the object's cells, enlarged to its box, into ``canvas`` (C-ordered uint8)."""
    H, W = canvas.shape
    own = _own(obj, H, W)
    if own is not None:
        cells, x0, y0, x1, y1 = own
        K.paste(cells, canvas, y0, y1, x0, x1)
        return
    box = obj.box
    cells = obj.bricks
    # not the decoder's own kind of object: check it, with a clear message
    try:
        x0, y0, x1, y1 = (operator.index(v) for v in box)
    except (TypeError, ValueError):
        raise TypeError(f"object {obj.label!r}: box must be four ints (x1, y1, x2, y2), got {box!r}") from None
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"object {obj.label!r}: box {box} is not a box with area inside the image {(H, W)}")
    cells = np.asarray(cells)
    if cells.ndim != 2 or not cells.size or cells.dtype.kind not in "biu":
        raise ValueError(f"object {obj.label!r}: bricks must be a 2-D binary array with cells, "
                         f"got shape {cells.shape}, dtype {cells.dtype}")
    K.paste(np.ascontiguousarray(cells != 0).view(np.uint8), canvas, y0, y1, x0, x1)


@dataclass
class DecodedObjects:
    """What :func:`decode_bsd` returns: the objects, in order, and every repair made.

    Example:
        >>> import segtext as st
        >>> res = st.decode_bsd("<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>",
        ...                     image_size=(4, 4), resolution=2)
        >>> [(o.label, o.box) for o in res.objects], res.ok
        ([('cat', (0, 0, 2, 2))], True)
        >>> res.mask().astype(int).tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """

    objects: list[BsdObject]
    image_size: tuple[int, int]
    repairs: list[Repair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the text needed no repair."""
        return not self.repairs

    def mask(self) -> np.ndarray:
        """Union of all object masks, ``(H, W)`` bool (all False without objects), a new
        array each call; each object's bricks are pasted straight into one canvas.

        For a result of :func:`decode_bsd` in repair mode whose :attr:`objects` have not
        been read or replaced yet, a clean text (blocks exactly as :func:`encode_bsd` writes
        them) is read and painted into the canvas in one compiled call, without building the
        objects or their ``S x S`` grids; any other text is read by the repairing parser and
        its objects pasted. The result is the same either way."""
        d = self.__dict__
        deferred = d.get("_text")
        if deferred is not None and "objects" not in d and self.image_size is deferred[3] \
                and (deferred[5] is None or deferred[5].unknown != "background"):
            text, raw, cfg, size, log, _ = deferred
            canvas = np.zeros(size, bool)
            found = (_PAINT or _painter(cfg.plan))(raw, cfg.plan, canvas)
            if found > 0:  # clean blocks, painted
                return canvas
            if found < 0:  # something off part-way: start again from the objects
                canvas = np.zeros(size, bool)
        else:
            canvas = np.zeros(self.image_size, bool)
        for obj in self.objects:
            _paste(obj, canvas.view(np.uint8))
        return canvas


# K.bsd_mask compiled for the very types .mask() passes it (bytes, a plan array of
# _build_config, a new C-ordered bool canvas), so that a call skips the dispatcher's type
# resolution (~0.15 us); made on first use, not at import
_PAINT = None


def _painter(plan: np.ndarray):
    global _PAINT
    _PAINT = K.compiled_for(K.bsd_mask, b"", plan, np.zeros((1, 1), bool))
    return _PAINT


class _Deferred:
    """``DecodedObjects.objects`` and ``.repairs`` of a text :func:`decode_bsd` has not read
    yet (repair mode), read when either is first asked for.

    A non-data descriptor: a result made the ordinary way (or read once, or whose attribute
    was assigned) holds the attribute in its ``__dict__``, which Python reads before this."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, res: DecodedObjects | None, owner: type | None = None) -> Any:
        if res is None:
            return self
        d = res.__dict__
        deferred = d.get("_text")
        if deferred is None:
            raise AttributeError(f"'DecodedObjects' object has no attribute {self.name!r}")
        text, raw, cfg, (H, W), log, vocab = deferred
        objects, repairs = _decode(text, raw, cfg, H, W, log, False, vocab)
        d.setdefault("objects", objects)  # (keeping either if it was assigned meanwhile)
        d.setdefault("repairs", repairs)
        return d[self.name]


# after the dataclass is made, so that its fields and __init__ stay as they are
for _name in ("objects", "repairs"):
    _deferred = _Deferred()
    _deferred.__set_name__(DecodedObjects, _name)
    setattr(DecodedObjects, _name, _deferred)
del _name, _deferred

_new_result = object.__new__  # a DecodedObjects of a text read later: see decode_bsd


def merge_objects(objects: Sequence[BsdObject], image_size: tuple[int, int],
                  labels: Sequence[str] | None = None) -> np.ndarray:
    """Merge decoded objects into one binary mask, or one label map.

    Args:
        objects: objects with ``.label`` and an ``(H, W)`` ``.mask``.
        image_size: ``(H, W)`` (needed when there are no objects).
        labels: ``None`` for the union as a bool mask; otherwise the vocabulary, and the
            result is an ``int32`` label map with ``labels.index(label)`` painted object by
            object in order (later objects win where they overlap), 0 elsewhere.

    Raises:
        ValueError: a mask of another size, or (with ``labels``) a label not in the list.

    Example:
        >>> import numpy as np, segtext as st
        >>> a = st.BsdObject("cat", (0, 0, 1, 1), np.ones((1, 1), bool), (1, 2))
        >>> b = st.BsdObject("dog", (1, 0, 2, 1), np.ones((1, 1), bool), (1, 2))
        >>> st.merge_objects([a, b], (1, 2)).tolist(), st.merge_objects([a, b], (1, 2), ["others", "cat", "dog"]).tolist()
        ([[True, True]], [[1, 2]])
    """
    H, W = image_size_arg(image_size)
    index = None if labels is None else {s: i for i, s in reversed(list(enumerate(labels)))}
    out = np.zeros((H, W), bool if labels is None else np.int32)
    scratch = None
    for i, obj in enumerate(objects):
        if type(obj) is BsdObject and "_mask" not in obj.__dict__ and _size_is(obj.image_size, H, W):
            # paste the bricks straight in: no (H, W) mask built and cached per object (a text
            # of many small blocks would otherwise hold one image per block)
            if index is None:
                _paste(obj, out.view(np.uint8))
                continue
            if scratch is None:
                scratch = np.zeros((H, W), np.uint8)
            _paste(obj, scratch)
            if obj.label not in index:
                raise ValueError(f"objects[{i}] has label {obj.label!r}, which is not in labels")
            x0, y0, x1, y1 = (operator.index(v) for v in obj.box)
            window = scratch[y0:y1, x0:x1]
            out[y0:y1, x0:x1][window.view(bool)] = index[obj.label]
            window[:] = 0
            continue
        m = np.asarray(obj.mask, bool)
        if m.shape != (H, W):
            raise ValueError(f"objects[{i}].mask has shape {m.shape}, expected {(H, W)}")
        if index is None:
            out |= m
        else:
            if obj.label not in index:
                raise ValueError(f"objects[{i}] has label {obj.label!r}, which is not in labels")
            out[m] = index[obj.label]
    return out


def _size_is(size: Any, H: int, W: int) -> bool:
    return type(size) is tuple and len(size) == 2 and size[0] == H and size[1] == W


class _Tags:
    """Where each tag of a spelling starts in a text, found once, so that the repairing
    parser looks a tag up in ``O(log n)``: scanning on from each position instead would read
    a text of many unclosed tags once per tag (quadratic)."""

    def __init__(self, text: str, spelling: _Spelling) -> None:
        self.n = len(text)
        self.starts: dict[str, list[int]] = {}
        for tag in spelling.tags:
            if tag not in self.starts:
                found = self.starts[tag] = []
                i = text.find(tag)
                while i >= 0:  # overlapping starts too, as str.find sees them
                    found.append(i)
                    i = text.find(tag, i + 1)

    def find(self, tag: str, start: int, stop: int | None = None) -> int:
        """``text.find(tag, start, stop)``: the first start ``>= start`` of a whole ``tag``
        ending by ``stop`` (the end of the text by default), else -1."""
        starts = self.starts[tag]
        i = bisect_left(starts, start)
        if i < len(starts):
            at = starts[i]
            if at + len(tag) <= (self.n if stop is None else stop):
                return at
        return -1

    def all(self, tag: str, start: int, stop: int) -> list[int]:
        """Every start of a whole ``tag`` in ``[start, stop)``."""
        starts = self.starts[tag]
        i = bisect_left(starts, start)
        j = bisect_left(starts, stop - len(tag) + 1, i)
        return starts[i:j]


def _find(tags: _Tags, tag: str, start: int, stop: int) -> int:
    i = tags.find(tag, start, stop)
    return stop if i < 0 else i


def _parse_box(inner: str, offset: int, spelling: _Spelling, H: int, W: int,
               log: RepairLog) -> tuple[int, int, int, int] | None:
    m = _BOX_EXACT[spelling.pairs].fullmatch(inner)
    if m:
        q = [_int(v) for v in m.groups()]
    else:
        nums = _INTS.findall(inner)
        if len(nums) < 4:
            log.add("box_malformed", offset, f"box {inner!r} has fewer than four numbers; object dropped",
                    expected="four integers", found=repr(inner))
            return None
        q = [_int(v) for v in nums[:4]]
        log.add("box_malformed", offset, f"box {inner!r} read as {q}",
                expected="(x1,y1),(x2,y2)" if spelling.pairs else "[x1,y1,x2,y2]", found=repr(inner))
    x1, y1, x2, y2 = q
    if x2 < x1 or y2 < y1:
        log.add("box_swapped", offset, f"box {q} has a corner before the other; swapped",
                expected="x1 <= x2 and y1 <= y2", found=str(q))
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    hi_x, hi_y = (W, H) if spelling.scale is None else (spelling.scale, spelling.scale)
    clipped = (min(max(x1, 0), hi_x), min(max(y1, 0), hi_y), min(max(x2, 0), hi_x), min(max(y2, 0), hi_y))
    if clipped != (x1, y1, x2, y2):
        log.add("box_out_of_range", offset, f"box {[x1, y1, x2, y2]} clipped to {list(clipped)}",
                expected=f"0..{hi_x} and 0..{hi_y}", found=str([x1, y1, x2, y2]))
    box = clipped if spelling.scale is None else _dequantize(clipped, H, W, spelling.scale)
    if box[2] <= box[0] or box[3] <= box[1]:
        log.add("box_empty", offset, f"box {list(clipped)} covers no pixel; object dropped",
                expected="a box with area", found=str(list(clipped)))
        return None
    return box


def _parse_bricks(body: str, offset: int, cfg: _Config, log: RepairLog) -> np.ndarray:
    S, max_run, row_wise = cfg.S, cfg.max_run, cfg.row_wise
    pattern, pres, posts = cfg.pattern, cfg.prefixes, cfg.suffixes
    ok, grid = K.parse_bricks(body.encode("utf-8"), cfg.tab, cfg.toff, S,
                              max_run, row_wise)
    if ok:
        return grid
    total = S * S
    kinds: list[int] = []
    lengths: list[int] = []
    filled = 0
    pos = 0
    for m in pattern.finditer(body):
        kind = 1 if m.group(1) == pres[1] else 0
        end = m.end()
        closed = body.startswith(posts[kind], end)
        if m.start() > pos:
            junk = body[pos:min(m.start(), pos + 20)]
            log.add("unknown_token", offset + pos, f"{junk!r} is not a brick; skipped",
                    expected="a brick", found=repr(junk))
        if not closed:
            log.add("unknown_token", offset + end, "a brick without its closing text; read as a brick",
                    expected=repr(posts[kind]), found=repr(body[end:end + 5]))
        pos = end + (len(posts[kind]) if closed else 0)
        digits = m.group(2)
        k = _int(digits)
        if k == 0:
            log.add("bad_brick", offset + m.start(), "a brick of length 0; skipped",
                    expected=f"1..{max_run}", found="0")
            continue
        if k > max_run or digits[0] == "0":
            log.add("bad_brick", offset + m.start(), f"brick length {digits} read as {min(k, total)}",
                    expected=f"1..{max_run}", found=digits)
        elif row_wise and filled // S != (filled + k - 1) // S and filled < total:
            log.add("bad_brick", offset + m.start(), "a brick that runs over a row end",
                    expected="runs that stop at each row end", found=f"{k} from cell {filled}")
        if filled < total:  # the cells past S*S are cut off: keep no more than S*S
            kinds.append(kind)
            lengths.append(min(k, total - filled))
        filled += min(k, total + 1)
    if pos < len(body):
        junk = body[pos:pos + 20]
        log.add("unknown_token", offset + pos, f"{junk!r} is not a brick; skipped",
                expected="a brick", found=repr(junk))
    cells = np.repeat(np.array(kinds, np.uint8), np.array(lengths, np.int64))[:total]
    if filled > total:
        log.add("bricks_too_many", offset + len(body), f"bricks cover {filled} cells, {total} expected; truncated",
                expected=f"{total} cells", found=str(filled))
    elif filled < total:
        log.add("bricks_too_few", offset + len(body), f"bricks cover {filled} cells, {total} expected; "
                "padded with background", expected=f"{total} cells", found=str(filled))
        cells = np.concatenate([cells, np.zeros(total - filled, np.uint8)])
    return cells.reshape(S, S)



#: what :func:`decode_bsd` does with a label outside ``labels``
BSD_UNKNOWN_POLICIES = ("foreground", "background", "nearest", "error")


class _Vocabulary:
    """The labels one B-SD text is read with: each written label resolved to one of them.

    :class:`~segtext.labels.LabelMatcher`'s rules (an exact label is itself; one in another case
    or with punctuation or spaces around it is the known label, with a ``label_case`` repair),
    then the policy for any other (``foreground``: kept as written, ``background``: the object
    is dropped, ``nearest``: the closest label by edit distance, each with an ``unknown_label``
    repair; ``error``: a :class:`DecodeError` in either mode)."""

    def __init__(self, labels: tuple[str, ...], unknown: str) -> None:
        self.labels = labels
        self.match = LabelMatcher(labels)
        self.unknown = unknown

    def resolve(self, label: str, offset: int, log: RepairLog) -> str | None:
        """The label an object written with ``label`` at ``offset`` stands for (None: drop it)."""
        if not label:  # a block without a ref, already repaired
            return label
        v = self.match.find(label, offset, log)
        if v is not None:
            return self.labels[v]
        if self.unknown == "error":
            self.match.refuse(label, offset, log)
        if self.unknown == "foreground":
            log.add("unknown_label", offset, f"unknown label {label!r} kept as written",
                    expected="a label from the labels list", found=repr(label))
            return label
        if self.unknown == "background":
            log.add("unknown_label", offset, f"unknown label {label!r}: the object is dropped",
                    expected="a label from the labels list", found=repr(label))
            return None
        known = self.labels[self.match.nearest(label)]
        log.add("unknown_label", offset, f"unknown label {label!r} read as {known!r}",
                expected="a label from the labels list", found=repr(label))
        return known


def _vocabulary_arg(labels: Any, unknown: Any, spelling: _Spelling) -> _Vocabulary | None:
    if unknown not in BSD_UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {', '.join(map(repr, BSD_UNKNOWN_POLICIES))}, got {unknown!r}")
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of str or None, got {type(labels).__name__}")
    if not labels:
        raise ValueError("labels is empty; give at least one label, or None to keep labels as written")
    checked = tuple(_check_bsd_label(s, spelling, f"labels[{i}]") for i, s in enumerate(labels))
    return _Vocabulary(checked, unknown)


def decode_bsd(
    text: str,
    image_size: tuple[int, int],
    resolution: int = 64,
    mode: str = "repair",
    max_run: int = 63,
    row_wise: bool = False,
    box_format: str = "norm1000",
    fg_token: str = "<fg_{k}>",
    bg_token: str = "<bg_{k}>",
    labels: Sequence[str] | None = None,
    unknown: str = "foreground",
) -> DecodedObjects:
    """Read B-SD blocks back into objects with boxes and masks.

    Args:
        text: a model's answer; text around the blocks is ignored. At most
            :data:`segtext.limits.MAX_TEXT_LENGTH` characters are read: a longer text is read
            up to the limit, with a ``text_too_long`` repair (the first one listed).
        image_size: ``(H, W)`` of the image the boxes refer to.
        resolution, max_run, row_wise, box_format, fg_token, bg_token: as :func:`encode_bsd`.
        mode: ``"repair"`` (never raises on any ``str``; every fix is listed) or
            ``"strict"`` (the first deviation raises :class:`segtext.DecodeError`).
        labels: ``None`` (the default) keeps every label as written (a referring phrase is
            free text); a list is the vocabulary, and each written label is resolved to it: a
            label in another case or with punctuation or spaces around it (``"Dog."``,
            ``" dog"``) is the known label, with a ``label_case`` repair; any other label
            follows ``unknown``, with an ``unknown_label`` repair. A label cut off by the end
            of the text never makes an object: its block has no box.
        unknown: a label outside ``labels``: ``"foreground"`` (kept as written), ``"background"``
            (the object is dropped), ``"nearest"`` (the closest label by edit distance) or
            ``"error"`` (raises :class:`segtext.DecodeError` in either mode).

    Returns:
        :class:`DecodedObjects`; no objects for a text without blocks, and at most
        ``MAX_BRICK_CELLS // S**2`` of them (16,384 at ``S = 64``: the blocks past that are
        dropped with an ``objects_too_many`` repair). In repair mode the text is read when the
        result is first asked for its ``objects`` or ``repairs``; asked first for its
        ``mask()``, a clean text is painted straight into the canvas in one compiled call
        (the results are the same either way).

    Raises:
        DecodeError: in strict mode, with the kind, line and column of the deviation.
        TypeError / ValueError: ``text`` not a str, bad parameters (``resolution`` above
            :data:`segtext.limits.MAX_RESOLUTION`, ``max_run`` above its square included).

    Example:
        >>> import segtext as st
        >>> res = st.decode_bsd("<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_3>", (4, 4), resolution=2)
        >>> [r.kind for r in res.repairs], res.objects[0].bricks.astype(int).tolist()
        (['missing_seg_close', 'bricks_too_few'], [[1, 1], [1, 0]])
        >>> res = st.decode_bsd("<ref>Dog.</ref><box>[0,0,500,500]</box><seg><fg_4></seg>", (4, 4),
        ...                     resolution=2, labels=["dog", "cat"])
        >>> res.objects[0].label, [r.kind for r in res.repairs]
        ('dog', ['label_case'])
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    size = image_size_arg(image_size)  # (H, W), a tuple of ints
    H, W = size
    cfg = _config(resolution, max_run, row_wise, box_format, fg_token, bg_token)
    if mode != "repair" and mode != "strict":
        raise ValueError(f"mode must be 'strict' or 'repair', got {mode!r}")
    vocab = None if labels is None and unknown == "foreground" else _vocabulary_arg(labels, unknown, cfg.spelling)
    # (without_surrogates returns ASCII text at once, but the call alone is ~0.1 us of a ~6 us decode)
    text, bad = (text, None) if text.isascii() else without_surrogates(text, strict=False)
    if bad:  # lone surrogates (no UTF-8 for them): read as U+FFFD, with a repair each
        return with_repairs(lambda clean: decode_bsd(clean, image_size, resolution, mode, max_run, row_wise,
                                                     box_format, fg_token, bg_token, labels, unknown),
                            text, bad, mode == "strict")
    strict = mode == "strict"
    log = None
    if len(text) > MAX_TEXT_LENGTH:  # read up to the limit, with a repair (strict: raises)
        text, log = bounded_log(text, strict=strict)
    raw = text.encode("utf-8")
    if strict or unknown == "error":  # every deviation (or unknown label) must raise here and now
        objects, repairs = _decode(text, raw, cfg, H, W, log, strict, vocab)
        return DecodedObjects(objects, size, repairs)
    # repair mode never raises: the text is read when the result is first asked for its objects
    # or repairs (see _Deferred), or painted straight into a canvas by .mask() (K.bsd_mask)
    res = _new_result(DecodedObjects)
    d = res.__dict__
    d["image_size"] = size
    d["_text"] = (text, raw, cfg, size, log, vocab)
    return res


def _decode(text: str, raw: bytes, cfg: _Config, H: int, W: int, log: RepairLog | None,
            strict: bool, vocab: _Vocabulary | None = None) -> tuple[list[BsdObject], list[Repair]]:
    """The objects and repairs of a text (cut to the limit, ``log`` then holding that repair)."""
    starts: list[int] | None = None if vocab is None else []
    fast = _fast_bsd(raw, cfg, H, W, starts)
    if log is None:
        log = RepairLog(text, strict=strict)
    if fast:  # clean blocks, exactly as encode_bsd writes them
        if vocab is not None:  # the labels resolved, in text order (no other repair here)
            fast = _resolved(fast, starts, raw, vocab, log)
        return fast, log.repairs
    # no block, or something off: look for tags in another case first
    norm, case_fixes = _tags_in_case(text, cfg.spelling)
    if not case_fixes:
        objects = [] if fast is not None else _decode_blocks(text, cfg, H, W, log, vocab)
        return objects, log.repairs
    # tags in another case ('<SEG>', '</Ref>'): the same text with the tags spelled exactly
    # (same length, same positions), the fixes merged in text order
    inner = RepairLog(text, strict=log.strict)
    try:
        objects = _decode_blocks(norm, cfg, H, W, inner, vocab)
    except DecodeError as e:  # strict: whichever deviation comes first
        if (e.line, e.column) < log.position(case_fixes[0]):
            raise
        objects = []
    for at in case_fixes:  # in strict mode the first of them raises
        exact = _tag_at(norm, at, cfg.spelling)
        log.add("tag_case", at, f"tag {text[at:at + len(exact)]!r} read as {exact!r}",
                expected=repr(exact), found=repr(text[at : at + len(exact)]))
    merged = sorted(log.repairs + inner.repairs, key=lambda r: (r.line, r.column))
    return objects, merged


def _resolved(objects: list[BsdObject], starts: list[int], raw: bytes, vocab: _Vocabulary,
              log: RepairLog) -> list[BsdObject]:
    """The clean parser's objects with their labels resolved to ``vocab`` (``starts``: where
    each label begins, in bytes of ``raw``)."""
    out = []
    for obj, start in zip(objects, starts):
        if obj.label in vocab.match.ids:
            out.append(obj)
            continue
        label = vocab.resolve(obj.label, len(raw[:start].decode("utf-8")), log)
        if label is not None:
            out.append(obj if label == obj.label else BsdObject(label, obj.box, obj.bricks, obj.image_size))
    return out


def _tags_pattern(spelling: _Spelling) -> re.Pattern:
    return re.compile("|".join(re.escape(t) for t in dict.fromkeys(spelling.tags)), re.IGNORECASE)


_TAG_PATTERNS: dict[_Spelling, re.Pattern] = {}


def _tags_in_case(text: str, spelling: _Spelling) -> tuple[str, list[int]]:
    """``text`` with every tag written in another case spelled exactly, and where each was."""
    pattern = _TAG_PATTERNS.get(spelling)
    if pattern is None:
        pattern = _TAG_PATTERNS[spelling] = _tags_pattern(spelling)
    exact = {t.casefold(): t for t in spelling.tags}
    fixes: list[int] = []
    parts: list[str] = []
    last = 0
    for m in pattern.finditer(text):
        g = m.group()
        tag = exact.get(g.casefold())
        if tag is None or tag == g or len(tag) != len(g):
            continue
        parts.append(text[last : m.start()])
        parts.append(tag)
        last = m.end()
        fixes.append(m.start())
    if not fixes:
        return text, fixes
    parts.append(text[last:])
    return "".join(parts), fixes


def _tag_at(text: str, at: int, spelling: _Spelling) -> str:
    return next(t for t in spelling.tags if text.startswith(t, at))


def _decode_blocks(text: str, cfg: _Config, H: int, W: int, log: RepairLog,
                   vocab: _Vocabulary | None = None) -> list[BsdObject]:
    """The repairing block parser (any text); every fix goes to ``log``."""
    sp = cfg.spelling
    objects: list[BsdObject] = []
    n = len(text)
    tags = _Tags(text, sp)
    max_objects = _max_objects(cfg)
    pos = 0
    while True:
        r = tags.find(sp.ref_open, pos)
        b = tags.find(sp.box_open, pos)
        stop = min(r if r >= 0 else n, b if b >= 0 else n)
        for stray in tags.all(sp.seg_open, pos, stop):  # bricks outside any block
            log.add("missing_box", stray, "bricks outside any block (no label, no box); skipped",
                    expected="<ref>..</ref><box>..</box> before it", found=repr(sp.seg_open))
        if r < 0 and b < 0:
            break
        if r >= 0 and (b < 0 or r < b):  # a block with its ref
            start = r
            nxt = _next_block(tags, sp, r + len(sp.ref_open))
            label_end = _find(tags, sp.ref_close, r, nxt)
            box_at = _find(tags, sp.box_open, r, nxt)
            if label_end > box_at:
                log.add("missing_ref_close", box_at, "the label is not closed; read up to the box",
                        expected=repr(sp.ref_close), found=repr(text[box_at:box_at + 10]))
                label_end = box_at
                after_label = box_at
            else:
                after_label = label_end + len(sp.ref_close)
            label = text[r + len(sp.ref_open):label_end]
            if vocab is not None and box_at < nxt:  # (a block without a box is dropped anyway)
                label = vocab.resolve(label, r + len(sp.ref_open), log)
            if box_at >= nxt:
                log.add("missing_box", after_label, f"object {label!r} has no box; dropped",
                        expected=repr(sp.box_open), found=repr(text[after_label:after_label + 10]))
                pos = nxt
                continue
        else:  # a box with no ref before it
            start = box_at = b
            log.add("missing_ref", b, "a box without a label before it; label ''",
                    expected=repr(sp.ref_open), found=repr(sp.box_open))
            label = ""
        nxt = _next_block(tags, sp, box_at + len(sp.box_open), boxes=True)
        seg_at = _find(tags, sp.seg_open, box_at, nxt)
        box_end = _find(tags, sp.box_close, box_at, seg_at)
        box_text = text[box_at + len(sp.box_open):min(box_end, seg_at)]
        box = _parse_box(box_text, box_at + len(sp.box_open), sp, H, W, log)
        if box_end == seg_at and seg_at < nxt:
            log.add("missing_box_close", seg_at, "the box is not closed; read up to '<seg>'",
                    expected=repr(sp.box_close), found=repr(text[seg_at:seg_at + 10]))
        if seg_at >= nxt:
            log.add("missing_seg", min(box_end + len(sp.box_close), n), f"object {label!r} has no bricks; dropped",
                    expected=repr(sp.seg_open), found=repr(text[box_end:box_end + 10]))
            pos = max(nxt, start + 1)
            continue
        body_at = seg_at + len(sp.seg_open)
        seg_end = _find(tags, sp.seg_close, body_at, nxt)
        if seg_end == nxt:
            log.add("missing_seg_close", nxt, "'<seg>' is never closed; read up to the next block or the end",
                    expected=repr(sp.seg_close), found="the next block" if nxt < n else "end of text")
            pos = nxt
        else:
            pos = seg_end + len(sp.seg_close)
        if box is None:
            continue
        if len(objects) == max_objects:
            log.add("objects_too_many", start, f"more than {max_objects} objects of {cfg.S} x {cfg.S} "
                    f"bricks ({MAX_BRICK_CELLS} cells in all); this block and the rest are dropped",
                    expected=f"at most {max_objects} objects", found=f"object {max_objects + 1}")
            break
        grid = _parse_bricks(text[body_at:seg_end], body_at, cfg, log)
        if label is not None:  # (None: an unknown label, dropped by the policy)
            objects.append(BsdObject(label, box, grid.view(bool), (H, W)))
    return objects


def _next_block(tags: _Tags, sp: _Spelling, start: int, boxes: bool = False) -> int:
    """Where the next block starts after ``start``: its ref (or, with ``boxes``, a box)."""
    r = tags.find(sp.ref_open, start)
    r = tags.n if r < 0 else r
    if boxes:
        b = tags.find(sp.box_open, start, r)
        r = r if b < 0 else b
    return r
