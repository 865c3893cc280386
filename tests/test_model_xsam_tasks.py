"""XSamSegmenter's semantic and panoptic inference (X-SAM's generic segmentation, MODEL_NOTES 1.7).

Four synthetic 64 x 64 images, each with a red square and a green bar at different places;
records list both classes as ``<p>...</p>`` (in either order) and hold one mask per class. A tiny
model trained briefly must give back per-class IoU >= 0.9 through ``task="semantic"``, follow the
order of the classes asked for, and give consistent panoptic segments; results encode as text
with the core; bad arguments raise clear errors. Instances records (two objects of one class,
with and without a negative class) train panoptic segments, one per object.
"""

from __future__ import annotations

import numpy as np
import pytest

import segtext as st
from segtext import records

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from segtext.model import XSamSegmenter  # noqa: E402
from segtext.model.xsam_model import (  # noqa: E402
    UNLABELLED,
    XSamPanopticResult,
    XSamResult,
    XSamSemanticResult,
)

from shapes import coco_rle  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
QUESTION = "Segment the image. Categories: {classes}."


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _scenes():
    """(image, red mask, green mask) x 4: a red 24 x 24 square in one quadrant, a green 16 x 48
    bar in the other half; edges on 8-pixel cells."""
    out = []
    for y, x in [(8, 8), (8, 32), (32, 8), (32, 32)]:
        red, green = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
        red[y:y + 24, x:x + 24] = True
        if y < 32:
            green[40:56, 8:56] = True
        else:
            green[8:24, 8:56] = True
        img = np.full((64, 64, 3), 90, np.uint8)
        img[red], img[green] = (200, 30, 30), (30, 200, 30)
        out.append((img, red, green))
    return out


TEMPLATES = {"semantic": {"questions": ["Segment the image."], "answers": ["Sure, {mask}."]}}


def _records(scenes):
    """xsam records of the semantic kind, as segtext.records writes them: every class as
    <p>...</p> in the question, one <SEG> in the answer, one mask per class in order; half of them
    list the classes the other way round (so the prototypes, not the slots, name them)."""
    options = records.Options(style="xsam", templates=records.load_templates(TEMPLATES))
    recs = []
    for k, (img, red, green) in enumerate(scenes):
        order = [("red", red), ("green", green)] if k % 2 == 0 else [("green", green), ("red", red)]
        sample = records.Sample(f"sem{k}", "semantic", f"sem{k}.png", k, (64, 64),
                                [records.Target(n, coco_rle(m)) for n, m in order])
        rec = records.make_record(sample, options)
        rec["image"] = img  # the picture itself instead of a file
        recs.append(rec)
    return recs


def test_builder_writes_the_records_fit_reads(scenes):
    rec = _records(scenes)[1]
    assert rec["conversations"][0]["value"] == "<image>\n" + QUESTION.format(classes="<p>green</p>, <p>red</p>")
    assert rec["conversations"][1]["value"] == "Sure, <SEG>."
    assert rec["classes"] == ["green", "red"] and rec["segment_classes"] == [0, 1]
    assert rec["segmentation"] == [coco_rle(scenes[1][2]), coco_rle(scenes[1][1])]


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


@pytest.fixture(scope="module")
def trained(scenes):
    seg = XSamSegmenter.tiny(seed=0)
    losses = seg.fit(_records(scenes), steps=40, lr=5e-3, batch_size=4)
    return seg, losses


@pytest.fixture(scope="module")
def untrained():
    return XSamSegmenter.tiny(seed=0)


def test_fit_learns_the_class_question(trained):
    seg, losses = trained
    assert seg.class_question == QUESTION and seg.class_separator == ", "
    assert seg.question == "Please segment {phrase} in this image."      # no referring record: unchanged
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


def test_semantic_learns_the_classes(trained, scenes):
    seg, _ = trained
    images = [img for img, _, _ in scenes]
    results = seg.segment(images, classes=["red", "green"], task="semantic")
    for k, ((img, red, green), r) in enumerate(zip(scenes, results)):
        assert isinstance(r, XSamSemanticResult) and r.classes == ["red", "green"]
        assert "<SEG>" in r.text and not r.forced, r.text
        assert r.labels.shape == (64, 64) and r.labels.dtype == np.int64
        assert set(np.unique(r.labels)) <= {UNLABELLED, 0, 1}
        for name, m in (("red", red), ("green", green)):
            assert _iou(r.mask(name), m) >= 0.9, (k, name, _iou(r.mask(name), m))
        assert (r.labels[~(red | green)] == UNLABELLED).mean() >= 0.9        # the grey background
    # the class order of the prompt decides the indices, not the image
    swapped = seg.segment(images, classes=["green", "red"], task="semantic")
    for (img, red, green), r in zip(scenes, swapped):
        assert _iou(r.labels == 0, green) >= 0.9 and _iou(r.labels == 1, red) >= 0.9
    # X-SAM's own post-processing (no threshold): every pixel gets a class, the same winners
    full = seg.segment(images[:1], classes=["red", "green"], task="semantic", score_threshold=None)[0]
    assert set(np.unique(full.labels)) <= {0, 1}
    labelled = results[0].labels != UNLABELLED
    assert np.array_equal(full.labels[labelled], results[0].labels[labelled])
    # the result as text, with the class names, back through the core's decoders
    r = results[0]
    for encoding in ("rrle", "isd", "irle"):
        text = r.to_text(encoding, grid_size=8)
        back = st.decode_rrle(text, ["others", "red", "green"], (8, 8), image_size=(64, 64), mode="strict").mask
        assert np.array_equal(back, r.labels + 1) or (back == r.labels + 1).mean() > 0.97, encoding
    blocks = st.decode_bsd(r.to_text("bsd", resolution=8), (64, 64), resolution=8, mode="strict").objects
    assert sorted(o.label for o in blocks) == ["green", "red"]


def test_panoptic_segments(trained, scenes):
    seg, _ = trained
    images = [img for img, _, _ in scenes]
    results = seg.segment(images, classes=["red", "green"], task="panoptic")
    for (img, red, green), r in zip(scenes, results):
        assert isinstance(r, XSamPanopticResult) and r.classes == ["red", "green"]
        assert r.segments.shape == (64, 64) and r.segments.dtype == np.int32
        ids = [s["id"] for s in r.segments_info]
        assert ids == list(range(1, len(ids) + 1))
        assert set(np.unique(r.segments)) - {0} == set(ids)                 # the map and the info agree
        for s in r.segments_info:
            assert s["class"] == r.classes[s["label"]] and 0.8 < s["score"] <= 1
            assert s["area"] == int((r.segments == s["id"]).sum())
        masks = r.masks()
        assert masks.shape == (len(ids), 64, 64) and masks.sum(0).max() <= 1  # a pixel in one segment at most
        by_class = {s["class"]: r.segments == s["id"] for s in r.segments_info}
        assert sorted(by_class) == ["green", "red"]                          # one segment per shape here
        assert _iou(by_class["red"], red) >= 0.9 and _iou(by_class["green"], green) >= 0.9
        blocks = st.decode_bsd(r.to_text(resolution=8), (64, 64), resolution=8, mode="strict").objects
        assert sorted(o.label for o in blocks) == ["green", "red"]
    stuff = seg.segment(images[:1], classes=["red", "green"], task="panoptic", stuff_classes=["green"])[0]
    assert sum(s["class"] == "green" for s in stuff.segments_info) <= 1


def test_untrained_shapes_ranges_and_determinism(untrained, scenes):
    seg = untrained
    imgs = [scenes[0][0], np.zeros((40, 56, 3), np.uint8)]
    per_image = [["red", "green", "sky"], ["sky"]]
    a = seg.segment(imgs, classes=per_image, task="semantic", max_new_tokens=2)
    b = seg.segment(imgs, classes=per_image, task="semantic", max_new_tokens=2, batch_size=1)
    for r, r2, names, img in zip(a, b, per_image, imgs):
        assert r.classes == names and r.labels.shape == img.shape[:2] and r.labels.dtype == np.int64
        assert r.labels.min() >= UNLABELLED and r.labels.max() < len(names)
        assert isinstance(r.forced, bool) and r.forced == ("<SEG>" not in r.text)
        assert np.array_equal(r.labels, r2.labels) and r.text == r2.text        # deterministic, batch-free
    p = seg.segment(imgs, classes=per_image, task="panoptic", max_new_tokens=2, object_threshold=0.0,
                    overlap_threshold=0.0)
    for r, names, img in zip(p, per_image, imgs):
        assert r.segments.shape == img.shape[:2] and r.segments.dtype == np.int32
        assert set(np.unique(r.segments)) - {0} == {s["id"] for s in r.segments_info}
        assert all(0 <= s["label"] < len(names) and s["class"] == names[s["label"]] for s in r.segments_info)
        assert isinstance(r.to_text("rrle", grid_size=4), str) and isinstance(r.to_text("bsd", resolution=4), str)
    # the referring path is unchanged: positional prompts, one XSamResult each
    ref = seg.segment(imgs[:1], ["red"], max_new_tokens=2)[0]
    assert isinstance(ref, XSamResult) and ref.mask.shape == (64, 64) and ref.phrase == "red"
    assert seg.segment(imgs[:1], ["red"], max_new_tokens=2, task="referring")[0].score == ref.score


def test_save_and_reload_keep_the_class_question(trained, scenes, tmp_path):
    seg, _ = trained
    seg.save_pretrained(tmp_path / "m")
    again = XSamSegmenter.from_pretrained(tmp_path / "m")
    assert (again.class_question, again.class_separator) == (seg.class_question, seg.class_separator)
    images = [img for img, _, _ in scenes[:2]]
    for r, r2 in zip(seg.segment(images, classes=["red", "green"], task="semantic"),
                     again.segment(images, classes=["red", "green"], task="semantic")):
        assert r.text == r2.text and np.array_equal(r.labels, r2.labels)


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="instance", classes=["a"]), "task must be one of"),
    (dict(task="semantic"), "need classes="),
    (dict(task="semantic", classes=[]), "classes is empty"),
    (dict(task="panoptic", classes="cat"), "classes must be a list of class names"),
    (dict(task="semantic", classes=["a", "<p>b</p>"]), "class '<p>b</p>' must be plain text"),
    (dict(task="semantic", classes=["a<SEG>"]), "must be plain text"),
    (dict(task="semantic", classes=["a", ""]), "non-empty str"),
    (dict(task="semantic", classes=["a", "a"]), r"distinct, \['a'\] repeated"),
    (dict(task="semantic", classes=[["a"], ["b"]]), "2 lists for 1 image"),
    (dict(task="semantic", classes=[[]]), r"classes\[0\] is empty"),
    (dict(task="semantic", classes=["a", ["b"]]), "list of str .* or a list of lists"),
    (dict(task="semantic", classes=["a"], prompts=["a"]), "takes the class names as classes="),
    (dict(task="referring", classes=["a"], prompts=["a"]), "classes= is for task='semantic'"),
    (dict(task="referring"), "same length"),
    (dict(task="semantic", classes=["a"], question="Segment it."), "question must be a str with {classes}"),
    (dict(task="semantic", classes=["a"], score_threshold=1.5), r"score_threshold must be a number in \[0, 1\]"),
    (dict(task="panoptic", classes=["a"], object_threshold=-0.1), "object_threshold"),
    (dict(task="panoptic", classes=["a"], stuff_classes=["sky"]), r"stuff_classes \['sky'\] are not"),
])
def test_argument_errors(untrained, kwargs, match):
    prompts = kwargs.pop("prompts", None)
    with pytest.raises(ValueError, match=match):
        untrained.segment([np.zeros((32, 32, 3), np.uint8)], prompts, **kwargs)


def _two_of_a_kind():
    """(image, [red mask, red mask], green mask) x 4: two red 16 x 16 squares side by side (a
    gap of 8 pixels) in one half, a green 16 x 48 bar in the other."""
    out = []
    for y, x in [(8, 8), (8, 16), (40, 8), (40, 16)]:
        reds = [np.zeros((64, 64), bool), np.zeros((64, 64), bool)]
        reds[0][y:y + 16, x:x + 16] = True
        reds[1][y:y + 16, x + 24:x + 40] = True
        green = np.zeros((64, 64), bool)
        gy = 40 if y < 32 else 8
        green[gy:gy + 16, 8:56] = True
        img = np.full((64, 64, 3), 90, np.uint8)
        img[reds[0] | reds[1]], img[green] = (200, 30, 30), (30, 200, 30)
        out.append((img, reds, green))
    return out


@pytest.mark.parametrize("negatives", [0, 1])
def test_instances_records_train_panoptic_segments(negatives):
    """Instances records of segtext.records (two masks of one class, segment_classes [0, 0, 1])
    train the head to give each object its own panoptic segment; with a negative class listed
    (blue, never in the images), asking for it too gives no segment of it."""
    scenes = _two_of_a_kind()
    templates = records.load_templates({"instances": {"questions": ["Find every object."], "answers": ["{mask}"]}})
    recs = []
    for k, (img, reds, green) in enumerate(scenes):
        sample = records.Sample(f"inst{k}", "instances", f"inst{k}.png", k, (64, 64),
                                [records.Target("red", coco_rle(reds[0])), records.Target("red", coco_rle(reds[1])),
                                 records.Target("green", coco_rle(green))])
        options = records.Options(style="xsam", templates=templates, negatives=negatives,
                                  classes=["red", "green", "blue"])
        rec = records.make_record(sample, options)
        assert [rec["classes"][i] for i in rec["segment_classes"]] == ["red", "red", "green"]
        assert sorted(rec["classes"]) == sorted(["red", "green", "blue"][:2 + negatives])
        rec["image"] = img
        recs.append(rec)
    seg = XSamSegmenter.tiny(seed=0)
    losses = seg.fit(recs, steps=60, lr=5e-3, batch_size=4)
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    assert seg.class_question == "Find every object. Categories: {classes}."
    asked = ["red", "green", "blue"] if negatives else ["red", "green"]
    results = seg.segment([img for img, _, _ in scenes], classes=asked, task="panoptic")
    for (img, reds, green), r in zip(scenes, results):
        assert "blue" not in {s["class"] for s in r.segments_info}
        by_class = {}
        for s in r.segments_info:
            by_class.setdefault(s["class"], []).append(r.segments == s["id"])
        assert len(by_class.get("red", [])) == 2 and len(by_class.get("green", [])) == 1, r.segments_info
        for m in reds:  # each red square is one segment of its own
            assert max(_iou(p, m) for p in by_class["red"]) >= 0.9
        assert _iou(by_class["green"][0], green) >= 0.9
