"""COCO masks: run-length encoding, polygons, annotation files and the bundled sample.

COCO RLE
--------
A mask of ``H x W`` pixels is read column by column (Fortran order) and written as the
lengths of alternating runs, background first (a mask that starts with foreground starts
with a run of length 0). The dict form is ``{"size": [H, W], "counts": ...}`` where counts
is either the list of run lengths ("uncompressed") or a compressed ASCII string: each
length is cut into 5-bit groups, low group first, each written as the character
``48 + group`` with bit ``0x20`` marking that another group follows and bit ``0x10`` of the
last group carrying the sign; from the third run on, the value written is the difference
to the run two places before. The runs must add up to ``H * W``.

Polygons are converted with pycocotools (``frPyObjects`` then ``merge``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from segtext import _kernels as K
from segtext._validate import check_image_size
from segtext.limits import MAX_POLYGON_STEPS

__all__ = [
    "COCO_CATEGORY_NAMES",
    "SAMPLE_PATH",
    "decode_counts",
    "load_annotations",
    "merge_rles",
    "panoptic_to_label_map",
    "check_status",
    "rle_runs",
    "rle_source",
    "rles_runs",
    "sample_annotations",
    "to_rle",
]

SAMPLE_PATH: str = str(resources.files("segtext") / "data" / "coco_val2014_sample.json")

_STATUS_TEXT = {
    K.ERR_BAD_CHAR: "holds a character outside the COCO alphabet ('0'..'o')",
    K.ERR_TRUNCATED: "ends in the middle of a count",
    K.ERR_NEGATIVE: "decodes to a negative run length",
    K.ERR_HUGE: "decodes to a run length larger than any image holds "
                "(segtext.limits.MAX_IMAGE_AREA pixels)",
}


def _load_category_names() -> dict[int, str]:
    path = resources.files("segtext") / "data" / "coco_thing_categories.json"
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


COCO_CATEGORY_NAMES: dict[int, str] = _load_category_names()


def _counts_bytes(counts: str | bytes) -> bytes:
    if isinstance(counts, str):
        try:
            return counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("compressed RLE counts must be ASCII text") from None
    return bytes(counts)


def decode_counts(counts: str | bytes) -> np.ndarray:
    """Decode a compressed COCO counts string into its run lengths.

    Args:
        counts: the ``"counts"`` string of a compressed COCO RLE (``str`` or ``bytes``).

    Returns:
        ``int64`` array of run lengths, background first.

    Raises:
        TypeError: not ``str``/``bytes``.
        ValueError: a character outside the alphabet, a string cut inside a count, a
            negative run, or a run longer than any image holds
            (:data:`segtext.limits.MAX_IMAGE_AREA`).

    Example:
        >>> import segtext as st
        >>> st.coco.decode_counts("3131N0").tolist()
        [3, 1, 3, 2, 1, 2]
    """
    if not isinstance(counts, (str, bytes, bytearray)):
        raise TypeError(f"counts must be str or bytes, got {type(counts).__name__}")
    raw = np.frombuffer(_counts_bytes(counts), np.uint8)
    out, status = K.decode_coco_counts(raw)
    if status != K.OK:
        raise ValueError(f"compressed RLE counts {_STATUS_TEXT[status]}")
    return out


def _size(rle: Any, where: str) -> tuple[int, int]:
    if not isinstance(rle, dict):
        raise TypeError(f"{where} must be a COCO RLE dict with 'size' and 'counts', "
                        f"got {type(rle).__name__}")
    for key in ("size", "counts"):
        if key not in rle:
            raise ValueError(f"{where} has no {key!r} key; expected {{'size': [H, W], 'counts': ...}}")
    return _size_value(rle["size"], f"{where}['size']")


def _size_value(size: Any, where: str) -> tuple[int, int]:
    """``(H, W)`` from two ints (or integral floats) within the limits, else a ValueError."""
    if type(size) in (list, tuple) and len(size) == 2 and type(size[0]) is int and type(size[1]) is int:
        H, W = size  # the common case, checked cheaply
        if 1 <= H <= 32768 and 1 <= W <= 32768:
            return H, W
    try:
        H, W = size
        if not all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
                   for v in (H, W)) or isinstance(H, bool) or isinstance(W, bool):
            raise TypeError
        H, W = int(H), int(W)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where} must be [H, W] (two ints), got {size!r}") from None
    if H < 1 or W < 1:
        raise ValueError(f"{where} is {[H, W]}: an empty image; expected H >= 1 and W >= 1")
    check_image_size(H, W, where)
    return H, W


def _total_error(counts: np.ndarray, status: int, H: int, W: int, where: str) -> ValueError:
    if status == K.ERR_NEGATIVE:
        return ValueError(f"{where}['counts'] holds a negative run length {int(counts.min())}")
    total = sum(counts.tolist())  # Python ints: exact, however large the runs
    return ValueError(f"{where}: run lengths sum to {total}, expected H*W = {H}*{W} = {H * W}")


def _check_total(counts: np.ndarray, H: int, W: int, where: str) -> None:
    status = K.runs_status(counts, H, W)
    if status != K.OK:
        raise _total_error(counts, status, H, W, where)


def _uncompressed(counts: Any, where: str) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{where}['counts'] must be a list of ints or a compressed string")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{where}['counts'] holds a run length {int(arr.max())}, "
                         "larger than any image holds")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where}['counts'] holds a negative run length {int(arr.min())}")
    return arr


def rle_source(rle: dict, where: str = "rle") -> tuple[np.ndarray, bool, tuple[int, int]]:
    """Validate a COCO RLE dict's layout and return ``(data, compressed, (H, W))``.

    ``data`` is the compressed string as ``uint8`` bytes, or the run lengths as ``int64``;
    the runs themselves are checked by the kernels (see :func:`check_status`).

    Example:
        >>> import segtext as st
        >>> data, compressed, size = st.coco.rle_source({"size": [2, 3], "counts": [1, 5]})
        >>> data.tolist(), compressed, size
        ([1, 5], False, (2, 3))
    """
    if type(rle) is dict:  # the common case (a compressed string, a list size), checked cheaply
        counts = rle.get("counts")
        size = rle.get("size")
        if type(counts) is str and type(size) is list and len(size) == 2 and counts.isascii():
            H, W = size
            if type(H) is int and type(W) is int and 1 <= H <= 32768 and 1 <= W <= 32768:
                return np.frombuffer(counts.encode("ascii"), np.uint8), True, (H, W)
    H, W = _size(rle, where)
    counts = rle["counts"]
    if isinstance(counts, str):
        if not counts.isascii():
            raise ValueError(f"{where}: compressed RLE counts must be ASCII text")
        return np.frombuffer(counts.encode("ascii"), np.uint8), True, (H, W)
    if isinstance(counts, (bytes, bytearray)):
        return np.frombuffer(bytes(counts), np.uint8), True, (H, W)
    return _uncompressed(counts, where), False, (H, W)


def check_status(status: int, where: str, H: int, W: int) -> None:
    """Raise the ``ValueError`` that a kernel status code stands for (0 is fine).

    Example:
        >>> import segtext as st
        >>> st.coco.check_status(0, "rle", 2, 3)
    """
    if status == K.OK:
        return
    if status == K.ERR_TOTAL:
        raise ValueError(f"{where}: run lengths do not sum to H*W = {H}*{W} = {H * W}")
    raise ValueError(f"{where}: compressed RLE counts {_STATUS_TEXT[status]}")


def rle_runs(rle: dict, where: str = "rle") -> tuple[np.ndarray, tuple[int, int]]:
    """Validated run lengths and ``(H, W)`` of a COCO RLE dict (compressed or not).

    Example:
        >>> import segtext as st
        >>> counts, size = st.coco.rle_runs({"size": [2, 3], "counts": "1121"})
        >>> counts.tolist(), size
        ([1, 1, 2, 2], (2, 3))
    """
    data, compressed, (H, W) = rle_source(rle, where)
    if compressed:
        data, status = K.decode_coco_counts(data)
        check_status(status, where, H, W)
    _check_total(data, H, W, where)
    return data, (H, W)


def rles_runs(rles: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of many RLEs at once: ``(counts, offsets, sizes)``.

    Mask ``n`` has runs ``counts[offsets[n]:offsets[n + 1]]`` and size ``sizes[n] = (H, W)``.
    Compressed strings are decoded together in one compiled call.

    Example:
        >>> import segtext as st
        >>> c, o, s = st.coco.rles_runs([{"size": [1, 2], "counts": [1, 1]}, {"size": [1, 1], "counts": "1"}])
        >>> c.tolist(), o.tolist(), s.tolist()
        ([1, 1, 1], [0, 2, 3], [[1, 2], [1, 1]])
    """
    fast = _compressed_batch(rles)
    if fast is not None:
        return fast
    if isinstance(rles, dict) or not isinstance(rles, Sequence):
        raise TypeError(f"rles must be a sequence of COCO RLE dicts, got {type(rles).__name__}")
    N = len(rles)
    sizes = np.empty((N, 2), np.int64)
    compressed: list[int] = []
    chunks: list[bytes] = []
    plain: dict[int, np.ndarray] = {}
    for n, rle in enumerate(rles):
        where = f"rles[{n}]"
        sizes[n] = _size(rle, where)
        counts = rle["counts"]
        if isinstance(counts, (str, bytes, bytearray)):
            try:
                chunks.append(_counts_bytes(counts))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            compressed.append(n)
        else:
            plain[n] = _uncompressed(counts, where)
    lengths = np.zeros(N, np.int64)
    parts: list[np.ndarray] = [np.zeros(0, np.int64)] * N
    if compressed:
        flat, cum = _decode_strings(b"".join(chunks), [len(c) for c in chunks], compressed)
        if not plain:
            offsets = cum
            counts_all = flat
            _check_totals(counts_all, offsets, sizes)
            return counts_all, offsets, sizes
        for k, n in enumerate(compressed):
            parts[n] = flat[cum[k] : cum[k + 1]]
    for n, arr in plain.items():
        parts[n] = arr
    for n in range(N):
        lengths[n] = len(parts[n])
    offsets = np.zeros(N + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    counts_all = np.concatenate(parts) if N else np.zeros(0, np.int64)
    _check_totals(counts_all, offsets, sizes)
    return counts_all, offsets, sizes


def _decode_strings(joined: bytes, lengths: list[int], index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Runs of compressed strings joined in ``joined`` (their ``lengths``), decoded in one
    compiled call: ``(counts, offsets)``; a bad string is named by its ``index`` in the batch."""
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    flat, cum, status = K.decode_coco_counts_batch(np.frombuffer(joined, np.uint8), starts)
    bad = np.flatnonzero(status)
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"rles[{index[k]}]: compressed RLE counts {_STATUS_TEXT[int(status[k])]}")
    return flat, cum


def _is_size(size: Any) -> bool:
    return (type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int
            and 1 <= size[0] <= 32768 and 1 <= size[1] <= 32768)


def _compressed_batch(rles: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`rles_runs` of the common batch (a list of dicts, every one with a compressed
    string and a list size) without a Python step per mask beyond reading it; None for any
    other batch, which the general path then reads (and names what is wrong)."""
    if type(rles) not in (list, tuple) or not rles:
        return None
    try:
        strings = [r["counts"] for r in rles if type(r) is dict]
        size_list = [r["size"] for r in rles]
    except (KeyError, TypeError):
        return None
    if len(strings) != len(rles) or not all(type(c) is str for c in strings):
        return None
    if not all(map(_is_size, size_list)):
        return None
    joined = "".join(strings)
    if not joined.isascii():
        return None
    flat, cum = _decode_strings(joined.encode("ascii"), [len(c) for c in strings], range(len(strings)))
    sizes = np.array(size_list, np.int64)
    _check_totals(flat, cum, sizes)
    return flat, cum, sizes


def _check_totals(counts: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> None:
    n, status = K.runs_status_batch(counts, offsets, sizes)
    if n >= 0:
        H, W = sizes[n].tolist()
        raise _total_error(counts[offsets[n] : offsets[n + 1]], status, H, W, f"rles[{n}]")


def to_rle(segmentation: Any, image_size: tuple[int, int] | None = None) -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a COCO RLE dict.

    Polygons (a list of ``[x1, y1, x2, y2, ...]`` lists) are rasterised with pycocotools
    and merged into one compressed RLE with ``counts`` as ``str``; RLE dicts are checked
    for layout (size, counts type) and returned unchanged; their runs are checked where
    they are used. Each polygon needs an even number (at least 6) of finite coordinates; one
    reaching more than an image size beyond the image is first clipped to that margin
    (see :mod:`segtext.limits`), so pycocotools never sees coordinates it cannot handle.

    Args:
        segmentation: COCO ``"segmentation"`` value.
        image_size: ``(H, W)``; required for polygons, checked against an RLE's size.

    Raises:
        TypeError / ValueError: unknown segmentation form, missing or mismatched size,
            malformed RLE or polygon, a size or polygon outline past the limits.

    Example:
        >>> import segtext as st
        >>> rle = st.coco.to_rle([[0, 0, 4, 0, 4, 4, 0, 4]], image_size=(8, 8))
        >>> rle["size"], int(st.rle_to_grid(rle, grid_size=2).sum())
        ([8, 8], 1)
    """
    if isinstance(segmentation, dict):
        _, _, size = rle_source(segmentation, "segmentation")
        if image_size is not None and _size_value(image_size, "image_size") != size:
            raise ValueError(f"segmentation size {list(size)} does not match image_size "
                             f"{tuple(image_size)}")
        return segmentation
    if isinstance(segmentation, (list, tuple)):
        if image_size is None:
            raise ValueError("polygon segmentation needs image_size=(H, W)")
        H, W = _size_value(image_size, "image_size")
        polys = [_polygon(p, n, H, W) for n, p in enumerate(segmentation)]
        if not polys:
            raise ValueError("polygon segmentation is an empty list; expected at least one polygon")
        from pycocotools import mask as mask_utils

        polys = [p for p in polys if len(p)]
        if not polys:  # every polygon lies outside the image
            empty = K.encode_coco_counts(np.array([H * W], np.int64))
            return {"size": [H, W], "counts": empty.tobytes().decode("ascii")}
        try:
            rles = mask_utils.frPyObjects(polys, H, W)
        except Exception as e:  # pycocotools raises a bare Exception on some polygons
            raise ValueError(f"polygons could not be rasterised: {e}") from None
        if len(rles) == 1:
            return {"size": [H, W], "counts": rles[0]["counts"].decode("ascii")}
        # merged here, not by pycocotools' merge, which allocates 4 bytes per pixel of the image
        chunks = [r["counts"] for r in rles]
        starts = np.zeros(len(chunks) + 1, np.int64)
        np.cumsum([len(c) for c in chunks], out=starts[1:])
        flat, cum, _ = K.decode_coco_counts_batch(np.frombuffer(b"".join(chunks), np.uint8), starts)
        merged = K.encode_coco_counts(K.union_runs(flat, cum, H * W))
        return {"size": [H, W], "counts": merged.tobytes().decode("ascii")}
    raise TypeError("segmentation must be a list of polygons or a COCO RLE dict, "
                    f"got {type(segmentation).__name__}")


def merge_rles(rles: Sequence[dict]) -> dict:
    """The union of COCO RLE masks of one image size, as one compressed RLE (str counts).

    Works on the runs (``O(R log R)`` in the number of runs, whatever the image size); the
    masks may be compressed or not.

    Raises:
        ValueError: no masks, masks of different sizes, or a mask that is not valid RLE.

    Example:
        >>> import segtext as st
        >>> a = {"size": [2, 2], "counts": [0, 1, 3]}
        >>> b = {"size": [2, 2], "counts": [3, 1]}
        >>> st.coco.decode_counts(st.coco.merge_rles([a, b])["counts"]).tolist()
        [0, 1, 2, 1]
    """
    if isinstance(rles, dict) or not isinstance(rles, Sequence) or len(rles) == 0:
        raise ValueError("merge_rles needs a non-empty list of COCO RLE dicts")
    counts, offsets, sizes = rles_runs(rles)
    H, W = (int(v) for v in sizes[0])
    other = np.flatnonzero((sizes[:, 0] != H) | (sizes[:, 1] != W))
    if other.size:
        n = int(other[0])
        raise ValueError(f"rles[{n}] has size {sizes[n].tolist()}, rles[0] has {[H, W]}: "
                         "only masks of one image size can be merged")
    merged = K.encode_coco_counts(K.union_runs(counts, offsets, H * W))
    return {"size": [H, W], "counts": merged.tobytes().decode("ascii")}


def _polygon(poly: Any, n: int, H: int, W: int) -> list[float]:
    """One checked polygon, cut to the image and a margin of one image size around it.

    Coordinates within the margin reach pycocotools unchanged; a polygon reaching further is
    clipped (Sutherland-Hodgman) to the margin's rectangle first, so pycocotools' integer
    arithmetic and the length of the outline it walks stay bounded.
    """
    if isinstance(poly, (str, bytes, dict)) or not isinstance(poly, Sequence):
        raise ValueError(f"polygon {n} must be a list of numbers [x1, y1, x2, y2, ...], "
                         f"got {type(poly).__name__}")
    if not all(type(v) in (int, float) or isinstance(v, (np.integer, np.floating)) for v in poly):
        raise ValueError(f"polygon {n} must be a list of numbers [x1, y1, x2, y2, ...]")
    try:
        xy = np.array(poly, np.float64)
    except OverflowError:
        raise ValueError(f"polygon {n} holds a coordinate too large for a float") from None
    except (TypeError, ValueError):
        raise ValueError(f"polygon {n} must be a list of numbers [x1, y1, x2, y2, ...]") from None
    if xy.ndim != 1 or len(xy) < 6 or len(xy) % 2:
        raise ValueError(f"polygon {n} has {xy.size} coordinates; expected an even number, at "
                         "least 6 (three (x, y) points)")
    if not np.isfinite(xy).all():
        raise ValueError(f"polygon {n} holds a NaN or infinite coordinate")
    mx, my = W, H  # the margin
    x, y = xy[0::2], xy[1::2]
    if x.min() < -mx or x.max() > W + mx or y.min() < -my or y.max() > H + my:
        xy = K.clip_polygon(xy, float(-mx), float(-my), float(W + mx), float(H + my))
        if len(xy) < 6:
            return []
    if K.polygon_steps(xy) > MAX_POLYGON_STEPS:
        raise ValueError(f"polygon {n} has an outline of more than {MAX_POLYGON_STEPS} pixels "
                         "inside the image and its margin (segtext.limits.MAX_POLYGON_STEPS)")
    return xy.tolist()


def _layout(data: Any, name: str) -> tuple[list, dict[Any, tuple[int, int]], dict[Any, str]]:
    """(annotations, image id -> (H, W), category id -> name) of instances or results JSON."""
    if isinstance(data, list):
        return data, {}, {}
    if not isinstance(data, dict) or "annotations" not in data:
        found = type(data).__name__ + (f" with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else "")
        raise ValueError(f"{name}: expected COCO instances JSON (an object with 'annotations') "
                         f"or COCO results JSON (a list of annotations), got {found}")
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise ValueError(f"{name}: 'annotations' must be a list, got {type(anns).__name__}")
    sizes: dict[Any, tuple[int, int]] = {}
    for img in data.get("images") or []:
        if isinstance(img, dict) and isinstance(img.get("id"), (int, str)):
            try:
                sizes[img["id"]] = _size_value((img["height"], img["width"]), f"image {img['id']!r}")
            except (KeyError, ValueError):
                pass  # an image without a usable size: its polygons are reported when used
    names: dict[Any, str] = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and isinstance(cat.get("name"), str):
            names[cat.get("id")] = cat["name"]
    return anns, sizes, names


def _annotation(n: int, ann: Any, sizes: dict, names: dict) -> dict:
    if not isinstance(ann, dict):
        raise ValueError(f"expected an annotation object, got {type(ann).__name__}")
    seg = ann.get("segmentation")
    if seg is None or (isinstance(seg, (list, dict)) and len(seg) == 0):
        raise ValueError("no 'segmentation'")
    image_id = ann.get("image_id")
    size = sizes.get(image_id) if isinstance(image_id, (int, str)) else None
    if size is None and "height" in ann and "width" in ann:
        size = (ann["height"], ann["width"])
    if size is None and not isinstance(seg, dict):
        raise ValueError(f"cannot tell the image size of a polygon segmentation: image_id "
                         f"{image_id!r} has no entry with height and width in 'images'")
    rle = to_rle(seg, size)
    cat = ann.get("category_id")
    label = names.get(cat) if isinstance(cat, (int, str)) else None
    if label is None and isinstance(cat, int):
        label = COCO_CATEGORY_NAMES.get(cat)
    return {
        "index": n,
        "id": ann.get("id", n),
        "image_id": image_id,
        "category_id": cat,
        "label": label,
        "image_size": tuple(int(v) for v in rle["size"]),
        "segmentation": rle,
    }


def load_annotations(
    source: str | os.PathLike | list | dict,
    skip_invalid: bool = False,
    skipped: list | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Read COCO instance annotations or COCO results, with every mask as a COCO RLE.

    Accepts an instances file (a dict with ``"annotations"``, ``"images"`` and optionally
    ``"categories"``) or a results file (a list of annotations whose RLE carries its size),
    as a path or as already parsed JSON. Each returned dict has ``index`` (position in the
    input), ``id`` (the annotation id, or the index), ``image_id``, ``category_id``,
    ``label`` (category name from the file, else the COCO name, else ``None``),
    ``image_size`` ``(H, W)`` and ``segmentation`` as a COCO RLE dict (polygons are
    rasterised; RLE runs are checked where they are used).

    Args:
        source: JSON file path, or the parsed JSON.
        skip_invalid: leave out annotations whose segmentation cannot be read instead of
            raising.
        skipped: with ``skip_invalid``, a list that receives ``(index, id, reason)`` for
            each annotation left out.
        limit: read only the first ``limit`` annotations of the input.

    Raises:
        ValueError: bad JSON or layout, or (unless ``skip_invalid``) an annotation whose
            segmentation is unusable; the message names its index and id.
        OSError: the file cannot be read.

    Example:
        >>> import segtext as st
        >>> anns = st.coco.load_annotations(st.coco.SAMPLE_PATH)
        >>> len(anns), anns[0]["label"], anns[0]["image_size"]
        (734, 'dog', (478, 640))
        >>> st.coco.load_annotations([{"segmentation": []}], skip_invalid=True, skipped=(out := []))
        []
        >>> out
        [(0, 0, "no 'segmentation'")]
    """
    if isinstance(source, (list, dict)):
        data, name = source, "annotations"
    else:
        name = os.fspath(source)
        try:
            with open(source, "rb") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{name} is not valid JSON (not UTF-8 text): {e.reason}") from None
    anns, sizes, names = _layout(data, name)
    if limit is not None:
        anns = anns[:limit]
    out = []
    for n, ann in enumerate(anns):
        try:
            out.append(_annotation(n, ann, sizes, names))
        except (TypeError, ValueError) as e:
            aid = ann.get("id", n) if isinstance(ann, dict) else n
            if not skip_invalid:
                raise ValueError(f"{name}: annotation {n} (id {aid}): {e}") from None
            if skipped is not None:
                skipped.append((n, aid, str(e)))
    return out


def panoptic_to_label_map(
    panoptic: Any,
    segments_info: Sequence[dict],
    categories: Sequence[dict] | dict | None = None,
    instances: bool = True,
    background: str = "others",
) -> tuple[np.ndarray, list[str]]:
    """A COCO panoptic annotation as an integer label map and its label texts.

    Pixels of segment ``id`` (PNG colour ``R + 256*G + 256**2*B``) get the label of their
    category. With ``instances`` every "thing" segment is its own label, numbered per
    category in the order of its first pixel in raster order (``person 1``, ``person 2``,
    ...), while "stuff" categories keep one label each; without it, all segments of a
    category share its name. Unlabelled pixels (id 0, or ids missing from
    ``segments_info``) get label 0, ``background``.

    Args:
        panoptic: the panoptic PNG as an ``(H, W, 3)`` uint8 array, or its path.
        segments_info: the annotation's segments (``id``, ``category_id``).
        categories: COCO panoptic categories (``id``, ``name``, ``isthing``) as a list, or a
            dict ``id -> name`` (then every category is a thing); ``None`` uses the 80 COCO
            thing names.
        instances: label thing segments per instance.
        background: text of label 0.

    Returns:
        ``(label_map, labels)``: an ``int32`` ``(H, W)`` map and the text of each label id,
        ready for :func:`segtext.mask_to_grid` and :func:`segtext.encode_rrle`.

    Raises:
        ValueError / TypeError: a PNG that is not ``(H, W, 3)``, a segment without ``id`` or
            ``category_id``, an unknown category.

    Example:
        >>> import numpy as np, segtext as st
        >>> png = np.zeros((2, 3, 3), np.uint8); png[0, 1:, 0] = 7; png[1, 2, 0] = 9
        >>> cats = [{"id": 1, "name": "person", "isthing": 1}]
        >>> segs = [{"id": 7, "category_id": 1}, {"id": 9, "category_id": 1}]
        >>> m, labels = st.coco.panoptic_to_label_map(png, segs, cats)
        >>> m.tolist(), labels
        ([[0, 1, 1], [0, 0, 2]], ['others', 'person 1', 'person 2'])
    """
    if isinstance(panoptic, (str, os.PathLike)):
        from PIL import Image

        with Image.open(panoptic) as im:
            panoptic = np.asarray(im.convert("RGB"))
    rgb = np.asarray(panoptic)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"panoptic must be an (H, W, 3) uint8 array, got shape {rgb.shape}, dtype {rgb.dtype}")
    if categories is None:
        names, things = dict(COCO_CATEGORY_NAMES), set(COCO_CATEGORY_NAMES)
    elif isinstance(categories, dict):
        names, things = {int(k): str(v) for k, v in categories.items()}, set(map(int, categories))
    else:
        names = {int(c["id"]): str(c["name"]) for c in categories}
        things = {int(c["id"]) for c in categories if c.get("isthing", 1)}
    seg_ids, seg_cats = [], []
    for n, seg in enumerate(segments_info):
        if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
            raise ValueError(f"segments_info[{n}] needs 'id' and 'category_id'")
        if int(seg["category_id"]) not in names:
            raise ValueError(f"segments_info[{n}] has category_id {seg['category_id']}, not in categories")
        seg_ids.append(int(seg["id"]))
        seg_cats.append(int(seg["category_id"]))
    order = np.argsort(seg_ids, kind="stable")
    keys = np.array(seg_ids, np.int64)[order]
    ids = K.panoptic_ids(np.ascontiguousarray(rgb))
    # first pass: where each segment first appears; then number the labels in that order
    _, first = K.relabel(ids, keys, np.zeros(len(keys), np.int32), 0)
    labels = [background]
    label_of: dict[str, int] = {}
    per_category: dict[int, int] = {}
    values = np.zeros(len(keys), np.int32)
    for k in np.argsort(np.where(first < 0, np.iinfo(np.int64).max, first), kind="stable").tolist():
        if first[k] < 0:
            continue  # a segment with no pixel
        cat = seg_cats[order[k]]
        if instances and cat in things:
            per_category[cat] = per_category.get(cat, 0) + 1
            text = f"{names[cat]} {per_category[cat]}"
        else:
            text = names[cat]
        if text not in label_of:
            label_of[text] = len(labels)
            labels.append(text)
        values[k] = label_of[text]
    label_map, _ = K.relabel(ids, keys, values, 0)
    return label_map, labels


@lru_cache(maxsize=1)
def _sample() -> tuple[dict, ...]:
    with open(SAMPLE_PATH, encoding="utf-8") as f:
        return tuple(json.load(f))


def sample_annotations() -> list[dict]:
    """The bundled sample: 734 real COCO val2014 instance masks in COCO results format.

    Each item has ``image_id``, ``category_id``, ``score`` and ``segmentation`` (compressed
    RLE with its size). A fresh list of the same dicts is returned on each call.

    Example:
        >>> import segtext as st
        >>> anns = st.coco.sample_annotations()
        >>> len(anns), anns[0]["segmentation"]["size"]
        (734, [478, 640])
    """
    return list(_sample())
