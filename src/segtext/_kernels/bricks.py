"""B-SD kernels: boxes, brick runs and their text, parsing blocks, painting a decoded text into a mask."""

from __future__ import annotations

import numpy as np
from numba import njit

from segtext._kernels.common import D0, D9, EMPTY_MASK, OK, cell_spans, cell_starts_into, first_cells, n_digits
from segtext._kernels.masks import binary_policy, sample_grid, span_counts
from segtext._kernels.coco_rle import decode_coco_counts, rle_sample, rle_window_grid, runs_status


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
        size += (toff[_BRICK + kd + 1] - toff[_BRICK + kd]) + n_digits(lengths[t]) \
            + (toff[_BRICK + kd + 3] - toff[_BRICK + kd + 2])
    out = np.empty(size, np.uint8)
    p = 0
    for t in range(m):
        kd = kinds[t]
        for j in range(toff[_BRICK + kd], toff[_BRICK + kd + 1]):  # byte loops: a slice copy per brick costs more
            out[p] = tab[j]
            p += 1
        k = lengths[t]
        d = n_digits(k)
        q = p + d - 1
        while q >= p:
            out[q] = D0 + k % 10
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
        while e < n and e - d0 < 9 and body[e] >= D0 and body[e] <= D9:
            k = k * 10 + (body[e] - D0)
            e += 1
        if e == d0 or body[d0] == D0 or k > max_run or filled + k > total:
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
    while q < n and q - p < 9 and body[q] >= D0 and body[q] <= D9:
        v = v * 10 + (body[q] - D0)
        q += 1
    if q == p or (q < n and body[q] >= D0 and body[q] <= D9):
        return 0, -1
    return v, q


@njit(cache=True, inline="always")
def _next_head(body, p, n, tab, toff, H, W, scale, q):
    """The head of the next block from ``p``, exactly as the encoder writes it: ``<ref>``, a
    label without the ref and box tags, ``</ref><box>``, the four numbers with the preset's
    separators, ``</box><seg>``; no box or bricks may stand before it.

    Returns ``(status, start, end, p)``: status 1 with the label's byte span ``[start, end)``,
    the box in pixel edges in ``q`` (``x0, y0, x1, y1``; the corners of a ``0..scale`` box
    floored and ceiled, a pixel box when ``scale`` is 0) and ``p`` after ``<seg>``; 0 when no
    block is left; -1 at a deviation, a box that covers no pixel included."""
    r = _find_part(body, p, n, tab, toff, _REF_O)
    stop = n if r < 0 else r
    if _find_part(body, p, stop, tab, toff, _BOX_O) >= 0 or _find_part(body, p, stop, tab, toff, _SEG_O) >= 0:
        return -1, 0, 0, p  # a box without its ref, or bricks outside any block
    if r < 0:
        return 0, 0, 0, p
    start = _part_at(body, r, n, tab, toff, _REF_O)
    end = _find_part(body, start, n, tab, toff, _REF_C)
    if end <= start:
        return -1, 0, 0, p  # no label, or the ref never closed
    if _find_part(body, start, end, tab, toff, _REF_O) >= 0 or _find_part(body, start, end, tab, toff, _BOX_O) >= 0:
        return -1, 0, 0, p
    p = _part_at(body, _part_at(body, end, n, tab, toff, _REF_C), n, tab, toff, _BOX_O)
    for k in range(4):
        p = _part_at(body, p, n, tab, toff, _SEP + k)
        if p < 0:
            return -1, 0, 0, p
        q[k], p = _box_number(body, p, n)
    p = _part_at(body, p, n, tab, toff, _SEP + 4)
    p = _part_at(body, p, n, tab, toff, _BOX_C)
    p = _part_at(body, p, n, tab, toff, _SEG_O)
    hi_x = W if scale == 0 else scale
    hi_y = H if scale == 0 else scale
    if p < 0 or q[2] < q[0] or q[3] < q[1] or q[2] > hi_x or q[3] > hi_y:
        return -1, 0, 0, p
    if scale != 0:
        q[0] = q[0] * W // scale
        q[1] = q[1] * H // scale
        q[2] = (q[2] * W + scale - 1) // scale
        q[3] = (q[3] * H + scale - 1) // scale
    if q[2] <= q[0] or q[3] <= q[1]:
        return -1, 0, 0, p  # a box that covers no pixel (any other lies inside the image)
    return 1, start, end, p


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
    cap = 2
    meta = np.empty((cap, 6), np.int64)
    grids = np.empty((cap, S, S), np.bool_)
    q = np.empty(4, np.int64)
    m = 0
    p = 0
    while True:
        status, start, end, p = _next_head(body, p, n, tab, toff, H, W, scale, q)
        if status == 0:
            break
        if status < 0 or m == max_objects:
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
        meta[m, 2:] = q
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
BSD_PLAN_S = 0
BSD_PLAN_MAX_RUN = 1
BSD_PLAN_ROW_WISE = 2
BSD_PLAN_SCALE = 3  # 0: pixel boxes
BSD_PLAN_MAX_OBJECTS = 4
BSD_PLAN_SPLIT = 5  # the first byte at which the background and foreground prefixes differ
BSD_PLAN_TOFF = 8  # then the 16 offsets of the spelling table (``toff``), then its bytes (``tab``)
BSD_PLAN_TAB = BSD_PLAN_TOFF + 16


@njit(cache=True)
def bsd_mask(body, plan, out):
    """Paint the objects of a B-SD text whose blocks are exactly as the encoder writes them
    into the C-ordered ``(H, W)`` ``bool`` canvas ``out`` (ORed in), in one pass.

    Accepts exactly the texts :func:`parse_bsd` accepts for an ``(H, W)`` image (the same
    checks in the same order, on the same spelling table) and returns their number of
    objects, or -1 at the first deviation, leaving the objects before it painted (the caller
    then runs the repairing parser on a new canvas). Each pixel takes the cell holding its
    centre. No ``S x S`` grid is built: each foreground run, cut at the ends of cell rows, is
    written as one pixel span into every pixel row its cell row covers (a fill counted from
    0 on a slice, which the compiler vectorises). The cells of one object never overlap, so
    each of its foreground pixels is written once and no pixel is read; setting a pixel is
    ORing it in, as where objects overlap.
    """
    H, W = out.shape
    flat = out.reshape(H * W).view(np.uint8)
    n = len(body)
    S = plan[BSD_PLAN_S]
    max_run = plan[BSD_PLAN_MAX_RUN]
    row_wise = plan[BSD_PLAN_ROW_WISE] != 0
    scale = plan[BSD_PLAN_SCALE]
    max_objects = plan[BSD_PLAN_MAX_OBJECTS]
    d = plan[BSD_PLAN_SPLIT]
    toff = plan[BSD_PLAN_TOFF:BSD_PLAN_TAB]
    tab = plan[BSD_PLAN_TAB:]
    total = S * S
    b0 = toff[_BRICK]  # background prefix: b0..b1
    b1 = toff[_BRICK + 1]
    f1 = toff[_BRICK + 2]  # foreground prefix: b1..f1
    s0 = toff[_BRICK + 2]  # background suffix: s0..s1
    s1 = toff[_BRICK + 3]
    s2 = toff[_BRICK + 4]  # foreground suffix: s1..s2
    bd = tab[b0 + d]
    fd = tab[b1 + d]
    starts = np.empty(2 * (S + 1), np.int64)  # the cell starts of the object's rows, then columns
    rs = starts[: S + 1]
    cs = starts[S + 1 :]
    q = np.empty(4, np.int64)
    m = 0
    p = 0
    while True:
        status, start, end, p = _next_head(body, p, n, tab, toff, H, W, scale, q)
        if status == 0:
            break
        if status < 0 or m == max_objects:
            return -1
        x0, y0, x1, y1 = q[0], q[1], q[2], q[3]
        cell_starts_into(y1 - y0, S, rs)
        cell_starts_into(x1 - x0, S, cs)
        # the bricks, as _read_bricks reads them: the kind told by the byte at which the two
        # prefixes differ, the length's first digit (1..9), a second one read without a
        # branch (one or two digits are about equally common), then any more (nine at most)
        filled = 0
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
            k = np.int64(body[e]) - D0
            if k < 1 or k > 9:
                return -1
            e += 1
            v = np.int64(body[min(e, n - 1)]) - D0
            two = (e < n) & (v >= 0) & (v <= 9)
            k += two * (9 * k + v)
            e += two
            while e < n and e - d0 < 9 and body[e] >= D0 and body[e] <= D9:
                k = k * 10 + (body[e] - D0)
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
                    xa = x0 + cs[c]
                    span = cs[c + t] - cs[c]
                    if span > 0:
                        at = (y0 + rs[rr]) * W + xa
                        for _ in range(rs[rr + 1] - rs[rr]):
                            dst = flat[at : at + span]
                            for i in range(span):
                                dst[i] = 1
                            at += W
                    c0 += t
                    left -= t
                    if c0 == rend:
                        rr += 1
                        rend += S
            filled += k
        p = _part_at(body, p, n, tab, toff, _SEG_C)
        if p < 0:
            return -1
        m += 1
    return m
