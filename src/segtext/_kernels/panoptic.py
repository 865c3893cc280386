"""Panoptic kernels: RGB ids and relabelling by a lookup table."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def panoptic_ids(rgb):
    """COCO panoptic PNG colours to segment ids: ``R + 256*G + 256**2*B`` per pixel."""
    H, W, _ = rgb.shape
    out = np.empty((H, W), np.int64)
    for y in range(H):
        for x in range(W):
            out[y, x] = np.int64(rgb[y, x, 0]) + 256 * np.int64(rgb[y, x, 1]) + 65536 * np.int64(rgb[y, x, 2])
    return out


@njit(cache=True)
def relabel(ids, keys, values, missing):
    """Map every id through sorted ``keys`` -> ``values``; ids not in ``keys`` get ``missing``.

    Also returns the raster index of each key's first pixel (-1 when it does not occur).
    """
    H, W = ids.shape
    out = np.empty((H, W), np.int32)
    first = np.full(keys.shape[0], -1, np.int64)
    n = keys.shape[0]
    for y in range(H):
        for x in range(W):
            v = ids[y, x]
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if keys[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n and keys[lo] == v:
                out[y, x] = values[lo]
                if first[lo] < 0:
                    first[lo] = y * W + x
            else:
                out[y, x] = missing
    return out, first
