"""Metric kernels: intersections and unions of dense masks, runs and grids, confusion matrices."""

from __future__ import annotations

import numpy as np
from numba import njit

from segtext._kernels.common import cell_starts, first_cells
from segtext._kernels.coco_rle import rle_window_counts


@njit(cache=True)
def dense_iu(a, b):
    """``(intersection, union, area_a, area_b)`` of two binary masks of one shape."""
    H, W = a.shape
    inter = 0
    na = 0
    nb = 0
    for y in range(H):
        for x in range(W):
            pa = a[y, x] != 0
            pb = b[y, x] != 0
            na += pa
            nb += pb
            inter += pa and pb
    return inter, na + nb - inter, na, nb


@njit(cache=True)
def runs_iu(ca, cb):
    """:func:`dense_iu` of two masks given as runs over the same pixels (no dense masks)."""
    i = 0
    j = 0
    left_a = ca[0] if ca.shape[0] > 0 else 0
    left_b = cb[0] if cb.shape[0] > 0 else 0
    inter = 0
    na = 0
    nb = 0
    while i < ca.shape[0] and j < cb.shape[0]:
        if left_a == 0:
            i += 1
            if i < ca.shape[0]:
                left_a = ca[i]
            continue
        if left_b == 0:
            j += 1
            if j < cb.shape[0]:
                left_b = cb[j]
            continue
        step = min(left_a, left_b)
        fa = i % 2 == 1
        fb = j % 2 == 1
        if fa:
            na += step
        if fb:
            nb += step
        if fa and fb:
            inter += step
        left_a -= step
        left_b -= step
    return inter, na + nb - inter, na, nb


@njit(cache=True)
def dense_runs_iu(mask, counts):
    """:func:`dense_iu` of a dense mask and a mask given as column-major runs."""
    H, W = mask.shape
    na = 0
    for y in range(H):
        for x in range(W):
            na += mask[y, x] != 0
    inter = 0
    nb = 0
    pos = 0
    for i in range(counts.shape[0]):
        n = counts[i]
        if i % 2 == 1:
            nb += n
            x = pos // H
            y = pos - x * H
            for _ in range(n):
                inter += mask[y, x] != 0
                y += 1
                if y == H:
                    y = 0
                    x += 1
        pos += n
    return inter, na + nb - inter, na, nb


@njit(cache=True)
def _expansion_starts(n_pixels, n_cells, t4s):
    """Pixel spans of each cell when a grid is expanded to pixels (a partition; cells may be empty)."""
    if not t4s:
        return cell_starts(n_pixels, n_cells)
    out = np.empty(n_cells + 1, np.int64)
    for r in range(n_cells + 1):
        out[r] = min(-(-(r * n_pixels) // n_cells), n_pixels)
    return out


@njit(cache=True)
def grid_runs_iu(grid, counts, H, W, t4s):
    """:func:`dense_iu` of ``grid`` expanded to ``(H, W)`` and a mask given as runs, computed
    per cell from the runs: neither mask is built at full size. Also returns the box
    ``(x1, y1, x2, y2)`` of the expanded grid's foreground (meaningless when it is empty)."""
    h, w = grid.shape
    rs = _expansion_starts(H, h, t4s)
    cs = _expansion_starts(W, w, t4s)
    rlo = rs[:-1].copy()
    rhi = rs[1:].copy()
    clo = cs[:-1].copy()
    chi = cs[1:].copy()
    fg = rle_window_counts(counts, H, 0, H, 0, W, rlo, rhi, first_cells(rlo, rhi, H),
                           clo, chi, first_cells(clo, chi, W))
    inter = 0
    na = 0
    nb = 0
    box = np.array([W, H, 0, 0], np.int64)  # x1, y1, x2, y2 of the expanded grid's foreground
    for r in range(h):
        for c in range(w):
            nb += fg[r, c]
            area = (rhi[r] - rlo[r]) * (chi[c] - clo[c])
            if grid[r, c] != 0 and area > 0:
                inter += fg[r, c]
                na += area
                box[0] = min(box[0], clo[c])
                box[1] = min(box[1], rlo[r])
                box[2] = max(box[2], chi[c])
                box[3] = max(box[3], rhi[r])
    return inter, na + nb - inter, na, nb, box


@njit(cache=True)
def confusion(pred, gt, n_classes, ignore, has_ignore):
    """``(n_classes, n_classes)`` counts of (gt, pred) label pairs, ignored gt pixels left out.

    Returns ``(matrix, status, value)``: status 1 when a label is outside ``0..n_classes-1``.
    """
    H, W = gt.shape
    m = np.zeros((n_classes, n_classes), np.int64)
    for y in range(H):
        for x in range(W):
            g = gt[y, x]
            if has_ignore and g == ignore:
                continue
            p = pred[y, x]
            if g < 0 or g >= n_classes:
                return m, 1, np.int64(g)
            if p < 0 or p >= n_classes:
                return m, 1, np.int64(p)
            m[g, p] += 1
    return m, 0, np.int64(0)
