"""The text path: a Qwen2-VL that learns to write masks as R-RLE / I-SD / I-RLE or B-SD text.

:class:`Segmenter` wraps a Qwen2-VL (or Qwen2.5-VL) checkpoint, or a tiny random one for tests,
with LoRA on the language model (peft; the vision tower is left alone), the format tokens added
through :mod:`segtext.tokens` (B-SD's bricks) and trained (their embedding and output rows),
a training loop that reads the ``messages`` records ``segtext build`` writes (prompt tokens
masked out of the loss), and ``segment``, which generates with :mod:`segtext.constrain`'s
processors by default (so every answer decodes in strict mode) and returns masks at each
image's size.

The prompt is Qwen2-VL's chat layout written by hand (no chat template needed)::

    <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>QUESTION<|im_end|>\\n<|im_start|>assistant\\n

with a record's ``<image>`` standing for the vision block; the answer is followed by
``<|im_end|>``, which carries loss. The inputs are built from the image processor and the
tokenizer directly (``Qwen2VLProcessor`` needs torchvision in transformers 5), with
``mm_token_type_ids`` computed from the ids.

Example:
    >>> from segtext.model import Segmenter
    >>> seg = Segmenter.tiny(encoding="rrle", grid_size=4)        # doctest: +SKIP
    >>> seg.fit("records.jsonl", steps=100)                        # doctest: +SKIP
    >>> seg.segment(["img.png"], ["the dog"])[0].mask.shape        # doctest: +SKIP
    (64, 64)
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtext.model import _qwen

__all__ = ["SegmentResult", "Segmenter"]

ENCODINGS = ("rrle", "isd", "irle", "bsd")
DEFAULT_QUESTION = "Please segment {phrase} in this image."
_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_FORMAT_VERSION = 1


@dataclass
class SegmentResult:
    """One answer: the generated ``text``, the decoded ``mask`` (``(H, W)`` bool at the image's
    size), the decoder's ``repairs`` (empty for a clean answer) and ``ok`` (no repairs)."""

    text: str
    mask: np.ndarray
    repairs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.repairs


_torch = _qwen.require_torch
_lora_arg = _qwen.lora_arg


class Segmenter:
    """A Qwen2-VL with LoRA that writes masks as text; see the module docstring.

    Build one with :meth:`tiny` (random, for tests) or :meth:`from_pretrained` (a checkpoint
    directory, a config, or a directory written by :meth:`save_pretrained`).
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, *, encoding: str = "rrle",
                 grid_size: int | tuple[int, int] = 16, resolution: int = 64, box_format: str = "norm1000",
                 lora: dict | None = None, train_embeddings: str = "new", _wrapped: bool = False,
                 _format_ids: list[int] | None = None) -> None:
        torch = _torch()
        from segtext._validate import grid_size_arg
        from segtext.tokens import add_format_tokens

        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if train_embeddings not in ("new", "all", "none"):
            raise ValueError(f"train_embeddings must be 'new', 'all' or 'none', got {train_embeddings!r}")
        self.encoding = encoding
        self.grid_size = grid_size_arg(grid_size)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}")
        self.resolution = resolution
        self.box_format = box_format
        self.lora = _lora_arg(lora)
        self.train_embeddings = train_embeddings
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_answer_tokens = 0
        self.question = DEFAULT_QUESTION
        cfg = model.config
        self.image_token_id = int(getattr(cfg, "image_token_id", None) or tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        if _wrapped:
            self.model = model
            self.format_ids = list(_format_ids or [])
            return
        before = len(tokenizer)
        ids = add_format_tokens(tokenizer, ("bsd",), model=model, box_format=box_format) if encoding == "bsd" else {}
        self.format_ids = sorted(set(ids.values()) | {i for i in range(before, len(tokenizer))})
        self.model = self._wrap(model, torch)

    # ------------------------------------------------------------------ construction

    def _wrap(self, model: Any, torch: Any) -> Any:
        for p in model.parameters():
            p.requires_grad_(False)
        if self.lora is None:
            lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
            for p in lm.parameters():
                p.requires_grad_(True)
            for p in model.lm_head.parameters():
                p.requires_grad_(True)
            return model
        from peft import LoraConfig, get_peft_model

        extra: dict = {}
        if self.train_embeddings == "all":
            extra["modules_to_save"] = ["embed_tokens", "lm_head"]
        elif self.train_embeddings == "new" and self.format_ids:
            extra["trainable_token_indices"] = {"embed_tokens": list(self.format_ids), "lm_head": list(self.format_ids)}
        cfg = LoraConfig(r=self.lora["r"], lora_alpha=self.lora["lora_alpha"], lora_dropout=self.lora["lora_dropout"],
                         target_modules=list(self.lora.get("target_modules", _LORA_TARGETS)),
                         exclude_modules=r".*visual.*", **extra)
        return get_peft_model(model, cfg)

    @classmethod
    def tiny(cls, encoding: str = "rrle", grid_size: int | tuple[int, int] = 16, resolution: int = 32,
             lora: dict | None = None, seed: int = 0, tokenizer: Any = None, box_format: str = "norm1000",
             train_embeddings: str = "all") -> Segmenter:
        """A random 2-layer Qwen2-VL (hidden 64, vision depth 2) for tests; no download.

        ``tokenizer`` defaults to a small byte-level tokenizer with Qwen2-VL's chat and vision
        tokens (so that a random model can learn to write text in a few hundred steps); pass
        :func:`segtext.tokens.qwen2_tokenizer()` for the real one. ``lora`` defaults to ``{"r": 8}``.

        Example:
            >>> from segtext.model import Segmenter
            >>> seg = Segmenter.tiny(encoding="bsd", resolution=8)
            >>> seg.encoding, len(seg.format_ids)            # the 126 brick tokens were added
            ('bsd', 126)
        """
        torch = _torch()
        from transformers import Qwen2VLForConditionalGeneration

        tok = tokenizer if tokenizer is not None else _qwen.tiny_tokenizer()
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(_qwen.tiny_config(tok))
        return cls(model, tok, _qwen.tiny_image_processor(), encoding=encoding, grid_size=grid_size,
                   resolution=resolution, box_format=box_format, lora={"r": 8} if lora is None else lora,
                   train_embeddings=train_embeddings)

    @classmethod
    def from_pretrained(cls, path_or_config: Any, encoding: str = "rrle", grid_size: int | tuple[int, int] = 16,
                        resolution: int = 64, lora: dict | None = None, tokenizer: Any = None,
                        image_processor: Any = None, box_format: str = "norm1000",
                        train_embeddings: str = "new") -> Segmenter:
        """A Segmenter from a directory written by :meth:`save_pretrained`, a Qwen2-VL / Qwen2.5-VL
        checkpoint directory (tokenizer and image processor read from it), or a config object
        (random weights; ``tokenizer`` then needed, and ``image_processor`` unless the default
        Qwen2-VL one fits).

        Example:
            >>> import tempfile
            >>> from segtext.model import Segmenter
            >>> d = tempfile.mkdtemp()
            >>> Segmenter.tiny(grid_size=4).save_pretrained(d)
            >>> Segmenter.from_pretrained(d).grid_size
            (4, 4)
        """
        torch = _torch()
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer, PretrainedConfig

        if isinstance(path_or_config, PretrainedConfig):
            if tokenizer is None:
                raise ValueError("from_pretrained(config) needs tokenizer= (e.g. segtext.tokens.qwen2_tokenizer())")
            model = AutoModelForImageTextToText.from_config(path_or_config)
            if image_processor is None:
                from transformers import Qwen2VLImageProcessor

                image_processor = Qwen2VLImageProcessor()  # Qwen2-VL's defaults (patch 14, merge 2)
            ip = image_processor
            return cls(model, tokenizer, ip, encoding=encoding, grid_size=grid_size, resolution=resolution,
                       box_format=box_format, lora={"r": 8} if lora is None else lora,
                       train_embeddings=train_embeddings)
        if not isinstance(path_or_config, (str, os.PathLike)):
            raise TypeError(f"path_or_config must be a directory or a transformers config, got "
                            f"{type(path_or_config).__name__}")
        path = os.fspath(path_or_config)
        if not os.path.isdir(path):
            raise ValueError(f"{path!r} is not a directory (a checkpoint or a saved Segmenter)")
        if os.path.exists(os.path.join(path, "segtext.json")):
            return cls._load_saved(path, torch)
        model = AutoModelForImageTextToText.from_pretrained(path)
        tok = tokenizer or AutoTokenizer.from_pretrained(path)
        ip = image_processor or AutoImageProcessor.from_pretrained(path)
        return cls(model, tok, ip, encoding=encoding, grid_size=grid_size, resolution=resolution,
                   box_format=box_format, lora={"r": 8} if lora is None else lora, train_embeddings=train_embeddings)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write everything needed to rebuild this Segmenter exactly: the base config, the
        tokenizer, the image processor, all weights (LoRA included) as safetensors, and the
        segtext settings (``segtext.json``). :meth:`from_pretrained` reads it back.

        Example:
            >>> import os, tempfile
            >>> from segtext.model import Segmenter
            >>> d = tempfile.mkdtemp()
            >>> Segmenter.tiny(grid_size=4).save_pretrained(d)
            >>> sorted(os.listdir(d))
            ['config.json', 'image_processor', 'model.safetensors', 'segtext.json', 'tokenizer']
        """
        from safetensors.torch import save_file

        d = os.fspath(directory)
        os.makedirs(d, exist_ok=True)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        base.config.to_json_file(os.path.join(d, "config.json"))
        self.tokenizer.save_pretrained(os.path.join(d, "tokenizer"))
        self.image_processor.save_pretrained(os.path.join(d, "image_processor"))
        state = {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, os.path.join(d, "model.safetensors"))
        settings = {"format_version": _FORMAT_VERSION, "encoding": self.encoding, "grid_size": list(self.grid_size),
                    "resolution": self.resolution, "box_format": self.box_format, "lora": self.lora,
                    "train_embeddings": self.train_embeddings, "format_ids": self.format_ids,
                    "max_answer_tokens": self.max_answer_tokens, "question": self.question,
                    "model_class": type(base).__name__}
        with open(os.path.join(d, "segtext.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=1)

    @classmethod
    def _load_saved(cls, d: str, torch: Any) -> Segmenter:
        import transformers
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        with open(os.path.join(d, "segtext.json"), encoding="utf-8") as f:
            s = json.load(f)
        if s.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{d}: segtext.json format_version {s.get('format_version')!r}, expected {_FORMAT_VERSION}")
        config = AutoConfig.from_pretrained(d)
        model = getattr(transformers, s["model_class"])(config)
        tok = AutoTokenizer.from_pretrained(os.path.join(d, "tokenizer"))
        ip = AutoImageProcessor.from_pretrained(os.path.join(d, "image_processor"))
        seg = cls(model, tok, ip, encoding=s["encoding"], grid_size=tuple(s["grid_size"]), resolution=s["resolution"],
                  box_format=s["box_format"], lora=s["lora"], train_embeddings=s["train_embeddings"], _wrapped=True,
                  _format_ids=s["format_ids"])
        seg.model = seg._wrap(model, torch)
        seg.model.load_state_dict(load_file(os.path.join(d, "model.safetensors")), strict=True)
        seg.max_answer_tokens = int(s.get("max_answer_tokens", 0))
        seg.question = s.get("question") or DEFAULT_QUESTION
        seg.model.eval()
        return seg

    # ------------------------------------------------------------------ training

    def _prompt(self, question: str) -> str:
        q = question.replace("<image>", _qwen.IMAGE) if "<image>" in question else _qwen.IMAGE + question
        return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"

    def _check_answer(self, answer: str, where: str) -> None:
        if "<seg>" not in answer:
            raise ValueError(f"{where}: the answer has no <seg> (expected a {self.encoding} mask text)")

    def _records(self, records: Any, image_root: str | None) -> list[tuple[str, Any, str, str, str | None]]:
        """``(where, image, question, answer, label)`` of each ``messages`` record."""
        records, base = _qwen.load_records(records, image_root)
        out = []
        for i, rec in enumerate(records):
            where = f"record {rec.get('id', i)!r}" if isinstance(rec, dict) else f"record {i}"
            if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                raise ValueError(f"{where}: expected a 'messages' record as segtext build writes it")
            images = rec.get("images")
            if not images or not isinstance(images, list) or len(images) != 1:
                raise ValueError(f"{where}: expected one image in 'images', got {images!r}")
            msgs = rec["messages"]
            user = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
            bot = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
            if len(user) != 1 or len(bot) != 1 or not all(isinstance(t, str) for t in user + bot):
                raise ValueError(f"{where}: expected one user and one assistant message with text content")
            self._check_answer(bot[0], where)
            img = images[0]
            if isinstance(img, str) and base is not None and not os.path.isabs(img):
                img = os.path.join(base, img)
            label = rec.get("label") if isinstance(rec.get("label"), str) else None
            out.append((where, img, user[0], bot[0], label))
        if not out:
            raise ValueError("records is empty")
        return out

    def fit(self, records: Any, steps: int = 100, lr: float = 5e-3, batch_size: int = 4, seed: int = 0,
            image_root: str | None = None, progress: bool | Callable[[int, float], None] = False) -> list[float]:
        """Train on ``messages`` records (a JSON Lines path or dicts); returns the loss of each step.

        Each step takes ``batch_size`` records in a seeded shuffled order (cycling), masks the
        prompt out of the loss and updates the trainable parameters (LoRA, and the embedding /
        output rows chosen by ``train_embeddings``) with AdamW.

        Raises:
            ValueError: a malformed record (no image, no assistant answer, an answer without
                ``<seg>``, an unreadable image or one of a non-8-bit mode), named in the message.

        Example:
            >>> from segtext.model import Segmenter
            >>> seg = Segmenter.tiny(grid_size=2)
            >>> seg.fit([{"id": "a", "messages": [{"role": "user", "content": "<image>x"}]}], steps=1)
            Traceback (most recent call last):
            ...
            ValueError: record 'a': expected one image in 'images', got None
        """
        torch = _torch()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        rows = self._records(records, image_root)
        items = []
        asked: dict[str, int] = {}
        for where, img, question, answer, label in rows:
            if label and label in question:  # the question template, for segment() to ask the same way
                q = question.replace("<image>", "").replace(label, "{phrase}")
                asked[q] = asked.get(q, 0) + 1
            image = _qwen.load_image(img, where)
            items.append(_qwen.encode_pair(self.tokenizer, self.image_processor, image, self._prompt(question), answer,
                                           self.image_token_id))
        if asked:
            self.question = max(asked, key=asked.__getitem__)
        self.max_answer_tokens = max(self.max_answer_tokens,
                                     max(sum(1 for x in it["labels"] if x != -100) for it in items))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        rng = random.Random(seed)
        order: list[int] = []
        losses = []
        self.model.train()
        pad = self.tokenizer.pad_token_id
        for step in range(steps):
            batch_ids = []
            while len(batch_ids) < min(batch_size, len(items)):
                if not order:
                    order = list(range(len(items)))
                    rng.shuffle(order)
                batch_ids.append(order.pop())
            batch = _qwen.collate([items[i] for i in batch_ids], pad, left=False)
            out = self.model(**batch)
            loss = out.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {float(loss)} at step {step}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if callable(progress):
                progress(step, losses[-1])
            elif progress:
                print(f"step {step + 1}/{steps} loss {losses[-1]:.4f}", flush=True)
        self.model.eval()
        return losses

    # ------------------------------------------------------------------ inference

    def _processor(self, phrase: str, start: str, max_objects: int | None) -> Any:
        from segtext.constrain import BSDLogitsProcessor, RRLELogitsProcessor

        if self.encoding == "bsd":
            return BSDLogitsProcessor(self.tokenizer, [phrase], resolution=self.resolution,
                                      box_format=self.box_format, max_objects=max_objects, start=start)
        return RRLELogitsProcessor(self.tokenizer, ["others", phrase], self.grid_size, format=self.encoding,
                                   start=start)

    def _decode(self, text: str, phrase: str, size: tuple[int, int]) -> SegmentResult:
        import segtext as st

        if self.encoding == "bsd":
            res = st.decode_bsd(text, size, resolution=self.resolution, box_format=self.box_format)
            return SegmentResult(text, res.mask() > 0, list(res.repairs))
        res = st.decode_rrle(text, ["others", phrase], self.grid_size, image_size=size)
        return SegmentResult(text, res.mask > 0, list(res.repairs))

    def segment(self, images: Sequence[Any], prompts: Sequence[str], constrained: bool = True,
                do_sample: bool = False, temperature: float = 1.0, max_new_tokens: int | None = None,
                batch_size: int = 8, question: str | None = None, start: str = "seg",
                max_objects: int | None = None, seed: int | None = None) -> list[SegmentResult]:
        """Masks for images and referring phrases, one :class:`SegmentResult` per image.

        Args:
            images: paths, PIL images or uint8 arrays.
            prompts: the phrase to segment in each image (``question`` is filled with it).
            constrained: generate with :mod:`segtext.constrain`'s processor (labels
                ``["others", phrase]``, the model's grid or resolution), so every answer
                decodes in strict mode; ``False`` decodes whatever the model writes (repair mode).
            do_sample, temperature, seed: greedy by default; sampled when asked.
            max_new_tokens: default twice the longest answer seen in :meth:`fit` (at least 64),
                or 1024.
            batch_size: images per ``generate`` call (rows with the same phrase share one call).
            question: the question, with ``{phrase}`` for the phrase; default the one most used
                in the records of :meth:`fit` (their ``label`` put back as ``{phrase}``), else
                ``"Please segment {phrase} in this image."``.
            start: ``"seg"`` (free text, then ``<seg>`` / ``<ref>``; the records' answers may
                begin with a sentence) or ``"answer"``.

        Example:
            >>> from segtext.model import Segmenter
            >>> seg = Segmenter.tiny(grid_size=2)
            >>> import numpy as np
            >>> r = seg.segment([np.zeros((56, 56, 3), np.uint8)], ["the dog"], max_new_tokens=120, start="answer")[0]
            >>> r.mask.shape, r.mask.dtype      # an untrained model, but the answer still decodes
            ((56, 56), dtype('bool'))
        """
        torch = _torch()
        from transformers import LogitsProcessorList

        if isinstance(prompts, str) or len(images) != len(prompts):
            raise ValueError(f"images and prompts must be sequences of the same length, got {len(images)} image(s) "
                             f"and {'a str' if isinstance(prompts, str) else len(prompts)}")
        loaded = [_qwen.load_image(im, f"image {i}") for i, im in enumerate(images)]
        if max_new_tokens is None:
            max_new_tokens = max(64, 2 * self.max_answer_tokens) if self.max_answer_tokens else 1024
        if seed is not None:
            torch.manual_seed(seed)
        results: list[SegmentResult | None] = [None] * len(loaded)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p:
                raise ValueError(f"prompt {i} must be a non-empty str, got {p!r}")
            groups.setdefault(p, []).append(i)
        self.model.eval()
        pad = self.tokenizer.pad_token_id
        question = self.question if question is None else question
        if not isinstance(question, str):
            raise TypeError(f"question must be a str with {{phrase}}, got {question!r}")
        for phrase, rows in groups.items():
            for k in range(0, len(rows), batch_size):
                part = rows[k:k + batch_size]
                items = [_qwen.encode_pair(self.tokenizer, self.image_processor, loaded[i],
                                           self._prompt(question.replace("{phrase}", phrase)), None,
                                           self.image_token_id) for i in part]
                batch = _qwen.collate(items, pad, left=True)
                batch.pop("labels")
                procs = LogitsProcessorList([self._processor(phrase, start, max_objects)]) if constrained else None
                kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=pad,
                              eos_token_id=self.tokenizer.eos_token_id)
                if do_sample:
                    kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
                with torch.no_grad():
                    out = self.model.generate(**batch, logits_processor=procs, **kwargs)
                n = batch["input_ids"].shape[1]
                for row, i in enumerate(part):
                    text = self.tokenizer.decode(out[row, n:], skip_special_tokens=True)
                    results[i] = self._decode(text, phrase, (loaded[i].height, loaded[i].width))
        return [r for r in results if r is not None]
