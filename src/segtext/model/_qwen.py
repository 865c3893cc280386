"""Qwen2-VL plumbing without torchvision: tiny configs, the tiny tokenizer, inputs built by hand.

Private module of :mod:`segtext.model`. transformers 5 cannot build ``Qwen2VLProcessor``
without torchvision, so the inputs are made from the image processor and the tokenizer
directly: each ``<|image_pad|>`` of the prompt is repeated once per merged patch
(``grid_thw.prod() // merge_size ** 2``) and ``mm_token_type_ids`` (1 on image tokens) is
computed from the ids, as the processor would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the Qwen2-VL special tokens the wrapper needs, in Qwen2's order
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
               "<|image_pad|>", "<|video_pad|>")
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"}  # 8-bit modes PIL turns into RGB


def require_torch() -> Any:
    """torch, after checking that the model extras (torch, transformers, peft) are installed."""
    import importlib

    try:
        for name in ("peft", "transformers"):
            importlib.import_module(name)
        import torch
    except ImportError as e:  # pragma: no cover - only without the extra
        raise ImportError("segtext.model needs torch, transformers and peft: pip install 'segtext[model]'") from e
    return torch


def lora_arg(lora: Any) -> dict | None:
    """Checked ``LoraConfig`` arguments with defaults (``r`` 8, ``lora_alpha`` 2r, no dropout);
    ``None`` stays ``None`` (no LoRA)."""
    if lora is None:
        return None
    if not isinstance(lora, dict):
        raise TypeError(f"lora must be None or a dict of LoraConfig arguments (e.g. {{'r': 8}}), got {lora!r}")
    out = {"r": 8, "lora_alpha": None, "lora_dropout": 0.0, **lora}
    if not isinstance(out["r"], int) or isinstance(out["r"], bool) or out["r"] < 1:
        raise ValueError(f"lora['r'] must be a positive int, got {out['r']!r}")
    if out["lora_alpha"] is None:
        out["lora_alpha"] = 2 * out["r"]
    return out


def load_records(records: Any, image_root: str | None) -> tuple[Sequence[Any], str | None]:
    """The records (a JSON Lines path or a sequence of dicts) and the folder their relative image
    paths are joined to (``image_root``, else the records file's folder)."""
    import json

    base = image_root
    if isinstance(records, (str, os.PathLike)):
        path = os.fspath(records)
        base = base if base is not None else os.path.dirname(os.path.abspath(path))
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path} line {n}: not JSON: {e}") from None
        records = rows
    if isinstance(records, dict) or not isinstance(records, Sequence):
        raise TypeError("records must be a path to a JSON Lines file or a sequence of record dicts")
    return records, base


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer with Qwen2-VL's chat and vision tokens (under 300 ids)."""
    from tokenizers import AddedToken

    from segtext.tokens import byte_level_tokenizer

    merges = [("Ġ", "*"), ("|", "Ġ"), ("Ċ", "Ġ"), ("o", "t"), ("ot", "h"), ("oth", "e"), ("othe", "r"),
              ("other", "s"), ("Ġ", "others"), ("<", "s"), ("<s", "e"), ("<se", "g"), ("<seg", ">"), ("<", "/"),
              ("</", "s"), ("</s", "e"), ("</se", "g"), ("</seg", ">")]
    tok = byte_level_tokenizer(merges)
    for t in CHAT_TOKENS:
        tok.add_tokens([AddedToken(t, special=True, normalized=False)], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def tiny_config(tokenizer: Any, vocab_size: int | None = None) -> Any:
    """A 2-layer Qwen2-VL (hidden 64, vision depth 2) for the given tokenizer's ids."""
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS}
    text = dict(vocab_size=vocab_size or len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3]),
                tie_word_embeddings=False)
    return Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_image_processor() -> Any:
    """Qwen2-VL's image processor for patch 14: images of 56 to 112 pixels a side."""
    import transformers

    # without torchvision transformers falls back to the PIL backend anyway (with a warning)
    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    f = 28
    return cls(patch_size=14, merge_size=2, temporal_patch_size=2,
                                 size={"shortest_edge": f * f * 4, "longest_edge": f * f * 16})


def load_image(image: Any, where: str) -> Any:
    """An RGB PIL image from a path, a PIL image or an ``(H, W[, C])`` uint8 array."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise ValueError(f"{where}: image file {os.fspath(image)!r} does not exist")
        try:
            image = Image.open(image)
            image.load()
        except OSError as e:
            raise ValueError(f"{where}: cannot read the image {os.fspath(image)!r}: {e}") from None
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"{where}: an image array must be uint8 (H, W) or (H, W, 3), got "
                             f"{image.dtype} {image.shape}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"{where}: an image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")
    if image.mode not in _MODES:
        raise ValueError(f"{where}: image mode {image.mode!r} is not an 8-bit image mode "
                         f"(expected one of {sorted(_MODES)})")
    return image.convert("RGB") if image.mode != "RGB" else image


def encode_pair(tokenizer: Any, image_processor: Any, image: Any, prompt: str, answer: str | None,
                image_token_id: int) -> dict:
    """Token ids (with the image pads expanded), labels (-100 on the prompt) and vision inputs."""
    vis = image_processor(images=[image], return_tensors="pt")
    grid = vis["image_grid_thw"][0]
    merge = getattr(image_processor, "merge_size", 2)
    n_pad = int(grid.prod()) // (merge * merge)
    if prompt.count("<|image_pad|>") != 1:
        raise ValueError("the prompt must hold exactly one image")
    prompt = prompt.replace("<|image_pad|>", "<|image_pad|>" * n_pad)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    labels = [-100] * len(ids)
    if answer is not None:
        a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = ids + a
        labels = labels + a
    mm = [1 if t == image_token_id else 0 for t in ids]
    return {"input_ids": ids, "labels": labels, "mm_token_type_ids": mm,
            "pixel_values": vis["pixel_values"], "image_grid_thw": vis["image_grid_thw"]}


def collate(items: list[dict], pad_id: int, left: bool) -> dict:
    """Pad a batch (left for generation, right for training); vision inputs concatenated."""
    import torch

    n = max(len(it["input_ids"]) for it in items)
    out = {k: [] for k in ("input_ids", "attention_mask", "labels", "mm_token_type_ids")}
    for it in items:
        k = n - len(it["input_ids"])
        pad = (lambda seq, v: [v] * k + seq) if left else (lambda seq, v: seq + [v] * k)
        out["input_ids"].append(pad(it["input_ids"], pad_id))
        out["attention_mask"].append(pad([1] * len(it["input_ids"]), 0))
        out["labels"].append(pad(it["labels"], -100))
        out["mm_token_type_ids"].append(pad(it["mm_token_type_ids"], 0))
    batch = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
    batch["pixel_values"] = torch.cat([it["pixel_values"] for it in items], 0)
    batch["image_grid_thw"] = torch.cat([it["image_grid_thw"] for it in items], 0)
    return batch
