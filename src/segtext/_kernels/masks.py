"""Dense-mask kernels: cell votes and policies, sampling, upsampling a grid, pasting into a canvas."""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from segtext._kernels.common import cell_starts, cell_starts_into, floor_starts


@njit(cache=True)
def span_counts(mask, rlo, rhi, clo, chi, ignore, has_ignore):
    """Per-cell foreground and voting pixel counts of a 0/1 mask (any integer dtype).

    Cell ``(r, c)`` votes over ``mask[rlo[r]:rhi[r], clo[c]:chi[c]]`` (see :func:`cell_spans`);
    pixels equal to ``ignore`` (when ``has_ignore``) do not vote.
    """
    h = rlo.shape[0]
    w = clo.shape[0]
    fg = np.zeros((h, w), np.int64)
    valid = np.zeros((h, w), np.int64)
    for r in range(h):
        for y in range(rlo[r], rhi[r]):
            for c in range(w):
                nf = 0
                nv = 0
                for x in range(clo[c], chi[c]):
                    v = mask[y, x]
                    if has_ignore and v == ignore:
                        continue
                    nv += 1
                    if v != 0:
                        nf += 1
                fg[r, c] += nf
                valid[r, c] += nv
    return fg, valid


@njit(cache=True)
def votes_needed(n, threshold):
    """The fewest foreground pixels ``f`` of ``n`` with ``f / n >= threshold`` (the float
    division, as Python computes it), or ``n + 1`` if none. ``f / n`` is monotone in ``f``,
    so a cell is foreground exactly when its count reaches this number."""
    f = min(max(np.int64(np.ceil(threshold * n)), 0), n + 1)
    while f > 0 and (f - 1) / n >= threshold:
        f -= 1
    while f <= n and f / n < threshold:
        f += 1
    return f


@njit(cache=True)
def binary_policy(fg, valid, policy, threshold, empty_label):
    """Turn cell counts into a 0/1 grid. ``policy``: 1 majority, 2 any (cells without
    pixels get ``empty_label``). The majority test ``fg / n >= threshold`` is made on
    integers with :func:`votes_needed`, worked out once per distinct pixel count ``n``
    (cells of one grid have at most a few)."""
    h, w = fg.shape
    out = np.empty((h, w), np.int32)
    last_n = -1
    need = 1
    for r in range(h):
        for c in range(w):
            n = valid[r, c]
            if n == 0:
                out[r, c] = empty_label
                continue
            if policy == 1:
                if n != last_n:
                    need = votes_needed(n, threshold)
                    last_n = n
            else:
                need = 1
            out[r, c] = 1 if fg[r, c] >= need else 0
    return out


@njit(cache=True)
def sample_grid(mask, py, px, ignore, has_ignore, empty_label):
    """Nearest policy: cell (i, j) takes pixel (py[i], px[j]); ignore samples give ``empty_label``."""
    h = py.shape[0]
    w = px.shape[0]
    out = np.empty((h, w), np.int32)
    for i in range(h):
        for j in range(w):
            v = mask[py[i], px[j]]
            if has_ignore and v == ignore:
                out[i, j] = empty_label
            else:
                out[i, j] = v
    return out


@njit(cache=True)
def label_policy(compact, values, rlo, rhi, clo, chi, n_labels, any_mode, bg_compact, empty_label):
    """Majority (or ``any``) vote of a label map given as compact ids ``0..n_labels-1``.

    ``compact`` holds ``-1`` for ignored pixels; ``values[k]`` is the label of compact id ``k``
    (ascending, so the lowest compact id is the lowest label). Ties go to the lower label. With
    ``any_mode`` the vote is restricted to non-background labels whenever the cell has one
    (``bg_compact`` is the compact id of label 0, or -1 when 0 is absent). Cells vote over
    the spans of :func:`cell_spans`.
    """
    h = rlo.shape[0]
    w = clo.shape[0]
    out = np.empty((h, w), np.int32)
    # one count per label, zeroed once; each cell lists the labels it touched and resets only
    # those, so the cost is one step per pixel whatever the number of labels
    counts = np.zeros(n_labels, np.int64)
    touched = np.empty(n_labels, np.int64)
    for r in range(h):
        for c in range(w):
            nt = 0
            for y in range(rlo[r], rhi[r]):
                for x in range(clo[c], chi[c]):
                    k = compact[y, x]
                    if k >= 0:
                        if counts[k] == 0:
                            touched[nt] = k
                            nt += 1
                        counts[k] += 1
            best = -1
            best_n = 0
            for t in range(nt):
                k = touched[t]
                if any_mode and k == bg_compact:
                    continue
                n = counts[k]
                if n > best_n or (n == best_n and k < best):
                    best_n = n
                    best = k
            if best < 0 and any_mode and bg_compact >= 0 and counts[bg_compact] > 0:
                best = bg_compact
            out[r, c] = empty_label if best < 0 else values[best]
            for t in range(nt):
                counts[touched[t]] = 0
    return out


@njit(cache=True)
def upsample(grid, rs, cs, out):
    """Grid -> mask into ``out``: cell ``(r, c)`` fills pixel rows ``rs[r]:rs[r + 1]`` and
    columns ``cs[c]:cs[c + 1]`` (``rs``, ``cs``: cell starts, as :func:`cell_starts` or
    :func:`floor_starts` give them); ``out`` must be C-contiguous.

    A grid row of one value fills its pixel rows with that value (a constant fill, the
    cheapest write there is; most rows of a referring mask are one value). Any other grid row
    is written run by run into the first pixel row of its band, which is then copied to the
    band's other rows; a grid row equal to the last one so written is copied from that pixel
    row instead (no buffer: every byte is written once, by a fill or a vectorised copy).
    """
    gh, gw = grid.shape
    w = cs[gw]
    flat = out.reshape(out.size)  # out is C-contiguous (every caller passes a new array)
    written = -1  # the last grid row written run by run
    src = 0  # where its pixel row starts in flat
    for r in range(gh):
        y0 = rs[r]
        y1 = rs[r + 1]
        if y1 == y0:
            continue
        a = y0 * w
        if a < 0:  # never: tells the compiler the writes below need no index wraparound
            break
        v = grid[r, 0]
        uniform = True
        for c in range(1, gw):
            if grid[r, c] != v:
                uniform = False
                break
        if uniform:  # the band's pixel rows are one stretch of memory: one fill
            for i in range((y1 - y0) * w):
                flat[a + i] = v
            continue
        if written < 0 or not _same_rows(grid, r, written):
            c = 0
            while c < gw:  # one run of equal cells at a time
                v = grid[r, c]
                e = c + 1
                while e < gw and grid[r, e] == v:
                    e += 1
                s = a + cs[c]
                if s < 0:  # never (as above)
                    break
                for i in range(cs[e] - cs[c]):
                    flat[s + i] = v
                c = e
            written = r
            src = a
            y0 += 1
        for y in range(y0, y1):
            d = y * w
            if d < 0 or src < 0:  # never (as above)
                break
            for x in range(w):
                flat[d + x] = flat[src + x]
    return out


@njit(cache=True, inline="always")
def _same_rows(grid, r, q):
    """Whether grid rows ``r`` and ``q`` are equal."""
    for c in range(grid.shape[1]):
        if grid[r, c] != grid[q, c]:
            return False
    return True


@njit(cache=True)
def expand(grid, t4s, out):
    """Grid -> mask into ``out`` with the exact cell geometry, or Text4Seg's floor rule."""
    H, W = out.shape
    h, w = grid.shape
    if t4s:
        return upsample(grid, floor_starts(H, h), floor_starts(W, w), out)
    starts = np.empty(h + w + 2, np.int64)  # one allocation for both
    rs = starts[: h + 1]
    cs = starts[h + 1 :]
    cell_starts_into(H, h, rs)
    cell_starts_into(W, w, cs)
    return upsample(grid, rs, cs, out)


_LITTLE_ENDIAN = sys.byteorder == "little"
_U8 = np.uint64(8)
_U56 = np.uint64(56)
_ONE = np.uint64(1)
_U58 = np.uint64(58)
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)  # a de Bruijn sequence: bit index of a power of 2
_DEBRUIJN_INDEX = np.zeros(64, np.uint8)
for _i in range(64):
    _DEBRUIJN_INDEX[((1 << _i) * 0x03F79D71B4CB0A89 % 2**64) >> 58] = _i
del _i


@njit(cache=True)
def _cell_words(grid):
    """A C-contiguous 0/1 ``uint8`` grid as ``(h, w // 8)`` ``uint64`` words (cell ``8k + b``
    of a row is byte ``b`` of word ``k``), or a ``(h, 0)`` array when that does not hold
    (``w`` not a multiple of 8, a big-endian machine): then the cells are read one by one."""
    gh, gw = grid.shape
    if gw % 8 != 0 or not _LITTLE_ENDIAN:
        return np.empty((gh, 0), np.uint64)
    return grid.reshape(gh * gw).view(np.uint64).reshape(gh, gw // 8)


@njit(cache=True, inline="always")
def _row_runs(grid, words, r, cs, x0, xa, xn):
    """Runs of 1 cells of the 0/1 grid row ``r``, as pixel spans ``xa[k] .. xa[k] + xn[k]``
    (columns from ``x0``, cell starts ``cs``). Returns how many; empty spans are left out.

    With ``words`` (see :func:`_cell_words`) eight cells are compared with their left
    neighbours at once (``w ^ (w << 8)``): a word without a change of value is skipped, so
    a row costs its words and its run ends rather than its cells.
    """
    gw = grid.shape[1]
    n = 0
    start = -1  # first cell of the run being read, -1 outside a run
    if words.shape[1] > 0:
        prev = np.uint64(0)  # the cell left of cell 0 counts as 0
        for k in range(words.shape[1]):
            w = words[r, k]
            t = w ^ ((w << _U8) | (prev >> _U56))
            prev = w
            while t != 0:  # one step per change of value: its byte is the lowest set bit's
                low = t & (~t + _ONE)
                c = 8 * k + np.int64(_DEBRUIJN_INDEX[(low * _DEBRUIJN) >> _U58]) // 8
                t ^= low
                if start < 0:
                    start = c
                else:
                    if cs[c] > cs[start]:
                        xa[n] = x0 + cs[start]
                        xn[n] = cs[c] - cs[start]
                        n += 1
                    start = -1
    else:
        for c in range(gw):
            if grid[r, c] != 0:
                if start < 0:
                    start = c
            elif start >= 0:
                if cs[c] > cs[start]:
                    xa[n] = x0 + cs[start]
                    xn[n] = cs[c] - cs[start]
                    n += 1
                start = -1
    if start >= 0 and cs[gw] > cs[start]:
        xa[n] = x0 + cs[start]
        xn[n] = cs[gw] - cs[start]
        n += 1
    return n


@njit(cache=True)
def paste(grid, out, y0, y1, x0, x1):
    """Set to 1 the pixels of the window ``out[y0:y1, x0:x1]`` whose cell (exact geometry)
    is 1, leaving the others as they are: one object pasted into a canvas. ``grid`` is a
    C-contiguous ``uint8`` array of 0 and 1.

    Works run by run: each run of non-zero cells in a grid row is one rectangle of pixels;
    the runs of a grid row are found once and written to every pixel row the grid row
    covers (loops counted from 0, which the compiler vectorises). The window must lie
    inside ``out``; the caller checks.
    """
    gh, gw = grid.shape
    rs = cell_starts(y1 - y0, gh)
    cs = cell_starts(x1 - x0, gw)
    xa = np.empty(gw, np.int64)
    xn = np.empty(gw, np.int64)
    words = _cell_words(grid)
    for r in range(gh):
        if rs[r + 1] == rs[r]:
            continue
        n = _row_runs(grid, words, r, cs, x0, xa, xn)
        for y in range(y0 + rs[r], y0 + rs[r + 1]):
            o = out[y]
            for k in range(n):
                a = xa[k]
                if a < 0:  # never: the guard tells the compiler a + i >= 0 (no wraparound)
                    continue
                for i in range(xn[k]):
                    o[a + i] = 1
    return out
