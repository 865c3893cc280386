"""decode_bsd with a vocabulary: <ref> label slips are repairs, never new labels (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

import segtext as st

SIZE = (8, 8)
VOCAB = ["dog", "cat", "white horse"]


def block(label: str, box: str = "[0,0,500,500]", bricks: str = "<fg_4>") -> str:
    return f"<ref>{label}</ref><box>{box}</box><seg>{bricks}</seg>"


A = block("dog")
B = "<ref>cat</ref><box>[500,500,1000,1000]</box><seg><fg_4></seg>"

# text, unknown, labels read, repair kinds
CASES = [
    (A + B, "foreground", ["dog", "cat"], []),
    (block("Dog") + B, "foreground", ["dog", "cat"], ["label_case"]),
    (block("DOG.") + B, "foreground", ["dog", "cat"], ["label_case"]),
    (block(" dog ") + B, "foreground", ["dog", "cat"], ["label_case"]),
    (block("White Horse!") + B, "foreground", ["white horse", "cat"], ["label_case"]),
    (block("cow") + B, "foreground", ["cow", "cat"], ["unknown_label"]),
    (block("cow") + B, "background", ["cat"], ["unknown_label"]),
    (block("cta") + B, "nearest", ["cat", "cat"], ["unknown_label"]),
    (block("Dog") + B.replace("<seg>", "<SEG>"), "foreground", ["dog", "cat"], ["label_case", "tag_case"]),
    (block("Dog") + B.replace("</seg>", ""), "foreground", ["dog", "cat"], ["label_case", "missing_seg_close"]),
    (A + "<ref>Do", "foreground", ["dog"], ["missing_box"]),  # cut off inside a label: no object
    (block("?!") + B, "background", ["cat"], ["unknown_label"]),  # no letter at all: unknown
]


@pytest.mark.parametrize("text, unknown, labels, kinds", CASES)
def test_labels_resolved(text, unknown, labels, kinds):
    res = st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, unknown=unknown)
    assert [o.label for o in res.objects] == labels
    assert [r.kind for r in res.repairs] == kinds
    # the mask is the union of the objects kept, whichever path paints it
    fresh = st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, unknown=unknown)
    union = np.zeros(SIZE, bool)
    for o in res.objects:
        union |= o.mask
    assert np.array_equal(fresh.mask(), union)
    if kinds:
        with pytest.raises(st.DecodeError):
            st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, unknown=unknown, mode="strict")
    else:
        strict = st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, unknown=unknown, mode="strict")
        assert [o.label for o in strict.objects] == labels


def test_without_labels_every_label_is_kept_as_written():
    text = block("Dog.") + block(" dog ") + B
    res = st.decode_bsd(text, SIZE, resolution=2)
    assert [o.label for o in res.objects] == ["Dog.", " dog ", "cat"] and res.ok
    assert [o.label for o in st.decode_bsd(text, SIZE, resolution=2, mode="strict").objects] == ["Dog.", " dog ", "cat"]


def test_unknown_error_raises_in_either_mode_with_the_position():
    text = A + block("cow")
    for mode in ("repair", "strict"):
        with pytest.raises(st.DecodeError) as e:
            st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, unknown="error", mode=mode)
        assert e.value.kind == "unknown_label" and e.value.column == len(A) + len("<ref>") + 1
    assert [o.label for o in st.decode_bsd(A, SIZE, resolution=2, labels=VOCAB, unknown="error").objects] == ["dog"]


def test_strict_raises_at_the_first_deviation_in_text_order():
    text = block("Dog") + B.replace("[500,500,1000,1000]", "[500,500,1000,1001]")
    with pytest.raises(st.DecodeError) as e:
        st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB, mode="strict")
    assert e.value.kind == "label_case" and e.value.column == len("<ref>") + 1


def test_repair_positions_point_at_the_label():
    text = "é" + A + block("Cat")  # a two-byte character first: positions are characters
    res = st.decode_bsd(text, SIZE, resolution=2, labels=VOCAB)
    (r,) = res.repairs
    assert r.kind == "label_case" and r.column == 1 + len(A) + len("<ref>") + 1


@pytest.mark.parametrize("labels, unknown, err", [
    ("dog", "foreground", TypeError),
    ([], "foreground", ValueError),
    (["dog", ""], "foreground", ValueError),
    (["a <seg> b"], "foreground", ValueError),
    (["dog", 3], "foreground", TypeError),
    (VOCAB, "drop", ValueError),
])
def test_bad_vocabulary_arguments(labels, unknown, err):
    with pytest.raises(err):
        st.decode_bsd(A, SIZE, resolution=2, labels=labels, unknown=unknown)


def _slip(label: str, how: int) -> str:
    return [label, label.upper(), label.title() + ".", f" {label}", f"({label})"][how]


@settings(max_examples=60, deadline=None)
@given(st_.lists(st_.tuples(st_.sampled_from(VOCAB), st_.integers(0, 4), st_.integers(0, 3)), min_size=1, max_size=5),
       st_.booleans())
def test_slipped_labels_read_as_the_encoded_ones(objs, tag_slip):
    """Encode objects with vocabulary labels, slip the spelling of each <ref> label: the decoded
    labels and masks are the encoded ones, with one label_case repair per slipped label."""
    rng = np.random.default_rng(len(objs))
    H, W = 24, 32
    masks = []
    for _, _, seed in objs:
        m = np.zeros((H, W), bool)
        y, x = 2 + 4 * seed, 3 + 5 * seed
        m[y:y + 6 + seed, x:x + 7] = True
        m &= rng.random((H, W)) < 0.9
        m[y, x] = True
        masks.append(m)
    clean = st.encode_bsd([(lab, m) for (lab, _, _), m in zip(objs, masks)], (H, W), resolution=8)
    want = st.decode_bsd(clean, (H, W), resolution=8)
    text = clean
    for lab, how, _ in objs:  # blocks in order: slip the next occurrence of each label tag
        text = text.replace(f"<ref>{lab}</ref>", f"<ref>\0{_slip(lab, how)}\0</ref>", 1)
    text = text.replace("\0", "")
    if tag_slip:
        text = text.replace("<seg>", "<Seg>", 1)
    res = st.decode_bsd(text, (H, W), resolution=8, labels=VOCAB)
    assert [o.label for o in res.objects] == [lab for lab, _, _ in objs]
    assert np.array_equal(res.mask(), want.mask())
    kinds = sorted(r.kind for r in res.repairs)
    assert kinds == sorted(["label_case"] * sum(how > 0 for _, how, _ in objs) + ["tag_case"] * tag_slip)
    assert np.array_equal(st.decode_bsd(text, (H, W), resolution=8, labels=VOCAB).mask(), want.mask())
