"""Grammars for constrained decoding: the answers segtext's strict decoders accept, as Lark.

The functions here return the text of a grammar in the Lark dialect of `llguidance
<https://github.com/guidance-ai/llguidance>`_ (pass it to ``llguidance.grammar_from("lark", g)``
and then to an ``llguidance.LLMatcher``). They only build strings: this module does not
import llguidance, which stays an optional extra.

What each grammar describes
---------------------------
:func:`rrle_grammar`
    The whole answer ``"<seg>" + text + "</seg>"``, where ``text`` is what
    :func:`segtext.encode_rrle`, :func:`segtext.encode_isd` or :func:`segtext.encode_irle`
    write for an ``h x w`` grid over the given labels, and nothing else: labels only from the
    list, counts as decimals ``>= 1`` without leading zeros, and the cell count exact: every
    R-RLE row sums to exactly ``w`` and there are exactly ``h`` rows; every I-SD row has
    exactly ``w`` cells; the runs of an I-RLE text sum to exactly ``h * w``. With
    ``canonical=True`` two adjacent runs never share a label, as the encoders write them.
:func:`bsd_grammar`
    One or more B-SD blocks ``<ref>LABEL</ref><box>[x1,y1,x2,y2]</box><seg>BRICKS</seg>`` in
    one of the box presets of :data:`segtext.BOX_FORMATS`, box numbers in range, bricks
    ``<fg_k>`` / ``<bg_k>`` with ``1 <= k <= max_run``, and, with ``exact_sum=True``,
    brick lengths that sum to exactly ``resolution ** 2``.

Why a grammar and not a regular expression
------------------------------------------
The row-sum rule ("the counts of a row add up to exactly ``w``") is a fact about the *values*
of the decimal numbers in the row, not about their spelling. A regular expression has no
counter and cannot name a piece and reuse it, so it has to spell out, under every possible
count, a new copy of the expression for the rest of the row: ``rest(n) = k| rest(n-k)`` for
every ``k < n``, expanded in place. That doubles with every cell (a row of ``w`` cells has
``2 ** (w - 1)`` ways to be cut into runs, and the direct expansion lists them all), so at
16 cells it is already tens of thousands of nested copies, and at 32 cells or the 4,096
brick cells of B-SD far beyond any size. Even compiled to an automaton the rule is large: the
automaton must know the row, the cells left in it and the position inside the label being
read, ``h * w * (total label length)`` states (819,200 for 32 x 32 and 80 labels of ten
characters, more than llguidance's default of 250,000 lexer states). A context-free grammar
names each "cells left" state once, as a rule (``r16``: "16 cells left in this row"), reuses
it from every row, and keeps the labels in one lexeme; llguidance's Earley parser walks it
lazily.

Every grammar spells a label together with the delimiter after it (``"dog *"``, ``"dog| "``,
``"dog</ref>"``) as one lexeme: llguidance's lexer is greedy, so with ``"dog"`` and
``"dog house"`` as separate lexemes it would read ``"dog "`` as the start of ``"dog house"``
and reject ``"dog *2"``. The labels may not contain those delimiters, so the combined lexemes
never overlap.

Sizes are bounded (:data:`MAX_GRAMMAR_SYMBOLS`): a grammar larger than llguidance can build a
matcher for raises ``ValueError`` instead. R-RLE and I-SD grammars are small (R-RLE 32 x 32:
about 660 symbols for any number of labels, 55,000 with ``canonical=True`` and 80 labels;
I-SD: a handful); I-RLE needs about ``(h*w)**2 / 2`` (16 x 16 fits, 24 x 24 does not, nor
16 x 16 with ``canonical=True``), and the exact brick sum of B-SD about
``resolution**2 * max_run`` (32 x 32 bricks with ``max_run=63`` fit, 64 x 64 does not). For
those cases use the logits processors of :mod:`segtext.constrain` (``RRLELogitsProcessor``,
``BSDLogitsProcessor``), which count the cells as they go.

Example:
    >>> import segtext.grammar as sg
    >>> g = sg.rrle_grammar(["others", "dog"], (2, 4))
    >>> print(g.splitlines()[1])
    start: "<seg>" r4 ("\\n " r4){1} "\\n</seg>"
    >>> "RUN: \\"others *\\" | \\"dog *\\"" in g
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from segtext._validate import grid_size_arg, image_size_arg
from segtext.bricks import bsd_spelling
from segtext.labels import check_labels

__all__ = ["MAX_GRAMMAR_SYMBOLS", "bsd_grammar", "rrle_grammar"]

#: the largest grammar these functions write, in llguidance's internal symbols, estimated as
#: rules + terminals + literals + alternatives of two or more items (one-item alternatives cost
#: none). llguidance 1.9.1 numbers those symbols with 16 bits: a larger grammar passes
#: ``LLMatcher.validate_grammar``, but every ``LLMatcher`` built from it is in an error state
#: (``assertion failed: grammar.symbols.len() < u16::MAX``), so the functions refuse it first.
MAX_GRAMMAR_SYMBOLS = 64_000

_HEADER = "%llguidance {}"
_GRID_FORMATS = ("rrle", "isd", "irle")


def _lit(text: str) -> str:
    """``text`` as a Lark string literal (JSON escapes, which llguidance reads)."""
    return json.dumps(text, ensure_ascii=False)


def _too_large(what: str, n: int, advice: str) -> ValueError:
    return ValueError(f"{what} would need about {n:,} grammar symbols (one per rule and per "
                      f"alternative: there is one rule per number of cells left), more than "
                      f"segtext.grammar.MAX_GRAMMAR_SYMBOLS = {MAX_GRAMMAR_SYMBOLS:,} (llguidance "
                      f"1.9.1 builds no matcher for a grammar of more than 65,535 symbols); {advice}")


# --------------------------------------------------------------------------- number ranges


def _same_length_range(lo: str, hi: str) -> list[str]:
    """Regex pieces matching the decimals from ``lo`` to ``hi`` (same length, lo <= hi)."""
    if not lo:
        return [""]
    n = len(lo) - 1
    if lo[1:] == "0" * n and hi[1:] == "9" * n:  # whole decades: a class, then any digits
        first = lo[0] if lo[0] == hi[0] else f"[{lo[0]}-{hi[0]}]"
        return [first + ("[0-9]" * n if n < 3 else f"[0-9]{{{n}}}")]
    if lo[0] == hi[0]:
        return [lo[0] + rest for rest in _same_length_range(lo[1:], hi[1:])]
    out = []
    # lo[0] followed by lo[1:]..99..9, the digits strictly between with anything, hi[0] with 00..0..hi[1:]
    out += [lo[0] + rest for rest in _same_length_range(lo[1:], "9" * n)]
    a, b = int(lo[0]) + 1, int(hi[0]) - 1
    if a <= b:
        first = str(a) if a == b else f"[{a}-{b}]"
        out.append(first + ("[0-9]" * n if n < 3 else f"[0-9]{{{n}}}"))
    out += [hi[0] + rest for rest in _same_length_range("0" * n, hi[1:])]
    return out


def _range_regex(lo: int, hi: int) -> str:
    """A regex (``/.../``) for the decimals ``lo..hi`` without leading zeros (``0 <= lo <= hi``)."""
    pieces = []
    for digits in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (digits - 1) if digits > 1 else 0)
        b = min(hi, 10**digits - 1)
        if a <= b:
            pieces += _same_length_range(str(a), str(b))
    return "/(" + "|".join(pieces) + ")/"


# --------------------------------------------------------------------------- grid texts


def _runs_rules(n_cells: int, labels: tuple[str, ...], canonical: bool, sep: str) -> list[str]:
    """Rules ``r{n}``: one line of runs whose counts sum to exactly ``n``, for every
    ``n <= n_cells``, ``sep`` between runs. Non-canonical: ``r{n}: RUN c{n}``, ``c{n}`` the
    count (``"n"`` ends the line, ``"k| "`` continues with ``r{n-k}``). Canonical: ``a{i}_{n}``
    after label ``i`` with ``n`` cells left; ``x{i}_{m}`` any label but ``i`` next, as the
    union of the labels before ``i`` (``p{i}_{m}``, a chain) and after it (``s{i+1}_{m}``)."""
    rules = []
    if not canonical:
        rules.append("RUN: " + " | ".join(_lit(s + " *") for s in labels))
        for n in range(1, n_cells + 1):
            rules.append(f"r{n}: RUN c{n}")
            alts = [_lit(str(n))] + [f"{_lit(str(k) + sep)} r{n - k}" for k in range(1, n)]
            rules.append(f"c{n}: " + " | ".join(alts))
        return rules
    L = len(labels)
    for i, s in enumerate(labels):
        rules.append(f"L{i}: {_lit(s + ' *')}")
    rules.append(f"r{n_cells}: " + " | ".join(f"L{i} a{i}_{n_cells}" for i in range(L)))
    for i in range(L):
        for n in range(1, n_cells + 1) if L > 1 else (n_cells,):  # one label: one run a row
            alts = [_lit(str(n))]
            if L > 1:
                alts += [f"{_lit(str(k) + sep)} x{i}_{n - k}" for k in range(1, n)]
            rules.append(f"a{i}_{n}: " + " | ".join(alts))
    if L > 1:
        for m in range(1, n_cells):
            for j in range(1, L):  # p{j}: labels 0..j-1
                head = f"L{j - 1} a{j - 1}_{m}"
                rules.append(f"p{j}_{m}: {head}" + (f" | p{j - 1}_{m}" if j > 1 else ""))
            for j in range(L - 1, 0, -1):  # s{j}: labels j..L-1
                head = f"L{j} a{j}_{m}"
                rules.append(f"s{j}_{m}: {head}" + (f" | s{j + 1}_{m}" if j < L - 1 else ""))
            for i in range(L):
                parts = ([f"p{i}_{m}"] if i > 0 else []) + ([f"s{i + 1}_{m}"] if i < L - 1 else [])
                rules.append(f"x{i}_{m}: " + " | ".join(parts))
    return rules


def _runs_symbols(n: int, L: int, canonical: bool) -> int:
    """The size of what :func:`_runs_rules` writes (see :data:`MAX_GRAMMAR_SYMBOLS`)."""
    literals = 2 * n  # the counts, alone and with the separator
    if not canonical:
        return (2 * n + 1) + literals + n + n * (n - 1) // 2
    if L == 1:
        return 3 + 2
    rules = 1 + L * n + (n - 1) * (3 * L - 2)
    return rules + L + literals + L + L * n * (n - 1) // 2 + (n - 1) * 2 * (L - 1)


def rrle_grammar(labels: Sequence[str], grid_size: int | tuple[int, int], format: str = "rrle",
                 canonical: bool = False) -> str:
    """Lark grammar of a whole grid answer, ``"<seg>" + text + "</seg>"``, for llguidance.

    ``text`` is spelled as :func:`segtext.encode_rrle` (``format="rrle"``),
    :func:`segtext.encode_isd` (``"isd"``) or :func:`segtext.encode_irle` (``"irle"``)
    write it for an ``h x w`` grid over ``labels``, and the grammar accepts what
    ``segtext.decode_rrle(answer, labels, grid_size, mode="strict")`` accepts in that format
    as one ``<seg>`` block (with ``canonical=False`` that includes runs split in two, such as
    ``"dog *1| dog *2"``, which the decoder reads and the encoders never write; with
    ``canonical=True`` exactly the encoders' texts): the labels only from the list (equal
    texts count once); counts decimal,
    ``>= 1``, no leading zeros; R-RLE: exactly ``h`` rows, each row's counts summing to
    exactly ``w``; I-SD: exactly ``w`` cells in each of the ``h`` rows; I-RLE: one line
    whose counts sum to exactly ``h * w``. The rows are joined by ``"\\n "`` and the text
    ends with ``"\\n"``, as the encoders write it.

    Args:
        labels: ``labels[i]`` is the text of id ``i``; each must pass
            :func:`segtext.check_label`.
        grid_size: ``(h, w)`` or an int for a square grid.
        format: ``"rrle"``, ``"isd"`` or ``"irle"``.
        canonical: also require that two adjacent runs never share a label (within a row for
            R-RLE, over the whole line for I-RLE), as the encoders write them; the strict
            decoder also reads the split runs. Not for ``"isd"`` (its cells are not runs).

    Returns:
        The grammar text (start rule ``start``).

    Raises:
        TypeError: labels that are not a list of str, a ``grid_size`` that is not an int or
            a pair, ``canonical`` not a bool.
        ValueError: a bad label, an unknown format, ``canonical`` with ``"isd"``, or a
            grammar larger than :data:`MAX_GRAMMAR_SYMBOLS` (I-RLE needs about ``(h*w)**2 / 2``
            alternatives, so 24 x 24 is refused; use ``segtext.constrain.RRLELogitsProcessor``).

    Example:
        >>> from segtext.grammar import rrle_grammar
        >>> g = rrle_grammar(["others", "dog"], (2, 3))
        >>> print("\\n".join(g.splitlines()[:4]))
        %llguidance {}
        start: "<seg>" r3 ("\\n " r3){1} "\\n</seg>"
        RUN: "others *" | "dog *"
        r1: RUN c1
        >>> print(g.splitlines()[-1])
        c3: "3" | "1| " r2 | "2| " r1
    """
    vocab = tuple(dict.fromkeys(check_labels(labels)))  # equal texts are one label
    h, w = grid_size_arg(grid_size)
    if not isinstance(format, str) or format not in _GRID_FORMATS:
        raise ValueError(f"format must be one of {_GRID_FORMATS}, got {format!r}")
    if not isinstance(canonical, bool):
        raise TypeError(f"canonical must be a bool, got {type(canonical).__name__}")
    lines = [_HEADER]
    if format == "isd":
        if canonical:
            raise ValueError("canonical=True is for the run formats 'rrle' and 'irle'; an I-SD text "
                             "has one label per cell, so adjacent cells may share a label")
        # a cell is spelled with what follows it: "dog| " inside a row, "dog\n" at its end
        row = "CELL " * (w - 1) + "LAST" if w <= 4 else f"CELL{{{w - 1}}} LAST"
        lines.append(f'start: "<seg>" row (" " row){{{h - 1}}} "</seg>"' if h > 1
                     else 'start: "<seg>" row "</seg>"')
        lines.append(f"row: {row}" if w > 1 else "row: LAST")
        lines.append("CELL: " + " | ".join(_lit(s + "| ") for s in vocab))
        lines.append("LAST: " + " | ".join(_lit(s + "\n") for s in vocab))
        return "\n".join(lines) + "\n"
    n = w if format == "rrle" else h * w
    total = _runs_symbols(n, len(vocab), canonical)
    if total > MAX_GRAMMAR_SYMBOLS:
        name = "an R-RLE" if format == "rrle" else "an I-RLE"
        raise _too_large(f"{name} grammar of a {h}x{w} grid with {len(vocab)} labels"
                         + (" (canonical)" if canonical else ""), total,
                         "use segtext.constrain.RRLELogitsProcessor (a logits processor), which "
                         "counts the cells as it goes"
                         + ("" if format == "rrle" else ", or the R-RLE format (one rule set per row)"))
    if format == "rrle" and h > 1:
        lines.append(f'start: "<seg>" r{n} ("\\n " r{n}){{{h - 1}}} "\\n</seg>"')
    else:
        lines.append(f'start: "<seg>" r{n} "\\n</seg>"')
    lines += _runs_rules(n, vocab, canonical, "| ")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- B-SD


def _bricks_symbols(cells: int, max_run: int) -> int:
    """The size of the exact brick sum over ``cells`` cells (see :data:`MAX_GRAMMAR_SYMBOLS`)."""
    k = min(cells, max_run)
    return cells + 3 * k + k * (k - 1) // 2 + (cells - k) * max_run


def bsd_grammar(labels: Sequence[str] | None = None, resolution: int = 64, box_format: str = "norm1000",
                max_objects: int | None = None, max_run: int = 63, row_wise: bool = False,
                fg_token: str = "<fg_{k}>", bg_token: str = "<bg_{k}>", exact_sum: bool = False,
                image_size: tuple[int, int] | None = None) -> str:
    """Lark grammar of B-SD answers (one or more blocks), for llguidance.

    Each block is ``<ref>LABEL</ref><box>[x1,y1,x2,y2]</box><seg>BRICKS</seg>`` in the
    spelling of the ``box_format`` preset (:data:`segtext.BOX_FORMATS`; ``qwen2vl`` writes
    ``<|object_ref_start|>LABEL<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``),
    blocks concatenated with nothing between them, as :func:`segtext.encode_bsd` writes them.

    * LABEL: one of ``labels`` (equal texts count once), or with ``labels=None`` any
      non-empty text without ``"<"``.
    * Box numbers: decimals without leading zeros in ``0..1000`` (``norm1000``, ``qwen2vl``)
      or, for ``pixel``, ``0..W`` for x and ``0..H`` for y. The grammar does not express
      ``x1 < x2`` or ``y1 < y2`` (the decoder repairs a swapped or empty box).
    * BRICKS: ``fg_token`` / ``bg_token`` with ``k`` in ``1..max_run``. With
      ``exact_sum=True`` their lengths sum to exactly ``resolution ** 2`` (and with
      ``row_wise=True`` to exactly ``resolution`` in each row), one rule per number of cells
      left. With ``exact_sum=False`` (the default) any positive number of bricks: the sum is
      then NOT enforced, and a block may decode with ``bricks_too_few`` / ``bricks_too_many``
      repairs; :mod:`segtext.constrain`'s ``BSDLogitsProcessor`` is the practical way to
      enforce the exact 4,096-cell sum at 64 x 64, which as a grammar would need about
      ``resolution**2 * max_run`` alternatives (258,000, far more than
      :data:`MAX_GRAMMAR_SYMBOLS`; resolution 32 with ``max_run=63`` is the largest that fits,
      and ``row_wise=True`` needs only about ``resolution * max_run``).

    Tags and bricks are spelled as plain text; a tokenizer that holds them as special
    tokens must also let llguidance match them as text.

    Args:
        labels: the allowed labels, or ``None`` for free text.
        resolution, max_run, row_wise, box_format, fg_token, bg_token: as
            :func:`segtext.encode_bsd` (checked the same way).
        max_objects: at most this many blocks (``None``: one or more, unbounded).
        exact_sum: enforce the brick sum (see above).
        image_size: ``(H, W)``, required by the ``pixel`` preset for the coordinate ranges
            (checked, and otherwise unused, by the others).

    Returns:
        The grammar text (start rule ``start``).

    Raises:
        TypeError: labels that are not a list of str, flags that are not bools.
        ValueError: an empty label or one holding a tag, bad parameters, ``pixel`` without
            ``image_size``, or an exact-sum grammar larger than :data:`MAX_GRAMMAR_SYMBOLS`.

    Example:
        >>> from segtext.grammar import bsd_grammar
        >>> g = bsd_grammar(["cat"], resolution=2, max_run=4, exact_sum=True)
        >>> print("\\n".join(g.splitlines()[1:4]))
        start: block+
        block: "<ref>" REF "<box>[" X "," X "," X "," X "]</box><seg>" s4 "</seg>"
        REF: "cat</ref>"
        >>> print(g.splitlines()[-1])
        s4: B1 s3 | B2 s2 | B3 s1 | B4
    """
    cfg = bsd_spelling(resolution, max_run, row_wise, box_format, fg_token, bg_token)
    sp, S = cfg.box, cfg.resolution
    for name, flag in (("exact_sum", exact_sum), ("row_wise", row_wise)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if max_objects is not None and (isinstance(max_objects, bool) or not isinstance(max_objects, int)
                                    or max_objects < 1):
        raise ValueError(f"max_objects must be None or a positive int, got {max_objects!r}")
    size = None if image_size is None else image_size_arg(image_size)
    if sp.scale is None and size is None:
        raise ValueError(f"box_format {box_format!r} writes pixel coordinates: pass image_size=(H, W) "
                         "for their ranges")
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise TypeError(f"labels must be None or a list of str, got {type(labels).__name__}")
        if len(labels) == 0:
            raise ValueError("labels is empty; pass None for free-text labels")
        vocab = tuple(dict.fromkeys(cfg.check_label(s, f"labels[{i}]") for i, s in enumerate(labels)))
    cells, row = (S, True) if row_wise else (S * S, False)
    if exact_sum:
        total = _bricks_symbols(cells, cfg.max_run)
        if total > MAX_GRAMMAR_SYMBOLS:
            raise _too_large(f"an exact-sum B-SD grammar at resolution {S} with max_run {cfg.max_run}",
                             total, "pass exact_sum=False (the sum is then not enforced) and use "
                             "segtext.constrain's BSDLogitsProcessor for the exact sum")
    quantifier = "+" if max_objects is None else (f"{{1,{max_objects}}}" if max_objects > 1 else "")
    bricks = (f"s{cells}" if not row else f"s{S}" + (f"{{{S}}}" if S > 1 else "")) if exact_sum else "BRICK+"
    if sp.scale is None:
        H, W = size
        xy = ("X", "Y") if H != W else ("X", "X")
        ranges = [f"X: {_range_regex(0, W)}"] + ([f"Y: {_range_regex(0, H)}"] if H != W else [])
    else:
        xy = ("X", "X")
        ranges = [f"X: {_range_regex(0, sp.scale)}"]
    x, y = xy
    # the tags and the box's brackets as a few literals: '<box>[' x ',' y ',' x ',' y ']</box><seg>'
    opening, middle, closing = ("(", "),(", ")") if sp.pairs else ("[", ",", "]")
    box = (f"{_lit(sp.box_open + opening)} {x} \",\" {y} {_lit(middle)} {x} \",\" {y} "
           f"{_lit(closing + sp.box_close + sp.seg_open)}")
    lines = [_HEADER, f"start: block{quantifier}",
             f"block: {_lit(sp.ref_open)} REF {box} {bricks} {_lit(sp.seg_close)}"]
    if labels is None:  # the label and its closing tag as one lexeme
        lines.append(f"REF: /[^<]+/ {_lit(sp.ref_close)}")
    else:
        lines.append("REF: " + " | ".join(_lit(s + sp.ref_close) for s in vocab))
    lines += ranges
    (bpre, fpre), (bpost, fpost) = cfg.prefixes, cfg.suffixes
    if not exact_sum:
        k = _range_regex(1, cfg.max_run)
        lines.append(f"BRICK: {_lit(fpre)} {k} {_lit(fpost)} | {_lit(bpre)} {k} {_lit(bpost)}")
        return "\n".join(lines) + "\n"
    for k in range(1, min(cells, cfg.max_run) + 1):
        lines.append(f"B{k}: {_lit(fpre + str(k) + fpost)} | {_lit(bpre + str(k) + bpost)}")
    for n in range(1, cells + 1):
        alts = [f"B{k} s{n - k}" for k in range(1, min(n - 1, cfg.max_run) + 1)]
        if n <= cfg.max_run:
            alts.append(f"B{n}")
        lines.append(f"s{n}: " + " | ".join(alts))
    return "\n".join(lines) + "\n"
