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
  label data for the text path.

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
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segtext.model import _qwen

__all__ = ["XSamResult", "XSamSegmenter"]

DEFAULT_QUESTION = "Please segment {phrase} in this image."
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


_torch = _qwen.require_torch
_lora_arg = _qwen.lora_arg


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

    @classmethod
    def tiny(cls, seed: int = 0, head_config: Any = None, lora: dict | None = None,
             train_embeddings: str = "all", head_size: int = 64) -> XSamSegmenter:
        """A random 2-layer Qwen2-VL (hidden 64, the tiny byte-level tokenizer of the text path)
        and a tiny head (:meth:`SegHeadConfig.tiny <segtext.model.xsam.SegHeadConfig.tiny>`, a
        :class:`~segtext.model.xsam.TinyConvBackbone` on the raw image resized to ``head_size``);
        no download. ``head_config`` overrides the head's sizes (its ``llm_dim`` must be 64).

        Example:
            >>> from segtext.model import XSamSegmenter
            >>> from segtext.model.xsam import SegHeadConfig
            >>> XSamSegmenter.tiny(head_config=SegHeadConfig.tiny(num_queries=4)).head.config.num_queries
            4
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
        head = SegHead(hcfg)
        return cls(model, tok, _qwen.tiny_image_processor(), head, lora=lora, train_embeddings=train_embeddings,
                   head_size=head_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, head_config: Any = None, backbone: Any = None,
                        lora: dict | None = None, train_embeddings: str = "new",
                        head_size: int = 1024) -> XSamSegmenter:
        """An XSamSegmenter from a directory written by :meth:`save_pretrained`, or from a
        Qwen2-VL / Qwen2.5-VL checkpoint directory (model, tokenizer and image processor read
        from it) with a new random head (``head_config``, default
        :meth:`SegHeadConfig.tiny <segtext.model.xsam.SegHeadConfig.tiny>` at the model's width).

        ``backbone`` replaces the head's :class:`~segtext.model.xsam.TinyConvBackbone` (a saved
        model with another backbone needs the same kind of module passed again; its weights are
        read from the file). The other arguments apply to a checkpoint only.

        Example:
            >>> import tempfile
            >>> from segtext.model import XSamSegmenter
            >>> d = tempfile.mkdtemp()
            >>> XSamSegmenter.tiny().save_pretrained(d)
            >>> XSamSegmenter.from_pretrained(d).head_size
            64
        """
        torch = _torch()
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        from segtext.model.xsam import SegHead, SegHeadConfig

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
        return cls(model, tok, ip, SegHead(hcfg, backbone), lora=lora, train_embeddings=train_embeddings,
                   head_size=head_size)

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

        from segtext.model.xsam import TinyConvBackbone

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
        settings = {"format_version": _FORMAT_VERSION, "lora": self.lora, "train_embeddings": self.train_embeddings,
                    "head_size": self.head_size, "head_config": self.head.config.to_dict(),
                    "backbone": "tiny" if type(bb) is TinyConvBackbone else type(bb).__name__,
                    "token_ids": self.token_ids, "question": self.question,
                    "max_answer_tokens": self.max_answer_tokens, "model_class": type(base).__name__}
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
        if s["backbone"] != "tiny" and backbone is None:
            raise ValueError(f"{d}: saved with a {s['backbone']} backbone: pass backbone= (the same kind of module)")
        config = AutoConfig.from_pretrained(d)
        model = getattr(transformers, s["model_class"])(config)
        tok = AutoTokenizer.from_pretrained(os.path.join(d, "tokenizer"))
        ip = AutoImageProcessor.from_pretrained(os.path.join(d, "image_processor"))
        head = SegHead(SegHeadConfig(**s["head_config"]), backbone)
        seg = cls(model, tok, ip, head, lora=s["lora"], train_embeddings=s["train_embeddings"],
                  head_size=s["head_size"], _wrapped=True)
        if seg.token_ids != s["token_ids"]:
            raise ValueError(f"{d}: the tokenizer's ids of {sorted(s['token_ids'])} changed: {seg.token_ids}")
        seg.model = seg._wrap(model, torch)
        state = load_file(os.path.join(d, "model.safetensors"))
        seg.model.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vlm.")}, strict=True)
        seg.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")}, strict=True)
        seg.question = s.get("question") or DEFAULT_QUESTION
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
            if len(masks) == n_phrases:
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
                          "labels": labels, "question": question, "label": label})
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
        from the records (their ``<p>label</p>`` put back as ``{phrase}``).

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

    def segment(self, images: Sequence[Any], prompts: Sequence[str], *, question: str | None = None,
                max_new_tokens: int | None = None, batch_size: int = 8, threshold: float = 0.5) -> list[XSamResult]:
        """Masks for images and referring phrases, one :class:`XSamResult` per image.

        Args:
            images: paths, PIL images or uint8 arrays.
            prompts: the phrase to segment in each image; asked as ``<p>phrase</p>`` in
                ``question`` (``{phrase}`` stands for it; default the template learnt by
                :meth:`fit`, else ``"Please segment {phrase} in this image."``).
            max_new_tokens: default twice the longest answer seen by :meth:`fit` (at least 16), or 32.
            batch_size: images per ``generate`` call.
            threshold: on the mask probability.

        Greedy generation; the generated ``<SEG>``'s hidden state conditions the head (``forced``
        when the model wrote none and one was appended).

        Example:
            >>> import numpy as np
            >>> from segtext.model import XSamSegmenter
            >>> seg = XSamSegmenter.tiny()
            >>> r = seg.segment([np.zeros((60, 80, 3), np.uint8)], ["the dog"], max_new_tokens=3)[0]
            >>> r.mask.shape, r.mask.dtype, r.phrase
            ((60, 80), dtype('bool'), 'the dog')
            >>> isinstance(r.to_text("rrle", grid_size=2), str), isinstance(r.forced, bool)
            (True, True)
        """
        torch = _torch()
        if isinstance(prompts, str) or isinstance(images, (str, os.PathLike)) or len(images) != len(prompts):
            raise ValueError(f"images and prompts must be sequences of the same length, got "
                             f"{'a str' if isinstance(images, (str, os.PathLike)) else len(images)} image(s) and "
                             f"{'a str' if isinstance(prompts, str) else len(prompts)} prompt(s)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        question = self.question if question is None else question
        if not isinstance(question, str) or "{phrase}" not in question:
            raise ValueError(f"question must be a str with {{phrase}}, got {question!r}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p:
                raise ValueError(f"prompt {i} must be a non-empty str, got {p!r}")
            if any(t in p for t in (SEG, P_OPEN, P_CLOSE)):
                raise ValueError(f"prompt {i} must be a plain phrase (without <SEG>, <p>, </p>), got {p!r}")
        loaded = [_qwen.load_image(im, f"image {i}") for i, im in enumerate(images)]
        if max_new_tokens is None:
            max_new_tokens = max(16, 2 * self.max_answer_tokens) if self.max_answer_tokens else 32
        self._head_device()
        self.model.eval()
        self.head.eval()
        results: list[XSamResult] = []
        for k in range(0, len(loaded), batch_size):
            rows = list(range(k, min(k + batch_size, len(loaded))))
            with torch.no_grad():
                results.extend(self._segment_batch([loaded[i] for i in rows], [prompts[i] for i in rows],
                                                   question, max_new_tokens, threshold))
        return results

    def _segment_batch(self, images: list[Any], phrases: list[str], question: str, max_new_tokens: int,
                       threshold: float) -> list[XSamResult]:
        torch = _torch()
        from segtext.model.xsam import referring_inference, span_ids

        seg_id, eos, pad = self.token_ids[SEG], self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        items = [_qwen.encode_pair(self.tokenizer, self.image_processor, im,
                                   self._prompt(question.replace("{phrase}", f"{P_OPEN}{ph}{P_CLOSE}")), None,
                                   self.image_token_id) for im, ph in zip(images, phrases)]
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
        probs = preds["pred_logits"].float().softmax(-1)[..., 0].max(1).values
        out = []
        for b, im in enumerate(images):
            one = {"pred_logits": preds["pred_logits"][b:b + 1], "pred_masks": preds["pred_masks"][b:b + 1],
                   "image_size": preds["image_size"]}
            mask = referring_inference(one, (im.height, im.width), threshold=threshold)[0]
            out.append(XSamResult(texts[b], mask, phrases[b], forced[b], float(probs[b])))
        return out
