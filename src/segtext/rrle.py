"""Grid texts: I-SD (one label per cell), R-RLE (runs per row) and I-RLE (runs over the grid).

The contract
------------
A grid of ``h x w`` label ids is written with a label list ``labels`` (``labels[i]`` is the
text of id ``i``; ``labels[0]`` is the background, ``"others"``). Three spellings, for the
2 x 4 grid ``[[0, 0, 1, 1], [0, 0, 0, 0]]`` with labels ``["others", "dog"]``:

=========  ==========================================================  ==============
name       text                                                        encoder
=========  ==========================================================  ==============
I-SD       ``"others| others| dog| dog\\n others| others| others| others\\n"``  :func:`encode_isd`
R-RLE      ``"others *2| dog *2\\n others *4\\n"``                         :func:`encode_rrle`
I-RLE      ``"others *2| dog *2| others *4\\n"``                           :func:`encode_irle`
=========  ==========================================================  ==============

* A run is the label, a space, ``*`` and the decimal count with no space after ``*``; a
  count of 1 is written ``*1``. Runs (or cells) are joined by ``"| "``.
* Rows are joined by ``"\\n "`` (newline, then one space); the text ends with one ``"\\n"``.
  R-RLE runs never cross rows; I-RLE is one line whose runs may cross rows.
* Runs compare label *texts*: two ids with the same text merge into one run. This is
  byte-for-byte Text4Seg's R-RLE encoder.
* In a model's answer the text sits between ``<seg>`` and ``</seg>`` (plain text, not
  special tokens); the decoder reads only what is between them when they are present.

Labels must pass :func:`segtext.check_label`; the encoders refuse the others.

Decoding
--------
:func:`decode_rrle` reads all three spellings (a one-line text is I-RLE; a text whose runs
have no counts is I-SD) in three modes: ``strict`` raises :class:`~segtext.DecodeError` at
the first deviation from what the encoders write; ``repair`` never raises on any ``str`` and
lists each fix (:data:`~segtext.repairs.REPAIR_KINDS`); ``t4s`` reproduces Text4Seg's own
decoder step for step: its referring decoder without ``labels`` (ids by first appearance,
then ``"others"`` moved to id 0, so a text whose only label is ``dog`` is background), its
semantic decoder with them (ids from the list, unknown labels 0); the text after the first
``<seg>`` up to the next ``<seg>`` or ``</seg>``, newlines stripped, rows split on ``"\\n "`` and runs on
``"| "``, counts through ``int()``, the labels re-split on ``"|"`` and stripped, padded with the
last label, truncated, reshaped. A text without ``<seg>`` or any parse error gives an
all-background grid, silently in Text4Seg and as a ``t4s_parse_error`` repair here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtext import _kernels as K
from segtext._validate import (
    as_array,
    check_fits,
    grid_size_arg,
    image_size_arg,
    pillow_index,
    policy_code,
    rles_call,
)
from segtext.coco import check_status, rle_source
from segtext.grid import grid_to_mask, unsigned_for
from segtext.labels import (
    BACKGROUND,
    LabelMatcher,
    check_labels,
    label_key,
    label_table,
    refuse_background_alias,
)
from segtext.limits import MAX_COUNT, MAX_GRID_CELLS, MAX_TEXT_LENGTH
from segtext.repairs import (
    Repair,
    RepairLog,
    bounded_log,
    with_repairs,
    within_limit,
    without_surrogates,
)

__all__ = [
    "FORMATS",
    "DecodedGrid",
    "decode_rrle",
    "encode_irle",
    "encode_isd",
    "encode_rrle",
    "rle_to_text",
    "rles_to_texts",
]

MODES = ("strict", "repair", "t4s")
#: text spellings of a grid, each as (row-wise, with counts)
FORMATS = {"rrle": (True, True), "isd": (True, False), "irle": (False, True)}
UNKNOWN_POLICIES = ("background", "nearest", "foreground", "error")
DEFAULT_GRID_SIZE = (16, 16)
_COUNT_DIGITS = len(str(MAX_COUNT))  # a count with more digits is larger than any grid
_DIGITS = re.compile(r"[0-9]+")


# --------------------------------------------------------------------------- encoding


def _encode(grid: Any, labels: Sequence[str], with_counts: bool, row_wise: bool) -> str:
    labels = check_labels(labels)
    refuse_background_alias(labels)
    g = as_array(grid, "grid")
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D (h, w) array, got shape {g.shape}")
    if g.dtype.kind not in "biu":
        raise TypeError(f"grid must hold integer label ids, got dtype {g.dtype}")
    if g.dtype == np.bool_:
        g = g.view(np.uint8)
    buf, off, canon = label_table(labels)
    out, status, value = K.encode_grid(g, canon, buf, off, row_wise, with_counts)
    if status == 1:
        raise ValueError(f"grid holds negative id {value}; ids index the labels list")
    if status == 2:
        raise ValueError(f"grid holds id {value} but the labels list is too short "
                         f"({len(labels)} labels, ids 0..{len(labels) - 1})")
    return _readable(out.tobytes().decode("utf-8"))


def _readable(text: str, where: str = "") -> str:
    """``text``, unless it is longer than the decoders read (a text that cannot round-trip)."""
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"{where}the text would be {len(text)} characters, more than the "
                         f"{MAX_TEXT_LENGTH} a decoder reads (segtext.limits.MAX_TEXT_LENGTH); "
                         "use a smaller grid or the R-RLE format")
    return text


def encode_rrle(grid: Any, labels: Sequence[str]) -> str:
    """Write a grid as R-RLE: runs per row, byte-identical to Text4Seg's encoder.

    Args:
        grid: ``(h, w)`` array of ids into ``labels``.
        labels: ``labels[i]`` is the text of id ``i`` (``labels[0]`` the background).

    Returns:
        The text, ending with ``"\\n"``.

    Raises:
        ValueError: a label that would break the format (naming it), an id outside the
            label list, a grid that is not 2-D or is empty.
        TypeError: a grid that is not an integer array, labels that are not str.

    Example:
        >>> import numpy as np, segtext as st
        >>> st.encode_rrle(np.array([[0, 0, 1, 1], [0, 0, 0, 0]]), ["others", "dog"])
        'others *2| dog *2\\n others *4\\n'
    """
    return _encode(grid, labels, with_counts=True, row_wise=True)


def encode_isd(grid: Any, labels: Sequence[str]) -> str:
    """Write a grid as full I-SD text: one label per cell, rows joined by ``"\\n "``.

    Same arguments and errors as :func:`encode_rrle`.

    Example:
        >>> import numpy as np, segtext as st
        >>> st.encode_isd(np.array([[0, 1], [0, 0]]), ["others", "dog"])
        'others| dog\\n others| others\\n'
    """
    return _encode(grid, labels, with_counts=False, row_wise=True)


def encode_irle(grid: Any, labels: Sequence[str]) -> str:
    """Write a grid as I-RLE: runs over the row-major flattened grid, on one line.

    Same arguments and errors as :func:`encode_rrle`.

    Example:
        >>> import numpy as np, segtext as st
        >>> st.encode_irle(np.array([[0, 0, 1, 1], [0, 0, 0, 0]]), ["others", "dog"])
        'others *2| dog *2| others *4\\n'
    """
    return _encode(grid, labels, with_counts=True, row_wise=False)


# --------------------------------------------------------------------------- COCO RLE straight to text


def _format_flags(format: str) -> tuple[bool, bool]:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}, got {format!r}")
    return FORMATS[format]


def rle_to_text(
    rle: dict,
    label: str,
    grid_size: int | tuple[int, int] = (16, 16),
    policy: str = "majority",
    threshold: float = 0.5,
    format: str = "rrle",
    background: str = BACKGROUND,
) -> str:
    """Encode one binary COCO RLE mask as grid text in a single compiled call.

    The same as ``encode_rrle(rle_to_grid(rle, grid_size, policy, threshold),
    [background, label])`` (or :func:`encode_isd` / :func:`encode_irle` by ``format``),
    without the intermediate steps; this is the hot path of dataset encoding.

    Args:
        rle: COCO RLE dict (compressed or not).
        label: text of the foreground (e.g. the referring expression or class name).
        grid_size: ``(h, w)`` or an int.
        policy: ``"nearest"``, ``"majority"`` or ``"any"``.
        threshold: foreground fraction for ``majority``.
        format: ``"rrle"``, ``"isd"`` or ``"irle"``.
        background: text of the background.

    Raises:
        ValueError / TypeError: as :func:`segtext.rle_to_grid` and :func:`encode_rrle`.

    Example:
        >>> import segtext as st
        >>> st.rle_to_text({"size": [2, 4], "counts": [4, 4]}, "dog", grid_size=(2, 4))
        'others *2| dog *2\\n others *2| dog *2\\n'
    """
    labels = check_labels((background, label))
    refuse_background_alias(labels)
    data, compressed, (H, W) = rle_source(rle)
    plan = _text_plan(H, W, grid_size, policy, threshold, format)
    buf, off, canon = label_table(labels)
    out, status = K.rle_text(data, compressed, plan, float(threshold), canon[1], buf, off)
    if status:
        check_status(status, "rle", H, W)
    return _readable(out.tobytes().decode("utf-8"))


_TEXT_PLANS: dict[tuple, np.ndarray] = {}


def _text_plan(H: int, W: int, grid_size: Any, policy: str, threshold: float, format: str) -> np.ndarray:
    """The checked sizes, policy, format and nearest samples of one :func:`rle_to_text` call,
    packed as the kernel reads them (``K.PLAN_*``); cached per distinct call shape."""
    # keyed by the arguments and their types (True == 1 but is no grid size): a hit means these
    # very arguments passed the checks below before
    key = (H, W, grid_size, type(grid_size), policy, format, threshold, type(threshold))
    try:
        plan = _TEXT_PLANS.get(key)
    except TypeError:  # an unhashable grid_size (a list): checked below
        plan = None
    if plan is not None:
        return plan
    h, w = grid_size_arg(grid_size)
    code = policy_code(policy, threshold)
    row_wise, with_counts = _format_flags(format)
    check_fits((H, W), (h, w))
    if code == 0:
        samples = np.concatenate([pillow_index(H, h), pillow_index(W, w)])
    else:
        samples = np.zeros(h + w, np.int64)
    plan = np.concatenate([np.array([H, W, h, w, code, row_wise, with_counts], np.int64), samples])
    plan.setflags(write=False)
    if len(_TEXT_PLANS) >= 4096:
        _TEXT_PLANS.clear()
    try:
        _TEXT_PLANS[key] = plan
    except TypeError:  # an unhashable grid_size that still passed the checks (a list)
        pass
    return plan


def rles_to_texts(
    rles: Sequence[dict],
    labels: str | Sequence[str],
    grid_size: int | tuple[int, int] = (16, 16),
    policy: str = "majority",
    threshold: float = 0.5,
    format: str = "rrle",
    background: str = BACKGROUND,
) -> list[str]:
    """Batch form of :func:`rle_to_text`: many masks to texts in one compiled call.

    Args:
        rles: sequence of COCO RLE dicts (compressed or not; sizes may differ).
        labels: one foreground text for all masks, or one per mask.
        grid_size, policy, threshold, format, background: as :func:`rle_to_text`.

    Returns:
        One text per mask, in order.

    Raises:
        ValueError / TypeError: as :func:`rle_to_text`; the message names the index of the
            offending mask; ``labels`` of the wrong length.

    Example:
        >>> import segtext as st
        >>> rles = [{"size": [2, 2], "counts": [0, 4]}, {"size": [2, 2], "counts": [2, 2]}]
        >>> st.rles_to_texts(rles, ["cat", "dog"], grid_size=(1, 2))
        ['cat *2\\n', 'others *1| dog *1\\n']
    """
    row_wise, with_counts = _format_flags(format)
    a = rles_call(rles, grid_size, policy, threshold)
    N = len(a.sizes)
    if isinstance(labels, str):
        vocab = check_labels((background, labels))
        refuse_background_alias(vocab)
        buf, off, canon = label_table(vocab)
        fg_ids = np.full(N, canon[1], np.int64)
    else:
        if len(labels) != N:
            raise ValueError(f"labels has {len(labels)} entries for {N} masks; "
                             "give one label for all or one per mask")
        vocab = check_labels((background, *dict.fromkeys(labels)))
        if background in labels:
            n = list(labels).index(background)
            raise ValueError(f"labels[{n}] is {background!r}, the background word: its cells would "
                             "decode as background; give the foreground another name")
        buf, off, canon = label_table(vocab)
        index = {s: canon[i] for i, s in enumerate(vocab)}
        fg_ids = np.array([index[s] for s in labels], np.int64)
    out, cum = K.rle_texts(a.counts, a.offsets, a.sizes, a.h, a.w, a.policy, a.threshold, a.py, a.px,
                           fg_ids, buf, off, row_wise, with_counts)
    raw = out.tobytes()
    bounds = cum.tolist()
    if N and int(np.diff(cum).max()) <= MAX_TEXT_LENGTH and raw.isascii():
        whole = raw.decode("ascii")  # byte offsets are character offsets: slice once decoded
        return [whole[a:b] for a, b in zip(bounds, bounds[1:])]
    return [_readable(raw[bounds[n] : bounds[n + 1]].decode("utf-8"), f"rles[{n}]: ") for n in range(N)]


# --------------------------------------------------------------------------- result


@dataclass
class DecodedGrid:
    """What :func:`decode_rrle` returns.

    Attributes:
        grid: ``(h, w)`` array of ids into ``labels``, in the smallest unsigned dtype that
            holds them all (``uint8`` up to 256 labels, then ``uint16``, ``uint32``).
        labels: text of each id; ``labels[0]`` is the background.
        repairs: every fix made (empty for a clean text).
        format: ``"rrle"``, ``"isd"`` or ``"irle"``, as read from the text.
        mask: the grid expanded to the ``(H, W)`` label map (``to_mask(image_size)``, in the
            grid's dtype) when :func:`decode_rrle` was given ``image_size``, else ``None``.

    Example:
        >>> import segtext as st
        >>> res = st.decode_rrle("others *1| dog *1\\n dog *2\\n")
        >>> res.grid.tolist(), res.labels, res.ok, res.format
        ([[0, 1], [1, 1]], ['others', 'dog'], True, 'rrle')
    """

    grid: np.ndarray
    labels: list[str]
    repairs: list[Repair] = field(default_factory=list)
    format: str = "rrle"
    mask: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """True when the text needed no repair."""
        return not self.repairs

    def foreground(self) -> np.ndarray:
        """Boolean grid, True wherever the label is not the background (Text4Seg's rule).

        Example:
            >>> import segtext as st
            >>> st.decode_rrle("others *1| cat *1\\n").foreground().tolist()
            [[False, True]]
        """
        return self.grid != 0

    def to_mask(self, image_size: tuple[int, int], method: str = "exact",
                dtype: Any = None) -> np.ndarray:
        """The grid expanded to an ``(H, W)`` label map (see :func:`segtext.grid_to_mask`).

        Args:
            image_size: ``(H, W)``.
            method: ``"exact"`` (inverse of the cell policies) or ``"t4s"`` (Text4Seg's).
            dtype: of the result; by default the grid's (the smallest unsigned dtype that
                holds every id: ``uint8`` up to 256 labels, then ``uint16``, ``uint32``).

        Example:
            >>> import segtext as st
            >>> st.decode_rrle("others *1| cat *1\\n").to_mask((1, 4)).tolist()
            [[0, 0, 1, 1]]
        """
        g = self.grid
        if (dtype is None and type(g) is np.ndarray and g.ndim == 2 and g.dtype.kind == "u"
                and g.flags.c_contiguous and g.size and (method == "exact" or method == "t4s")):
            H, W = image_size_arg(image_size)  # the decoder's own grid: no other check needed
            return K.expand(g, method == "t4s", np.empty((H, W), g.dtype))
        return grid_to_mask(g, image_size, method=method,
                            dtype=_id_dtype(len(self.labels)) if dtype is None else dtype)


# --------------------------------------------------------------------------- decoding


_SEG_OPEN = re.compile(re.escape("<seg>"), re.IGNORECASE)
_SEG_CLOSE = re.compile(re.escape("</seg>"), re.IGNORECASE)


def _tag(pattern: re.Pattern, exact: str, text: str, start: int, log: RepairLog) -> int:
    """Where the tag is: spelled exactly, else in another case (reported), else -1."""
    i = text.find(exact, start)  # the common case, without the regex
    if i >= 0:
        return i
    m = pattern.search(text, start)
    if m is None:
        return -1
    if m.group() != exact:
        log.add("tag_case", m.start(), f"tag {m.group()!r} read as {exact!r}", expected=repr(exact),
                found=repr(m.group()))
    return m.start()


def _extract(text: str, log: RepairLog) -> tuple[str, int, int]:
    """The text between ``<seg>`` and ``</seg>``, its offset in ``text``, and where a second
    ``<seg>`` block starts (-1 if none; only the first block is read)."""
    i = _tag(_SEG_OPEN, "<seg>", text, 0, log)
    if i >= 0:
        j = _tag(_SEG_CLOSE, "</seg>", text, i + 5, log)
        if j >= 0:
            second = text.find("<seg>", j + 6)
            if second < 0:
                m = _SEG_OPEN.search(text, j + 6)
                second = m.start() if m else -1
            return text[i + 5 : j], i + 5, second
        log.add("missing_seg_close", len(text), "'<seg>' is never closed; read to the end",
                expected="'</seg>'", found="end of text")
        return text[i + 5 :], i + 5, -1
    j = _tag(_SEG_CLOSE, "</seg>", text, 0, log)
    if j >= 0:
        log.add("missing_seg_open", 0, "'</seg>' without '<seg>'; read from the start",
                expected="'<seg>'", found="'</seg>'")
        return text[:j], 0, -1
    return text, 0, -1


def _second_block(at: int, log: RepairLog) -> None:
    if at >= 0:  # reported after the first block is read, so strict mode keeps text order
        log.add("extra_seg_block", at, "a second '<seg>' block; only the first is read",
                expected="one '<seg>' block", found="'<seg>'")


class _Vocab:
    """Label text -> id: :class:`~segtext.labels.LabelMatcher`'s rules, then inferring new labels
    (no ``labels`` given) or the unknown-label policy."""

    def __init__(self, labels: tuple[str, ...] | None, unknown: str, log: RepairLog,
                 fold: bool = True) -> None:
        self.infer = labels is None
        # fold: read 'Others' as 'others' (repair mode); t4s mode never does
        self.match = LabelMatcher([BACKGROUND] if labels is None else labels, fold)
        self.labels = self.match.labels
        self.unknown = unknown
        self.log = log

    def completed(self, text: str, offset: int) -> str:
        """The label the text was cut off in: a known label that ``text`` is a proper prefix of."""
        name = text.strip()
        if not name or name in self.match.ids:
            return text
        for known in self.labels:
            if known.startswith(name) and known != name:
                self.log.add("truncated_label", offset, f"label {name!r} at the end of the text read "
                             f"as {known!r}", expected=repr(known), found=repr(name))
                return text[: len(text) - len(text.lstrip())] + known
        return text

    def id(self, text: str, offset: int) -> int:
        v = self.match.find(text, offset, self.log)
        if v is not None:
            return v
        if self.infer:
            return self.match.add(text, fold=self.match.fold)
        if self.unknown == "error":
            self.match.refuse(text, offset, self.log)
        if self.unknown == "foreground":  # kept as a label of its own, so it counts as foreground
            v = self.match.add(text, fold=False)
            self.log.add("unknown_label", offset, f"unknown label {text!r} kept as a foreground label",
                         expected="a label from the labels list", found=repr(text))
            return v
        v = 0 if self.unknown == "background" else self.match.nearest(text)
        self.log.add("unknown_label", offset,
                     f"unknown label {text!r} read as {self.labels[v]!r}",
                     expected="a label from the labels list", found=repr(text))
        return v


_FORMAT_CODES = ("rrle", "isd", "irle")


def _id_dtype(n_labels: int) -> np.dtype:
    """The smallest unsigned dtype that holds the ids of ``n_labels`` labels."""
    return unsigned_for(n_labels - 1)


def _fast(body: str, labels: tuple[str, ...] | None, grid_size: tuple[int, int] | None,
          mask: np.ndarray | None = None) -> tuple[np.ndarray, list[str], str] | None:
    """Decode a well-formed body in the compiled parser; None when anything is off. With
    ``mask`` (labels and grid size given, an ``(H, W)`` array of the ids' dtype) the grid is
    also expanded into it, exactly, in the same call."""
    raw = body.encode("utf-8")
    if labels is not None and grid_size is not None:  # the common case: straight into the grid
        buf, off, _ = label_table(labels)
        grid = np.empty(grid_size, _id_dtype(len(labels)))
        if mask is None:
            fmt = K.decode_grid_into(raw, buf, off, grid)
        else:
            fmt = K.decode_grid_mask(raw, buf, off, grid, mask)
        return None if fmt < 0 else (grid, list(labels), _FORMAT_CODES[fmt])
    buf, off, _ = label_table((BACKGROUND,) if labels is None else labels)
    h, w = (-1, -1) if grid_size is None else grid_size
    ok, grid, spans, fmt = K.decode_grid(raw, buf, off, labels is None,
                                         h, w, MAX_GRID_CELLS)
    if not ok:
        return None
    if labels is None:
        out = [BACKGROUND] + [raw[s:e].decode("utf-8") for s, e in spans.tolist()]
        if len(out) > 1 and len({label_key(x) for x in out}) < len(out):
            return None  # "Others" beside "others", "dog." beside "dog": the full parser repairs it
    else:
        out = list(labels)
    return grid.astype(_id_dtype(len(out))), out, _FORMAT_CODES[fmt]


def _digits_value(digits: str, cap: int) -> int:
    """The value of a string of ASCII digits, or ``cap + 1`` for any value above ``cap``.

    Never converts more than :data:`_COUNT_DIGITS` digits (Python refuses 4,301 and more).
    """
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _COUNT_DIGITS else cap + 1


def _shown(text: str) -> str:
    """A count's text for a message: whole, or its ends when it is long."""
    return text if len(text) <= 24 else text[:10] + "..." + text[-10:]


def _clip_count(value: int, text: str, offset: int, cap: int, log: RepairLog) -> int:
    if value <= cap:
        return value
    shown = _shown(text)
    log.add("count_too_large", offset, f"count {shown!r} is larger than the {cap} cells the grid "
            f"can hold; clipped to {cap}", expected=f"a count of at most {cap}",
            found=f"{len(text)} digits" if len(text) > 24 else repr(text))
    return cap


def _parse_count(text: str, offset: int, cap: int, log: RepairLog) -> int:
    """Count of one run from the text after ``" *"``; 0 means drop the run.

    ``cap`` is the most cells the grid can hold; a larger count is clipped to it with a
    ``count_too_large`` repair.
    """
    if text and text.isascii() and text.isdigit() and text[0] != "0":
        return _clip_count(_digits_value(text, cap), text, offset, cap, log)
    if text == "":
        log.add("missing_count", offset, "a run with ' *' but no count; read as 1",
                expected="a positive count", found="nothing")
        return 1
    m = _DIGITS.match(text.strip())
    value = _digits_value(m.group(), cap) if m else 1
    shown = _shown(text)
    if m and value == 0:
        log.add("zero_count", offset, "a run of zero cells; dropped",
                expected="a positive count", found=repr(shown))
        return 0
    log.add("bad_count", offset, f"count {shown!r} read as "
            + (str(value) if value <= cap else "its leading digits"),
            expected="a positive decimal count", found=repr(shown))
    return _clip_count(value, text, offset, cap, log)


def _split_run(part: str, counted: bool) -> tuple[str, str | None, int]:
    """``(label, count text or None, offset of the count in part)`` of one raw run.

    A run is ``LABEL *N``; in a text with counts, ``LABEL*N`` (no space before ``*``) is read
    the same way (the caller reports it: the count's offset is then one less than usual).
    """
    label, sep, count = part.partition(" *")
    if sep:
        return label, count, len(label) + 2
    if counted:
        star = part.rfind("*")
        digits = part[star + 1 :].strip()
        if star > 0 and digits.isascii() and digits.isdigit():
            return part[:star], part[star + 1 :], star + 1
    return label, None, len(label)


def _tokenize(body: str, base: int, log: RepairLog) -> list[tuple[int, list[tuple[str, int, str | None, int]]]]:
    """Split a body into rows of raw runs ``(label_text, offset, count_text or None, count_offset)``."""
    rows = []
    counted = " *" in body
    lines = body.split("\n")
    pos = base
    last = len(lines) - 1
    for k, line in enumerate(lines):
        start = pos
        pos += len(line) + 1
        if k == last and line == "":
            break
        if line.strip() == "":
            log.add("blank_line", start, "an empty line; skipped", expected="a row",
                    found=repr(line))
            continue
        if k == last:
            log.add("missing_final_newline", start + len(line), "the text does not end with a newline",
                    expected="'\\n'", found="end of text")
        if line.endswith("\r"):
            log.add("row_separator", start + len(line) - 1, "a carriage return before the newline",
                    expected="'\\n '", found="'\\r\\n'")
            line = line[:-1]
        if k > 0:
            if line.startswith(" "):
                line = line[1:]
                start += 1
            else:
                log.add("row_separator", start, "a newline not followed by a space",
                        expected="' '", found=repr(line[:1]))
        row_offset = start
        runs = []
        for part in line.split("| "):
            label, count, at = _split_run(part, counted)
            if count is not None and at == len(label) + 1:
                log.add("count_separator", start + len(label), "a run without the space before '*'; "
                        "read as a run", expected="' *'", found=repr(part[max(0, len(label) - 1) : at]))
            runs.append((label, start, count, start + at))
            start += len(part) + 2
        rows.append((row_offset, runs))
    return rows


def _expand(ids: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` cells (or all, if fewer) of runs ``ids`` x ``counts``, expanding no more."""
    ends = np.cumsum(counts)
    if len(ends) and ends[-1] > n:
        k = int(np.searchsorted(ends, n))  # the run holding cell n - 1
        counts = counts[: k + 1].copy()
        counts[k] -= ends[k] - n
        ids = ids[: k + 1]
    return np.repeat(ids, counts)


def _fill_row(ids: np.ndarray, counts: np.ndarray, w: int, above: np.ndarray | None, offset: int,
              log: RepairLog, row_number: int) -> np.ndarray:
    """A row of exactly ``w`` cells from its runs: truncated, or padded with its last label."""
    n = int(counts.sum())
    cells = _expand(ids, counts, w)
    if n == w:
        return cells
    if n > w:
        log.add("row_too_long", offset, f"row {row_number} has {n} cells; truncated to {w}",
                expected=f"{w} cells", found=f"{n}")
        return cells
    if n == 0:
        fill = above[:w] if above is not None else np.zeros(w, np.int32)
        log.add("row_too_short", offset, f"row {row_number} has no cells; filled from "
                + ("the row above" if above is not None else "background"),
                expected=f"{w} cells", found="0")
        return fill
    log.add("row_too_short", offset, f"row {row_number} has {n} cells; padded to {w} with its last label",
            expected=f"{w} cells", found=f"{n}")
    return np.concatenate([cells, np.full(w - n, cells[-1], np.int32)])


def _bounded_shape(h: int, w: int, offset: int, log: RepairLog) -> tuple[int, int]:
    """An inferred grid shape cut to :data:`~segtext.limits.MAX_GRID_CELLS`, with a repair."""
    if h * w <= MAX_GRID_CELLS:
        return h, w
    if h == w:
        h2 = w2 = math.isqrt(MAX_GRID_CELLS)
    else:
        h2 = min(h, MAX_GRID_CELLS)
        w2 = max(1, min(w, MAX_GRID_CELLS // h2))
    log.add("grid_too_large", offset, f"the text describes a {h}x{w} grid, more than "
            f"{MAX_GRID_CELLS} cells; cut to {h2}x{w2}", expected=f"at most {MAX_GRID_CELLS} cells",
            found=f"{h * w}")
    return h2, w2


def _decode_full(text: str, body: str, base: int, labels: tuple[str, ...] | None,
                 grid_size: tuple[int, int] | None, unknown: str, log: RepairLog) -> DecodedGrid:
    rows = _tokenize(body, base, log)
    counted_any = any(c is not None for _, runs in rows for _, _, c, _ in runs)
    cap = grid_size[0] * grid_size[1] if grid_size else MAX_COUNT
    vocab = _Vocab(labels, unknown, log)
    cut = bool(rows) and not body.endswith("\n")  # the text stops inside its last run
    parsed: list[tuple[int, np.ndarray, np.ndarray]] = []
    for r, (row_offset, runs) in enumerate(rows):
        ids, counts = [], []
        for k, (label, offset, count_text, count_offset) in enumerate(runs):
            if cut and count_text is None and r == len(rows) - 1 and k == len(runs) - 1:
                label = vocab.completed(label, offset)
            if count_text is None:
                if counted_any:
                    log.add("missing_count", offset + len(label), "a run without ' *N'; read as 1",
                            expected="' *N'", found=repr(label[-10:]))
                n = 1
            else:
                n = _parse_count(count_text, count_offset, cap, log)
            if n == 0:
                continue
            name = label.strip()
            if name != label:
                lead = len(label) - len(label.lstrip())
                log.add("label_whitespace", offset, f"label {label!r} has surrounding whitespace",
                        expected="no whitespace", found=repr(label))
                offset += lead
            if name == "":
                log.add("empty_label", offset, "a run without a label; read as background",
                        expected="a label", found="nothing")
                v = 0
            else:
                v = vocab.id(name, offset)
            ids.append(v)
            counts.append(n)
        parsed.append((row_offset, np.array(ids, np.int32), np.array(counts, np.int64)))
    fmt = "rrle" if counted_any else "isd"
    end = base + len(body)
    if not any(len(ids) for _, ids, _ in parsed):
        log.add("empty_text", base, "no runs; the grid is background", expected="runs",
                found=repr(body[:20]))
        h, w = grid_size or DEFAULT_GRID_SIZE
        return DecodedGrid(np.zeros((h, w), np.int32), vocab.labels, log.repairs, fmt)
    if len(parsed) == 1 and (grid_size is None or grid_size[0] != 1):
        row_offset, ids, counts = parsed[0]
        total = int(counts.sum())
        if grid_size is None:
            s = math.isqrt(total)
            h, w = _bounded_shape(*((s, s) if s * s == total else (1, total)), row_offset, log)
        else:
            h, w = grid_size
        if total != h * w:
            log.add("total_mismatch", row_offset, f"{total} cells where {h}x{w} = {h * w} were expected",
                    expected=f"{h * w} cells", found=f"{total}")
        cells = _fill_row(ids, counts, h * w, None, row_offset, RepairLog(text, False), 1)
        if counted_any and h > 1:
            fmt = "irle"
        return DecodedGrid(cells.reshape(h, w), vocab.labels, log.repairs, fmt)
    if grid_size is None:
        freq = Counter(s for s in (int(c.sum()) for _, _, c in parsed) if s > 0)
        w = max(freq, key=lambda s: (freq[s], s))
        h, w = _bounded_shape(len(parsed), w, parsed[0][0], log)
    else:
        h, w = grid_size
    grid = np.empty((h, w), np.int32)
    above = None
    for i, (row_offset, ids, counts) in enumerate(parsed[:h]):
        grid[i] = above = _fill_row(ids, counts, w, above, row_offset, log, i + 1)
    if len(parsed) > h:
        log.add("extra_rows", parsed[h][0], f"{len(parsed)} rows where {h} were expected; "
                "the rest dropped", expected=f"{h} rows", found=f"{len(parsed)}")
    elif len(parsed) < h:
        log.add("missing_rows", end, f"{len(parsed)} rows where {h} were expected; "
                "filled from the row above", expected=f"{h} rows", found=f"{len(parsed)}")
        grid[len(parsed):] = grid[len(parsed) - 1]
    return DecodedGrid(grid, vocab.labels, log.repairs, fmt)


def _t4s_body(text: str) -> str | None:
    """Text4Seg's extraction, ``text.split("<seg>")[1].split("</seg>")[0]``: after the first
    ``<seg>``, up to the next ``<seg>`` or ``</seg>`` (to the end when there is neither);
    ``None`` when the text has no ``<seg>`` at all."""
    i = text.find("<seg>")
    if i < 0:
        return None
    body = text[i + 5 :]
    j = body.find("<seg>")
    body = body if j < 0 else body[:j]
    j = body.find("</seg>")
    return body if j < 0 else body[:j]


def _t4s_runs(body: str) -> list[list[tuple[str, int]]]:
    """Rows of ``(label, count)``: ``strip("\\n")``, rows on ``"\\n "``, runs on ``"| "``, each
    run on ``" *"`` into exactly two parts, the count through Python's ``int()``."""
    rows = []
    for row in body.strip("\n").split("\n "):
        pairs = []
        for token in row.split("| "):
            parts = token.split(" *")
            if len(parts) != 2:
                raise ValueError(f"a run {token[:40]!r} does not split on ' *' into two parts")
            pairs.append((parts[0], int(parts[1])))
        rows.append(pairs)
    return rows


def _t4s_grid_size(rows: list[list[tuple[str, int]]]) -> tuple[int, int]:
    """Our extension for a text without a given grid size (Text4Seg always knows it)."""
    sums = [sum(max(c, 0) for _, c in r) for r in rows]
    if len(rows) == 1:
        s = math.isqrt(sums[0])
        size = (s, s) if s * s == sums[0] else (1, sums[0])
    else:
        freq = Counter(sums)
        size = (len(rows), max(freq, key=lambda s: (freq[s], s)))
    if not 0 < size[0] * size[1] <= MAX_GRID_CELLS:
        raise ValueError(f"no usable grid size: the text describes {size[0]}x{size[1]} cells")
    return size


def _decode_t4s(text: str, labels: tuple[str, ...] | None, grid_size: tuple[int, int] | None,
                unknown: str) -> DecodedGrid:
    """Text4Seg's decoder (``ms-swift/text4seg/infer_refer_seg.py`` with ``text4seg/utils.py``).

    The runs are expanded (``[label] * count``; a count of 0 or below adds nothing), joined by
    ``"|"``, split on ``"|"`` again and stripped. Without ``labels`` (the referring decoder) the
    ids go by order of first appearance over the whole list, then the exact string
    ``"others"`` is moved to id 0, so a text whose only label is ``dog`` is background; with
    ``labels`` (the semantic decoder) the ids come from the list and an unknown label is 0.
    The list is padded with the last id overall (row lengths are never checked) or truncated
    to ``h*w``. A text without ``<seg>``, or any error on the way, gives all background. Only
    the cells the grid keeps are expanded; the rest is read for its labels alone.
    """
    text, log = bounded_log(text, strict=False)
    body = _t4s_body(text)
    try:
        if body is None:
            raise ValueError("the text has no '<seg>'")
        rows = _t4s_runs(body)
        h, w = grid_size or _t4s_grid_size(rows)
        n = h * w
        order: dict[str, int] = {}  # every item of the whole list, by first appearance
        items: list[str] = []  # the first n items
        last = None
        for pairs in rows:
            for label, count in pairs:
                if count <= 0:
                    continue
                parts = [p.strip() for p in label.split("|")]
                for p in parts:
                    order.setdefault(p, len(order))
                last = parts[-1]
                if len(items) < n:
                    items.extend(parts * min(count, -(-(n - len(items)) // len(parts))))
        if last is None:  # nothing expanded: "|".join([]).split("|") is one empty item
            order, items, last = {"": 0}, [""], ""
        del items[n:]
        items.extend([last] * (n - len(items)))
    except (ValueError, IndexError) as e:
        h, w = grid_size or DEFAULT_GRID_SIZE  # never the size the text itself failed to give
        log.add("t4s_parse_error", 0, f"Text4Seg's decoder fails on this text ({e}); all background")
        return DecodedGrid(np.zeros((h, w), np.int32), [BACKGROUND] if labels is None else list(labels),
                           log.repairs, "rrle")
    if labels is None:
        names = list(order)
        if BACKGROUND in order:
            names.remove(BACKGROUND)
            names.insert(0, BACKGROUND)
        ids = {s: i for i, s in enumerate(names)}
    else:
        vocab = _Vocab(labels, unknown, log, fold=False)
        ids = {s: vocab.id(s, 0) for s in dict.fromkeys(items)}
        names = vocab.labels
    grid = np.fromiter(map(ids.__getitem__, items), np.int32, n).reshape(h, w)
    return DecodedGrid(grid, names, log.repairs, "rrle")


def decode_rrle(
    text: str,
    labels: Sequence[str] | None = None,
    grid_size: int | tuple[int, int] | None = None,
    mode: str = "repair",
    unknown: str = "background",
    image_size: tuple[int, int] | None = None,
) -> DecodedGrid:
    """Read a grid back from R-RLE, I-SD or I-RLE text (a model's answer, typically).

    Args:
        text: the text; when it holds ``<seg>`` ... ``</seg>`` only what is between is read.
        labels: the vocabulary (``labels[i]`` is the text of id ``i``). ``None`` infers it:
            ``"others"`` first, then other labels in order of first appearance.
        grid_size: ``(h, w)`` or an int; ``None`` infers it (rows = lines, width = most
            common row sum; a one-line text is I-RLE, square when its total is a perfect
            square, else one row; a text with nothing to read gives 16 x 16 background).
        mode: ``"strict"``, ``"repair"`` or ``"t4s"`` (see the module docstring).
        unknown: with ``labels`` given, what an unknown label becomes: ``"background"``,
            ``"nearest"`` (closest label by edit distance), ``"foreground"`` (kept as a label of
            its own, appended to ``labels``) or ``"error"`` (raise).
        image_size: ``(H, W)``: also expand the grid to the full-size label map
            (``result.mask``, the same as ``result.to_mask(image_size)``, with Text4Seg's
            upsampling in ``t4s`` mode), in the same compiled call as the parse when the
            text is clean and ``labels`` and ``grid_size`` are given: the one-call decode.

    Returns:
        :class:`DecodedGrid` with ``grid``, ``labels``, ``repairs``, ``format`` and, with
        ``image_size``, ``mask``.

    Raises:
        DecodeError: in ``strict`` mode, at the first deviation (line, column, expected,
            found); in any mode for an unknown label under ``unknown="error"``.
        TypeError / ValueError: ``text`` not a str, or bad ``labels``, ``grid_size``,
            ``mode`` or ``unknown`` arguments.

    Example:
        >>> import segtext as st
        >>> answer = "Sure, here it is:\\n<seg>others *2| dog *2\\n others *4\\n</seg>"
        >>> res = st.decode_rrle(answer, labels=["others", "dog"])
        >>> res.grid.tolist(), res.ok
        ([[0, 0, 1, 1], [0, 0, 0, 0]], True)
        >>> res = st.decode_rrle("others *2| dog *1\\n others *4\\n", grid_size=(2, 4))
        >>> res.grid.tolist(), [r.kind for r in res.repairs]
        ([[0, 0, 1, 1], [0, 0, 0, 0]], ['row_too_short'])
        >>> st.decode_rrle("others *1| dog *1\\n", ["others", "dog"], (1, 2), image_size=(2, 4)).mask.tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1]]
    """
    tried_clean = False  # whether the compiled parser has already read the text (and found a slip)
    if (type(text) is str and (mode == "repair" or mode == "strict") and unknown in UNKNOWN_POLICIES
            and "<" not in text and text.isascii() and len(text) <= MAX_TEXT_LENGTH):
        # a clean answer (no tag, nothing cut, nothing to repair) with labels and grid size given,
        # those looked up instead of checked again: a compiled parse (and, with image_size, the
        # expansion in the same call), the allocations and the result
        plan = None
        if type(labels) in (list, tuple) and (type(grid_size) is int or (
                type(grid_size) is tuple and len(grid_size) == 2 and type(grid_size[0]) is int
                and type(grid_size[1]) is int)):  # (True == 1 and 16.0 == 16 as keys)
            try:
                key = (tuple(labels), grid_size)
                plan = _DECODE_PLANS.get(key)
            except TypeError:  # an unhashable label: the full path below names it
                key = None
            if plan is None and key is not None:
                plan = _new_plan(key)
        tried_clean = plan is not None
        if tried_clean:
            vocab, size, buf, off, dtype, into_grid, into_mask = plan
            grid = np.empty(size, dtype)
            if image_size is None:
                mask = None
                fmt = into_grid(text.encode("ascii"), buf, off, grid)
            else:
                mask = np.empty(image_size_arg(image_size), dtype)
                fmt = into_mask(text.encode("ascii"), buf, off, grid, mask)
            if fmt >= 0:
                return DecodedGrid(grid, list(vocab), [], _FORMAT_CODES[fmt], mask)
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    vocab = None if labels is None else check_labels(labels)
    size = None if grid_size is None else grid_size_arg(grid_size)
    full = None if image_size is None else image_size_arg(image_size)
    text, bad = without_surrogates(text, strict=False)
    if bad:  # lone surrogates (no UTF-8 for them): read as U+FFFD, with a repair each
        return with_repairs(lambda clean: decode_rrle(clean, labels, grid_size, mode, unknown, image_size),
                             text, bad, mode == "strict")
    if mode == "t4s":
        return _compact(_decode_t4s(text, vocab, size, unknown), full, True)
    mask = None
    if full is not None and vocab is not None and size is not None:
        mask = np.empty(full, _id_dtype(len(vocab)))
    tried = "<" not in text and within_limit(text)  # no tag in any case, nothing cut:
    if tried and not tried_clean:
        fast = _fast(text, vocab, size, mask)  # a clean text needs no log at all
        if fast is not None:
            grid, out_labels, fmt = fast
            if full is not None and mask is None:
                mask = K.expand(grid, False, np.empty(full, grid.dtype))
            return DecodedGrid(grid, out_labels, [], fmt, mask)
    text, log = bounded_log(text, strict=mode == "strict")
    if "<" in text:
        body, base, second = _extract(text, log)
    else:  # no tag in any case: the whole text is the body
        body, base, second = text, 0, -1
    fast = None if tried else _fast(body, vocab, size, mask)
    if fast is not None:
        grid, out_labels, fmt = fast
        _second_block(second, log)
        if full is not None and mask is None:
            mask = K.expand(grid, False, np.empty(full, grid.dtype))
        return DecodedGrid(grid, out_labels, log.repairs, fmt, mask)
    res = _decode_full(text, body, base, vocab, size, unknown, log)
    _second_block(second, log)
    return _compact(res, full, False)


# (labels as a tuple, grid size as the caller passes it) -> (labels, (h, w), label buffer,
# offsets, id dtype, grid kernel, grid + mask kernel): the checked arguments of decode_rrle's
# clean-answer path, so that a clean answer does not pay for checking them again, and the
# kernels compiled for exactly the types it passes (K.compiled_for); emptied when full
# (callers use a few label lists, but nothing is assumed)
_DECODE_PLANS: dict[tuple, tuple] = {}
_MAX_DECODE_PLANS = 1024


def _new_plan(key: tuple) -> tuple:
    """Check the labels and grid size of ``key`` (raising as the full path would) and store
    what the clean-answer path needs under it."""
    vocab = check_labels(key[0])
    size = grid_size_arg(key[1])
    buf, off, _ = label_table(vocab)
    dtype = _id_dtype(len(vocab))
    grid = np.empty(size, dtype)  # of the types the clean path passes: bytes, its own arrays
    into_grid = K.compiled_for(K.decode_grid_into, b"", buf, off, grid)
    into_mask = K.compiled_for(K.decode_grid_mask, b"", buf, off, grid, np.empty((1, 1), dtype))
    if len(_DECODE_PLANS) >= _MAX_DECODE_PLANS:
        _DECODE_PLANS.clear()
    plan = _DECODE_PLANS[key] = (vocab, size, buf, off, dtype, into_grid, into_mask)
    return plan


def _compact(res: DecodedGrid, image_size: tuple[int, int] | None, t4s: bool) -> DecodedGrid:
    """The grid in the smallest unsigned dtype that holds every id of ``res.labels``; with
    ``image_size``, its expansion to the full-size ``res.mask``."""
    res.grid = res.grid.astype(_id_dtype(len(res.labels)), copy=False)
    if image_size is not None:
        res.mask = K.expand(res.grid, t4s, np.empty(image_size, res.grid.dtype))
    return res
