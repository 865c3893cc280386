"""What decoders report: repairs made to a model's text, and errors in strict mode.

Every decoder in segtext runs in one of three modes. In ``repair`` mode it never raises on
any ``str``; each fix it makes is recorded as a :class:`Repair` (a ``kind`` from
:data:`REPAIR_KINDS`, a message, and the 1-based line and column in the original text). In
``strict`` mode the first deviation raises :class:`DecodeError` instead, with the same
position plus what was expected and what was found.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from segtext.limits import MAX_TEXT_LENGTH

__all__ = ["REPAIR_KINDS", "DecodeError", "Repair"]

_NEWLINE = re.compile("\n")

#: every ``Repair.kind`` a decoder may report, with what it means
REPAIR_KINDS: dict[str, str] = {
    "missing_seg_open": "'</seg>' without '<seg>': the text before '</seg>' was decoded",
    "missing_seg_close": "'<seg>' without '</seg>': the text after '<seg>' was decoded "
                         "(in B-SD: up to the next block)",
    "row_separator": "a row break that is not exactly a newline followed by one space",
    "missing_count": "a run without ' *N' (or with an empty N): read as one cell",
    "bad_count": "a count that is not a plain positive decimal: its leading digits were used, else 1",
    "zero_count": "a run of zero cells: dropped",
    "row_too_short": "a row with fewer cells than the grid width: padded with its last label",
    "row_too_long": "a row with more cells than the grid width: truncated",
    "missing_rows": "fewer rows than the grid height: filled from the row above (background if none)",
    "extra_rows": "more rows than the grid height: dropped",
    "unknown_label": "a label outside the vocabulary: mapped by the unknown-label policy",
    "empty_label": "a run with an empty label: read as background",
    "label_whitespace": "a label with surrounding whitespace: stripped",
    "missing_final_newline": "the text does not end with a newline",
    "blank_line": "an empty line: skipped",
    "empty_text": "no runs at all: the grid is background",
    "total_mismatch": "a one-line text whose cells do not add up to h*w: padded with its last label or truncated",
    "t4s_parse_error": "Text4Seg's decoder failed on the text: the grid is background",
    "tag_case": "a tag in another case ('<SEG>', '</Seg>', '<REF>'): read as the tag",
    "extra_seg_block": "a second '<seg>' block after the first '</seg>': only the first block is read",
    "label_case": "a label in another case or with punctuation around it ('Others', 'dog.'): read as "
                  "the label it spells",
    "count_separator": "a run without the space before '*' ('dog*2'): read as a run",
    "truncated_label": "the text stops inside a label that begins a known one ('... othe'): read "
                       "as that label",
    "count_too_large": "a count larger than the grid holds (or than segtext.limits.MAX_COUNT): "
                       "clipped to that bound",
    "grid_too_large": "an inferred grid of more cells than segtext.limits.MAX_GRID_CELLS: cut to "
                      "the limit",
    "text_too_long": "a text longer than segtext.limits.MAX_TEXT_LENGTH characters: read up to "
                     "the limit",
    # B-SD (segtext.bricks)
    "missing_ref": "a box without a label before it: the label is ''",
    "missing_ref_close": "a label that is not closed: read up to the box",
    "missing_box": "a label without a box, or bricks outside any block: dropped",
    "missing_box_close": "a box that is not closed: read up to '<seg>'",
    "box_malformed": "a box not in the preset's spelling: its first four integers are used "
                     "(the object is dropped when there are fewer)",
    "box_out_of_range": "box coordinates outside the image: clipped",
    "bad_character": "a lone surrogate (a code point UTF-8 cannot hold): read as U+FFFD",
    "box_swapped": "a box with x2 < x1 or y2 < y1: the coordinates are swapped",
    "box_empty": "a box that covers no pixel: the object is dropped",
    "missing_seg": "a box without '<seg>': the object is dropped",
    "unknown_token": "text inside '<seg>' that is not a brick: skipped",
    "bad_brick": "a brick of length 0 (skipped), above the cap or with leading zeros (read as "
                 "written), or running over a row end in row-wise order",
    "bricks_too_many": "bricks covering more than S*S cells: truncated",
    "bricks_too_few": "bricks covering fewer than S*S cells: padded with background",
    "objects_too_many": "more objects than segtext.limits.MAX_BRICK_CELLS cells of bricks hold "
                        "(16,384 at S = 64): that block and all after it are dropped",
}


@dataclass(frozen=True, slots=True)  # slots: a text may need millions of repairs
class Repair:
    """One fix a decoder made: what (``kind``), why (``message``) and where (1-based).

    Example:
        >>> import segtext as st
        >>> st.decode_rrle("others *3\\n", grid_size=(1, 4)).repairs[0].kind
        'row_too_short'
    """

    kind: str
    message: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.kind}: {self.message}"


class DecodeError(ValueError):
    """A text that does not follow the format, raised by decoders in ``strict`` mode.

    Attributes: ``kind`` (as in :data:`REPAIR_KINDS`), ``line`` and ``column`` (1-based, in
    the text given to the decoder), ``expected`` and ``found``.

    Example:
        >>> import segtext as st
        >>> try:
        ...     st.decode_rrle("others *3\\n", grid_size=(1, 4), mode="strict")
        ... except st.DecodeError as e:
        ...     print(e.line, e.column, e.kind)
        1 1 row_too_short
    """

    def __init__(self, kind: str, message: str, line: int, column: int,
                 expected: str = "", found: str = "") -> None:
        self.kind = kind
        self.line = line
        self.column = column
        self.expected = expected
        self.found = found
        detail = f" (expected {expected}, found {found})" if expected or found else ""
        super().__init__(f"line {line}, column {column}: {message}{detail}")


def within_limit(text: str) -> bool:
    """Whether a decoder reads ``text`` whole (no ``text_too_long`` cut; see :func:`bounded_log`).

    Example:
        >>> from segtext.repairs import within_limit
        >>> within_limit("others *2\\n")
        True
    """
    return len(text) <= MAX_TEXT_LENGTH


def bounded_log(text: str, strict: bool) -> tuple[str, RepairLog]:
    """The part of ``text`` a decoder reads (its first :data:`segtext.limits.MAX_TEXT_LENGTH`
    characters) and a log over that part, holding a ``text_too_long`` repair when it was cut.

    The log indexes only what is read, so a huge text costs nothing past the limit.

    Example:
        >>> from segtext.repairs import bounded_log
        >>> text, log = bounded_log("others *2\\n", strict=False)
        >>> text, log.repairs
        ('others *2\\n', [])
    """
    n = len(text)
    if n <= MAX_TEXT_LENGTH:
        return text, RepairLog(text, strict)
    log = RepairLog(text[:MAX_TEXT_LENGTH], strict)
    log.add("text_too_long", MAX_TEXT_LENGTH, f"the text has {n} characters, more than the limit of "
            f"{MAX_TEXT_LENGTH} (segtext.limits.MAX_TEXT_LENGTH); read up to the limit",
            expected=f"at most {MAX_TEXT_LENGTH} characters", found=f"{n} characters")
    return log.text, log


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str, strict: bool) -> tuple[str, list[Repair]]:
    """``text`` with each lone surrogate replaced by U+FFFD (same length), and a
    ``bad_character`` repair for each; strict mode raises at the first one. A text without any
    (every text that came from bytes) is returned as is, at the cost of one ``isascii`` check
    or one UTF-8 encode.

    Example:
        >>> from segtext.repairs import without_surrogates
        >>> text, repairs = without_surrogates("dog *1\\udc80\\n", strict=False)
        >>> text, [(r.kind, r.column) for r in repairs]
        ('dog *1\ufffd\\n', [('bad_character', 7)])
    """
    if text.isascii():
        return text, []
    try:
        text.encode("utf-8")
        return text, []
    except UnicodeEncodeError:
        pass
    log = RepairLog(text, strict)
    for m in _SURROGATE.finditer(text):
        log.add("bad_character", m.start(), f"a lone surrogate {m.group()!r} read as U+FFFD",
                expected="a character UTF-8 can hold", found=repr(m.group()))
    return _SURROGATE.sub("\ufffd", text), log.repairs


def with_repairs(decode: Any, text: str, repairs: list[Repair], strict: bool) -> Any:
    """``decode(text)`` with ``repairs`` (made before it, e.g. by :func:`without_surrogates`)
    merged into its result's repairs in text order; strict mode raises whichever deviation
    comes first.

    Example:
        >>> import segtext as st
        >>> from segtext.repairs import with_repairs, without_surrogates
        >>> text, bad = without_surrogates("d\\udc80g *1\\n", strict=False)
        >>> res = with_repairs(lambda t: st.decode_rrle(t, grid_size=(1, 1)), text, bad, strict=False)
        >>> [r.kind for r in res.repairs], res.labels
        (['bad_character'], ['others', 'd\ufffdg'])
    """
    first = (repairs[0].line, repairs[0].column)
    if strict:
        try:
            decode(text)
        except DecodeError as e:
            if (e.line, e.column) < first:
                raise
        r = repairs[0]
        raise DecodeError(r.kind, r.message, r.line, r.column, "a character UTF-8 can hold", "a lone surrogate")
    res = decode(text)
    res.repairs = sorted([*repairs, *res.repairs], key=lambda r: (r.line, r.column))
    return res


class RepairLog:
    """Collects repairs, or raises the first one as a :class:`DecodeError` when strict.

    Positions are looked up in the offsets of the text's newlines, found once (on the first
    repair) and then bisected, so a text with many repairs costs ``O(n + r log n)``, not
    ``O(n * r)``.

    Example:
        >>> from segtext.repairs import RepairLog
        >>> log = RepairLog("ab\\ncd", strict=False)
        >>> log.position(0), log.position(2), log.position(3), log.position(5)
        ((1, 1), (1, 3), (2, 1), (2, 3))
    """

    def __init__(self, text: str, strict: bool) -> None:
        self.text = text
        self.strict = strict
        self.repairs: list[Repair] = []
        self._newlines: list[int] | None = None

    def position(self, offset: int) -> tuple[int, int]:
        """1-based ``(line, column)`` of character ``offset`` (clipped to the text)."""
        if offset < 0:
            offset = 0
        elif offset > len(self.text):
            offset = len(self.text)
        newlines = self._newlines
        if newlines is None:
            newlines = self._newlines = [m.start() for m in _NEWLINE.finditer(self.text)]
        before = bisect_left(newlines, offset)  # newlines in text[:offset]
        line_start = newlines[before - 1] + 1 if before else 0
        return before + 1, offset - line_start + 1

    def add(self, kind: str, offset: int, message: str, expected: str = "", found: str = "") -> None:
        line, column = self.position(offset)
        if self.strict:  # say what is wrong, not what repair mode would have done about it
            raise DecodeError(kind, message.split("; ")[0], line, column, expected, found)
        self.repairs.append(Repair(kind, message, line, column))
