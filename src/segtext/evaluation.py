"""From a model's raw answers to referring-segmentation scores, with nothing dropped silently.

The pipeline behind ``segtext eval`` (and ``segtext show --worst``)::

    predictions JSONL ──┐   decode each answer (R-RLE family or B-SD,   ┌─> cIoU, gIoU, Acc@0.5,
                        ├─> detected from the text or forced; repair,   ├─> N-acc / T-acc
    ground truth ───────┘   strict or t4s mode) and score it against    ├─> decode-health table
    (COCO JSON or JSONL)    its ground truth (st.metrics)               └─> per-sample records

Inputs
------
Predictions: JSON Lines, one object per line with an ``id`` and the model's raw answer under
``answer``, ``text`` or ``output`` (the first of these keys present is used). Blank lines are
ignored. A line that is not valid JSON, not an object, has no usable id or answer, or repeats
an id is a *bad line*: it is reported with its line number and skipped
(``on_bad_line="skip"``) or ends the run (``"fail"``).

Ground truth, either
    * a COCO instances file (``{"annotations", "images", "categories"}``) or COCO results file
      (a list of annotations whose RLE carries its size), read with
      :func:`segtext.coco.load_annotations`; the sample id is the annotation id; or
    * JSON Lines with ``id``, the mask under ``segmentation`` (or ``rle`` / ``mask``: a COCO RLE
      dict, compressed or not, a list of them (their union: the ``segmentation`` of ``segtext
      build --style xsam`` records), or polygons; ``null`` or ``[]`` for a no-target sample) and the
      image size as ``image_size`` ``[H, W]`` or ``height`` and ``width`` (optional when the RLE
      has its size). Optional: ``file_name`` (or ``image``), ``image_id``, ``label``.

Ids are matched as text, so ``42`` and ``"42"`` are the same sample. A prediction whose id has
no ground truth is reported and not scored; a ground truth without a prediction is reported
and scored as an empty prediction (so it scores 1 in gIoU on a no-target sample, 0 otherwise).

Decoding and scoring
--------------------
The format of each answer is detected from its text (``format="auto"``): an answer with B-SD
markup (``<ref>``, ``<box>``, Qwen2-VL's ``<|box_start|>`` / ``<|object_ref_start|>``, or brick
tokens ``<fg_k>`` / ``<bg_k>``) is B-SD; one with ``<seg>``, a run (``" *"``) or a cell
separator (``"| "``) is of the R-RLE family (R-RLE, I-SD, I-RLE); anything else holds no mask
and counts as an empty prediction (in B-SD that is how "no target" is written). ``format="rrle"``
or ``"bsd"`` forces one decoder for every answer.

* R-RLE family: :func:`segtext.decode_rrle` with ``mode`` (``repair``, ``strict`` or ``t4s``),
  the grid size given or inferred per answer, the vocabulary inferred; the foreground is every
  label other than ``others`` (Text4Seg's rule). The grid is scored against the ground truth's
  runs with :meth:`segtext.metrics.ReferringEvaluator.add_grid`: no full-size mask is built.
  Upsampling is the cell geometry (``upsample="exact"``) or Text4Seg's (``"t4s"``, the default
  in ``t4s`` mode). In ``t4s`` mode Acc@0.5 also scores boxes as Text4Seg does (see
  :func:`segtext.metrics.box_iou`).
* B-SD: :func:`segtext.decode_bsd` at the ground truth's image size, with the same vocabulary
  (without ``others``) and ``unknown`` policy: a ``<ref>`` label in another case is the known
  label (``label_case``), another label follows ``unknown`` (``background`` drops the object);
  the union of the objects' masks is scored with :meth:`~segtext.metrics.ReferringEvaluator.add`. ``t4s`` mode has no
  B-SD counterpart (Text4Seg's public decoder reads R-RLE only): B-SD answers are then decoded
  in ``repair`` mode, and the result says so in ``notes``.
* In ``strict`` mode an answer that deviates from the format is *rejected*: it scores as an
  empty prediction and its error (kind, line, column) is kept in its record.

Example:
    >>> import numpy as np, segtext as st
    >>> from segtext.evaluation import evaluate
    >>> gt = [{"id": 1, "segmentation": {"size": [4, 4], "counts": [8, 8]}},      # right half
    ...       {"id": 2, "segmentation": None, "image_size": [4, 4]}]               # no target
    >>> preds = [{"id": 1, "answer": "<seg>others *1| it *1\\n others *1| it *1\\n</seg>"},
    ...          {"id": 2, "answer": "<seg>others *2\\n others *2</seg>"}]
    >>> res = evaluate(preds, gt)
    >>> round(res.metrics["ciou"], 4), res.metrics["n_acc"], res.health.clean, res.health.repaired
    (1.0, 1.0, 1, 1)
    >>> res.health.repair_kinds
    {'missing_final_newline': 1}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtext._validate import check_image_size, grid_size_arg, image_size_arg
from segtext.limits import MAX_RESOLUTION
from segtext.bricks import BOX_FORMATS, DecodedObjects, decode_bsd, merge_objects
from segtext.coco import load_annotations, merge_rles, rle_runs, rles_runs, to_rle
from segtext.grid import grid_to_mask
from segtext.metrics import ReferringEvaluator, SampleScore, grid_iou, mask_iou
from segtext.repairs import DecodeError, Repair
from segtext.labels import BACKGROUND, check_label, check_labels
from segtext.rrle import DecodedGrid, decode_rrle

__all__ = [
    "ANSWER_KEYS",
    "DecodeHealth",
    "DecodedAnswer",
    "EvalResult",
    "EvaluationError",
    "GroundTruth",
    "Problem",
    "SampleRecord",
    "decode_answer",
    "detect_format",
    "evaluate",
    "load_ground_truth",
    "read_predictions",
    "rle_to_mask",
]

#: keys that may hold the model's answer in a predictions line, in order of preference
ANSWER_KEYS = ("answer", "text", "output")
FORMAT_CHOICES = ("auto", "rrle", "bsd")
MODE_CHOICES = ("repair", "strict", "t4s")
UNKNOWN_CHOICES = ("foreground", "background", "nearest")
UPSAMPLE_CHOICES = ("exact", "t4s")
ON_BAD_LINE = ("skip", "fail")
_GT_MASK_KEYS = ("segmentation", "rle", "mask")
_BSD_MARKERS = tuple(dict.fromkeys(
    [s.ref_open for s in BOX_FORMATS.values()] + [s.box_open for s in BOX_FORMATS.values()]
    + ["<fg_", "<bg_"]))
_RRLE_MARKERS = ("<seg>", "</seg>", " *", "| ")
_EMPTY_GRID = np.zeros((1, 1), np.uint8)


class EvaluationError(ValueError):
    """An input the evaluation cannot use (unreadable file, bad layout, a bad line under
    ``on_bad_line="fail"``); the message names the file and line."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Problem:
    """Something in the inputs that was skipped or could not be matched.

    ``kind`` is ``"bad_line"`` (a malformed predictions line), ``"bad_ground_truth"`` (a
    ground-truth entry that cannot be used), ``"no_ground_truth"`` (a prediction whose id has
    no ground truth; not scored) or ``"missing_prediction"`` (a ground truth without a
    prediction; scored as empty). ``line`` is 1-based (for COCO files: the annotation's
    index + 1), ``None`` where it does not apply.
    """

    kind: str
    source: str
    line: int | None
    id: Any
    message: str

    def __str__(self) -> str:
        where = self.source + (f" line {self.line}" if self.line is not None else "")
        ident = f" (id {self.id!r})" if self.id is not None else ""
        return f"{where}{ident}: {self.message}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "line": self.line, "id": self.id,
                "message": self.message}


@dataclass
class GroundTruth:
    """One ground-truth sample: its id, image size and mask as a COCO RLE.

    ``runs`` is the RLE with its counts already decoded (what the scorer reads); ``rle`` is
    the RLE as given.
    """

    id: Any
    image_size: tuple[int, int]
    rle: dict
    runs: dict | None = None
    label: str | None = None
    image_id: Any = None
    file_name: str | None = None
    line: int | None = None
    source: str = "<ground truth>"

    def mask(self) -> np.ndarray:
        """The ground truth as an ``(H, W)`` bool mask."""
        return rle_to_mask(self.runs if self.runs is not None else self.rle)


@dataclass
class SampleRecord:
    """The outcome for one sample (one line of ``--per-sample``).

    ``status`` is ``"clean"`` (decoded with no repair), ``"repaired"``, ``"rejected"`` (strict
    mode: the answer deviates from the format; scored empty), ``"no_mask"`` (the answer holds
    no mask markup; scored empty) or ``"missing"`` (no prediction; scored empty). ``repairs``
    counts the repairs by kind. ``answer`` is kept only when asked for.
    """

    id: Any
    iou: float
    intersection: int
    union: int
    pred_area: int
    gt_area: int
    acc50: bool
    format: str
    status: str
    repairs: dict[str, int] = field(default_factory=dict)
    line: int | None = None
    error: str | None = None
    grid_size: tuple[int, int] | None = None
    answer: str | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "iou": self.iou, "intersection": self.intersection, "union": self.union,
             "pred_area": self.pred_area, "gt_area": self.gt_area, "acc50": self.acc50,
             "format": self.format, "status": self.status, "repairs": dict(self.repairs),
             "line": self.line}
        if self.grid_size is not None:
            d["grid_size"] = list(self.grid_size)
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class DecodeHealth:
    """How the answers decoded: the decode-health table.

    Attributes:
        ground_truths: samples in the ground truth.
        predictions: usable prediction lines read (bad lines not included).
        scored: samples scored (answers matched to a ground truth, plus missing predictions).
        clean: answers decoded with no repair.
        repaired: answers that needed at least one repair.
        rejected: answers refused in strict mode (scored as empty).
        no_mask: answers holding no mask markup at all (scored as empty).
        empty: answers whose decoded prediction is empty (any status).
        missing: ground truths without a prediction (scored as empty).
        no_ground_truth: predictions whose id has no ground truth (not scored).
        bad_lines: malformed prediction lines, skipped.
        bad_ground_truth: ground-truth entries that could not be used, skipped.
        repair_kinds: repair kind -> number of answers that needed it.
        rejected_kinds: error kind -> number of answers rejected for it (strict mode).
        formats: detected format -> number of answers.
        grid_sizes: ``"hxw"`` -> number of R-RLE-family answers decoded at that size.
    """

    ground_truths: int = 0
    predictions: int = 0
    scored: int = 0
    clean: int = 0
    repaired: int = 0
    rejected: int = 0
    no_mask: int = 0
    empty: int = 0
    missing: int = 0
    no_ground_truth: int = 0
    bad_lines: int = 0
    bad_ground_truth: int = 0
    repair_kinds: dict[str, int] = field(default_factory=dict)
    rejected_kinds: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    grid_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def answers(self) -> int:
        """Answers decoded and scored (``clean + repaired + rejected + no_mask``)."""
        return self.clean + self.repaired + self.rejected + self.no_mask

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "ground_truths", "predictions", "scored", "answers", "clean", "repaired", "rejected",
            "no_mask", "empty", "missing", "no_ground_truth", "bad_lines", "bad_ground_truth")}
        for k in ("repair_kinds", "rejected_kinds", "formats", "grid_sizes"):
            out[k] = dict(sorted(getattr(self, k).items(), key=lambda kv: (-kv[1], kv[0])))
        return out

    def table(self) -> str:
        """The table as text, one row per figure, with shares of the answers."""
        n = max(self.answers, 1)
        rows: list[tuple[str, int, str]] = []

        def row(name: str, v: int, share: bool = True) -> None:
            rows.append((name, v, f"{100.0 * v / n:5.1f}%" if share and self.answers else ""))

        row("answers decoded", self.answers)
        row("  parsed cleanly", self.clean)
        row("  needed repairs", self.repaired)
        for k, v in sorted(self.repair_kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            row(f"    {k}", v)
        if self.rejected or self.rejected_kinds:
            row("  rejected (strict mode, scored empty)", self.rejected)
            for k, v in sorted(self.rejected_kinds.items(), key=lambda kv: (-kv[1], kv[0])):
                row(f"    {k}", v)
        row("  no mask in the answer (scored empty)", self.no_mask)
        row("  decoded to an empty mask", self.empty)
        row("missing prediction (scored empty)", self.missing, share=False)
        row("prediction without ground truth (not scored)", self.no_ground_truth, share=False)
        row("bad prediction lines (skipped)", self.bad_lines, share=False)
        if self.bad_ground_truth:
            row("bad ground-truth entries (skipped)", self.bad_ground_truth, share=False)
        width = max(len(r[0]) for r in rows) + 2
        lines = [f"{'Decode health':<{width}}{'count':>8}  share of answers"]
        lines += [f"{name:<{width}}{v:>8}  {share}".rstrip() for name, v, share in rows]
        if self.formats:
            lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(self.formats.items(), key=lambda kv: -kv[1])))
        if self.grid_sizes:
            lines.append("grid sizes: " + ", ".join(f"{k} {v}" for k, v in
                                                    sorted(self.grid_sizes.items(), key=lambda kv: -kv[1])))
        return "\n".join(lines)


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: :meth:`segtext.metrics.ReferringEvaluator.result` (``ciou``, ``giou``,
            ``acc50``, ``n``, ``n_acc``, ``t_acc``, ``no_target``, ``target``).
        health: the :class:`DecodeHealth` table.
        records: one :class:`SampleRecord` per scored sample (empty with ``keep_records=False``).
        problems: every :class:`Problem` met (bad lines, unmatched ids), in order.
        options: the settings used.
        notes: remarks about the run (e.g. t4s mode meeting B-SD answers).
    """

    metrics: dict
    health: DecodeHealth
    records: list[SampleRecord]
    problems: list[Problem]
    options: dict
    notes: list[str] = field(default_factory=list)

    def worst(self, n: int) -> list[SampleRecord]:
        """The ``n`` records with the lowest IoU; among equal IoUs the larger union first (the
        bigger miss), then input order."""
        r = self.records
        order = sorted(range(len(r)), key=lambda i: (r[i].iou, -r[i].union, i))
        return [self.records[i] for i in order[:n]]

    def to_dict(self) -> dict:
        """Every figure as plain JSON-ready data (what ``segtext eval --json`` writes)."""
        return {"metrics": dict(self.metrics), "health": self.health.to_dict(),
                "options": dict(self.options), "notes": list(self.notes),
                "problems": [p.to_dict() for p in self.problems]}

    def summary(self) -> str:
        """The scores and the decode-health table as text (what ``segtext eval`` prints)."""
        m = self.metrics
        lines = [f"samples scored  {m['n']}"]
        for key, name in (("ciou", "cIoU"), ("giou", "gIoU"), ("acc50", "Acc@0.5")):
            lines.append(f"{name:<15} {100.0 * m[key]:6.2f}")
        if m["no_target"]:
            lines.append(f"{'N-acc':<15} {100.0 * m['n_acc']:6.2f}   ({m['no_target']} no-target samples)")
            if m["t_acc"] is not None:
                lines.append(f"{'T-acc':<15} {100.0 * m['t_acc']:6.2f}   ({m['target']} target samples)")
        return "\n".join(lines) + "\n\n" + self.health.table()


# --------------------------------------------------------------------------- masks


def rle_to_mask(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed or not) as an ``(H, W)`` bool mask.

    Example:
        >>> from segtext.evaluation import rle_to_mask
        >>> rle_to_mask({"size": [2, 3], "counts": [1, 2, 3]}).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0]]
    """
    counts, (H, W) = rle_runs(rle)
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(W, H).T.copy()


def _empty_rle(H: int, W: int) -> dict:
    return {"size": [H, W], "counts": [H * W]}


# --------------------------------------------------------------------------- decoding one answer


def detect_format(text: str) -> str:
    """``"bsd"``, ``"rrle"`` (the R-RLE family) or ``"none"`` (no mask markup) for an answer.

    Example:
        >>> from segtext.evaluation import detect_format
        >>> detect_format("<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>"), \\
        ...     detect_format("Sure, <seg>others *4\\n</seg>"), detect_format("There is none.")
        ('bsd', 'rrle', 'none')
    """
    for m in _BSD_MARKERS:
        if m in text:
            return "bsd"
    for m in _RRLE_MARKERS:
        if m in text:
            return "rrle"
    return "none"


@dataclass
class DecodedAnswer:
    """One answer decoded for scoring or display (what :func:`decode_answer` returns).

    Attributes:
        format: ``"rrle"``, ``"isd"``, ``"irle"`` (as read by the grid decoder), ``"bsd"`` or
            ``"none"`` (no mask markup).
        image_size: ``(H, W)`` the answer refers to.
        grid: the :class:`segtext.DecodedGrid` for the R-RLE family, else ``None``.
        objects: the :class:`segtext.DecodedObjects` for B-SD, else ``None``.
        repairs: every repair made.
        error: the :class:`segtext.DecodeError` of a rejected answer (strict mode), else ``None``.
        upsample: ``"exact"`` or ``"t4s"``, how a grid is expanded to pixels.
    """

    format: str
    image_size: tuple[int, int]
    grid: DecodedGrid | None = None
    objects: DecodedObjects | None = None
    repairs: list[Repair] = field(default_factory=list)
    error: DecodeError | None = None
    upsample: str = "exact"

    @property
    def status(self) -> str:
        """``"rejected"``, ``"no_mask"``, ``"repaired"`` or ``"clean"``."""
        if self.error is not None:
            return "rejected"
        if self.format == "none":
            return "no_mask"
        return "repaired" if self.repairs else "clean"

    @property
    def grid_size(self) -> tuple[int, int] | None:
        return None if self.grid is None else tuple(int(v) for v in self.grid.grid.shape)

    def score(self, gt: dict) -> SampleScore:
        """The :class:`segtext.metrics.SampleScore` of this answer against a COCO RLE of the
        image's size (a grid is scored on the RLE's runs, with no full-size mask)."""
        if self.grid is not None and self.error is None:
            return grid_iou(self.grid.foreground(), gt, self.upsample)
        if self.objects is not None and self.error is None and self.objects.objects:
            return mask_iou(self.objects.mask(), gt)
        return grid_iou(_EMPTY_GRID, gt)

    def mask(self) -> np.ndarray:
        """The predicted ``(H, W)`` bool mask (all False for a rejected or mask-less answer)."""
        if self.error is None and self.grid is not None:
            return grid_to_mask(self.grid.foreground(), self.image_size, method=self.upsample)
        if self.error is None and self.objects is not None:
            return self.objects.mask()
        return np.zeros(self.image_size, bool)

    def label_map(self) -> tuple[np.ndarray, list[str]]:
        """The ``(H, W)`` label map and its label texts (``labels[0]`` is the background)."""
        if self.error is None and self.grid is not None:
            return self.grid.to_mask(self.image_size, method=self.upsample, dtype=np.int32), \
                list(self.grid.labels)
        if self.error is None and self.objects is not None:
            labels = ["others", *dict.fromkeys(o.label for o in self.objects.objects)]
            return merge_objects(self.objects.objects, self.image_size, labels), labels
        return np.zeros(self.image_size, np.int32), ["others"]

    def boxes(self) -> list[tuple[int, int, int, int, str]]:
        """B-SD boxes as ``(x1, y1, x2, y2, label)`` in pixel edges; empty otherwise."""
        if self.error is not None or self.objects is None:
            return []
        return [(*o.box, o.label) for o in self.objects.objects]


def _check_options(format: str, mode: str, upsample: str | None, grid_size: Any,
                   resolution: int, box_format: str,
                   unknown: str = "foreground") -> tuple[str, tuple[int, int] | None]:
    if unknown not in UNKNOWN_CHOICES:
        raise ValueError(f"unknown must be one of {UNKNOWN_CHOICES}, got {unknown!r}")
    if format not in FORMAT_CHOICES:
        raise ValueError(f"format must be one of {FORMAT_CHOICES}, got {format!r}")
    if mode not in MODE_CHOICES:
        raise ValueError(f"mode must be one of {MODE_CHOICES}, got {mode!r}")
    if upsample is None:
        upsample = "t4s" if mode == "t4s" else "exact"
    if upsample not in UPSAMPLE_CHOICES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_CHOICES}, got {upsample!r}")
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {tuple(BOX_FORMATS)}, got {box_format!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if resolution > MAX_RESOLUTION:
        raise ValueError(f"resolution {resolution} is larger than the limit of {MAX_RESOLUTION} "
                         "(segtext.limits.MAX_RESOLUTION)")
    return upsample, None if grid_size is None else grid_size_arg(grid_size)


def _vocabulary(labels: Any) -> tuple[str, ...] | None:
    """A checked label list with the background first (prepended when missing), or None."""
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise TypeError(f"labels must be a list of str or None, got {type(labels).__name__}")
    out = check_labels([BACKGROUND] + [s for s in labels if s != BACKGROUND])
    return tuple(dict.fromkeys(out))


def _sample_vocabulary(labels: tuple[str, ...] | None, mode: str, gt_label: str | None):
    """The vocabulary one answer is read with: the given one, else the ground truth's label
    (not in t4s mode, whose referring decoder has none); None infers it from the answer."""
    if labels is not None or mode == "t4s" or not gt_label or gt_label == BACKGROUND:
        return labels
    try:
        return (BACKGROUND, check_label(gt_label))
    except (TypeError, ValueError):  # a label the grid text cannot hold: infer instead
        return None


def decode_answer(
    text: str,
    image_size: tuple[int, int],
    format: str = "auto",
    mode: str = "repair",
    grid_size: int | tuple[int, int] | None = None,
    upsample: str | None = None,
    resolution: int = 64,
    box_format: str = "norm1000",
    labels: Sequence[str] | None = None,
    unknown: str = "foreground",
    gt_label: str | None = None,
) -> DecodedAnswer:
    """Decode one raw answer the way :func:`evaluate` does.

    Args:
        text: the model's answer.
        image_size: ``(H, W)`` of the image (B-SD boxes and the mask size depend on it).
        format: ``"auto"`` (see :func:`detect_format`), ``"rrle"`` or ``"bsd"``.
        mode: ``"repair"``, ``"strict"`` (a deviation gives a rejected answer, not an
            exception) or ``"t4s"`` (Text4Seg's decoder; B-SD answers fall back to repair).
        grid_size: R-RLE grid ``(h, w)`` or int; ``None`` infers it from the text.
        upsample: ``"exact"`` or ``"t4s"``; ``None``: ``"t4s"`` in t4s mode, else ``"exact"``.
        resolution, box_format: B-SD settings (see :func:`segtext.decode_bsd`).
        labels: the vocabulary (``"others"`` first, prepended if missing); ``None``
            infers it from the answer. With a vocabulary, slips are repairs (``label_case``,
            ``truncated_label``) and other labels follow ``unknown``; B-SD ``<ref>`` labels
            are resolved to it without ``"others"`` (see :func:`segtext.decode_bsd`).
        unknown: what a label outside ``labels`` becomes: ``"foreground"`` (the default: as
            Text4Seg, anything but the background is foreground, reported as
            ``unknown_label``), ``"background"`` or ``"nearest"``.
        gt_label: the ground truth's label, the vocabulary when ``labels`` is None (as
            :func:`evaluate` reads each answer; not in t4s mode).

    Example:
        >>> from segtext.evaluation import decode_answer
        >>> a = decode_answer("<seg>others *1| dog *1\\n others *2\\n</seg>", (2, 4))
        >>> a.format, a.status, a.mask().astype(int).tolist()
        ('rrle', 'clean', [[0, 0, 1, 1], [0, 0, 0, 0]])
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    upsample, size = _check_options(format, mode, upsample, grid_size, resolution, box_format, unknown)
    return _decode(text, image_size_arg(image_size), format, mode, size, upsample, resolution, box_format,
                   _sample_vocabulary(_vocabulary(labels), mode, gt_label), unknown)


def _decode(text: str, image_size: tuple[int, int], format: str, mode: str,
            grid_size: tuple[int, int] | None, upsample: str, resolution: int,
            box_format: str, labels: tuple[str, ...] | None = None,
            unknown: str = "foreground") -> DecodedAnswer:
    fmt = detect_format(text) if format == "auto" else format
    if fmt == "none":
        return DecodedAnswer("none", image_size, upsample=upsample)
    if fmt == "bsd":
        try:
            objs = decode_bsd(text, image_size, resolution=resolution,
                              mode="strict" if mode == "strict" else "repair", box_format=box_format,
                              labels=labels[1:] if labels and len(labels) > 1 else None, unknown=unknown)
        except DecodeError as e:
            return DecodedAnswer("bsd", image_size, error=e, upsample=upsample)
        return DecodedAnswer("bsd", image_size, objects=objs, repairs=objs.repairs, upsample=upsample)
    try:
        res = decode_rrle(text, labels=labels, grid_size=grid_size, mode=mode, unknown=unknown)
    except DecodeError as e:
        return DecodedAnswer("rrle", image_size, error=e, upsample=upsample)
    return DecodedAnswer(res.format, image_size, grid=res, repairs=res.repairs, upsample=upsample)


# --------------------------------------------------------------------------- reading inputs


def _valid_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _key(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _source_name(source: Any) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<predictions>"


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str | None, str | None]]:
    """``(line number, text or None, decode error or None)`` of a UTF-8 text file."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise EvaluationError(f"file not found: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise EvaluationError(f"is a directory, expected a file: {os.fspath(path)}") from None
    except OSError as e:
        raise EvaluationError(f"cannot read {os.fspath(path)}: {e.strerror}") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield n, None, f"not UTF-8 text ({e.reason} at byte {e.start})"


def read_predictions(
    source: str | os.PathLike | Iterable[Any],
    on_bad_line: str = "skip",
    problems: list[Problem] | None = None,
    answer_keys: tuple[str, ...] = ANSWER_KEYS,
) -> Iterator[tuple[int, Any, str]]:
    """Yield ``(line, id, answer)`` for each usable prediction, in order.

    Args:
        source: a JSONL path, or an iterable of dicts (``{"id", "answer"}``) or ``(id, answer)``
            pairs (their 1-based position stands for the line number).
        on_bad_line: ``"skip"`` (report it in ``problems`` and go on) or ``"fail"`` (raise).
        problems: a list that receives a :class:`Problem` per bad line.
        answer_keys: keys that may hold the answer, first match wins.

    Raises:
        EvaluationError: the file cannot be read, or a bad line under ``"fail"``.

    Example:
        >>> from segtext.evaluation import read_predictions
        >>> out = []
        >>> list(read_predictions([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], problems=out))
        [(1, 1, 'a')]
        >>> print(out[0])
        <predictions> line 2 (id 1): duplicate id 1 (first on line 1); skipped
    """
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    name = _source_name(source)
    seen: dict[str, int] = {}

    def bad(line: int, ident: Any, why: str) -> None:
        p = Problem("bad_line", name, line, ident, why)
        if on_bad_line == "fail":
            raise EvaluationError(f"{p} (use on_bad_line='skip' / --on-bad-line skip to skip such lines)")
        if problems is not None:
            problems.append(p)

    if isinstance(source, (str, os.PathLike)):
        records: Iterable[tuple[int, Any, str | None]] = _jsonl_entries(source)
    else:
        records = ((n, item, None) for n, item in enumerate(source, 1))
    for n, obj, err in records:
        if err is not None:
            bad(n, None, err + "; skipped")
            continue
        if isinstance(obj, tuple) and len(obj) == 2:
            obj = {"id": obj[0], "answer": obj[1]}
        if not isinstance(obj, dict):
            bad(n, None, f"expected a JSON object with 'id' and 'answer', got {type(obj).__name__}; skipped")
            continue
        if "id" not in obj:
            bad(n, None, f"no 'id' (keys: {', '.join(map(str, list(obj)[:8]))}); skipped")
            continue
        ident = obj["id"]
        if not _valid_id(ident):
            bad(n, None, f"'id' must be an int or a string, got {type(ident).__name__} {ident!r:.40}; skipped")
            continue
        key = next((k for k in answer_keys if k in obj), None)
        if key is None:
            bad(n, ident, f"no answer: expected one of the keys {', '.join(map(repr, answer_keys))}; skipped")
            continue
        answer = obj[key]
        if not isinstance(answer, str):
            bad(n, ident, f"{key!r} must be a string, got {type(answer).__name__}; skipped")
            continue
        k = _key(ident)
        if k in seen:
            bad(n, ident, f"duplicate id {ident!r} (first on line {seen[k]}); skipped")
            continue
        seen[k] = n
        yield n, ident, answer


def _gt_from_record(obj: Any) -> GroundTruth:
    """A GroundTruth from one JSONL object; ValueError/TypeError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "id" not in obj:
        raise ValueError("no 'id'")
    ident = obj["id"]
    if not _valid_id(ident):
        raise ValueError(f"'id' must be an int or a string, got {type(ident).__name__}")
    size = obj.get("image_size", obj.get("size"))
    if size is None and "height" in obj and "width" in obj:
        size = (obj["height"], obj["width"])
    if size is not None:
        try:
            H, W = (int(v) for v in size)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"image size must be [H, W], got {size!r}") from None
        if H < 1 or W < 1:
            raise ValueError(f"image size {[H, W]} is empty")
        check_image_size(H, W, "image size")
        size = (H, W)
    key = next((k for k in _GT_MASK_KEYS if k in obj), None)
    seg = obj[key] if key is not None else None
    if key is None:
        raise ValueError(f"no mask: expected one of the keys {', '.join(map(repr, _GT_MASK_KEYS))} "
                         "(null for a no-target sample)")
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        if size is None:
            raise ValueError("a no-target sample needs 'image_size' [H, W] (or 'height' and 'width')")
        rle = _empty_rle(*size)
    elif isinstance(seg, list) and all(isinstance(x, dict) for x in seg):
        # a list of RLEs (`segtext build --style xsam` records): the target is their union
        parts = [to_rle(x, size) for x in seg]
        rle = parts[0] if len(parts) == 1 else merge_rles(parts)
    else:
        rle = to_rle(seg, size)
    H, W = (int(v) for v in rle["size"])
    file_name = obj.get("file_name", obj.get("image"))
    return GroundTruth(ident, (H, W), rle, label=obj.get("label"), image_id=obj.get("image_id"),
                       file_name=file_name if isinstance(file_name, str) else None)


def _read_json(path: str | os.PathLike) -> tuple[Any, bool]:
    """(parsed JSON, True) of a JSON file, or (None, False) when it is JSON Lines."""
    name = os.fspath(path)
    if name.endswith((".jsonl", ".ndjson")):
        return None, False
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise EvaluationError(f"file not found: {name}") from None
    except IsADirectoryError:
        raise EvaluationError(f"is a directory, expected a file: {name}") from None
    except OSError as e:
        raise EvaluationError(f"cannot read {name}: {e.strerror}") from None
    try:
        return json.loads(raw), True
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{name} is not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # more than one value: JSON Lines
            return None, False
        raise EvaluationError(f"{name} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None


def load_ground_truth(
    source: str | os.PathLike | list | dict | Iterable[Any],
    on_bad_line: str = "skip",
    problems: list[Problem] | None = None,
) -> dict[str, GroundTruth]:
    """Ground-truth samples by id (as text), in input order, every RLE checked and decoded.

    Args:
        source: a COCO instances / results JSON file (a ``.jsonl`` / ``.ndjson`` name, or a
            file holding more than one JSON value, is read as JSON Lines; see the module
            docstring), parsed COCO JSON, or an iterable of JSONL-style dicts (``id``,
            ``segmentation``, ``image_size``) or :class:`GroundTruth` objects. A list whose
            items all have an ``id`` is read as JSONL-style records (so ``null`` marks a
            no-target sample); other lists as COCO results, ids defaulting to the position.
        on_bad_line: ``"skip"`` an entry that cannot be used (reported in ``problems``) or
            ``"fail"`` (raise).
        problems: receives a :class:`Problem` per skipped entry.

    Raises:
        EvaluationError: unreadable file, wrong layout, or a bad entry under ``"fail"``.

    Example:
        >>> from segtext.evaluation import load_ground_truth
        >>> gts = load_ground_truth([{"id": 7, "segmentation": {"size": [2, 2], "counts": [1, 3]}}])
        >>> list(gts), gts["7"].image_size, int(gts["7"].mask().sum())
        (['7'], (2, 2), 3)
    """
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<ground truth>"
    out: dict[str, GroundTruth] = {}

    def bad(line: int | None, ident: Any, why: str) -> None:
        p = Problem("bad_ground_truth", name, line, ident, why)
        if on_bad_line == "fail":
            raise EvaluationError(f"{p} (use on_bad_line='skip' / --on-bad-line skip to skip such entries)")
        if problems is not None:
            problems.append(p)

    def add(gt: GroundTruth) -> None:
        gt.source = name
        k = _key(gt.id)
        if k in out:
            bad(gt.line, gt.id, f"duplicate id {gt.id!r} (first on line {out[k].line}); skipped")
        else:
            out[k] = gt

    entries: Iterable[tuple[int, Any, str | None]] = ()
    data, coco = (_read_json(source) if isinstance(source, (str, os.PathLike))
                  else (source, isinstance(source, (dict, list))))
    if not coco:
        entries = (_jsonl_entries(source) if isinstance(source, (str, os.PathLike))
                   else ((n, item, None) for n, item in enumerate(source, 1)))
    elif isinstance(data, dict) and "annotations" not in data and "id" in data:
        coco, entries = False, [(1, data, None)]  # a JSONL file of one line
    elif isinstance(data, list) and data and all(isinstance(a, GroundTruth) or (isinstance(a, dict) and "id" in a)
                                                    for a in data):
        # records with ids: read as JSONL-style entries, which also allow no-target samples
        coco, entries = False, ((n, item, None) for n, item in enumerate(data, 1))

    if coco:
        skipped: list = []
        images: dict[Any, str] = {}
        if isinstance(data, dict):
            for img in data.get("images") or []:
                if isinstance(img, dict) and isinstance(img.get("file_name"), str):
                    images[img.get("id")] = img["file_name"]
        try:
            anns = load_annotations(data, skip_invalid=on_bad_line == "skip", skipped=skipped)
        except ValueError as e:
            msg = str(e).replace("annotations:", f"{name}:", 1) if str(e).startswith("annotations:") else str(e)
            if not msg.startswith(name):
                msg = f"{name}: {msg}"
            raise EvaluationError(msg + (" (use --on-bad-line skip to skip such entries)"
                                         if "annotation " in msg else "")) from None
        for n, aid, why in skipped:
            bad(n + 1, aid, f"annotation {n}: {why}; skipped")
        for a in anns:
            image_id = a["image_id"]
            add(GroundTruth(a["id"], tuple(a["image_size"]), a["segmentation"], label=a["label"],
                            image_id=image_id,
                            file_name=images.get(image_id) if isinstance(image_id, (int, str)) else None,
                            line=a["index"] + 1))
    else:
        for n, obj, err in entries:
            if isinstance(obj, GroundTruth):
                obj.line = obj.line or n
                add(obj)
                continue
            if err is not None:
                bad(n, None, err + "; skipped")
                continue
            try:
                gt = _gt_from_record(obj)
            except (TypeError, ValueError) as e:
                bad(n, obj.get("id") if isinstance(obj, dict) and _valid_id(obj.get("id")) else None,
                    f"{e}; skipped")
                continue
            gt.line = n
            add(gt)
    _decode_runs(out, bad)
    return out


def _jsonl_entries(path: str | os.PathLike) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed JSON or None, error or None)`` per non-blank line of a JSONL file."""
    for n, text, err in _lines(path):
        if err is not None:
            yield n, None, err
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            yield n, json.loads(text), None
        except json.JSONDecodeError as e:
            where = "column" if e.msg.endswith(" at") else "at column"
            yield n, None, f"not valid JSON: {e.msg} {where} {e.colno}"


def _decode_runs(gts: dict[str, GroundTruth], bad: Callable[[int | None, Any, str], None]) -> None:
    """Decode every RLE's counts once (one compiled call), checking them; bad ones are dropped."""
    items = [g for g in gts.values() if g.runs is None]
    if not items:
        return
    try:
        counts, offsets, _ = rles_runs([g.rle for g in items])
    except (TypeError, ValueError):
        counts = None
    if counts is not None:
        for n, g in enumerate(items):
            g.runs = {"size": list(g.image_size), "counts": counts[offsets[n]:offsets[n + 1]]}
        return
    for g in items:  # error path: find the culprits one by one
        try:
            c, size = rle_runs(g.rle, "segmentation")
        except (TypeError, ValueError) as e:
            del gts[_key(g.id)]
            bad(g.line, g.id, f"{e}; skipped")
            continue
        g.runs = {"size": list(size), "counts": c}


# --------------------------------------------------------------------------- the pipeline


def evaluate(
    predictions: str | os.PathLike | Iterable[Any],
    ground_truth: str | os.PathLike | list | dict | Mapping[str, GroundTruth],
    format: str = "auto",
    mode: str = "repair",
    grid_size: int | tuple[int, int] | None = None,
    upsample: str | None = None,
    resolution: int = 64,
    box_format: str = "norm1000",
    labels: Sequence[str] | None = None,
    unknown: str = "foreground",
    on_bad_line: str = "skip",
    keep_records: bool = True,
    keep_answers: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> EvalResult:
    """Decode every answer, score it against its ground truth, and count how decoding went.

    Args:
        predictions: JSONL path, or an iterable of ``{"id", "answer"}`` dicts or ``(id, answer)``
            pairs (see :func:`read_predictions`).
        ground_truth: COCO JSON or JSONL path, parsed COCO JSON, an iterable of JSONL-style
            dicts, or the dict :func:`load_ground_truth` returns.
        format: ``"auto"``, ``"rrle"`` or ``"bsd"``.
        mode: ``"repair"`` (default), ``"strict"`` or ``"t4s"``.
        grid_size: R-RLE grid size; ``None`` infers it per answer.
        upsample: grid -> pixels, ``"exact"`` or ``"t4s"``; default ``"t4s"`` in t4s mode.
        resolution, box_format: B-SD settings.
        labels: the vocabulary for every answer (``"others"`` first; B-SD labels are read
            with the rest, see :func:`decode_answer`); ``None`` uses each
            ground truth's own label when it has one (except in t4s mode, whose referring
            decoder has no vocabulary), else infers it from the answer.
        unknown: a label outside the vocabulary: ``"foreground"`` (default, as Text4Seg:
            anything but the background is foreground), ``"background"`` or ``"nearest"``.
        on_bad_line: ``"skip"`` or ``"fail"`` for malformed prediction lines and ground-truth
            entries.
        keep_records: keep a :class:`SampleRecord` per sample in the result.
        keep_answers: also keep each answer's text in its record.
        progress: called with 1 after each sample is scored (e.g. a tqdm bar's ``update``).

    Returns:
        :class:`EvalResult`.

    Raises:
        EvaluationError: unreadable input, or a bad line under ``on_bad_line="fail"``.
        ValueError: bad options.
    """
    upsample, size = _check_options(format, mode, upsample, grid_size, resolution, box_format, unknown)
    vocab = _vocabulary(labels)
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE}, got {on_bad_line!r}")
    problems: list[Problem] = []
    if isinstance(ground_truth, Mapping) and all(isinstance(v, GroundTruth) for v in ground_truth.values()):
        gts = dict(ground_truth)
        _decode_runs(gts, lambda line, ident, why: problems.append(
            Problem("bad_ground_truth", "<ground truth>", line, ident, why)))
    else:
        gts = load_ground_truth(ground_truth, on_bad_line, problems)
    health = DecodeHealth(ground_truths=len(gts), bad_ground_truth=len(problems))
    ev = ReferringEvaluator(box_convention="t4s" if mode == "t4s" else "edges")
    records: list[SampleRecord] = []
    seen: set[str] = set()
    repair_kinds: Counter = Counter()
    rejected_kinds: Counter = Counter()
    formats: Counter = Counter()
    grid_sizes: Counter = Counter()
    pred_name = _source_name(predictions)
    n_bad_before = len(problems)
    bsd_in_t4s = 0

    for line, ident, answer in read_predictions(predictions, on_bad_line, problems):
        health.predictions += 1
        k = _key(ident)
        gt = gts.get(k)
        if gt is None:
            health.no_ground_truth += 1
            problems.append(Problem("no_ground_truth", pred_name, line, ident,
                                    "no ground truth with this id; not scored"))
            continue
        seen.add(k)
        dec = _decode(answer, gt.image_size, format, mode, size, upsample, resolution, box_format,
                      _sample_vocabulary(vocab, mode, gt.label), unknown)
        s = ev.add_score(dec.score(gt.runs))
        status = dec.status
        formats[dec.format] += 1
        kinds = Counter(r.kind for r in dec.repairs)
        if status == "clean":
            health.clean += 1
        elif status == "repaired":
            health.repaired += 1
            repair_kinds.update(kinds.keys())
        elif status == "rejected":
            health.rejected += 1
            rejected_kinds[dec.error.kind] += 1
        else:
            health.no_mask += 1
        if dec.format == "bsd" and mode == "t4s":
            bsd_in_t4s += 1
        if s.pred_area == 0:
            health.empty += 1
        gs = dec.grid_size
        if gs is not None and dec.error is None:
            grid_sizes[f"{gs[0]}x{gs[1]}"] += 1
        if keep_records:
            if dec.error is not None:
                kinds = Counter({dec.error.kind: 1})
            records.append(SampleRecord(
                ident, s.iou, s.intersection, s.union, s.pred_area, s.gt_area,
                s.hit50(ev.box_convention), dec.format,
                status, dict(kinds), line, None if dec.error is None else str(dec.error), gs,
                answer if keep_answers else None))
        if progress is not None:
            progress(1)

    health.bad_lines = len(problems) - n_bad_before - health.no_ground_truth
    for k, gt in gts.items():
        if k in seen:
            continue
        health.missing += 1
        problems.append(Problem("missing_prediction", gt.source, gt.line, gt.id,
                                "no prediction for this ground truth; scored as an empty mask"))
        s = ev.add_grid(_EMPTY_GRID, gt.runs)
        if keep_records:
            records.append(SampleRecord(gt.id, s.iou, s.intersection, s.union, s.pred_area, s.gt_area,
                                        s.hit50(ev.box_convention), "none", "missing", {}, None))
        if progress is not None:
            progress(1)
    health.scored = ev.n
    health.repair_kinds = dict(repair_kinds)
    health.rejected_kinds = dict(rejected_kinds)
    health.formats = dict(formats)
    health.grid_sizes = dict(grid_sizes)
    notes = []
    if bsd_in_t4s:
        notes.append(f"t4s mode reproduces Text4Seg's R-RLE decoder only; {bsd_in_t4s} B-SD "
                     "answer(s) were decoded in repair mode")
    if mode == "t4s" and size is None and grid_sizes:
        notes.append("t4s mode without grid_size (--grid-size) infers the grid from each answer; Text4Seg "
                     "pads or truncates every answer to one fixed size: pass it to reproduce its numbers")
    if size is None and len(grid_sizes) > 1:
        notes.append(f"R-RLE answers decoded at {len(grid_sizes)} different inferred grid sizes; "
                     "pass grid_size (--grid-size) to hold them to one")
    options = {"format": format, "mode": mode, "grid_size": list(size) if size else None,
               "upsample": upsample, "resolution": int(resolution), "box_format": box_format,
               "labels": list(vocab) if vocab else None, "unknown": unknown,
               "on_bad_line": on_bad_line}
    return EvalResult(ev.result(), health, records, problems, options, notes)

