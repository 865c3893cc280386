"""X-SAM-style mask head: a ``<SEG>``-conditioned masked-attention decoder in plain PyTorch.

The head turns an image and an LLM's hidden states into masks the way X-SAM does (see
``MODEL_NOTES.md`` sections 1 and 2 of the project notes):

* a **backbone** gives a feature pyramid (fine to coarse); :class:`TinyConvBackbone` for
  tests, :class:`SamBackbone` around HF ``SamVisionModel`` or :class:`VisionTowerBackbone`
  around the VLM's own vision tower (Qwen2-VL's ``visual``) for real use;
* a small **FPN pixel decoder** (:class:`PixelDecoder`) turns it into per-pixel mask
  features and a multi-scale memory (coarse to fine) for the decoder to attend to;
* the LLM's last-layer hidden states go through ``llm_projector`` (Linear, GELU, Linear).
  The projected ``<SEG>`` state is **added to every learnable query**; each phrase
  ``<p> ... </p>`` becomes one **prototype**: the mean of its projected token states,
  markers included. A learned **latent background** prototype is appended as the last class;
* a **masked-attention decoder** (Mask2Former, post-norm: masked cross-attention, then
  self-attention, then FFN; the memory levels taken in turn) predicts, before its first layer
  and after each layer, class logits ``exp(logit_scale) * cos(query, prototype)`` and mask
  logits (query embedding dot mask features);
* :class:`SetCriterion` matches queries to target masks (Hungarian, cost
  ``2 class + 5 BCE + 5 dice``) and sums cross-entropy (no-object weight 0.1), BCE and dice
  over every prediction;
* :func:`semantic_inference`, :func:`referring_inference` and :func:`panoptic_inference`
  turn predictions into numpy masks, and :func:`masks_to_text` writes those as R-RLE or B-SD.

What X-SAM has and this head leaves out: the SAM ViT-L encoder and its convolutional
connector (any backbone plugs in), the deformable-attention pixel decoder (a plain FPN
here), text cross-attention (off in all of X-SAM's configs), SAM2 video memory and the
region sampler. Classes are per sample (X-SAM shares the phrases of a whole batch in
referring tasks).

Shapes (``B`` images, ``Q`` queries, ``C`` phrases, the most of any sample, ``D`` the decoder
width, ``h x w`` the mask-feature size, a stride of the input):

==================  =========================================================
``images``          ``[B, 3, H, W]`` float
``seg_hidden``      ``[B, llm_dim]``: the LLM's last hidden state at ``<SEG>``
``phrase_hidden``   ``[B, L, llm_dim]`` with ``phrase_ids`` ``[B, L]`` (-1 outside
                    phrases, ``k`` inside the ``k``-th ``<p> ... </p>``, see
                    :func:`span_ids`), or a list of ``B`` lists of ``[L_k, llm_dim]``
``pred_logits``     ``[B, Q, C + 1]``: the last class is the background
``pred_masks``      ``[B, Q, h, w]`` logits
==================  =========================================================

Plugging a real backbone: anything that is an ``nn.Module`` with an ``out_channels`` tuple
(fine to coarse) and whose ``forward(images)`` returns that many ``[B, C_i, H_i, W_i]`` maps
from finest to coarsest. :class:`SamBackbone` adapts HF ``SamVisionModel`` (or any module
that returns channels-last ``hidden_states``) the way X-SAM's connector does: three of its
layers, resampled to strides ``8 / 16 / 32`` of a 1024-pixel input. A VLM vision tower
(Qwen2-VL's ``visual``) reads patches, not images, and returns one flat sequence of patch
states for the whole batch: :class:`VisionTowerBackbone` cuts the images into patches as the
image processor does, puts each image's patch states (before the patch merger) back on its
``(h, w)`` grid, and resamples them to a pyramid as :class:`SamBackbone` does.

Example:
    >>> import torch
    >>> from segtext.model.xsam import SegHead, SegHeadConfig, SetCriterion, referring_inference
    >>> _ = torch.manual_seed(0)
    >>> cfg = SegHeadConfig.tiny()
    >>> head, criterion = SegHead(cfg), SetCriterion(cfg)
    >>> phrases = [[torch.randn(3, cfg.llm_dim)], [torch.randn(4, cfg.llm_dim)]]   # <p> ... </p> states
    >>> out = head(torch.rand(2, 3, 64, 64), torch.randn(2, cfg.llm_dim), phrases)
    >>> out["pred_logits"].shape, out["pred_masks"].shape
    (torch.Size([2, 8, 2]), torch.Size([2, 8, 16, 16]))
    >>> masks = torch.zeros(2, 1, 64, 64); masks[:, :, 8:40, 8:40] = 1
    >>> targets = [{"labels": torch.tensor([0]), "masks": m} for m in masks]
    >>> losses = criterion(out, targets)
    >>> losses["loss"].backward()
    >>> referring_inference(out).shape
    (2, 64, 64)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOGIT_CLAMP",
    "PAD_LOGIT",
    "Backbone",
    "PixelDecoder",
    "SamBackbone",
    "SegHead",
    "SegHeadConfig",
    "SetCriterion",
    "TinyConvBackbone",
    "VisionTowerBackbone",
    "dice_loss",
    "masks_to_text",
    "panoptic_inference",
    "referring_inference",
    "semantic_inference",
    "sigmoid_bce_loss",
    "span_ids",
]

#: logit given to padded (absent) phrase slots: far below any real logit (which is
#: clamped to +-50) and still finite in float16
PAD_LOGIT = -1e4
#: class logits are clamped to +-LOGIT_CLAMP, as X-SAM does
LOGIT_CLAMP = 50.0

_Pairs = list[tuple[torch.Tensor, torch.Tensor]]   # per image: (labels, masks) or (query idx, target idx)
_Targets = Sequence[Mapping[str, Any]]


# ------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SegHeadConfig:
    """Sizes of :class:`SegHead` and the weights of :class:`SetCriterion`.

    Attributes:
        llm_dim: width of the LLM hidden states fed in (X-SAM: 2048 for Qwen3-VL-2B).
        hidden_dim: decoder width ``D`` (X-SAM: 256); a multiple of 4 and of ``num_heads``.
        mask_dim: width of the mask features and mask embeddings (X-SAM: 256).
        num_queries: learnable queries ``Q`` (X-SAM: 200).
        num_layers: decoder layers; there are ``num_layers + 1`` predictions (X-SAM: 9).
        num_heads: attention heads (X-SAM: 8).
        ffn_dim: decoder feed-forward width (X-SAM: 2048).
        num_levels: memory levels the decoder cycles through, the coarsest ones of the
            pyramid (X-SAM: 3).
        backbone_channels: channels of the default :class:`TinyConvBackbone`, fine to coarse.
        dropout: dropout in the decoder (X-SAM: 0).
        logit_scale_init: initial ``logit_scale`` of the cosine classifier (log(1 / 0.07)).
        class_weight, mask_weight, dice_weight: weights of the three loss terms, also used
            in the matching cost (2, 5, 5).
        no_object_weight: cross-entropy weight of the background class (0.1).
        num_points: ``None`` computes mask losses on every pixel (exact, deterministic);
            an int samples that many points per mask, uniformly for matching and by
            uncertainty for the loss (X-SAM: 12544).
        oversample_ratio, importance_sample_ratio: uncertainty sampling: draw
            ``oversample_ratio * num_points`` candidates, keep the most uncertain
            ``importance_sample_ratio`` share, fill up uniformly (3, 0.75).
        aux_loss: add the loss of every intermediate prediction.

    Example:
        >>> from segtext.model.xsam import SegHeadConfig
        >>> SegHeadConfig.tiny().hidden_dim, SegHeadConfig.xsam(2048).num_queries
        (32, 200)
        >>> SegHeadConfig(hidden_dim=30)
        Traceback (most recent call last):
        ...
        ValueError: hidden_dim must be a multiple of 4 and of num_heads (4), got 30
    """

    llm_dim: int = 64
    hidden_dim: int = 32
    mask_dim: int = 32
    num_queries: int = 8
    num_layers: int = 3
    num_heads: int = 4
    ffn_dim: int = 64
    num_levels: int = 3
    backbone_channels: tuple[int, ...] = (16, 32, 64)
    dropout: float = 0.0
    logit_scale_init: float = math.log(1 / 0.07)
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int | None = None
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    aux_loss: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone_channels", tuple(self.backbone_channels))
        for name in ("llm_dim", "hidden_dim", "mask_dim", "num_queries", "num_layers",
                     "num_heads", "ffn_dim", "num_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_dim % 4 or self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim must be a multiple of 4 and of num_heads "
                             f"({self.num_heads}), got {self.hidden_dim}")
        if not self.backbone_channels or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.backbone_channels):
            raise ValueError(f"backbone_channels must be positive ints, got {self.backbone_channels!r}")
        if self.num_points is not None and (isinstance(self.num_points, bool)
                                            or not isinstance(self.num_points, int) or self.num_points < 1):
            raise ValueError(f"num_points must be None or a positive int, got {self.num_points!r}")
        if not self.oversample_ratio >= 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {self.oversample_ratio!r}")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {self.importance_sample_ratio!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("class_weight", "mask_weight", "dice_weight", "no_object_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def tiny(cls, **overrides: Any) -> SegHeadConfig:
        """A CPU-sized head (about 80k parameters with its tiny backbone): ``D = 32``, 8
        queries, 3 layers, 4 heads; keyword arguments override any field.

        Example:
            >>> from segtext.model.xsam import SegHeadConfig
            >>> SegHeadConfig.tiny(num_points=256).num_points
            256
        """
        return replace(cls(), **overrides)

    @classmethod
    def xsam(cls, llm_dim: int, **overrides: Any) -> SegHeadConfig:
        """X-SAM's sizes (``D = 256``, 200 queries, 9 layers, 8 heads, FFN 2048, 12544
        points) for an LLM of width ``llm_dim``; keyword arguments override any field.

        ``backbone_channels`` is set to X-SAM's connector outputs (512, 1024, 2048); a real
        backbone brings its own ``out_channels``.

        Example:
            >>> from segtext.model.xsam import SegHeadConfig
            >>> cfg = SegHeadConfig.xsam(2048)
            >>> cfg.llm_dim, cfg.hidden_dim, cfg.num_layers, cfg.num_points
            (2048, 256, 9, 12544)
        """
        base = cls(llm_dim=llm_dim, hidden_dim=256, mask_dim=256, num_queries=200, num_layers=9,
                   num_heads=8, ffn_dim=2048, num_levels=3, backbone_channels=(512, 1024, 2048),
                   num_points=12544)
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-friendly), the inverse of ``SegHeadConfig(**d)``.

        Example:
            >>> from segtext.model.xsam import SegHeadConfig
            >>> cfg = SegHeadConfig.tiny()
            >>> SegHeadConfig(**cfg.to_dict()) == cfg
            True
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["backbone_channels"] = list(self.backbone_channels)
        return out


# ------------------------------------------------------------------------------------ backbones
@runtime_checkable
class Backbone(Protocol):
    """What :class:`SegHead` needs from a backbone.

    ``out_channels``: the channels of each output map, finest first. ``forward(images)``
    (``images`` ``[B, C, H, W]``) returns that many ``[B, C_i, H_i, W_i]`` tensors, finest
    first, each no larger than the one before.

    Example:
        >>> from segtext.model.xsam import Backbone, TinyConvBackbone
        >>> isinstance(TinyConvBackbone(), Backbone)
        True
    """

    out_channels: tuple[int, ...]

    def __call__(self, images: torch.Tensor) -> Sequence[torch.Tensor]: ...


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32, dividing ``channels``."""
    return math.gcd(32, channels)


def _conv_gn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(_groups(c_out), c_out), nn.ReLU())


class TinyConvBackbone(nn.Module):
    """A few strided 3x3 convolutions giving a feature pyramid at strides 4, 8, 16, ...

    A stem of two stride-2 convolutions reaches stride 4 (the first level); each further
    level halves the size once more. For tests and toy data, not for real images.

    Args:
        out_channels: channels of each level, finest first (one level per entry).
        in_channels: image channels.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import TinyConvBackbone
        >>> feats = TinyConvBackbone((8, 16, 32))(torch.rand(1, 3, 64, 64))
        >>> [tuple(f.shape) for f in feats]
        [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4)]
    """

    def __init__(self, out_channels: Sequence[int] = (16, 32, 64), in_channels: int = 3) -> None:
        super().__init__()
        channels = tuple(out_channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"out_channels must be positive ints, got {out_channels!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.out_channels = channels
        first = channels[0]
        self.stem = nn.Sequential(_conv_gn_relu(in_channels, first, 2), _conv_gn_relu(first, first, 2))
        self.stages = nn.ModuleList(_conv_gn_relu(a, b, 2) for a, b in zip(channels[:-1], channels[1:]))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, in_channels, H, W]`` -> one map per level, finest (stride 4) first."""
        _check_images(images, self.in_channels)
        x = self.stem(images)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class SamBackbone(nn.Module):
    """Adapter: a ViT that returns channels-last hidden states -> a 3-level pyramid.

    Works with HF ``transformers.SamVisionModel`` or ``SamVisionEncoder`` (the vision part of
    the ``sam-vit-*`` checkpoints, e.g. ``SamModel.from_pretrained(path).vision_encoder``) and
    any module whose output has ``hidden_states``, a tuple of ``[B, h, w, C]`` tensors (the
    embeddings, then one per layer: X-SAM's ViT-L layers 12, 18, 24 are ``layers=(12, 18,
    24)``). Like X-SAM's connector it takes three layers'
    states and resamples them by ``scales`` (2, 1, 0.5: strides 8, 16, 32 for a patch-16
    encoder): per level a 1x1 and a 3x3 convolution with GroupNorm, then a 2x2 transposed
    convolution (scale 2), a 1x1 convolution (scale 1) or a 2x2 stride-2 convolution
    (scale 0.5). The connector layers here are this project's own, not X-SAM's weights.

    Args:
        encoder: the vision model, called as ``encoder(pixel_values=images,
            output_hidden_states=True)``.
        hidden_size: width ``C`` of its hidden states.
        layers: which ``hidden_states`` to use, finest level first (X-SAM: 12, 18, 24 of
            ViT-L's 24 layers; the default is the last three).
        scales: resampling per level, each 2, 1 or 0.5, not increasing.
        out_channels: channels of each level (X-SAM: 512, 1024, 2048).
        in_channels: image channels checked on input.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from segtext.model.xsam import SamBackbone
        >>> class FakeVit(torch.nn.Module):            # a patch-8 stand-in for SamVisionModel
        ...     def forward(self, pixel_values, output_hidden_states=True):
        ...         h = pixel_values[:, :1, ::8, ::8].permute(0, 2, 3, 1).expand(-1, -1, -1, 12)
        ...         return SimpleNamespace(hidden_states=(h, h + 1, h + 2, h + 3))
        >>> backbone = SamBackbone(FakeVit(), hidden_size=12, out_channels=(8, 16, 32))
        >>> [tuple(f.shape) for f in backbone(torch.rand(1, 3, 64, 64))]
        [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4)]
    """

    def __init__(self, encoder: nn.Module, hidden_size: int, layers: Sequence[int] = (-3, -2, -1),
                 scales: Sequence[float] = (2, 1, 0.5), out_channels: Sequence[int] = (64, 128, 256),
                 in_channels: int = 3) -> None:
        super().__init__()
        layers, scales, out_channels = _check_pyramid(layers, scales, out_channels)
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.encoder = encoder
        self.layers = layers
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.connectors = nn.ModuleList(_connector(hidden_size, c_out, scale)
                                        for scale, c_out in zip(scales, out_channels))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` -> one map per entry of ``layers``, finest first."""
        _check_images(images, self.in_channels)
        hidden = getattr(self.encoder(pixel_values=images, output_hidden_states=True), "hidden_states", None)
        if hidden is None:
            raise TypeError("the encoder's output has no hidden_states (it must accept output_hidden_states=True)")
        try:
            picked = [hidden[i] for i in self.layers]
        except IndexError:
            raise ValueError(f"layers {self.layers} out of range for {len(hidden)} hidden states") from None
        return [conn(h.permute(0, 3, 1, 2).contiguous()) for conn, h in zip(self.connectors, picked)]


def _check_pyramid(layers: Sequence[int], scales: Sequence[float],
                   out_channels: Sequence[int]) -> tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...]]:
    """The checked ``layers``, ``scales`` and ``out_channels`` of a ViT adapter."""
    layers, scales, out_channels = tuple(layers), tuple(scales), tuple(out_channels)
    if not len(layers) == len(scales) == len(out_channels) or not layers:
        raise ValueError(f"layers, scales and out_channels must have the same non-zero length, got "
                         f"{len(layers)}, {len(scales)} and {len(out_channels)}")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"layers must be ints, got {layers!r}")
    if any(s not in (2, 1, 0.5) for s in scales) or list(scales) != sorted(scales, reverse=True):
        raise ValueError(f"scales must be 2, 1 or 0.5 and not increasing, got {scales!r}")
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in out_channels):
        raise ValueError(f"out_channels must be positive ints, got {out_channels!r}")
    return layers, scales, out_channels


def _connector(c_in: int, c_out: int, scale: float) -> nn.Sequential:
    """X-SAM-style connector of one level: 1x1 and 3x3 convolutions with GroupNorm, then a 2x2
    transposed convolution (scale 2), a 1x1 convolution (1) or a 2x2 stride-2 convolution (0.5)."""
    if scale == 2:
        resample: nn.Module = nn.ConvTranspose2d(c_out, c_out, 2, stride=2)
    elif scale == 1:
        resample = nn.Conv2d(c_out, c_out, 1)
    else:
        resample = nn.Conv2d(c_out, c_out, 2, stride=2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.GroupNorm(_groups(c_out), c_out),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out),
        resample)


#: OpenAI CLIP's normalisation, which Qwen2-VL / Qwen2.5-VL's image processors use
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionTowerBackbone(nn.Module):
    """Adapter: a Qwen-VL vision tower (the VLM's ``visual``) -> a feature pyramid.

    The tower of ``Qwen2VLForConditionalGeneration`` (``model.model.visual``; Qwen2.5-VL's
    and Qwen3-VL's work the same way) reads images cut into patches: ``patch_size`` pixels a
    side, ``temporal_patch_size`` frames (an image is repeated), the patches of each
    ``spatial_merge_size x spatial_merge_size`` window consecutive, one ``grid_thw = (1, h,
    w)`` row per image. This adapter does that cutting itself, on the tensor the head gets:

    1. ``images`` ``[B, 3, H, W]`` in ``[-1, 1]`` (what :class:`~segtext.model.XSamSegmenter`
       feeds the head) are resized (bilinear) to the nearest multiple of ``patch_size *
       spatial_merge_size`` a side (at least one), mapped to ``[0, 1]`` and normalised with
       ``image_mean`` / ``image_std`` (the image processor's), then cut into patches exactly
       as Qwen2-VL's image processor does;
    2. the tower runs with ``output_hidden_states=True``: ``hidden_states[0]`` is the patch
       embeddings, ``hidden_states[k]`` the output of block ``k``, each ``[N, width]`` over the
       patches of all images, **before** the patch merger (stride ``patch_size``, not the
       merged LLM tokens at twice that stride). Qwen2.5-VL's window attention reorders the
       patches inside the tower; that order is undone;
    3. each chosen state is put back on its ``(h, w)`` patch grid and resampled by its
       connector (as :class:`SamBackbone`: scales 2, 1, 0.5 give strides ``p / 2``, ``p``,
       ``2p``; 7, 14 and 28 pixels for Qwen2-VL's patch 14).

    The tower runs under ``torch.no_grad()`` when none of its parameters requires a gradient
    (X-SAM keeps it frozen; so does :class:`~segtext.model.XSamSegmenter`, whose LoRA leaves
    the vision tower alone): then only the connectors learn.

    Args:
        visual: the vision tower: a module with a ``config`` (``patch_size``,
            ``spatial_merge_size``, ``temporal_patch_size``, ``in_channels``), a ``blocks``
            list, and ``forward(pixel_values, grid_thw=..., output_hidden_states=True)``
            returning ``hidden_states``.
        layers: which ``hidden_states`` to use, finest level first (default the last three).
        scales: resampling per level, each 2, 1 or 0.5, not increasing.
        out_channels: channels of each level.
        image_mean, image_std: the normalisation of the tower's image processor (default
            OpenAI CLIP's, Qwen2-VL's and Qwen2.5-VL's).
        shared: keep the tower out of this module's children, so that it is not in
            ``parameters()``, ``state_dict()`` or moved by ``.to()``: for a tower that belongs
            to a VLM saved and moved on its own (:class:`~segtext.model.XSamSegmenter` with
            ``backbone="vision_tower"``).

    Attributes:
        patch_size, merge_size, temporal_patch_size: read from the tower's config.
        width: the width of the tower's hidden states.

    Example:
        >>> import torch
        >>> from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
        >>> from segtext.model.xsam import VisionTowerBackbone
        >>> _ = torch.manual_seed(0)
        >>> vlm = Qwen2VLForConditionalGeneration(Qwen2VLConfig(
        ...     text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                      num_attention_heads=2, num_key_value_heads=1, rope_parameters=dict(
        ...                          rope_type="default", mrope_section=[2, 3, 3])),
        ...     vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14)))
        >>> backbone = VisionTowerBackbone(vlm.model.visual, out_channels=(8, 16, 32))
        >>> [tuple(f.shape) for f in backbone(torch.rand(1, 3, 112, 84) * 2 - 1)]
        [(1, 8, 16, 12), (1, 16, 8, 6), (1, 32, 4, 3)]
    """

    def __init__(self, visual: nn.Module, layers: Sequence[int] = (-3, -2, -1),
                 scales: Sequence[float] = (2, 1, 0.5), out_channels: Sequence[int] = (64, 128, 256),
                 image_mean: Sequence[float] = CLIP_MEAN, image_std: Sequence[float] = CLIP_STD,
                 shared: bool = False) -> None:
        super().__init__()
        if not isinstance(visual, nn.Module):
            raise TypeError(f"visual must be a vision tower module (e.g. model.model.visual), "
                            f"got {type(visual).__name__}")
        cfg = getattr(visual, "config", None)
        missing = [k for k in ("patch_size", "spatial_merge_size", "temporal_patch_size")
                   if not isinstance(getattr(cfg, k, None), int)]
        blocks = getattr(visual, "blocks", None)
        if missing or not isinstance(blocks, nn.ModuleList) or not len(blocks):
            raise TypeError(f"visual must be a Qwen-VL vision tower (a config with patch_size, spatial_merge_size "
                            f"and temporal_patch_size, and a blocks list), got {type(visual).__name__}")
        layers, scales, out_channels = _check_pyramid(layers, scales, out_channels)
        n_states = len(blocks) + 1
        if any(not -n_states <= i < n_states for i in layers):
            raise ValueError(f"layers {layers} out of range for the tower's {n_states} hidden states "
                             f"(the patch embeddings and {len(blocks)} blocks)")
        mean, std = tuple(float(v) for v in image_mean), tuple(float(v) for v in image_std)
        self.in_channels = int(getattr(cfg, "in_channels", 3))
        if len(mean) != self.in_channels or len(std) != self.in_channels or min(std) <= 0:
            raise ValueError(f"image_mean and image_std must have {self.in_channels} values (std > 0), "
                             f"got {mean} and {std}")
        # Qwen2-VL: embed_dim is the blocks' width, hidden_size the merger's output;
        # Qwen2.5-VL / Qwen3-VL: hidden_size is the blocks' width, out_hidden_size the merger's
        width = getattr(cfg, "embed_dim", None) if not hasattr(cfg, "out_hidden_size") else cfg.hidden_size
        if not isinstance(width, int):
            raise TypeError("cannot read the width of the tower's blocks from its config (embed_dim or hidden_size)")
        self.width = width
        self.patch_size = cfg.patch_size
        self.merge_size = cfg.spatial_merge_size
        self.temporal_patch_size = cfg.temporal_patch_size
        self.layers = layers
        self.scales = scales
        self.out_channels = out_channels
        self.image_mean, self.image_std = mean, std
        self.shared = bool(shared)
        if self.shared:
            self._tower = (visual,)          # a tuple: not registered as a child module
        else:
            self.visual = visual
        self.connectors = nn.ModuleList(_connector(width, c, s) for s, c in zip(scales, out_channels))
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def tower(self) -> nn.Module:
        """The wrapped vision tower."""
        return self._tower[0] if self.shared else self.visual

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments but ``visual`` (JSON-ready), to rebuild it around a tower.

        Example:
            >>> import torch
            >>> from segtext.model.xsam import VisionTowerBackbone
            >>> class Tower(torch.nn.Module):                     # only what the constructor reads
            ...     config = type("Cfg", (), dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            ...                                   in_channels=3, embed_dim=8))()
            ...     blocks = torch.nn.ModuleList([torch.nn.Identity()])
            >>> VisionTowerBackbone(Tower(), layers=(0, 1), scales=(1, 0.5), out_channels=(8, 8)).settings()["layers"]
            [0, 1]
        """
        return {"layers": list(self.layers), "scales": list(self.scales), "out_channels": list(self.out_channels),
                "image_mean": list(self.image_mean), "image_std": list(self.image_std)}

    def patchify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> (``pixel_values`` ``[B * h * w, C * T * p * p]``,
        ``grid_thw`` ``[B, 3]``), as Qwen2-VL's image processor cuts an image (after the resize
        and normalisation described in the class docstring)."""
        _check_images(images, self.in_channels)
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        unit = p * m
        b, c, h, w = images.shape
        nh, nw = max(1, round(h / unit)) * unit, max(1, round(w / unit)) * unit
        x = images.float()
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self._mean) / self._std
        gh, gw = nh // p, nw // p
        x = x[:, None].expand(b, t, c, nh, nw)                                    # the image as T frames
        x = x.reshape(b, t, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)                                  # windows, then C, T, p, p
        pixel_values = x.reshape(b * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=images.device)
        return pixel_values, grid

    def _original_order(self, grid: torch.Tensor) -> torch.Tensor | None:
        """For a window-attention tower (Qwen2.5-VL): the index that puts its hidden states back
        in the patch order; ``None`` for the others."""
        tower = self.tower
        if not hasattr(tower, "fullatt_block_indexes"):
            return None
        try:
            from transformers.vision_utils import get_vision_window_index
        except ImportError:  # pragma: no cover - another transformers layout
            raise NotImplementedError("this transformers has no vision_utils.get_vision_window_index: "
                                      "cannot undo the window order of this tower") from None
        window_index, _ = get_vision_window_index(grid, spatial_merge_size=self.merge_size,
                                                  window_size=tower.window_size, patch_size=self.patch_size)
        return torch.argsort(window_index.to(grid.device))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> one map per entry of ``layers``, finest first."""
        tower = self.tower
        pixel_values, grid = self.patchify(images)
        ref = next(tower.parameters())
        pixel_values = pixel_values.to(device=ref.device, dtype=ref.dtype)
        frozen = not any(q.requires_grad for q in tower.parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            out = tower(pixel_values, grid_thw=grid.to(ref.device), output_hidden_states=True)
        hidden = getattr(out, "hidden_states", None)
        if hidden is None:
            raise TypeError("the vision tower's output has no hidden_states")
        b = images.shape[0]
        gh, gw = int(grid[0, 1]), int(grid[0, 2])
        m, unit = self.merge_size, self.merge_size ** 2
        reverse = self._original_order(grid)
        feats = []
        for conn, i in zip(self.connectors, self.layers):
            h = hidden[i]
            if reverse is not None:                  # window order -> patch order, per merge window
                h = h.reshape(-1, unit, h.shape[-1])[reverse].reshape(h.shape)
            h = h.reshape(b, gh // m, gw // m, m, m, -1).permute(0, 5, 1, 3, 2, 4).reshape(b, -1, gh, gw)
            feats.append(conn(h.to(conn[0].weight.dtype)))
        return feats


# -------------------------------------------------------------------------------- pixel decoder
class PixelDecoder(nn.Module):
    """A top-down FPN: mask features from the finest level and a coarse-to-fine memory.

    Each level gets a 1x1 lateral convolution with GroupNorm; from the coarsest level down,
    the upsampled previous output is added and a 3x3 convolution with GroupNorm and ReLU
    follows. The finest output, projected by a 1x1 convolution, gives the mask features.

    Args:
        in_channels: channels of the backbone levels, finest first.
        hidden_dim: width of every output level.
        mask_dim: channels of the mask features.
        num_levels: how many of the coarsest outputs form the memory.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import PixelDecoder
        >>> dec = PixelDecoder((8, 16, 32), hidden_dim=16, mask_dim=12, num_levels=3)
        >>> feats = [torch.rand(1, 8, 16, 16), torch.rand(1, 16, 8, 8), torch.rand(1, 32, 4, 4)]
        >>> memory, mask_features = dec(feats)
        >>> [tuple(m.shape[-2:]) for m in memory], tuple(mask_features.shape)
        ([(4, 4), (8, 8), (16, 16)], (1, 12, 16, 16))
    """

    def __init__(self, in_channels: Sequence[int], hidden_dim: int, mask_dim: int, num_levels: int) -> None:
        super().__init__()
        in_channels = tuple(in_channels)
        if not 1 <= num_levels <= len(in_channels):
            raise ValueError(f"num_levels ({num_levels}) must be between 1 and the number of backbone "
                             f"levels ({len(in_channels)})")
        self.in_channels = in_channels
        self.num_levels = num_levels
        g = _groups(hidden_dim)
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(c, hidden_dim, 1), nn.GroupNorm(g, hidden_dim))
                                     for c in in_channels)
        self.output = nn.ModuleList(_conv_gn_relu(hidden_dim, hidden_dim, 1) for _ in in_channels)
        self.mask_projection = nn.Conv2d(hidden_dim, mask_dim, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone maps (finest first) -> (memory levels coarse to fine, mask features)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        for i, (f, c) in enumerate(zip(feats, self.in_channels)):
            if not isinstance(f, torch.Tensor) or f.dim() != 4 or f.shape[1] != c:
                got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"feature map {i} must be [B, {c}, H, W], got {got}")
        outs: list[torch.Tensor] = []
        prev: torch.Tensor | None = None
        for i in reversed(range(len(feats))):
            cur = self.lateral[i](feats[i])
            if prev is not None:
                cur = cur + F.interpolate(prev, size=cur.shape[-2:], mode="bilinear", align_corners=False)
            prev = self.output[i](cur)
            outs.append(prev)
        return outs[: self.num_levels], self.mask_projection(outs[-1])


# --------------------------------------------------------------------------------- the decoder
def _sine_position(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype,
                   temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine embedding of an ``h x w`` grid, as ``[h * w, dim]``.

    Half the channels encode the row, half the column; within each half, channel ``k`` is
    ``sin`` (even ``k``) or ``cos`` (odd ``k``) of ``pos / temperature ** (2 (k // 2) / half)``
    with ``pos`` the cell centre scaled to ``(0, 2 pi)``.
    """
    half = dim // 2
    k = torch.arange(half, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    even = (torch.arange(half, device=device) % 2 == 0)

    def encode(n: int) -> torch.Tensor:
        pos = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * (2 * math.pi)
        arg = pos[:, None] / freq
        return torch.where(even, arg.sin(), arg.cos())

    rows, cols = encode(h), encode(w)
    grid = torch.cat([rows[:, None].expand(h, w, half), cols[None].expand(h, w, half)], dim=-1)
    return grid.reshape(h * w, dim).to(dtype)


class _MLP(nn.Sequential):
    """``layers`` linear layers with ReLU between them."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, layers: int) -> None:
        dims = [d_in] + [d_hidden] * (layers - 1) + [d_out]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(nn.Linear(a, b))
            if i < layers - 1:
                mods.append(nn.ReLU())
        super().__init__(*mods)


class _DecoderLayer(nn.Module):
    """Masked cross-attention, self-attention, FFN; each a residual followed by LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        # x, query_pos [B, Q, D]; memory [B, HW, D]; memory_pos [HW, D]; attn_mask [B*heads, Q, HW], True = blocked
        h = self.cross_attn(x + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False)[0]
        x = self.norms[0](x + self.drop(h))
        q = x + query_pos
        x = self.norms[1](x + self.drop(self.self_attn(q, q, x, need_weights=False)[0]))
        return self.norms[2](x + self.drop(self.ffn(x)))


def span_ids(input_ids: torch.Tensor, open_id: int, close_id: int) -> torch.Tensor:
    """Label each token with the index of the ``<p> ... </p>`` span it is in, markers included.

    Args:
        input_ids: ``[B, L]`` token ids.
        open_id, close_id: the ids of ``<p>`` and ``</p>``.

    Returns:
        ``[B, L]`` long: ``k`` for the tokens of the ``k``-th span of that row (its ``<p>``
        and ``</p>`` too), -1 elsewhere.

    Raises:
        ValueError: spans that nest, a ``</p>`` without ``<p>`` or an unclosed ``<p>``
            (naming the row), or ``input_ids`` not 2-D.
        TypeError: ``input_ids`` not an integer tensor.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import span_ids
        >>> span_ids(torch.tensor([[5, 1, 7, 2, 9, 1, 8, 8, 2]]), open_id=1, close_id=2).tolist()
        [[-1, 0, 0, 0, -1, 1, 1, 1, 1]]
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
        raise TypeError(f"input_ids must be an integer tensor, got {type(input_ids).__name__}"
                        + (f" of {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else ""))
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    is_close = (input_ids == close_id).long()
    opens = (input_ids == open_id).long().cumsum(1)
    closes = is_close.cumsum(1)
    depth = opens - closes                      # open spans after each token
    bad_rows = ((depth < 0) | (depth > 1)).any(1)
    if input_ids.shape[1]:
        bad_rows |= depth[:, -1] != 0
    if bad_rows.any():
        row = int(bad_rows.nonzero()[0, 0])
        raise ValueError(f"row {row} of input_ids has unbalanced or nested <p> ... </p> spans")
    closes_before = closes - is_close
    inside = opens > closes_before
    return torch.where(inside, opens - 1, torch.full_like(opens, -1))


class SegHead(nn.Module):
    """X-SAM's mask head: ``<SEG>``-conditioned queries, phrase prototypes, masked attention.

    Args:
        config: sizes (:class:`SegHeadConfig`).
        backbone: a :class:`Backbone`; ``None`` builds a :class:`TinyConvBackbone` with
            ``config.backbone_channels``. Its parameters are part of the head (freeze them
            with ``head.backbone.requires_grad_(False)`` if wanted).

    Attributes:
        llm_projector: ``Linear(llm_dim, D), GELU, Linear(D, D)``, applied to every hidden state.
        background: ``Embedding(1, D)``, the latent background prototype (last class).
        logit_scale: the classifier's learned log-temperature.

    ``forward(images, seg_hidden, phrase_hidden, phrase_ids=None)`` returns a dict:
    ``pred_logits`` ``[B, Q, C + 1]`` and ``pred_masks`` ``[B, Q, h, w]`` of the last
    prediction; ``aux_outputs``, the ``num_layers`` earlier predictions (before the first layer,
    then after each layer but the last) as dicts of the same two keys; ``class_mask``
    ``[B, C + 1]`` bool (which classes are real: padded phrase slots are False, the
    background True); ``image_size``, the ``(H, W)`` of ``images``. Padded slots get the
    logit :data:`PAD_LOGIT`.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import SegHead, SegHeadConfig
        >>> cfg = SegHeadConfig.tiny(llm_dim=16)
        >>> head = SegHead(cfg)
        >>> hidden = torch.randn(2, 10, 16)                 # LLM last hidden states
        >>> ids = torch.tensor([[-1, 0, 0, 0, -1, 1, 1, 1, -1, -1], [-1, -1, 0, 0, 0, -1, -1, -1, -1, -1]])
        >>> out = head(torch.rand(2, 3, 32, 32), hidden[:, -1], hidden, ids)
        >>> out["pred_logits"].shape, out["class_mask"].tolist()
        (torch.Size([2, 8, 3]), [[True, True, True], [True, False, True]])
        >>> len(out["aux_outputs"]), out["pred_masks"].shape
        (3, torch.Size([2, 8, 8, 8]))
        >>> head(torch.rand(2, 3, 32, 32), torch.randn(2, 15), hidden, ids)
        Traceback (most recent call last):
        ...
        ValueError: seg_hidden must be [B, llm_dim] = [2, 16], got (2, 15)
    """

    def __init__(self, config: SegHeadConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, SegHeadConfig):
            raise TypeError(f"config must be a SegHeadConfig, got {type(config).__name__}")
        if backbone is None:
            backbone = TinyConvBackbone(config.backbone_channels)
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(channels, (tuple, list)) or not channels:
            raise TypeError("backbone must have an out_channels tuple (channels of its maps, finest first)")
        self.config = config
        d = config.hidden_dim
        self.backbone = backbone
        self.pixel_decoder = PixelDecoder(tuple(channels), d, config.mask_dim, config.num_levels)
        self.llm_projector = nn.Sequential(nn.Linear(config.llm_dim, d), nn.GELU(), nn.Linear(d, d))
        self.background = nn.Embedding(1, d)
        self.query_feat = nn.Embedding(config.num_queries, d)
        self.query_pos = nn.Embedding(config.num_queries, d)
        self.level_embed = nn.Embedding(config.num_levels, d)
        self.layers = nn.ModuleList(_DecoderLayer(d, config.num_heads, config.ffn_dim, config.dropout)
                                    for _ in range(config.num_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.mask_embed = _MLP(d, d, config.mask_dim, 3)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # ------------------------------------------------------------------ conditioning vectors
    def prototypes(self, phrase_hidden: Any, phrase_ids: torch.Tensor | None = None,
                   batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Phrase prototypes: the mean of the projected hidden states of each phrase span.

        Args:
            phrase_hidden: ``[B, L, llm_dim]`` with ``phrase_ids`` ``[B, L]`` (see
                :func:`span_ids`), or (``phrase_ids=None``) a sequence of ``B`` sequences of
                ``[L_k, llm_dim]`` tensors, the tokens of each span.
            phrase_ids: as above.
            batch_size: the expected ``B``, checked when given.

        Returns:
            ``([B, C, D] prototypes, [B, C] bool valid)``, ``C`` the most phrases of any
            sample; absent slots are zero and False.

        Example:
            >>> import torch
            >>> from segtext.model.xsam import SegHead, SegHeadConfig
            >>> head = SegHead(SegHeadConfig.tiny(llm_dim=4))
            >>> tokens = torch.randn(3, 4)
            >>> protos, valid = head.prototypes([[tokens], []])
            >>> protos.shape, valid.tolist()
            (torch.Size([2, 1, 32]), [[True], [False]])
            >>> torch.allclose(protos[0, 0], head.llm_projector(tokens).mean(0))
            True
        """
        llm_dim = self.config.llm_dim
        if phrase_ids is not None:
            if not isinstance(phrase_hidden, torch.Tensor) or phrase_hidden.dim() != 3 \
                    or phrase_hidden.shape[-1] != llm_dim:
                got = tuple(phrase_hidden.shape) if isinstance(phrase_hidden, torch.Tensor) \
                    else type(phrase_hidden).__name__
                raise ValueError(f"with phrase_ids, phrase_hidden must be [B, L, llm_dim={llm_dim}], got {got}")
            _check_float("phrase_hidden", phrase_hidden)
            if not isinstance(phrase_ids, torch.Tensor) or phrase_ids.is_floating_point():
                raise TypeError(f"phrase_ids must be an integer tensor, got {type(phrase_ids).__name__}")
            if tuple(phrase_ids.shape) != tuple(phrase_hidden.shape[:2]):
                raise ValueError(f"phrase_ids must be [B, L] = {list(phrase_hidden.shape[:2])}, "
                                 f"got {tuple(phrase_ids.shape)}")
            if batch_size is not None and phrase_hidden.shape[0] != batch_size:
                raise ValueError(f"phrase_hidden has {phrase_hidden.shape[0]} samples, images have {batch_size}")
            if (phrase_ids < -1).any():
                raise ValueError("phrase_ids must be -1 (no phrase) or a phrase index >= 0")
            num = int(phrase_ids.max()) + 1 if phrase_ids.numel() else 0
            num = max(num, 0)
            projected = self.llm_projector(phrase_hidden.to(self.background.weight))
            ids = phrase_ids.to(projected.device)
            onehot = (ids[..., None] == torch.arange(num, device=ids.device)).to(projected.dtype)
            counts = onehot.sum(1)                                               # [B, C]
            protos = torch.einsum("blc,bld->bcd", onehot, projected) / counts.clamp(min=1)[..., None]
            return protos, counts > 0
        if isinstance(phrase_hidden, torch.Tensor) or not isinstance(phrase_hidden, Sequence):
            raise TypeError("phrase_hidden must be a [B, L, llm_dim] tensor with phrase_ids, or a list of B lists "
                            f"of [L_k, llm_dim] tensors; got {type(phrase_hidden).__name__} without phrase_ids")
        if batch_size is not None and len(phrase_hidden) != batch_size:
            raise ValueError(f"phrase_hidden has {len(phrase_hidden)} samples, images have {batch_size}")
        d = self.config.hidden_dim
        num = 0
        for b, spans in enumerate(phrase_hidden):
            if isinstance(spans, torch.Tensor) or not isinstance(spans, Sequence):
                raise TypeError(f"phrase_hidden[{b}] must be a list of [L_k, llm_dim] tensors, "
                                f"got {type(spans).__name__}")
            for k, span in enumerate(spans):
                if not isinstance(span, torch.Tensor) or span.dim() != 2 or span.shape[0] < 1 \
                        or span.shape[1] != llm_dim:
                    got = tuple(span.shape) if isinstance(span, torch.Tensor) else type(span).__name__
                    raise ValueError(f"phrase_hidden[{b}][{k}] must be [L_k >= 1, llm_dim={llm_dim}], got {got}")
                _check_float(f"phrase_hidden[{b}][{k}]", span)
            num = max(num, len(spans))
        ref = self.background.weight
        rows = []
        for spans in phrase_hidden:
            means = [self.llm_projector(span.to(ref)).mean(0) for span in spans]
            means += [ref.new_zeros(d)] * (num - len(means))
            rows.append(torch.stack(means) if means else ref.new_zeros(0, d))
        protos = torch.stack(rows) if rows else ref.new_zeros(0, num, d)
        valid = torch.tensor([[k < len(spans) for k in range(num)] for spans in phrase_hidden],
                             dtype=torch.bool, device=ref.device).reshape(len(phrase_hidden), num)
        return protos, valid

    def classify(self, queries: torch.Tensor, prototypes: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """Class logits ``exp(logit_scale) * cos(query, prototype)``, clamped to +-50.

        ``queries`` ``[B, Q, D]``, ``prototypes`` ``[B, K, D]``, ``class_mask`` ``[B, K]`` bool:
        absent classes get :data:`PAD_LOGIT`.

        Example:
            >>> import torch
            >>> from segtext.model.xsam import SegHead, SegHeadConfig
            >>> head = SegHead(SegHeadConfig.tiny())
            >>> q = torch.randn(1, 2, 32)
            >>> logits = head.classify(q, torch.cat([q, -q], 1), torch.tensor([[True, True, True, False]]))
            >>> [round(v, 2) for v in logits[0, 0].tolist()]
            [14.29, ..., -14.29, -10000.0]
        """
        cos = torch.einsum("bqd,bkd->bqk", F.normalize(queries, dim=-1), F.normalize(prototypes, dim=-1))
        logits = (self.logit_scale.exp() * cos).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        return logits.masked_fill(~class_mask[:, None, :], PAD_LOGIT)

    # ---------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, seg_hidden: torch.Tensor, phrase_hidden: Any,
                phrase_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """Predict class and mask logits; see the class docstring for shapes and outputs."""
        _check_images(images, None)
        b = images.shape[0]
        if not isinstance(seg_hidden, torch.Tensor):
            raise TypeError(f"seg_hidden must be a tensor, got {type(seg_hidden).__name__}")
        if tuple(seg_hidden.shape) != (b, self.config.llm_dim):
            raise ValueError(f"seg_hidden must be [B, llm_dim] = [{b}, {self.config.llm_dim}], "
                             f"got {tuple(seg_hidden.shape)}")
        _check_float("seg_hidden", seg_hidden)
        protos, valid = self.prototypes(phrase_hidden, phrase_ids, batch_size=b)
        feats = self.backbone(images)
        memory, mask_features = self.pixel_decoder(feats)
        prototypes = torch.cat([protos, self.background.weight[None].expand(b, -1, -1)], dim=1)
        class_mask = torch.cat([valid, valid.new_ones(b, 1)], dim=1)

        mem, mem_pos, sizes = [], [], []
        for i, level in enumerate(memory):
            h, w = level.shape[-2:]
            sizes.append((h, w))
            mem.append(level.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            mem_pos.append(_sine_position(h, w, self.config.hidden_dim, level.device, level.dtype))
        query_pos = self.query_pos.weight[None].expand(b, -1, -1)
        seg = self.llm_projector(seg_hidden.to(self.query_feat.weight))
        x = self.query_feat.weight[None] + seg[:, None]                              # <SEG> into every query

        preds = []
        logits, masks, attn_mask = self._predict(x, mask_features, prototypes, class_mask, sizes[0])
        preds.append({"pred_logits": logits, "pred_masks": masks})
        for i, layer in enumerate(self.layers):
            level = i % len(mem)
            x = layer(x, query_pos, mem[level], mem_pos[level], attn_mask)
            logits, masks, attn_mask = self._predict(x, mask_features, prototypes, class_mask,
                                                     sizes[(i + 1) % len(mem)])
            preds.append({"pred_logits": logits, "pred_masks": masks})
        return {**preds[-1], "aux_outputs": preds[:-1], "class_mask": class_mask,
                "image_size": tuple(images.shape[-2:])}

    def _predict(self, x: torch.Tensor, mask_features: torch.Tensor, prototypes: torch.Tensor,
                 class_mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prediction: class logits, mask logits and the next layer's attention mask."""
        q = self.decoder_norm(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(q), mask_features)
        logits = self.classify(q, prototypes, class_mask)
        with torch.no_grad():
            small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            blocked = small.flatten(2).sigmoid() < 0.5                        # [B, Q, hw]
            blocked &= ~blocked.all(-1, keepdim=True)                          # nowhere to look: look everywhere
            attn_mask = blocked.repeat_interleave(self.config.num_heads, dim=0)
        return logits, masks, attn_mask


# -------------------------------------------------------------------------------------- losses
def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of mask logits, the mean over the last axis: ``[..., P] -> [...]``.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import sigmoid_bce_loss
        >>> round(sigmoid_bce_loss(torch.zeros(1, 4), torch.ones(1, 4)).item(), 4)   # log 2
        0.6931
    """
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` with ``p = sigmoid(logits)``,
    over the last axis: ``[..., P] -> [...]``.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import dice_loss
        >>> dice_loss(torch.tensor([[-100.0, 100.0]]), torch.tensor([[0.0, 1.0]])).tolist()
        [0.0]
    """
    p = logits.sigmoid()
    t = targets.to(p.dtype)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def _pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[Q, P]`` logits, ``[T, P]`` targets -> ``[Q, T]`` mean BCE of every pair."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def _pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[Q, P]`` logits, ``[T, P]`` targets -> ``[Q, T]`` dice loss of every pair."""
    p = logits.sigmoid()
    return 1 - (2 * p @ targets.T + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None] + 1)


def _point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``[N, H, W]`` maps at ``[N, P, 2]`` ``(x, y)`` points in ``[0, 1]``: ``[N, P]``."""
    grid = 2 * coords[:, :, None] - 1
    return F.grid_sample(maps[:, None], grid, mode="bilinear", align_corners=False)[:, 0, :, 0]


def _upsample(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, h, w]`` logits -> ``[N, H, W]`` (bilinear)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class SetCriterion(nn.Module):
    """Hungarian matching and the class, BCE and dice losses of :class:`SegHead`'s predictions.

    For each image, query ``q`` and target ``t`` cost ``class_weight * -softmax(logits)[q,
    label_t] + mask_weight * BCE(q, t) + dice_weight * dice(q, t)`` (on every pixel of the
    target's size, or on ``num_points`` uniform points shared by all pairs); scipy's
    ``linear_sum_assignment`` picks the cheapest one-to-one assignment. Unmatched queries
    target the background class (the last one). Losses, for each prediction: cross-entropy
    over the classes with the background weighted ``no_object_weight`` (a weighted mean over
    queries); BCE and dice of the matched masks (on every pixel, with the prediction upsampled
    bilinearly to the target, or on ``num_points`` points chosen by uncertainty), summed and
    divided by the number of target masks in the batch (at least 1).

    ``forward(outputs, targets)``: ``outputs`` from :meth:`SegHead.forward`; ``targets`` a
    sequence of ``B`` mappings with ``labels`` (``[T]`` int, indices of that sample's phrases)
    and ``masks`` (``[T, H, W]``, bool or 0/1). Returns a dict: ``loss`` (the weighted total),
    ``loss_ce``, ``loss_mask``, ``loss_dice`` of the last prediction and ``loss_ce_{i}`` ... of
    the ``i``-th auxiliary one (unweighted).

    Example:
        >>> import torch
        >>> from segtext.model.xsam import SetCriterion, SegHeadConfig
        >>> crit = SetCriterion(SegHeadConfig.tiny(aux_loss=False))
        >>> out = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 4, 4),
        ...        "class_mask": torch.ones(1, 2, dtype=torch.bool)}
        >>> target = {"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}
        >>> sorted(crit(out, [target]))
        ['loss', 'loss_ce', 'loss_dice', 'loss_mask']
        >>> crit(out, [{"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4)}])
        Traceback (most recent call last):
        ...
        ValueError: targets[0]['labels'] must be indices of that sample's phrases [0], got [1]
    """

    def __init__(self, config: SegHeadConfig) -> None:
        super().__init__()
        if not isinstance(config, SegHeadConfig):
            raise TypeError(f"config must be a SegHeadConfig, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------------ validation
    def _check(self, outputs: Mapping[str, Any], targets: _Targets) -> _Pairs:
        if not isinstance(outputs, Mapping) or "pred_logits" not in outputs or "pred_masks" not in outputs:
            raise TypeError("outputs must be SegHead's dict (with pred_logits and pred_masks)")
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if logits.dim() != 3 or masks.dim() != 4 or logits.shape[:2] != masks.shape[:2]:
            raise ValueError(f"pred_logits must be [B, Q, C + 1] and pred_masks [B, Q, h, w], got "
                             f"{tuple(logits.shape)} and {tuple(masks.shape)}")
        b, q, k = logits.shape
        class_mask = outputs.get("class_mask")
        if class_mask is None:
            class_mask = torch.ones(b, k, dtype=torch.bool, device=logits.device)
        if isinstance(targets, Mapping) or not isinstance(targets, Sequence) or len(targets) != b:
            raise TypeError(f"targets must be a sequence of {b} dicts (one per image) with 'labels' and 'masks'")
        checked = []
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping) or "labels" not in t or "masks" not in t:
                raise TypeError(f"targets[{i}] must be a dict with 'labels' and 'masks'")
            labels, tmasks = t["labels"], t["masks"]
            if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 1:
                raise TypeError(f"targets[{i}]['labels'] must be a 1-D integer tensor")
            if not isinstance(tmasks, torch.Tensor) or tmasks.dim() != 3 or tmasks.shape[0] != labels.shape[0]:
                got = tuple(tmasks.shape) if isinstance(tmasks, torch.Tensor) else type(tmasks).__name__
                raise ValueError(f"targets[{i}]['masks'] must be [T={labels.shape[0]}, H, W], got {got}")
            if tmasks.numel() and tmasks.dtype != torch.bool and not ((tmasks == 0) | (tmasks == 1)).all():
                raise ValueError(f"targets[{i}]['masks'] must be binary (bool or 0/1)")
            if labels.numel() and (labels.min() < 0 or labels.max() >= k - 1
                                   or not class_mask[i, labels.to(class_mask.device)].all()):
                phrases = class_mask[i, :-1].nonzero().flatten().tolist()
                raise ValueError(f"targets[{i}]['labels'] must be indices of that sample's phrases "
                                 f"{phrases}, got {labels.tolist()}")
            if labels.shape[0] > q:
                raise ValueError(f"targets[{i}] has {labels.shape[0]} masks, more than the {q} queries")
            checked.append((labels.to(logits.device).long(), tmasks.to(device=masks.device, dtype=masks.dtype)))
        return checked

    # -------------------------------------------------------------------------- matching
    @torch.no_grad()
    def cost_matrices(self, outputs: Mapping[str, Any], targets: _Targets) -> list[torch.Tensor]:
        """The ``[Q, T]`` matching cost of each image (see the class docstring).

        Example:
            >>> import torch
            >>> from segtext.model.xsam import SetCriterion, SegHeadConfig
            >>> out = {"pred_logits": torch.zeros(1, 2, 2), "pred_masks": torch.tensor([[[[9.0]], [[-9.0]]]])}
            >>> cost = SetCriterion(SegHeadConfig.tiny()).cost_matrices(out, [{"labels": torch.tensor([0]),
            ...                                                              "masks": torch.ones(1, 1, 1)}])
            >>> cost[0].argmin().item()                       # the query whose mask is on
            0
        """
        return self._costs(outputs, self._check(outputs, targets))

    def _costs(self, outputs: Mapping[str, Any], targets: _Pairs) -> list[torch.Tensor]:
        cfg = self.config
        costs = []
        with torch.no_grad():
            for b, (labels, tmasks) in enumerate(targets):
                logits, pmasks = outputs["pred_logits"][b].float(), outputs["pred_masks"][b].float()
                if labels.numel() == 0:
                    costs.append(logits.new_zeros(logits.shape[0], 0))
                    continue
                cost_class = -logits.softmax(-1)[:, labels]
                tm = tmasks.float()
                if cfg.num_points is None:
                    p = _upsample(pmasks, tm.shape[-2:]).flatten(1)
                    t = tm.flatten(1)
                else:
                    coords = torch.rand(1, cfg.num_points, 2, device=pmasks.device)
                    p = _point_sample(pmasks, coords.expand(pmasks.shape[0], -1, -1))
                    t = _point_sample(tm, coords.expand(tm.shape[0], -1, -1))
                cost = (cfg.class_weight * cost_class + cfg.mask_weight * _pairwise_bce(p, t)
                        + cfg.dice_weight * _pairwise_dice(p, t))
                costs.append(torch.nan_to_num(cost, nan=1e10, posinf=1e10, neginf=-1e10).clamp(-1e10, 1e10))
        return costs

    def match(self, outputs: Mapping[str, Any], targets: _Targets) -> _Pairs:
        """``(query indices, target indices)`` of the optimal assignment, per image.

        Example:
            >>> import torch
            >>> from segtext.model.xsam import SetCriterion, SegHeadConfig
            >>> out = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.tensor([[[[-9.0]], [[9.0]], [[-9.0]]]])}
            >>> [(q.tolist(), t.tolist()) for q, t in SetCriterion(SegHeadConfig.tiny()).match(
            ...     out, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 1, 1)}])]
            [([1], [0])]
        """
        return self._match(outputs, self._check(outputs, targets))

    def _match(self, outputs: Mapping[str, Any], targets: _Pairs) -> _Pairs:
        from scipy.optimize import linear_sum_assignment

        out = []
        for cost in self._costs(outputs, targets):
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out

    # ---------------------------------------------------------------------------- losses
    def _sample_points(self, logits: torch.Tensor) -> torch.Tensor:
        """Uncertainty-based points ``[N, P, 2]`` for ``[N, h, w]`` mask logits."""
        cfg = self.config
        n, p = logits.shape[0], cfg.num_points
        assert p is not None
        cand = torch.rand(n, int(p * cfg.oversample_ratio), 2, device=logits.device)
        k = int(cfg.importance_sample_ratio * p)
        uncertainty = -_point_sample(logits.detach(), cand).abs()
        top = uncertainty.topk(k, dim=1).indices
        picked = torch.gather(cand, 1, top[..., None].expand(-1, -1, 2))
        return torch.cat([picked, torch.rand(n, p - k, 2, device=logits.device)], dim=1)

    def _losses(self, outputs: Mapping[str, Any], targets: _Pairs, num_masks: float) -> dict[str, torch.Tensor]:
        cfg = self.config
        logits, pmasks = outputs["pred_logits"], outputs["pred_masks"]
        b, q, k = logits.shape
        indices = self._match(outputs, targets)
        target_classes = torch.full((b, q), k - 1, dtype=torch.long, device=logits.device)
        for i, ((labels, _), (rows, cols)) in enumerate(zip(targets, indices)):
            target_classes[i, rows.to(logits.device)] = labels[cols.to(labels.device)]
        weight = torch.ones(k, dtype=logits.dtype, device=logits.device)
        weight[-1] = cfg.no_object_weight
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight)
        loss_mask = pmasks.sum() * 0.0
        loss_dice = pmasks.sum() * 0.0
        for i, ((_, tmasks), (rows, cols)) in enumerate(zip(targets, indices)):
            if rows.numel() == 0:
                continue
            src = pmasks[i, rows.to(pmasks.device)]
            tgt = tmasks[cols.to(tmasks.device)]
            if cfg.num_points is None:
                p, t = _upsample(src, tgt.shape[-2:]).flatten(1), tgt.flatten(1)
            else:
                coords = self._sample_points(src)
                p, t = _point_sample(src, coords), _point_sample(tgt, coords)
            loss_mask = loss_mask + sigmoid_bce_loss(p, t).sum()
            loss_dice = loss_dice + dice_loss(p, t).sum()
        return {"loss_ce": loss_ce, "loss_mask": loss_mask / num_masks, "loss_dice": loss_dice / num_masks}

    def forward(self, outputs: Mapping[str, Any], targets: _Targets) -> dict[str, torch.Tensor]:
        """Losses of every prediction; see the class docstring."""
        checked = self._check(outputs, targets)
        num_masks = max(float(sum(labels.numel() for labels, _ in checked)), 1.0)
        cfg = self.config
        weights = {"loss_ce": cfg.class_weight, "loss_mask": cfg.mask_weight, "loss_dice": cfg.dice_weight}
        result = self._losses(outputs, checked, num_masks)
        total = sum(weights[name] * value for name, value in result.items())
        if cfg.aux_loss:
            class_mask = outputs.get("class_mask")
            for i, aux in enumerate(outputs.get("aux_outputs", ())):
                aux = {**aux, "class_mask": class_mask} if class_mask is not None else aux
                for name, value in self._losses(aux, checked, num_masks).items():
                    result[f"{name}_{i}"] = value
                    total = total + weights[name] * value
        return {"loss": total, **result}


# ----------------------------------------------------------------------------- post-processing
def _prediction(outputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(outputs, Mapping) or "pred_logits" not in outputs or "pred_masks" not in outputs:
        raise TypeError("outputs must be SegHead's dict (with pred_logits and pred_masks)")
    logits, masks = outputs["pred_logits"].detach().float(), outputs["pred_masks"].detach().float()
    if logits.dim() != 3 or masks.dim() != 4 or logits.shape[:2] != masks.shape[:2]:
        raise ValueError(f"pred_logits must be [B, Q, C + 1] and pred_masks [B, Q, h, w], got "
                         f"{tuple(logits.shape)} and {tuple(masks.shape)}")
    return logits, masks


def _resize_masks(masks: torch.Tensor, outputs: Mapping[str, Any], image_size: tuple[int, int] | None,
                  valid_size: tuple[int, int] | None) -> torch.Tensor:
    """Mask logits ``[B, Q, h, w]`` -> ``[B, Q, H, W]`` at the original image's size.

    As X-SAM does: upsample to the network input's size, crop to the part that held the image
    (``valid_size``, when the input was padded), then resize to ``image_size``.
    """
    input_size = tuple(outputs.get("image_size") or masks.shape[-2:])
    out = F.interpolate(masks, size=input_size, mode="bilinear", align_corners=False)
    if valid_size is not None:
        vh, vw = (int(v) for v in valid_size)
        if not (0 < vh <= input_size[0] and 0 < vw <= input_size[1]):
            raise ValueError(f"valid_size {tuple(valid_size)} must fit in the input size {input_size}")
        out = out[..., :vh, :vw]
    if image_size is not None:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be (H, W) with positive sides, got {image_size!r}")
        if size != tuple(out.shape[-2:]):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out


@torch.no_grad()
def semantic_inference(outputs: Mapping[str, Any], image_size: tuple[int, int] | None = None, *,
                       valid_size: tuple[int, int] | None = None,
                       score_threshold: float | None = None) -> np.ndarray:
    """Per-pixel phrase index: ``argmax_c sum_q softmax(logits)[q, c] * sigmoid(mask_q)``.

    The background class is dropped from the softmax's columns (as X-SAM does), so every
    pixel gets a phrase; with ``score_threshold`` the pixels whose best fused score is below it
    get -1 instead.

    Args:
        outputs: :meth:`SegHead.forward`'s dict (or one of its ``aux_outputs``).
        image_size: ``(H, W)`` of the result; default the network input's size.
        valid_size: the part of the (padded) input that held the image, cropped before resizing.
        score_threshold: see above.

    Returns:
        ``int64`` array ``[B, H, W]``.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import semantic_inference
        >>> logits = torch.tensor([[[9.0, -9.0, 0.0], [-9.0, 9.0, 0.0]]])     # query 0 -> phrase 0, 1 -> 1
        >>> masks = torch.full((1, 2, 2, 2), -9.0); masks[0, 0, 0] = 9; masks[0, 1, 1] = 9
        >>> semantic_inference({"pred_logits": logits, "pred_masks": masks}).tolist()
        [[[0, 0], [1, 1]]]
    """
    logits, masks = _prediction(outputs)
    scores = logits.softmax(-1)[..., :-1]
    probs = _resize_masks(masks, outputs, image_size, valid_size).sigmoid()
    fused = torch.einsum("bqc,bqhw->bchw", scores, probs)
    if fused.shape[1] == 0:
        return np.full((fused.shape[0], *fused.shape[-2:]), -1, dtype=np.int64)
    best, index = fused.max(1)
    if score_threshold is not None:
        index = torch.where(best >= score_threshold, index, torch.full_like(index, -1))
    return index.cpu().numpy().astype(np.int64)


@torch.no_grad()
def referring_inference(outputs: Mapping[str, Any], image_size: tuple[int, int] | None = None, *,
                        phrase: int = 0, valid_size: tuple[int, int] | None = None,
                        threshold: float = 0.5) -> np.ndarray:
    """The mask of the query most confident in ``phrase``, thresholded: X-SAM's referring path.

    Args:
        outputs: :meth:`SegHead.forward`'s dict.
        image_size, valid_size: as :func:`semantic_inference`.
        phrase: the phrase index (0, the only one in a referring prompt).
        threshold: on the mask probability.

    Returns:
        ``bool`` array ``[B, H, W]``.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import referring_inference
        >>> logits = torch.tensor([[[-5.0, 5.0], [5.0, -5.0]]])             # query 1 is the phrase
        >>> masks = torch.full((1, 2, 2, 2), -9.0); masks[0, 1, :, 1] = 9
        >>> referring_inference({"pred_logits": logits, "pred_masks": masks}).astype(int).tolist()
        [[[0, 1], [0, 1]]]
    """
    logits, masks = _prediction(outputs)
    if not 0 <= phrase < logits.shape[-1] - 1:
        raise ValueError(f"phrase must be in [0, {logits.shape[-1] - 1}), got {phrase}")
    best = logits.softmax(-1)[..., phrase].argmax(1)
    chosen = masks[torch.arange(masks.shape[0], device=masks.device), best][:, None]
    probs = _resize_masks(chosen, outputs, image_size, valid_size)[:, 0].sigmoid()
    return (probs > threshold).cpu().numpy()


@torch.no_grad()
def panoptic_inference(outputs: Mapping[str, Any], image_size: tuple[int, int] | None = None, *,
                       valid_size: tuple[int, int] | None = None, object_threshold: float = 0.8,
                       overlap_threshold: float = 0.8,
                       stuff_labels: Sequence[int] = ()) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Mask2Former's panoptic merge: confident queries claim the pixels where they win.

    Queries whose best class is a phrase with probability above ``object_threshold`` are
    kept; each pixel goes to the kept query with the highest ``score * mask probability``;
    a query keeps its segment if at least ``overlap_threshold`` of its own mask (probability
    >= 0.5) survived. Segments of a phrase in ``stuff_labels`` are merged into one.

    Args:
        outputs: :meth:`SegHead.forward`'s dict.
        image_size, valid_size: as :func:`semantic_inference`.
        object_threshold, overlap_threshold, stuff_labels: see above.

    Returns:
        Per image ``(segments, info)``: an ``int32`` ``[H, W]`` map of segment ids (0: none)
        and one dict per segment, ``{"id", "label", "score", "area"}``.

    Example:
        >>> import torch
        >>> from segtext.model.xsam import panoptic_inference
        >>> logits = torch.tensor([[[9.0, -9.0, 0.0], [-9.0, 9.0, 0.0], [-9.0, -9.0, 9.0]]])
        >>> masks = torch.full((1, 3, 2, 3), -9.0); masks[0, 0, :, 0] = 9; masks[0, 1, :, 2] = 9
        >>> seg, info = panoptic_inference({"pred_logits": logits, "pred_masks": masks})[0]
        >>> seg.tolist(), [(s["id"], s["label"], s["area"]) for s in info]
        ([[1, 0, 2], [1, 0, 2]], [(1, 0, 2), (2, 1, 2)])
    """
    logits, masks = _prediction(outputs)
    probs = _resize_masks(masks, outputs, image_size, valid_size).sigmoid()
    background = logits.shape[-1] - 1
    stuff = {int(s) for s in stuff_labels}
    results = []
    for b in range(logits.shape[0]):
        scores, labels = logits[b].softmax(-1).max(-1)
        keep = (labels != background) & (scores > object_threshold)
        segments = torch.zeros(probs.shape[-2:], dtype=torch.int32)
        info: list[dict[str, Any]] = []
        if keep.any():
            cur_scores, cur_labels, cur_probs = scores[keep], labels[keep], probs[b, keep]
            owner = (cur_scores[:, None, None] * cur_probs).argmax(0)
            stuff_ids: dict[int, int] = {}
            for k in range(len(cur_scores)):
                label = int(cur_labels[k])
                own = cur_probs[k] >= 0.5
                region = (owner == k) & own
                area, original = int(region.sum()), int(own.sum())
                if area == 0 or original == 0 or area / original < overlap_threshold:
                    continue
                if label in stuff and label in stuff_ids:
                    seg_id = stuff_ids[label]
                    entry = next(s for s in info if s["id"] == seg_id)
                    entry["area"] += area
                else:
                    seg_id = len(info) + 1
                    info.append({"id": seg_id, "label": label, "score": float(cur_scores[k]), "area": area})
                    if label in stuff:
                        stuff_ids[label] = seg_id
                segments[region] = seg_id
        results.append((segments.numpy(), info))
    return results


def masks_to_text(masks: Any, labels: Sequence[str], encoding: str = "rrle", *, grid_size: int | tuple[int, int] = 16,
                  resolution: int = 64, background: str = "others", policy: str = "majority",
                  **bsd_options: Any) -> str:
    """Write predicted masks as R-RLE (or I-SD, I-RLE) or B-SD text with the core's encoders.

    Args:
        masks: ``[N, H, W]`` binary masks, one per entry of ``labels`` (a later mask wins where
            two overlap in R-RLE), or an ``[H, W]`` integer map with ``-1`` for background and
            ``k`` for ``labels[k]`` (what :func:`semantic_inference` returns for one image).
            numpy or torch.
        labels: the text of each mask or index.
        encoding: ``"rrle"`` (:func:`segtext.mask_to_grid` then :func:`segtext.encode_rrle`,
            one grid cell per ``grid_size``), ``"isd"`` / ``"irle"`` (the same grid through
            :func:`segtext.encode_isd` / :func:`segtext.encode_irle`) or ``"bsd"``
            (:func:`segtext.encode_bsd`, one block per non-empty mask, ``resolution`` bricks per
            side).
        grid_size: grid ``(h, w)`` or side (R-RLE, I-SD, I-RLE).
        resolution: B-SD bricks per side.
        background: the grid label of id 0 (R-RLE, I-SD, I-RLE).
        policy: the cell policy (``"majority"``, ``"nearest"``, ``"any"``).
        **bsd_options: passed on to :func:`segtext.encode_bsd` (``box_format``, ``max_run``...).

    Returns:
        The text.

    Raises:
        ValueError: a bad ``encoding``, masks and labels that do not match, masks that are not
            binary, an index map with values outside ``[-1, len(labels))``.
        TypeError: masks that are not an array.

    Example:
        >>> import numpy as np
        >>> from segtext.model.xsam import masks_to_text
        >>> m = np.zeros((1, 8, 8), bool); m[0, :4, :4] = True
        >>> masks_to_text(m, ["cat"], grid_size=2)
        'cat *1| others *1\\n others *2\\n'
        >>> masks_to_text(m, ["cat"], "bsd", resolution=2)
        '<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>'
        >>> masks_to_text(np.where(m[0], 0, -1), ["cat"], "isd", grid_size=2)    # an index map
        'cat| others\\n others| others\\n'
    """
    import segtext as st

    encoders = {"rrle": st.encode_rrle, "isd": st.encode_isd, "irle": st.encode_irle}
    if encoding not in (*encoders, "bsd"):
        raise ValueError(f"encoding must be 'rrle', 'isd', 'irle' or 'bsd', got {encoding!r}")
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if not isinstance(masks, np.ndarray):
        raise TypeError(f"masks must be a numpy array or a torch tensor, got {type(masks).__name__}")
    if isinstance(labels, str) or not all(isinstance(lab, str) for lab in labels):
        raise TypeError("labels must be a sequence of str")
    labels = list(labels)
    if masks.ndim == 3:
        if masks.shape[0] != len(labels):
            raise ValueError(f"{masks.shape[0]} masks but {len(labels)} labels")
        if masks.dtype != np.bool_:
            if not np.isin(masks, (0, 1)).all():
                raise ValueError("masks must be binary (bool or 0/1)")
            masks = masks.astype(bool)
        stack = masks
    elif masks.ndim == 2:
        if masks.dtype == np.bool_ or not np.issubdtype(masks.dtype, np.integer):
            raise TypeError(f"a 2-D masks argument must be an integer index map, got {masks.dtype}")
        if masks.size and (masks.min() < -1 or masks.max() >= len(labels)):
            raise ValueError(f"index map values must be in [-1, {len(labels)}), got "
                             f"[{masks.min()}, {masks.max()}]")
        stack = masks[None] == np.arange(len(labels))[:, None, None]
    else:
        raise ValueError(f"masks must be [N, H, W] or [H, W], got shape {masks.shape}")
    size = tuple(int(s) for s in stack.shape[-2:])
    if encoding == "bsd":
        objects = [(lab, m) for lab, m in zip(labels, stack) if m.any()]
        return st.encode_bsd(objects, image_size=size, resolution=resolution, policy=policy, **bsd_options)
    if bsd_options:
        raise TypeError(f"unexpected options for {encoding!r}: {sorted(bsd_options)}")
    vocab = [background]
    ids = np.zeros(size, np.int32)
    for lab, m in zip(labels, stack):
        if lab not in vocab:
            vocab.append(lab)
        ids[m] = vocab.index(lab)
    grid = st.mask_to_grid(ids, grid_size=grid_size, policy=policy)
    return encoders[encoding](grid, vocab)


# ------------------------------------------------------------------------------------- helpers
def _check_float(name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")


def _check_images(images: Any, channels: int | None) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a [B, C, H, W] float tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channels, got {images.shape[1]}")
    _check_float("images", images)

