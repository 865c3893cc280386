"""Constrained generation: logits processors that only let a model write texts our strict decoders accept.

What is allowed
---------------
:class:`RRLELogitsProcessor` (R-RLE, I-SD, I-RLE) allows exactly the answers
``<seg>`` + a grid text + ``</seg>`` + EOS where the grid text is what the encoders write for an
``h x w`` grid: labels from ``labels`` spelled exactly, ``" *"`` and a decimal count (no
leading zero) that never exceeds what is left of the row, ``"| "`` only inside a row, ``"\\n "``
only when the row is complete, exactly ``h`` rows, then ``"\\n</seg>"``. With
``canonical=True`` two adjacent runs never share a label, as the encoder writes them.

:class:`BSDLogitsProcessor` allows B-SD blocks ``<ref>LABEL</ref><box>[x1,y1,x2,y2]</box><seg>
BRICKS</seg>`` (in the box preset's spelling): a label from ``labels``, or free text without
``<`` and control characters when ``labels`` is None; four integers in range with
``x1 < x2`` and ``y1 < y2``; bricks whose counts sum to exactly ``resolution ** 2`` (and stop
at row ends with ``row_wise``); then another block, up to ``max_objects``, or EOS.

With ``start="seg"`` the model first writes free text (without ``<``) until it writes
``<seg>`` (B-SD: ``<ref>``); the constraint starts there. EOS is allowed only where the text is
complete, so every answer that ends with EOS decodes in ``strict`` mode (an answer cut off by
``max_new_tokens`` is incomplete: give generation room for the longest answer).

How it works
------------
The grammar is a byte-level automaton whose state is a few integers (row, cells used, label
trie node, count so far, ...) and which refuses a byte as soon as no accepted text can follow.
The tokenizer's vocabulary is decoded to bytes once (:func:`segtext.tokens.token_bytes`) and
put in a byte trie (cached per tokenizer). The tokens allowed in a state are found by walking
the trie with the automaton in compiled code, pruning every subtree at its first refused byte,
so a token may span several pieces of the format (``" *1"``, ``"| dog"``, ``"6\\n"``) or part
of a label; the sets and transitions are memoised, keyed by a canonical form of the state (states
that differ only in how far the answer is from its end, further than one token reaches, share one
set; see ``TokenAutomaton._canonical``). Each row of a batch (beam search and
``num_return_sequences`` included) keeps its own state, found from the tokens it generated.

Decode the generated ids with ``skip_special_tokens=False`` when the format tokens were added
as special tokens, and with ``clean_up_tokenization_spaces=False``.

Example:
    >>> import segtext as st
    >>> from segtext.constrain import TokenAutomaton
    >>> from segtext.tokens import byte_level_tokenizer
    >>> tok = byte_level_tokenizer()
    >>> auto = TokenAutomaton.for_grid(tok, ["others", "dog"], (1, 2))
    >>> state = auto.feed(auto.start(), "<seg>others *1| dog *")
    >>> [tok.decode([i]) for i in auto.allowed(state)]          # one cell left: only '1'
    ['1']
    >>> auto.accepts("<seg>others *1| dog *1\\n</seg>"), auto.accepts("<seg>others *2\\n</seg>")
    (True, True)
    >>> auto.accepts("<seg>others *1| others *2\\n</seg>")
    False
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from segtext._kernels import constrain as CK
from segtext._validate import grid_size_arg, image_size_arg
from segtext.labels import check_labels
from segtext.limits import MAX_BRICK_CELLS, MAX_GRID_CELLS

__all__ = ["BSDLogitsProcessor", "RRLELogitsProcessor", "TokenAutomaton"]

_GRID_FORMATS = {"rrle": 0, "isd": 1, "irle": 2}
_STARTS = ("answer", "seg")
_MEMO_LIMIT = 50_000
_TORCH_CACHE_LIMIT = 4096  # allowed sets kept as torch indices
_MASK_CACHE_LIMIT = 64  # ... and as vocabulary-sized masks
_UNSEEN = object()


def _max_occurrences(trie: Any, strings: tuple[bytes, ...]) -> int:
    """The most disjoint occurrences of ``strings`` (summed over them) in one token of ``trie``."""
    key = ("occurrences", strings)
    got = trie.stats.get(key)
    if got is None:
        got = 0
        firsts = {s[0] for s in strings if s}
        if all(strings):
            for p in trie.pieces:
                if p and any(b in p for b in firsts) and any(s in p for s in strings):
                    got = max(got, sum(p.count(s) for s in strings))
        else:  # an empty prefix: no bound from the vocabulary
            got = trie.max_depth
        trie.stats[key] = got
    return got


def _max_pair_count(trie: Any, first: int, seconds: tuple[int, ...]) -> int:
    """The most times a token of ``trie`` holds the byte ``first`` followed by one of ``seconds``."""
    key = ("pairs", first, seconds)
    got = trie.stats.get(key)
    if got is None:
        buf, off = trie.buf, trie.off
        if buf.shape[0] < 2:
            got = 0
        else:
            hit = (buf[:-1] == first) & np.isin(buf[1:], np.array(seconds, np.uint8))
            pos = np.flatnonzero(hit)
            tok = np.searchsorted(off, pos, side="right") - 1
            pos, tok = pos[pos + 1 < off[tok + 1]], tok[pos + 1 < off[tok + 1]]  # both bytes in one token
            got = int(np.bincount(tok).max()) if tok.shape[0] else 0
        trie.stats[key] = got
    return got


# --------------------------------------------------------------------------- token tries


class _TokenTrie:
    """The byte trie of a tokenizer's tokens (EOS, padding and BOS left out)."""

    def __init__(self, tokenizer: Any, exclude: set[int]) -> None:
        from segtext.tokens import token_bytes

        pieces = token_bytes(tokenizer)
        self.size = len(pieces)
        self.pieces = pieces
        ids = [i for i, p in enumerate(pieces) if p and i not in exclude]
        longest = max((len(pieces[i]) for i in ids), default=0)
        if longest >= 4096:
            raise ValueError(f"a token of {longest} bytes; tokens of at most 4095 bytes are supported")
        order = np.array(sorted(ids, key=pieces.__getitem__), np.int64)
        lengths = np.array([len(p) for p in pieces], np.int64)
        off = np.zeros(len(pieces) + 1, np.int64)
        np.cumsum(lengths, out=off[1:])
        buf = np.frombuffer(b"".join(pieces), np.uint8) if off[-1] else np.zeros(0, np.uint8)
        self.buf, self.off = buf, off
        self.bounds = off.tolist()  # the same offsets as Python ints (read per generated token)
        nb, depth, end, tok_start, toks, n = CK.build_trie(buf, off, order, int(lengths[order].sum()) + 1)
        self.nb, self.depth, self.end, self.tok_start, self.toks = nb, depth, end, tok_start, toks
        self.max_depth = max(longest, 1)
        # each node's children side by side: what the allowed-token walk reads
        self.info, self.kid_byte, self.kid_node = CK.build_children(nb, depth, end, tok_start)
        self.stats: dict[tuple, int] = {}  # facts about the vocabulary, computed on demand


_TRIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _trie_for(tokenizer: Any, exclude: set[int]) -> _TokenTrie:
    key = (len(tokenizer), tuple(sorted(exclude)))
    try:
        cached = _TRIES.get(tokenizer)
    except TypeError:  # not weak-referenceable or unhashable: no cache
        return _TokenTrie(tokenizer, exclude)
    if cached is not None and cached[0] == key:
        return cached[1]
    trie = _TokenTrie(tokenizer, exclude)
    try:
        _TRIES[tokenizer] = (key, trie)
    except TypeError:
        pass
    return trie


def _special_ids(tokenizer: Any, eos_token_id: Any) -> tuple[list[int], set[int]]:
    """The EOS ids, and the ids kept out of the trie (EOS, padding, BOS)."""
    if eos_token_id is None:
        eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id=")
    eos = [eos_token_id] if isinstance(eos_token_id, (int, np.integer)) else list(eos_token_id)
    if not eos or not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) and 0 <= e for e in eos):
        raise ValueError(f"eos_token_id must be a non-negative int or a list of them, got {eos_token_id!r}")
    eos = [int(e) for e in eos]
    exclude = set(eos)
    for extra in (tokenizer.pad_token_id, getattr(tokenizer, "bos_token_id", None)):
        if extra is not None:
            exclude.add(int(extra))
    return eos, exclude


# --------------------------------------------------------------------------- grammars


def _label_trie(strings: list[tuple[bytes, int, int]]) -> tuple[np.ndarray, ...]:
    """Dense trie of prefix-free byte strings, each ending a label id with a terminator index."""
    nodes: list[dict[int, int]] = [{}]
    leaf = [-1]
    term = [-1]
    for s, lab, t in strings:
        node = 0
        for b in s:
            nxt = nodes[node].get(b)
            if nxt is None:
                nxt = len(nodes)
                nodes[node][b] = nxt
                nodes.append({})
                leaf.append(-1)
                term.append(-1)
            node = nxt
        if nodes[node] or leaf[node] >= 0:
            raise ValueError(f"the label strings are not prefix-free at {s!r}")
        leaf[node], term[node] = lab, t
    n = len(nodes)
    LT = np.full((n, 256), -1, np.int32)
    for i, kids in enumerate(nodes):
        for b, j in kids.items():
            LT[i, b] = j
    SUB = np.full((n, 2, 2), -1, np.int64)
    for i in range(n - 1, -1, -1):  # children have larger indices than their parents
        if leaf[i] >= 0:
            SUB[i, term[i]] = leaf[i]
        for j in nodes[i].values():
            for t in range(2):
                lo, hi = SUB[j, t]
                if lo < 0:
                    continue
                if SUB[i, t, 0] < 0 or lo < SUB[i, t, 0]:
                    SUB[i, t, 0] = lo
                if hi > SUB[i, t, 1]:
                    SUB[i, t, 1] = hi
    return LT, np.array(leaf, np.int64), np.array(term, np.int64), SUB


def _lits(parts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=off[1:])
    buf = np.frombuffer(b"".join(parts), np.uint8).copy() if off[-1] else np.zeros(1, np.uint8)
    return buf, off


def _start_arg(start: Any) -> int:
    if start not in _STARTS:
        raise ValueError(f"start must be one of {_STARTS}, got {start!r}")
    return _STARTS.index(start)


def _grid_grammar(labels: Any, grid_size: Any, format: Any, canonical: Any, start: Any) -> tuple:
    vocab = check_labels(labels)
    if len(set(vocab)) != len(vocab):
        raise ValueError("labels holds a label twice")
    h, w = grid_size_arg(grid_size)
    if h * w > MAX_GRID_CELLS:
        raise ValueError(f"grid_size {h}x{w} has more than segtext.limits.MAX_GRID_CELLS cells")
    if format not in _GRID_FORMATS:
        raise ValueError(f"format must be one of {tuple(_GRID_FORMATS)}, got {format!r}")
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {canonical!r}")
    fmt = _GRID_FORMATS[format]
    if canonical and fmt == 1:
        raise ValueError("canonical applies to runs (rrle, irle); an I-SD text has none")
    P = np.array([0, h, w, fmt, int(canonical), len(vocab), _start_arg(start)], np.int64)
    terms = [b"| ", b"\n"] if fmt == 1 else [b" *"]
    strings = [(lab.encode("utf-8") + t, i, j) for i, lab in enumerate(vocab) for j, t in enumerate(terms)]
    lits, loff = _lits([b"<seg>", b"</seg>"])
    return (P, lits, loff, *_label_trie(strings))


def _bsd_grammar(labels: Any, resolution: Any, box_format: Any, max_objects: Any, max_run: Any,
                 row_wise: Any, fg_token: Any, bg_token: Any, start: Any, image_size: Any,
                 max_label_length: Any) -> tuple:
    from segtext.bricks import bsd_spelling

    cfg = bsd_spelling(resolution, max_run, row_wise, box_format, fg_token, bg_token)
    sp = cfg.box
    if sp.scale is None:
        if image_size is None:
            raise ValueError("box_format 'pixel' needs image_size=(H, W) for the box ranges")
        H, W = image_size_arg(image_size)
        x_max, y_max = W, H
    else:
        if image_size is not None:
            image_size_arg(image_size)
        x_max = y_max = sp.scale
    limit = MAX_BRICK_CELLS // (cfg.resolution * cfg.resolution)
    if max_objects is None:
        max_objects = limit
    if isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)) or not 1 <= max_objects <= limit:
        raise ValueError(f"max_objects must be None or an int in 1..{limit} (what one text may decode to), "
                         f"got {max_objects!r}")
    if isinstance(max_label_length, bool) or not isinstance(max_label_length, (int, np.integer)) or max_label_length < 1:
        raise ValueError(f"max_label_length must be a positive int, got {max_label_length!r}")
    seps = ("(", ",", "),(", ",", ")") if sp.pairs else ("[", ",", ",", ",", "]")
    parts = [sp.ref_open, sp.ref_close + sp.box_open + seps[0], seps[1], seps[2], seps[3],
             seps[4] + sp.box_close + sp.seg_open, sp.seg_close, cfg.prefixes[0], cfg.prefixes[1],
             cfg.suffixes[0], cfg.suffixes[1]]
    enc = [p.encode("utf-8") for p in parts]
    starts = [enc[7], enc[8], enc[6]]  # what may start where a brick starts
    for i, a in enumerate(starts):
        for j, b in enumerate(starts):
            if i != j and b.startswith(a):
                raise ValueError(f"the brick spelling {parts[7]!r}/{parts[8]!r} and {sp.seg_close!r} must "
                                 "start differently")
    if labels is None:
        given = 0
        strings: list[tuple[bytes, int, int]] = []
    else:
        if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
            raise TypeError(f"labels must be None or a non-empty sequence of str, got {labels!r}")
        vocab = [cfg.check_label(lab, "labels") for lab in labels]
        if len(set(vocab)) != len(vocab):
            raise ValueError("labels holds a label twice")
        given = 1
        strings = [(lab.encode("utf-8") + enc[1], i, 0) for i, lab in enumerate(vocab)]
    P = np.array([1, cfg.resolution * cfg.resolution, cfg.resolution, cfg.max_run, int(cfg.row_wise), x_max, y_max, int(max_objects),
                  _start_arg(start), given, int(max_label_length)], np.int64)
    lits, loff = _lits(enc)
    return (P, lits, loff, *_label_trie(strings))


# --------------------------------------------------------------------------- the automaton


class TokenAutomaton:
    """A grammar over a tokenizer's tokens: which token ids may follow a state.

    States are tuples of ints (hashable; build the first with :meth:`start`). Build one with
    :meth:`for_grid` or :meth:`for_bsd`; the logits processors wrap one. Use it directly to
    drive another generation loop.

    Example:
        >>> from segtext.constrain import TokenAutomaton
        >>> from segtext.tokens import byte_level_tokenizer
        >>> tok = byte_level_tokenizer()
        >>> auto = TokenAutomaton.for_bsd(tok, ["cat"], resolution=2)
        >>> s = auto.feed(auto.start(), "<ref>cat</ref><box>[0,0,1000,1000]</box><seg><fg_")
        >>> sorted(tok.decode([i]) for i in auto.allowed(s))   # 1..4 cells
        ['1', '2', '3', '4']
        >>> auto.accepts("<ref>cat</ref><box>[0,0,1000,1000]</box><seg><fg_2><bg_2></seg>")
        True
    """

    def __init__(self, tokenizer: Any, grammar: tuple, eos_token_id: Any = None) -> None:
        eos, exclude = _special_ids(tokenizer, eos_token_id)
        self.tokenizer = tokenizer
        self.eos_token_id = eos
        self._eos = np.array(eos, np.int64)
        self._trie = _trie_for(tokenizer, exclude)
        self._g = grammar
        self._memo: dict[tuple, np.ndarray] = {}
        self._next: dict[tuple, tuple | None] = {}  # (state, token) -> state, memoised as the sets
        self._out = np.empty(max(self._trie.size, 1), np.int32)
        depth = self._trie.max_depth + 1  # scratch of the trie walk: a state, a position, an end per level
        self._scratch = (np.empty((depth, CK.NS), np.int64), np.empty(depth, np.int64), np.empty(depth, np.int64))
        self._nxt = np.empty(CK.NS, np.int64)
        self._final = CK.G_END if grammar[0][0] == 0 else CK.B_BLOCKEND
        self._canon = self._canonical_bounds()
        st = np.empty(CK.NS, np.int64)
        CK.start_state(grammar[0], st)
        self._start = tuple(int(x) for x in st)
        answer_only = grammar[0].copy()
        answer_only[6 if answer_only[0] == 0 else 8] = 0
        CK.start_state(answer_only, st)
        self._answer = tuple(int(x) for x in st)
        self.vocab_size = self._trie.size

    @classmethod
    def for_grid(cls, tokenizer: Any, labels: Sequence[str], grid_size: int | tuple[int, int],
                 format: str = "rrle", start: str = "answer", canonical: bool = False,
                 eos_token_id: int | Sequence[int] | None = None) -> TokenAutomaton:
        """The grid-text grammar (see :class:`RRLELogitsProcessor` for the arguments).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others", "dog"], 2, format="isd")
            >>> auto.accepts("<seg>others| dog\\n dog| dog\\n</seg>"), auto.accepts("<seg>others| dog\\n</seg>")
            (True, False)
        """
        return cls(tokenizer, _grid_grammar(labels, grid_size, format, canonical, start), eos_token_id)

    @classmethod
    def for_bsd(cls, tokenizer: Any, labels: Sequence[str] | None = None, resolution: int = 64,
                box_format: str = "norm1000", max_objects: int | None = None, start: str = "answer",
                max_run: int = 63, row_wise: bool = False, fg_token: str = "<fg_{k}>",
                bg_token: str = "<bg_{k}>", image_size: tuple[int, int] | None = None,
                max_label_length: int = 64,
                eos_token_id: int | Sequence[int] | None = None) -> TokenAutomaton:
        """The B-SD grammar (see :class:`BSDLogitsProcessor` for the arguments).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_bsd(byte_level_tokenizer(), resolution=1, max_objects=1)
            >>> auto.accepts("<ref>a cat</ref><box>[0,0,9,9]</box><seg><fg_1></seg>")
            True
            >>> auto.accepts("<ref>a cat</ref><box>[9,0,9,9]</box><seg><fg_1></seg>")   # x1 < x2
            False
        """
        return cls(tokenizer, _bsd_grammar(labels, resolution, box_format, max_objects, max_run,
                                           row_wise, fg_token, bg_token, start, image_size,
                                           max_label_length), eos_token_id)

    def start(self) -> tuple[int, ...]:
        """The state before anything is generated.

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], 1)
            >>> auto.is_accepting(auto.start())
            False
        """
        return self._start

    def start_of_answer(self) -> tuple[int, ...]:
        """The state where the answer itself starts (``<seg>``, or B-SD's first ``<ref>``): with
        ``start="seg"`` the processors switch to it when the free text is long enough.

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], 1, start="seg")
            >>> auto.in_prefix(auto.start()), auto.in_prefix(auto.start_of_answer())
            (True, False)
        """
        return self._answer

    def in_prefix(self, state: tuple[int, ...] | None) -> bool:
        """Whether ``state`` is in the free text before the answer (``start="seg"``).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], 1, start="seg")
            >>> auto.in_prefix(auto.feed(auto.start(), "Sure: ")), auto.in_prefix(auto.feed(auto.start(), "<se"))
            (True, False)
        """
        return state is not None and state[0] in (CK.G_FREE, CK.B_FREE)

    def _feed_bytes(self, state: tuple[int, ...], data: np.ndarray, a: int, b: int) -> tuple[int, ...] | None:
        cur = np.array(state, np.int64)
        if not CK.advance(*self._g, cur, self._nxt, data, a, b):
            return None
        return tuple(cur.tolist())

    def advance(self, state: tuple[int, ...] | None, token_id: int) -> tuple[int, ...] | None:
        """The state after one token, or ``None`` when the grammar refuses it (EOS included:
        EOS leads nowhere; check :meth:`is_accepting` first).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> tok = byte_level_tokenizer()
            >>> auto = TokenAutomaton.for_grid(tok, ["others"], 1)
            >>> auto.advance(auto.start(), tok.convert_tokens_to_ids("<")) is not None
            True
            >>> auto.advance(auto.start(), tok.convert_tokens_to_ids("x")) is None
            True
        """
        if state is None:
            return None
        if type(state) is not tuple:
            state = tuple(int(x) for x in state)
        t = int(token_id)
        key = (state, t)
        got = self._next.get(key, _UNSEEN)
        if got is not _UNSEEN:
            return got
        nxt = None
        if 0 <= t < self._trie.size and t not in self.eos_token_id:
            tr = self._trie
            a, b = tr.bounds[t], tr.bounds[t + 1]
            base, delta = self._shift(state) if a != b else (state, 0)
            r = self.advance(base, t) if delta else None
            slot = self._slot(r) if r is not None else -1
            if slot >= 0:  # one token from far from the end stays as far: the same move, shifted back
                nxt = (*r[:slot], r[slot] - delta, *r[slot + 1:])
            elif a != b and (delta == 0 or r is not None):
                nxt = self._feed_bytes(state, tr.buf, a, b)
        if len(self._next) >= _MEMO_LIMIT:
            self._next.clear()
        self._next[key] = nxt
        return nxt

    def feed(self, state: tuple[int, ...] | None, text: str | bytes) -> tuple[int, ...] | None:
        """The state after the bytes of ``text`` (UTF-8), or ``None`` when refused.

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], 1)
            >>> auto.feed(auto.start(), "<seg>oth") is None, auto.feed(auto.start(), "<seg>cat") is None
            (False, True)
        """
        if state is None:
            return None
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if not data:
            return state
        return self._feed_bytes(state, np.frombuffer(data, np.uint8), 0, len(data))

    def is_accepting(self, state: tuple[int, ...] | None) -> bool:
        """Whether the text so far is complete (EOS may follow).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], 1)
            >>> auto.is_accepting(auto.feed(auto.start(), "<seg>others *1\\n</seg>"))
            True
        """
        return state is not None and state[0] == self._final  # as CK.accepting

    def accepts(self, text: str | bytes) -> bool:
        """Whether the grammar accepts the whole ``text`` (then EOS).

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> auto = TokenAutomaton.for_grid(byte_level_tokenizer(), ["others"], (1, 2))
            >>> auto.accepts("<seg>others *2\\n</seg>"), auto.accepts("<seg>others *3\\n</seg>")
            (True, False)
        """
        return self.is_accepting(self.feed(self._start, text))

    def allowed(self, state: tuple[int, ...] | None) -> np.ndarray:
        """The token ids allowed next (sorted ``int64``), EOS included where the text is complete.

        Example:
            >>> from segtext.constrain import TokenAutomaton
            >>> from segtext.tokens import byte_level_tokenizer
            >>> tok = byte_level_tokenizer()
            >>> auto = TokenAutomaton.for_grid(tok, ["others"], 1)
            >>> [tok.decode([i]) for i in auto.allowed(auto.feed(auto.start(), "<seg>others *1\\n</seg>"))]
            ['<|endoftext|>']
        """
        if state is None:
            return np.zeros(0, np.int64)
        got = self._memo.get(state)
        if got is not None:
            return got
        key = self._canonical(state)
        got = self._memo.get(key) if key is not state else None
        if got is None:
            got = self._walk(key)
            if len(self._memo) >= _MEMO_LIMIT - 1:
                self._memo.clear()
            self._memo[key] = got
        self._memo[state] = got
        return got

    def _walk(self, state: tuple[int, ...]) -> np.ndarray:
        """The allowed ids of ``state`` by a walk of the token trie (no memo, no canonical form)."""
        tr = self._trie
        n = CK.allowed_kids(*self._g, np.array(state, np.int64), tr.info, tr.kid_byte, tr.kid_node, tr.toks,
                            *self._scratch, self._out)
        ids = self._out[:n].astype(np.int64)
        ids.sort()
        if state[0] == self._final:
            ids = np.union1d(ids, self._eos)
        return ids

    # A state's allowed tokens depend only on what the grammar accepts in the next token's bytes,
    # so states that differ only in how far the answer is from its end, when both are further
    # than one token can reach, have the same allowed set: the memo keys them by one canonical
    # state (the walk runs once for all of them). Grid texts (R-RLE, I-SD): the row, when more
    # rows are left than one token can cross (a row end is crossed where a newline is followed
    # by ' ' or '<', at most 1 + the most such pairs in a token of the vocabulary); and, unless
    # ``canonical``, the previous label (it only serves that check). B-SD: the cells done, when
    # more cells are left than the bricks that can end in one token cover, plus one brick (a
    # brick ends in a token if it was begun before it or if its whole prefix is in it: at most
    # 1 + the most brick prefixes in a token of the vocabulary, each at most ``max_run`` cells);
    # row-wise, by whole rows, keeping the column. ``tests/test_constrain.py`` checks the memo
    # against the plain walk on every state of long answers.

    def _canonical_bounds(self) -> tuple[int, ...] | None:
        P, lits, loff = self._g[0], self._g[1], self._g[2]
        tr = self._trie
        if P[0] == 0:
            if P[3] == 2:  # I-RLE: one line, no rows
                return None
            crossings = 1 + _max_pair_count(tr, 10, (32, int(lits[loff[1]])))
            return (0, int(P[1]), crossings, int(P[4]))
        prefixes = tuple(bytes(lits[loff[k]:loff[k + 1]]) for k in (7, 8))
        total, side, max_run, row_wise = (int(x) for x in P[1:5])
        reach = (2 + _max_occurrences(tr, prefixes)) * max_run + 1
        return (1, total, side, reach, row_wise)

    def _slot(self, state: tuple[int, ...]) -> int:
        """The slot of ``state`` that counts how far the answer is (row, cells done), or -1."""
        ph = state[0]
        if self._g[0][0] == 0:
            return 2 if ph in (CK.G_LABEL, CK.G_COUNT, CK.G_BAR, CK.G_NL) else -1
        if ph == CK.B_BRICK or ph == CK.B_DIGITS:
            return 3
        if ph == CK.B_LIT and state[3] == CK.N_BRICKS:
            return 4
        return -1

    def _shift(self, state: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """``state`` moved to the last row (cells done) that is still out of a token's reach of
        the end, and by how much; ``(state, 0)`` when it is within reach or has no such slot."""
        c = self._canon
        if c is None:
            return state, 0
        slot = self._slot(state)
        if slot < 0:
            return state, 0
        at = state[slot]
        if c[0] == 0:
            h, crossings = c[1], c[2]
            if h - 1 - at <= crossings:
                return state, 0
            to = h - 1 - crossings
        else:
            total, side, reach, row_wise = c[1], c[2], c[3], c[4]
            left = total - at
            if left <= reach:
                return state, 0
            to = at + (left - reach) // side * side if row_wise else total - reach
        if to == at:
            return state, 0
        return (*state[:slot], to, *state[slot + 1:]), to - at

    def _canonical(self, state: tuple[int, ...]) -> tuple[int, ...]:
        """A state with the same allowed tokens as ``state`` (see above); ``state`` itself when none."""
        s, _ = self._shift(state)
        c = self._canon
        if c is not None and c[0] == 0 and not c[3] and s[0] in (CK.G_LABEL, CK.G_COUNT, CK.G_BAR) and s[4] != -1:
            s = (*s[:4], -1, *s[5:])  # the previous label only serves canonical runs
        return s


# --------------------------------------------------------------------------- logits processors


def _positive(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return int(v)


class _Processor:
    """Shared by the two processors: one automaton state per generated row."""

    automaton: TokenAutomaton

    def _init_tracking(self) -> None:
        self._prompt: np.ndarray | None = None
        self._prompt_key = b""
        self._states: dict[bytes, tuple | None | str] = {}
        self.refused = 0
        if not hasattr(self, "_torch"):  # kept across generations
            self._torch: dict[tuple, Any] = {}  # allowed sets as torch indices (few ids)
            self._torch_masks: dict[tuple, Any] = {}  # ... as refusal masks (most ids allowed)
            self._masks: dict[tuple, np.ndarray] = {}  # ... as numpy masks of the allowed ids

    def reset(self) -> None:
        """Forget the rows of the last generation (done by itself when a new prompt comes)."""
        self._init_tracking()

    def _row_state(self, gen: np.ndarray, key: bytes, prev: dict) -> tuple | None | str:
        """The state of a row whose generated ids are ``gen`` (``key``: their bytes), from the
        rows of the step before (``prev``, by their bytes)."""
        got = prev.get(key, _UNSEEN)
        if got is not _UNSEEN:
            return got
        if gen.shape[0] == 0:
            return self.automaton.start()
        parent = prev.get(key[: -gen.itemsize], _UNSEEN)
        if parent is _UNSEEN:  # not seen step by step (a processor reused across calls): replay the row
            parent = self._replay(gen[:-1])
        last = int(gen[-1])
        auto = self.automaton
        if parent == "done" or (parent is not None and auto.is_accepting(parent) and last in auto.eos_token_id):
            return "done"
        nxt = auto.advance(parent, last) if parent is not None else None
        if nxt is None:
            self.refused += 1
        return nxt

    def _replay(self, gen: np.ndarray) -> tuple | None | str:
        state: Any = self.automaton.start()
        for t in gen.tolist():
            if state == "done":
                return state
            if state is not None and self.automaton.is_accepting(state) and t in self.automaton.eos_token_id:
                state = "done"
                continue
            state = self.automaton.advance(state, t)
        return state

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if hasattr(input_ids, "detach"):
            if input_ids.requires_grad:
                input_ids = input_ids.detach()
            ids = (input_ids if input_ids.device.type == "cpu" else input_ids.cpu()).numpy()
        else:
            ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(ids.shape)}")
        B, L = ids.shape
        p = self._prompt
        if p is None or p.shape[0] != B or L < p.shape[1] or not (
                ids[:, : p.shape[1]].tobytes() == self._prompt_key if ids.dtype == p.dtype
                else np.array_equal(ids[:, : p.shape[1]], p)):
            self._init_tracking()
            self._prompt = p = ids.copy()
            self._prompt_key = p.tobytes()
        gen = ids[:, p.shape[1]:]
        prev = self._states
        now: dict[bytes, Any] = {}
        auto = self.automaton
        rows: list[Any] = []
        switch = gen.shape[1] >= self.max_prefix_tokens
        for r in range(B):
            g = gen[r]
            key = g.tobytes()
            state = self._row_state(g, key, prev)
            now[key] = state
            if switch and state is not None and state != "done" and auto.in_prefix(state):
                state = auto.start_of_answer()  # the free text is long enough: the answer now
            rows.append(state)
        self._states = now
        return self._apply(rows, scores)

    def _apply(self, rows: list[Any], scores: Any) -> Any:
        """The scores with every refused id at ``-inf`` (a new tensor; ``scores`` is not changed).

        Finished rows are left alone (``generate`` pads them anyway); a row in state ``None`` (a
        token the grammar refused, forced by something else) is only allowed EOS.
        """
        import torch

        V = scores.shape[-1]
        if (scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64)
                and scores.dim() == 2 and not scores.requires_grad):
            # on the CPU in compiled code: each entry of the output written once, no torch call
            s = scores.numpy()
            o = np.empty(s.shape, s.dtype)
            for r, state in enumerate(rows):
                if state == "done":
                    CK.keep_all(s, o, r)
                    continue
                kind, index = self._np_index(state, V)
                if kind == "ids":  # a few allowed ids: their scores, the rest -inf
                    CK.keep_ids(s, o, r, index)
                else:  # most ids allowed: the scores where the mask allows
                    CK.keep_where(s, o, r, index)
            return torch.from_numpy(o)
        out = torch.full_like(scores, float("-inf"))  # one write pass; allowed scores copied back
        for r, state in enumerate(rows):
            if state == "done":
                out[r] = scores[r]
                continue
            kind, index = self._index(state, V, out.device)
            if kind == "ids":
                out[r, index] = scores[r, index]
            else:  # most ids allowed: the row with the refused ones masked
                out[r] = scores[r].masked_fill(index, float("-inf"))
        return out

    def _allowed_ids(self, state: Any, V: int) -> np.ndarray:
        """The allowed ids of a row's state below ``V`` (sorted; ``None``: EOS only)."""
        if state is None:
            ids = np.sort(self.automaton._eos)
        else:
            ids = self.automaton.allowed(state)
        if ids.shape[0] and ids[-1] >= V:
            ids = ids[ids < V]
        return ids

    def _np_index(self, state: Any, V: int) -> tuple[str, np.ndarray]:
        """The allowed set of a state as numpy ids (few) or a boolean mask of the allowed (many)."""
        ids = self._allowed_ids(state, V)
        if ids.shape[0] * 8 < V:
            return "ids", ids
        key = (state, V)
        mask = self._masks.get(key)
        if mask is None:  # a vocabulary-sized mask: only a few such states (free text) are kept
            mask = np.zeros(V, bool)
            mask[ids] = True
            if len(self._masks) >= _MASK_CACHE_LIMIT:
                self._masks.clear()
            self._masks[key] = mask
        return "mask", mask

    def _index(self, state: Any, V: int, device: Any) -> tuple[str, Any]:
        """The allowed set of a state as torch indices (few ids) or a refusal mask (many), cached
        per device (the path of scores on an accelerator, or in a dtype numpy lacks)."""
        import torch

        key = (state, V, str(device))
        got = self._torch.get(key)
        if got is not None:
            return "ids", got
        got = self._torch_masks.get(key)
        if got is not None:
            return "mask", got
        ids = self._allowed_ids(state, V)
        if ids.shape[0] * 8 < V:
            got = torch.as_tensor(ids, dtype=torch.long, device=device)
            cache, limit, kind = self._torch, _TORCH_CACHE_LIMIT, "ids"
        else:
            refuse = np.ones(V, bool)
            refuse[ids] = False
            got = torch.from_numpy(refuse).to(device)
            cache, limit, kind = self._torch_masks, _MASK_CACHE_LIMIT, "mask"
        if len(cache) >= limit:
            cache.clear()
        cache[key] = got
        return kind, got


class RRLELogitsProcessor(_Processor):
    """A ``transformers`` logits processor that only allows grid texts our strict decoder accepts.

    Args:
        tokenizer: the model's fast tokenizer (any byte-level or SentencePiece-style BPE).
        labels: the labels the model may write (``labels[0]`` the background, as
            :func:`segtext.encode_rrle` takes them), spelled exactly.
        grid_size: ``(h, w)`` or an int.
        format: ``"rrle"`` (default), ``"isd"`` or ``"irle"``.
        start: ``"answer"`` (the generated text is ``<seg>...</seg>``) or ``"seg"`` (free
            text without ``<`` until the model writes ``<seg>``).
        canonical: runs as the encoder writes them (adjacent runs never share a label).
        eos_token_id: the id (or ids) that end an answer; default the tokenizer's EOS.
        max_prefix_tokens: with ``start="seg"``, after this many generated tokens of free text
            the answer must start (so that generation always ends with a mask).

    Pass it to ``model.generate(..., logits_processor=LogitsProcessorList([proc]))``; greedy,
    sampling, beam search, batches with padding and ``num_return_sequences`` all work (each row
    has its own state). ``proc.refused`` counts tokens the grammar had refused that were
    generated anyway (another processor forcing them); such a row is then only allowed EOS.

    Example:
        >>> import torch
        >>> from segtext.constrain import RRLELogitsProcessor
        >>> from segtext.tokens import byte_level_tokenizer
        >>> tok = byte_level_tokenizer()
        >>> proc = RRLELogitsProcessor(tok, ["others", "dog"], (1, 1))
        >>> ids = torch.tensor([tok.encode("Segment the dog.")])      # the prompt: the answer starts with <seg>
        >>> scores = proc(ids, torch.zeros(1, len(tok)))
        >>> [tok.decode([i]) for i in torch.nonzero(scores[0] > -1e9).flatten().tolist()]
        ['<']
    """

    def __init__(self, tokenizer: Any, labels: Sequence[str], grid_size: int | tuple[int, int],
                 format: str = "rrle", start: str = "answer", canonical: bool = False,
                 eos_token_id: int | Sequence[int] | None = None, max_prefix_tokens: int = 64) -> None:
        self.automaton = TokenAutomaton.for_grid(tokenizer, labels, grid_size, format, start, canonical,
                                                 eos_token_id)
        self.max_prefix_tokens = _positive(max_prefix_tokens, "max_prefix_tokens")
        self._init_tracking()


class BSDLogitsProcessor(_Processor):
    """A ``transformers`` logits processor that only allows B-SD blocks our strict decoder accepts.

    Args:
        tokenizer: the model's fast tokenizer; with the brick tokens added
            (:func:`segtext.tokens.add_format_tokens`) a brick is one token, without them
            several; both work.
        labels: the labels the model may write in ``<ref>..</ref>``; ``None`` allows free text
            without ``<`` or control characters, at most ``max_label_length`` bytes.
        resolution, box_format, max_run, row_wise, fg_token, bg_token: as :func:`segtext.encode_bsd`.
        max_objects: the most blocks in an answer (default: what one text may decode to).
        start: ``"answer"`` (the text starts with ``<ref>``) or ``"seg"`` (free text first).
        image_size: ``(H, W)``, needed by ``box_format="pixel"`` for the box ranges.
        max_label_length: the longest free label, in bytes (``labels=None``).
        eos_token_id: the id (or ids) that end an answer; default the tokenizer's EOS.
        max_prefix_tokens: with ``start="seg"``, after this many generated tokens of free text
            the first block must start.

    Example:
        >>> import torch
        >>> from segtext.constrain import BSDLogitsProcessor
        >>> from segtext.tokens import add_format_tokens, byte_level_tokenizer
        >>> tok = byte_level_tokenizer()
        >>> _ = add_format_tokens(tok, ("bsd",), max_run=4)
        >>> proc = BSDLogitsProcessor(tok, ["cat"], resolution=2, max_run=4)
        >>> prompt = torch.tensor([tok.encode("Segment the cat.")])
        >>> scores = proc(prompt, torch.zeros(1, len(tok)))          # the answer must start with <ref>
        >>> [tok.decode([i]) for i in torch.nonzero(scores[0] > -1e9).flatten().tolist()]
        ['<']
    """

    def __init__(self, tokenizer: Any, labels: Sequence[str] | None = None, resolution: int = 64,
                 box_format: str = "norm1000", max_objects: int | None = None, start: str = "answer",
                 max_run: int = 63, row_wise: bool = False, fg_token: str = "<fg_{k}>",
                 bg_token: str = "<bg_{k}>", image_size: tuple[int, int] | None = None,
                 max_label_length: int = 64,
                 eos_token_id: int | Sequence[int] | None = None, max_prefix_tokens: int = 64) -> None:
        self.automaton = TokenAutomaton.for_bsd(tokenizer, labels, resolution, box_format, max_objects,
                                                start, max_run, row_wise, fg_token, bg_token, image_size,
                                                max_label_length, eos_token_id)
        self.max_prefix_tokens = _positive(max_prefix_tokens, "max_prefix_tokens")
        self._init_tracking()
