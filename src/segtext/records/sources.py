"""Source readers: upstream annotation files, read as shipped, to :class:`Sample` lists.

Each reader returns the samples in a fixed order (the order of the input files), so that a
build is reproducible and can be resumed, sharded or spread over processes. Masks are not
rasterised here: a :class:`Target` holds the segmentation as the file has it (polygons or
COCO RLE), and the builder turns it into a grid or bricks.

========================  =====================================================================
reader                    files
========================  =====================================================================
:func:`read_coco`         COCO ``instances_*.json`` (polygons, RLE, crowd RLE)
:func:`read_refcoco`      ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p`` + ``instances.json``
:func:`read_grefcoco`     ``grefs(unc).json`` + ``instances.json``
:func:`read_panoptic`     COCO ``panoptic_*.json`` + its PNG folder
:func:`read_semantic`     a folder of PNG label maps + a class-names file (ADE20K, COCO-Stuff, PASCAL)
========================  =====================================================================

Panoptic and semantic samples keep the PNG's path (:attr:`Sample.label_png`); the builder reads
it, so reading a source stays cheap and the pixels are read in the worker processes.

The RefCOCO family ships its refs as a Python **pickle**: loading a pickle can run code, so only
load one from a source you trust (gRefCOCO ships JSON, which is safe to read).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtext._validate import check_image_size
from segtext.labels import BACKGROUND, check_label

__all__ = ["Sample", "Target", "dataset_classes", "read_class_names", "sample_from_dict", "sample_to_dict", "read_coco", "read_grefcoco", "read_label_png",
           "read_panoptic", "read_refcoco", "read_semantic"]

TASKS_OF_COCO = ("referring", "semantic", "instances")


@dataclass(frozen=True)
class Target:
    """One target mask of a sample.

    Attributes:
        label: its text (a class name, or the referring expression).
        segmentation: as the file has it: a COCO RLE dict or a list of polygons.
        ann_id: the annotation id in the source file (``None`` when made by hand).

    Example:
        >>> from segtext.records import Target
        >>> Target("dog", {"size": [2, 2], "counts": [0, 4]}).label
        'dog'
    """

    label: str
    segmentation: Any
    ann_id: Any = None


@dataclass
class Sample:
    """One training sample: an image, what to segment in it, and the target masks.

    Attributes:
        id: unique and stable within a build (the record's ``id``; it also seeds the choice
            of the question and answer templates, so it must not depend on the run).
        task: ``"referring"`` (one phrase; its targets are one union mask, none for no
            target), ``"semantic"`` (every class of the image, the targets of a class merged)
            or ``"instances"`` (every instance on its own).
        image: the image file name, as the dataset names it.
        image_id: the image id in the source.
        image_size: ``(H, W)``.
        targets: the target masks.
        phrase: the referring expression (``referring`` only).
        source: ids from the input (``ref_id``, ``sent_id``, ``ann_ids``, ``split``, ...),
            copied into the record.
        label_png: for panoptic and semantic-map samples, the PNG the masks are read from
            (the targets are then empty; ``label_info`` says how to read it).
        label_info: ``{"kind": "panoptic", "segments_info", "categories"}`` or ``{"kind":
            "label_map", "classes", "ignore_index"}``.

    Example:
        >>> from segtext.records import Sample, Target
        >>> s = Sample("a1", "referring", "x.jpg", 1, (2, 2), [Target("cat", {"size": [2, 2], "counts": [0, 4]})], "cat")
        >>> s.task, len(s.targets)
        ('referring', 1)
    """

    id: str
    task: str
    image: str
    image_id: Any
    image_size: tuple[int, int]
    targets: list[Target]
    phrase: str | None = None
    source: dict = field(default_factory=dict)
    label_png: str | None = None
    label_info: dict | None = None


def dataset_classes(samples: Sequence[Sample]) -> list[str]:
    """The category names of a list of samples, in order of first appearance: those their
    targets name, and every category of their panoptic ``categories`` or label-map ``classes``
    (the background ``others`` of a label map left out). What :class:`~segtext.records.Options`
    draws ``negatives`` from; take it from the whole dataset, before any shard or limit, so that
    every part of a build draws from the same list.

    Example:
        >>> from segtext.records import Sample, Target, dataset_classes
        >>> rle = {"size": [2, 2], "counts": [0, 4]}
        >>> dataset_classes([Sample("a", "instances", "x.jpg", 1, (2, 2), [Target("cat", rle), Target("dog", rle)]),
        ...                  Sample("b", "instances", "y.jpg", 2, (2, 2), [Target("cat", rle)])])
        ['cat', 'dog']
    """
    if isinstance(samples, (str, bytes, Sample)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of Sample, got {type(samples).__name__}")
    seen: dict[str, None] = {}
    infos: set[int] = set()
    for k, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise TypeError(f"samples[{k}] must be a Sample, got {type(s).__name__}")
        for t in s.targets:
            seen.setdefault(t.label)
        info = s.label_info or {}
        names = info.get("categories") if info.get("kind") == "panoptic" else info.get("classes")
        if names and id(names) not in infos:  # the samples of one source share one list: read it once
            infos.add(id(names))
            if info.get("kind") == "panoptic":
                for c in names:
                    seen.setdefault(c["name"])
            else:
                for c in names[1:]:
                    seen.setdefault(c)
    return list(seen)


def sample_to_dict(sample: Sample) -> dict:
    """A sample as plain JSON-able data (for a ``datasets`` column, a Ray block, a file).

    Example:
        >>> from segtext.records import Sample, Target, sample_from_dict, sample_to_dict
        >>> s = Sample("a", "referring", "x.jpg", 1, (2, 2), [Target("cat", {"size": [2, 2], "counts": [0, 4]}, 9)], "cat")
        >>> sample_from_dict(sample_to_dict(s)) == s
        True
    """
    return {"id": sample.id, "task": sample.task, "image": sample.image, "image_id": sample.image_id,
            "image_size": None if sample.image_size is None else [int(v) for v in sample.image_size],
            "targets": [{"label": t.label, "segmentation": t.segmentation, "ann_id": t.ann_id} for t in sample.targets],
            "phrase": sample.phrase, "source": sample.source, "label_png": sample.label_png,
            "label_info": sample.label_info}


def sample_from_dict(data: dict) -> Sample:
    """The inverse of :func:`sample_to_dict`.

    Raises:
        ValueError: ``data`` is not what :func:`sample_to_dict` gives.
    """
    try:
        size = data["image_size"]
        return Sample(data["id"], data["task"], data["image"], data["image_id"],
                      None if size is None else (int(size[0]), int(size[1])),
                      [Target(t["label"], t["segmentation"], t.get("ann_id")) for t in data["targets"]],
                      data.get("phrase"), dict(data.get("source") or {}), data.get("label_png"), data.get("label_info"))
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a sample dict (as sample_to_dict writes it): {e!r}") from None


class SourceError(ValueError):
    """A problem in an input file, naming the file and the entry (a ``ValueError``)."""


def without_gc(reader: Callable) -> Callable:
    """Run ``reader`` with the cyclic garbage collector paused (the readers here and the
    builder): they make a great many small objects and no cycles, and each full collection
    would walk every sample made so far, costing more than the work itself."""
    @functools.wraps(reader)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return reader(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return wrapper


def _report(problem: str, skip_invalid: bool, problems: list | None) -> None:
    if not skip_invalid:
        raise SourceError(problem)
    if problems is not None:
        problems.append(problem)


def load_json(source: Any, what: str) -> tuple[Any, str]:
    """``(parsed JSON, name)`` of a path (or of already parsed data, named ``what``); a
    SourceError (a ValueError) names the file and where its JSON breaks."""
    if not isinstance(source, (str, os.PathLike)):
        return source, what
    name = os.fspath(source)
    try:
        with open(source, "rb") as f:
            return json.load(f), name
    except json.JSONDecodeError as e:
        raise SourceError(f"{name} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"{name} is not valid JSON (not UTF-8 text): {e.reason}") from None


class _Instances:
    """The parts of a COCO instances file the readers need, indexed once."""

    def __init__(self, source: Any):
        data, self.name = load_json(source, "instances")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise SourceError(f"{self.name}: expected COCO instances JSON (an object with 'images' and "
                              "'annotations' lists)")
        self.images: dict[Any, dict] = {}
        for img in data["images"]:
            if isinstance(img, dict) and "id" in img:
                self.images[img["id"]] = img
        self.names: dict[Any, str] = {}
        for cat in data.get("categories") or []:
            if isinstance(cat, dict) and isinstance(cat.get("name"), str):
                self.names[cat.get("id")] = cat["name"]
        self.annotations: list[dict] = [a for a in data["annotations"] if isinstance(a, dict)]
        # the first annotation of each id (the reversed order makes the first one win)
        self.by_id: dict[Any, dict] = {ann.get("id"): ann for ann in reversed(self.annotations)}

    def image(self, image_id: Any, where: str) -> tuple[str, tuple[int, int]]:
        """``(file_name, (H, W))`` of an image, or a SourceError naming ``where``."""
        img = self.images.get(image_id)
        if img is None:
            raise SourceError(f"{self.name}: {where}: image {image_id!r} is not in 'images'")
        try:
            H, W = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{self.name}: {where}: image {image_id!r} has no usable 'height' and "
                              "'width'") from None
        if H < 1 or W < 1:
            raise SourceError(f"{self.name}: {where}: image {image_id!r} is {H}x{W} pixels")
        file_name = img.get("file_name")
        return (file_name if isinstance(file_name, str) else f"{image_id}.jpg"), (H, W)

    def label(self, ann: dict) -> str:
        cat = ann.get("category_id")
        name = self.names.get(cat)
        if name is None:
            raise SourceError(f"{self.name}: annotation {ann.get('id')!r}: category {cat!r} is not in "
                              "'categories'")
        return name

    def target(self, ann: dict, label: str, where: str) -> Target:
        seg = ann.get("segmentation")
        if seg is None or (isinstance(seg, (list, dict)) and len(seg) == 0):
            raise SourceError(f"{self.name}: {where}: annotation {ann.get('id')!r} has no segmentation")
        if not isinstance(seg, (list, dict)):
            raise SourceError(f"{self.name}: {where}: annotation {ann.get('id')!r}: segmentation must be "
                              f"polygons or a COCO RLE, got {type(seg).__name__}")
        return Target(label, seg, ann.get("id"))


@without_gc
def read_coco(
    instances: str | os.PathLike | dict,
    task: str = "referring",
    include_crowd: bool = False,
    skip_invalid: bool = False,
    problems: list[str] | None = None,
) -> list[Sample]:
    """Samples of a COCO instances file.

    Args:
        instances: ``instances_*.json`` path, or its parsed JSON.
        task: ``"referring"`` (one sample per annotation, the category name as the phrase),
            ``"semantic"`` (one per image, every category of it) or ``"instances"`` (one per
            image, every annotation on its own).
        include_crowd: also use ``iscrowd`` annotations (left out by default, as RefCOCO does).
        skip_invalid: leave out (and list in ``problems``) what cannot be read instead of
            raising.
        problems: receives one message per entry left out.

    Raises:
        SourceError (a ValueError): bad JSON or layout, an annotation whose image, size,
            category or segmentation is missing (naming the file and the annotation).

    Example:
        >>> from segtext.records import read_coco
        >>> data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
        ...         "categories": [{"id": 3, "name": "cat"}],
        ...         "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "iscrowd": 0,
        ...                          "segmentation": {"size": [2, 2], "counts": [0, 4]}}]}
        >>> [(s.id, s.phrase, s.image) for s in read_coco(data)]
        [('ann9', 'cat', 'a.jpg')]
    """
    if task not in TASKS_OF_COCO:
        raise ValueError(f"task must be one of {TASKS_OF_COCO}, got {task!r}")
    inst = _Instances(instances)
    samples: list[Sample] = []
    per_image: dict[Any, list[Target]] = {}
    seen: dict[Any, tuple[str, tuple[int, int]]] = {}  # image id -> (file name, size), each image read once
    names = inst.names
    referring = task == "referring"
    for ann in inst.annotations:
        if ann.get("iscrowd") and not include_crowd:
            continue
        aid, image_id, cat = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        try:  # the checks of inst.image, inst.label and inst.target, in that order; their messages
            try:
                file_name, size = seen[image_id]
            except KeyError:
                file_name, size = seen[image_id] = inst.image(image_id, f"annotation {aid!r}")
            label = names.get(cat)
            if label is None:
                label = inst.label(ann)  # raises, naming the category
            seg = ann.get("segmentation")
            if (type(seg) is dict or type(seg) is list) and seg:
                target = Target(label, seg, aid)
            else:
                target = inst.target(ann, label, f"annotation {aid!r}")
        except SourceError as e:
            _report(str(e), skip_invalid, problems)
            continue
        if referring:
            samples.append(Sample(f"ann{aid}", "referring", file_name, image_id, size, [target], label,
                                  {"ann_ids": [aid], "category_id": cat}))
        else:
            per_image.setdefault(image_id, []).append(target)
    for image_id, targets in per_image.items():
        file_name, size = inst.image(image_id, f"image {image_id!r}")
        samples.append(Sample(f"img{image_id}", task, file_name, image_id, size, targets,
                              source={"ann_ids": [t.ann_id for t in targets]}))
    return samples


def _load_refs(source: Any, name: str, trusted_pickle: bool) -> list:
    if not isinstance(source, (str, os.PathLike)):
        data = source
    elif os.fspath(source).endswith((".p", ".pkl", ".pickle")) and trusted_pickle:
        try:
            with open(source, "rb") as f:
                data = pickle.load(f)  # noqa: S301 - the user names the file; see the module docstring
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as e:
            raise SourceError(f"{name}: not a readable refs pickle: {e}") from None
    else:
        data, _ = load_json(source, name)
    if not isinstance(data, list):
        raise SourceError(f"{name}: expected a list of refs, got {type(data).__name__}")
    return data


def _sentences(ref: dict, name: str, field_name: str) -> list[tuple[Any, str]]:
    sents = ref.get("sentences")
    if not isinstance(sents, list) or not sents:
        raise SourceError(f"{name}: ref {ref.get('ref_id')!r} has no 'sentences'")
    out = []
    for k, s in enumerate(sents):
        text = s.get(field_name) if isinstance(s, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"{name}: ref {ref.get('ref_id')!r}: sentence {k} has no {field_name!r} text")
        out.append((s.get("sent_id", k), " ".join(text.split())))
    return out


def _refs_samples(refs: list, inst: _Instances, name: str, split: str | None, per: str, sentence: str,
                  targets_of: Callable[[dict, str], list[Target] | None], prefix: str,
                  skip_invalid: bool, problems: list | None) -> list[Sample]:
    if per not in ("sentence", "ref"):
        raise ValueError(f"per must be 'sentence' or 'ref', got {per!r}")
    if sentence not in ("sent", "raw"):
        raise ValueError(f"sentence must be 'sent' (the tokenised, lower-case form) or 'raw', got {sentence!r}")
    samples: list[Sample] = []
    for n, ref in enumerate(refs):
        if not isinstance(ref, dict):
            _report(f"{name}: entry {n} is not a ref object", skip_invalid, problems)
            continue
        if split is not None and ref.get("split") != split:
            continue
        rid = ref.get("ref_id", n)
        where = f"ref {rid!r}"
        try:
            file_name, size = inst.image(ref.get("image_id"), where)
            targets = targets_of(ref, where)
            sents = _sentences(ref, name, sentence)
        except SourceError as e:
            _report(str(e), skip_invalid, problems)
            continue
        ann_ids = [t.ann_id for t in targets]
        base = {"ref_id": rid, "split": ref.get("split"), "ann_ids": ann_ids}
        chosen = sents if per == "sentence" else [sents[0]]
        for sent_id, text in chosen:
            sid = f"{prefix}{rid}" if per == "ref" else f"{prefix}{rid}s{sent_id}"
            ts = [Target(text, t.segmentation, t.ann_id) for t in targets]
            src = dict(base, sent_id=sent_id) if per == "sentence" else dict(base, sent_ids=[s for s, _ in sents])
            samples.append(Sample(sid, "referring", file_name, ref.get("image_id"), size, ts, phrase=text,
                                  source=src))
    return samples


@without_gc
def read_refcoco(
    refs: str | os.PathLike | list,
    instances: str | os.PathLike | dict,
    split: str | None = None,
    per: str = "sentence",
    sentence: str = "sent",
    skip_invalid: bool = False,
    problems: list[str] | None = None,
    trusted_pickle: bool = True,
) -> list[Sample]:
    """Referring samples of RefCOCO, RefCOCO+ or RefCOCOg.

    Args:
        refs: ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p`` (a pickled list of refs with
            ``ref_id, ann_id, image_id, category_id, split, file_name, sent_ids, sentences``), a
            JSON file of the same list, or the list itself.
        instances: the dataset's ``instances.json`` (path or parsed JSON).
        split: keep only refs of this split (``"train"``, ``"val"``, ``"testA"``, ...); all if None.
        per: ``"sentence"`` (one sample per sentence) or ``"ref"`` (one per ref, its first
            sentence as the phrase, every sentence id kept in ``source``).
        sentence: which text of a sentence is the phrase: ``"sent"`` (tokenised, lower case, as
            Text4Seg uses) or ``"raw"``; runs of whitespace are collapsed either way.
        skip_invalid, problems: as :func:`read_coco`.
        trusted_pickle: load a ``.p`` file with :mod:`pickle` (which can run code: only for files
            you trust); False refuses pickles.

    Raises:
        SourceError (a ValueError): a ref whose ``ann_id`` is not in the instances, an image
            without size, a ref without sentences, a bad file (naming the file and the ref).

    Example:
        >>> from segtext.records import read_refcoco
        >>> inst = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
        ...         "categories": [{"id": 3, "name": "cat"}],
        ...         "annotations": [{"id": 9, "image_id": 1, "category_id": 3,
        ...                          "segmentation": {"size": [2, 2], "counts": [0, 4]}}]}
        >>> refs = [{"ref_id": 5, "ann_id": 9, "image_id": 1, "split": "val",
        ...          "sentences": [{"sent": "the cat", "raw": "The cat.", "sent_id": 50}]}]
        >>> [(s.id, s.phrase) for s in read_refcoco(refs, inst)]
        [('ref5s50', 'the cat')]
    """
    name = os.fspath(refs) if isinstance(refs, (str, os.PathLike)) else "refs"
    if isinstance(refs, (str, os.PathLike)) and os.fspath(refs).endswith((".p", ".pkl", ".pickle")) \
            and not trusted_pickle:
        raise SourceError(f"{name}: a pickle, and trusted_pickle is False (a pickle can run code)")
    data = _load_refs(refs, name, trusted_pickle)
    inst = _Instances(instances)

    def targets_of(ref: dict, where: str) -> list[Target]:
        ann = inst.by_id.get(ref.get("ann_id"))
        if ann is None:
            raise SourceError(f"{name}: {where}: ann_id {ref.get('ann_id')!r} is not in {inst.name}")
        return [inst.target(ann, "", where)]

    return _refs_samples(data, inst, name, split, per, sentence, targets_of, "ref", skip_invalid, problems)


@without_gc
def read_grefcoco(
    grefs: str | os.PathLike | list,
    instances: str | os.PathLike | dict,
    split: str | None = None,
    per: str = "sentence",
    sentence: str = "sent",
    skip_invalid: bool = False,
    problems: list[str] | None = None,
) -> list[Sample]:
    """Referring samples of gRefCOCO: several targets (one union mask) or none.

    Args:
        grefs: ``grefs(unc).json`` (a list of refs whose ``ann_id`` is a list; ``[-1]`` and
            ``no_target: true`` for an expression that matches nothing), or the list itself.
        instances, split, per, sentence, skip_invalid, problems: as :func:`read_refcoco`.

    Returns:
        Referring samples; a no-target sample has no targets (an all-background grid, or no
        B-SD block) and ``source["no_target"]`` True.

    Example:
        >>> from segtext.records import read_grefcoco
        >>> inst = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
        ...         "categories": [{"id": 3, "name": "cat"}],
        ...         "annotations": [{"id": 9, "image_id": 1, "category_id": 3,
        ...                          "segmentation": {"size": [2, 2], "counts": [0, 4]}}]}
        >>> grefs = [{"ref_id": 1, "ann_id": [-1], "no_target": True, "image_id": 1, "split": "val",
        ...           "sentences": [{"sent": "the dog", "raw": "the dog", "sent_id": 7}]}]
        >>> [(s.phrase, s.targets, s.source["no_target"]) for s in read_grefcoco(grefs, inst)]
        [('the dog', [], True)]
    """
    name = os.fspath(grefs) if isinstance(grefs, (str, os.PathLike)) else "grefs"
    data = _load_refs(grefs, name, trusted_pickle=False)
    inst = _Instances(instances)

    def targets_of(ref: dict, where: str) -> list[Target]:
        ids = ref.get("ann_id")
        if not isinstance(ids, list):
            ids = [ids]
        if ref.get("no_target") or ids == [-1]:
            return []
        out = []
        for aid in ids:
            ann = inst.by_id.get(aid)
            if ann is None:
                raise SourceError(f"{name}: {where}: ann_id {aid!r} is not in {inst.name}")
            out.append(inst.target(ann, "", where))
        if not out:
            raise SourceError(f"{name}: {where}: no ann_id and no 'no_target'")
        return out

    samples = _refs_samples(data, inst, name, split, per, sentence, targets_of, "gref", skip_invalid, problems)
    for s in samples:
        s.source["no_target"] = not s.targets
    return samples


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """The pixels of a PNG file (a label map, or a panoptic RGB picture) as a numpy array.

    Raises:
        ValueError: a missing or unreadable file, not a PNG, an unsupported mode, a picture past
            the size limits (:mod:`segtext.limits`).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from segtext.records import read_label_png
        >>> path = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 3]], np.uint8)).save(path)
        >>> read_label_png(path).tolist()
        [[0, 3]]
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError("file not found")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise ValueError(f"not a PNG file ({im.format})")
            if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "RGB", "RGBA"):
                raise ValueError(f"unsupported PNG mode {im.mode}")
            check_image_size(im.height, im.width, "the PNG")
            if im.mode == "RGBA":
                im = im.convert("RGB")
            return np.asarray(im)
    except UnidentifiedImageError:
        raise ValueError("not a readable picture") from None
    except OSError as e:
        raise ValueError(f"cannot read it: {e}") from None


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, one a line; line 1 is id 0, the background, returned as ``"others"``.

    Raises:
        ValueError: a missing, unreadable or empty file, a name that cannot be a label (naming
            its line), a name given twice.

    Example:
        >>> import os, tempfile
        >>> from segtext.records import read_class_names
        >>> path = os.path.join(tempfile.mkdtemp(), "names.txt")
        >>> _ = open(path, "w").write("background\\nwall\\nsky\\n")
        >>> read_class_names(path)
        ['others', 'wall', 'sky']
    """
    try:
        with open(path, encoding="utf-8") as f:
            names = f.read().splitlines()
    except FileNotFoundError:
        raise ValueError(f"classes file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    names = [t.strip() for t in names]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"{path} is empty; expected one class name a line, the background first")
    names[0] = BACKGROUND
    seen: dict[str, int] = {}
    for n, label in enumerate(names[1:], 1):
        try:
            check_label(label)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: line {n + 1}: class {label!r}: {e}") from None
        if label == BACKGROUND:
            raise ValueError(f"{path}: line {n + 1}: class {label!r}: {label!r} is the background word: the "
                             "mask would decode as background; give the foreground another name")
        if label in seen:
            raise ValueError(f"{path}: line {n + 1}: class {label!r} is also on line {seen[label] + 1}")
        seen[label] = n
    return names


@without_gc
def read_panoptic(
    panoptic: str | os.PathLike | dict,
    png_dir: str | os.PathLike,
    task: str = "semantic",
    skip_invalid: bool = False,
    problems: list[str] | None = None,
) -> list[Sample]:
    """Samples of COCO panoptic: one per image, its PNG read when the record is built.

    Args:
        panoptic: ``panoptic_*.json`` (``annotations`` with ``file_name`` and ``segments_info``,
            ``images``, ``categories`` with ``isthing``), or its parsed JSON.
        png_dir: the folder of the panoptic PNGs.
        task: ``"semantic"`` (one label per category, things and stuff) or ``"instances"``
            (each thing segment its own label, ``person 1``, ``person 2``, ...; one B-SD block
            per segment).
        skip_invalid, problems: as :func:`read_coco`.

    Raises:
        SourceError (a ValueError): bad layout, an annotation without ``file_name`` or
            ``segments_info``, a PNG that does not exist (naming the file and the annotation).
            A PNG whose ids are not in ``segments_info`` is reported when it is read.

    Example:
        >>> import tempfile
        >>> from segtext.records import read_panoptic
        >>> data = {"images": [{"id": 1, "height": 2, "width": 3, "file_name": "1.jpg"}],
        ...         "categories": [{"id": 1, "name": "person", "isthing": 1}],
        ...         "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": []}]}
        >>> read_panoptic(data, tempfile.mkdtemp(), skip_invalid=True, problems=(out := []))
        []
        >>> "not found" in out[0]
        True
    """
    if task not in ("semantic", "instances"):
        raise ValueError(f"task must be 'semantic' or 'instances', got {task!r}")
    data, name = load_json(panoptic, "panoptic")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise SourceError(f"{name}: expected COCO panoptic JSON (an object with an 'annotations' list)")
    cats = data.get("categories")
    if not isinstance(cats, list) or not all(isinstance(c, dict) and type(c.get("id")) is int
                                             and isinstance(c.get("name"), str) for c in cats):
        raise SourceError(f"{name}: expected a 'categories' list of objects with an int 'id' and a str 'name'")
    categories = [{"id": c["id"], "name": c["name"], "isthing": int(bool(c.get("isthing", 1)))} for c in cats]
    images = {img["id"]: img for img in data.get("images") or [] if isinstance(img, dict) and "id" in img}
    if not os.path.isdir(png_dir):
        raise SourceError(f"the PNG folder does not exist: {png_dir}")
    samples = []
    for n, ann in enumerate(data["annotations"]):
        where = f"{name}: annotation {n}"
        try:
            if not isinstance(ann, dict) or not isinstance(ann.get("file_name"), str):
                raise SourceError(f"{where}: no 'file_name'")
            if not isinstance(ann.get("segments_info"), list):
                raise SourceError(f"{where} ({ann['file_name']}): no 'segments_info' list")
            path = os.path.join(png_dir, ann["file_name"])
            if not os.path.isfile(path):
                raise SourceError(f"{where}: PNG not found: {path}")
            image_id = ann.get("image_id")
            img = images.get(image_id, {})
            file_name = img.get("file_name") if isinstance(img.get("file_name"), str) else \
                os.path.splitext(ann["file_name"])[0] + ".jpg"
            size = (int(img["height"]), int(img["width"])) if "height" in img and "width" in img else None
        except SourceError as e:
            _report(str(e), skip_invalid, problems)
            continue
        samples.append(Sample(f"pan{image_id}", task, file_name, image_id, size, [], source={"png": ann["file_name"]},
                              label_png=path, label_info={"kind": "panoptic", "segments_info": ann["segments_info"],
                                                          "categories": categories}))
    return samples


def read_semantic(
    label_dir: str | os.PathLike,
    classes: str | os.PathLike | list[str],
    ignore_index: int | None = None,
    images_ext: str = ".jpg",
) -> list[Sample]:
    """Samples of a folder of semantic label maps (PNG, pixel = class index), sorted by name.

    Args:
        label_dir: the folder of PNG label maps.
        classes: the class-names file (see :func:`read_class_names`) or the names (id 0 first).
        ignore_index: the pixel value that never votes (e.g. 255); a cell of ignored pixels only
            is background.
        images_ext: the image file of ``x.png`` is taken to be ``x`` + ``images_ext``.

    Raises:
        SourceError (a ValueError): a folder that does not exist or holds no PNG, a bad classes
            file. A pixel value beyond the classes is reported when the map is read.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from segtext.records import read_semantic
        >>> d = tempfile.mkdtemp()
        >>> Image.fromarray(np.array([[0, 1]], np.uint8)).save(os.path.join(d, "a.png"))
        >>> [(s.id, s.image, s.task) for s in read_semantic(d, ["background", "cat"])]
        [('map:a', 'a.jpg', 'semantic')]
    """
    if not os.path.isdir(label_dir):
        raise SourceError(f"the label-map folder does not exist: {label_dir}")
    if isinstance(classes, (str, os.PathLike)):
        try:
            names = read_class_names(classes)
        except ValueError as e:
            raise SourceError(str(e)) from None
    else:
        names = [BACKGROUND, *[str(c) for c in list(classes)[1:]]]
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
                                     or ignore_index < 0):
        raise ValueError(f"ignore_index must be a non-negative int or None, got {ignore_index!r}")
    files = sorted(f for f in os.listdir(label_dir) if f.lower().endswith(".png"))
    if not files:
        raise SourceError(f"{label_dir} holds no PNG label map")
    info = {"kind": "label_map", "classes": names, "ignore_index": ignore_index}
    return [Sample(f"map:{os.path.splitext(f)[0]}", "semantic", os.path.splitext(f)[0] + images_ext,
                   os.path.splitext(f)[0], None, [], source={"png": f}, label_png=os.path.join(label_dir, f),
                   label_info=info) for f in files]
