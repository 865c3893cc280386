"""Small dataset files in the upstream formats, built from the COCO masks bundled with segtext.

The files mimic what the upstream tooling ships, so that tests of a dataset-to-records
pipeline read the same layouts as real data:

* ``instances.json``: the COCO instances layout ("images", "annotations", "categories"),
  with polygon, compressed-RLE and (crowd) uncompressed-RLE segmentations.
* ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p``: the REFER pickle (a list of ref
  dicts, pickle protocol 2) of RefCOCO, RefCOCO+ and RefCOCOg.
* ``grefs(unc).json``: the gRefCOCO JSON list of refs, with multi-target and no-target refs.

Everything is deterministic: the same arguments give byte-identical files.

Typical use in a test::

    from upstream_fixtures import refer_layout
    paths = refer_layout(tmp_path)          # tmp_path/refcoco/instances.json, ...
    inst = paths["instances_data"]          # the parsed instances dict
    kinds = annotation_kinds(inst)          # which annotation id has which segmentation form
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

import segtext as st

# COCO thing categories grouped by id range: (first id, last id, supercategory).
_SUPERCATEGORIES = (
    (1, 1, "person"), (2, 9, "vehicle"), (10, 15, "outdoor"), (16, 25, "animal"),
    (27, 33, "accessory"), (34, 43, "sports"), (44, 51, "kitchen"), (52, 61, "food"),
    (62, 70, "furniture"), (72, 77, "electronic"), (78, 83, "appliance"), (84, 90, "indoor"),
)

#: First annotation id; ids are ANN_ID_BASE, ANN_ID_BASE + 1, ... in file order.
ANN_ID_BASE = 100001

#: Split names of each REFER split_by.
SPLITS = {
    "unc": ("train", "val", "testA", "testB"),
    "umd": ("train", "val", "test"),
    "google": ("train", "val"),
}

# Sentence templates: (raw form with capitals/punctuation). "{n}" is the category name,
# "{N}" the capitalised name.
_SINGLE_PHRASES = (
    "the {n} on the left",
    "{N} in the middle.",
    "Right {n}, closest to us!",
    "big {n} near the back",
    "The {n} at the top.",
)
_MULTI_PHRASES = (
    "all the {p}",
    "The {k} {p} together.",
    "both {p}",
)
_NO_TARGET_NAMES = ("giraffe", "zebra", "elephant", "airplane", "toaster", "kite")


def supercategory(category_id: int) -> str:
    """The COCO supercategory of a thing category id."""
    for lo, hi, name in _SUPERCATEGORIES:
        if lo <= category_id <= hi:
            return name
    return "other"


def tokenize(raw: str) -> list[str]:
    """REFER-style tokens: lower-cased words with punctuation dropped."""
    return re.findall(r"[a-z0-9]+", raw.lower())


def _plural(name: str) -> str:
    irregular = {"person": "people", "mouse": "mice", "sheep": "sheep", "skis": "skis",
                 "scissors": "scissors", "bus": "buses", "couch": "couches", "knife": "knives"}
    if name in irregular:
        return irregular[name]
    last = name.split()[-1]
    head = name[: len(name) - len(last)]
    return head + (last + "es" if last.endswith(("s", "sh", "ch", "x")) else last + "s")


# ----------------------------------------------------------------------------- masks


def mask_to_polygon(mask: np.ndarray) -> list[list[float]]:
    """One COCO polygon ``[[x1, y1, x2, y2, ...]]`` outlining the largest contour of ``mask``.

    Uses ``skimage.measure.find_contours`` on the zero-padded mask (so contours close at the
    border), simplified with ``approximate_polygon``; falls back to the bounding rectangle.
    Always at least 3 points (6 numbers).
    """
    from skimage.measure import approximate_polygon, find_contours

    m = np.asarray(mask, dtype=np.uint8)
    padded = np.pad(m, 1)
    contours = find_contours(padded.astype(float), 0.5)
    if contours:
        c = max(contours, key=len)
        c = approximate_polygon(c, tolerance=1.0)
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            h, w = m.shape
            xs = np.clip(c[:, 1] - 1, 0, w)
            ys = np.clip(c[:, 0] - 1, 0, h)
            flat = np.stack([xs, ys], axis=1).ravel()
            return [[round(float(v), 2) for v in flat]]
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        x0 = y0 = 0.0
        x1 = y1 = 1.0
    else:
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE ``{"size": [H, W], "counts": [ints]}`` of a binary mask.

    Runs over the column-major (Fortran order) pixels, alternating 0-runs and 1-runs and
    starting with a (possibly empty) 0-run, as in COCO crowd annotations.
    """
    m = np.asarray(mask, dtype=bool)
    flat = m.ravel(order="F")
    counts: list[int] = []
    value, run = False, 0
    for px in flat:
        if px == value:
            run += 1
        else:
            counts.append(run)
            value, run = px, 1
    counts.append(run)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts}


def _rle_for_measure(seg: Any, h: int, w: int) -> dict:
    """A compressed RLE (counts as bytes) of any COCO segmentation form, for pycocotools."""
    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):
        return mask_util.frPyObjects(seg, h, w)
    counts = seg["counts"]
    return {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def _area_bbox(seg: Any, h: int, w: int) -> tuple[float, list[float]]:
    rle = _rle_for_measure(seg, h, w)
    return float(mask_util.area(rle)), [float(v) for v in mask_util.toBbox(rle)]


# ----------------------------------------------------------------------------- instances


def coco_instances_data(n_images: int = 6, polygons_for: int = 1, crowd: bool = True) -> dict:
    """The parsed ``instances.json`` dict that :func:`coco_instances` writes.

    Takes the first ``n_images`` distinct image ids of ``st.coco.sample_annotations()`` (in
    sample order) and all their annotations, in sample order. Annotation ids are
    ``ANN_ID_BASE + k`` for the k-th annotation. The first ``polygons_for`` annotations get
    a polygon segmentation, and with ``crowd`` the last annotation becomes an uncompressed
    RLE with ``iscrowd`` 1 (if it is not already a polygon); all others keep their compressed
    RLE (``counts`` as str) with ``iscrowd`` 0. ``area`` and ``bbox`` are measured by
    pycocotools on the segmentation as written. Use :func:`annotation_kinds` to learn which
    id has which form.
    """
    sample = st.coco.sample_annotations()
    image_ids: list[int] = []
    for a in sample:
        if a["image_id"] not in image_ids:
            if len(image_ids) == n_images:
                continue
            image_ids.append(a["image_id"])
    chosen = [a for a in sample if a["image_id"] in set(image_ids)]
    crowd_index = len(chosen) - 1 if crowd and len(chosen) > polygons_for else None

    images, sizes = [], {}
    for a in chosen:
        if a["image_id"] not in sizes:
            sizes[a["image_id"]] = tuple(int(v) for v in a["segmentation"]["size"])
    for iid in image_ids:
        h, w = sizes[iid]
        images.append({"id": iid, "file_name": f"COCO_train2014_{iid:012d}.jpg", "height": h, "width": w})

    annotations = []
    for k, a in enumerate(chosen):
        h, w = sizes[a["image_id"]]
        rle = {"size": [h, w], "counts": a["segmentation"]["counts"]}
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode()
        iscrowd = 0
        if k < polygons_for:
            seg: Any = mask_to_polygon(mask_util.decode(_rle_for_measure(rle, h, w)))
        elif k == crowd_index:
            seg = uncompressed_rle(mask_util.decode(_rle_for_measure(rle, h, w)))
            iscrowd = 1
        else:
            seg = rle
        area, bbox = _area_bbox(seg, h, w)
        annotations.append({
            "id": ANN_ID_BASE + k, "image_id": a["image_id"], "category_id": a["category_id"],
            "segmentation": seg, "area": area, "bbox": bbox, "iscrowd": iscrowd,
        })

    cat_ids = sorted({a["category_id"] for a in chosen})
    categories = [{"id": c, "name": st.coco.COCO_CATEGORY_NAMES[c], "supercategory": supercategory(c)}
                  for c in cat_ids]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return path


def coco_instances(dirpath: str | Path, n_images: int = 6, polygons_for: int = 1, crowd: bool = True,
                   name: str = "instances.json") -> Path:
    """Write :func:`coco_instances_data` as ``dirpath/instances.json``; return its path."""
    return _write_json(Path(dirpath) / name, coco_instances_data(n_images, polygons_for, crowd))


def annotation_kinds(instances: dict) -> dict[str, list[int]]:
    """Annotation ids by segmentation form: ``"polygon"``, ``"rle"`` (compressed, str
    counts), ``"uncompressed"`` (list counts), plus ``"crowd"`` (iscrowd 1)."""
    out: dict[str, list[int]] = {"polygon": [], "rle": [], "uncompressed": [], "crowd": []}
    for a in instances["annotations"]:
        seg = a["segmentation"]
        kind = "polygon" if isinstance(seg, list) else ("uncompressed" if isinstance(seg["counts"], list) else "rle")
        out[kind].append(a["id"])
        if a.get("iscrowd"):
            out["crowd"].append(a["id"])
    return out


def _load_instances(instances: dict | str | Path) -> dict:
    if isinstance(instances, dict):
        return instances
    return json.loads(Path(instances).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- sentences


class _Ids:
    """Sequential ref and sentence ids, starting at 0 as upstream does."""

    def __init__(self) -> None:
        self.ref = 0
        self.sent = 0

    def next_ref(self) -> int:
        self.ref += 1
        return self.ref - 1

    def sentences(self, raws: Iterable[str]) -> tuple[list[int], list[dict]]:
        ids, sents = [], []
        for raw in raws:
            tokens = tokenize(raw)
            sents.append({"tokens": tokens, "raw": raw, "sent_id": self.sent, "sent": " ".join(tokens)})
            ids.append(self.sent)
            self.sent += 1
        return ids, sents


def _single_raws(name: str, k: int) -> list[str]:
    """1 to 3 sentences for the k-th ref of a category name."""
    count = 1 + k % 3
    return [_SINGLE_PHRASES[(k + j) % len(_SINGLE_PHRASES)].format(n=name, N=name.capitalize())
            for j in range(count)]


def _image_splits(instances: dict, splits: tuple[str, ...],
                  split_of: Callable[[int], str] | None) -> dict[int, str]:
    """image id -> split; by default image i gets ``splits[i % len(splits)]`` (whole images
    share a split, as in the upstream UNC/UMD splits)."""
    pick = split_of or (lambda i: splits[i % len(splits)])
    return {img["id"]: pick(i) for i, img in enumerate(instances["images"])}


def _stem(instances: dict, image_id: int) -> str:
    for img in instances["images"]:
        if img["id"] == image_id:
            return Path(img["file_name"]).stem
    return f"COCO_train2014_{image_id:012d}"


# ----------------------------------------------------------------------------- REFER


def refcoco_refs_data(instances: dict | str | Path, dataset: str = "refcoco", split_by: str | None = None,
                      split_of: Callable[[int], str] | None = None) -> list[dict]:
    """The list of ref dicts that :func:`refcoco_refs` pickles.

    One ref per non-crowd annotation, in annotation order, with keys ``ref_id``, ``ann_id``,
    ``image_id``, ``category_id``, ``split``, ``file_name`` (image stem + ``_{ann_id}.jpg``),
    ``sent_ids`` and ``sentences`` (each ``{"tokens", "raw", "sent_id", "sent"}``). Ref and
    sentence ids count from 0. ``split_of(i)`` gives the split of the i-th image of
    ``instances["images"]``; the default cycles through the splits of ``split_by`` so that
    with at least as many images as splits every split has a ref.
    """
    inst = _load_instances(instances)
    split_by = split_by or ("umd" if dataset == "refcocog" else "unc")
    split_of_image = _image_splits(inst, SPLITS[split_by], split_of)
    names = {c["id"]: c["name"] for c in inst["categories"]}
    ids, refs, per_cat = _Ids(), [], {}
    for ann in inst["annotations"]:
        if ann.get("iscrowd"):
            continue
        name = names[ann["category_id"]]
        k = per_cat[name] = per_cat.get(name, -1) + 1
        sent_ids, sents = ids.sentences(_single_raws(name, k + ann["id"]))
        refs.append({
            "image_id": ann["image_id"], "split": split_of_image[ann["image_id"]],
            "sentences": sents, "file_name": f"{_stem(inst, ann['image_id'])}_{ann['id']}.jpg",
            "category_id": ann["category_id"], "ann_id": ann["id"], "sent_ids": sent_ids,
            "ref_id": ids.next_ref(),
        })
    return refs


def refs_filename(split_by: str) -> str:
    """``refs(unc).p`` and the like."""
    return f"refs({split_by}).p"


def refcoco_refs(dirpath: str | Path, instances: dict | str | Path, dataset: str = "refcoco",
                 split_by: str | None = None, split_of: Callable[[int], str] | None = None,
                 refs: list[dict] | None = None) -> Path:
    """Write ``dirpath/refs({split_by}).p`` (pickle protocol 2 of a list of ref dicts).

    ``split_by`` defaults to ``"unc"`` for refcoco/refcoco+ and ``"umd"`` for refcocog
    (``"google"`` is also known). ``refs`` overrides the refs written (default
    :func:`refcoco_refs_data`). Upstream keeps this next to ``instances.json`` in
    ``data_root/<dataset>/``.
    """
    split_by = split_by or ("umd" if dataset == "refcocog" else "unc")
    if refs is None:
        refs = refcoco_refs_data(instances, dataset, split_by, split_of)
    path = Path(dirpath) / refs_filename(split_by)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return path


# ----------------------------------------------------------------------------- gRefCOCO


def grefcoco_refs_data(instances: dict | str | Path,
                       split_of: Callable[[int], str] | None = None) -> list[dict]:
    """The list of refs that :func:`grefcoco_refs` writes.

    Keys: ``ref_id``, ``image_id``, ``ann_id`` (list of ids; ``[-1]`` for no target),
    ``category_id`` (list, parallel to ``ann_id``; ``[-1]`` for no target), ``split``,
    ``file_name`` (image stem + ``_{ref_id}.jpg``), ``sent_ids``, ``sentences`` and
    ``no_target``. Per image (in order): one single-target ref per non-crowd annotation;
    one multi-target ref per category with 2+ non-crowd annotations (its first 2 or 3);
    one two-category ref ("the X and the Y") when the image has 2+ categories; and a
    no-target ref ("the giraffe" etc., a category absent from the image) for the first two
    images and the last one.
    """
    inst = _load_instances(instances)
    split_of_image = _image_splits(inst, SPLITS["unc"], split_of)
    names = {c["id"]: c["name"] for c in inst["categories"]}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in inst["images"]}
    for ann in inst["annotations"]:
        if not ann.get("iscrowd"):
            by_image.setdefault(ann["image_id"], []).append(ann)
    ids, refs = _Ids(), []

    def add(image_id: int, anns: list[dict], raws: list[str]) -> None:
        sent_ids, sents = ids.sentences(raws)
        ref_id = ids.next_ref()
        refs.append({
            "ref_id": ref_id, "image_id": image_id,
            "ann_id": [a["id"] for a in anns] or [-1],
            "category_id": [a["category_id"] for a in anns] or [-1],
            "split": split_of_image[image_id],
            "file_name": f"{_stem(inst, image_id)}_{ref_id}.jpg",
            "sent_ids": sent_ids, "sentences": sents, "no_target": not anns,
        })

    n_images = len(inst["images"])
    for i, img in enumerate(inst["images"]):
        iid = img["id"]
        anns = by_image.get(iid, [])
        for k, ann in enumerate(anns):
            add(iid, [ann], _single_raws(names[ann["category_id"]], k + ann["id"])[:2])
        groups: dict[int, list[dict]] = {}
        for ann in anns:
            groups.setdefault(ann["category_id"], []).append(ann)
        for j, (cat, group) in enumerate(groups.items()):
            if len(group) >= 2:
                take = group[:3] if len(group) >= 3 else group[:2]
                p = _plural(names[cat])
                word = {2: "two", 3: "three"}[len(take)]
                raws = [_MULTI_PHRASES[(j + t) % len(_MULTI_PHRASES)].format(p=p, k=word.capitalize())
                        for t in range(1 + j % 2)]
                add(iid, take, raws)
        if len(groups) >= 2:
            (ca, ga), (cb, gb) = list(groups.items())[:2]
            add(iid, [ga[0], gb[0]], [f"the {names[ca]} and the {names[cb]}"])
        if i < 2 or i == n_images - 1:
            present = {names[c] for c in groups}
            absent = [n for n in _NO_TARGET_NAMES if n not in present]
            name = absent[i % len(absent)]
            add(iid, [], [f"the {name}", f"{name.capitalize()} on the right."][: 1 + i % 2])
    return refs


def grefcoco_refs(dirpath: str | Path, instances: dict | str | Path,
                  split_of: Callable[[int], str] | None = None, refs: list[dict] | None = None) -> Path:
    """Write ``dirpath/grefs(unc).json`` (a JSON list of refs, see :func:`grefcoco_refs_data`)."""
    if refs is None:
        refs = grefcoco_refs_data(instances, split_of)
    return _write_json(Path(dirpath) / "grefs(unc).json", refs)


# ----------------------------------------------------------------------------- layouts


def refer_layout(root: str | Path, n_images: int = 6) -> dict[str, Any]:
    """The upstream directory layout under ``root``::

        root/refcoco/instances.json   root/refcoco/refs(unc).p
        root/refcoco+/instances.json  root/refcoco+/refs(unc).p
        root/refcocog/instances.json  root/refcocog/refs(umd).p
        root/grefcoco/instances.json  root/grefcoco/grefs(unc).json

    Returns the paths by name (``"refcoco"``, ``"refcoco_instances"``, ...) and the parsed
    ``"instances_data"`` (the same in every folder).
    """
    root = Path(root)
    inst = coco_instances_data(n_images)
    out: dict[str, Any] = {"instances_data": inst}
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        out[f"{dataset}_instances"] = _write_json(root / dataset / "instances.json", inst)
        out[dataset] = refcoco_refs(root / dataset, inst, dataset)
    out["grefcoco_instances"] = _write_json(root / "grefcoco" / "instances.json", inst)
    out["grefcoco"] = grefcoco_refs(root / "grefcoco", inst)
    return out


def write_bad_variants(dirpath: str | Path, instances: dict | str | Path,
                       refs: list[dict] | None = None) -> dict[str, Path]:
    """Broken inputs for error tests, each in its own folder beside a companion file.

    Returns paths by name:

    * ``"refs_unknown_ann"``: ``refs(unc).p`` whose first ref has ``ann_id`` not in the
      instances (``max id + 999``); next to the good ``instances.json``.
    * ``"instances_polygon_no_size"``: ``instances.json`` where the image of the first
      polygon annotation has no ``height``/``width``.
    * ``"instances_bad_rle"``: ``instances.json`` where the first compressed-RLE annotation
      has ``counts`` ``"!!!"`` (pycocotools: "Invalid RLE mask representation").
    * ``"instances_rle_wrong_total"``: a compressed RLE whose ``size`` is halved in height,
      so it disagrees with its image's height/width (and its runs overrun H*W).
    * ``"instances_rle_short_runs"``: a compressed RLE (valid characters, right ``size``)
      whose runs stop short of H*W (its last run dropped).
    * ``"grefs_unknown_ann"``: ``grefs(unc).json`` whose first multi-target ref's ``ann_id``
      list also holds an unknown id.

    Each variant folder also holds the good counterpart file (``instances.json`` or
    ``refs(unc).p``/``grefs(unc).json``) so directory-based loaders find a full pair.
    """
    root = Path(dirpath)
    inst = _load_instances(instances)
    refs = refs if refs is not None else refcoco_refs_data(inst)
    kinds = annotation_kinds(inst)
    unknown = max(a["id"] for a in inst["annotations"]) + 999
    out: dict[str, Path] = {}

    d = root / "refs_unknown_ann"
    bad_refs = copy.deepcopy(refs)
    bad_refs[0]["ann_id"] = unknown
    _write_json(d / "instances.json", inst)
    out["refs_unknown_ann"] = refcoco_refs(d, inst, refs=bad_refs)

    d = root / "instances_polygon_no_size"
    bad = copy.deepcopy(inst)
    if kinds["polygon"]:
        poly_image = next(a["image_id"] for a in bad["annotations"] if a["id"] == kinds["polygon"][0])
        for img in bad["images"]:
            if img["id"] == poly_image:
                del img["height"], img["width"]
    out["instances_polygon_no_size"] = _write_json(d / "instances.json", bad)
    refcoco_refs(d, inst, refs=refs)

    d = root / "instances_bad_rle"
    bad = copy.deepcopy(inst)
    target = next(a for a in bad["annotations"] if a["id"] == kinds["rle"][0])
    target["segmentation"]["counts"] = "!!!"
    out["instances_bad_rle"] = _write_json(d / "instances.json", bad)
    refcoco_refs(d, inst, refs=refs)

    d = root / "instances_rle_wrong_total"
    bad = copy.deepcopy(inst)
    target = next(a for a in bad["annotations"] if a["id"] == kinds["rle"][0])
    target["segmentation"]["size"] = [target["segmentation"]["size"][0] // 2, target["segmentation"]["size"][1]]
    out["instances_rle_wrong_total"] = _write_json(d / "instances.json", bad)
    refcoco_refs(d, inst, refs=refs)

    d = root / "instances_rle_short_runs"
    bad = copy.deepcopy(inst)
    target = next(a for a in bad["annotations"] if a["id"] == kinds["rle"][0])
    h, w = target["segmentation"]["size"]
    runs = uncompressed_rle(mask_util.decode(_rle_for_measure(target["segmentation"], h, w)))["counts"]
    short = mask_util.frPyObjects({"size": [h, w], "counts": runs[:-1]}, h, w)  # drops the last run
    target["segmentation"]["counts"] = short["counts"].decode()
    out["instances_rle_short_runs"] = _write_json(d / "instances.json", bad)
    refcoco_refs(d, inst, refs=refs)

    d = root / "grefs_unknown_ann"
    grefs = grefcoco_refs_data(inst)
    multi = next(r for r in grefs if len(r["ann_id"]) >= 2)
    multi["ann_id"] = multi["ann_id"] + [unknown]
    multi["category_id"] = multi["category_id"] + [multi["category_id"][0]]
    _write_json(d / "instances.json", inst)
    out["grefs_unknown_ann"] = grefcoco_refs(d, inst, refs=grefs)
    return out


# ----------------------------------------------------------------------------- self-check


def _check_all_rles(inst: dict) -> int:
    """Decode every segmentation with pycocotools; return how many were checked."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in inst["images"]}
    for ann in inst["annotations"]:
        h, w = sizes[ann["image_id"]]
        m = mask_util.decode(_rle_for_measure(ann["segmentation"], h, w))
        assert m.shape == (h, w), (ann["id"], m.shape)
        assert m.sum() == ann["area"], (ann["id"], m.sum(), ann["area"])
        assert m.sum() > 0, ann["id"]
    return len(inst["annotations"])


if __name__ == "__main__":
    import collections
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = refer_layout(tmp)
        inst = paths["instances_data"]
        kinds = annotation_kinds(inst)
        print(f"images: {len(inst['images'])}, annotations: {len(inst['annotations'])}, "
              f"categories: {len(inst['categories'])}")
        print("segmentation forms:", {k: len(v) for k, v in kinds.items()})
        print("decoded with pycocotools:", _check_all_rles(inst))

        # the crowd mask equals the bundled compressed mask it was made from
        sample = st.coco.sample_annotations()
        for ann in inst["annotations"]:
            if ann["id"] in kinds["uncompressed"]:
                k = ann["id"] - ANN_ID_BASE
                src = sample[k]["segmentation"]
                a = mask_util.decode(_rle_for_measure(ann["segmentation"], *src["size"]))
                b = mask_util.decode(_rle_for_measure(src, *src["size"]))
                assert (a == b).all()

        loaded = st.coco.load_annotations(paths["refcoco_instances"])
        assert len(loaded) == len(inst["annotations"])
        print("st.coco.load_annotations:", len(loaded), "annotations, labels", sorted({a["label"] for a in loaded}))

        for dataset in ("refcoco", "refcoco+", "refcocog"):
            with open(paths[dataset], "rb") as f:
                refs = pickle.load(f)
            assert isinstance(refs, list)
            ann_ids = {a["id"] for a in inst["annotations"]}
            assert all(r["ann_id"] in ann_ids for r in refs)
            print(f"{Path(paths[dataset]).parent.name}/{Path(paths[dataset]).name}: {len(refs)} refs, "
                  f"{sum(len(r['sentences']) for r in refs)} sentences, splits",
                  dict(collections.Counter(r["split"] for r in refs)))
        print("  e.g.", refs[0])

        grefs = json.loads(Path(paths["grefcoco"]).read_text())
        multi = [r for r in grefs if len(r["ann_id"]) > 1]
        none = [r for r in grefs if r["no_target"]]
        print(f"grefs(unc).json: {len(grefs)} refs ({len(grefs) - len(multi) - len(none)} single, "
              f"{len(multi)} multi, {len(none)} no-target), splits",
              dict(collections.Counter(r["split"] for r in grefs)))
        print("  e.g. multi", multi[0]["ann_id"], [s["raw"] for s in multi[0]["sentences"]])
        print("  e.g. none", none[0]["ann_id"], none[0]["category_id"], [s["raw"] for s in none[0]["sentences"]])

        bad = write_bad_variants(Path(tmp) / "bad", inst)
        for name, p in bad.items():
            outcome = "-"
            if p.name == "instances.json":
                try:
                    st.coco.load_annotations(p)
                    outcome = "loads"
                except ValueError as e:
                    outcome = f"ValueError: {e}"
            print(f"bad {name}: {p.relative_to(tmp)}  [{outcome}]")

        # determinism
        with tempfile.TemporaryDirectory() as tmp2:
            again = refer_layout(tmp2)
            for key in ("refcoco", "refcocog", "grefcoco", "refcoco_instances"):
                assert Path(paths[key]).read_bytes() == Path(again[key]).read_bytes(), key
        print("deterministic: ok")
