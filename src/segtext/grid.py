"""Masks and COCO RLE to label grids, and grids back to masks.

Geometry (the contract every function here follows)
---------------------------------------------------
An image of ``H x W`` pixels is stretched onto a grid of ``h x w`` cells, with no padding and
no aspect preservation. Pixel row ``y`` belongs to grid row ``(2*y + 1) * h // (2*H)``, the
cell that holds the pixel's centre; columns likewise. When ``H >= h`` and ``W >= w`` every
cell holds at least one pixel.

Cell policies (mask -> grid)
----------------------------
``nearest``
    One pixel per cell, exactly the pixel ``PIL.Image.resize((w, h), Image.NEAREST)`` picks
    (Text4Seg's choice). The indices are read off Pillow itself, once per ``(H, h)`` pair.
``majority``
    The label covering most of the cell's pixels, ties to the lower label id. For binary
    masks: foreground when the foreground fraction is ``>= threshold``.
``any``
    Foreground when any pixel of the cell is foreground. For label maps: the most frequent
    non-background label of the cell, if it has one.

Pixels equal to ``ignore_index`` do not vote; a cell with only ignored pixels takes
``empty_label``.

Grid -> mask
------------
``method="exact"`` gives every pixel the value of the cell that contains it, so
``mask_to_grid(grid_to_mask(g, (H, W)), g.shape)`` is ``g`` for every policy.
``method="t4s"`` reproduces Text4Seg's upsampling (PyTorch's legacy ``nearest``:
source row ``floor(y * h / H)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segtext import _kernels as K
from segtext._validate import (
    POLICIES,
    as_array,
    check_fits,
    grid_size_arg,
    image_size_arg,
    label_map_arg,
    pillow_index,
    policy_code,
    rle_call,
    rles_call,
)
from segtext.coco import check_status

__all__ = [
    "POLICIES",
    "cell_index",
    "grid_to_mask",
    "mask_to_grid",
    "pillow_nearest_index",
    "rle_to_grid",
    "rles_to_grids",
]

_UPSAMPLE_METHODS = ("exact", "t4s")


# --------------------------------------------------------------------------- geometry


def cell_index(n_pixels: int, n_cells: int) -> np.ndarray:
    """Cell that holds each pixel's centre: ``(2*i + 1) * n_cells // (2*n_pixels)``.

    Args:
        n_pixels: number of pixels along the axis (>= 1).
        n_cells: number of grid cells along the axis (>= 1).

    Returns:
        ``int64`` array of length ``n_pixels``, non-decreasing, values in ``[0, n_cells)``.

    Example:
        >>> import segtext as st
        >>> st.cell_index(5, 2).tolist()
        [0, 0, 1, 1, 1]
    """
    n_pixels, n_cells = image_size_arg((n_pixels, n_cells))
    return K.cell_index(n_pixels, n_cells)


def pillow_nearest_index(n_pixels: int, n_cells: int) -> np.ndarray:
    """The pixel Pillow's ``NEAREST`` resize samples for each of ``n_cells`` cells.

    Read off Pillow itself (an index ramp resized to ``n_cells``) and cached per pair, so
    the ``nearest`` policy matches ``PIL.Image.resize(..., Image.NEAREST)`` exactly,
    tie cases included.

    Args:
        n_pixels: input length (>= 1).
        n_cells: output length (>= 1).

    Returns:
        Read-only ``int64`` array of length ``n_cells``.

    Example:
        >>> import segtext as st
        >>> st.pillow_nearest_index(10, 4).tolist()
        [1, 3, 6, 8]
    """
    n_pixels, n_cells = image_size_arg((n_pixels, n_cells))
    return pillow_index(n_pixels, n_cells)


# --------------------------------------------------------------------------- mask -> grid


def mask_to_grid(
    mask: Any,
    grid_size: int | tuple[int, int] = (16, 16),
    policy: str = "majority",
    threshold: float = 0.5,
    ignore_index: int | None = None,
    empty_label: int = 0,
) -> np.ndarray:
    """Reduce an ``(H, W)`` mask to an ``(h, w)`` grid of label ids.

    Args:
        mask: ``(H, W)`` array (numpy, or a torch tensor when torch is installed). Bool
            arrays and arrays whose values are only 0 and 1 are binary; other integer
            arrays (and float arrays of integral values) are label maps.
        grid_size: ``(h, w)``, or an int for a square grid. Must not exceed the image.
        policy: ``"nearest"`` (Pillow-exact), ``"majority"`` or ``"any"``.
        threshold: for binary masks under ``majority``, the foreground fraction a cell
            needs (``>=``) to be foreground; in ``(0, 1]``.
        ignore_index: label of pixels that do not vote (e.g. 255 in semantic maps).
        empty_label: label of a cell whose pixels are all ignored.

    Returns:
        ``int32`` array of shape ``(h, w)``.

    Raises:
        ValueError: not 2-D, empty, grid larger than the image, NaN or non-integral
            floats, negative labels, bad policy or threshold.
        TypeError: not an array, or an unsupported dtype.

    Example:
        >>> import numpy as np, segtext as st
        >>> mask = np.zeros((4, 4), bool); mask[:2, 2:] = True
        >>> st.mask_to_grid(mask, grid_size=2).tolist()
        [[0, 1], [0, 0]]
    """
    h, w = grid_size_arg(grid_size)
    code = policy_code(policy, threshold)
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
    ):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    if isinstance(empty_label, bool) or not isinstance(empty_label, (int, np.integer)):
        raise TypeError(f"empty_label must be an int, got {empty_label!r}")
    m, binary = label_map_arg(mask, ignore_index)
    H, W = m.shape
    check_fits((H, W), (h, w))
    has_ignore = ignore_index is not None
    ign = int(ignore_index) if has_ignore else 0
    if has_ignore and m.dtype.kind == "u" and not 0 <= ign <= np.iinfo(m.dtype).max:
        has_ignore = False  # the value cannot occur in this dtype
    if code == 0:
        py = pillow_index(H, h)
        px = pillow_index(W, w)
        return K.sample_grid(m, py, px, ign, has_ignore, int(empty_label))
    rlo, rhi = K.cell_spans(H, h)
    clo, chi = K.cell_spans(W, w)
    if binary:
        fg, valid = K.span_counts(m, rlo, rhi, clo, chi, ign, has_ignore)
        return K.binary_policy(fg, valid, code, float(threshold), int(empty_label))
    if has_ignore:
        keep = m != ign
        values, inverse = np.unique(m[keep], return_inverse=True)
        compact = np.full(m.shape, -1, np.int32)
        compact[keep] = inverse
    else:
        values, inverse = np.unique(m, return_inverse=True)
        compact = inverse.reshape(m.shape).astype(np.int32)
    bg = np.searchsorted(values, 0)
    bg_compact = int(bg) if bg < len(values) and values[bg] == 0 else -1
    return K.label_policy(compact, values.astype(np.int32), rlo, rhi, clo, chi, len(values),
                          code == 2, bg_compact, int(empty_label))


def rle_to_grid(
    rle: dict,
    grid_size: int | tuple[int, int] = (16, 16),
    policy: str = "majority",
    threshold: float = 0.5,
) -> np.ndarray:
    """Reduce a COCO RLE mask to an ``(h, w)`` 0/1 grid, working on the runs themselves.

    The ``(H, W)`` mask is never built; the result equals
    ``mask_to_grid(pycocotools.mask.decode(rle), grid_size, policy, threshold)``.

    Args:
        rle: ``{"size": [H, W], "counts": ...}`` with compressed counts (``str``/``bytes``)
            or uncompressed counts (list of ints), column-major as in COCO.
        grid_size: ``(h, w)`` or an int for a square grid; must not exceed the image.
        policy: ``"nearest"``, ``"majority"`` or ``"any"``.
        threshold: foreground fraction for ``majority``, in ``(0, 1]``.

    Returns:
        ``int32`` array of shape ``(h, w)`` holding 0 and 1.

    Raises:
        TypeError: ``rle`` is not a dict.
        ValueError: missing keys, malformed counts, counts not summing to ``H*W``,
            grid larger than the image, bad policy.

    Example:
        >>> import segtext as st
        >>> rle = {"size": [2, 4], "counts": [4, 2, 2]}  # columns 0-1 empty, column 2 full
        >>> st.rle_to_grid(rle, grid_size=(1, 2)).tolist()
        [[0, 1]]
    """
    a = rle_call(rle, grid_size, policy, threshold)
    kernel = K.rle_string_grid if a.compressed else K.rle_grid
    grid, status = kernel(a.data, a.H, a.W, a.h, a.w, a.policy, a.threshold, a.py, a.px)
    H, W = a.H, a.W
    check_status(status, "rle", H, W)
    return grid


def rles_to_grids(
    rles: Sequence[dict],
    grid_size: int | tuple[int, int] = (16, 16),
    policy: str = "majority",
    threshold: float = 0.5,
) -> np.ndarray:
    """Batch form of :func:`rle_to_grid`: many COCO RLEs to one stacked ``(N, h, w)`` array.

    Compressed counts are decoded and grids computed in single compiled calls; masks may
    have different image sizes.

    Args:
        rles: sequence of COCO RLE dicts (compressed or not).
        grid_size: ``(h, w)`` or an int; must fit every image.
        policy: ``"nearest"``, ``"majority"`` or ``"any"``.
        threshold: foreground fraction for ``majority``, in ``(0, 1]``.

    Returns:
        ``int32`` array of shape ``(N, h, w)``.

    Raises:
        TypeError / ValueError: as :func:`rle_to_grid`; the message names the index of
            the offending RLE.

    Example:
        >>> import segtext as st
        >>> rles = [{"size": [2, 2], "counts": [0, 4]}, {"size": [2, 2], "counts": [4]}]
        >>> st.rles_to_grids(rles, grid_size=1).tolist()
        [[[1]], [[0]]]
    """
    a = rles_call(rles, grid_size, policy, threshold)
    return K.rle_grids(a.counts, a.offsets, a.sizes, a.h, a.w, a.policy, a.threshold, a.py, a.px)


# --------------------------------------------------------------------------- grid -> mask


_UNSIGNED = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
_UNSIGNED_MAX = tuple((t, int(np.iinfo(t).max)) for t in _UNSIGNED[:-1])


def unsigned_for(max_id: int) -> np.dtype:
    """The smallest unsigned dtype that holds the ids ``0 .. max_id`` (for the package's decoders).

    Example:
        >>> from segtext.grid import unsigned_for
        >>> unsigned_for(255), unsigned_for(256), unsigned_for(2**32)
        (dtype('uint8'), dtype('uint16'), dtype('uint64'))
    """
    for t, top in _UNSIGNED_MAX:  # plain int comparisons: no np.iinfo on a decoder's hot path
        if max_id <= top:
            return t
    return _UNSIGNED[-1]


def _smallest_dtype(g: np.ndarray) -> np.dtype:
    """The smallest unsigned dtype holding every id of ``g`` (bool stays bool; a negative id
    keeps the grid's dtype)."""
    if g.dtype == np.bool_ or g.dtype == np.uint8:
        return g.dtype
    lo, hi = K.id_range(g)
    return g.dtype if lo < 0 else unsigned_for(int(hi))


def grid_to_mask(grid: Any, image_size: tuple[int, int], method: str = "exact",
                 dtype: Any = None) -> np.ndarray:
    """Expand an ``(h, w)`` grid to an ``(H, W)`` mask; every pixel takes its cell's value.

    Args:
        grid: ``(h, w)`` array of label ids (any integer or bool dtype).
        image_size: ``(H, W)`` of the output; ``H >= 1``, ``W >= 1``.
        method: ``"exact"`` (the cell geometry above; the inverse of :func:`mask_to_grid`)
            or ``"t4s"`` (Text4Seg's PyTorch ``nearest`` upsampling, ``floor(y*h/H)``).
        dtype: of the result (an integer or bool dtype); by default the smallest unsigned
            dtype that holds the grid's ids (``uint8`` up to id 255, then ``uint16``,
            ``uint32``, ``uint64``), ``bool`` for a bool grid, and the grid's own dtype
            when it holds a negative id.

    Returns:
        ``(H, W)`` array.

    Raises:
        ValueError: grid not 2-D or empty, bad image size, unknown method, an id that
            ``dtype`` cannot hold (``dtype=bool`` is the foreground: any id but 0).
        TypeError: grid not an array of integers or bools.

    Example:
        >>> import numpy as np, segtext as st
        >>> st.grid_to_mask(np.array([[0, 1]]), image_size=(2, 4)).tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1]]
    """
    g = as_array(grid, "grid")
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D (h, w) array, got shape {g.shape}")
    if g.dtype.kind not in "biu":
        raise TypeError(f"grid must hold integer or bool label ids, got dtype {g.dtype}")
    H, W = image_size_arg(image_size)
    if method not in _UPSAMPLE_METHODS:
        raise ValueError(f"method must be one of {_UPSAMPLE_METHODS}, got {method!r}")
    t4s = method == "t4s"
    out_dtype = _smallest_dtype(g) if dtype is None else np.dtype(dtype)
    if out_dtype.kind not in "biu":
        raise TypeError(f"dtype must be an integer or bool dtype, got {out_dtype}")
    if out_dtype == np.bool_:  # foreground: any id but 0
        fg = (g != 0).view(np.uint8) if g.dtype != np.bool_ else g.view(np.uint8)
        return K.expand(fg, t4s, np.empty((H, W), np.uint8)).view(np.bool_)
    if g.dtype == np.bool_:
        g = g.view(np.uint8)
    elif dtype is not None and not np.can_cast(g.dtype, out_dtype):
        lo, hi = K.id_range(g)
        info = np.iinfo(out_dtype)
        if lo < info.min or hi > info.max:
            raise ValueError(f"grid holds id {hi if hi > info.max else lo}, which dtype {out_dtype} "
                             "cannot hold; give a larger dtype (or none: the smallest that holds "
                             "every id is chosen)")
    return K.expand(g, t4s, np.empty((H, W), out_dtype))
