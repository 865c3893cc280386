"""Numba kernels of constrained generation: a byte-level grammar stepper and a token-trie walk.

Private module behind :mod:`segtext.constrain`; the tests compare it with the languages of
small grids enumerated in plain Python (``tests/test_constrain.py``).

The grammar state is a small ``int64`` vector (:data:`NS` slots): slot 0 the phase, the
others as listed at each phase below; slots a phase does not use are 0, so equal states are
equal vectors (the Python side memoises allowed-token sets by state). A step never leaves a
state from which no accepted text can be reached: every check that could fail later is made
as soon as the byte that commits to it is read.

Grammar parameters ``P`` (``int64``):

* grid texts: ``P[0] = 0``, ``h, w, fmt (0 rrle, 1 isd, 2 irle), canonical, n_labels``,
  ``P[6]`` start (0: the answer starts with ``<seg>``; 1: free text without ``<`` first);
* B-SD: ``P[0] = 1``, ``S*S, S, max_run, row_wise, x_max, y_max, max_objects``, ``P[8]``
  start, ``P[9]`` labels given (1) or free text (0), ``P[10]`` the longest free label in bytes.

Literals ``lits[loff[i]:loff[i+1]]``: grid: 0 ``<seg>``, 1 ``</seg>``. B-SD: 0 the label
tag, 1 ``</ref><box>`` + the box opening, 2..4 the separators after x1, y1, x2, 5 the box
closing + ``</box><seg>``, 6 ``</seg>``, 7/8 the background/foreground brick prefixes, 9/10
their suffixes (possibly empty).

Labels: a dense trie ``LT[node, byte]`` (-1: no edge) of each label followed by its
terminator (grid: ``" *"``, or for I-SD ``"| "`` and ``"\\n"``; B-SD: literal 1), so the
strings are prefix-free; ``LEAF[node]`` the label id at the end of a string (else -1),
``TERM[node]`` which terminator, ``SUB[node, term, 0/1]`` the smallest / largest label id
below the node with that terminator (-1: none).
"""

from __future__ import annotations

import numpy as np
from numba import njit

NS = 8  # state slots

# The grammar kernels allocate nothing: compiled without numba's runtime (``_nrt=False``) they
# take their arrays without reference counting, which otherwise costs more than the work of a
# byte step (an atomic increment and decrement per array argument and call: about 50 ns a step
# against 1 ns). Allocating kernels (``advance``, ``build_trie``) call them as usual.
try:
    njit(_nrt=False)
    _plain = njit(cache=True, nogil=True, _nrt=False)
    _plain_inline = njit(cache=True, nogil=True, inline="always", _nrt=False)
except (TypeError, KeyError):  # pragma: no cover - a numba without the flag
    _plain = njit(cache=True, nogil=True)
    _plain_inline = njit(cache=True, nogil=True, inline="always")

# grid phases
G_FREE, G_SEGOPEN, G_LABEL, G_COUNT, G_BAR, G_NL, G_SEGCLOSE, G_END = 1, 2, 3, 4, 5, 6, 7, 8
# B-SD phases
B_FREE, B_LIT, B_LABEL, B_FREELABEL, B_NUM, B_BRICK, B_DIGITS, B_BLOCKEND = 11, 12, 13, 14, 15, 16, 17, 18
# what follows a B-SD literal
N_LABEL, N_NUM, N_BRICKS, N_BLOCKEND = 0, 1, 2, 3

_D0 = 48
_D9 = 57


@_plain
def _set(dst, ph, a, b, c, d, e, f, g):
    dst[0] = ph
    dst[1] = a
    dst[2] = b
    dst[3] = c
    dst[4] = d
    dst[5] = e
    dst[6] = f
    dst[7] = g


@_plain
def reachable(v, lo, hi):
    """Whether the digits read so far (value ``v``, at least one digit, no leading zero unless
    ``v == 0``) can still end as a number in ``[lo, hi]``."""
    if v == 0:
        return lo <= 0 <= hi
    a = v
    span = 1
    while a <= hi:
        if a + span - 1 >= lo:
            return True
        if a > (1 << 40):
            return False
        a *= 10
        span *= 10
    return False


@_plain
def _extends_to(v, target):
    """Whether ``target``'s decimal digits start with ``v``'s and are longer (``v >= 1``)."""
    t = target // 10
    while t >= v:
        if t == v:
            return True
        t //= 10
    return False


@_plain
def start_state(P, out):
    if P[0] == 0:
        if P[6] == 1:
            _set(out, G_FREE, 0, 0, 0, 0, 0, 0, 0)
        else:
            _set(out, G_SEGOPEN, 0, 0, 0, 0, 0, 0, 0)
    else:
        if P[8] == 1:
            _set(out, B_FREE, 0, 0, 0, 0, 0, 0, 0)
        else:
            _set(out, B_LIT, 0, 0, N_LABEL, 0, 0, 0, 0)


@_plain
def accepting(P, st):
    if P[0] == 0:
        return st[0] == G_END
    return st[0] == B_BLOCKEND


# --------------------------------------------------------------------------- grid texts
# G_LABEL: node, row, col (cells used: in the row, or in the grid for I-RLE), prev label (-1)
# G_COUNT: value, row, col, label
# G_BAR: -, row, col, prev label      (after '|', a space)
# G_NL: -, row                        (after the '\n' that ends row `row`)
# G_SEGOPEN / G_SEGCLOSE: position in the literal


@_plain
def _label_viable(P, SUB, node, col, prev):
    w = P[2]
    if P[3] == 1:  # I-SD: the terminator is decided by the column
        term = 0 if col + 1 < w else 1
        return SUB[node, term, 0] >= 0
    mn = SUB[node, 0, 0]
    if mn < 0:
        return False
    if P[4] == 1 and prev >= 0:
        return mn != prev or SUB[node, 0, 1] != prev
    return True


@_plain
def _grid_step(P, lits, loff, LT, LEAF, TERM, SUB, src, dst, b):
    ph = src[0]
    h = P[1]
    w = P[2]
    fmt = P[3]
    if ph == G_FREE:
        if b == lits[loff[0]]:
            _set(dst, G_SEGOPEN, 1, 0, 0, 0, 0, 0, 0)
            return True
        _set(dst, G_FREE, 0, 0, 0, 0, 0, 0, 0)
        return True
    if ph == G_SEGOPEN or ph == G_SEGCLOSE:
        lit = 0 if ph == G_SEGOPEN else 1
        pos = src[1]
        if lits[loff[lit] + pos] != b:
            return False
        pos += 1
        if loff[lit] + pos < loff[lit + 1]:
            _set(dst, ph, pos, 0, 0, 0, 0, 0, 0)
        elif ph == G_SEGOPEN:
            _set(dst, G_LABEL, 0, 0, 0, -1, 0, 0, 0)
        else:
            _set(dst, G_END, 0, 0, 0, 0, 0, 0, 0)
        return True
    if ph == G_LABEL:
        row = src[2]
        col = src[3]
        prev = src[4]
        child = LT[src[1], b]
        if child < 0 or not _label_viable(P, SUB, child, col, prev):
            return False
        lab = LEAF[child]
        if lab < 0:
            _set(dst, G_LABEL, child, row, col, prev, 0, 0, 0)
        elif fmt == 1:  # I-SD: the cell is complete with its terminator
            if TERM[child] == 0:
                _set(dst, G_LABEL, 0, row, col + 1, lab, 0, 0, 0)
            else:
                _set(dst, G_NL, 0, row, 0, 0, 0, 0, 0)
        else:
            _set(dst, G_COUNT, 0, row, col, lab, 0, 0, 0)
        return True
    if ph == G_COUNT:
        v = src[1]
        row = src[2]
        col = src[3]
        lab = src[4]
        left = (w - col) if fmt == 0 else (h * w - col)
        bar_ok = P[4] == 0 or P[5] >= 2
        if _D0 <= b <= _D9:
            d = b - _D0
            if v == 0 and d == 0:
                return False
            v2 = v * 10 + d
            if v2 > left:
                return False
            if not (v2 == left or bar_ok or _extends_to(v2, left)):
                return False
            _set(dst, G_COUNT, v2, row, col, lab, 0, 0, 0)
            return True
        if v == 0:
            return False
        if b == 124:  # '|'
            if v >= left or not bar_ok:
                return False
            _set(dst, G_BAR, 0, row, col + v, lab, 0, 0, 0)
            return True
        if b == 10:  # '\n'
            if v != left:
                return False
            _set(dst, G_NL, 0, row if fmt == 0 else h - 1, 0, 0, 0, 0, 0)
            return True
        return False
    if ph == G_BAR:
        if b != 32:
            return False
        _set(dst, G_LABEL, 0, src[2], src[3], src[4], 0, 0, 0)
        return True
    if ph == G_NL:
        row = src[2]
        if row + 1 < h:
            if b != 32:
                return False
            _set(dst, G_LABEL, 0, row + 1, 0, -1, 0, 0, 0)
            return True
        if b != lits[loff[1]]:
            return False
        _set(dst, G_SEGCLOSE, 1, 0, 0, 0, 0, 0, 0)
        return True
    return False  # G_END and anything else: no more bytes


# --------------------------------------------------------------------------- B-SD blocks
# B_LIT: literal, position, what follows, -, x1, y1, objects
# B_LABEL: trie node, -, -, -, -, -, objects
# B_FREELABEL: bytes, UTF-8 continuation bytes still due, -, -, -, -, objects
# B_NUM: coordinate i, value, digits, -, x1, y1, objects
# B_BRICK: alive prefixes (bit 0 bg, 1 fg, 2 </seg>), position, cells done, -, -, -, objects
# B_DIGITS: kind, value, cells done, -, -, -, objects
# B_BLOCKEND: -, -, -, -, -, -, objects (blocks done)


@_plain
def _num_range(P, i, x1, y1):
    if i == 0:
        return 0, P[5] - 1
    if i == 1:
        return 0, P[6] - 1
    if i == 2:
        return x1 + 1, P[5]
    return y1 + 1, P[6]


@_plain
def _brick_cap(P, done):
    cap = P[3]
    left = P[1] - done
    if left < cap:
        cap = left
    if P[4] == 1:
        in_row = P[2] - done % P[2]
        if in_row < cap:
            cap = in_row
    return cap


@_plain
def _enter_bricks(P, dst, done, objects):
    alive = 4 if done == P[1] else 3
    _set(dst, B_BRICK, alive, 0, done, 0, 0, 0, objects)


@_plain
def _after_literal(P, dst, nxt, lit, done, x1, y1, objects):
    if nxt == N_LABEL:
        if P[9] == 1:
            _set(dst, B_LABEL, 0, 0, 0, 0, 0, 0, objects)
        else:
            _set(dst, B_FREELABEL, 0, 0, 0, 0, 0, 0, objects)
    elif nxt == N_NUM:  # the coordinate after the literal: literal 1 -> x1, 2 -> y1, 3 -> x2, 4 -> y2
        _set(dst, B_NUM, lit - 1, 0, 0, 0, x1, y1, objects)
    elif nxt == N_BRICKS:
        _enter_bricks(P, dst, done, objects)
    else:
        _set(dst, B_BLOCKEND, 0, 0, 0, 0, 0, 0, objects + 1)


@_plain
def _brick_choice(lits, loff, alive, pos, done, objects, b, dst):
    """Where a brick (or </seg>) starts: the prefixes still alive after byte ``b``."""
    now = 0
    for k in range(3):
        if alive & (1 << k):
            lit = 7 + k if k < 2 else 6
            if loff[lit] + pos < loff[lit + 1] and lits[loff[lit] + pos] == b:
                now |= 1 << k
    if now == 0:
        return False
    pos += 1
    for k in range(3):  # a completed prefix is the only one alive (they are prefix-free)
        if now & (1 << k):
            lit = 7 + k if k < 2 else 6
            if loff[lit] + pos == loff[lit + 1]:
                if k == 2:
                    _set(dst, B_BLOCKEND, 0, 0, 0, 0, 0, 0, objects + 1)
                else:
                    _set(dst, B_DIGITS, k, 0, done, 0, 0, 0, objects)
                return True
    _set(dst, B_BRICK, now, pos, done, 0, 0, 0, objects)
    return True


@_plain_inline
def _label_byte(n, due, b, longest):
    """One byte of a free label (not its closing '<'): ``(ok, bytes, UTF-8 bytes still due)``."""
    if n + 1 > longest or b == 60 or b < 32 or b == 127:  # no '<', no control bytes
        return False, n, due
    if due > 0:
        if b & 0xC0 != 0x80:
            return False, n, due
        due -= 1
    elif b >= 0x80:
        if 0xC2 <= b <= 0xDF:
            due = 1
        elif 0xE0 <= b <= 0xEF:
            due = 2
        elif 0xF0 <= b <= 0xF4:
            due = 3
        else:
            return False, n, due
    if due > longest - (n + 1):
        return False, n, due
    return True, n + 1, due


@_plain
def _bsd_step(P, lits, loff, LT, LEAF, TERM, SUB, src, dst, b):
    ph = src[0]
    objects = src[7]
    if ph == B_FREE:
        if b == lits[loff[0]]:
            if loff[0] + 1 == loff[1]:
                _after_literal(P, dst, N_LABEL, 0, 0, 0, 0, 0)
            else:
                _set(dst, B_LIT, 0, 1, N_LABEL, 0, 0, 0, 0)
            return True
        _set(dst, B_FREE, 0, 0, 0, 0, 0, 0, 0)
        return True
    if ph == B_LIT:
        lit = src[1]
        pos = src[2]
        if lits[loff[lit] + pos] != b:
            return False
        pos += 1
        if loff[lit] + pos < loff[lit + 1]:
            _set(dst, B_LIT, lit, pos, src[3], src[4], src[5], src[6], objects)
        else:
            _after_literal(P, dst, src[3], lit, src[4], src[5], src[6], objects)
        return True
    if ph == B_LABEL:
        child = LT[src[1], b]
        if child < 0:
            return False
        if LEAF[child] < 0:
            _set(dst, B_LABEL, child, 0, 0, 0, 0, 0, objects)
        else:  # the label and literal 1 are read: x1 next
            _set(dst, B_NUM, 0, 0, 0, 0, 0, 0, objects)
        return True
    if ph == B_FREELABEL:
        n = src[1]
        due = src[2]
        if b == lits[loff[1]]:
            if n == 0 or due != 0:
                return False
            if loff[1] + 1 == loff[2]:
                _set(dst, B_NUM, 0, 0, 0, 0, 0, 0, objects)
            else:
                _set(dst, B_LIT, 1, 1, N_NUM, 0, 0, 0, objects)
            return True
        ok, n2, due2 = _label_byte(n, due, b, P[10])
        if not ok:
            return False
        _set(dst, B_FREELABEL, n2, due2, 0, 0, 0, 0, objects)
        return True
    if ph == B_NUM:
        i = src[1]
        v = src[2]
        nd = src[3]
        x1 = src[5]
        y1 = src[6]
        lo, hi = _num_range(P, i, x1, y1)
        if _D0 <= b <= _D9:
            if nd > 0 and v == 0:
                return False
            v2 = v * 10 + (b - _D0)
            if not reachable(v2, lo, hi):
                return False
            _set(dst, B_NUM, i, v2, nd + 1, 0, x1, y1, objects)
            return True
        if nd == 0 or v < lo or v > hi:
            return False
        lit = 2 + i  # separators 2, 3, 4, then the box closing 5
        if lits[loff[lit]] != b:
            return False
        if i == 0:
            x1 = v
        elif i == 1:
            y1 = v
        nxt = N_BRICKS if i == 3 else N_NUM
        if loff[lit] + 1 == loff[lit + 1]:
            _after_literal(P, dst, nxt, lit, 0, x1, y1, objects)
        else:
            _set(dst, B_LIT, lit, 1, nxt, 0, x1, y1, objects)
        return True
    if ph == B_BRICK:
        return _brick_choice(lits, loff, src[1], src[2], src[3], objects, b, dst)
    if ph == B_DIGITS:
        kind = src[1]
        v = src[2]
        done = src[3]
        cap = _brick_cap(P, done)
        if _D0 <= b <= _D9:
            if v == 0 and b == _D0:
                return False
            v2 = v * 10 + (b - _D0)
            if v2 > cap:
                return False
            _set(dst, B_DIGITS, kind, v2, done, 0, 0, 0, objects)
            return True
        if v == 0:
            return False
        lit = 9 + kind
        if loff[lit] == loff[lit + 1]:  # no suffix: the byte starts the next brick or </seg>
            alive = 4 if done + v == P[1] else 3
            return _brick_choice(lits, loff, alive, 0, done + v, objects, b, dst)
        if lits[loff[lit]] != b:
            return False
        if loff[lit] + 1 == loff[lit + 1]:
            _enter_bricks(P, dst, done + v, objects)
        else:
            _set(dst, B_LIT, lit, 1, N_BRICKS, done + v, 0, 0, objects)
        return True
    if ph == B_BLOCKEND:
        if objects >= P[7] or b != lits[loff[0]]:
            return False
        if loff[0] + 1 == loff[1]:
            _after_literal(P, dst, N_LABEL, 0, 0, 0, 0, objects)
        else:
            _set(dst, B_LIT, 0, 1, N_LABEL, 0, 0, 0, objects)
        return True
    return False


@_plain
def step(P, lits, loff, LT, LEAF, TERM, SUB, src, dst, b):
    """One byte: write the next state to ``dst`` and return True, or return False (rejected)."""
    if P[0] == 0:
        return _grid_step(P, lits, loff, LT, LEAF, TERM, SUB, src, dst, b)
    return _bsd_step(P, lits, loff, LT, LEAF, TERM, SUB, src, dst, b)


@_plain
def advance(P, lits, loff, LT, LEAF, TERM, SUB, cur, nxt, data, start, stop):
    """Feed ``data[start:stop]`` from the state in ``cur``, leaving the state after it there;
    False when refused (``cur`` then holds a partial state). ``nxt`` is scratch."""
    for i in range(start, stop):
        if not step(P, lits, loff, LT, LEAF, TERM, SUB, cur, nxt, data[i]):
            return False
        for q in range(NS):
            cur[q] = nxt[q]
    return True


# --------------------------------------------------------------------------- the token trie


@njit(cache=True, nogil=True)
def build_trie(buf, off, order, n_nodes_max):
    """A byte trie of the tokens in preorder, from their bytes sorted (``order``).

    Returns ``(byte, depth, end, tok_start, toks, n_nodes)``: node ``i`` (0 the root) has the
    edge byte ``byte[i]`` at depth ``depth[i]``, its subtree is ``i .. end[i] - 1`` and the
    tokens ending there are ``toks[tok_start[i]:tok_start[i + 1]]``.
    """
    nb = np.zeros(n_nodes_max, np.uint8)
    depth = np.zeros(n_nodes_max, np.int32)
    end = np.zeros(n_nodes_max, np.int32)
    count = np.zeros(n_nodes_max + 1, np.int32)
    node_of = np.zeros(order.shape[0], np.int32)
    path = np.zeros(4096, np.int32)  # node at each depth of the previous token
    n = 1
    prev = -1
    for j in range(order.shape[0]):
        t = order[j]
        a = off[t]
        la = off[t + 1] - a
        lcp = 0
        if prev >= 0:
            p = off[prev]
            lp = off[prev + 1] - p
            while lcp < la and lcp < lp and buf[a + lcp] == buf[p + lcp]:
                lcp += 1
        for d in range(lcp, la):
            nb[n] = buf[a + d]
            depth[n] = d + 1
            path[d + 1] = n
            n += 1
        node_of[j] = path[la]
        count[path[la] + 1] += 1
        prev = t
    # subtree ends: the next node at the same depth or above
    stack = np.zeros(4097, np.int32)
    top = 0
    for i in range(1, n):
        while top > 0 and depth[stack[top - 1]] >= depth[i]:
            end[stack[top - 1]] = i
            top -= 1
        stack[top] = i
        top += 1
    while top > 0:
        end[stack[top - 1]] = n
        top -= 1
    end[0] = n
    for i in range(n):
        count[i + 1] += count[i]
    toks = np.zeros(order.shape[0], np.int32)
    fill = count[:n].copy()
    for j in range(order.shape[0]):
        node = node_of[j]
        toks[fill[node]] = order[j]
        fill[node] += 1
    return nb[:n].copy(), depth[:n].copy(), end[:n].copy(), count[: n + 1].copy(), toks, n


@njit(cache=True, nogil=True)
def allowed_tokens(P, lits, loff, LT, LEAF, TERM, SUB, st, nb, depth, end, tok_start, toks, max_depth, out):
    """Write the ids of every token whose bytes the grammar accepts from ``st``; return how many."""
    states = np.empty((max_depth + 1, NS), np.int64)
    states[0, :] = st
    n_nodes = nb.shape[0]
    k = 0
    i = 1
    free = G_FREE if P[0] == 0 else B_FREE
    trigger = lits[loff[0]]
    close = lits[loff[1]] if P[0] == 1 else -1
    while i < n_nodes:
        d = depth[i]
        src = states[d - 1]
        b = nb[i]
        ph = src[0]
        # free text and free labels (most of the vocabulary) inline; everything else by step()
        if ph == free and b != trigger:
            ok = True
            states[d, :] = src
        elif ph == B_FREELABEL and b != close:
            ok, n2, due2 = _label_byte(src[1], src[2], b, P[10])
            if ok:
                states[d, :] = src
                states[d, 1] = n2
                states[d, 2] = due2
        else:
            ok = step(P, lits, loff, LT, LEAF, TERM, SUB, src, states[d], b)
        if ok:
            for j in range(tok_start[i], tok_start[i + 1]):
                out[k] = toks[j]
                k += 1
            i += 1
        else:
            i = end[i]
    return k


def build_children(nb, depth, end, tok_start):
    """The children of each trie node side by side (numpy, once per trie).

    Returns ``(info, kid_byte, kid_node)``: the children of node ``i`` are
    ``kid_node[info[i, 0]:info[i + 1, 0]]`` in increasing byte order, with their edge bytes in
    ``kid_byte``; ``info[i, 1]`` is ``tok_start[i]``, so a node's children and tokens are read
    from one place. A walk over these reads the edge bytes of a node's children in one run of
    memory instead of hopping through the preorder arrays.
    """
    n = nb.shape[0]
    parent = np.zeros(n, np.int64)
    if n > 1:
        # in preorder, the parent of node i is the last node before it one level up
        last = np.zeros(int(depth.max()) + 2, np.int64)
        parent = _parents(depth, last)
    kid_node = np.argsort(parent[1:], kind="stable").astype(np.int32) + 1
    counts = np.bincount(parent[1:], minlength=n) if n > 1 else np.zeros(n, np.int64)
    info = np.zeros((n + 1, 2), np.int32)
    np.cumsum(counts, out=info[1:, 0])
    info[:, 1] = tok_start[: n + 1]
    return info, nb[kid_node].copy(), kid_node


@njit(cache=True, nogil=True)
def _parents(depth, last):
    n = depth.shape[0]
    parent = np.zeros(n, np.int64)
    for i in range(1, n):
        d = depth[i]
        parent[i] = last[d - 1]
        last[d] = i
    return parent


@_plain
def allowed_kids(P, lits, loff, LT, LEAF, TERM, SUB, st, info, kid_byte, kid_node, toks, states, pos, stop, out):
    """:func:`allowed_tokens` over the children arrays of :func:`build_children`: the same ids in
    the same order. ``states`` (``(max_depth + 1, NS)``), ``pos`` and ``stop`` (``max_depth +
    1``) are scratch buffers; no allocation, so no reference counting in the loop."""
    for q in range(NS):
        states[0, q] = st[q]
    free = G_FREE if P[0] == 0 else B_FREE
    trigger = lits[loff[0]]
    close = lits[loff[1]] if P[0] == 1 else -1
    k = 0
    d = 0
    pos[0] = info[0, 0]
    stop[0] = info[1, 0]
    while d >= 0:
        j = pos[d]
        if j == stop[d]:
            d -= 1
            continue
        pos[d] = j + 1
        b = kid_byte[j]
        src = states[d]
        ph = src[0]
        if ph == free and b != trigger:
            ok = True
            for q in range(NS):
                states[d + 1, q] = src[q]
        elif ph == B_FREELABEL and b != close:
            ok, n2, due2 = _label_byte(src[1], src[2], b, P[10])
            if ok:
                for q in range(NS):
                    states[d + 1, q] = src[q]
                states[d + 1, 1] = n2
                states[d + 1, 2] = due2
        else:
            ok = step(P, lits, loff, LT, LEAF, TERM, SUB, src, states[d + 1], b)
        if ok:
            c = kid_node[j]
            for q in range(info[c, 1], info[c + 1, 1]):
                out[k] = toks[q]
                k += 1
            a = info[c, 0]
            e = info[c + 1, 0]
            if a < e:
                d += 1
                pos[d] = a
                stop[d] = e
    return k


# --------------------------------------------------------------------------- masked scores


@_plain
def keep_ids(s, o, r, ids):
    """Row ``r`` of ``o``: ``-inf`` but at ``ids``, where it is ``s``'s (each entry written once)."""
    for j in range(o.shape[1]):
        o[r, j] = -np.inf
    for k in range(ids.shape[0]):
        i = ids[k]
        o[r, i] = s[r, i]


@_plain
def keep_where(s, o, r, allow):
    """Row ``r`` of ``o``: ``s``'s where ``allow``, else ``-inf``."""
    for j in range(o.shape[1]):
        o[r, j] = s[r, j] if allow[j] else -np.inf


@_plain
def keep_all(s, o, r):
    """Row ``r`` of ``o``: ``s``'s."""
    for j in range(o.shape[1]):
        o[r, j] = s[r, j]
