"""Label texts: which strings may stand in a grid text, and how texts map to ids.

A label list is the vocabulary of a grid: ``labels[i]`` is the text of id ``i`` and
``labels[0]`` is the background (``"others"`` by Text4Seg's convention). A label must be a
non-empty ``str`` with no leading or trailing whitespace that cannot be confused with the
format's separators: it may not contain ``"| "``, ``" *"``, a newline (``"\\n"`` or
``"\\r"``), ``"<seg>"`` or ``"</seg>"``, and may not end with ``"|"`` (which would read as
``"| "`` before the following ``" *"``). Invalid labels are refused, never escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NoReturn

import numpy as np

from segtext import _kernels as K
from segtext.repairs import DecodeError, RepairLog

__all__ = ["BACKGROUND", "check_label", "check_labels", "nearest_label"]

BACKGROUND = "others"
_FORBIDDEN = ("| ", " *", "\n", "\r", "<seg>", "</seg>")


def check_label(label: str) -> str:
    """Return ``label`` if it can stand in a grid text, else raise a ``ValueError`` naming it.

    Example:
        >>> import segtext as st
        >>> st.check_label("white horse")
        'white horse'
        >>> st.check_label("a | b")
        Traceback (most recent call last):
        ...
        ValueError: label 'a | b' contains '| ', which the grid text uses as a separator
    """
    if not isinstance(label, str):
        raise TypeError(f"labels must be str, got {type(label).__name__} {label!r}")
    if not label:
        raise ValueError("label '' is empty; every label needs at least one character")
    for bad in _FORBIDDEN:
        if bad in label:
            raise ValueError(f"label {label!r} contains {bad!r}, which the grid text uses as a separator")
    if label.endswith("|"):
        raise ValueError(f"label {label!r} ends with '|', which would read as the run separator '| '")
    if label != label.strip():
        raise ValueError(f"label {label!r} has leading or trailing whitespace")
    return label


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Validate a label list (``labels[i]`` is the text of id ``i``) and return it as a tuple.

    Example:
        >>> import segtext as st
        >>> st.check_labels(["others", "dog"])
        ('others', 'dog')
    """
    if type(labels) is tuple and labels:  # the common cases first: no ABC check, one cache lookup
        try:
            return _checked(labels)
        except TypeError:  # an unhashable item; the checks below name it
            pass
    elif type(labels) is list and labels:
        try:
            return _checked(tuple(labels))
        except TypeError:
            pass
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of str, got {type(labels).__name__}")
    if len(labels) == 0:
        raise ValueError("labels is empty; expected at least the background label")
    return _checked(tuple(labels))


def label_key(text: str) -> str:
    """What a label is compared by when its spelling slipped: casefolded, without the
    punctuation or spaces around it (``"Others."`` and ``"OTHERS"`` are ``"others"``); ``""``
    for a text with no letter or digit (private to the decoders)."""
    i, j = 0, len(text)
    while i < j and not text[i].isalnum():
        i += 1
    while j > i and not text[j - 1].isalnum():
        j -= 1
    return text[i:j].casefold()


def refuse_background_alias(labels: tuple[str, ...]) -> None:
    """Refuse a foreground label spelled like the background (``labels[0]``): its cells would
    read back as background, so the mask would be lost (private to the encoders)."""
    for i in range(1, len(labels)):
        if labels[i] == labels[0]:
            raise ValueError(f"label {i} is {labels[i]!r}, the background word: its cells would "
                             "decode as background; give the foreground another name")


@lru_cache(maxsize=256)
def _checked(labels: tuple) -> tuple[str, ...]:
    for label in labels:
        check_label(label)
    return labels


@lru_cache(maxsize=256)
def label_table(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTF-8 buffer, offsets and canonical ids of a (checked) label tuple.

    ``canon[i]`` is the first id whose text equals ``labels[i]``, so equal texts share runs.
    """
    encoded = [s.encode("utf-8") for s in labels]
    buf = np.frombuffer(b"".join(encoded), np.uint8)
    off = np.zeros(len(labels) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=off[1:])
    first: dict[str, int] = {}
    canon = np.array([first.setdefault(s, i) for i, s in enumerate(labels)], np.int32)
    return buf, off, canon


def nearest_label(text: str, labels: Sequence[str]) -> int:
    """Id of the label closest to ``text`` by edit distance (ties go to the lower id).

    Example:
        >>> import segtext as st
        >>> st.nearest_label("whit horse", ["others", "white horse", "dog"])
        1
    """
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) == 0:
        raise ValueError("labels must be a non-empty list of str")
    a = np.array([ord(ch) for ch in text], np.int64)
    best, best_d = 0, None
    for i, label in enumerate(labels):
        if best_d is not None and abs(len(label) - len(text)) >= best_d:
            continue  # the distance is at least the difference in length: it cannot win
        d = K.edit_distance(a, np.array([ord(ch) for ch in label], np.int64))
        if best_d is None or d < best_d:
            best, best_d = i, d
    return best


class LabelMatcher:
    """The label rules both decoders share (:mod:`segtext.rrle`, :mod:`segtext.bricks`; private
    to them): a written label that is a known label is that label's id; one that differs from a
    known label only in case or in punctuation and spaces around it (the same :func:`label_key`)
    is that label's id, with a ``label_case`` repair; anything else is unknown (``None``), for
    the decoder's own policy, with :meth:`nearest` and :meth:`refuse` at hand.

    Example:
        >>> from segtext.labels import LabelMatcher
        >>> from segtext.repairs import RepairLog
        >>> log = RepairLog("Dog.", strict=False)
        >>> m = LabelMatcher(["others", "dog"])
        >>> m.find("dog", 0, log), m.find("Dog.", 0, log), m.find("cat", 0, log), [r.kind for r in log.repairs]
        (1, 1, None, ['label_case'])
    """

    def __init__(self, labels: Sequence[str], fold: bool = True) -> None:
        self.labels = list(labels)  # grows with add()
        self.fold = fold  # False: only exact labels match (Text4Seg's own reading)
        self.ids: dict[str, int] = {}
        self.folded: dict[str, int] = {}  # label_key -> the first id it stands for
        for i, s in enumerate(self.labels):
            self.ids.setdefault(s, i)
            self._fold(s, i)
        self._nearest: dict[str, int] = {}  # one edit-distance search per distinct text

    def _fold(self, text: str, i: int) -> None:
        key = label_key(text)
        if key:
            self.folded.setdefault(key, i)

    def find(self, text: str, offset: int, log: RepairLog) -> int | None:
        """The id ``text`` (at ``offset`` of the text ``log`` covers) stands for, or ``None``."""
        v = self.ids.get(text)
        if v is not None or not self.fold:
            return v
        key = label_key(text)
        v = self.folded.get(key) if key else None
        if v is not None:
            log.add("label_case", offset, f"label {text!r} read as {self.labels[v]!r}",
                    expected=repr(self.labels[v]), found=repr(text))
        return v

    def add(self, text: str, fold: bool = True) -> int:
        """Append ``text`` as a new label; its id. ``fold``: later slips of it match it too."""
        self.labels.append(text)
        v = self.ids[text] = len(self.labels) - 1
        if fold:
            self._fold(text, v)
        return v

    def nearest(self, text: str) -> int:
        """The id of the label closest to ``text`` (:func:`nearest_label`)."""
        v = self._nearest.get(text)
        if v is None:
            v = self._nearest[text] = nearest_label(text, self.labels)
        return v

    def refuse(self, text: str, offset: int, log: RepairLog) -> NoReturn:
        """Raise the ``unknown_label`` :class:`~segtext.repairs.DecodeError` for ``text``."""
        line, column = log.position(offset)
        raise DecodeError("unknown_label", f"unknown label {text!r}", line, column,
                          expected="a label from the labels list", found=repr(text))
