"""The mask-head path: a Qwen2-VL that writes ``<SEG>`` and an X-SAM head that turns it into a mask.

:class:`XSamSegmenter` joins a Qwen2-VL (LoRA on the language model, the vision tower left
alone) to :class:`~segtext.model.xsam.SegHead` the way X-SAM does (``MODEL_NOTES.md`` 1.4):

* the tokens ``<SEG>``, ``<p>`` and ``</p>`` are added with
  :func:`segtext.tokens.add_format_tokens` and their rows trained;
* training reads the ``xsam`` records ``segtext build --style xsam`` writes (one human and one
  gpt turn, the phrase as ``<p>...</p>``, the answer with exactly one ``<SEG>``, the target masks
  as COCO RLEs in ``segmentation``; a no-target answer without ``<SEG>``, whose ``segmentation`` is
  ``[]``, trains the language model alone). The loss is the LM loss on the answer (the prompt masked out;
  the answer and ``<|im_end|>`` carry it) plus :class:`~segtext.model.xsam.SetCriterion`'s mask
  loss. The head is conditioned on the last-layer hidden state at ``<SEG>`` (teacher forced) and
  classifies against one prototype per ``<p> ... </p>`` span of the prompt, markers included
  (:func:`~segtext.model.xsam.span_ids`); the head's backbone sees the raw image, resized to
  ``head_size`` a side;
* ``segment`` generates greedily, takes the hidden state of the generated ``<SEG>`` (a token
  generated at step ``k`` is consumed at step ``k + 1``: ``hidden_states[k + 1][-1][:, -1]``),
  or, when the model writes no ``<SEG>``, appends one and runs one forward pass (the result says
  so: ``forced``); the phrase prototypes come from the prompt's hidden states; X-SAM's referring
  post-processing (:func:`~segtext.model.xsam.referring_inference`) gives the mask at the
  image's size. :meth:`XSamResult.to_text` writes it as R-RLE or B-SD text, so the head can
  label data for the text path;
* ``segment(images, classes=[...], task="semantic")`` or ``task="panoptic"`` asks X-SAM's
  generic-segmentation question instead: every class as ``<p>class</p>`` in one prompt (joined
  as the records :meth:`~XSamSegmenter.fit` saw join them), one ``<SEG>``, one prototype per
  class; X-SAM's semantic post-processing (:func:`~segtext.model.xsam.semantic_inference`:
  ``argmax_c sum_q softmax(class)[q, c] * sigmoid(mask_q)``) gives an :class:`XSamSemanticResult`
  (a label map, :data:`UNLABELLED` where no class is confident), Mask2Former's panoptic merge
  (:func:`~segtext.model.xsam.panoptic_inference`) an :class:`XSamPanopticResult` (a segment id
  map and one info dict per segment). Both write themselves as text with the core's encoders.
  Training data for it: records whose question lists the classes as ``<p>...</p>`` and whose
  ``segmentation`` holds one mask per class, in the same order, or, with ``segment_classes``
  (the index of each mask's class among the listed ones), any number of masks per class: the
  instances and panoptic records ``segtext build --style xsam`` writes. A listed class that no
  mask names is a negative (X-SAM lists sampled negative classes that way): no query is matched
  to it, so the head learns not to predict it.

The head's backbone is :class:`~segtext.model.xsam.TinyConvBackbone` by default (on the raw
image resized to ``head_size``), or, with ``backbone="vision_tower"``, the VLM's own vision
tower through :class:`~segtext.model.xsam.VisionTowerBackbone` (frozen, shared with the VLM and
saved with it; only its connectors are new), or any module passed in.

The prompt layout is the text path's (:mod:`segtext.model.segmenter`)::

    <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>QUESTION<|im_end|>\\n<|im_start|>assistant\\n

Example:
    >>> from segtext.model import XSamSegmenter
    >>> seg = XSamSegmenter.tiny()
    >>> sorted(seg.token_ids)
    ['</p>', '<SEG>', '<p>']
    >>> seg.fit("records.jsonl", steps=200)                          # doctest: +SKIP
    >>> seg.segment(["img.png"], ["the dog"])[0].to_text("rrle")     # doctest: +SKIP
    'others *16\\n ...'
    >>> seg.segment(["img.png"], classes=["dog", "cat"], task="semantic")[0].to_text("isd")  # doctest: +SKIP
    'others| dog| dog| ...'
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segtext.model import _qwen

__all__ = ["TASKS", "UNLABELLED", "XSamPanopticResult", "XSamResult", "XSamSegmenter", "XSamSemanticResult"]

DEFAULT_QUESTION = "Please segment {phrase} in this image."
#: the question of the semantic and panoptic tasks until :meth:`XSamSegmenter.fit` learns one;
#: ``{classes}`` stands for every class as ``<p>class</p>``, joined by :data:`CLASS_SEPARATOR`
DEFAULT_CLASS_QUESTION = "Please segment this image into these categories: {classes}."
CLASS_SEPARATOR = ", "
#: what :meth:`XSamSegmenter.segment` can do
TASKS = ("referring", "semantic", "panoptic")
#: the value of :attr:`XSamSemanticResult.labels` where no class is confident enough
UNLABELLED = -1
_SPAN = re.compile(r"<p>.*?</p>", re.S)
SEG, P_OPEN, P_CLOSE = "<SEG>", "<p>", "</p>"
_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_FORMAT_VERSION = 1
_SETTINGS = "segtext_xsam.json"


@dataclass
class XSamResult:
    """One answer of :meth:`XSamSegmenter.segment`.

    Attributes:
        text: the generated text (special tokens such as ``<|im_end|>`` dropped, ``<SEG>`` kept).
        mask: ``(H, W)`` bool at the image's size.
        phrase: the phrase asked for (the label :meth:`to_text` writes).
        forced: ``True`` when the model wrote no ``<SEG>`` and one was appended to get its
            hidden state (the mask is then less trustworthy).
        score: the head's probability that the chosen query is the phrase.

    Example:
        >>> import numpy as np
        >>> from segtext.model.xsam_model import XSamResult
        >>> m = np.zeros((8, 8), bool); m[:4, :4] = True
        >>> r = XSamResult("<SEG>", m, "cat", False, 0.9)
        >>> r.to_text("rrle", grid_size=2)
        'cat *1| others *1\\n others *2\\n'
        >>> r.to_text("bsd", resolution=2)
        '<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>'
    """

    text: str
    mask: np.ndarray
    phrase: str
    forced: bool = False
    score: float = 0.0

    def to_text(self, encoding: str = "rrle", *, grid_size: int | tuple[int, int] = 16, resolution: int = 64,
                **options: Any) -> str:
        """The mask as R-RLE (``encoding="rrle"``, a ``grid_size`` grid) or B-SD (``"bsd"``,
        ``resolution`` bricks a side) text, labelled with :attr:`phrase`; ``options`` go to
        :func:`segtext.model.xsam.masks_to_text` (``policy``, ``background``, ``box_format``...).
        An empty mask gives an all-background R-RLE or an empty B-SD text.

        Example:
            >>> import numpy as np
            >>> from segtext.model.xsam_model import XSamResult
            >>> XSamResult("", np.zeros((4, 4), bool), "cat").to_text(grid_size=1)
            'others *1\\n'
        """
        from segtext.model.xsam import masks_to_text

        return masks_to_text(np.asarray(self.mask, bool)[None], [self.phrase], encoding, grid_size=grid_size,
                             resolution=resolution, **options)


@dataclass
class XSamSemanticResult:
    """One answer of :meth:`XSamSegmenter.segment` with ``task="semantic"``.

    Attributes:
        text: the generated text (special tokens dropped, ``<SEG>`` kept).
        labels: ``(H, W)`` ``int64`` at the image's size: ``k`` where ``classes[k]`` wins,
            :data:`UNLABELLED` (-1) where no class reaches the ``score_threshold`` of
            :meth:`~XSamSegmenter.segment` (with ``score_threshold=None`` every pixel gets a
            class, as in X-SAM).
        classes: the class names asked for, in prompt order.
        forced: ``True`` when the model wrote no ``<SEG>`` and one was appended.

    Example:
        >>> import numpy as np
        >>> from segtext.model.xsam_model import XSamSemanticResult
        >>> labels = np.full((4, 4), -1); labels[:2, :2] = 0; labels[2:, 2:] = 1
        >>> r = XSamSemanticResult("<SEG>", labels, ["cat", "dog"])
        >>> r.mask("dog").sum()
        np.int64(4)
        >>> r.to_text("isd", grid_size=2)
        'cat| others\\n others| dog\\n'
        >>> r.to_text("bsd", resolution=2).split("<ref>")[1:]
        ['cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>', 'dog</ref><box>[500,500,1000,1000]</box><seg><fg_4></seg>']
    """

    text: str
    labels: np.ndarray
    classes: list[str]
    forced: bool = False

    def mask(self, name: str) -> np.ndarray:
        """The ``(H, W)`` bool mask of one class (by name).

        Example:
            >>> import numpy as np
            >>> from segtext.model.xsam_model import XSamSemanticResult
            >>> XSamSemanticResult("", np.zeros((2, 2), np.int64), ["cat"]).mask("cat").all()
            np.True_
        """
        if name not in self.classes:
            raise ValueError(f"{name!r} is not one of the classes {self.classes}")
        return np.asarray(self.labels) == self.classes.index(name)

    def to_text(self, encoding: str = "rrle", *, grid_size: int | tuple[int, int] = 16, resolution: int = 64,
                **options: Any) -> str:
        """The label map as R-RLE, I-SD or I-RLE (``"rrle"``, ``"isd"``, ``"irle"``: a
        ``grid_size`` grid, :data:`UNLABELLED` pixels as the ``background`` label, default
        ``"others"``) or B-SD (``"bsd"``: one block per class present, ``resolution`` bricks a
        side), with the class names as labels; ``options`` go to
        :func:`segtext.model.xsam.masks_to_text`.

        Example:
            >>> import numpy as np
            >>> from segtext.model.xsam_model import XSamSemanticResult
            >>> XSamSemanticResult("", np.full((4, 4), -1), ["cat"]).to_text("irle", grid_size=2)
            'others *4\\n'
        """
        from segtext.model.xsam import masks_to_text

        return masks_to_text(np.asarray(self.labels, np.int64), list(self.classes), encoding, grid_size=grid_size,
                             resolution=resolution, **options)


@dataclass
class XSamPanopticResult:
    """One answer of :meth:`XSamSegmenter.segment` with ``task="panoptic"``.

    Attributes:
        text: the generated text (special tokens dropped, ``<SEG>`` kept).
        segments: ``(H, W)`` ``int32`` at the image's size: 0 where no segment is, else the
            ``id`` of a segment of :attr:`segments_info` (each pixel in at most one segment).
        segments_info: one dict per segment: ``id`` (1, 2, ...), ``label`` (the index of its
            class in :attr:`classes`), ``class`` (its name), ``score`` (the query's class
            probability) and ``area`` (its pixels in :attr:`segments`).
        classes: the class names asked for, in prompt order.
        forced: ``True`` when the model wrote no ``<SEG>`` and one was appended.

    Example:
        >>> import numpy as np
        >>> from segtext.model.xsam_model import XSamPanopticResult
        >>> seg = np.zeros((4, 4), np.int32); seg[:2, :2] = 1; seg[2:, 2:] = 2
        >>> info = [{"id": 1, "label": 0, "class": "cat", "score": 0.9, "area": 4},
        ...         {"id": 2, "label": 0, "class": "cat", "score": 0.8, "area": 4}]
        >>> r = XSamPanopticResult("<SEG>", seg, info, ["cat"])
        >>> r.to_text("bsd", resolution=2).count("<ref>cat</ref>")       # one block per segment
        2
        >>> r.to_text("rrle", grid_size=2)                                # instances merged
        'cat *1| others *1\\n others *1| cat *1\\n'
    """

    text: str
    segments: np.ndarray
    segments_info: list[dict]
    classes: list[str]
    forced: bool = False

    def masks(self) -> np.ndarray:
        """``(N, H, W)`` bool, one mask per entry of :attr:`segments_info`, in order.

        Example:
            >>> import numpy as np
            >>> from segtext.model.xsam_model import XSamPanopticResult
            >>> XSamPanopticResult("", np.ones((2, 3), np.int32), [{"id": 1, "class": "sky"}], ["sky"]).masks().shape
            (1, 2, 3)
        """
        seg = np.asarray(self.segments)
        ids = np.array([int(s["id"]) for s in self.segments_info], np.int64).reshape(-1, 1, 1)
        return seg[None] == ids

    def to_text(self, encoding: str = "bsd", *, grid_size: int | tuple[int, int] = 16, resolution: int = 64,
                **options: Any) -> str:
        """The segments as B-SD (``"bsd"``, the default: one block per segment, so instances
        stay apart) or as R-RLE, I-SD, I-RLE (a ``grid_size`` grid, the segments of a class
        merged), labelled with their class names; ``options`` go to
        :func:`segtext.model.xsam.masks_to_text`. No segment gives an empty B-SD text or an
        all-background grid.

        Example:
            >>> import numpy as np
            >>> from segtext.model.xsam_model import XSamPanopticResult
            >>> XSamPanopticResult("", np.zeros((2, 2), np.int32), [], ["cat"]).to_text("rrle", grid_size=1)
            'others *1\\n'
        """
        from segtext.model.xsam import masks_to_text

        return masks_to_text(self.masks(), [str(s["class"]) for s in self.segments_info], encoding,
                             grid_size=grid_size, resolution=resolution, **options)


_torch = _qwen.require_torch
_lora_arg = _qwen.lora_arg


def _class_template(question: str) -> tuple[str, str] | None:
    """``(template, separator)`` of a question that lists classes as ``<p>...</p>``: the list
    put back as ``{classes}``; ``None`` when the phrases are not joined by one separator.

    Example:
        >>> from segtext.model.xsam_model import _class_template
        >>> _class_template("<image>\\nSegment <p>cat</p>, <p>dog</p>.")
        ('Segment {classes}.', ', ')
        >>> _class_template("<p>a</p> and <p>b</p>, <p>c</p>") is None
        True
    """
    q = question.replace("<image>", "").lstrip("\n")
    spans = list(_SPAN.finditer(q))
    if not spans:
        return None
    seps = {q[a.end():b.start()] for a, b in zip(spans, spans[1:])}
    if len(seps) > 1:
        return None
    sep = seps.pop() if seps else CLASS_SEPARATOR
    return q[:spans[0].start()] + "{classes}" + q[spans[-1].end():], sep


def _decode_segmentation(seg: Any, size: tuple[int, int], where: str, k: int) -> np.ndarray:
    """One COCO segmentation (RLE with str / bytes / list counts, or polygons) -> ``(H, W)`` bool."""
    import pycocotools.mask as pm

    h, w = size
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise ValueError(f"{where}: segmentation {k} must be a COCO RLE with 'size' and 'counts'")
        rh, rw = (int(v) for v in seg["size"])
        if (rh, rw) != (h, w):
            raise ValueError(f"{where}: segmentation {k} has size [{rh}, {rw}] but the image is [{h}, {w}]")
        counts = seg["counts"]
        try:
            if isinstance(counts, list):
                rle = pm.frPyObjects({"size": [rh, rw], "counts": counts}, rh, rw)
            else:
                rle = {"size": [rh, rw], "counts": counts.encode() if isinstance(counts, str) else counts}
            mask = pm.decode(rle)
        except Exception as e:  # pycocotools raises several types on bad counts
            raise ValueError(f"{where}: segmentation {k} is not a valid RLE: {e}") from None
    elif isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        try:
            mask = pm.decode(pm.merge(pm.frPyObjects(seg, h, w)))
        except Exception as e:
            raise ValueError(f"{where}: segmentation {k} is not a valid polygon list: {e}") from None
    else:
        raise ValueError(f"{where}: segmentation {k} must be a COCO RLE dict or a list of polygons, "
                         f"got {type(seg).__name__}")
    return np.asarray(mask, bool).reshape(h, w)


class XSamSegmenter:
    """A Qwen2-VL with LoRA that answers with ``<SEG>``, and an X-SAM head; see the module docstring.

    Build one with :meth:`tiny` (random, for tests) or :meth:`from_pretrained` (a directory
    written by :meth:`save_pretrained`, or a Qwen2-VL checkpoint directory with a new head).

    Args:
        model: a ``Qwen2VLForConditionalGeneration`` (or Qwen2.5-VL), not yet wrapped by peft.
        tokenizer: its fast tokenizer; ``<SEG>``, ``<p>``, ``</p>`` are added to it.
        image_processor: its image processor.
        head: a :class:`~segtext.model.xsam.SegHead` whose ``llm_dim`` is the model's width.
        lora: LoraConfig arguments (default ``{"r": 8}``) for the language model only.
        train_embeddings: ``"new"`` (the three new tokens' embedding and output rows,
            ``trainable_token_indices``) or ``"all"`` (the whole ``embed_tokens`` and
            ``lm_head``, ``modules_to_save``, as X-SAM does).
        head_size: side of the square the image is resized to for the head's backbone.

    Attributes:
        token_ids: ``{"<SEG>": id, "<p>": id, "</p>": id}``.
        question: the question template ``segment`` asks with (``{phrase}`` stands for
            ``<p>phrase</p>``); learnt from the records by :meth:`fit`.
        class_question, class_separator: the same for the semantic and panoptic tasks:
            ``{classes}`` stands for the classes as ``<p>class</p>`` joined by
            ``class_separator``; learnt by :meth:`fit` from records with several phrases.

    Example:
        >>> import torch
        >>> from segtext.model import XSamSegmenter
        >>> seg = XSamSegmenter.tiny()
        >>> seg.head.config.llm_dim, seg.head_size
        (64, 64)
        >>> any("visual" in n for n, p in seg.model.named_parameters() if p.requires_grad)
        False
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, head: Any, *, lora: dict | None = None,
                 train_embeddings: str = "new", head_size: int = 1024, _wrapped: bool = False) -> None:
        torch = _torch()
        from segtext.model.xsam import SegHead, SetCriterion
        from segtext.tokens import add_format_tokens

        if train_embeddings not in ("new", "all"):
            raise ValueError(f"train_embeddings must be 'new' or 'all', got {train_embeddings!r}")
        if not isinstance(head, SegHead):
            raise TypeError(f"head must be a segtext.model.xsam.SegHead, got {type(head).__name__}")
        if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size < 8:
            raise ValueError(f"head_size must be an int >= 8, got {head_size!r}")
        if hasattr(model, "peft_config") and not _wrapped:
            raise TypeError("model must be the plain transformers model: XSamSegmenter adds the LoRA itself")
        base = model
        text_cfg = getattr(base.config, "text_config", base.config)
        if head.config.llm_dim != text_cfg.hidden_size:
            raise ValueError(f"the head's llm_dim ({head.config.llm_dim}) must be the model's hidden size "
                             f"({text_cfg.hidden_size})")
        self.lora = _lora_arg({"r": 8} if lora is None else lora)
        self.train_embeddings = train_embeddings
        self.head_size = head_size
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.head = head
        self.criterion = SetCriterion(head.config)
        self.question = DEFAULT_QUESTION
        self.class_question = DEFAULT_CLASS_QUESTION
        self.class_separator = CLASS_SEPARATOR
        self.max_answer_tokens = 0
        self.image_token_id = int(getattr(base.config, "image_token_id", None)
                                  or tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        self.token_ids = add_format_tokens(tokenizer, ("xsam",), model=None if _wrapped else model)
        if _wrapped:
            self.model = model
        else:
            self.model = self._wrap(model, torch)
        self.model.eval()
        self.head.eval()

    # ------------------------------------------------------------------ construction

    def _wrap(self, model: Any, torch: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        for p in model.parameters():
            p.requires_grad_(False)
        ids = sorted(self.token_ids.values())
        extra: dict = ({"modules_to_save": ["embed_tokens", "lm_head"]} if self.train_embeddings == "all" else
                       {"trainable_token_indices": {"embed_tokens": ids, "lm_head": ids}})
        cfg = LoraConfig(r=self.lora["r"], lora_alpha=self.lora["lora_alpha"], lora_dropout=self.lora["lora_dropout"],
                         target_modules=list(self.lora.get("target_modules", _LORA_TARGETS)),
                         exclude_modules=r".*visual.*", **extra)
        return get_peft_model(model, cfg)

    @staticmethod
    def _backbone(spec: Any, model: Any, image_processor: Any, hcfg: Any, settings: dict | None = None) -> Any:
        """The head's backbone: ``None`` / ``"tiny"`` (SegHead's default), ``"vision_tower"``
        (the model's own, shared) or a module."""
        from torch import nn

        from segtext.model.xsam import VisionTowerBackbone

        if spec is None or (isinstance(spec, str) and spec == "tiny"):
            return None
        if isinstance(spec, nn.Module):
            return spec
        if isinstance(spec, str) and spec == "vision_tower":
            inner = getattr(model, "model", None)
            visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
            if visual is None:
                raise ValueError(f"backbone='vision_tower' needs a model with a vision tower (model.model.visual); "
                                 f"{type(model).__name__} has none")
            opts = {"out_channels": hcfg.backbone_channels,
                    "image_mean": getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5),
                    "image_std": getattr(image_processor, "image_std", None) or (0.5, 0.5, 0.5)}
            opts.update(settings or {})
            return VisionTowerBackbone(visual, shared=True, **opts)
        raise ValueError(f"backbone must be 'tiny', 'vision_tower' or an nn.Module, got {spec!r}")

    @classmethod
    def tiny(cls, seed: int = 0, head_config: Any = None, lora: dict | None = None,
             train_embeddings: str = "all", head_size: int | None = None, backbone: Any = "tiny") -> XSamSegmenter:
        """A random 2-layer Qwen2-VL (hidden 64, the tiny byte-level tokenizer of the text path)
        and a tiny head (:meth:`SegHeadConfig.tiny <segtext.model.xsam.SegHeadConfig.tiny>`);
        no download. ``head_config`` overrides the head's sizes (its ``llm_dim`` must be 64).

        ``backbone``: ``"tiny"`` (a :class:`~segtext.model.xsam.TinyConvBackbone` on the raw
        image resized to ``head_size``, default 64), ``"vision_tower"`` (the VLM's own vision
        tower through :class:`~segtext.model.xsam.VisionTowerBackbone`, frozen, with new
        connectors of ``head_config.backbone_channels``; ``head_size`` default 112, 8 x 8 patches
        of 14 pixels) or an ``nn.Module`` (:class:`~segtext.model.xsam.Backbone`).

        Example:
            >>> from segtext.model import XSamSegmenter
            >>> from segtext.model.xsam import SegHeadConfig
            >>> XSamSegmenter.tiny(head_config=SegHeadConfig.tiny(num_queries=4)).head.config.num_queries
            4
            >>> seg = XSamSegmenter.tiny(backbone="vision_tower")
            >>> type(seg.head.backbone).__name__, seg.head_size
            ('VisionTowerBackbone', 112)
            >>> seg.head.backbone.tower is seg.model.get_base_model().model.visual
            True
        """
        torch = _torch()
        from transformers import Qwen2VLForConditionalGeneration

        from segtext.model.xsam import SegHead, SegHeadConfig

        tok = _qwen.tiny_tokenizer()
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(_qwen.tiny_config(tok))
        hcfg = SegHeadConfig.tiny(llm_dim=64) if head_config is None else head_config
        if not isinstance(hcfg, SegHeadConfig):
            raise TypeError(f"head_config must be a SegHeadConfig, got {type(hcfg).__name__}")
        ip = _qwen.tiny_image_processor()
        bb = cls._backbone(backbone, model, ip, hcfg)
        if head_size is None:
            head_size = 112 if isinstance(backbone, str) and backbone == "vision_tower" else 64
        head = SegHead(hcfg, bb)
        return cls(model, tok, ip, head, lora=lora, train_embeddings=train_embeddings, head_size=head_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, head_config: Any = None, backbone: Any = None,
                        lora: dict | None = None, train_embeddings: str = "new",
                        head_size: int = 1024) -> XSamSegmenter:
        """An XSamSegmenter from a directory written by :meth:`save_pretrained`, or from a
        Qwen2-VL / Qwen2.5-VL checkpoint directory (model, tokenizer and image processor read
        from it) with a new random head (``head_config``, default
        :meth:`SegHeadConfig.tiny <segtext.model.xsam.SegHeadConfig.tiny>` at the model's width).

        ``backbone``: ``"tiny"`` (default, :class:`~segtext.model.xsam.TinyConvBackbone`),
        ``"vision_tower"`` (the checkpoint's own vision tower through
        :class:`~segtext.model.xsam.VisionTowerBackbone`, as in :meth:`tiny`) or a module that
        replaces the tiny backbone. A saved model with the tiny or the vision-tower backbone is
        rebuilt as saved; one with another module needs the same kind of module passed again (its
        weights are read from the file). The other arguments apply to a checkpoint only.

        Example:
            >>> import tempfile
            >>> from segtext.model import XSamSegmenter
            >>> d = tempfile.mkdtemp()
            >>> XSamSegmenter.tiny().save_pretrained(d)
            >>> XSamSegmenter.from_pretrained(d).head_size
            64
        """
        torch = _torch()
        from torch import nn
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        from segtext.model.xsam import SegHead, SegHeadConfig

        if not (backbone is None or isinstance(backbone, nn.Module)
                or (isinstance(backbone, str) and backbone in ("tiny", "vision_tower"))):
            raise ValueError(f"backbone must be 'tiny', 'vision_tower' or an nn.Module, got {backbone!r}")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory, got {type(path).__name__}")
        d = os.fspath(path)
        if not os.path.isdir(d):
            raise ValueError(f"{d!r} is not a directory (a checkpoint or a saved XSamSegmenter)")
        if os.path.exists(os.path.join(d, _SETTINGS)):
            return cls._load_saved(d, torch, backbone)
        model = AutoModelForImageTextToText.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        ip = AutoImageProcessor.from_pretrained(d)
        width = getattr(model.config, "text_config", model.config).hidden_size
        hcfg = SegHeadConfig.tiny(llm_dim=width) if head_config is None else head_config
        if not isinstance(hcfg, SegHeadConfig):
            raise TypeError(f"head_config must be a SegHeadConfig, got {type(hcfg).__name__}")
        head = SegHead(hcfg, cls._backbone(backbone, model, ip, hcfg))
        return cls(model, tok, ip, head, lora=lora, train_embeddings=train_embeddings, head_size=head_size)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the base config, the tokenizer, the image processor, all weights (the VLM with
        its LoRA and token rows under ``vlm.``, the head with its backbone under ``head.``) to
        ``model.safetensors``, and the settings to ``segtext_xsam.json``.

        Example:
            >>> import os, tempfile
            >>> from segtext.model import XSamSegmenter
            >>> d = tempfile.mkdtemp()
            >>> XSamSegmenter.tiny().save_pretrained(d)
            >>> sorted(os.listdir(d))
            ['config.json', 'image_processor', 'model.safetensors', 'segtext_xsam.json', 'tokenizer']
        """
        from safetensors.torch import save_file

        from segtext.model.xsam import TinyConvBackbone, VisionTowerBackbone

        d = os.fspath(directory)
        os.makedirs(d, exist_ok=True)
        base = self.model.get_base_model()
        base.config.to_json_file(os.path.join(d, "config.json"))
        self.tokenizer.save_pretrained(os.path.join(d, "tokenizer"))
        self.image_processor.save_pretrained(os.path.join(d, "image_processor"))
        state = {f"vlm.{k}": v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}
        state.update({f"head.{k}": v.detach().clone().contiguous() for k, v in self.head.state_dict().items()})
        save_file(state, os.path.join(d, "model.safetensors"))
        bb = self.head.backbone
        own_tower = isinstance(bb, VisionTowerBackbone) and bb.shared and any(m is bb.tower for m in base.modules())
        kind = "tiny" if type(bb) is TinyConvBackbone else "vision_tower" if own_tower else type(bb).__name__
        settings = {"format_version": _FORMAT_VERSION, "lora": self.lora, "train_embeddings": self.train_embeddings,
                    "head_size": self.head_size, "head_config": self.head.config.to_dict(),
                    "backbone": kind, "token_ids": self.token_ids, "question": self.question,
                    "class_question": self.class_question, "class_separator": self.class_separator,
                    "max_answer_tokens": self.max_answer_tokens, "model_class": type(base).__name__}
        if own_tower:
            settings["backbone_settings"] = bb.settings()
        with open(os.path.join(d, _SETTINGS), "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=1)

    @classmethod
    def _load_saved(cls, d: str, torch: Any, backbone: Any) -> XSamSegmenter:
        import transformers
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        from segtext.model.xsam import SegHead, SegHeadConfig

        with open(os.path.join(d, _SETTINGS), encoding="utf-8") as f:
            s = json.load(f)
        if s.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{d}: {_SETTINGS} format_version {s.get('format_version')!r}, expected {_FORMAT_VERSION}")
        if s["backbone"] not in ("tiny", "vision_tower") and not hasattr(backbone, "forward"):
            raise ValueError(f"{d}: saved with a {s['backbone']} backbone: pass backbone= (the same kind of module)")
        config = AutoConfig.from_pretrained(d)
        model = getattr(transformers, s["model_class"])(config)
        tok = AutoTokenizer.from_pretrained(os.path.join(d, "tokenizer"))
        ip = AutoImageProcessor.from_pretrained(os.path.join(d, "image_processor"))
        hcfg = SegHeadConfig(**s["head_config"])
        if s["backbone"] in ("tiny", "vision_tower") and not hasattr(backbone, "forward"):
            backbone = cls._backbone(s["backbone"], model, ip, hcfg, s.get("backbone_settings"))
        head = SegHead(hcfg, backbone)
        seg = cls(model, tok, ip, head, lora=s["lora"], train_embeddings=s["train_embeddings"],
                  head_size=s["head_size"], _wrapped=True)
        if seg.token_ids != s["token_ids"]:
            raise ValueError(f"{d}: the tokenizer's ids of {sorted(s['token_ids'])} changed: {seg.token_ids}")
        seg.model = seg._wrap(model, torch)
        state = load_file(os.path.join(d, "model.safetensors"))
        seg.model.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vlm.")}, strict=True)
        seg.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")}, strict=True)
        seg.question = s.get("question") or DEFAULT_QUESTION
        seg.class_question = s.get("class_question") or DEFAULT_CLASS_QUESTION
        seg.class_separator = s.get("class_separator", CLASS_SEPARATOR)
        seg.max_answer_tokens = int(s.get("max_answer_tokens", 0))
        seg.model.eval()
        seg.head.eval()
        return seg

    # ------------------------------------------------------------------ inputs

    @property
    def device(self) -> Any:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    def _prompt(self, question: str) -> str:
        q = question.replace("<image>", _qwen.IMAGE) if "<image>" in question else _qwen.IMAGE + question
        return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"

    def _head_pixels(self, image: Any) -> Any:
        """An RGB PIL image -> ``[3, S, S]`` float in [-1, 1], ``S = head_size``."""
        torch = _torch()
        from PIL import Image

        s = self.head_size
        arr = np.asarray(image.resize((s, s), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def _target_masks(self, masks: list[np.ndarray]) -> Any:
        """``(H, W)`` bool masks -> ``[T, S, S]`` float 0/1 at the head's input size (area + 0.5)."""
        torch = _torch()
        import torch.nn.functional as F

        s = self.head_size
        if not masks:
            return torch.zeros(0, s, s)
        t = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        return (F.interpolate(t, size=(s, s), mode="area")[:, 0] >= 0.5).float()

    def _phrase_ids(self, ids: list[int], n_prompt: int) -> list[int]:
        """Span labels of the prompt's ``<p> ... </p>`` (the answer's when the prompt has none)."""
        torch = _torch()
        from segtext.model.xsam import span_ids

        o, c = self.token_ids[P_OPEN], self.token_ids[P_CLOSE]
        t = torch.tensor([ids])
        prompt = t.clone()
        prompt[:, n_prompt:] = -5  # not a marker
        out = span_ids(prompt, o, c)
        if int(out.max()) < 0:
            out = span_ids(t, o, c)
        return out[0].tolist()

    def _records(self, records: Any, image_root: str | None) -> list[dict]:
        """Validated training items of ``xsam`` records (a JSON Lines path or dicts)."""
        records, base = _qwen.load_records(records, image_root)
        if not records:
            raise ValueError("records is empty")
        seg_id = self.token_ids[SEG]
        items = []
        for i, rec in enumerate(records):
            where = f"record {rec.get('id', i)!r}" if isinstance(rec, dict) else f"record {i}"
            if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
                raise ValueError(f"{where}: expected an 'xsam' record (with 'image' and 'conversations') "
                                 "as segtext build --style xsam writes it")
            img = rec.get("image")
            if img is None or (isinstance(img, str) and not img):
                raise ValueError(f"{where}: the record has no image")
            conv = rec["conversations"]
            human = [t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "human"]
            gpt = [t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "gpt"]
            if len(human) != 1 or len(gpt) != 1 or len(conv) != 2 or not all(isinstance(v, str) for v in human + gpt):
                raise ValueError(f"{where}: expected one human and one gpt turn with text values")
            question, answer = human[0], gpt[0]
            n_seg = answer.count(SEG)
            # a no-target answer ("I cannot find <p>x</p> ...") trains the language model only
            lm_only = n_seg == 0 and "segmentation" in rec and not rec["segmentation"] and SEG not in question
            if n_seg == 0 and not lm_only:
                raise ValueError(f"{where}: the answer has no <SEG> (only a record whose segmentation is [] or "
                                 "null may answer without one)")
            if not lm_only and (n_seg != 1 or SEG in question):
                found = n_seg + question.count(SEG)
                raise ValueError(f"{where}: exactly one <SEG> per sample is supported, found {found}")
            if isinstance(img, str) and base is not None and not os.path.isabs(img):
                img = os.path.join(base, img)
            image = _qwen.load_image(img, where)
            try:
                item = _qwen.encode_pair(self.tokenizer, self.image_processor, image, self._prompt(question), answer,
                                         self.image_token_id)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            ids = item["input_ids"]
            n_prompt = next(k for k, lab in enumerate(item["labels"]) if lab != -100)
            if ids.count(seg_id) != (0 if lm_only else 1):
                raise ValueError(f"{where}: the text does not encode <SEG> as one token exactly once")
            try:
                phrase_ids = self._phrase_ids(ids, n_prompt)
            except ValueError as e:
                raise ValueError(f"{where}: unbalanced or nested <p> ... </p> spans") from e
            n_phrases = max(phrase_ids) + 1
            segs = rec.get("segmentation")
            segs = [] if segs is None else segs
            if isinstance(segs, dict):
                segs = [segs]
            if not isinstance(segs, list):
                raise ValueError(f"{where}: segmentation must be a list of COCO RLEs or null, "
                                 f"got {type(segs).__name__}")
            size = (image.height, image.width)
            masks = [_decode_segmentation(s, size, where, k) for k, s in enumerate(segs)]
            if masks and n_phrases == 0:
                raise ValueError(f"{where}: the question has no <p>...</p> phrase for the target masks")
            classes = rec.get("segment_classes")
            if classes is not None:  # several masks of one class (instances, panoptic): each mask's phrase
                if (not isinstance(classes, list) or len(classes) != len(masks)
                        or not all(type(c) is int and 0 <= c < n_phrases for c in classes)):
                    raise ValueError(f"{where}: segment_classes must be a list of {len(masks)} phrase indexes "
                                     f"(ints in 0..{n_phrases - 1}), one per mask, got {classes!r}")
                labels = list(classes)
            elif len(masks) == n_phrases:
                labels = list(range(len(masks)))
            elif n_phrases == 1:
                labels = [0] * len(masks)
            else:
                raise ValueError(f"{where}: {len(masks)} masks for {n_phrases} <p>...</p> phrases (expected one "
                                 "phrase, or one mask per phrase)")
            if len(masks) > self.head.config.num_queries:
                raise ValueError(f"{where}: {len(masks)} masks, more than the head's "
                                 f"{self.head.config.num_queries} queries")
            label = rec.get("label") if isinstance(rec.get("label"), str) else None
            items.append({"where": where, "enc": item, "seg_pos": -1 if lm_only else ids.index(seg_id),
                          "phrase_ids": phrase_ids,
                          "pixels": self._head_pixels(image), "masks": self._target_masks(masks),
                          "labels": labels, "question": question, "label": label,
                          "n_phrases": n_phrases, "task": rec.get("task")})
        return items

    def _batch(self, items: list[dict]) -> tuple[dict, Any, Any, Any, list[dict]]:
        torch = _torch()
        batch = _qwen.collate([it["enc"] for it in items], self.tokenizer.pad_token_id, left=False)
        n = batch["input_ids"].shape[1]
        phrase_ids = torch.tensor([it["phrase_ids"] + [-1] * (n - len(it["phrase_ids"])) for it in items])
        seg_pos = torch.tensor([it["seg_pos"] for it in items])
        pixels = torch.stack([it["pixels"] for it in items])
        targets = [{"labels": torch.tensor(it["labels"], dtype=torch.long), "masks": it["masks"]} for it in items]
        dev = self.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        return batch, phrase_ids.to(dev), seg_pos.to(dev), pixels.to(dev), targets

    def _head_device(self) -> None:
        self.head.to(self.device)

    # ------------------------------------------------------------------ training

    def losses(self, records: Any, image_root: str | None = None) -> dict[str, Any]:
        """The joint loss of one batch of ``xsam`` records (all of them), with gradients.

        Returns ``{"loss": lm + mask, "lm": ..., "mask": ..., **SetCriterion's terms}``.
        :meth:`fit` minimises ``loss``; this is the same computation, for tests and custom loops.

        Example:
            >>> import numpy as np
            >>> from segtext.model import XSamSegmenter
            >>> seg = XSamSegmenter.tiny()
            >>> rec = {"id": "a", "image": np.zeros((64, 64, 3), np.uint8), "segmentation": None,
            ...        "conversations": [{"from": "human", "value": "<image>\\nSegment <p>a cat</p>."},
            ...                          {"from": "gpt", "value": "<SEG>"}]}
            >>> out = seg.losses([rec])
            >>> bool(out["loss"].isfinite()), sorted(out)[:3]
            (True, ['lm', 'loss', 'loss_ce'])
        """
        return self._step_losses(self._records(records, image_root))

    def _step_losses(self, items: list[dict]) -> dict[str, Any]:
        torch = _torch()
        self._head_device()
        batch, phrase_ids, seg_pos, pixels, targets = self._batch(items)
        out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        rows = torch.nonzero(seg_pos >= 0).flatten()  # the samples with a <SEG> (others: LM loss only)
        if len(rows) == 0:
            zero = out.loss * 0.0
            return {"loss": out.loss, "lm": out.loss, "mask": zero}
        seg_hidden = hidden[rows, seg_pos[rows]]
        preds = self.head(pixels[rows], seg_hidden, hidden[rows], phrase_ids[rows])
        parts = self.criterion(preds, [targets[i] for i in rows.tolist()])
        mask_loss = parts.pop("loss")
        return {"loss": out.loss + mask_loss, "lm": out.loss, "mask": mask_loss, **parts}

    def fit(self, records: Any, steps: int = 200, lr: float = 5e-3, batch_size: int = 4, seed: int = 0,
            head_lr: float | None = None, image_root: str | None = None, clip: float | None = 1.0,
            progress: bool | Callable[[int, float], None] = False) -> list[float]:
        """Train on ``xsam`` records (a JSON Lines path or dicts); returns the joint loss of each step.

        Each step takes ``batch_size`` records in a seeded shuffled order (cycling) and updates
        the LoRA weights, the new tokens' rows (or the whole embeddings, ``train_embeddings``)
        and the head (at ``head_lr``, default ``lr``) with AdamW; gradients are clipped to
        ``clip`` (``None``: not clipped). The question template :meth:`segment` uses is learnt
        from the records (their ``<p>label</p>`` put back as ``{phrase}``); so is the one of the
        semantic and panoptic tasks, from the records with several phrases (their ``<p>...</p>``
        list put back as ``{classes}``, when the phrases are joined by one separator).

        Raises:
            ValueError: a malformed record, named in the message: no image, an unreadable image
                or one of a non-8-bit mode, not one human and one gpt turn, an answer without
                ``<SEG>`` (allowed only when the record's ``segmentation`` is ``[]`` or ``null``: such
                a no-target answer trains the language model alone) or with more than one, masks
                that do not match the image or the phrases.

        Example:
            >>> from segtext.model import XSamSegmenter
            >>> seg = XSamSegmenter.tiny()
            >>> seg.fit([{"id": "a", "image": "a.png", "conversations": [
            ...     {"from": "human", "value": "<image>\\n<p>x</p>"}, {"from": "gpt", "value": "no"}]}], steps=1)
            Traceback (most recent call last):
            ...
            ValueError: record 'a': the answer has no <SEG> (only a record whose segmentation is [] or null may answer without one)
        """
        torch = _torch()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        items = self._records(records, image_root)
        asked: dict[str, int] = {}
        for it in items:
            lab = it["label"]
            if lab and f"{P_OPEN}{lab}{P_CLOSE}" in it["question"]:
                q = it["question"].replace("<image>", "").lstrip("\n").replace(f"{P_OPEN}{lab}{P_CLOSE}", "{phrase}")
                asked[q] = asked.get(q, 0) + 1
        if asked:
            self.question = max(asked, key=asked.__getitem__)
        listed: dict[tuple[str, str], int] = {}
        for it in items:
            if it["n_phrases"] >= 2 or (it["n_phrases"] == 1 and it["task"] in ("semantic", "panoptic", "instances")):
                found = _class_template(it["question"])
                if found is not None:
                    listed[found] = listed.get(found, 0) + 1
        if listed:
            self.class_question, self.class_separator = max(listed, key=listed.__getitem__)
        self.max_answer_tokens = max(self.max_answer_tokens,
                                     max(sum(1 for x in it["enc"]["labels"] if x != -100) for it in items))
        self._head_device()
        vlm_params = [p for p in self.model.parameters() if p.requires_grad]
        head_params = [p for p in self.head.parameters() if p.requires_grad]
        groups = [g for g in ({"params": vlm_params, "lr": lr},
                              {"params": head_params, "lr": lr if head_lr is None else head_lr}) if g["params"]]
        if not groups:
            raise ValueError("nothing to train: no parameter requires a gradient")
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
        rng = random.Random(seed)
        order: list[int] = []
        history = []
        self.model.train()
        self.head.train()
        try:
            for step in range(steps):
                picked = []
                while len(picked) < min(batch_size, len(items)):
                    if not order:
                        order = list(range(len(items)))
                        rng.shuffle(order)
                    picked.append(order.pop())
                loss = self._step_losses([items[i] for i in picked])["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss is {float(loss)} at step {step}")
                opt.zero_grad()
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(vlm_params + head_params, clip)
                opt.step()
                history.append(loss.item())
                if callable(progress):
                    progress(step, history[-1])
                elif progress:
                    print(f"step {step + 1}/{steps} loss {history[-1]:.4f}", flush=True)
        finally:
            self.model.eval()
            self.head.eval()
        return history

    # ------------------------------------------------------------------ inference

    def segment(self, images: Sequence[Any], prompts: Sequence[str] | None = None, *, task: str = "referring",
                classes: Sequence[str] | Sequence[Sequence[str]] | None = None, question: str | None = None,
                max_new_tokens: int | None = None, batch_size: int = 8, threshold: float = 0.5,
                score_threshold: float | None = 0.5, object_threshold: float = 0.8, overlap_threshold: float = 0.8,
                stuff_classes: Sequence[str] = ()) -> list[Any]:
        """Segment images: one result per image, for a referring phrase or a list of classes.

        ``task="referring"`` (the default): ``prompts`` holds one phrase per image, asked as
        ``<p>phrase</p>``; each result is an :class:`XSamResult` (one mask, X-SAM's referring
        post-processing). ``task="semantic"`` or ``"panoptic"``: ``classes`` holds the class
        names, one list for every image or one list per image, all asked in one prompt (each as
        ``<p>class</p>``, joined by :attr:`class_separator`); each result is an
        :class:`XSamSemanticResult` (a label map, X-SAM's semantic post-processing) or an
        :class:`XSamPanopticResult` (segments and their info, Mask2Former's panoptic merge).

        Args:
            images: paths, PIL images or uint8 arrays.
            prompts: referring only: the phrase to segment in each image.
            task: one of :data:`TASKS`.
            classes: semantic and panoptic only: the class names, plain text (no ``<SEG>``,
                ``<p>``, ``</p>``), distinct within a list.
            question: the question template: with ``{phrase}`` (referring; default the one learnt
                by :meth:`fit`, else ``"Please segment {phrase} in this image."``) or with
                ``{classes}`` (semantic, panoptic; default :attr:`class_question`).
            max_new_tokens: default twice the longest answer seen by :meth:`fit` (at least 16), or 32.
            batch_size: images per ``generate`` call.
            threshold: referring: on the mask probability.
            score_threshold: semantic: pixels whose best fused score
                ``sum_q softmax(class)[q, c] * sigmoid(mask_q)`` is below it get
                :data:`UNLABELLED`; ``None``: every pixel gets a class (X-SAM).
            object_threshold, overlap_threshold: panoptic: a query is kept if its best class
                (not the background) has a probability above ``object_threshold``, and keeps its
                segment if at least ``overlap_threshold`` of its mask survives the merge.
            stuff_classes: panoptic: classes whose segments are merged into one per image (each
                must be one of the classes).

        Greedy generation; the generated ``<SEG>``'s hidden state conditions the head (``forced``
        when the model wrote none and one was appended).

        Raises:
            ValueError: an unknown task, prompts and images of different lengths, ``classes``
                missing, empty or holding a class that is empty, repeated or holds ``<SEG>``,
                ``<p>`` or ``</p>``, prompts given with ``classes`` (or the reverse), a
                question without its placeholder, thresholds outside ``[0, 1]``.

        Example:
            >>> import numpy as np
            >>> from segtext.model import XSamSegmenter
            >>> seg = XSamSegmenter.tiny()
            >>> image = np.zeros((60, 80, 3), np.uint8)
            >>> r = seg.segment([image], ["the dog"], max_new_tokens=3)[0]
            >>> r.mask.shape, r.mask.dtype, r.phrase
            ((60, 80), dtype('bool'), 'the dog')
            >>> isinstance(r.to_text("rrle", grid_size=2), str), isinstance(r.forced, bool)
            (True, True)
            >>> s = seg.segment([image], classes=["sky", "dog"], task="semantic", max_new_tokens=3)[0]
            >>> s.labels.shape, s.labels.dtype, s.classes, bool(set(np.unique(s.labels)) <= {-1, 0, 1})
            ((60, 80), dtype('int64'), ['sky', 'dog'], True)
            >>> s.to_text("isd", grid_size=2).count("\\n")
            2
            >>> p = seg.segment([image], classes=["sky", "dog"], task="panoptic", max_new_tokens=3,
            ...                 object_threshold=0.0, overlap_threshold=0.0)[0]
            >>> p.segments.shape, sorted(s["id"] for s in p.segments_info) == sorted(set(np.unique(p.segments)) - {0})
            ((60, 80), True)
            >>> seg.segment([image], classes=[], task="semantic")
            Traceback (most recent call last):
            ...
            ValueError: classes is empty: give at least one class name
        """
        torch = _torch()
        if not isinstance(task, str) or task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise ValueError("images must be a sequence of images (paths, PIL images or arrays), got "
                             f"{'a str' if isinstance(images, (str, os.PathLike)) else type(images).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if task == "referring":
            if classes is not None:
                raise ValueError("classes= is for task='semantic' or 'panoptic'; task='referring' takes prompts "
                                 "(one phrase per image)")
            if prompts is None or isinstance(prompts, str) or len(images) != len(prompts):
                got = "a str" if isinstance(prompts, str) else "no" if prompts is None else len(prompts)
                raise ValueError(f"images and prompts must be sequences of the same length, got {len(images)} "
                                 f"image(s) and {got} prompt(s)")
            question = self.question if question is None else question
            if not isinstance(question, str) or "{phrase}" not in question:
                raise ValueError(f"question must be a str with {{phrase}}, got {question!r}")
            for i, p in enumerate(prompts):
                if not isinstance(p, str) or not p:
                    raise ValueError(f"prompt {i} must be a non-empty str, got {p!r}")
                if any(t in p for t in (SEG, P_OPEN, P_CLOSE)):
                    raise ValueError(f"prompt {i} must be a plain phrase (without <SEG>, <p>, </p>), got {p!r}")
            per_image = [[p] for p in prompts]
            asked = [question.replace("{phrase}", f"{P_OPEN}{p}{P_CLOSE}") for p in prompts]
        else:
            if prompts is not None:
                raise ValueError(f"task={task!r} takes the class names as classes=, not prompts")
            per_image = _class_lists(classes, len(images))
            question = self.class_question if question is None else question
            if not isinstance(question, str) or "{classes}" not in question:
                raise ValueError(f"question must be a str with {{classes}}, got {question!r}")
            asked = [question.replace("{classes}", self.class_separator.join(f"{P_OPEN}{c}{P_CLOSE}" for c in cl))
                     for cl in per_image]
        for name, value in (("threshold", threshold), ("object_threshold", object_threshold),
                            ("overlap_threshold", overlap_threshold)) + \
                (() if score_threshold is None else (("score_threshold", score_threshold),)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if isinstance(stuff_classes, str):
            raise ValueError("stuff_classes must be a sequence of class names, got a str")
        stuff = list(stuff_classes)
        unknown = [c for c in stuff if not any(c in cl for cl in per_image)]
        if unknown and task == "panoptic":
            raise ValueError(f"stuff_classes {unknown} are not among the classes")
        loaded = [_qwen.load_image(im, f"image {i}") for i, im in enumerate(images)]
        if max_new_tokens is None:
            max_new_tokens = max(16, 2 * self.max_answer_tokens) if self.max_answer_tokens else 32
        self._head_device()
        self.model.eval()
        self.head.eval()
        options = {"threshold": threshold, "score_threshold": score_threshold, "object_threshold": object_threshold,
                   "overlap_threshold": overlap_threshold, "stuff": stuff}
        results: list[Any] = []
        for k in range(0, len(loaded), batch_size):
            rows = list(range(k, min(k + batch_size, len(loaded))))
            with torch.no_grad():
                results.extend(self._segment_batch(task, [loaded[i] for i in rows], [asked[i] for i in rows],
                                                   [per_image[i] for i in rows], max_new_tokens, options))
        return results

    def _generate(self, images: list[Any], questions: list[str], max_new_tokens: int) -> tuple[dict, list, list]:
        """Generate greedily for each (image, question); the head's predictions from the
        generated ``<SEG>`` (or an appended one), the texts and which ``<SEG>`` were forced."""
        torch = _torch()
        from segtext.model.xsam import span_ids

        seg_id, eos, pad = self.token_ids[SEG], self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        items = [_qwen.encode_pair(self.tokenizer, self.image_processor, im, self._prompt(q), None,
                                   self.image_token_id) for im, q in zip(images, questions)]
        batch = _qwen.collate(items, pad, left=True)
        batch.pop("labels")
        dev = self.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        g = self.model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                eos_token_id=eos, return_dict_in_generate=True, output_hidden_states=True)
        n = batch["input_ids"].shape[1]
        new = g.sequences[:, n:]
        prompt_hidden = g.hidden_states[0][-1]                                     # [B, L, D]
        phrase_ids = span_ids(batch["input_ids"], self.token_ids[P_OPEN], self.token_ids[P_CLOSE])
        seg_hidden, forced, texts = [], [], []
        for b in range(len(images)):
            toks = new[b].tolist()
            stop = next((j for j, t in enumerate(toks) if t in (eos, pad)), len(toks))
            toks = toks[:stop]
            texts.append(self.tokenizer.decode(toks, skip_special_tokens=True))
            j = toks.index(seg_id) if seg_id in toks else None
            if j is not None and j + 1 < len(g.hidden_states):
                seg_hidden.append(g.hidden_states[j + 1][-1][b, -1])              # the step that consumed <SEG>
                forced.append(False)
                continue
            # no step consumed it (or it was never written): one forward over prompt + answer + <SEG>
            cut = toks[:j] if j is not None else toks
            ids = items[b]["input_ids"] + cut + [seg_id]
            one = {"input_ids": torch.tensor([ids], device=dev),
                   "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=dev),
                   "mm_token_type_ids": torch.tensor([[1 if t == self.image_token_id else 0 for t in ids]], device=dev),
                   "pixel_values": items[b]["pixel_values"].to(dev),
                   "image_grid_thw": items[b]["image_grid_thw"].to(dev)}
            seg_hidden.append(self.model(**one, output_hidden_states=True).hidden_states[-1][0, -1])
            forced.append(j is None)
        pixels = torch.stack([self._head_pixels(im) for im in images]).to(dev)
        preds = self.head(pixels, torch.stack(seg_hidden), prompt_hidden, phrase_ids.to(dev))
        return preds, texts, forced

    def _segment_batch(self, task: str, images: list[Any], questions: list[str], names: list[list[str]],
                       max_new_tokens: int, options: dict) -> list[Any]:
        from segtext.model.xsam import panoptic_inference, referring_inference, semantic_inference

        preds, texts, forced = self._generate(images, questions, max_new_tokens)
        logits, masks = preds["pred_logits"], preds["pred_masks"]
        out: list[Any] = []
        for b, im in enumerate(images):
            size = (im.height, im.width)
            n = len(names[b])
            if int(preds["class_mask"][b, :-1].sum()) != n:                      # the prompt's spans, bg excluded
                raise RuntimeError(f"image {b}: the prompt holds {int(preds['class_mask'][b, :-1].sum())} "
                                   f"<p>...</p> spans for {n} class(es)")
            keep = list(range(n)) + [logits.shape[-1] - 1]                           # its classes, then the bg
            one = {"pred_logits": logits[b:b + 1, :, keep], "pred_masks": masks[b:b + 1],
                   "image_size": preds["image_size"]}
            if task == "referring":
                mask = referring_inference(one, size, threshold=options["threshold"])[0]
                score = float(one["pred_logits"].float().softmax(-1)[0, :, 0].max())
                out.append(XSamResult(texts[b], mask, names[b][0], forced[b], score))
            elif task == "semantic":
                labels = semantic_inference(one, size, score_threshold=options["score_threshold"])[0]
                out.append(XSamSemanticResult(texts[b], labels, list(names[b]), forced[b]))
            else:
                stuff = [names[b].index(c) for c in options["stuff"] if c in names[b]]
                segments, info = panoptic_inference(one, size, object_threshold=options["object_threshold"],
                                                    overlap_threshold=options["overlap_threshold"],
                                                    stuff_labels=stuff)[0]
                for entry in info:
                    entry["class"] = names[b][entry["label"]]
                out.append(XSamPanopticResult(texts[b], segments, info, list(names[b]), forced[b]))
        return out


def _class_lists(classes: Any, n_images: int) -> list[list[str]]:
    """``classes`` of :meth:`XSamSegmenter.segment` -> one checked list of names per image."""
    if classes is None:
        raise ValueError("task='semantic' and task='panoptic' need classes= (the class names to segment)")
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(f"classes must be a list of class names (or one list per image), got "
                         f"{'a str' if isinstance(classes, str) else type(classes).__name__}")
    if len(classes) == 0:
        raise ValueError("classes is empty: give at least one class name")
    if all(isinstance(c, str) for c in classes):
        lists = [list(classes)] * n_images
        where = lambda i: "classes"                       # noqa: E731
    elif all(isinstance(c, Sequence) and not isinstance(c, str) for c in classes):
        if len(classes) != n_images:
            raise ValueError(f"classes holds {len(classes)} lists for {n_images} image(s): give one list of names "
                             "for every image, or one list per image")
        lists = [list(c) for c in classes]
        where = lambda i: f"classes[{i}]"                 # noqa: E731
    else:
        raise ValueError("classes must be a list of str (for every image) or a list of lists of str (one per image)")
    for i, names in enumerate(lists):
        if not names:
            raise ValueError(f"{where(i)} is empty: give at least one class name")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where(i)}: a class name must be a non-empty str, got {name!r}")
            if any(t in name for t in (SEG, P_OPEN, P_CLOSE)):
                raise ValueError(f"{where(i)}: class {name!r} must be plain text (without <SEG>, <p>, </p>)")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"{where(i)}: class names must be distinct, {dup} repeated")
    return lists
