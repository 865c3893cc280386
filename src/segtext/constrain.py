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
of a label; the sets are memoised by state. Each row of a batch (beam search and
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
        nb, depth, end, tok_start, toks, n = CK.build_trie(buf, off, order, int(lengths[order].sum()) + 1)
        self.nb, self.depth, self.end, self.tok_start, self.toks = nb, depth, end, tok_start, toks
        self.max_depth = max(longest, 1)


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
        self._out = np.empty(max(self._trie.size, 1), np.int32)
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
        out = np.empty(CK.NS, np.int64)
        if not CK.advance(*self._g, np.array(state, np.int64), data, a, b, out):
            return None
        return tuple(int(x) for x in out)

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
        t = int(token_id)
        if not 0 <= t < self._trie.size:
            return None
        if t in self.eos_token_id:
            return None
        tr = self._trie
        a, b = int(tr.off[t]), int(tr.off[t + 1])
        if a == b:
            return None
        return self._feed_bytes(state, tr.buf, a, b)

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
        return state is not None and bool(CK.accepting(self._g[0], np.array(state, np.int64)))

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
        tr = self._trie
        n = CK.allowed_tokens(*self._g, np.array(state, np.int64), tr.nb, tr.depth, tr.end,
                              tr.tok_start, tr.toks, tr.max_depth, self._out)
        ids = np.sort(self._out[:n].astype(np.int64))
        if self.is_accepting(state):
            ids = np.union1d(ids, self._eos)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[state] = ids
        return ids


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
        self._states: dict[bytes, tuple | None] = {}
        self.refused = 0
        if not hasattr(self, "_torch"):
            self._torch: dict[tuple, tuple[str, Any]] = {}  # kept across generations

    def reset(self) -> None:
        """Forget the rows of the last generation (done by itself when a new prompt comes)."""
        self._init_tracking()

    def _row_state(self, gen: np.ndarray, prev: dict) -> tuple | None | str:
        key = gen.tobytes()
        if key in prev:
            return prev[key]
        if gen.shape[0] == 0:
            return self.automaton.start()
        parent = prev.get(gen[:-1].tobytes(), None)
        if parent is None and gen.shape[0] > 1 and gen[:-1].tobytes() not in prev:
            # not seen step by step (a processor reused across calls): replay the row
            parent = self._replay(gen[:-1])
        last = int(gen[-1])
        if parent == "done" or (parent is not None and parent != "done"
                                and self.automaton.is_accepting(parent) and last in self.automaton.eos_token_id):
            return "done"
        nxt = self.automaton.advance(parent, last) if parent is not None else None
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
        import torch

        ids = input_ids.detach().to("cpu").numpy() if hasattr(input_ids, "detach") else np.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(ids.shape)}")
        B, L = ids.shape
        p = self._prompt
        if p is None or p.shape[0] != B or L < p.shape[1] or not np.array_equal(ids[:, : p.shape[1]], p):
            self._init_tracking()
            self._prompt = ids.copy()
            p = self._prompt
        gen = ids[:, p.shape[1]:]
        prev = self._states
        now: dict[bytes, Any] = {}
        V = scores.shape[-1]
        out = torch.full_like(scores, float("-inf"))  # one write pass; allowed scores copied back
        auto = self.automaton
        for r in range(B):
            state = self._row_state(gen[r], prev)
            now[gen[r].tobytes()] = state
            if state == "done":  # finished rows: left alone (generate pads them anyway)
                out[r] = scores[r]
                continue
            if state is None:  # a refused token (forced by something else): only EOS is left
                key: Any = ("eos",)
                allowed = auto._eos
            else:
                if gen.shape[1] >= self.max_prefix_tokens and auto.in_prefix(state):
                    state = auto.start_of_answer()  # the free text is long enough: the answer now
                key, allowed = state, None
            kind, index = self._index(key, allowed, V, out.device)
            if kind == "ids":  # a few allowed ids: their scores, the rest stays -inf
                out[r, index] = scores[r, index]
            else:  # most ids allowed: the row with the refused ones masked
                out[r] = scores[r].masked_fill(index, float("-inf"))
        self._states = now
        return out

    def _index(self, key: Any, allowed: np.ndarray | None, V: int, device: Any) -> tuple[str, Any]:
        """The allowed set of a state as torch indices (few ids) or a refusal mask (many), cached."""
        import torch

        cache_key = (key, V, str(device))
        got = self._torch.get(cache_key)
        if got is None:
            ids = self.automaton.allowed(key) if allowed is None else allowed
            ids = ids[ids < V]
            if len(ids) * 8 < V:
                got = ("ids", torch.as_tensor(ids, dtype=torch.long, device=device))
                limit = _TORCH_CACHE_LIMIT
            else:  # a vocabulary-sized mask: only a few such states (free text) are kept
                refuse = np.ones(V, bool)
                refuse[ids] = False
                got = ("mask", torch.from_numpy(refuse).to(device))
                limit = _MASK_CACHE_LIMIT
            same = [k for k, v in self._torch.items() if v[0] == got[0]] if len(self._torch) >= 64 else []
            if len(same) >= limit:
                for k in same:
                    del self._torch[k]
            self._torch[cache_key] = got
        return got


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
