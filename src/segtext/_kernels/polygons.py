"""Polygon kernels: clipping to a box and the steps of a vertex list."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _between(a, b, t):
    """``a + t * (b - a)`` for ``t`` in [0, 1], finite for any finite ``a`` and ``b``."""
    if t <= 0.5:
        return a + 2.0 * (t * (b / 2 - a / 2))
    return b - 2.0 * ((1.0 - t) * (b / 2 - a / 2))


@njit(cache=True)
def _clip_edge(xs, ys, n, axis, bound, keep_below, ox, oy):
    """One Sutherland-Hodgman pass: the polygon ``xs[:n], ys[:n]`` cut by one half-plane.

    The half-plane is ``coord <= bound`` (``keep_below``) or ``coord >= bound`` with
    ``coord`` the x (``axis`` 0) or y coordinate. Writes into ``ox, oy``; returns the count.
    """
    m = 0
    for i in range(n):
        j = i - 1 if i > 0 else n - 1  # the previous vertex: edge j -> i
        ci = xs[i] if axis == 0 else ys[i]
        cj = xs[j] if axis == 0 else ys[j]
        in_i = ci <= bound if keep_below else ci >= bound
        in_j = cj <= bound if keep_below else cj >= bound
        if in_i != in_j:  # the edge crosses the bound: add the crossing point
            t = (bound / 2 - cj / 2) / (ci / 2 - cj / 2)  # halves: no overflow near 1e308
            if axis == 0:
                ox[m] = bound
                oy[m] = _between(ys[j], ys[i], t)
            else:
                ox[m] = _between(xs[j], xs[i], t)
                oy[m] = bound
            m += 1
        if in_i:
            ox[m] = xs[i]
            oy[m] = ys[i]
            m += 1
    return m


@njit(cache=True)
def clip_polygon(xy, x0, y0, x1, y1):
    """A polygon ``[x1, y1, x2, y2, ...]`` (float64) cut to the rectangle ``[x0, x1] x [y0, y1]``.

    Sutherland-Hodgman against the four sides in turn; the result is the intersection of the
    polygon with the (convex) rectangle, as a flat ``[x, y, ...]`` array (empty if none).
    """
    n = xy.shape[0] // 2
    cap = 8 * n + 8  # a pass keeps at most 1.5 times the vertices (+1): four passes fit in 8n
    xs = np.empty(cap, np.float64)
    ys = np.empty(cap, np.float64)
    ox = np.empty(cap, np.float64)
    oy = np.empty(cap, np.float64)
    for i in range(n):
        xs[i] = xy[2 * i]
        ys[i] = xy[2 * i + 1]
    for axis, bound, below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if n == 0:
            break
        n = _clip_edge(xs, ys, n, axis, bound, below, ox, oy)
        xs, ox = ox, xs
        ys, oy = oy, ys
    out = np.empty(2 * n, np.float64)
    for i in range(n):
        out[2 * i] = xs[i]
        out[2 * i + 1] = ys[i]
    return out


@njit(cache=True)
def polygon_steps(xy):
    """Sum over the closed polygon's edges of ``max(|dx|, |dy|)``: the length pycocotools walks."""
    n = xy.shape[0] // 2
    total = 0.0
    for i in range(n):
        j = i - 1 if i > 0 else n - 1
        total += max(abs(xy[2 * i] - xy[2 * j]), abs(xy[2 * i + 1] - xy[2 * j + 1]))
    return total
