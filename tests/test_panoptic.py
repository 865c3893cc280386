"""COCO panoptic annotations to label maps, against a plain per-pixel reference."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hst

import segtext as st

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_panoptic_val2017"


def naive_panoptic(rgb, segments, names, things, instances=True, background="others"):
    """Pixel by pixel: segment id, its first pixel in raster order, then the labels."""
    H, W, _ = rgb.shape
    cat_of = {s["id"]: s["category_id"] for s in segments}
    ids = [[int(rgb[y, x, 0]) + 256 * int(rgb[y, x, 1]) + 65536 * int(rgb[y, x, 2]) for x in range(W)]
           for y in range(H)]
    order = []
    for y in range(H):
        for x in range(W):
            if ids[y][x] in cat_of and ids[y][x] not in order:
                order.append(ids[y][x])
    labels, seg_label, count = [background], {}, {}
    for sid in order:
        cat = cat_of[sid]
        if instances and cat in things:
            count[cat] = count.get(cat, 0) + 1
            text = f"{names[cat]} {count[cat]}"
        else:
            text = names[cat]
        if text not in labels:
            labels.append(text)
        seg_label[sid] = labels.index(text)
    out = np.array([[seg_label.get(ids[y][x], 0) for x in range(W)] for y in range(H)], np.int32)
    return out, labels


CATS = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "car", "isthing": 1},
        {"id": 3, "name": "sky", "isthing": 0}, {"id": 4, "name": "grass", "isthing": 0}]


@given(hst.integers(1, 12), hst.integers(1, 12), hst.integers(0, 6), hst.booleans(), hst.data())
def test_matches_the_per_pixel_reference(H, W, n_segments, instances, data):
    seg_ids = data.draw(hst.lists(hst.integers(1, 2**24 - 1), min_size=n_segments, max_size=n_segments,
                                  unique=True))
    segments = [{"id": i, "category_id": data.draw(hst.sampled_from([1, 2, 3, 4]))} for i in seg_ids]
    choices = [0] + seg_ids + [data.draw(hst.integers(1, 2**24 - 1))]  # 0 and an unlisted id too
    flat = np.array(data.draw(hst.lists(hst.sampled_from(choices), min_size=H * W, max_size=H * W)), np.int64)
    rgb = np.stack([flat % 256, flat // 256 % 256, flat // 65536], -1).reshape(H, W, 3).astype(np.uint8)
    got, labels = st.coco.panoptic_to_label_map(rgb, segments, CATS, instances=instances)
    names = {c["id"]: c["name"] for c in CATS}
    want, want_labels = naive_panoptic(rgb, segments, names, {1, 2}, instances)
    assert labels == want_labels
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not SHARED.exists(), reason="the shared COCO panoptic sample is not beside the project")
def test_real_panoptic_examples_round_trip_through_text():
    info = json.loads((SHARED / "panoptic_examples.json").read_text())
    cats = json.loads((SHARED / "panoptic_coco_categories.json").read_text())
    names = {c["id"]: c["name"] for c in cats}
    things = {c["id"] for c in cats if c["isthing"]}
    for ann in info["annotations"]:
        png = SHARED / "panoptic_examples" / ann["file_name"]
        got, labels = st.coco.panoptic_to_label_map(png, ann["segments_info"], cats)
        from PIL import Image

        rgb = np.asarray(Image.open(png).convert("RGB"))
        ref, ref_labels = naive_panoptic(rgb, ann["segments_info"], names, things)
        assert labels == ref_labels
        np.testing.assert_array_equal(got, ref)
        assert len(labels) == len({s["id"] for s in ann["segments_info"] if s["category_id"] in things}) \
            + len({s["category_id"] for s in ann["segments_info"] if s["category_id"] not in things}) + 1
        text = st.encode_rrle(st.mask_to_grid(got, 16), labels)
        back = st.decode_rrle(text, labels=labels, mode="strict")
        assert back.ok and back.grid.shape == (16, 16)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        st.coco.panoptic_to_label_map(np.zeros((2, 2), np.uint8), [], CATS)
    with pytest.raises(ValueError, match="category_id"):
        st.coco.panoptic_to_label_map(np.zeros((2, 2, 3), np.uint8), [{"id": 1}], CATS)
    with pytest.raises(ValueError, match="not in categories"):
        st.coco.panoptic_to_label_map(np.zeros((2, 2, 3), np.uint8), [{"id": 1, "category_id": 99}], CATS)
