"""Reference models that write and read segtext's formats (optional: needs ``segtext[model]``).

Importing :mod:`segtext.model` imports nothing heavy: torch is loaded only when a name
below is first used. :mod:`segtext.model.xsam` holds the X-SAM-style mask head
(:class:`~segtext.model.xsam.SegHead`, :class:`~segtext.model.xsam.SetCriterion`,
post-processing and :func:`~segtext.model.xsam.masks_to_text`).

Example:
    >>> import segtext.model as sm
    >>> sm.SegHeadConfig.tiny().num_queries
    8
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it (imported on first use)
_LAZY = {
    name: "segtext.model.xsam"
    for name in (
        "SegHeadConfig",
        "SegHead",
        "SetCriterion",
        "TinyConvBackbone",
        "SamBackbone",
        "VisionTowerBackbone",
        "PixelDecoder",
        "span_ids",
        "semantic_inference",
        "referring_inference",
        "panoptic_inference",
        "masks_to_text",
    )
}
_LAZY.update({"Segmenter": "segtext.model.segmenter", "SegmentResult": "segtext.model.segmenter"})
_LAZY.update({name: "segtext.model.xsam_model"
              for name in ("XSamSegmenter", "XSamResult", "XSamSemanticResult", "XSamPanopticResult")})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'segtext.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
