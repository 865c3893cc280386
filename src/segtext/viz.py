"""Pictures of masks, label maps, I-SD grids and B-SD boxes (Pillow only).

:func:`overlay` draws one prediction: the image (or a blank canvas) with the mask or label
map filled in translucent colour, optionally the I-SD grid lines, B-SD boxes with their
labels, the ground-truth outline and a legend. :func:`worst_page` lays many overlays out on
one page with captions, e.g. the worst samples of an evaluation run.

Drawing order (later on top): image, fill, grid lines, ground-truth outline, boxes; the
legend is a panel to the right of the picture.

Colours
-------
Label id ``i >= 1`` is filled with ``PALETTE[(i - 1) % len(PALETTE)]`` (see
:func:`label_colour`); id 0 (the background) is never filled. :data:`PALETTE` holds 22
colours, any two at least 22 apart in CIELAB (CIE76 delta E): the first six are Okabe and
Ito's colour-blind-safe set, the next four come from Paul Tol's palettes, the other twelve
were picked to stay far from all of those. Within one picture no two labels share a colour
while it holds at most ``len(PALETTE)`` labels: an id whose colour an earlier (smaller)
id of the picture already took gets the next unused palette colour instead, and the legend
shows the colour used. The ground truth is outlined in vermillion (:data:`GT_COLOUR`), which no label uses, and grid
lines are near-black (:data:`GRID_COLOUR`).

Example:
    >>> import numpy as np
    >>> from segtext import viz
    >>> pred = np.zeros((64, 64), bool); pred[16:48, 16:48] = True
    >>> img = viz.overlay(pred, grid_size=(4, 4), labels=["others", "cat"])
    >>> img.mode, img.height, img.width > 64
    ('RGB', 64, True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segtext._validate import as_array, check_fits, grid_size_arg
from segtext.grid import cell_index

__all__ = [
    "BLANK_COLOUR",
    "GRID_COLOUR",
    "GT_COLOUR",
    "PALETTE",
    "label_colour",
    "overlay",
    "save",
    "worst_page",
]

Colour = tuple[int, int, int]

#: fill colours of label ids 1, 2, ... (cycled): Okabe-Ito blue, orange, bluish green,
#: reddish purple, sky blue, yellow; Tol's indigo, olive, wine and green; then twelve more
#: picked greedily to stay far (CIE76 delta E >= 22) from every earlier colour and from
#: GT_COLOUR, GRID_COLOUR and BLANK_COLOUR
PALETTE: tuple[Colour, ...] = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (240, 228, 66),
    (51, 34, 136),
    (153, 153, 51),
    (136, 34, 85),
    (17, 119, 51),
    (0, 200, 0),
    (200, 0, 200),
    (105, 60, 15),
    (40, 40, 220),
    (193, 0, 32),
    (152, 223, 138),
    (255, 187, 120),
    (255, 152, 150),
    (148, 103, 189),
    (197, 176, 213),
    (219, 219, 141),
    (127, 24, 13),
)
#: outline of the ground truth (Okabe-Ito vermillion, not in PALETTE)
GT_COLOUR: Colour = (213, 94, 0)
#: I-SD grid lines
GRID_COLOUR: Colour = (24, 24, 24)
#: the canvas when no image is given
BLANK_COLOUR: Colour = (236, 236, 236)

_PAGE_COLOUR: Colour = (255, 255, 255)
_TEXT_COLOUR: Colour = (20, 20, 20)
_TILE_SIZE = 256


def label_colour(label_id: int) -> Colour:
    """Fill colour of a label id (``>= 1``); deterministic, cycling through :data:`PALETTE`.

    Args:
        label_id: the id; 0 is the background, which is never filled.

    Raises:
        ValueError: ``label_id < 1``.
        TypeError: not an int.

    Example:
        >>> from segtext import viz
        >>> viz.label_colour(1), viz.label_colour(1 + len(viz.PALETTE)) == viz.label_colour(1)
        ((0, 114, 178), True)
    """
    if isinstance(label_id, bool) or not isinstance(label_id, (int, np.integer)):
        raise TypeError(f"label_id must be an int, got {label_id!r}")
    if label_id < 1:
        raise ValueError(f"label_id must be >= 1 (0 is the unfilled background), got {label_id}")
    return PALETTE[(int(label_id) - 1) % len(PALETTE)]


# --------------------------------------------------------------------------- input checks


def _pred_arg(pred: Any) -> np.ndarray:
    """(H, W) int64 label ids of a bool mask or integer label map."""
    p = as_array(pred, "pred")
    if p.ndim != 2:
        raise ValueError(f"pred must be a 2-D (H, W) mask or label map, got shape {p.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"pred is empty (shape {p.shape}); expected H >= 1 and W >= 1")
    if p.dtype == np.bool_:
        return p.astype(np.int64)
    if p.dtype.kind == "f":
        if not np.isfinite(p).all() or not (p == np.round(p)).all():
            raise ValueError(
                "pred holds non-integer values; expected a bool mask or integer label ids "
                "(threshold probabilities first, e.g. pred > 0.5)"
            )
    elif p.dtype.kind not in "iu":
        raise TypeError(f"pred must hold bool or integer label ids, got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p.size and p.min() < 0:
        raise ValueError(f"pred holds negative label {int(p.min())}; label ids must be >= 0")
    return p


def _gt_arg(gt: Any, shape: tuple[int, int]) -> np.ndarray:
    g = as_array(gt, "gt")
    if g.ndim != 2:
        raise ValueError(f"gt must be a 2-D (H, W) bool mask, got shape {g.shape}")
    if g.shape != shape:
        raise ValueError(f"gt has shape {g.shape} but pred has shape {shape}; they must match")
    if g.dtype == np.bool_:
        return g
    if g.dtype.kind not in "iuf":
        raise TypeError(f"gt must be a bool mask, got dtype {g.dtype}")
    if not np.isin(g, (0, 1)).all():
        raise ValueError("gt must be binary (bool, or only 0 and 1)")
    return g.astype(bool)


def _image_arg(image: Any, shape: tuple[int, int]) -> Image.Image:
    H, W = shape
    if image is None:
        return Image.new("RGB", (W, H), BLANK_COLOUR)
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            img = im.convert("RGB")
    elif isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        a = as_array(image, "image")
        if a.dtype != np.uint8:
            raise TypeError(
                f"image must be a uint8 array (H, W, 3), got dtype {a.dtype} "
                "(scale floats to 0..255 and cast, e.g. (img * 255).astype(np.uint8))"
            )
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[:, :, :3]
        elif a.ndim != 2:
            raise ValueError(f"image must be an (H, W, 3) or (H, W) array, got shape {a.shape}")
        img = Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
    if img.size != (W, H):
        raise ValueError(
            f"image is {img.height}x{img.width} (H x W) but pred is {H}x{W}; they must match"
        )
    return img


def _alpha_arg(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _labels_arg(labels: Any) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of str (the text of each id), got {labels!r}")
    out = list(labels)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"labels[{i}] must be a str, got {type(s).__name__}")
    if not out:
        raise ValueError("labels is empty; expected labels[0] = background, then one per id")
    return out


def _boxes_arg(boxes: Any, shape: tuple[int, int], labels: list[str] | None):
    """[(x1, y1, x2, y2, label_id or None, text or None)]"""
    H, W = shape
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence):
        raise TypeError(f"boxes must be a list of (x1, y1, x2, y2[, label]) tuples, got {boxes!r}")
    out = []
    for i, box in enumerate(boxes):
        if isinstance(box, (str, bytes)) or not isinstance(box, Sequence):
            raise TypeError(f"boxes[{i}] must be a tuple (x1, y1, x2, y2[, label]), got {box!r}")
        if len(box) not in (4, 5):
            raise ValueError(
                f"boxes[{i}] has {len(box)} values; expected (x1, y1, x2, y2) or "
                f"(x1, y1, x2, y2, label), got {tuple(box)!r}"
            )
        coords = box[:4]
        for v in coords:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"boxes[{i}] coordinates must be ints, got {tuple(box)!r}")
        x1, y1, x2, y2 = (int(v) for v in coords)
        if not (0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H):
            raise ValueError(
                f"boxes[{i}] = {(x1, y1, x2, y2)} is not inside the {H}x{W} image with "
                "x1 <= x2 and y1 <= y2 (pixel edges, x2 and y2 exclusive)"
            )
        lid, text = None, None
        if len(box) == 5:
            lab = box[4]
            if isinstance(lab, str):
                text = lab
                if labels is not None and lab in labels and labels.index(lab) > 0:
                    lid = labels.index(lab)
            elif isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
                lid = int(lab)
                if lid < 0:
                    raise ValueError(f"boxes[{i}] has negative label id {lid}")
                if labels is not None:
                    if lid >= len(labels):
                        raise ValueError(
                            f"boxes[{i}] has label id {lid} but labels has only {len(labels)} entries"
                        )
                    text = labels[lid]
                else:
                    text = str(lid)
                lid = lid or None
            elif lab is not None:
                raise TypeError(f"boxes[{i}] label must be a str or an int id, got {lab!r}")
        out.append((x1, y1, x2, y2, lid, text))
    return out


# --------------------------------------------------------------------------- drawing helpers


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, AttributeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    _, _, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1, y1  # from the origin, so ascent padding is kept


def _ink(fill: Colour) -> Colour:
    """Black or white text, whichever reads better on ``fill``."""
    r, g, b = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"


def _assign_colours(ids: Sequence[int]) -> dict[int, Colour]:
    """Colour of each id (>= 1) of one picture: :func:`label_colour`, unless an earlier id took
    it; then the next unused palette colour (reuse only once all are taken)."""
    n = len(PALETTE)
    used: set[int] = set()
    out: dict[int, Colour] = {}
    for i in sorted(set(ids)):
        k = (i - 1) % n
        if len(used) < n:
            while k in used:
                k = (k + 1) % n
        used.add(k)
        out[i] = PALETTE[k]
    return out


def _fill_colours(ids: np.ndarray, colours: dict[int, Colour]) -> np.ndarray:
    """(H, W, 3) uint8 colour of every id (id 0 gets an arbitrary colour)."""
    lut = np.zeros((int(ids.max()) + 1, 3), np.uint8)
    for i, c in colours.items():
        if i < len(lut):
            lut[i] = c
    return lut[ids]


def _outline(gt: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``gt`` within ``width`` pixels of its edge (the image border counts as edge)."""
    from skimage.segmentation import find_boundaries

    padded = np.pad(gt, 1)  # so a mask touching the border is outlined there too
    ring = find_boundaries(padded, connectivity=1, mode="inner")
    for _ in range(width - 1):
        grown = ring.copy()
        grown[1:] |= ring[:-1]
        grown[:-1] |= ring[1:]
        grown[:, 1:] |= ring[:, :-1]
        grown[:, :-1] |= ring[:, 1:]
        ring = grown & padded
    return ring[1:-1, 1:-1]


def _grid_lines(H: int, W: int, grid_size: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns of grid lines 1..h-1 and 1..w-1: the first pixel of each cell."""
    h, w = grid_size_arg(grid_size)
    check_fits((H, W), (h, w))
    rows = np.flatnonzero(np.diff(cell_index(H, h))) + 1
    cols = np.flatnonzero(np.diff(cell_index(W, w))) + 1
    return rows, cols


def _legend(
    entries: list[tuple[Colour | None, str]], height: int, max_width: int
) -> tuple[Image.Image, list[str]]:
    """A white panel listing (swatch colour, text) in columns; ``None`` colour: a hollow swatch.

    The panel is at most ``max(height, min(2 * height - 1, room for 8 lines))`` high, so it
    never doubles the picture's height, and about ``max_width`` wide; entries that do not fit
    are replaced by a last ``+N more`` line. Returns the panel and the texts it shows.
    """
    size = int(min(28, max(12, height // 24)))
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, sw = size // 2 + 2, size
    line = size + size // 2
    gap = 2 * pad
    limit = max(height, min(2 * height - 1, 2 * pad + 8 * line))
    rows = max(1, (limit - 2 * pad) // line)
    text_cap = max(8 * size, min(24 * size, max_width - 3 * pad - sw))
    texts = [_fit_text(probe, t, font, text_cap) for _, t in entries]
    colours = [c for c, _ in entries]

    def layout(shown: int) -> tuple[list[list[int]], list[int], str | None]:
        """Columns of entry indices (-1: the "+N more" line), their widths, that line."""
        extra = f"+{len(entries) - shown} more" if shown < len(entries) else None
        slots = list(range(shown)) + ([-1] if extra else [])
        cols = [slots[i:i + rows] for i in range(0, len(slots), rows)]
        widths = [max(sw + pad + _text_size(probe, texts[k], font)[0] if k >= 0
                      else _text_size(probe, extra, font)[0] for k in col) for col in cols]
        return cols, widths, extra

    shown = len(entries)
    cols, widths, extra = layout(shown)
    while shown > 1 and 2 * pad + sum(widths) + gap * (len(widths) - 1) > max_width:
        shown -= 1
        cols, widths, extra = layout(shown)
    panel_w = 2 * pad + sum(widths) + gap * (len(widths) - 1)
    panel = Image.new("RGB", (panel_w, 2 * pad + line * max(len(c) for c in cols)), _PAGE_COLOUR)
    draw = ImageDraw.Draw(panel)
    x = pad
    for col, cw in zip(cols, widths):
        for r, k in enumerate(col):
            y = pad + r * line
            if k < 0:
                draw.text((x, y + sw // 2), extra, fill=_TEXT_COLOUR, font=font, anchor="lm")
                continue
            box = (x, y, x + sw - 1, y + sw - 1)
            if colours[k] is None:
                draw.rectangle(box, outline=_TEXT_COLOUR, width=1)
            else:
                draw.rectangle(box, fill=colours[k], outline=_TEXT_COLOUR, width=1)
            draw.text((x + sw + pad, y + sw // 2), texts[k], fill=_TEXT_COLOUR, font=font,
                      anchor="lm")
        x += cw + gap
    shown_texts = texts[:shown] + ([extra] if extra else [])
    return panel, shown_texts



def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two inclusive pixel rectangles (x0, y0, x1, y1) share a pixel."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _place_tags(
    boxes: list[tuple[int, int, int, int]], sizes: list[tuple[int, int]], W: int, H: int
) -> list[tuple[int, int, int, int] | None]:
    """Inclusive rectangles for tags of the given (w, h) at each box, none overlapping another;
    ``None`` where no candidate spot is free. Candidates, in order: above the box at its left
    edge, inside at the top-left, below at the left, inside at the bottom-left, then the same
    four at the right edge."""
    placed: list[tuple[int, int, int, int]] = []
    out: list[tuple[int, int, int, int] | None] = []
    for (x1, y1, x2, y2), (tw, th) in zip(boxes, sizes):
        if tw > W or th > H:
            out.append(None)
            continue
        spots = []
        for left in (x1, x2 - tw + 1):
            for top in (y1 - th, y1, y2 + 1, y2 - th + 1):
                lx = min(max(left, 0), W - tw)
                ty = min(max(top, 0), H - th)
                spots.append((lx, ty, lx + tw - 1, ty + th - 1))
        for r in dict.fromkeys(spots):
            if not any(_intersects(r, q) for q in placed):
                placed.append(r)
                out.append(r)
                break
        else:
            out.append(None)
    return out


# --------------------------------------------------------------------------- overlay


def overlay(
    pred: Any,
    image: Any = None,
    labels: Sequence[str] | None = None,
    grid_size: int | tuple[int, int] | None = None,
    boxes: Sequence[Sequence[Any]] | None = None,
    gt: Any = None,
    alpha: float = 0.5,
    *,
    outline_width: int | None = None,
) -> Image.Image:
    """Draw a mask or label map over an image, with grid lines, boxes, a GT outline, a legend.

    Args:
        pred: ``(H, W)`` bool mask or integer label map (numpy, or a torch tensor). Id 0 is
            the background and is not filled; id ``i`` is filled with :func:`label_colour`.
        image: ``(H, W, 3)`` (or ``(H, W)``) ``uint8`` array, a PIL image, or a path to an
            image file; ``None`` draws on a blank light-grey canvas of ``pred``'s size.
        labels: text of each id (``labels[0]`` is the background). Adds a legend panel to
            the right of the picture listing the background and every id present in
            ``pred`` or naming a box, each with its colour, in columns at most as high as the
            picture (less than twice its height for small pictures), ending in ``+N more``
            when even the columns do not fit; the texts shown are in
            ``img.info["segtext_legend"]``.
        grid_size: ``(h, w)`` or an int: draws the I-SD grid lines, one pixel wide, at the
            first pixel row (column) of every cell ``r >= 1`` under segtext's geometry
            (:func:`segtext.cell_index`), i.e. on the boundaries between cells. May not
            exceed the image.
        boxes: ``(x1, y1, x2, y2)`` or ``(x1, y1, x2, y2, label)`` in pixel edges (``x2`` and
            ``y2`` exclusive, as B-SD decodes them); ``label`` is a text or an int id. Drawn
            as rectangles whose outer edge is ``x1 .. x2 - 1`` by ``y1 .. y2 - 1``, with the
            label on a tag at the box (above it, else inside, below, or at its right edge:
            the first spot free of earlier tags). When a name finds no free spot the boxes
            are numbered instead and the legend names them. The tags drawn,
            ``(x0, y0, x1, y1, text)`` inclusive, are in ``img.info["segtext_captions"]``. A box
            whose label is in ``labels`` takes that label's colour; others take the colour
            of their position in the list.
        gt: ``(H, W)`` bool ground-truth mask, drawn as its inner outline in
            :data:`GT_COLOUR` (boundary pixels as ``skimage.segmentation.find_boundaries``
            finds them, the image border counting as boundary).
        alpha: opacity of the fill, in ``[0, 1]``.
        outline_width: thickness in pixels of the GT outline and box rectangles; by
            default ``max(1, round(max(H, W) / 200))``.

    Returns:
        An ``RGB`` image, ``W`` wide (plus the legend panel when ``labels`` is given or the
        boxes are numbered) and ``H`` high (taller only if the legend needs it).

    Raises:
        ValueError: ``pred`` not 2-D or empty; ``image``/``gt`` of another size than
            ``pred``; a grid larger than the image or not positive; a box with the wrong
            number of values or outside the image; ``pred`` ids beyond ``labels``; ``alpha``
            outside ``[0, 1]``.
        TypeError: wrong types (e.g. a float image array, a non-int grid size).

    Example:
        >>> import numpy as np
        >>> from segtext import viz
        >>> pred = np.zeros((48, 64), np.int32); pred[8:24, 8:40] = 1; pred[30:44, 20:60] = 2
        >>> gt = pred == 1
        >>> img = viz.overlay(pred, labels=["others", "cat", "dog"], grid_size=(6, 8),
        ...                   boxes=[(8, 8, 40, 24, "cat")], gt=gt)
        >>> img.mode, img.height >= 48, img.width > 64
        ('RGB', True, True)
        >>> viz.overlay(pred).getpixel((0, 0)) == viz.BLANK_COLOUR
        True
    """
    ids = _pred_arg(pred)
    H, W = ids.shape
    a = _alpha_arg(alpha)
    names = _labels_arg(labels)
    if names is not None and ids.max() >= len(names):
        raise ValueError(
            f"pred holds id {int(ids.max())} but labels has only {len(names)} entries "
            f"(ids 0..{len(names) - 1})"
        )
    base = _image_arg(image, (H, W))
    lines = _grid_lines(H, W, grid_size) if grid_size is not None else None
    truth = _gt_arg(gt, (H, W)) if gt is not None else None
    bx = _boxes_arg(boxes, (H, W), names) if boxes is not None else []
    if outline_width is None:
        width = max(1, round(max(H, W) / 200))
    elif isinstance(outline_width, bool) or not isinstance(outline_width, (int, np.integer)):
        raise TypeError(f"outline_width must be an int >= 1 or None, got {outline_width!r}")
    elif outline_width < 1:
        raise ValueError(f"outline_width must be >= 1, got {outline_width}")
    else:
        width = int(outline_width)

    # colours: one per id of this picture, distinct while the palette lasts
    present = set(np.unique(ids).tolist()) - {0}
    cmap = _assign_colours(present | {lid for *_, lid, _ in bx if lid is not None})

    # fill: composite the palette colours through an alpha mask that is 0 on the background
    fg = ids != 0
    if fg.any() and a > 0:
        colours = Image.fromarray(_fill_colours(ids, cmap), "RGB")
        opacity = Image.fromarray((fg * round(a * 255)).astype(np.uint8), "L")
        base = Image.composite(colours, base, opacity)

    draw = ImageDraw.Draw(base)
    if lines is not None:
        rows, cols = lines
        for y in rows.tolist():
            draw.line([(0, y), (W - 1, y)], fill=GRID_COLOUR, width=1)
        for x in cols.tolist():
            draw.line([(x, 0), (x, H - 1)], fill=GRID_COLOUR, width=1)

    if truth is not None and truth.any():
        ring = _outline(truth, width)
        solid = Image.new("RGB", (W, H), GT_COLOUR)
        base.paste(solid, (0, 0), Image.fromarray(ring.astype(np.uint8) * 255, "L"))

    captions: list[tuple[int, int, int, int, str]] = []
    numbered: list[tuple[Colour, str]] = []  # (colour, "k  text") legend lines of numbered boxes
    numbers: dict[int, list[str]] = {}  # label id -> numbers of its boxes, shown on its line
    if bx:
        font = _font(int(min(24, max(10, min(H, W) // 18))))
        rects, box_colours = [], []
        for k, (x1, y1, x2, y2, lid, text) in enumerate(bx):
            colour = cmap[lid] if lid is not None else label_colour(k + 1)
            rx2, ry2 = max(x2 - 1, x1), max(y2 - 1, y1)  # a zero-size box still shows as a line
            rx2, ry2 = min(rx2, W - 1), min(ry2, H - 1)
            rx1, ry1 = min(x1, W - 1), min(y1, H - 1)
            draw.rectangle((rx1, ry1, rx2, ry2), outline=colour, width=width)
            rects.append((rx1, ry1, rx2, ry2))
            box_colours.append(colour)
        texted = [k for k, b in enumerate(bx) if b[5]]

        def tag_sizes(strings: list[str]) -> list[tuple[int, int]]:
            return [(_text_size(draw, t, font)[0] + 4, _text_size(draw, t, font)[1] + 2)
                    for t in strings]

        strings = [bx[k][5] for k in texted]
        spots = _place_tags([rects[k] for k in texted], tag_sizes(strings), W, H)
        if any(r is None for r in spots):
            # names collide: number the boxes and name them in the legend
            strings = [str(j + 1) for j in range(len(texted))]
            spots = _place_tags([rects[k] for k in texted], tag_sizes(strings), W, H)
            for j, k in enumerate(texted):
                lid = bx[k][4]
                if names is not None and lid is not None and lid < len(names):
                    numbers.setdefault(lid, []).append(str(j + 1))  # on the label's line
                else:
                    numbered.append((box_colours[k], f"{j + 1}  {bx[k][5]}"))
        for k, t, r, (tw, th) in zip(texted, strings, spots, tag_sizes(strings)):
            if r is None:  # not even the number finds a free spot: at the box, overlapping
                lx, ty = min(rects[k][0], W - tw), max(0, min(rects[k][1] - th, H - th))
                r = (max(lx, 0), ty, max(lx, 0) + tw - 1, ty + th - 1)
            draw.rectangle(r, fill=box_colours[k])
            draw.text((r[0] + 2, r[1] + 1), t, fill=_ink(box_colours[k]), font=font)
            captions.append((*r, t))

    legend_texts: list[str] = []
    if names is not None or numbered:
        entries: list[tuple[Colour | None, str]] = []
        if names is not None:
            entries.append((None, f"{names[0]} (not filled)"))
            entries += [(cmap[i], f"{','.join(numbers[i])}  {names[i]}" if i in numbers else names[i])
                        for i in sorted(cmap) if 0 < i < len(names)]
        entries += numbered
        panel, legend_texts = _legend(entries, H, max(3 * W, 480))
        page = Image.new("RGB", (W + panel.width, max(H, panel.height)), _PAGE_COLOUR)
        page.paste(base, (0, 0))
        page.paste(panel, (W, 0))
        base = page
    base.info["segtext_captions"] = captions
    base.info["segtext_legend"] = legend_texts
    return base


# --------------------------------------------------------------------------- worst page


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.count_nonzero(pred & gt)
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else inter / union


def worst_page(
    samples: Sequence[dict],
    columns: int = 4,
    title: str | None = None,
    *,
    tile_size: int = _TILE_SIZE,
) -> Image.Image:
    """A page of overlays (prediction filled, ground truth outlined) with captions.

    Each sample is drawn with :func:`overlay` and scaled, keeping its aspect ratio, to fit
    a ``tile_size`` square; tiles go left to right, top to bottom, ``columns`` per row.
    The caption is the sample's ``"title"`` (one or two lines; longer lines are cut with
    ``…``), or ``#i  IoU x.xxx`` when it has none. A header gives ``title`` and a key to
    the colours. The tile rectangles ``(x0, y0, x1, y1)`` (x1, y1 exclusive) are in
    ``page.info["segtext_tiles"]``, in sample order.

    Args:
        samples: dicts with ``"pred"`` and ``"gt"`` (``(H, W)`` bool masks of one size),
            optional ``"image"`` (anything :func:`overlay` takes) and optional ``"title"``.
        columns: tiles per row (>= 1); fewer when there are fewer samples.
        title: heading of the page; by default ``"N samples"``.
        tile_size: side of the square each overlay is fitted into, in pixels (>= 32).

    Returns:
        An ``RGB`` page; with no samples, a small page that says so.

    Raises:
        TypeError: ``samples`` not a sequence of dicts; a ``"title"`` that is not a str.
        ValueError: a sample without ``"pred"`` or ``"gt"``, or any error of
            :func:`overlay`; the message names the sample (``samples[3]: ...``).

    Example:
        >>> import numpy as np
        >>> from segtext import viz
        >>> gt = np.zeros((40, 60), bool); gt[10:30, 10:40] = True
        >>> samples = [{"pred": np.roll(gt, k, axis=1), "gt": gt, "title": f"shift {k}"}
        ...            for k in (0, 5, 10)]
        >>> page = viz.worst_page(samples, columns=2, title="worst")
        >>> len(page.info["segtext_tiles"]), page.mode
        (3, 'RGB')
        >>> viz.worst_page([]).size[0] > 0
        True
    """
    if isinstance(samples, (str, bytes, dict)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of dicts, got {type(samples).__name__}")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)):
        raise TypeError(f"columns must be an int >= 1, got {columns!r}")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)):
        raise TypeError(f"tile_size must be an int >= 32, got {tile_size!r}")
    if tile_size < 32:
        raise ValueError(f"tile_size must be >= 32, got {tile_size}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")

    T = int(tile_size)
    font = _font(max(11, min(18, T // 16)))
    head_font = _font(max(14, min(26, T // 11)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    if not samples:
        text = title or "worst samples"
        msg = "no samples to show"
        w = max(_text_size(probe, s, f)[0] for s, f in ((text, head_font), (msg, font))) + 40
        page = Image.new("RGB", (max(w, 240), 100), _PAGE_COLOUR)
        draw = ImageDraw.Draw(page)
        draw.text((20, 20), text, fill=_TEXT_COLOUR, font=head_font)
        draw.text((20, 60), msg, fill=(110, 110, 110), font=font)
        page.info["segtext_tiles"] = []
        return page

    tiles: list[Image.Image] = []
    captions: list[list[str]] = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise TypeError(f"samples[{i}] must be a dict with 'pred' and 'gt', got {type(s).__name__}")
        for key in ("pred", "gt"):
            if key not in s:
                raise ValueError(f"samples[{i}] has no {key!r}; each sample needs 'pred' and 'gt'")
        cap = s.get("title")
        if cap is not None and not isinstance(cap, str):
            raise TypeError(f"samples[{i}]['title'] must be a str, got {type(cap).__name__}")
        try:
            pred = _pred_arg(s["pred"]) != 0
            gt = _gt_arg(s["gt"], pred.shape)
            H, W = pred.shape
            scale = min(T / W, T / H)
            # outlines about 2 px wide once the tile is scaled down
            width = max(1, math.ceil(2 / scale)) if scale < 1 else 1
            tile = overlay(pred, image=s.get("image"), gt=gt, outline_width=width)
        except (ValueError, TypeError) as e:
            raise type(e)(f"samples[{i}]: {e}") from None
        size = (max(1, round(W * scale)), max(1, round(H * scale)))
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        tiles.append(tile.resize(size, resample))
        lines = cap.splitlines()[:2] if cap else [f"#{i}  IoU {_iou(pred, gt):.3f}"]
        captions.append(lines or [""])

    n = len(tiles)
    cols = min(int(columns), n)
    rows = -(-n // cols)
    gap, margin = max(8, T // 20), max(12, T // 16)
    line_h = _text_size(probe, "Ag", font)[1] + 3
    cap_h = line_h * max(len(c) for c in captions) + 4
    heading = title if title is not None else f"{n} sample{'s' if n != 1 else ''}"
    head_h = _text_size(probe, heading, head_font)[1]
    key_h = line_h
    top = margin + head_h + 6 + key_h + gap
    cell_w, cell_h = T, T + cap_h
    page_w = 2 * margin + cols * cell_w + (cols - 1) * gap
    page_h = top + rows * cell_h + (rows - 1) * gap + margin

    page = Image.new("RGB", (page_w, page_h), _PAGE_COLOUR)
    draw = ImageDraw.Draw(page)
    draw.text((margin, margin), _fit_text(draw, heading, head_font, page_w - 2 * margin),
              fill=_TEXT_COLOUR, font=head_font)
    # colour key: filled swatch = prediction, outlined swatch = ground truth
    ky = margin + head_h + 6
    sw = line_h - 4
    x = margin
    draw.rectangle((x, ky + 1, x + sw, ky + 1 + sw), fill=label_colour(1), outline=_TEXT_COLOUR)
    x += sw + 6
    draw.text((x, ky), "prediction", fill=_TEXT_COLOUR, font=font)
    x += _text_size(draw, "prediction", font)[0] + 18
    draw.rectangle((x, ky + 1, x + sw, ky + 1 + sw), outline=GT_COLOUR, width=2)
    x += sw + 6
    draw.text((x, ky), "ground truth", fill=_TEXT_COLOUR, font=font)

    boxes = []
    for k, (tile, lines) in enumerate(zip(tiles, captions)):
        r, c = divmod(k, cols)
        x0 = margin + c * (cell_w + gap)
        y0 = top + r * (cell_h + gap)
        draw.rectangle((x0, y0, x0 + T - 1, y0 + T - 1), fill=(250, 250, 250), outline=(210, 210, 210))
        px = x0 + (T - tile.width) // 2
        py = y0 + (T - tile.height) // 2
        page.paste(tile, (px, py))
        boxes.append((px, py, px + tile.width, py + tile.height))
        for j, text in enumerate(lines):
            draw.text((x0, y0 + T + 3 + j * line_h), _fit_text(draw, text, font, T),
                      fill=_TEXT_COLOUR, font=font)
    page.info["segtext_tiles"] = boxes
    return page


def save(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a picture (PNG unless the suffix says otherwise), creating parent folders.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from segtext import viz
        >>> out = viz.save(viz.overlay(np.eye(8, dtype=bool)), os.path.join(tempfile.mkdtemp(), "a", "m.png"))
        >>> out.exists()
        True
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"img must be a PIL image, got {type(img).__name__}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format=None if p.suffix else "PNG")
    return p
