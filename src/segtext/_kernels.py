"""Numba kernels: every per-pixel, per-cell and per-byte loop of segtext lives here.

Private module. Public functions in :mod:`segtext.grid`, :mod:`segtext.rrle` and
:mod:`segtext.coco` validate their input, then call these kernels with plain arrays.
Each kernel has a plain Python/numpy counterpart in ``tests/naive.py`` that the tests
compare it against. Batch kernels loop over the per-item kernels serially: on the small
machines this library targets, numba's thread pool gained little (3.4 against 2.9 us per
mask on 2 idle cores), cost ~15 s of extra compilation, and slowed down eightfold when the
other core was busy.

Conventions
-----------
* A *cell index* array maps each pixel row (or column) to its grid row (or column).
  Pixel ``i`` of ``n`` belongs to cell ``(2*i + 1) * m // (2*n)`` of ``m`` (the cell that
  holds the pixel's centre). Index arrays are monotone non-decreasing.
* COCO RLE counts are column-major runs over ``H*W`` pixels, starting with background.
* Label texts are passed as one ``uint8`` buffer of UTF-8 bytes plus ``int64`` offsets
  (``buf[off[i]:off[i+1]]`` is label ``i``).
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from segtext.limits import MAX_IMAGE_AREA

# status codes shared with the Python side
OK = 0
ERR_BAD_CHAR = 1
ERR_TRUNCATED = 2
ERR_NEGATIVE = 3
ERR_TOTAL = 4
EMPTY_MASK = 5  # not an error of the runs: the mask has no foreground
ERR_HUGE = 6  # a run longer than any image (segtext.limits.MAX_IMAGE_AREA) holds

# byte values used by the text kernels
_NL = 10  # "\n"
_SP = 32  # " "
_STAR = 42  # "*"
_PIPE = 124  # "|"
_D0 = 48  # "0"
_D9 = 57  # "9"


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


# --------------------------------------------------------------------------- dense masks


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
    :func:`floor_starts` give them).

    Each grid row is expanded once, run by run, into a row buffer, which is copied to every
    pixel row it covers (a vectorised copy).
    """
    gh, gw = grid.shape
    w = cs[gw]
    row = np.empty(w, out.dtype)
    for r in range(gh):
        if rs[r + 1] == rs[r]:
            continue
        if r > 0 and rs[r] > rs[r - 1] and _same_row(grid, r):
            pass  # the row buffer already holds this grid row
        else:
            c = 0
            while c < gw:  # one run of equal cells at a time
                v = grid[r, c]
                e = c + 1
                while e < gw and grid[r, e] == v:
                    e += 1
                a = cs[c]
                if a < 0:  # never: tells the compiler the fill needs no index wraparound
                    break
                for i in range(cs[e] - a):
                    row[a + i] = v
                c = e
        for y in range(rs[r], rs[r + 1]):
            o = out[y]
            for x in range(w):
                o[x] = row[x]
    return out


@njit(cache=True, inline="always")
def _same_row(grid, r):
    """Whether grid row ``r`` equals row ``r - 1``."""
    for c in range(grid.shape[1]):
        if grid[r, c] != grid[r - 1, c]:
            return False
    return True


@njit(cache=True)
def expand(grid, t4s, out):
    """Grid -> mask into ``out`` with the exact cell geometry, or Text4Seg's floor rule."""
    H, W = out.shape
    h, w = grid.shape
    if t4s:
        return upsample(grid, floor_starts(H, h), floor_starts(W, w), out)
    return upsample(grid, cell_starts(H, h), cell_starts(W, w), out)


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


# --------------------------------------------------------------------------- COCO RLE


@njit(cache=True)
def _decode_counts_into(s, start, stop, cnts, o):
    """Decode the compressed COCO counts ``s[start:stop]`` into ``cnts[o:]`` (room for
    ``stop - start`` values). Returns ``(number of counts, status)``.

    Each count is written in 5-bit groups, low group first, as the character ``48 + group``;
    bit 0x20 marks a continuation and bit 0x10 of the last group is the sign. From the
    third count on, the value stored is the difference to the count two places before.
    """
    m = 0
    p = start
    while p < stop:
        x = np.int64(0)
        k = 0
        more = True
        while more:
            if p >= stop:
                return m, ERR_TRUNCATED
            c = np.int64(s[p]) - 48
            if c < 0 or c > 63:
                return m, ERR_BAD_CHAR
            if k >= 12:  # more than 60 bits: no image is that large
                return m, ERR_HUGE
            x |= (c & 0x1F) << (5 * k)
            more = (c & 0x20) != 0
            p += 1
            k += 1
            if not more and (c & 0x10) != 0:
                x |= np.int64(-1) << (5 * k)
        if m > 2:
            x += cnts[o + m - 2]
        if x < 0:
            return m, ERR_NEGATIVE
        if x > MAX_IMAGE_AREA:  # checked here, so the next sums cannot overflow
            return m, ERR_HUGE
        cnts[o + m] = x
        m += 1
    return m, OK


@njit(cache=True)
def decode_coco_counts(s):
    """Decode a compressed COCO counts string (as uint8 bytes) into run lengths.

    Returns ``(counts, status)`` (see :func:`_decode_counts_into` for the format).
    """
    cnts = np.empty(s.shape[0], np.int64)
    m, status = _decode_counts_into(s, 0, s.shape[0], cnts, 0)
    return cnts[:m], status


@njit(cache=True)
def _window_segments(counts, H, y0, y1, x0, x1, rlo, rhi, rfirst, clo, chi, cfirst):
    """The run walk of :func:`rle_window_counts`: ``(fg, covered, full)``, where ``fg`` holds
    the pixels of cells cut by a column segment, ``covered`` the +1/-1 marks of cells that
    a segment holds whole (a difference array down each grid column), and ``full`` the
    window columns that are foreground from top to bottom, per grid column."""
    h = rlo.shape[0]
    w = clo.shape[0]
    fg = np.zeros((h, w), np.int64)
    full = np.zeros(w, np.int64)
    # whole cells inside a column segment are counted as +1 at the first, -1 past the last
    covered = np.zeros((h + 1, w), np.int64)
    wh = y1 - y0
    end = x1 * H  # the window's last pixel, column-major, plus one
    x = 0  # column of the current position, tracked without division
    col = 0  # linear index of the first pixel of column x
    pos = 0
    for i in range(counts.shape[0]):
        n = counts[i]
        e = pos + n
        if i % 2 == 1 and n > 0 and e > x0 * H:
            while pos < e:
                while pos >= col + H:
                    x += 1
                    col += H
                if x >= x1:
                    break
                ya = pos - col
                yb = min(H, e - col)
                pos = col + yb
                if x < x0:
                    continue
                la = max(ya, y0) - y0
                lb = min(yb, y1) - y0
                if la >= lb:
                    continue
                lx = x - x0
                c = cfirst[lx]
                whole = la == 0 and lb == wh
                while c < w and clo[c] <= lx:
                    if whole:
                        full[c] += 1
                    else:
                        r = rfirst[la]
                        if r < h and rlo[r] < la:  # a cell cut at the segment's top
                            fg[r, c] += min(lb, rhi[r]) - la
                            r += 1
                        re = rfirst[lb]  # cells r..re-1 lie inside the segment
                        if re > r:
                            covered[r, c] += 1
                            covered[re, c] -= 1
                        if re < h and re >= r and rlo[re] < lb:  # a cell cut at its bottom
                            fg[re, c] += lb - max(la, rlo[re])
                    c += 1
        pos = e
        if pos >= end:
            break
    return fg, covered, full


@njit(cache=True)
def rle_window_counts(counts, H, y0, y1, x0, x1, rlo, rhi, rfirst, clo, chi, cfirst):
    """Per-cell foreground counts of the window ``[y0, y1) x [x0, x1)`` straight from runs.

    ``counts`` are column-major runs over an image of height ``H`` (no dense mask is
    built). The window's cells vote over the spans ``rlo/rhi`` (rows) and ``clo/chi``
    (columns) in window coordinates; ``rfirst``/``cfirst`` come from :func:`first_cells`.
    Whole foreground columns of the window are counted per grid column and spread over
    the grid rows at the end.
    """
    fg, covered, inside = _window_segments(counts, H, y0, y1, x0, x1, rlo, rhi, rfirst, clo, chi, cfirst)
    for r in range(rlo.shape[0]):  # whole cells of each grid column, running down the rows
        span = rhi[r] - rlo[r]
        cov = covered[r]
        row = fg[r]
        for c in range(clo.shape[0]):
            inside[c] += cov[c]
            row[c] += inside[c] * span
    return fg


@njit(cache=True)
def _fill_needed(need, span, clo, chi, policy, threshold):
    """Votes each cell of a grid row with ``span`` pixel rows needs (see :func:`binary_policy`)."""
    for c in range(clo.shape[0]):
        n = span * (chi[c] - clo[c])
        need[c] = 1 if (policy != 1 or n == 0) else votes_needed(n, threshold)


@njit(cache=True)
def rle_window_grid(counts, H, y0, y1, x0, x1, rlo, rhi, rfirst, clo, chi, cfirst, policy, threshold):
    """:func:`binary_policy` of :func:`rle_window_counts` (cells as many pixels as their
    spans hold, ``empty_label`` 0) in one pass: each cell's count is compared with the votes
    it needs as soon as it is known.
    The votes are worked out per distinct row span (cell spans have one or two lengths)."""
    fg, covered, inside = _window_segments(counts, H, y0, y1, x0, x1, rlo, rhi, rfirst, clo, chi, cfirst)
    h = rlo.shape[0]
    w = clo.shape[0]
    out = np.empty((h, w), np.int32)
    need_a = np.empty(w, np.int64)
    need_b = np.empty(w, np.int64)
    span_a = -1
    span_b = -1
    refill_a = True  # which table a new span replaces
    for r in range(h):
        span = rhi[r] - rlo[r]
        if span == span_a:
            need = need_a
        elif span == span_b:
            need = need_b
        elif refill_a:
            _fill_needed(need_a, span, clo, chi, policy, threshold)
            span_a = span
            need = need_a
            refill_a = False
        else:
            _fill_needed(need_b, span, clo, chi, policy, threshold)
            span_b = span
            need = need_b
            refill_a = True
        cov = covered[r]
        row = fg[r]
        o = out[r]
        for c in range(w):
            inside[c] += cov[c]
            o[c] = 1 if row[c] + inside[c] * span >= need[c] else 0
    return out


@njit(cache=True)
def rle_sample_into(counts, H, py, px, out):
    """Nearest policy on runs: ``out[i, j]`` = the value of pixel ``(py[i], px[j])``.

    ``py`` and ``px`` are non-decreasing, so the samples are visited in column-major order
    and the runs are walked once.
    """
    h = py.shape[0]
    w = px.shape[0]
    n_runs = counts.shape[0]
    k = 0  # current run
    run_end = counts[0] if n_runs > 0 else 0
    for j in range(w):
        if j > 0 and px[j] == px[j - 1]:  # a repeated column (upsampling): same samples
            for i in range(h):
                out[i, j] = out[i, j - 1]
            continue
        base = px[j] * H
        for i in range(h):
            p = base + py[i]
            while p >= run_end and k + 1 < n_runs:
                k += 1
                run_end += counts[k]
            out[i, j] = k & 1
    return out


@njit(cache=True)
def rle_sample(counts, H, py, px):
    """:func:`rle_sample_into` into a new ``int32`` grid."""
    return rle_sample_into(counts, H, py, px, np.empty((py.shape[0], px.shape[0]), np.int32))


@njit(cache=True)
def _one_rle_grid(counts, H, W, h, w, policy, threshold, py, px, out):
    if policy == 0:
        rle_sample_into(counts, H, py, px, out)
        return
    rlo, rhi = cell_spans(H, h)
    clo, chi = cell_spans(W, w)
    out[:, :] = rle_window_grid(counts, H, 0, H, 0, W, rlo, rhi, first_cells(rlo, rhi, H),
                                clo, chi, first_cells(clo, chi, W), policy, threshold)


@njit(cache=True)
def runs_status(counts, H, W):
    """OK when every run is in ``0..H*W`` and the runs add up to exactly ``H*W``.

    No run is added before it is known to fit in what is left, so the sum cannot overflow
    whatever the counts (``H*W`` itself is bounded by :data:`segtext.limits.MAX_IMAGE_AREA`).
    """
    left = H * W
    for i in range(counts.shape[0]):
        c = counts[i]
        if c < 0:
            return ERR_NEGATIVE
        if c > left:
            return ERR_TOTAL
        left -= c
    return OK if left == 0 else ERR_TOTAL


@njit(cache=True)
def runs_status_batch(counts, offsets, sizes):
    """Index of the first mask whose runs fail :func:`runs_status`, and its status (-1, OK if none)."""
    for n in range(sizes.shape[0]):
        st = runs_status(counts[offsets[n] : offsets[n + 1]], sizes[n, 0], sizes[n, 1])
        if st != OK:
            return n, st
    return -1, OK


@njit(cache=True)
def rle_grid(counts, H, W, h, w, policy, threshold, py, px):
    """One binary grid from runs. ``policy``: 0 nearest (uses py, px), 1 majority, 2 any.

    Returns ``(grid, status)``; the runs are checked (non-negative, summing to ``H*W``) first.
    """
    out = np.zeros((h, w), np.int32)
    status = runs_status(counts, H, W)
    if status == OK:
        _one_rle_grid(counts, H, W, h, w, policy, threshold, py, px, out)
    return out, status


@njit(cache=True)
def rle_string_grid(s, H, W, h, w, policy, threshold, py, px):
    """:func:`rle_grid` of a compressed COCO counts string (uint8 bytes), in one call."""
    counts, status = decode_coco_counts(s)
    if status != OK:
        return np.zeros((h, w), np.int32), status
    return rle_grid(counts, H, W, h, w, policy, threshold, py, px)


@njit(cache=True)
def rle_grids(counts, offsets, sizes, h, w, policy, threshold, py, px):
    """Batch of binary grids; mask ``n`` has runs ``counts[offsets[n]:offsets[n+1]]``.

    ``sizes[n] = (H, W)``; ``py[n]``, ``px[n]`` are the nearest sample indices (policy 0).
    """
    N = sizes.shape[0]
    out = np.empty((N, h, w), np.int32)
    for n in range(N):
        _one_rle_grid(counts[offsets[n] : offsets[n + 1]], sizes[n, 0], sizes[n, 1], h, w,
                      policy, threshold, py[n], px[n], out[n])
    return out


@njit(cache=True)
def encode_coco_counts(counts):
    """Run lengths to a compressed COCO counts string (uint8 bytes): :func:`decode_coco_counts`
    inverted, as ``rleToString`` in the COCO API writes it."""
    n = counts.shape[0]
    out = np.empty(13 * n, np.uint8)  # a 64-bit value needs at most 13 groups of 5 bits
    p = 0
    for i in range(n):
        x = counts[i]
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if (c & 0x10) != 0 else x != 0
            if more:
                c |= 0x20
            out[p] = c + 48
            p += 1
    return out[:p]


@njit(cache=True)
def union_runs(counts, offsets, area):
    """The union of several masks of ``area`` pixels, each given by its COCO runs
    (mask ``k`` has runs ``counts[offsets[k]:offsets[k+1]]``), as runs of one mask.

    Every foreground run becomes an interval; the intervals are sorted by start and merged.
    The work is ``O(R log R)`` in the number of runs, whatever the image size.
    """
    n_fg = 0
    for k in range(offsets.shape[0] - 1):
        n_fg += (offsets[k + 1] - offsets[k]) // 2
    lo = np.empty(n_fg, np.int64)
    hi = np.empty(n_fg, np.int64)
    m = 0
    for k in range(offsets.shape[0] - 1):
        pos = 0
        for i in range(offsets[k], offsets[k + 1]):
            c = counts[i]
            if (i - offsets[k]) % 2 == 1 and c > 0:
                lo[m] = pos
                hi[m] = pos + c
                m += 1
            pos += c
    order = np.argsort(lo[:m], kind="mergesort")
    out = np.empty(2 * m + 1, np.int64)
    r = 0
    done = 0  # the end of the foreground written so far
    cur_lo = -1
    cur_hi = -1
    for j in range(m):
        a = lo[order[j]]
        b = hi[order[j]]
        if cur_lo >= 0 and a <= cur_hi:
            if b > cur_hi:
                cur_hi = b
            continue
        if cur_lo >= 0:
            out[r] = cur_lo - done
            out[r + 1] = cur_hi - cur_lo
            r += 2
            done = cur_hi
        cur_lo = a
        cur_hi = b
    if cur_lo >= 0:
        out[r] = cur_lo - done
        out[r + 1] = cur_hi - cur_lo
        r += 2
        done = cur_hi
    if done < area or r == 0:  # a last background run, if any (pycocotools writes no 0 here)
        out[r] = area - done
        r += 1
    return out[:r]


@njit(cache=True)
def decode_coco_counts_batch(buf, offsets):
    """Decode many compressed strings: string ``n`` is ``buf[offsets[n]:offsets[n+1]]``.

    Returns ``(counts, count_offsets, status)`` with one status per string. Each string
    is decoded in place after the previous one (a string of ``k`` bytes holds at most
    ``k`` counts), so nothing is copied twice.
    """
    N = offsets.shape[0] - 1
    status = np.zeros(N, np.int64)
    cum = np.zeros(N + 1, np.int64)
    out = np.empty(buf.shape[0], np.int64)
    o = 0
    for n in range(N):
        m, st = _decode_counts_into(buf, offsets[n], offsets[n + 1], out, o)
        status[n] = st
        o += m
        cum[n + 1] = o
    return out[:o], cum, status


# --------------------------------------------------------------------------- boxes and bricks


@njit(cache=True)
def mask_bbox(mask):
    """Tight box ``(y0, y1, x0, x1)`` (ends exclusive) of the non-zero pixels; ``y0 = -1`` if none.

    One pass that ORs every row into a column accumulator and reduces each row, two loops
    the compiler vectorises.
    """
    H, W = mask.shape
    cols = np.zeros(W, np.uint8)
    y0 = -1
    y1 = 0
    for y in range(H):
        acc = 0
        for x in range(W):
            v = 1 if mask[y, x] != 0 else 0
            cols[x] |= v
            acc |= v
        if acc:
            if y0 < 0:
                y0 = y
            y1 = y + 1
    if y0 < 0:
        return -1, 0, 0, 0
    x0 = 0
    while cols[x0] == 0:
        x0 += 1
    x1 = W
    while cols[x1 - 1] == 0:
        x1 -= 1
    return y0, y1, x0, x1


@njit(cache=True)
def rle_bbox(counts, H):
    """Tight box ``(y0, y1, x0, x1)`` of the foreground of column-major runs; ``y0 = -1`` if none."""
    y0 = H
    y1 = 0
    x0 = -1
    x1 = 0
    pos = 0
    for i in range(counts.shape[0]):
        n = counts[i]
        if i % 2 == 1 and n > 0:
            xa = pos // H
            xb = (pos + n - 1) // H
            if x0 < 0:
                x0 = xa
            x1 = xb + 1
            if xb > xa:  # the run wraps a column: it covers the first and last rows
                y0 = 0
                y1 = H
            else:
                y0 = min(y0, pos - xa * H)
                y1 = max(y1, pos + n - xa * H)
        pos += n
    if x0 < 0:
        return -1, 0, 0, 0
    return y0, y1, x0, x1


@njit(cache=True)
def crop_grid(mask, y0, y1, x0, x1, S, policy, threshold, py, px):
    """Bricks grid (S x S, 0/1) of the crop ``mask[y0:y1, x0:x1]`` under a cell policy.

    ``policy``: 0 nearest (``py``/``px`` are crop-local sample indices), 1 majority, 2 any;
    cells vote over :func:`cell_spans` of the crop, so a crop smaller than S is sampled
    at the cell centres. The crop must be a box with area inside the mask (and the samples
    inside the crop): checked here, as nothing below checks its indices.
    """
    H, W = mask.shape
    if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise ValueError("crop_grid: the crop is not a box with area inside the mask")
    if policy == 0:
        for i in range(py.shape[0]):
            if not 0 <= py[i] < y1 - y0:
                raise ValueError("crop_grid: a row sample outside the crop")
        for j in range(px.shape[0]):
            if not 0 <= px[j] < x1 - x0:
                raise ValueError("crop_grid: a column sample outside the crop")
    crop = mask[y0:y1, x0:x1]
    if policy == 0:
        return sample_grid(crop, py, px, 0, False, 0)
    rlo, rhi = cell_spans(y1 - y0, S)
    clo, chi = cell_spans(x1 - x0, S)
    fg, valid = span_counts(crop, rlo, rhi, clo, chi, 0, False)
    return binary_policy(fg, valid, policy, threshold, 0)


@njit(cache=True)
def rle_crop_grid(counts, H, y0, y1, x0, x1, S, policy, threshold, py, px):
    """:func:`crop_grid` of a mask given as column-major runs, without a dense mask."""
    if policy == 0:
        return rle_sample(counts, H, py + y0, px + x0)
    rlo, rhi = cell_spans(y1 - y0, S)
    clo, chi = cell_spans(x1 - x0, S)
    return rle_window_grid(counts, H, y0, y1, x0, x1, rlo, rhi, first_cells(rlo, rhi, y1 - y0),
                           clo, chi, first_cells(clo, chi, x1 - x0), policy, threshold)


@njit(cache=True)
def brick_runs(grid, max_run, row_wise):
    """Bricks of an S x S grid as ``(kinds, lengths)``: runs of equal cells (0 background, 1
    foreground) in raster order, restarting at each row when ``row_wise``, split at ``max_run``."""
    S0, S1 = grid.shape
    n = S0 * S1
    kinds = np.empty(n, np.uint8)
    lengths = np.empty(n, np.int64)
    m = 0
    run = 0
    kind = 0
    for r in range(S0):
        for c in range(S1):
            v = 1 if grid[r, c] != 0 else 0
            if run > 0 and (v != kind or run == max_run or (c == 0 and row_wise)):
                kinds[m] = kind
                lengths[m] = run
                m += 1
                run = 0
            kind = v
            run += 1
    kinds[m] = kind
    lengths[m] = run
    m += 1
    return kinds[:m], lengths[:m]


@njit(cache=True)
def encode_bricks(grid, max_run, row_wise, tab, toff):
    """Brick tokens of an S x S 0/1 grid (see :func:`brick_runs`); a token is the kind's
    prefix, ``k`` in decimal, the kind's suffix (parts ``_BRICK`` .. ``_BRICK + 3`` of the
    spelling table ``tab``/``toff``). Returns ``(bytes, n_bricks)``."""
    kinds, lengths = brick_runs(grid, max_run, row_wise)
    m = kinds.shape[0]
    size = 0
    for t in range(m):
        kd = kinds[t]
        size += (toff[_BRICK + kd + 1] - toff[_BRICK + kd]) + _n_digits(lengths[t]) \
            + (toff[_BRICK + kd + 3] - toff[_BRICK + kd + 2])
    out = np.empty(size, np.uint8)
    p = 0
    for t in range(m):
        kd = kinds[t]
        for j in range(toff[_BRICK + kd], toff[_BRICK + kd + 1]):  # byte loops: a slice copy per brick costs more
            out[p] = tab[j]
            p += 1
        k = lengths[t]
        d = _n_digits(k)
        q = p + d - 1
        while q >= p:
            out[q] = _D0 + k % 10
            k //= 10
            q -= 1
        p += d
        for j in range(toff[_BRICK + kd + 2], toff[_BRICK + kd + 3]):
            out[p] = tab[j]
            p += 1
    return out, m


@njit(cache=True)
def rle_bsd_object(data, compressed, H, W, S, policy, threshold, scale, max_run, row_wise, tab, toff):
    """One B-SD object from a COCO RLE in one call: runs -> tight box -> box as written (on
    the ``0..scale`` grid, or pixels when ``scale`` is 0) -> the crop of the decoded box ->
    S x S cells (``policy`` 1 majority or 2 any) -> brick bytes.

    Returns ``(bricks, status, box)``; status is ``OK``, an RLE error, or ``EMPTY_MASK``.
    """
    box = np.zeros(4, np.int64)
    empty = np.empty(0, np.uint8)
    if compressed:
        counts, status = decode_coco_counts(data.astype(np.uint8))
    else:
        counts, status = data.astype(np.int64), OK
    if status == OK:
        status = runs_status(counts, H, W)
    if status != OK:
        return empty, status, box
    y0, y1, x0, x1 = rle_bbox(counts, H)
    if y0 < 0:
        return empty, EMPTY_MASK, box
    if scale > 0:
        box[0] = x0 * scale // W
        box[1] = y0 * scale // H
        box[2] = -((-x1 * scale) // W)
        box[3] = -((-y1 * scale) // H)
        x0 = min(max(box[0] * W // scale, 0), W)
        y0 = min(max(box[1] * H // scale, 0), H)
        x1 = min(max(-((-box[2] * W) // scale), 0), W)
        y1 = min(max(-((-box[3] * H) // scale), 0), H)
    else:
        box[0] = x0
        box[1] = y0
        box[2] = x1
        box[3] = y1
    no_samples = np.empty(0, np.int64)
    grid = rle_crop_grid(counts, H, y0, y1, x0, x1, S, policy, threshold, no_samples, no_samples)
    bricks, _ = encode_bricks(grid, max_run, row_wise, tab, toff)
    return bricks, OK, box


# Parts of a B-SD spelling table (one uint8 buffer ``tab`` plus offsets ``toff``, part i being
# ``tab[toff[i]:toff[i + 1]]``), in this order: the six tags, the five box separators ("[", ",",
# ",", ",", "]" or "(", ",", "),(", ",", ")"), then the brick prefix and suffix of each kind.
_REF_O = 0
_REF_C = 1
_BOX_O = 2
_BOX_C = 3
_SEG_O = 4
_SEG_C = 5
_SEP = 6  # five separators: 6..10
_BRICK = 11  # background prefix, foreground prefix, background suffix, foreground suffix: 11..14


@njit(cache=True, inline="always")
def _part_at(body, p, n, tab, toff, i):
    """Index after part ``i`` if it stands at ``body[p:n]``, else -1."""
    a = toff[i]
    m = toff[i + 1] - a
    if p < 0 or p + m > n:
        return -1
    for j in range(m):
        if body[p + j] != tab[a + j]:
            return -1
    return p + m


@njit(cache=True, inline="always")
def _find_part(body, start, stop, tab, toff, i):
    """First index in ``[start, stop)`` where part ``i`` starts and ends by ``stop``, or -1."""
    a = toff[i]
    m = toff[i + 1] - a
    first = tab[a]
    for p in range(start, stop - m + 1):
        if body[p] == first:
            ok = True
            for j in range(1, m):
                if body[p + j] != tab[a + j]:
                    ok = False
                    break
            if ok:
                return p
    return -1


@njit(cache=True, inline="always")
def _read_bricks(body, p, n, tab, toff, S, max_run, row_wise, flat):
    """Bricks from ``body[p:n]`` into the ``S*S`` cells ``flat`` until all are filled.

    Only bricks exactly as :func:`encode_bricks` writes them (a length of 1..``max_run``
    without leading zeros; with ``row_wise`` no brick over a row end). Returns the index
    after the last brick, or -1 at the first deviation.
    """
    total = S * S
    b0 = toff[_BRICK]  # background prefix
    b1 = toff[_BRICK + 1]
    f1 = toff[_BRICK + 2]  # foreground prefix: b1..f1
    filled = 0
    while filled < total:
        kind = 0
        e = p + (b1 - b0)
        if e > n:
            e = -1
        else:
            for j in range(b1 - b0):
                if body[p + j] != tab[b0 + j]:
                    e = -1
                    break
        if e < 0:
            kind = 1
            e = p + (f1 - b1)
            if e > n:
                return -1
            for j in range(f1 - b1):
                if body[p + j] != tab[b1 + j]:
                    return -1
        d0 = e
        k = 0
        while e < n and e - d0 < 9 and body[e] >= _D0 and body[e] <= _D9:
            k = k * 10 + (body[e] - _D0)
            e += 1
        if e == d0 or body[d0] == _D0 or k > max_run or filled + k > total:
            return -1
        if row_wise and filled // S != (filled + k - 1) // S:
            return -1
        p = _part_at(body, e, n, tab, toff, _BRICK + 2 + kind)
        if p < 0:
            return -1
        if filled < 0:  # never: tells the compiler the fill below needs no index wraparound
            return -1
        for j in range(k):
            flat[filled + j] = kind
        filled += k
    return p


@njit(cache=True)
def parse_bricks(body, tab, toff, S, max_run, row_wise):
    """Fast path: a body of bricks exactly as :func:`encode_bricks` writes them, summing to
    ``S*S``. Returns ``(ok, grid)``; any deviation gives ``ok`` False and the caller runs
    the repairing parser."""
    grid = np.zeros((S, S), np.uint8)
    n = len(body)
    end = _read_bricks(body, 0, n, tab, toff, S, max_run, row_wise, grid.reshape(S * S))
    return end == n, grid


@njit(cache=True)
def _box_number(body, p, n):
    """``(value, end)`` of 1..9 ASCII digits at ``p``; ``end = -1`` when there are none or more."""
    v = 0
    q = p
    while q < n and q - p < 9 and body[q] >= _D0 and body[q] <= _D9:
        v = v * 10 + (body[q] - _D0)
        q += 1
    if q == p or (q < n and body[q] >= _D0 and body[q] <= _D9):
        return 0, -1
    return v, q


@njit(cache=True)
def parse_bsd(body, tab, toff, S, max_run, row_wise, H, W, scale, max_objects):
    """Fast path of the B-SD decoder: blocks exactly as the encoder writes them, in one pass.

    ``tab``/``toff`` is the spelling table (see ``_REF_O`` .. ``_BRICK``). Boxes are read on
    the ``0..scale`` grid and mapped back to pixel edges (first corner floored, second
    ceiled), or read as pixels when ``scale`` is 0. Text outside blocks is skipped. Returns
    ``(ok, meta, grids)``: one row ``(label_start, label_end, x1, y1, x2, y2)`` per object
    (label byte span, box in pixel edges) and the ``S x S`` bool cells of each; ``ok`` is False at
    the first deviation, including a box that covers no pixel and a block past ``max_objects``
    (the caller then runs the repairing parser).
    """
    n = len(body)
    hi_x = W if scale == 0 else scale
    hi_y = H if scale == 0 else scale
    cap = 2
    meta = np.empty((cap, 6), np.int64)
    grids = np.empty((cap, S, S), np.bool_)
    q = np.empty(4, np.int64)
    m = 0
    p = 0
    while True:
        r = _find_part(body, p, n, tab, toff, _REF_O)
        stop = n if r < 0 else r
        if _find_part(body, p, stop, tab, toff, _BOX_O) >= 0 or _find_part(body, p, stop, tab, toff, _SEG_O) >= 0:
            return False, meta[:0], grids[:0]  # a box without its ref, or bricks outside any block
        if r < 0:
            break
        start = _part_at(body, r, n, tab, toff, _REF_O)
        end = _find_part(body, start, n, tab, toff, _REF_C)
        if end <= start:
            return False, meta[:0], grids[:0]  # no label, or the ref never closed
        if _find_part(body, start, end, tab, toff, _REF_O) >= 0 or _find_part(body, start, end, tab, toff, _BOX_O) >= 0:
            return False, meta[:0], grids[:0]
        p = _part_at(body, _part_at(body, end, n, tab, toff, _REF_C), n, tab, toff, _BOX_O)
        for k in range(4):
            p = _part_at(body, p, n, tab, toff, _SEP + k)
            if p < 0:
                return False, meta[:0], grids[:0]
            q[k], p = _box_number(body, p, n)
        p = _part_at(body, p, n, tab, toff, _SEP + 4)
        p = _part_at(body, p, n, tab, toff, _BOX_C)
        p = _part_at(body, p, n, tab, toff, _SEG_O)
        if p < 0 or q[2] < q[0] or q[3] < q[1] or q[2] > hi_x or q[3] > hi_y:
            return False, meta[:0], grids[:0]
        if m == max_objects:
            return False, meta[:0], grids[:0]
        if m == cap:
            cap = min(2 * cap, max_objects)
            more = np.empty((cap, 6), np.int64)
            more[:m] = meta
            meta = more
            more_grids = np.empty((cap, S, S), np.bool_)
            more_grids[:m] = grids
            grids = more_grids
        meta[m, 0] = start
        meta[m, 1] = end
        if scale == 0:
            meta[m, 2:] = q
        else:
            meta[m, 2] = q[0] * W // scale
            meta[m, 3] = q[1] * H // scale
            meta[m, 4] = (q[2] * W + scale - 1) // scale
            meta[m, 5] = (q[3] * H + scale - 1) // scale
        if meta[m, 4] <= meta[m, 2] or meta[m, 5] <= meta[m, 3]:
            return False, meta[:0], grids[:0]
        p = _read_bricks(body, p, n, tab, toff, S, max_run, row_wise, grids[m].reshape(S * S))
        p = _part_at(body, p, n, tab, toff, _SEG_C)
        if p < 0:
            return False, meta[:0], grids[:0]
        m += 1
    return True, meta[:m], grids[:m]


# The fast path of ``decode_bsd(...).mask()``: :func:`bsd_mask` reads a clean text once (the
# texts :func:`parse_bsd` accepts, with the same checks) and paints each object's foreground
# runs straight into the canvas as it reads them. ``plan`` is one ``int64`` array holding the
# parameters and the spelling table of a configuration:
_PLAN_S = 0
_PLAN_MAX_RUN = 1
_PLAN_ROW_WISE = 2
_PLAN_SCALE = 3  # 0: pixel boxes
_PLAN_MAX_OBJECTS = 4
_PLAN_SPLIT = 5  # the first byte at which the background and foreground prefixes differ
_PLAN_TOFF = 8  # then the 16 offsets of the spelling table (``toff``), then its bytes (``tab``)
_PLAN_TAB = _PLAN_TOFF + 16


@njit(cache=True, inline="always")
def _paint_row(flat, W, y0, y1, x0, row, lo, hi):
    """OR ``row[lo:hi]`` into pixel rows ``y0:y1`` of the canvas (``flat``: its ``H * W``
    pixels) from column ``x0 + lo``, then clear ``row[lo:hi]``. The caller keeps every
    index inside the canvas and ``row``."""
    m = hi - lo
    src = row[lo:hi]
    at = y0 * W + x0 + lo
    for _ in range(y1 - y0):
        dst = flat[at : at + m]
        at += W
        for i in range(m):  # counted from 0 on two slices: vectorised
            dst[i] = dst[i] | src[i]
    for i in range(m):
        src[i] = False


@njit(cache=True, inline="always")
def _cell_starts_into(n_pixels, n_cells, out):
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
def bsd_mask(body, plan, out):
    """Paint the objects of a B-SD text whose blocks are exactly as the encoder writes them
    into the C-ordered ``(H, W)`` ``bool`` canvas ``out`` (ORed in), in one pass.

    Accepts exactly the texts :func:`parse_bsd` accepts for an ``(H, W)`` image (the same
    checks in the same order, on the same spelling table) and returns their number of
    objects, or -1 at the first deviation, leaving the objects before it painted (the caller
    then runs the repairing parser on a new canvas). Each pixel takes the cell holding its
    centre. No ``S x S`` grid is built: the foreground runs of a cell row go, as pixel spans,
    into a row buffer, whose written part is ORed into every pixel row the cell row covers
    (loops counted from 0 on slices, which the compiler vectorises).
    """
    H, W = out.shape
    flat = out.reshape(H * W)
    n = len(body)
    S = plan[_PLAN_S]
    max_run = plan[_PLAN_MAX_RUN]
    row_wise = plan[_PLAN_ROW_WISE] != 0
    scale = plan[_PLAN_SCALE]
    max_objects = plan[_PLAN_MAX_OBJECTS]
    d = plan[_PLAN_SPLIT]
    toff = plan[_PLAN_TOFF:_PLAN_TAB]
    tab = plan[_PLAN_TAB:]
    total = S * S
    b0 = toff[_BRICK]  # background prefix: b0..b1
    b1 = toff[_BRICK + 1]
    f1 = toff[_BRICK + 2]  # foreground prefix: b1..f1
    s0 = toff[_BRICK + 2]  # background suffix: s0..s1
    s1 = toff[_BRICK + 3]
    s2 = toff[_BRICK + 4]  # foreground suffix: s1..s2
    bd = tab[b0 + d]
    fd = tab[b1 + d]
    hi_x = W if scale == 0 else scale
    hi_y = H if scale == 0 else scale
    row = np.zeros(W + 1, out.dtype)
    starts = np.empty(2 * (S + 1), np.int64)  # the cell starts of the object's rows, then columns
    rs = starts[: S + 1]
    cs = starts[S + 1 :]
    q = np.empty(4, np.int64)
    m = 0
    p = 0
    while True:
        r = _find_part(body, p, n, tab, toff, _REF_O)
        stop = n if r < 0 else r
        if _find_part(body, p, stop, tab, toff, _BOX_O) >= 0 or _find_part(body, p, stop, tab, toff, _SEG_O) >= 0:
            return -1  # a box without its ref, or bricks outside any block
        if r < 0:
            break
        start = _part_at(body, r, n, tab, toff, _REF_O)
        end = _find_part(body, start, n, tab, toff, _REF_C)
        if end <= start:
            return -1  # no label, or the ref never closed
        if _find_part(body, start, end, tab, toff, _REF_O) >= 0 or _find_part(body, start, end, tab, toff, _BOX_O) >= 0:
            return -1
        p = _part_at(body, _part_at(body, end, n, tab, toff, _REF_C), n, tab, toff, _BOX_O)
        for k in range(4):
            p = _part_at(body, p, n, tab, toff, _SEP + k)
            if p < 0:
                return -1
            q[k], p = _box_number(body, p, n)
        p = _part_at(body, p, n, tab, toff, _SEP + 4)
        p = _part_at(body, p, n, tab, toff, _BOX_C)
        p = _part_at(body, p, n, tab, toff, _SEG_O)
        if p < 0 or q[2] < q[0] or q[3] < q[1] or q[2] > hi_x or q[3] > hi_y:
            return -1
        if m == max_objects:
            return -1
        if scale == 0:
            x0, y0, x1, y1 = q[0], q[1], q[2], q[3]
        else:
            x0 = q[0] * W // scale
            y0 = q[1] * H // scale
            x1 = (q[2] * W + scale - 1) // scale
            y1 = (q[3] * H + scale - 1) // scale
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            return -1  # a box that covers no pixel (any other lies inside the canvas)
        _cell_starts_into(y1 - y0, S, rs)
        _cell_starts_into(x1 - x0, S, cs)
        # the bricks, as _read_bricks reads them: the kind told by the byte at which the two
        # prefixes differ, the length's first digit (1..9), a second one read without a
        # branch (one or two digits are about equally common), then any more (nine at most)
        filled = 0
        cr = 0  # the cell row the row buffer holds
        lo = 0  # its written part: [lo, hi), empty when hi <= lo
        hi = 0
        rr = 0  # a cell row, which ends before cell rend
        rend = S
        while filled < total:
            if p + d >= n:
                return -1
            ch = body[p + d]
            if ch == fd:
                kind = 1
                a = b1
                e = p + (f1 - b1)
                sa = s1
                sl = s2 - s1
            elif ch == bd:
                kind = 0
                a = b0
                e = p + (b1 - b0)
                sa = s0
                sl = s1 - s0
            else:
                return -1
            if e >= n:
                return -1
            if e - p == 4:  # the usual prefix length ("<fg_"), unrolled
                if body[p] != tab[a] or body[p + 1] != tab[a + 1] or body[p + 2] != tab[a + 2] \
                        or body[p + 3] != tab[a + 3]:
                    return -1
            else:
                for j in range(e - p):
                    if body[p + j] != tab[a + j]:
                        return -1
            d0 = e
            k = np.int64(body[e]) - _D0
            if k < 1 or k > 9:
                return -1
            e += 1
            v = np.int64(body[min(e, n - 1)]) - _D0
            two = (e < n) & (v >= 0) & (v <= 9)
            k += two * (9 * k + v)
            e += two
            while e < n and e - d0 < 9 and body[e] >= _D0 and body[e] <= _D9:
                k = k * 10 + (body[e] - _D0)
                e += 1
            if k > max_run or filled + k > total:
                return -1
            if row_wise and filled // S != (filled + k - 1) // S:
                return -1
            if e + sl > n:
                return -1
            for j in range(sl):
                if body[e + j] != tab[sa + j]:
                    return -1
            p = e + sl
            if kind == 1:  # paint the run, one cell row at a time
                c0 = filled
                left = k
                while c0 >= rend:  # the cell row of cell c0 (background runs moved past rows)
                    rr += 1
                    rend += S
                while left > 0:
                    c = c0 - (rend - S)
                    t = min(left, S - c)
                    if rr != cr:  # a new cell row: paint the previous one into its pixel rows
                        if hi > lo:
                            _paint_row(flat, W, y0 + rs[cr], y0 + rs[cr + 1], x0, row, lo, hi)
                            lo = 0
                            hi = 0
                        cr = rr
                    xa = cs[c]
                    xb = cs[c + t]
                    if xb > xa and rs[rr + 1] > rs[rr]:
                        if xa < 0:  # never: tells the compiler the fill needs no index wraparound
                            return -1
                        for i in range(xb - xa):
                            row[xa + i] = True
                        if hi <= lo:
                            lo = xa
                        hi = xb
                    c0 += t
                    left -= t
                    if c0 == rend:
                        rr += 1
                        rend += S
            filled += k
        if hi > lo:
            _paint_row(flat, W, y0 + rs[cr], y0 + rs[cr + 1], x0, row, lo, hi)
        p = _part_at(body, p, n, tab, toff, _SEG_C)
        if p < 0:
            return -1
        m += 1
    return m


# --------------------------------------------------------------------------- polygons


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


# --------------------------------------------------------------------------- panoptic


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


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- text encoding


@njit(cache=True)
def _n_digits(v):
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit(cache=True)
def _emit(flat, row_len, lab, off, with_counts, out, write):
    """Write (or measure) the text of a flattened grid.

    Rows of ``row_len`` cells are joined by "\\n "; runs (``with_counts``) or single cells are
    joined by "| "; a run is ``LABEL *N``. The text ends with one "\\n". Returns its length.
    """
    n = flat.shape[0]
    p = 0
    i = 0
    while i < n:
        row_end = i + row_len
        first = True
        while i < row_end:
            v = flat[i]
            j = i + 1
            if with_counts:
                while j < row_end and flat[j] == v:
                    j += 1
            if not first:
                if write:
                    out[p] = _PIPE
                    out[p + 1] = _SP
                p += 2
            first = False
            a = off[v]
            b = off[v + 1]
            if write:
                for q in range(b - a):  # a byte loop: no slice views on the hot path
                    out[p + q] = lab[a + q]
            p += b - a
            if with_counts:
                k = j - i
                d = _n_digits(k)
                if write:
                    out[p] = _SP
                    out[p + 1] = _STAR
                    q = p + 1 + d
                    while q > p + 1:
                        out[q] = _D0 + k % 10
                        k //= 10
                        q -= 1
                p += 2 + d
            i = j
        if write:
            out[p] = _NL
        p += 1
        if i < n:
            if write:
                out[p] = _SP
            p += 1
    return p


@njit(cache=True)
def encode_grid(grid, canon, lab, off, row_wise, with_counts):
    """Text bytes of a grid, checking its ids first.

    ``canon[v]`` is the canonical id of label ``v`` (equal texts share one id, so their runs
    merge). Returns ``(bytes, status, value)``: status 0, or 1 for a negative id and 2 for an
    id past the label list, with the offending ``value``.
    """
    h, w = grid.shape
    n_labels = canon.shape[0]
    flat = np.empty(h * w, np.int64)
    k = 0
    for i in range(h):
        for j in range(w):
            v = np.int64(grid[i, j])
            if v < 0:
                return np.empty(0, np.uint8), 1, v
            if v >= n_labels:
                return np.empty(0, np.uint8), 2, v
            flat[k] = canon[v]
            k += 1
    row_len = w if row_wise else h * w
    size = _emit(flat, row_len, lab, off, with_counts, np.empty(0, np.uint8), False)
    out = np.empty(size, np.uint8)
    _emit(flat, row_len, lab, off, with_counts, out, True)
    return out, 0, np.int64(0)


@njit(cache=True)
def _binary_flat(grid, fg_id):
    h, w = grid.shape
    flat = np.empty(h * w, np.int64)
    k = 0
    for i in range(h):
        for j in range(w):
            flat[k] = fg_id if grid[i, j] != 0 else 0
            k += 1
    return flat


#: layout of the ``plan`` array of :func:`rle_text` (one per image size, grid size, policy
#: and format, cached by the caller): these fields, then the ``h`` row and ``w`` column samples
PLAN_H, PLAN_W, PLAN_GH, PLAN_GW, PLAN_POLICY, PLAN_ROW_WISE, PLAN_COUNTS, PLAN_SAMPLES = range(8)


@njit(cache=True)
def rle_text(data, compressed, plan, threshold, fg_id, lab, off):
    """COCO RLE (compressed bytes or runs) -> binary grid -> text bytes, in one call.

    ``plan`` holds the sizes, policy and format (see :data:`PLAN_H`) and the nearest samples,
    so that a call takes few arguments. Foreground cells get label ``fg_id`` (0 when the
    label's text equals the background's). Returns ``(bytes, status)``.
    """
    H = plan[PLAN_H]
    W = plan[PLAN_W]
    h = plan[PLAN_GH]
    w = plan[PLAN_GW]
    if compressed:
        counts, status = decode_coco_counts(data)
    else:
        counts, status = data.astype(np.int64), OK
    if status == OK:
        status = runs_status(counts, H, W)
    if status != OK:
        return np.empty(0, np.uint8), status
    grid = np.empty((h, w), np.int32)
    py = plan[PLAN_SAMPLES : PLAN_SAMPLES + h]
    px = plan[PLAN_SAMPLES + h : PLAN_SAMPLES + h + w]
    _one_rle_grid(counts, H, W, h, w, plan[PLAN_POLICY], threshold, py, px, grid)
    flat = _binary_flat(grid, fg_id)
    row_len = w if plan[PLAN_ROW_WISE] else h * w
    with_counts = plan[PLAN_COUNTS] != 0
    size = _emit(flat, row_len, lab, off, with_counts, np.empty(0, np.uint8), False)
    out = np.empty(size, np.uint8)
    _emit(flat, row_len, lab, off, with_counts, out, True)
    return out, OK


@njit(cache=True)
def rle_texts(counts, offsets, sizes, h, w, policy, threshold, py, px, fg_ids, lab, off,
              row_wise, with_counts):
    """Batch of :func:`rle_text` over already decoded runs (see :func:`rle_grids`).

    Returns ``(bytes, text_offsets)``: text ``n`` is ``bytes[text_offsets[n]:text_offsets[n+1]]``.
    Each text is written once, into a buffer that grows (doubling) when what is left could be
    too small for the longest text a grid can give.
    """
    N = sizes.shape[0]
    cum = np.zeros(N + 1, np.int64)
    row_len = w if row_wise else h * w
    longest = 0
    for k in range(off.shape[0] - 1):
        longest = max(longest, off[k + 1] - off[k])
    bound = h * w * (longest + 4 + _n_digits(h * w)) + h * 2 + 1  # one run per cell, at worst
    out = np.empty(max(bound, N * 64), np.uint8)
    grid = np.empty((h, w), np.int32)
    p = 0
    for n in range(N):
        _one_rle_grid(counts[offsets[n] : offsets[n + 1]], sizes[n, 0], sizes[n, 1], h, w,
                      policy, threshold, py[n], px[n], grid)
        flat = _binary_flat(grid, fg_ids[n])
        if p + bound > out.shape[0]:
            grown = np.empty(max(2 * out.shape[0], p + bound), np.uint8)
            grown[:p] = out[:p]
            out = grown
        p += _emit(flat, row_len, lab, off, with_counts, out[p:], True)
        cum[n + 1] = p
    return out[:p], cum


# --------------------------------------------------------------------------- text decoding


@njit(cache=True)
def _same(a, a0, a1, b, b0, b1):
    if a1 - a0 != b1 - b0:
        return False
    for k in range(a1 - a0):
        if a[a0 + k] != b[b0 + k]:
            return False
    return True


@njit(cache=True, inline="always")
def _ascii_space(b):
    return b == _SP or 9 <= b <= 13 or 28 <= b <= 31


@njit(cache=True)
def _unicode_space(body, i, k):
    """Whether the ``k`` bytes at ``body[i:i+k]`` (k = 2 or 3) spell a Unicode whitespace.

    The UTF-8 forms of the characters ``str.isspace`` accepts above ASCII: U+0085, U+00A0,
    U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F and U+3000.
    """
    a = body[i]
    b = body[i + 1]
    if k == 2:
        return a == 0xC2 and (b == 0x85 or b == 0xA0)
    c = body[i + 2]
    if a == 0xE1:
        return b == 0x9A and c == 0x80
    if a == 0xE2:
        if b == 0x80:
            return c <= 0x8A or c == 0xA8 or c == 0xA9 or c == 0xAF
        return b == 0x81 and c == 0x9F
    return a == 0xE3 and b == 0x80 and c == 0x80


@njit(cache=True)
def edge_space(body, start, end):
    """Whether the UTF-8 text ``body[start:end]`` starts or ends with a whitespace character
    (any character Python's ``str.strip`` removes)."""
    if _ascii_space(body[start]) or _ascii_space(body[end - 1]):
        return True
    for k in (2, 3):
        if end - start >= k and (_unicode_space(body, start, k) or _unicode_space(body, end - k, k)):
            return True
    return False


@njit(cache=True)
def parse_runs(body, lab, off, infer):
    """Fast path: parse well-formed grid text exactly as the encoders write it.

    Grammar: ``row ("\\n " row)* "\\n"``; ``row = run ("| " run)*``; ``run = LABEL " *" N`` (or a
    bare ``LABEL`` for full I-SD); ``N`` is a positive decimal without leading zeros (at most 9
    digits). Labels are matched against the vocabulary ``lab``/``off``; with ``infer`` unseen
    labels are appended (their spans in ``body``) instead of failing.

    Returns ``(ok, ids, counts, row_ends, n_runs, n_rows, counted, new_starts, new_ends)``;
    ``counted`` is 1 if every run had a count, 0 if none had, -1 if mixed. Any deviation makes
    ``ok`` False; the caller then uses the full (repairing) parser.
    """
    n = len(body)
    cap = n // 2 + 2
    ids = np.empty(cap, np.int32)
    counts = np.empty(cap, np.int64)
    row_ends = np.empty(cap, np.int64)
    n_vocab = off.shape[0] - 1
    new_starts = np.empty(cap, np.int64)
    new_ends = np.empty(cap, np.int64)
    n_new = 0
    n_runs = 0
    n_rows = 0
    with_count = 0
    without_count = 0
    p = 0
    bad = (False, ids[:0], counts[:0], row_ends[:0], 0, 0, 0, new_starts[:0], new_ends[:0])
    if n == 0:
        return bad
    while True:
        start = p
        while p < n:
            b = body[p]
            if b == _NL:
                break
            if p + 1 < n:
                if b == _PIPE and body[p + 1] == _SP:
                    break
                if b == _SP and body[p + 1] == _STAR:
                    break
            p += 1
        if p >= n or p == start or edge_space(body, start, p):
            return bad
        end = p
        count = 1
        if body[p] == _SP:  # " *N"
            p += 2
            d0 = p
            count = 0
            while p < n and body[p] >= _D0 and body[p] <= _D9:
                count = count * 10 + (body[p] - _D0)
                p += 1
            nd = p - d0
            if nd == 0 or nd > 9 or body[d0] == _D0 or p >= n:
                return bad
            with_count += 1
        else:
            without_count += 1
        # label id
        v = -1
        for k in range(n_vocab):
            if _same(body, start, end, lab, off[k], off[k + 1]):
                v = k
                break
        if v < 0:
            for k in range(n_new):
                if _same(body, start, end, body, new_starts[k], new_ends[k]):
                    v = n_vocab + k
                    break
        if v < 0:
            if not infer:
                return bad
            new_starts[n_new] = start
            new_ends[n_new] = end
            v = n_vocab + n_new
            n_new += 1
        ids[n_runs] = v
        counts[n_runs] = count
        n_runs += 1
        # separator
        b = body[p]
        if b == _PIPE:
            if p + 1 >= n or body[p + 1] != _SP:
                return bad
            p += 2
        elif b == _NL:
            row_ends[n_rows] = n_runs
            n_rows += 1
            if p + 1 == n:
                break
            if body[p + 1] != _SP:
                return bad
            p += 2
        else:
            return bad
    counted = 1 if without_count == 0 else (0 if with_count == 0 else -1)
    return (True, ids[:n_runs], counts[:n_runs], row_ends[:n_rows], n_runs, n_rows, counted,
            new_starts[:n_new], new_ends[:n_new])


@njit(cache=True)
def _grid_layout(counts, row_ends, n_runs, n_rows, counted, h_given, w_given, max_cells):
    """The grid shape of parsed runs: ``(ok, h, w, fmt)`` (see :func:`decode_grid`)."""
    total = 0
    for k in range(n_runs):
        total += counts[k]
    if n_rows == 1 and h_given != 1:
        if h_given < 0:
            s = np.int64(np.sqrt(np.float64(total)))
            while s * s > total:
                s -= 1
            while (s + 1) * (s + 1) <= total:
                s += 1
            if s * s == total:
                h, w = s, s
            else:
                h, w = np.int64(1), total
        else:
            h, w = h_given, w_given
            if total != h * w:
                return False, 0, 0, 0
        fmt = 1 if counted == 0 else (2 if h > 1 else 0)
    else:
        h = n_rows if h_given < 0 else h_given
        if n_rows != h:
            return False, 0, 0, 0
        w = w_given
        k = 0
        for r in range(n_rows):
            row_sum = 0
            while k < row_ends[r]:
                row_sum += counts[k]
                k += 1
            if w < 0:
                w = row_sum
            if row_sum != w:
                return False, 0, 0, 0
        fmt = 1 if counted == 0 else 0
    if h * w > max_cells:
        return False, 0, 0, 0
    return True, h, w, fmt


@njit(cache=True)
def _fill_runs(ids, counts, n_runs, flat):
    p = 0
    for k in range(n_runs):
        v = ids[k]
        for _ in range(counts[k]):
            flat[p] = v
            p += 1


@njit(cache=True)
def decode_grid(body, lab, off, infer, h_given, w_given, max_cells):
    """Fast path of the grid-text decoder: parse, check the shape, fill the grid, in one call.

    ``h_given``/``w_given`` are -1 when the grid size is to be inferred (a one-line text is
    I-RLE, square when its total is a perfect square, else one row; otherwise rows are
    lines and the width is the first row's sum). Returns ``(ok, grid, new_spans, fmt)``
    with ``fmt`` 0 R-RLE, 1 I-SD, 2 I-RLE and ``new_spans[k] = (start, end)`` of the k-th
    inferred label in ``body``. ``ok`` is False for any text the encoders would not write
    for this grid size; the caller then runs the repairing parser.
    """
    fail = (False, np.zeros((0, 0), np.int32), np.zeros((0, 2), np.int64), 0)
    ok, ids, counts, row_ends, n_runs, n_rows, counted, ns, ne = parse_runs(body, lab, off, infer)
    if not ok or counted < 0:
        return fail
    ok, h, w, fmt = _grid_layout(counts, row_ends, n_runs, n_rows, counted, h_given, w_given, max_cells)
    if not ok:
        return fail
    grid = np.empty((h, w), np.int32)
    _fill_runs(ids, counts, n_runs, grid.reshape(h * w))
    spans = np.empty((ns.shape[0], 2), np.int64)
    spans[:, 0] = ns
    spans[:, 1] = ne
    return True, grid, spans, fmt


@njit(cache=True)
def decode_grid_into(body, lab, off, out):
    """:func:`decode_grid` for a known vocabulary and grid size: the ids are written into the
    C-contiguous ``(h, w)`` array ``out`` (any integer dtype that holds them). Returns the
    format code, or -1 when the text is not what the encoders write (``out`` is then junk)."""
    h, w = out.shape
    ok, ids, counts, row_ends, n_runs, n_rows, counted, ns, ne = parse_runs(body, lab, off, False)
    if not ok or counted < 0:
        return -1
    ok, h, w, fmt = _grid_layout(counts, row_ends, n_runs, n_rows, counted, h, w, h * w)
    if not ok:
        return -1
    _fill_runs(ids, counts, n_runs, out.reshape(h * w))
    return fmt


@njit(cache=True)
def decode_grid_mask(body, lab, off, grid, mask, t4s):
    """:func:`decode_grid_into` and then :func:`expand` of the grid into ``mask`` (an
    ``(H, W)`` array of the grid's dtype), in one call. Returns the format code, or -1 (then
    neither array is filled)."""
    fmt = decode_grid_into(body, lab, off, grid)
    if fmt >= 0:
        expand(grid, t4s, mask)
    return fmt


@njit(cache=True)
def id_range(grid):
    """``(min, max)`` of an integer grid (``(0, 0)`` when empty)."""
    lo = np.int64(0)
    hi = np.int64(0)
    first = True
    for v in grid.ravel():
        x = np.int64(v)
        if first:
            lo = x
            hi = x
            first = False
        elif x < lo:
            lo = x
        elif x > hi:
            hi = x
    return lo, hi


@njit(cache=True)
def edit_distance(a, b):
    """Levenshtein distance between two int arrays (code points)."""
    m = a.shape[0]
    n = b.shape[0]
    prev = np.arange(n + 1)
    cur = np.empty(n + 1, np.int64)
    for i in range(1, m + 1):
        cur[0] = i
        for j in range(1, n + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev, cur = cur, prev
    return prev[n]
