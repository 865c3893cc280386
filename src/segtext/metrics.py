"""Scores for segmentation answers, with the conventions of Text4Seg, LISA and GRES.

Referring segmentation (binary masks, one prediction per sample)
    * ``ciou``: total intersection over total union of all samples,
      ``sum(I) / (sum(U) + 1e-10)`` (LISA's formula).
    * ``giou``: mean over samples of ``I / (U + 1e-5)``; a sample with an empty prediction
      and an empty ground truth scores 1 (so on a no-target sample an empty prediction
      scores 1 and any foreground 0).
    * ``acc50``: share of samples whose predicted box (the tight box of the predicted mask)
      has IoU ``> 0.5`` with the ground-truth box; both empty counts as a hit, one empty as
      a miss. Boxes are in pixel edges; ``box_convention="t4s"`` scores them as Text4Seg's
      evaluation does (inclusive last pixel, no +1).
    * ``n_acc`` (generalized referring): share of no-target samples (empty ground truth)
      predicted empty; ``t_acc``: share of target samples predicted non-empty. ``None``
      when the dataset has no sample of that kind.

Semantic segmentation (label maps)
    * ``miou``: per class, total intersection over total union across the dataset, pixels
      whose ground truth is ``ignore_index`` left out; the mean is over classes that occur
      in the prediction or the ground truth.

Masks are ``(H, W)`` arrays (non-zero is foreground) or COCO RLE dicts, of the same size
for a prediction and its ground truth; RLE pairs are compared on their runs without
decoding, and a decoded grid against an RLE cell by cell (:func:`grid_iou`). Both evaluators
accumulate sample by sample in constant memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segtext import _kernels as K
from segtext._validate import as_array
from segtext.coco import rle_runs

__all__ = [
    "BOX_CONVENTIONS",
    "ReferringEvaluator",
    "SampleScore",
    "SemanticEvaluator",
    "box_iou",
    "evaluate_referring",
    "evaluate_semantic",
    "grid_iou",
    "mask_iou",
]

_EPS_GIOU = 1e-5
_EPS_CIOU = 1e-10


def _binary(mask: Any, name: str) -> tuple[str, Any, tuple[int, int]]:
    """('rle', runs, size) or ('dense', array, size) of a binary mask."""
    if isinstance(mask, dict):
        counts, size = rle_runs(mask, name)
        return "rle", counts, size
    m = as_array(mask, name)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) mask, got shape {m.shape}")
    if m.dtype == np.bool_:
        m = m.view(np.uint8)
    elif m.dtype.kind == "f":
        if not np.isfinite(m).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    elif m.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold bool or numeric values (non-zero is foreground), got dtype {m.dtype}")
    return "dense", m, m.shape


def _box(kind: str, data: Any, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    y0, y1, x0, x1 = K.rle_bbox(data, size[0]) if kind == "rle" else K.mask_bbox(data)
    return None if y0 < 0 else (int(x0), int(y0), int(x1), int(y1))


BOX_CONVENTIONS = ("edges", "t4s")


def box_iou(a: Sequence[int] | None, b: Sequence[int] | None, convention: str = "edges") -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes in pixel edges; ``None`` is an empty box.

    Two empty boxes score 1, one empty box 0. ``convention="t4s"`` scores the boxes the
    way Text4Seg's evaluation does (boxes from ``masks_to_boxes``: the last column and row
    themselves, not one past them, with area ``(x2 - x1) * (y2 - y1)``), so a box one pixel
    wide has no area; use it to compare Acc@0.5 with Text4Seg's published numbers.

    Example:
        >>> import segtext as st
        >>> st.metrics.box_iou((0, 0, 2, 2), (1, 0, 3, 2))
        0.3333333333333333
        >>> st.metrics.box_iou((0, 0, 2, 2), (1, 0, 3, 2), convention="t4s")
        0.0
    """
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"convention must be one of {BOX_CONVENTIONS}, got {convention!r}")
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    if convention == "t4s":
        ax2, ay2, bx2, by2 = ax2 - 1, ay2 - 1, bx2 - 1, by2 - 1
    iw = max(0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class SampleScore:
    """The scores of one referring sample (what :meth:`ReferringEvaluator.add` returns).

    ``pred_box`` and ``gt_box`` are the tight boxes of the two masks in pixel edges
    (``None`` for an empty mask).
    """

    intersection: int
    union: int
    pred_area: int
    gt_area: int
    pred_box: tuple[int, int, int, int] | None = None
    gt_box: tuple[int, int, int, int] | None = None

    @property
    def iou(self) -> float:
        """``I / (U + 1e-5)``, or 1 when prediction and ground truth are both empty."""
        return 1.0 if self.union == 0 else self.intersection / (self.union + _EPS_GIOU)

    @property
    def box_iou(self) -> float:
        """IoU of the two boxes (pixel edges; see :func:`box_iou`)."""
        return box_iou(self.pred_box, self.gt_box)

    def hit50(self, convention: str = "edges") -> bool:
        """The predicted box has IoU > 0.5 with the ground-truth box, under ``convention``."""
        return box_iou(self.pred_box, self.gt_box, convention) > 0.5

    @property
    def acc50(self) -> bool:
        """:meth:`hit50` with pixel-edge boxes."""
        return self.hit50()


def mask_iou(pred: Any, gt: Any) -> SampleScore:
    """Intersection, union, areas and box IoU of a predicted and a ground-truth binary mask.

    Args:
        pred, gt: ``(H, W)`` binary arrays (numpy or torch) or COCO RLE dicts, one size.

    Raises:
        ValueError: sizes differ, or a mask is not 2-D.

    Example:
        >>> import numpy as np, segtext as st
        >>> p = np.array([[1, 1, 0, 0]], bool); g = np.array([[0, 1, 1, 0]], bool)
        >>> s = st.metrics.mask_iou(p, g)
        >>> s.intersection, s.union, round(s.iou, 4)
        (1, 3, 0.3333)
    """
    kp, dp, sp = _binary(pred, "pred")
    kg, dg, sg = _binary(gt, "gt")
    if tuple(sp) != tuple(sg):
        raise ValueError(f"pred has size {tuple(sp)} but gt has size {tuple(sg)}; they must match")
    if kp == "rle" and kg == "rle":
        i, u, a, b = K.runs_iu(dp, dg)
    elif kp == "dense" and kg == "dense":
        i, u, a, b = K.dense_iu(dp, dg)
    elif kp == "dense":
        i, u, a, b = K.dense_runs_iu(dp, dg)
    else:
        i, u, b, a = K.dense_runs_iu(dg, dp)
    return SampleScore(int(i), int(u), int(a), int(b), _box(kp, dp, sp), _box(kg, dg, sg))


def grid_iou(grid: Any, gt: dict, method: str = "exact") -> SampleScore:
    """:func:`mask_iou` of a grid expanded to the ground truth's size and a COCO RLE,
    computed cell by cell from the runs; no mask is built at full size.

    Args:
        grid: ``(h, w)`` binary grid (non-zero is foreground), e.g. ``decode_rrle(...).grid``.
        gt: COCO RLE dict; its size is the image size.
        method: ``"exact"`` (the cell geometry) or ``"t4s"`` (Text4Seg's upsampling).

    Example:
        >>> import numpy as np, segtext as st
        >>> gt = {"size": [2, 4], "counts": [4, 4]}  # right half
        >>> st.metrics.grid_iou(np.array([[0, 1]]), gt).iou > 0.99
        True
    """
    g = as_array(grid, "grid")
    if g.ndim != 2 or g.size == 0 or g.dtype.kind not in "biu":
        raise ValueError(f"grid must be a non-empty 2-D integer array, got shape {g.shape}, dtype {g.dtype}")
    if method not in ("exact", "t4s"):
        raise ValueError(f"method must be 'exact' or 't4s', got {method!r}")
    counts, (H, W) = rle_runs(gt, "gt")
    if g.dtype == np.bool_:
        g = g.view(np.uint8)
    i, u, a, b, box = K.grid_runs_iu(g, counts, H, W, method == "t4s")
    pred_box = tuple(int(v) for v in box) if a else None
    return SampleScore(int(i), int(u), int(a), int(b), pred_box, _box("rle", counts, (H, W)))


class ReferringEvaluator:
    """Accumulates referring-segmentation scores sample by sample, in constant memory.

    Args:
        box_convention: how Acc@0.5 scores boxes: ``"edges"`` (pixel edges, the default)
            or ``"t4s"`` (Text4Seg's, see :func:`box_iou`).

    Example:
        >>> import numpy as np, segtext as st
        >>> ev = st.metrics.ReferringEvaluator()
        >>> _ = ev.add(np.array([[1, 0]], bool), np.array([[1, 0]], bool))
        >>> _ = ev.add(np.array([[0, 0]], bool), np.array([[0, 0]], bool))  # no target, predicted empty
        >>> r = ev.result()
        >>> round(r["giou"], 4), r["n_acc"], r["n"]
        (1.0, 1.0, 2)
    """

    def __init__(self, box_convention: str = "edges") -> None:
        if box_convention not in BOX_CONVENTIONS:
            raise ValueError(f"box_convention must be one of {BOX_CONVENTIONS}, got {box_convention!r}")
        self.box_convention = box_convention
        self.n = 0
        self.sum_i = 0
        self.sum_u = 0
        self.sum_iou = 0.0
        self.hits50 = 0
        self.no_target = 0
        self.no_target_empty = 0
        self.target = 0
        self.target_found = 0

    def add_score(self, s: SampleScore) -> SampleScore:
        """Accumulate a precomputed :class:`SampleScore`; returns it."""
        self.n += 1
        self.sum_i += s.intersection
        self.sum_u += s.union
        self.sum_iou += s.iou
        self.hits50 += s.hit50(self.box_convention)
        if s.gt_area == 0:
            self.no_target += 1
            self.no_target_empty += s.pred_area == 0
        else:
            self.target += 1
            self.target_found += s.pred_area > 0
        return s

    def add(self, pred: Any, gt: Any) -> SampleScore:
        """Score one sample (masks as arrays or COCO RLE) and accumulate it."""
        return self.add_score(mask_iou(pred, gt))

    def add_grid(self, grid: Any, gt: dict, method: str = "exact") -> SampleScore:
        """Score a decoded grid against a COCO RLE without building either at full size."""
        return self.add_score(grid_iou(grid, gt, method))

    def result(self) -> dict:
        """``ciou``, ``giou``, ``acc50``, ``n``, ``n_acc``, ``t_acc``, ``no_target``, ``target``."""
        n = max(self.n, 1)
        return {
            "ciou": self.sum_i / (self.sum_u + _EPS_CIOU),
            "giou": self.sum_iou / n,
            "acc50": self.hits50 / n,
            "n": self.n,
            "n_acc": self.no_target_empty / self.no_target if self.no_target else None,
            "t_acc": self.target_found / self.target if self.target else None,
            "no_target": self.no_target,
            "target": self.target,
        }


def evaluate_referring(preds: Iterable[Any], gts: Iterable[Any]) -> dict:
    """cIoU, gIoU, Acc@0.5 (and N-acc / T-acc) of predicted against ground-truth masks.

    Args:
        preds, gts: sequences of binary masks (arrays or COCO RLE dicts), pairwise of one size.

    Returns:
        The dict of :meth:`ReferringEvaluator.result`.

    Raises:
        ValueError: the sequences differ in length, or a pair differs in size.

    Example:
        >>> import numpy as np, segtext as st
        >>> gt = np.zeros((4, 4), bool); gt[:2, :2] = True
        >>> pred = np.zeros((4, 4), bool); pred[:2, :1] = True
        >>> r = st.metrics.evaluate_referring([pred], [gt])
        >>> round(r["ciou"], 3), round(r["giou"], 3), r["acc50"]
        (0.5, 0.5, 0.0)
    """
    return _feed(ReferringEvaluator(), preds, gts)


class SemanticEvaluator:
    """Accumulates a confusion matrix over label maps; :meth:`result` gives mIoU.

    Args:
        n_classes: labels are ``0..n_classes-1``.
        ignore_index: ground-truth label of pixels left out (255 by convention), or None.

    Example:
        >>> import numpy as np, segtext as st
        >>> ev = st.metrics.SemanticEvaluator(3)
        >>> ev.add(np.array([[0, 1, 2, 2]]), np.array([[0, 1, 1, 255]]))
        >>> r = ev.result(); round(r["miou"], 4), [round(v, 2) for v in r["iou"]]
        (0.5, [1.0, 0.5, 0.0])
    """

    def __init__(self, n_classes: int, ignore_index: int | None = 255) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.n_classes = int(n_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.n_classes, self.n_classes), np.int64)

    def add(self, pred: Any, gt: Any) -> None:
        """Accumulate one pair of ``(H, W)`` integer label maps."""
        p = as_array(pred, "pred")
        g = as_array(gt, "gt")
        if p.ndim != 2 or p.shape != g.shape:
            raise ValueError(f"pred {p.shape} and gt {g.shape} must be 2-D label maps of one shape")
        for name, a in (("pred", p), ("gt", g)):
            if a.dtype.kind not in "iub":
                raise TypeError(f"{name} must hold integer labels, got dtype {a.dtype}")
        has_ignore = self.ignore_index is not None
        m, status, value = K.confusion(p.astype(np.int64, copy=False), g.astype(np.int64, copy=False),
                                       self.n_classes, int(self.ignore_index or 0), has_ignore)
        if status:
            raise ValueError(f"label {int(value)} is outside 0..{self.n_classes - 1} "
                             f"(ignore_index={self.ignore_index})")
        self.matrix += m

    def result(self) -> dict:
        """``miou``, per-class ``iou`` (NaN for absent classes), ``pixel_acc``."""
        m = self.matrix
        inter = np.diag(m).astype(np.float64)
        union = m.sum(0) + m.sum(1) - np.diag(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        present = union > 0
        total = m.sum()
        return {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou": iou.tolist(),
            "pixel_acc": float(inter.sum() / total) if total else float("nan"),
        }


def evaluate_semantic(preds: Iterable[Any], gts: Iterable[Any], n_classes: int,
                      ignore_index: int | None = 255) -> dict:
    """mIoU of predicted label maps against ground truth (see :class:`SemanticEvaluator`).

    Example:
        >>> import numpy as np, segtext as st
        >>> r = st.metrics.evaluate_semantic([np.array([[0, 1]])], [np.array([[0, 1]])], n_classes=2)
        >>> r["miou"]
        1.0
    """
    return _feed(SemanticEvaluator(n_classes, ignore_index), preds, gts)


def _feed(ev: ReferringEvaluator | SemanticEvaluator, preds: Iterable[Any], gts: Iterable[Any]) -> dict:
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths; they must pair up")
    for p, g in zip(preds, gts):
        ev.add(p, g)
    return ev.result()
