"""Argument checks and kernel-call preparation shared by the public modules (private)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from segtext.limits import MAX_GRID_CELLS, MAX_IMAGE_AREA, MAX_IMAGE_SIDE

POLICIES = ("nearest", "majority", "any")
_POLICY_CODE = {"nearest": 0, "majority": 1, "any": 2}


def grid_size_arg(grid_size: Any) -> tuple[int, int]:
    if type(grid_size) is int and 0 < grid_size <= 2048:  # the common cases first, cheaply
        return grid_size, grid_size
    if type(grid_size) is tuple and len(grid_size) == 2:
        h, w = grid_size
        if type(h) is int and type(w) is int and h > 0 and w > 0 and h * w <= MAX_GRID_CELLS:
            return grid_size
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
    h, w = int(h), int(w)
    if h * w > MAX_GRID_CELLS:
        raise ValueError(f"grid_size {(h, w)} has {h * w} cells, more than the limit of "
                         f"{MAX_GRID_CELLS} (segtext.limits.MAX_GRID_CELLS)")
    return h, w


def check_image_size(H: int, W: int, where: str = "image_size") -> None:
    """Refuse an image larger than the limits (sides and area; see :mod:`segtext.limits`)."""
    if H > MAX_IMAGE_SIDE or W > MAX_IMAGE_SIDE:
        raise ValueError(f"{where} {[H, W]} has a side longer than the limit of {MAX_IMAGE_SIDE} "
                         "pixels (segtext.limits.MAX_IMAGE_SIDE)")
    if H * W > MAX_IMAGE_AREA:
        raise ValueError(f"{where} {[H, W]} has {H * W} pixels, more than the limit of "
                         f"{MAX_IMAGE_AREA} (segtext.limits.MAX_IMAGE_AREA)")


# sides up to this need no area check (32,768 ** 2 == MAX_IMAGE_AREA): the hot paths' quick test
PLAIN_IMAGE_SIDE = 1 << 15
assert PLAIN_IMAGE_SIDE ** 2 <= MAX_IMAGE_AREA and PLAIN_IMAGE_SIDE <= MAX_IMAGE_SIDE


def image_size_arg(image_size: Any) -> tuple[int, int]:
    if type(image_size) in (tuple, list) and len(image_size) == 2:
        H, W = image_size
        if type(H) is int and type(W) is int and 0 < H <= PLAIN_IMAGE_SIDE and 0 < W <= PLAIN_IMAGE_SIDE:
            return H, W
    try:
        H, W = image_size
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a pair of ints (H, W), got {image_size!r}") from None
    for v in (H, W):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"image_size must hold two positive ints (H, W), got {image_size!r}")
    H, W = int(H), int(W)
    check_image_size(H, W)
    return H, W


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


@lru_cache(maxsize=4096)
def pillow_index(n_pixels: int, n_cells: int) -> np.ndarray:
    """The pixel Pillow's NEAREST resize samples for each cell (read off Pillow itself)."""
    from PIL import Image

    ramp = Image.fromarray(np.arange(n_pixels, dtype=np.int32)[None, :], mode="I")
    idx = np.asarray(ramp.resize((n_cells, 1), Image.Resampling.NEAREST), dtype=np.int64)[0]
    idx.setflags(write=False)
    return idx


_EMPTY = np.zeros(0, np.int64)
_COCO = None


def _coco() -> Any:
    """:mod:`segtext.coco`, imported on first use (it imports this module)."""
    global _COCO
    if _COCO is None:
        from segtext import coco

        _COCO = coco
    return _COCO


def _samples(sides: np.ndarray, n_cells: int) -> np.ndarray:
    """``(N, n_cells)``: the Pillow NEAREST samples of each image side in ``sides``."""
    if sides.size == 0:
        return np.zeros((0, n_cells), np.int64)
    distinct, inverse = np.unique(sides, return_inverse=True)
    table = np.stack([pillow_index(int(n), n_cells) for n in distinct.tolist()])
    return table[inverse.reshape(-1)]


class RleCall(NamedTuple):
    """Checked arguments of one RLE -> grid kernel call."""

    data: np.ndarray
    compressed: bool
    H: int
    W: int
    h: int
    w: int
    policy: int
    threshold: float
    py: np.ndarray
    px: np.ndarray


def rle_call(rle: Any, grid_size: Any, policy: str, threshold: float) -> RleCall:
    """Check an RLE, a grid size and a policy; the nearest samples when needed."""
    h, w = grid_size_arg(grid_size)
    code = policy_code(policy, threshold)
    data, compressed, (H, W) = _coco().rle_source(rle)
    check_fits((H, W), (h, w))
    py = pillow_index(H, h) if code == 0 else _EMPTY
    px = pillow_index(W, w) if code == 0 else _EMPTY
    return RleCall(data, compressed, H, W, h, w, code, float(threshold), py, px)


class RlesCall(NamedTuple):
    """Checked arguments of one batch RLE -> grid kernel call."""

    counts: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    h: int
    w: int
    policy: int
    threshold: float
    py: np.ndarray
    px: np.ndarray


def rles_call(rles: Any, grid_size: Any, policy: str, threshold: float) -> RlesCall:
    """:func:`rle_call` for a batch: all runs decoded, sizes checked, samples stacked."""
    h, w = grid_size_arg(grid_size)
    code = policy_code(policy, threshold)
    counts, offsets, sizes = _coco().rles_runs(rles)
    small = np.flatnonzero((sizes[:, 0] < h) | (sizes[:, 1] < w))
    if small.size:
        n = int(small[0])
        H, W = sizes[n].tolist()
        raise ValueError(f"rles[{n}]: grid_size {(h, w)} is larger than the image {(H, W)}")
    N = len(sizes)
    if code == 0:  # one Pillow lookup per distinct side, then gathered
        py = _samples(sizes[:, 0], h)
        px = _samples(sizes[:, 1], w)
    else:
        py = px = np.zeros((N, 0), np.int64)
    return RlesCall(counts, offsets, sizes, h, w, code, float(threshold), py, px)

