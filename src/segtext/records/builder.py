"""Samples to records, and records to a JSON Lines file: in order, resumable, in parallel.

The output is written to ``OUTPUT.partial`` and renamed to ``OUTPUT`` only when every sample
is done, so a file under the final name is always complete. Records are appended a chunk at a
time and each chunk is flushed; after an interruption (Ctrl-C, a killed process), ``resume``
cuts a torn last line, finds the sample after the last complete record and goes on, so the
finished file is byte-identical to one written in a single run. With ``workers`` > 1 the samples
are encoded in worker processes and written in their input order, so the bytes do not depend on
the number of workers either.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtext.bricks import BOX_FORMATS, decode_bsd, encode_bsd
from segtext.coco import merge_rles, panoptic_to_label_map, rle_runs, to_rle
from segtext.grid import mask_to_grid, rle_to_grid
from segtext._validate import policy_code
from segtext.labels import BACKGROUND
from segtext.limits import MAX_RESOLUTION
from segtext.records.prompts import _PLACEHOLDER, Templates, default_templates
from segtext.records.sources import Sample, read_label_png, without_gc
from segtext.records.styles import STYLES, shape
from segtext.rrle import FORMATS, decode_rrle, encode_irle, encode_isd, encode_rrle, rle_to_text, rles_to_texts

__all__ = ["BuildSummary", "Options", "build", "encode_sample", "make_record"]

ENCODINGS = (*FORMATS, "bsd")
_ENCODERS = {"rrle": encode_rrle, "isd": encode_isd, "irle": encode_irle}
CHUNK = 2048  # samples per worker task, per batched encoder call and per flush of the output
_RESUME_BLOCK = 1 << 20  # bytes read at a time when a partial output is resumed
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))  # one line per record, made once


@dataclass(frozen=True)
class Options:
    """How samples become records.

    Attributes:
        encoding: ``"rrle"``, ``"isd"``, ``"irle"`` (a grid of ``grid_size``) or ``"bsd"``
            (boxes and bricks at ``resolution``).
        grid_size: ``(h, w)`` of the grid (I-SD family).
        resolution: bricks per box side (B-SD).
        policy: cell policy, ``"majority"`` (default), ``"nearest"`` (Text4Seg's data) or ``"any"``.
        threshold: foreground fraction for ``majority`` on binary masks.
        box_format: B-SD box spelling (``"norm1000"``, ``"qwen2vl"``, ``"pixel"``).
        style: the record layout, one of :data:`segtext.records.STYLES`.
        images: a folder the image file names are joined to (``None``: the names as they are).
        templates: the question and answer templates (``None``: the built-in ones).
        verify: decode every answer in strict mode and check it against the grid computed
            from the source mask (a ``ValueError`` if it differs).
        negatives: ``xsam`` style, semantic and instances samples: list this many categories
            absent from the image beside the present ones (X-SAM's sampled negatives; fewer
            when ``classes`` has fewer), drawn from ``classes`` and shuffled in with the present
            ones by the sample's own seeded generator.
        classes: the category names negatives are drawn from (:func:`dataset_classes` gives
            those of a list of samples); needed when ``negatives`` is set.

    Example:
        >>> from segtext.records import Options
        >>> Options(encoding="bsd", resolution=32).style
        'messages'
    """

    encoding: str = "rrle"
    grid_size: tuple[int, int] = (16, 16)
    resolution: int = 64
    policy: str = "majority"
    threshold: float = 0.5
    box_format: str = "norm1000"
    style: str = "messages"
    images: str | None = None
    templates: Templates | None = None
    verify: bool = False
    negatives: int = 0
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = self.negatives
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"negatives must be a non-negative int, got {n!r}")
        if self.classes is not None:
            names = self.classes
            if isinstance(names, str) or not all(isinstance(c, str) and c for c in names):
                raise ValueError("classes must be a list of non-empty str (the category names negatives are "
                                 f"drawn from), got {names!r}")
            object.__setattr__(self, "classes", tuple(dict.fromkeys(names)))
        if n and self.style != "xsam":
            raise ValueError(f"negatives are listed in xsam records only (style='xsam'), not style={self.style!r}")
        if n and not self.classes:
            raise ValueError("negatives need classes, the category names to draw them from "
                             "(segtext.records.dataset_classes(samples) gives them)")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {tuple(BOX_FORMATS)}, got {self.box_format!r}")
        policy_code(self.policy, self.threshold)  # a bad policy or threshold fails here, not per sample
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) \
                or not 1 <= self.resolution <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be an int in 1..{MAX_RESOLUTION}, got {self.resolution!r}")
        gs = self.grid_size
        if isinstance(gs, int) and not isinstance(gs, bool):
            object.__setattr__(self, "grid_size", (gs, gs))
        elif not (isinstance(gs, tuple) and len(gs) == 2 and all(isinstance(v, int) and v > 0 for v in gs)):
            raise ValueError(f"grid_size must be an int or (h, w), got {gs!r}")


def _rles(sample: Sample, check_runs: bool = False) -> list[dict]:
    """The targets of a sample as compressed COCO RLE (str counts) of the image size.

    The layout and size are checked here; the runs of a compressed string are checked by the
    encoder that reads them (``check_runs`` checks them here, for the paths that hand the RLE
    to pycocotools); other forms are converted (which checks their runs)."""
    H, W = sample.image_size
    out = []
    for t in sample.targets:
        try:
            rle = to_rle(t.segmentation, (H, W))
            if not isinstance(rle["counts"], str):
                rle = merge_rles([rle])  # bytes or uncompressed counts: checked and compressed
            elif check_runs:
                rle_runs(rle)
            out.append(rle)
        except (TypeError, ValueError) as e:
            raise ValueError(f"annotation {t.ann_id!r}: {e}") from None
    return out


def _label_map(rles: list[dict], ids: list[int], size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` int32 map: each mask painted with its id, in order (later masks win)."""
    import pycocotools.mask as mask_util

    out = np.zeros(size, np.int32)
    for rle, v in zip(rles, ids):
        m = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        out[m.astype(bool)] = v
    return out


def _wrap(text: str) -> str:
    return "<seg>" + text + "</seg>"


def encode_sample(sample: Sample, options: Options) -> tuple[str, dict]:
    """The mask text of a sample (``<seg>``-wrapped in the I-SD family, B-SD blocks as they
    are) and the fields a scorer needs.

    Raises:
        ValueError: a target that cannot be read or encoded (naming the sample), a phrase
            that cannot be a label (it holds ``"| "`` or a newline, or is ``"others"``), or,
            with ``verify``, an answer that does not decode back to the computed grid.

    Example:
        >>> from segtext.records import Options, Sample, Target, encode_sample
        >>> s = Sample("s", "referring", "a.jpg", 1, (2, 4), [Target("cat", {"size": [2, 4], "counts": [4, 4]})], "cat")
        >>> encode_sample(s, Options(grid_size=(1, 2)))[0]
        '<seg>others *1| cat *1\\n</seg>'
    """
    try:
        return _encode(sample, options)
    except (TypeError, ValueError) as e:
        ids = [t.ann_id for t in sample.targets if t.ann_id is not None]
        where = f"image {sample.image_id!r}"
        if ids and "annotation " not in str(e):
            where += (f", annotation {ids[0]!r}" if len(ids) == 1 else
                      ", annotations " + ", ".join(map(repr, ids)))
        raise ValueError(f"sample {sample.id} ({where}): {e}") from None


def _png_parts(sample: Sample) -> tuple[tuple[int, int], np.ndarray, list[str], int | None, list[str]]:
    """``((H, W), label map, labels, ignore index, B-SD label of each id)`` of a panoptic or
    semantic-map sample, read from its PNG."""
    info = sample.label_info or {}
    try:
        png = read_label_png(sample.label_png)
    except ValueError as e:
        raise ValueError(f"{sample.label_png}: {e}") from None
    if info.get("kind") == "panoptic":
        if png.ndim != 3 or png.shape[2] != 3:
            raise ValueError(f"{sample.label_png}: not an RGB picture (a panoptic PNG holds segment ids as "
                             "R + 256*G + 256**2*B)")
        ids = (png[..., 0].astype(np.int64) + 256 * png[..., 1].astype(np.int64)
               + 65536 * png[..., 2].astype(np.int64))
        known = {seg.get("id") for seg in info["segments_info"] if isinstance(seg, dict)}
        unknown = [int(v) for v in np.unique(ids) if v != 0 and int(v) not in known]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise ValueError(f"{sample.label_png}: segment id {unknown[0]} is in the PNG but not in "
                             f"segments_info{more}")
        label_map, labels = panoptic_to_label_map(png, info["segments_info"], info["categories"],
                                                  instances=sample.task == "instances")
        things = {c["name"] for c in info["categories"] if c.get("isthing", 1)}
        block_names = [lab.rsplit(" ", 1)[0] if sample.task == "instances" and lab.rsplit(" ", 1)[0] in things
                       and lab.rsplit(" ", 1)[-1].isdigit() else lab for lab in labels]
        ignore = None
    else:
        if png.ndim != 2:
            raise ValueError(f"{sample.label_png}: not a single-channel label map (expected a PNG of mode L, P, "
                             "I or I;16)")
        labels = list(info["classes"])
        ignore = info.get("ignore_index")
        values = np.unique(png)
        beyond = [int(v) for v in values if int(v) >= len(labels) and int(v) != ignore]
        if beyond:
            raise ValueError(f"{sample.label_png}: pixel value {beyond[0]} is beyond the classes ({len(labels)} "
                             f"names, ids 0..{len(labels) - 1})"
                             + ("" if ignore is not None else "; give the ignore index of unlabelled pixels"))
        label_map = png.astype(np.int32)
        block_names = labels
    size = tuple(int(v) for v in label_map.shape)
    if sample.image_size is not None and tuple(sample.image_size) != size:
        raise ValueError(f"{sample.label_png}: the PNG is {size[0]}x{size[1]} pixels, the image entry says "
                         f"{sample.image_size[0]}x{sample.image_size[1]}")
    return size, label_map, labels, ignore, block_names


def _rle_of(mask: np.ndarray) -> dict:
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _encode_png(sample: Sample, o: Options) -> tuple[str, dict, tuple[int, int]]:
    (H, W), label_map, labels, ignore, block_names = _png_parts(sample)
    present = [int(v) for v in np.unique(label_map) if v != 0 and v != ignore and v < len(labels)]
    score = {"segments": [{"label": labels[v], "segmentation": _rle_of(label_map == v)} for v in present]}
    if o.style == "xsam":  # X-SAM names each mask by its category ("person", not "person 2")
        for seg, v in zip(score["segments"], present):
            seg["class"] = block_names[v]
    if o.encoding == "bsd":
        objects = [(block_names[v], label_map == v) for v in present]
        text = encode_bsd(objects, (H, W), o.resolution, o.policy, o.threshold, box_format=o.box_format)
        if o.verify:
            _verify_bsd(text, [name for name, _ in objects], (H, W), o)
        return text, score, (H, W)
    grid = mask_to_grid(label_map, o.grid_size, o.policy, o.threshold, ignore_index=ignore)
    text = _ENCODERS[o.encoding](grid, labels)
    if o.verify:
        _verify_grid(text, labels, grid, o)
    return _wrap(text), score, (H, W)


def _encode(sample: Sample, o: Options) -> tuple[str, dict]:
    if sample.label_png is not None:
        text, score, size = _encode_png(sample, o)
        score["image_size"] = [size[0], size[1]]
        return text, score
    H, W = sample.image_size
    rles = _rles(sample, check_runs=sample.task == "instances")
    if sample.task == "referring":
        phrase = sample.phrase or ""
        union = None if not rles else (rles[0] if len(rles) == 1 else merge_rles(rles))
        score = {"label": phrase, "segmentation": union}
        if o.encoding == "bsd":
            text = encode_bsd([(phrase, r) for r in rles], (H, W), o.resolution, o.policy, o.threshold,
                              box_format=o.box_format)
            if o.verify:
                _verify_bsd(text, [phrase] * len(rles), (H, W), o)
            return text, score
        if union is None:
            grid = np.zeros(o.grid_size, np.int32)
            text = _ENCODERS[o.encoding](grid, [BACKGROUND])
            labels = [BACKGROUND]
        else:
            text = rle_to_text(union, phrase, o.grid_size, o.policy, o.threshold, o.encoding)
            labels = [BACKGROUND, phrase]
            grid = rle_to_grid(union, o.grid_size, o.policy, o.threshold) if o.verify else None
        if o.verify:
            _verify_grid(text, labels, grid, o)
        return _wrap(text), score
    if sample.task not in ("semantic", "instances"):
        raise ValueError(f"unknown task {sample.task!r}")
    if sample.task == "semantic":  # the masks of a class merged, classes in order of appearance
        names = list(dict.fromkeys(t.label for t in sample.targets))
        parts = [merge_rles([r for r, t in zip(rles, sample.targets) if t.label == n]) for n in names]
    else:  # every instance on its own: 'cat 1', 'cat 2', ... in the grid texts
        names, seen = [], {}
        for t in sample.targets:
            seen[t.label] = seen.get(t.label, 0) + 1
            names.append(f"{t.label} {seen[t.label]}" if o.encoding != "bsd" else t.label)
        parts = rles
    score = {"segments": [{"label": n, "segmentation": r} for n, r in zip(names, parts)]}
    if o.style == "xsam" and sample.task == "instances":  # X-SAM names a category ("cat", not "cat 2")
        for seg, t in zip(score["segments"], sample.targets):
            seg["class"] = t.label
    if o.encoding == "bsd":
        text = encode_bsd(list(zip(names, parts)), (H, W), o.resolution, o.policy, o.threshold,
                          box_format=o.box_format, skip_empty=True)
        if o.verify:
            _verify_bsd(text, [n for n, r in zip(names, parts) if _area(r)], (H, W), o)
        return text, score
    labels = [BACKGROUND, *names]
    grid = mask_to_grid(_label_map(parts, list(range(1, len(parts) + 1)), (H, W)), o.grid_size, o.policy,
                        o.threshold)
    text = _ENCODERS[o.encoding](grid, labels)
    if o.verify:
        _verify_grid(text, labels, grid, o)
    return _wrap(text), score


def _area(rle: dict) -> int:
    from segtext.coco import decode_counts

    return int(decode_counts(rle["counts"])[1::2].sum())


def _verify_grid(text: str, labels: list[str], grid: np.ndarray, o: Options) -> None:
    res = decode_rrle(text, labels, o.grid_size, mode="strict")
    if not np.array_equal(res.grid, grid):
        raise ValueError("verify: the answer does not decode to the grid computed from the mask")


def _verify_bsd(text: str, labels: list[str], size: tuple[int, int], o: Options) -> None:
    res = decode_bsd(text, size, o.resolution, mode="strict", box_format=o.box_format)
    got = [obj.label for obj in res.objects]
    if got != labels:
        raise ValueError(f"verify: the answer decodes to the objects {got}, expected {labels}")


def _batch_texts(samples: Sequence[Sample], o: Options) -> tuple[list[int], list[str | None]]:
    """``(indices, mask texts)`` of the referring samples of ``samples`` with one target given as
    compressed COCO RLE (str counts) of the image's size, encoded in one compiled call
    (``st.rles_to_texts``; not yet ``<seg>``-wrapped). A sample the call refuses gets ``None``
    (found by halving the batch) and goes one by one, so that what is wrong with it is said;
    the others stay batched."""
    if o.encoding == "bsd" or o.verify:
        return [], []
    idx, segs, labels = [], [], []
    for k, s in enumerate(samples):
        if s.task != "referring" or s.label_png is not None or len(s.targets) != 1:
            continue
        seg = s.targets[0].segmentation
        if type(seg) is not dict or type(seg.get("counts")) is not str:
            continue
        size, hw = seg.get("size"), s.image_size
        if type(size) is list and len(size) == 2 and hw is not None and size[0] == hw[0] and size[1] == hw[1]:
            idx.append(k)
            segs.append(seg)
            labels.append(s.phrase or "")
    if not idx:
        return [], []

    def texts(lo: int, hi: int) -> list[str | None]:
        try:
            return rles_to_texts(segs[lo:hi], labels[lo:hi], o.grid_size, o.policy, o.threshold, o.encoding)
        except (TypeError, ValueError):
            if hi - lo == 1:
                return [None]
            mid = (lo + hi) // 2
            return texts(lo, mid) + texts(mid, hi)

    return idx, texts(0, len(idx))


# ----------------------------------------------------------------------------- JSON lines, fast
# A record line is json.dumps of the record (ensure_ascii=False, separators ", " and ": "). JSON
# escaping is character by character, so the escape of a concatenation is the concatenation of the
# escapes: each line is put together from escaped pieces, the constant ones made once (the
# template text around the phrase, the image's fields) and only the sample's own strings escaped
# per record. tests/test_records_bytes.py pins the bytes against json.dumps of make_record.

_MARKERS: dict = {}  # the circular-reference markers of the reusable C encoder (emptied after an error)
_C_ENCODE = (json.encoder.c_make_encoder(_MARKERS, _JSON.default, json.encoder.encode_basestring, None,
                                         _JSON.key_separator, _JSON.item_separator, False, False, True)
             if json.encoder.c_make_encoder is not None else None)
_esc = json.encoder.encode_basestring  # str -> its JSON string (quotes included), as _JSON writes it


def _dumps(obj: Any) -> str:
    """``_JSON.encode(obj)``, the same text, without making a new C encoder at each call."""
    if _C_ENCODE is None:  # pragma: no cover - CPython always has the C encoder
        return _JSON.encode(obj)
    try:
        return "".join(_C_ENCODE(obj, 0))
    except BaseException:
        _MARKERS.clear()
        raise


def _fill_pieces(template: str, phrase: str) -> list[str]:
    """The parts of ``_fill(template, phrase, mask)`` between the places the mask goes, for any
    mask: ``mask.join(parts) == _fill(template, phrase, mask)`` (the same one-pass or
    replace-twice rule as :func:`segtext.records.prompts._fill`)."""
    if "{" not in phrase:
        return template.replace("{phrase}", phrase).split("{mask}")
    out = [""]
    for k, part in enumerate(_PLACEHOLDER.split(template)):
        if k % 2 == 0:
            out[-1] += part
        elif part == "phrase":
            out[-1] += phrase
        else:
            out.append("")
    return out


# per style: (text before the question, what comes between the id and the question's JSON string,
# between the question and the answer, after the answer (then the image part))
_STYLE_PARTS = {
    "messages": ("<image>", ', "messages": [{"role": "user", "content": "', '"}, {"role": "assistant", "content": "',
                 '"}], "images": ['),
    "llava": ("<image>\n", ', "conversations": [{"from": "human", "value": "', '"}, {"from": "gpt", "value": "', '"}]'),
    "prompt-completion": ("<image>", ', "prompt": [{"role": "user", "content": "',
                          '"}], "completion": [{"role": "assistant", "content": "', '"}], "images": ['),
}
_STYLE_PARTS["xsam"] = _STYLE_PARTS["llava"]
_CACHE_LIMIT = 1 << 16  # entries of each piece cache (emptied when full: a cache, not a leak)
_HEADS: dict[str, dict] = {}  # style -> {(question, answer, phrase): _head(...)}
_IMAGES: dict[tuple, dict] = {}  # (style, images) -> {(image, image_id, image_size): _image_parts(...)}
_LOW64 = (1 << 64) - 1


def _head(style: str, question: str, answer: str, phrase: str, label: str) -> tuple:
    """``(head, tail, label part, plain)`` of the line of a sample whose question holds no mask and
    whose answer holds it once (the line has ``head`` + escaped mask + ``tail``), or ``(None,
    (question parts, answer parts), label part, plain)``: the escaped template pieces for one
    phrase; ``plain``: the label needs no JSON escape."""
    prefix, before_q, between, after_a = _STYLE_PARTS[style]
    q = [_esc(x)[1:-1] for x in _fill_pieces(prefix + question, phrase)]
    a = [_esc(x)[1:-1] for x in _fill_pieces(answer, phrase)]
    lab = ', "label": ' + _dumps(label) + ', "segmentation": '
    # a label JSON keeps as it is: the mask text (labels, digits, " *", "| ", newlines) escapes by
    # turning each newline into \n; any other label: the text goes through the escaper
    plain = type(label) is str and "\n" not in label and _esc(label) == '"' + label + '"'
    if len(q) == 1 and len(a) == 2:
        return before_q + q[0] + between + a[0], a[1] + after_a, lab, plain
    return None, (q, a), lab, plain


def _image_parts(style: str, images: str | None, image: Any, image_id: Any,
                 size: tuple[int, int]) -> tuple[str, str]:
    """``(before the question, after the answer)``: the image's part of a line (its path, joined
    to ``images`` when given, where the style puts it, then ``image_id`` and ``image_size``)."""
    H, W = int(size[0]), int(size[1])
    eimg = _dumps(image if images is None else os.path.join(images, image))
    size_part = ', "image_id": ' + _dumps(image_id) + ', "image_size": [' + repr(H) + ", " + repr(W) + "]"
    if style in ("llava", "xsam"):
        return ', "image": ' + eimg, size_part
    return "", eimg + "]" + size_part


def _fast_lines(samples: Sequence[Sample], o: Options, seed: int) -> list[str | None]:
    """The JSON line of each sample of a chunk that is encoded in one compiled call (``None`` for
    the others, which go through :func:`record_line`): the bytes :func:`line_of` writes for the
    record of :func:`_record_parts`, put together from escaped pieces (the constant ones cached:
    the templates filled with a phrase, an image's fields)."""
    out: list[str | None] = [None] * len(samples)
    idx, texts = _batch_texts(samples, o)
    if not idx:
        return out
    templates = o.templates or _DEFAULT_TEMPLATES
    qs, ans = templates.questions["referring"], templates.answers["referring"]
    nq, na = len(qs), len(ans)
    style, images = o.style, o.images
    xsam = style == "xsam"
    heads = _HEADS.setdefault(style, {})
    imgs = _IMAGES.setdefault((style, images), {})
    if len(heads) > _CACHE_LIMIT:
        heads.clear()
    if len(imgs) > _CACHE_LIMIT:
        imgs.clear()
    seed_bytes = f"{seed}\0".encode("utf-8")
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    esc, dumps, low = _esc, _dumps, _LOW64
    newline, escaped_newline, backslash, escaped_backslash = "\n", "\\n", "\\", "\\\\"
    background_plain = _esc(BACKGROUND) == '"' + BACKGROUND + '"'  # the other label of every mask text
    for k, text in zip(idx, texts):
        if text is None:
            continue
        s = samples[k]
        try:
            sid = s.id
            if type(sid) is str:  # the draws of Templates.choose: two numbers off the hash of seed and id
                d = from_bytes(blake2b(seed_bytes + sid.encode("utf-8"), digest_size=16).digest(), "big")
                eid = esc(sid)
            else:
                d = from_bytes(blake2b(f"{seed}\0{sid}".encode("utf-8"), digest_size=16).digest(), "big")
                eid = dumps(sid)
            q, a, phrase = qs[(d >> 64) % nq], ans[(d & low) % na], s.phrase
            head = heads.get((q, a, phrase))
            if head is None:
                label = phrase or ""
                head = heads[(q, a, phrase)] = _head(style, q, a, f"<p>{phrase}</p>" if xsam else label, label)
            head, tail, lab, plain = head
            image, image_id, size = s.image, s.image_id, s.image_size
            if type(image) is str and (type(image_id) is int or type(image_id) is str):
                ikey = (image, image_id, size)
                parts = imgs.get(ikey)
                if parts is None:
                    parts = imgs[ikey] = _image_parts(style, images, image, image_id, size)
            else:
                parts = _image_parts(style, images, image, image_id, size)
            before, after = parts
            seg = s.targets[0].segmentation
            h, w = seg["size"]
            if len(seg) == 2 and type(h) is int and type(w) is int and next(iter(seg)) == "size":
                # counts the batched call decoded hold only COCO's characters '0'..'o' (it refuses any
                # other, tests/test_records_bytes.py checks): of those only the backslash is escaped
                segj = f'{{"size": [{h}, {w}], "counts": "{seg["counts"].replace(backslash, escaped_backslash)}"}}'
            else:
                segj = dumps(seg)
            if xsam:
                mask, segj = "<SEG>", f"[{segj}]"
            elif plain and background_plain:
                mask = f"<seg>{text.replace(newline, escaped_newline)}</seg>"
            else:
                mask = f"<seg>{esc(text)[1:-1]}</seg>"
            if head is None:  # a question that holds the mask, or an answer that does not hold it once
                qp, ap = tail
                _, before_q, between, after_a = _STYLE_PARTS[style]
                head, mask, tail = before_q + mask.join(qp) + between + mask.join(ap) + after_a, "", ""
            src = s.source
            if not src:
                end = ', "task": "referring"}'
            elif type(src) is dict and len(src) == 2:  # read_coco's {"ann_ids": [id], "category_id": id}, by hand
                (k1, v1), (k2, v2) = src.items()
                if k1 == "ann_ids" and k2 == "category_id" and type(v2) is int and type(v1) is list \
                        and len(v1) == 1 and type(v1[0]) is int:
                    end = f', "task": "referring", "source": {{"ann_ids": [{v1[0]}], "category_id": {v2}}}}}'
                else:
                    end = f', "task": "referring", "source": {dumps(src)}}}'
            else:
                end = f', "task": "referring", "source": {dumps(src)}}}'
            out[k] = f'{{"id": {eid}{before}{head}{mask}{tail}{after}{lab}{segj}{end}'
        except Exception:  # noqa: BLE001 - anything unusual: this sample goes the general way, which says what
            out[k] = None
    return out


def make_record(sample: Sample, options: Options, seed: int = 0) -> dict:
    """One record of a sample: a question and an answer drawn from the templates (seeded by
    ``seed`` and the sample id), the mask text in the answer, the scoring fields.

    Example:
        >>> from segtext.records import Options, Sample, Target, make_record
        >>> s = Sample("s", "referring", "a.jpg", 1, (2, 4), [Target("cat", {"size": [2, 4], "counts": [4, 4]})], "cat")
        >>> rec = make_record(s, Options(grid_size=(1, 2), style="llava"))
        >>> rec["id"], rec["image"], rec["image_size"], rec["label"]
        ('s', 'a.jpg', [2, 4], 'cat')
    """
    return _record(sample, options, seed, None)


def _record(sample: Sample, options: Options, seed: int, encoded: tuple[str, dict] | None) -> dict:
    return shape(*_record_parts(sample, options, seed, encoded))


def _record_parts(sample: Sample, options: Options, seed: int,
                  encoded: tuple[str, dict] | None) -> tuple[str, str, str, str, str, dict]:
    """The arguments of :func:`~segtext.records.styles.shape` for one sample's record."""
    mask, score = encode_sample(sample, options) if encoded is None else (encoded[0], dict(encoded[1]))
    templates = options.templates or _DEFAULT_TEMPLATES
    kind = sample.task
    if kind == "referring":
        kind = "no_target" if not sample.targets else ("multi_target" if len(sample.targets) > 1 else "referring")
    phrase = sample.phrase
    classes = None
    if options.style == "xsam":  # X-SAM: the phrase as <p>...</p>, one <SEG> per answer
        mask = "<SEG>" if sample.targets or score.get("segments") else ""
        if sample.task == "referring":
            phrase = f"<p>{sample.phrase}</p>"
            score["segmentation"] = [score["segmentation"]] if sample.targets else []
        else:  # the categories in the question, every mask in segmentation with its category's index
            segments = score.pop("segments")
            names = [seg.get("class", seg["label"]) for seg in segments]
            classes = list(dict.fromkeys(names))
            if options.negatives:
                classes = _with_negatives(classes, options, seed, sample.id)
            score["segmentation"] = [seg["segmentation"] for seg in segments]
            score["classes"] = classes
            score["segment_classes"] = [classes.index(n) for n in names]
    question, answer = templates.choose(kind, phrase, mask, seed, sample.id)
    if classes:
        question = f"{question.rstrip()} Categories: {', '.join(f'<p>{c}</p>' for c in classes)}."
    image = sample.image if options.images is None else os.path.join(options.images, sample.image)
    size = score.pop("image_size", None) or [int(sample.image_size[0]), int(sample.image_size[1])]
    fields = {"image_id": sample.image_id, "image_size": size}
    fields.update(score)
    fields["task"] = sample.task
    if sample.source:
        fields["source"] = sample.source
    return options.style, sample.id, image, question, answer, fields


def _with_negatives(present: list[str], options: Options, seed: int, sample_id: Any) -> list[str]:
    """``present`` and up to ``options.negatives`` absent categories of ``options.classes``, in an
    order drawn (like the sample's templates) from the build's seed and the sample's id."""
    rng = random.Random(hashlib.blake2b(f"negatives\0{seed}\0{sample_id}".encode("utf-8"), digest_size=16).digest())
    known = set(present)
    absent = [c for c in options.classes or () if c not in known]
    listed = present + rng.sample(absent, min(options.negatives, len(absent)))
    rng.shuffle(listed)
    return listed


_DEFAULT_TEMPLATES = default_templates()


@dataclass
class BuildSummary:
    """What :func:`build` did.

    Attributes:
        output: the file written.
        records: records in the output (those of earlier runs included when resumed).
        written: records written by this run.
        skipped: samples left out as invalid by this run (with ``skip_invalid``).
        problems: one message per skipped sample.
        resumed_after: records found in the partial output when resuming (0 otherwise).
        seconds: wall time of this run.
        answer_tokens: with a ``tokenizer``, ``{"mean", "p95", "max"}`` of the answer lengths in
            tokens of the records this run wrote (``None`` without one).

    Example:
        >>> from segtext.records import BuildSummary
        >>> BuildSummary("out.jsonl", 10, 10, 0, [], 0, 2.0).rate
        5.0
    """

    output: str
    records: int
    written: int
    skipped: int
    problems: list[str]
    resumed_after: int
    seconds: float
    answer_tokens: dict[str, float] | None = field(default=None)

    @property
    def rate(self) -> float:
        """Records written per second by this run."""
        return self.written / self.seconds if self.seconds > 0 else float("inf")


def record_line(sample: Sample, options: Options, seed: int, skip_invalid: bool,
                encoded: tuple[str, dict] | None = None) -> tuple[str | None, str | None]:
    """``(JSON line, None)`` of a sample's record as :func:`build` writes it, or, for an invalid
    sample with ``skip_invalid``, ``(None, the reason)`` (without, the ValueError is raised).
    ``encoded`` is the sample's ``encode_sample`` result when already computed."""
    try:
        parts = _record_parts(sample, options, seed, encoded)
    except ValueError as e:
        if not skip_invalid:
            raise
        return None, str(e)
    return line_of(*parts), None


def line_of(style: str, record_id: str, image: str, question: str, answer: str, fields: dict) -> str:
    """``json.dumps(shape(...))`` (with ``ensure_ascii=False`` and the separators ``", "`` and
    ``": "``), the same bytes, written from the JSON of each part: no record dict is built and
    walked (the tests check the two agree for every style)."""
    enc = _dumps
    tail = enc({k: v for k, v in fields.items() if k not in _CONVERSATION_KEYS})
    rest = ", " + tail[1:] if len(tail) > 2 else "}"
    if style == "messages":
        return ('{"id": ' + enc(record_id) + ', "messages": [{"role": "user", "content": ' + enc("<image>" + question)
                + '}, {"role": "assistant", "content": ' + enc(answer) + '}], "images": [' + enc(image) + "]" + rest)
    if style in ("llava", "xsam"):
        return ('{"id": ' + enc(record_id) + ', "image": ' + enc(image) + ', "conversations": [{"from": "human", '
                '"value": ' + enc("<image>\n" + question) + '}, {"from": "gpt", "value": ' + enc(answer) + "}]" + rest)
    if style == "prompt-completion":
        return ('{"id": ' + enc(record_id) + ', "prompt": [{"role": "user", "content": ' + enc("<image>" + question)
                + '}], "completion": [{"role": "assistant", "content": ' + enc(answer) + '}], "images": ['
                + enc(image) + "]" + rest)
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


# keys of the conversation part of a record: shape() never lets a scoring field replace them
_CONVERSATION_KEYS = frozenset({"id", "messages", "images", "image", "conversations", "prompt", "completion"})


def _chunk_lines(args: tuple) -> tuple[list[str], list[str]]:
    """``(lines, problems)`` of a chunk of samples: the JSON line of each valid sample, in order,
    and the reason each invalid one was left out (with ``skip_invalid``; see :func:`record_line`)."""
    samples, options, seed, skip_invalid = args
    lines = _fast_lines(samples, options, seed)
    if None not in lines:
        return lines, []
    good, problems = [], []
    for s, line in zip(samples, lines):
        if line is None:
            line, problem = record_line(s, options, seed, skip_invalid)
            if line is None:
                problems.append(problem)
                continue
        good.append(line)
    return good, problems


def _resume_point(partial: str, samples: Sequence[Sample]) -> tuple[int, int]:
    """``(complete records, index of the next sample)`` of a partial output, its torn last line cut.

    Read in blocks (a partial output may be gigabytes): the lines are counted, the torn tail is
    cut at the last newline, and only the last complete line is parsed."""
    block = _RESUME_BLOCK
    lines = 0
    last_nl = -1
    with open(partial, "rb+") as f:
        pos = 0
        while True:
            data = f.read(block)
            if not data:
                break
            lines += data.count(b"\n")
            k = data.rfind(b"\n")
            if k >= 0:
                last_nl = pos + k
            pos += len(data)
        if last_nl + 1 < pos:
            f.seek(last_nl + 1)
            f.truncate()
        if lines == 0:
            return 0, 0
        start = last_nl
        while start > 0:  # back to the newline before the last complete line
            step = min(block, start)
            f.seek(start - step)
            chunk = f.read(step)
            k = chunk.rfind(b"\n")
            if k >= 0:
                start = start - step + k + 1
                break
            start -= step
        f.seek(start)
        last_line = f.read(last_nl - start)
    try:
        last = json.loads(last_line)["id"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{partial}: its last complete line is not a record; delete the file to start over") from None
    for k, s in enumerate(samples):
        if s.id == last:
            return lines, k + 1
    raise ValueError(f"{partial}: its last record {last!r} is not among this build's samples: the inputs or "
                     "options changed; delete the file to start over")


@without_gc
def build(
    samples: Sequence[Sample],
    output: str | os.PathLike,
    options: Options = Options(),
    seed: int = 0,
    workers: int = 1,
    resume: bool = False,
    skip_invalid: bool = False,
    progress: bool = False,
    tokenizer: Callable[[str], Sequence[int]] | Any = None,
    backend: str = "processes",
) -> BuildSummary:
    """Write the records of ``samples`` to a JSON Lines file.

    Args:
        samples: from a source reader (their order is the file's order).
        output: the ``.jsonl`` file; written as ``output + ".partial"`` and renamed at the end.
        options: encoding, style, templates, ``verify`` (see :class:`Options`).
        seed: seeds the template choices (with each sample id).
        workers: processes encoding samples (the bytes written do not depend on it).
        resume: continue an interrupted build from ``output + ".partial"``.
        skip_invalid: leave out samples that cannot be encoded, counted in the summary,
            instead of stopping at the first.
        progress: show a progress bar on stderr.
        tokenizer: a Hugging Face tokenizer (or an object with ``encode(text,
            add_special_tokens=False)``, or any callable returning token ids) to measure the
            answers: mean, p95 (numpy's linear percentile) and max tokens in the summary,
            special tokens not counted. It is tried on a short answer before anything is written.
        backend: ``"processes"`` (``workers`` local processes) or ``"ray"``: the chunks of
            samples become a Ray Data dataset mapped with ``map_batches`` on the cluster
            :func:`ray.init` connected to (one machine or many; start it first, passing
            ``NUMBA_CACHE_DIR`` to the workers in ``runtime_env`` to share the compiled
            kernels), in order, so the bytes written are the same as with one process.

    Returns:
        :class:`BuildSummary`.

    Raises:
        ValueError: an invalid sample (without ``skip_invalid``), a partial output left by an
            earlier run while ``resume`` is False, a partial output that does not belong to
            these samples, no record at all to write, a tokenizer that fails on a test answer.
        TypeError: a ``tokenizer`` that is neither a tokenizer nor a callable.
        KeyboardInterrupt: passed on after the records written so far are flushed to the
            partial output (resume later with ``resume=True``).

    Example:
        >>> import os, tempfile
        >>> from segtext.records import Options, Sample, Target, build
        >>> s = Sample("s", "referring", "a.jpg", 1, (2, 4), [Target("cat", {"size": [2, 4], "counts": [4, 4]})], "cat")
        >>> out = os.path.join(tempfile.mkdtemp(), "train.jsonl")
        >>> build([s], out, Options(grid_size=(1, 2))).records
        1
    """
    t0 = time.perf_counter()
    output = os.fspath(output)
    partial = output + ".partial"
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ValueError(f"output directory does not exist: {directory}")
    if backend not in ("processes", "ray"):
        raise ValueError(f"backend must be 'processes' or 'ray', got {backend!r}")
    if backend == "ray":
        _check_ray()
    count = None if tokenizer is None else _token_counter(tokenizer)  # a bad tokenizer fails before any write
    samples = list(samples)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"sample id {dup!r} occurs more than once: ids must be unique within a build")
    done, start = 0, 0
    if os.path.exists(partial):
        if not resume:
            raise ValueError(f"{partial} exists (an interrupted build): pass resume to continue it, "
                             "or delete it to start over")
        done, start = _resume_point(partial, samples)
    todo = samples[start:]
    chunks = [(todo[i:i + CHUNK], options, seed, skip_invalid) for i in range(0, len(todo), CHUNK)]
    problems: list[str] = []
    written = 0
    lengths: list[int] = []
    pool = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), initial=start, unit="sample", file=sys.stderr, dynamic_ncols=True,
                   delay=0.5, leave=False)
    with open(partial, "a", encoding="utf-8", newline="\n") as f:
        try:
            if backend == "ray" and chunks:
                results = _ray_results(chunks)
            elif workers > 1 and len(chunks) > 1:
                import multiprocessing as mp

                pool = mp.get_context("spawn").Pool(workers)
                results = pool.imap(_chunk_lines, chunks)
            else:
                results = map(_chunk_lines, chunks)
            for chunk, (good, bad) in zip(chunks, results):
                problems.extend(bad)
                if good:
                    f.write("\n".join(good))
                    f.write("\n")
                    f.flush()
                written += len(good)
                if count is not None and good:
                    lengths.extend(count([_answer_of(line) for line in good]))
                if bar is not None:
                    bar.update(len(chunk[0]))
        except BaseException as e:
            f.flush()
            if pool is not None:
                pool.terminate()
            if bar is not None:
                bar.close()
            if isinstance(e, ValueError):  # an invalid sample: what was written is kept, and said so
                raise ValueError(f"{e}; the {done + written} record(s) written so far are kept in {partial}: "
                                 "fix the input or skip invalid samples, then resume") from None
            raise
        f.flush()
        os.fsync(f.fileno())
    if pool is not None:
        pool.close()
        pool.join()
    if bar is not None:
        bar.close()
    if done + written == 0:
        os.unlink(partial)
        raise ValueError("nothing to write: " + (f"all {len(samples)} samples were invalid" if samples
                                                 else "the source gave no samples"))
    os.replace(partial, output)
    summary = BuildSummary(output, done + written, written, len(problems), problems, done,
                           time.perf_counter() - t0)
    if lengths:
        arr = np.array(lengths)
        summary.answer_tokens = {"mean": float(arr.mean()), "p95": float(np.percentile(arr, 95)),
                                 "max": float(arr.max())}
    return summary


def _ray_chunk(batch: dict) -> dict:
    """Ray Data ``map_batches`` function: pickled chunk arguments in, pickled lines out."""
    import pickle

    return {"k": list(batch["k"]), "lines": [pickle.dumps(_chunk_lines(pickle.loads(blob)))
                                             for blob in batch["chunk"]]}


def _check_ray() -> None:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError("backend='ray' needs Ray Data (pip install 'ray[data]')") from None
    if not ray.is_initialized():
        raise ValueError("backend='ray' needs a running Ray: call ray.init() (this machine) or "
                         "ray.init(address=...) (a cluster) first")


def _ray_results(chunks: list) -> Any:
    """The lines of each chunk, computed on the Ray cluster by Ray Data, in chunk order."""
    import pickle

    import ray.data

    ctx = ray.data.DataContext.get_current()
    keep = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        items = [{"k": k, "chunk": pickle.dumps(c)} for k, c in enumerate(chunks)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(_ray_chunk, batch_size=1, batch_format="numpy")
        expected = 0
        for row in out.iter_rows():
            if int(row["k"]) != expected:  # preserve_order makes this impossible; checked anyway
                raise RuntimeError(f"Ray Data gave chunk {int(row['k'])} where {expected} was due")
            expected += 1
            yield pickle.loads(row["lines"])
    finally:
        ctx.execution_options.preserve_order = keep


def _answer_of(line: str) -> str:
    """The answer (the last turn's text) of a written record line."""
    rec = json.loads(line)
    if "messages" in rec:
        return rec["messages"][-1]["content"]
    if "completion" in rec:
        return rec["completion"][-1]["content"]
    return rec["conversations"][-1]["value"]


def _token_counter(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    """A function giving the token count of each of a list of answers, special tokens left out.

    A Hugging Face tokenizer (``encode`` and a batch ``__call__``) encodes a whole chunk in one
    call; an object with ``encode(text, add_special_tokens=False)`` or a plain callable
    returning a sequence of ids goes one answer at a time. Tried on a short answer first, so
    that a tokenizer that cannot be used fails before any record is written."""
    encode = getattr(tokenizer, "encode", None)
    if callable(encode) and callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens"):
        def count(answers: list[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    elif callable(encode):
        def count(answers: list[str]) -> list[int]:
            return [len(encode(a, add_special_tokens=False)) for a in answers]
    elif callable(tokenizer):
        def count(answers: list[str]) -> list[int]:
            return [len(tokenizer(a)) for a in answers]
    else:
        raise TypeError("tokenizer must be a Hugging Face tokenizer, an object with encode(text, "
                        f"add_special_tokens=False) or a callable returning token ids, got {type(tokenizer).__name__}")
    try:
        probe = count(["<seg>others *16\n</seg>"])
    except Exception as e:  # noqa: BLE001 - whatever the tokenizer raises, said before anything is written
        raise ValueError(f"tokenizer: cannot encode a test answer: {type(e).__name__}: {e}") from None
    if len(probe) != 1 or probe[0] < 1:
        raise ValueError(f"tokenizer: a test answer gave {probe} token counts; expected one count of at least 1")
    return count
