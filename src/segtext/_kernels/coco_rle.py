"""COCO RLE kernels: the counts string, windows of the runs, RLE -> grid, unions and batches."""

from __future__ import annotations

import numpy as np
from numba import njit

from segtext.limits import MAX_IMAGE_AREA
from segtext._kernels.common import ERR_BAD_CHAR, ERR_HUGE, ERR_NEGATIVE, ERR_TOTAL, ERR_TRUNCATED, OK, cell_spans, first_cells
from segtext._kernels.masks import votes_needed


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
def one_rle_grid(counts, H, W, h, w, policy, threshold, py, px, out):
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
        one_rle_grid(counts, H, W, h, w, policy, threshold, py, px, out)
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
        one_rle_grid(counts[offsets[n] : offsets[n + 1]], sizes[n, 0], sizes[n, 1], h, w,
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
