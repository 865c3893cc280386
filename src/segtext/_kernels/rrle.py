"""R-RLE family kernels: writing label grids as text and parsing texts back into grids."""

from __future__ import annotations

import numpy as np
from numba import njit

from segtext._kernels.common import D0, D9, NL, OK, PIPE, SP, STAR, n_digits
from segtext._kernels.masks import expand
from segtext._kernels.coco_rle import decode_coco_counts, one_rle_grid, runs_status


# --------------------------------------------------------------------------- text encoding



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
                    out[p] = PIPE
                    out[p + 1] = SP
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
                d = n_digits(k)
                if write:
                    out[p] = SP
                    out[p + 1] = STAR
                    q = p + 1 + d
                    while q > p + 1:
                        out[q] = D0 + k % 10
                        k //= 10
                        q -= 1
                p += 2 + d
            i = j
        if write:
            out[p] = NL
        p += 1
        if i < n:
            if write:
                out[p] = SP
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
    one_rle_grid(counts, H, W, h, w, plan[PLAN_POLICY], threshold, py, px, grid)
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
    bound = h * w * (longest + 4 + n_digits(h * w)) + h * 2 + 1  # one run per cell, at worst
    out = np.empty(max(bound, N * 64), np.uint8)
    grid = np.empty((h, w), np.int32)
    p = 0
    for n in range(N):
        one_rle_grid(counts[offsets[n] : offsets[n + 1]], sizes[n, 0], sizes[n, 1], h, w,
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
    return b == SP or 9 <= b <= 13 or 28 <= b <= 31


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


@njit(cache=True, inline="always")
def _run_count(body, p):
    """The count of a run whose digits start at ``p`` (after ``" *"``) and where the text goes
    on after them: ``(count, end)``, or ``(-1, p)`` unless it is 1 to 9 digits without a leading
    zero and something follows."""
    n = len(body)
    d0 = p
    count = 0
    while p < n and body[p] >= D0 and body[p] <= D9:
        count = count * 10 + (body[p] - D0)
        p += 1
    nd = p - d0
    if nd == 0 or nd > 9 or body[d0] == D0 or p >= n:
        return -1, d0
    return count, p


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
            if b == NL:
                break
            if p + 1 < n:
                if b == PIPE and body[p + 1] == SP:
                    break
                if b == SP and body[p + 1] == STAR:
                    break
            p += 1
        if p >= n or p == start or edge_space(body, start, p):
            return bad
        end = p
        count = 1
        if body[p] == SP:  # " *N"
            count, p = _run_count(body, p + 2)
            if count < 0:
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
        if b == PIPE:
            if p + 1 >= n or body[p + 1] != SP:
                return bad
            p += 2
        elif b == NL:
            row_ends[n_rows] = n_runs
            n_rows += 1
            if p + 1 == n:
                break
            if body[p + 1] != SP:
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
    format code, or -1 when the text is not what the encoders write (``out`` is then junk).

    Row-wise texts (R-RLE, I-SD) of a vocabulary of :func:`plain_labels` are read by
    :func:`rows_into_grid` in one pass; the rest (I-RLE, a slip) by :func:`parse_runs`."""
    if plain_labels(lab, off):
        fmt = rows_into_grid(body, lab, off, out)
        if fmt >= 0:
            return fmt
    return _decode_grid_general(body, lab, off, out)


@njit(cache=True)
def _decode_grid_general(body, lab, off, out):
    """:func:`decode_grid_into` by :func:`parse_runs` (any layout)."""
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
def plain_labels(lab, off):
    """Whether every label of the vocabulary reads back as itself where :func:`parse_runs` would
    cut a label: none is empty, holds a newline, ``"| "`` or ``" *"``, ends with ``"|"`` (which
    the space after a label would make a separator) or starts or ends with whitespace."""
    for k in range(off.shape[0] - 1):
        a = off[k]
        b = off[k + 1]
        if b == a or edge_space(lab, a, b) or lab[b - 1] == PIPE:
            return False
        for i in range(a, b):
            x = lab[i]
            if x == NL:
                return False
            if i + 1 < b and ((x == PIPE and lab[i + 1] == SP) or (x == SP and lab[i + 1] == STAR)):
                return False
    return True


@njit(cache=True)
def rows_into_grid(body, lab, off, grid):
    """Read a row-wise text (one line per grid row, as the R-RLE and I-SD encoders write it)
    straight into the ``(h, w)`` grid: at each run the first label of the vocabulary whose bytes
    are there and are followed by a separator, then its count. Accepts exactly the row-wise
    texts :func:`parse_runs` and :func:`_grid_layout` accept, given :func:`plain_labels` (a
    label followed by a separator is then the whole text up to that separator), and gives the
    same grid; -1 at the first deviation (the grid then holds junk). Returns the format code."""
    h, w = grid.shape
    n = len(body)
    n_vocab = off.shape[0] - 1
    with_count = 0
    without_count = 0
    p = 0
    for r in range(h):
        c = 0
        while True:
            v = -1
            for k in range(n_vocab):
                a = off[k]
                e = p + off[k + 1] - a  # where the label would end
                if e >= n:  # a label must be followed by something
                    continue
                same = True
                for i in range(e - p):
                    if body[p + i] != lab[a + i]:
                        same = False
                        break
                if not same:
                    continue
                x = body[e]
                if x == NL or (e + 1 < n and ((x == SP and body[e + 1] == STAR) or (x == PIPE and body[e + 1] == SP))):
                    v = k
                    p = e
                    break
            if v < 0:
                return -1
            count = 1
            if body[p] == SP:  # " *N", read here rather than by _run_count (whose tuple cost 20%)
                p += 2
                d0 = p
                count = 0
                while p < n and body[p] >= D0 and body[p] <= D9:
                    count = count * 10 + (body[p] - D0)
                    p += 1
                if p == d0 or p - d0 > 9 or body[d0] == D0 or p >= n:
                    return -1
                with_count += 1
            else:
                without_count += 1
            if count > w - c:
                return -1
            for k in range(c, c + count):
                grid[r, k] = v
            c += count
            x = body[p]
            if x == PIPE:
                if p + 1 >= n or body[p + 1] != SP:
                    return -1
                p += 2
            elif x == NL:
                break
            else:
                return -1
        if c != w:
            return -1
        if r == h - 1:
            if p + 1 != n:
                return -1
        elif p + 1 >= n or body[p + 1] != SP:
            return -1
        else:
            p += 2
    if with_count > 0 and without_count > 0:
        return -1
    return 0 if without_count == 0 else 1


@njit(cache=True)
def decode_grid_mask(body, lab, off, grid, mask):
    """:func:`decode_grid_into` and then the exact expansion (:func:`expand`) of the grid into
    ``mask`` (a C-contiguous ``(H, W)`` array of the grid's dtype), in one call. Returns the
    format code, or -1 (then neither array is filled)."""
    fmt = decode_grid_into(body, lab, off, grid)
    if fmt >= 0:
        expand(grid, False, mask)
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
