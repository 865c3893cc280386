"""Bad input to the B-SD API gets a clear error: the exception type and a meaningful part of the message."""

from __future__ import annotations

import re

import numpy as np
import pytest

import naive_bricks as nb
import segtext as st

VE = (ValueError, TypeError)
SIZE = (20, 30)
MASK = np.zeros(SIZE, dtype=bool)
MASK[5:15, 10:20] = True
OBJS = [("dog", MASK)]
TEXT = "<ref>dog</ref><box>[100,200,500,600]</box><seg><fg_16></seg>"


# ------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.zeros(SIZE, bool), id="dense"),
        pytest.param(nb.coco_rle(np.zeros(SIZE, bool)), id="rle"),
    ],
)
def test_empty_mask(mask):
    with pytest.raises(ValueError, match=r"(?i)empty|no box|no foreground"):
        st.encode_bsd([("dog", mask)], image_size=SIZE)


def test_empty_mask_error_names_the_object():
    with pytest.raises(ValueError, match=r"(?i)cat|\b1\b"):  # the label, or the index of the object
        st.encode_bsd([("dog", MASK), ("cat", np.zeros(SIZE, bool))], image_size=SIZE)


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.ones((20, 31), bool), id="wider"),
        pytest.param(np.ones((19, 30), bool), id="shorter"),
        pytest.param(np.ones((30, 20), bool), id="transposed"),
        pytest.param(nb.coco_rle(np.ones((30, 20), bool)), id="rle-transposed"),
        pytest.param(nb.coco_rle(np.ones((21, 30), bool)), id="rle-taller"),
    ],
)
def test_mask_of_the_wrong_size(mask):
    with pytest.raises(ValueError, match=r"(?i)size|shape|image_size"):
        st.encode_bsd([("dog", mask)], image_size=SIZE)


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.ones(600, bool), id="1-D"),
        pytest.param(np.ones((20, 30, 1), bool), id="3-D"),
        pytest.param(np.ones((1, 20, 30), bool), id="3-D-batch"),
        pytest.param(np.array(True), id="0-D"),
    ],
)
def test_mask_not_2d(mask):
    with pytest.raises(ValueError, match=r"(?i)2-?D|two[- ]dim|ndim|dimension|shape"):
        st.encode_bsd([("dog", mask)], image_size=SIZE)


@pytest.mark.parametrize(
    "rle",
    [
        pytest.param({"size": [20, 30]}, id="no-counts"),
        pytest.param({"counts": [600]}, id="no-size"),
        pytest.param({"size": [20, 30], "counts": [100, 5]}, id="counts-short"),
        pytest.param({"size": [20, 30], "counts": [-1, 601]}, id="negative-count"),
    ],
)
def test_bad_rle(rle):
    with pytest.raises(VE):
        st.encode_bsd([("dog", rle)], image_size=SIZE)


def test_object_not_a_pair():
    with pytest.raises(VE):
        st.encode_bsd([MASK], image_size=SIZE)


# ---------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("resolution", [0, -1, 2.5, "64", None])
def test_bad_resolution(resolution):
    with pytest.raises(VE, match=r"(?i)resolution"):
        st.encode_bsd(OBJS, image_size=SIZE, resolution=resolution)
    with pytest.raises(VE, match=r"(?i)resolution"):
        st.decode_bsd(TEXT, image_size=SIZE, resolution=resolution)


@pytest.mark.parametrize("max_run", [0, -3, 1.5, "63", None])
def test_bad_max_run(max_run):
    with pytest.raises(VE, match=r"(?i)max_run"):
        st.encode_bsd(OBJS, image_size=SIZE, max_run=max_run)
    with pytest.raises(VE, match=r"(?i)max_run"):
        st.decode_bsd(TEXT, image_size=SIZE, max_run=max_run)


@pytest.mark.parametrize("box_format", ["xyxy", "", "Norm1000", "qwen", None, 1000])
def test_bad_box_format(box_format):
    with pytest.raises(VE, match=r"(?i)box_format|format"):
        st.encode_bsd(OBJS, image_size=SIZE, box_format=box_format)
    with pytest.raises(VE, match=r"(?i)box_format|format"):
        st.decode_bsd(TEXT, image_size=SIZE, box_format=box_format)


@pytest.mark.parametrize("mode", ["lenient", "", "Strict", "t4s", None])
def test_bad_mode(mode):
    with pytest.raises(VE, match=r"(?i)mode"):
        st.decode_bsd(TEXT, image_size=SIZE, mode=mode)


@pytest.mark.parametrize("policy", ["mode", "Majority", "", "bilinear", None])
def test_bad_policy(policy):
    with pytest.raises(VE, match=r"(?i)policy"):
        st.encode_bsd(OBJS, image_size=SIZE, policy=policy)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, float("nan")])
def test_bad_threshold(threshold):
    with pytest.raises(VE, match=r"(?i)threshold"):
        st.encode_bsd(OBJS, image_size=SIZE, threshold=threshold)


@pytest.mark.parametrize("image_size", [(0, 30), (20, 0), (-1, 5), (20,), (20, 30, 3), None, "20x30"])
def test_bad_image_size(image_size):
    with pytest.raises(VE, match=r"(?i)image_size|size"):
        st.encode_bsd(OBJS, image_size=image_size)
    with pytest.raises(VE, match=r"(?i)image_size|size"):
        st.decode_bsd(TEXT, image_size=image_size)


# -------------------------------------------------------------------------------------------- labels

COMMON_TAGS = ["<seg>", "</seg>"]
NORM_TAGS = ["<ref>", "</ref>", "<box>", "</box>"]
QWEN_TAGS = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"]


@pytest.mark.parametrize(
    "box_format, tag",
    [(f, t) for f in ("norm1000", "pixel") for t in NORM_TAGS + COMMON_TAGS]
    + [("qwen2vl", t) for t in QWEN_TAGS + COMMON_TAGS],
)
@pytest.mark.parametrize("where", ["alone", "inside", "start", "end"])
def test_label_with_a_tag(box_format, tag, where):
    label = {"alone": tag, "inside": f"a {tag} b", "start": f"{tag}dog", "end": f"dog{tag}"}[where]
    with pytest.raises(ValueError, match=re.escape(label)):
        st.encode_bsd([("ok", MASK), (label, MASK)], image_size=SIZE, box_format=box_format)


@pytest.mark.parametrize("box_format", ["norm1000", "qwen2vl", "pixel"])
def test_empty_label(box_format):
    with pytest.raises(ValueError, match=r"(?i)label|empty"):
        st.encode_bsd([("", MASK)], image_size=SIZE, box_format=box_format)


# ---------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("text", [None, 12, b"<ref>dog</ref>", ["<ref>"], np.str_("x").encode()])
@pytest.mark.parametrize("mode", ["repair", "strict"])
def test_text_not_str(text, mode):
    with pytest.raises(TypeError, match=r"(?i)str"):
        st.decode_bsd(text, image_size=SIZE, mode=mode)


def test_numpy_str_is_a_str():
    res = st.decode_bsd(np.str_(TEXT), image_size=SIZE, resolution=4)
    assert len(res.objects) == 1


# --------------------------------------------------------------------------------------- box helpers


@pytest.mark.parametrize("mask", [np.zeros(5, bool), np.zeros((2, 3, 4), bool)])
def test_box_from_mask_not_2d(mask):
    with pytest.raises(ValueError, match=r"(?i)2-?D|two[- ]dim|ndim|dimension|shape"):
        st.box_from_mask(mask)


@pytest.mark.parametrize("image_size", [(0, 10), (10, 0), (-5, 10)])
def test_quantize_bad_image_size(image_size):
    with pytest.raises(VE, match=r"(?i)image_size|size"):
        st.quantize_box((0, 0, 1, 1), image_size)
    with pytest.raises(VE, match=r"(?i)image_size|size"):
        st.dequantize_box((0, 0, 1, 1), image_size)


@pytest.mark.parametrize("box", [(0, 0, 1), (0, 0, 1, 1, 1)])
def test_quantize_bad_box(box):
    with pytest.raises(VE, match=r"(?i)box|four|4"):
        st.quantize_box(box, (10, 10))
