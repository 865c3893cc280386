"""Status codes, byte values and the cell geometry shared by every kernel module."""

from __future__ import annotations

import numpy as np
from numba import njit, typeof


# status codes shared with the Python side
OK = 0
ERR_BAD_CHAR = 1
ERR_TRUNCATED = 2
ERR_NEGATIVE = 3
ERR_TOTAL = 4
EMPTY_MASK = 5  # not an error of the runs: the mask has no foreground
ERR_HUGE = 6  # a run longer than any image (segtext.limits.MAX_IMAGE_AREA) holds

# byte values used by the text kernels
NL = 10  # "\n"
SP = 32  # " "
STAR = 42  # "*"
PIPE = 124  # "|"
D0 = 48  # "0"
D9 = 57  # "9"


# --------------------------------------------------------------------------- calling


def compiled_for(kernel, *args):
    """``kernel``'s compiled code for exactly the numba types of ``args`` (compiled, or read
    from numba's cache, now), callable without the dispatcher's per-call type resolution
    (about 0.2 us of a call with six arguments): ``Dispatcher.compile(signature)``.

    For hot paths that pass arguments of those very types on every call (arrays of the same
    dtype, dimensions and layout: arrays they create themselves); nothing checks them there.
    Where the kernel is no dispatcher (``NUMBA_DISABLE_JIT=1``) it is returned as it is.
    """
    compile = getattr(kernel, "compile", None)
    if compile is None:
        return kernel
    return compile(tuple(typeof(a) for a in args))


# --------------------------------------------------------------------------- geometry


@njit(cache=True)
def cell_starts(n_pixels, n_cells):
    """First pixel of each cell (length ``n_cells + 1``, ending with ``n_pixels``).

    Pixel ``i`` is in cell ``r`` iff ``2*n*r <= (2*i + 1)*m < 2*n*(r + 1)``, so the first
    pixel of cell ``r`` is ``ceil((2*n*r - m) / (2*m))``, clipped to ``[0, n]``.
    """
    out = np.empty(n_cells + 1, np.int64)
    m2 = 2 * n_cells
    for r in range(n_cells + 1):
        v = -((n_cells - 2 * n_pixels * r) // m2)
        out[r] = min(max(v, 0), n_pixels)
    return out


@njit(cache=True, inline="always")
def cell_starts_into(n_pixels, n_cells, out):
    """:func:`cell_starts` into ``out``, with two divisions instead of one per cell: the first
    pixel of cell ``r`` is ``floor((2*n*r + m - 1) / (2*m))`` (clipped to ``n``), stepped on
    from ``r - 1`` by the quotient and remainder of ``2*n / (2*m)``."""
    d = 2 * n_cells
    qa = (2 * n_pixels) // d
    ra = (2 * n_pixels) % d
    v = 0  # (m - 1) // (2 * m)
    rem = n_cells - 1
    for r in range(n_cells + 1):
        out[r] = min(v, n_pixels)
        v += qa
        rem += ra
        if rem >= d:
            v += 1
            rem -= d


@njit(cache=True)
def cell_index(n_pixels, n_cells):
    """Cell of each pixel: ``(2*i + 1) * n_cells // (2*n_pixels)``, filled from the cell starts."""
    out = np.empty(n_pixels, np.int64)
    starts = cell_starts(n_pixels, n_cells)
    for r in range(n_cells):
        out[starts[r] : starts[r + 1]] = r
    return out


@njit(cache=True)
def floor_starts(n_pixels, n_cells):
    """First pixel of each cell under PyTorch's legacy ``nearest`` rule, where pixel ``i``
    takes cell ``floor(i * n_cells / n_pixels)``: ``ceil(r * n_pixels / n_cells)`` (length
    ``n_cells + 1``, ending with ``n_pixels``)."""
    out = np.empty(n_cells + 1, np.int64)
    for r in range(n_cells + 1):
        out[r] = (r * n_pixels + n_cells - 1) // n_cells
    return out


@njit(cache=True)
def cell_spans(n_pixels, n_cells):
    """The pixels each cell votes over, as ``[lo[c], hi[c])``.

    With ``n_pixels >= n_cells`` the spans partition the pixels by the cell geometry (a
    cell holds the pixels whose centres it contains). With fewer pixels than cells (a
    small crop resampled to bricks), each cell takes the one pixel that contains its
    centre, ``(2*c + 1) * n_pixels // (2*n_cells)``. Spans are non-decreasing in both ends.
    """
    lo = np.empty(n_cells, np.int64)
    hi = np.empty(n_cells, np.int64)
    if n_pixels >= n_cells:
        starts = cell_starts(n_pixels, n_cells)
        for c in range(n_cells):
            lo[c] = starts[c]
            hi[c] = starts[c + 1]
    else:
        for c in range(n_cells):
            lo[c] = ((2 * c + 1) * n_pixels) // (2 * n_cells)
            hi[c] = lo[c] + 1
    return lo, hi


@njit(cache=True)
def first_cells(lo, hi, n_pixels):
    """``first[p]``, ``p = 0..n_pixels``: the first cell whose span ends after pixel edge ``p``.

    ``first[n_pixels]`` is the number of cells. Cells ``first[a]..first[b]-1`` all end by ``b``.
    """
    first = np.empty(n_pixels + 1, np.int64)
    c = 0
    n = lo.shape[0]
    for p in range(n_pixels + 1):
        while c < n and hi[c] <= p:
            c += 1
        first[p] = c
    return first

@njit(cache=True)
def n_digits(v):
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d
