"""Argument checks shared by the public modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np

POLICIES = ("nearest", "majority", "any")
_POLICY_CODE = {"nearest": 0, "majority": 1, "any": 2}


def grid_size_arg(grid_size: Any) -> tuple[int, int]:
    if isinstance(grid_size, (int, np.integer)) and not isinstance(grid_size, bool):
        grid_size = (grid_size, grid_size)
    try:
        h, w = grid_size
    except (TypeError, ValueError):
        raise TypeError(
            f"grid_size must be an int or a pair of ints (h, w), got {grid_size!r}"
        ) from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"grid_size must hold two positive ints (h, w), got {grid_size!r}")
    return int(h), int(w)


def image_size_arg(image_size: Any) -> tuple[int, int]:
    try:
        H, W = image_size
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a pair of ints (H, W), got {image_size!r}") from None
    for v in (H, W):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"image_size must hold two positive ints (H, W), got {image_size!r}")
    return int(H), int(W)


def policy_code(policy: str, threshold: float) -> int:
    if policy not in _POLICY_CODE:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    return _POLICY_CODE[policy]


def check_fits(image: tuple[int, int], grid: tuple[int, int]) -> None:
    if grid[0] > image[0] or grid[1] > image[1]:
        raise ValueError(
            f"grid_size {grid} is larger than the image {image}: every cell needs at least "
            "one pixel, so the grid may not exceed the image in either direction"
        )


def as_array(mask: Any, name: str = "mask") -> np.ndarray:
    if type(mask).__module__.startswith("torch"):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        if isinstance(mask, (list, tuple)):
            mask = np.asarray(mask)
        else:
            raise TypeError(
                f"{name} must be a numpy array (or a torch tensor), got {type(mask).__name__}"
            )
    return mask


def label_map_arg(mask: Any, ignore_index: int | None) -> tuple[np.ndarray, bool]:
    """Validate a mask; return it as an integer array and whether it is binary."""
    m = as_array(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"mask is empty (shape {m.shape}); expected H >= 1 and W >= 1")
    if m.dtype == np.bool_:
        return m.view(np.uint8), True
    if m.dtype.kind == "f":
        if not np.isfinite(m).all():
            raise ValueError("mask holds NaN or infinite values; expected finite label values")
        if not (m == np.round(m)).all():
            raise ValueError(
                "float mask holds non-integer values; expected 0/1 or integer label ids "
                "(threshold probabilities first, e.g. mask > 0.5)"
            )
        m = m.astype(np.int64)
    elif m.dtype.kind not in "iu":
        raise TypeError(f"mask must hold bool, integer or float values, got dtype {m.dtype}")
    valid = m if ignore_index is None else m[m != ignore_index]
    if valid.size and m.dtype.kind == "i" and valid.min() < 0:
        raise ValueError(
            f"mask holds negative label {int(valid.min())}; labels must be >= 0 "
            "(pass ignore_index to mark a negative value as ignore)"
        )
    if valid.size and valid.max() > np.iinfo(np.int32).max:
        raise ValueError(f"mask holds label {int(valid.max())}, larger than int32 allows")
    binary = valid.size == 0 or valid.max() <= 1
    return m, binary
