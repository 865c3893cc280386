"""rle_to_grid / rles_to_grids against the dense path (pycocotools decode + mask_to_grid), and the
COCO helpers of segtext.coco."""

import json
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive
import segtext as st
from strategies import binary_masks, grid_sizes_for

POLICIES = ("nearest", "majority", "any")


def _rle_variants(mask):
    """The same mask as compressed bytes, compressed str and uncompressed list counts."""
    rle = naive.compressed_rle(mask)
    H, W = mask.shape
    yield "bytes", {"size": [H, W], "counts": rle["counts"]}
    yield "str", {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    yield "list", {"size": [H, W], "counts": naive.uncompressed_counts(mask)}


@given(binary_masks(max_side=64), hs.data())
def test_rle_to_grid_equals_dense_path(mask, data):
    H, W = mask.shape
    h, w = data.draw(grid_sizes_for(H, W), label="grid_size")
    thr = data.draw(hs.sampled_from([0.5, 0.5, 1.0, 0.25, 0.75, 1e-6, 0.3]), label="threshold")
    for kind, rle in _rle_variants(mask):
        dense = naive.decode_rle(rle)
        np.testing.assert_array_equal(dense, mask.astype(np.uint8))
        for policy in POLICIES:
            got = st.rle_to_grid(rle, (h, w), policy=policy, threshold=thr)
            assert got.dtype == np.int32 and got.shape == (h, w)
            want = st.mask_to_grid(dense, (h, w), policy=policy, threshold=thr)
            np.testing.assert_array_equal(got, want, err_msg=f"{kind} policy={policy} thr={thr}")
            np.testing.assert_array_equal(
                got,
                naive.mask_to_grid(dense, (h, w), policy=policy, threshold=thr),
                err_msg=f"{kind} {policy} naive",
            )


@given(binary_masks(max_side=40), hs.data())
def test_rle_to_grid_uncompressed_with_zero_runs(mask, data):
    """Uncompressed counts may contain zero-length runs anywhere (still summing to H*W)."""
    H, W = mask.shape
    counts = naive.uncompressed_counts(mask)
    n_insert = data.draw(hs.integers(1, 4))
    for _ in range(n_insert):
        i = data.draw(hs.integers(1, len(counts)))
        counts = counts[:i] + [0, 0] + counts[i:]  # two empty runs keep the parity
    rle = {"size": [H, W], "counts": counts}
    np.testing.assert_array_equal(naive.decode_rle(rle), mask.astype(np.uint8))
    h, w = data.draw(grid_sizes_for(H, W))
    for policy in POLICIES:
        np.testing.assert_array_equal(
            st.rle_to_grid(rle, (h, w), policy=policy),
            st.mask_to_grid(mask.astype(bool), (h, w), policy=policy),
        )


def test_rle_to_grid_defaults():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) < 0.5
    rle = naive.compressed_rle(mask)
    got = st.rle_to_grid(rle)
    assert got.shape == (16, 16) and got.dtype == np.int32
    np.testing.assert_array_equal(got, naive.mask_to_grid(mask, (16, 16), "majority"))


def test_rle_to_grid_every_sample_mask(sample_annotations):
    """Every one of the 734 bundled real COCO masks, every policy, several grid sizes."""
    assert len(sample_annotations) == 734
    n = 0
    for ann in sample_annotations:
        rle = ann["segmentation"]
        dense = mask_utils.decode(rle)
        H, W = rle["size"]
        for grid_size in [(16, 16), (24, 24), (32, 32), (64, 64), (11, 29)]:
            for policy in POLICIES:
                got = st.rle_to_grid(rle, grid_size, policy=policy)
                want = st.mask_to_grid(dense, grid_size, policy=policy)
                if not np.array_equal(got, want):
                    pytest.fail(f"image {ann.get('image_id')} size {(H, W)} grid {grid_size} policy {policy}")
                n += 1
        got = st.rle_to_grid(rle, (16, 16), policy="majority", threshold=0.3)
        np.testing.assert_array_equal(got, st.mask_to_grid(dense, (16, 16), policy="majority", threshold=0.3))
    assert n == 734 * 5 * 3


def test_sample_nearest_equals_pillow_and_majority_equals_naive(sample_annotations):
    """The dense path on the real masks against the external oracles (a spread of 40 masks)."""
    for ann in sample_annotations[::19]:
        dense = mask_utils.decode(ann["segmentation"])
        np.testing.assert_array_equal(
            st.rle_to_grid(ann["segmentation"], (16, 16), policy="nearest"),
            naive.pillow_resize_nearest(dense, 16, 16),
        )
        np.testing.assert_array_equal(
            st.rle_to_grid(ann["segmentation"], (16, 16), policy="majority"),
            naive.mask_to_grid(dense, (16, 16), "majority"),
        )


def test_rles_to_grids_equals_stacked(sample_annotations):
    rles = [a["segmentation"] for a in sample_annotations]
    for grid_size, policy in [((16, 16), "majority"), ((24, 24), "nearest"), ((32, 16), "any")]:
        got = st.rles_to_grids(rles, grid_size, policy=policy)
        assert got.dtype == np.int32
        assert got.shape == (len(rles), *grid_size)
        want = np.stack([st.rle_to_grid(r, grid_size, policy=policy) for r in rles])
        np.testing.assert_array_equal(got, want)


@given(hs.lists(binary_masks(max_side=40), min_size=1, max_size=6), hs.data())
def test_rles_to_grids_mixed_forms_and_sizes(masks, data):
    h = data.draw(hs.integers(1, min(m.shape[0] for m in masks)))
    w = data.draw(hs.integers(1, min(m.shape[1] for m in masks)))
    rles = []
    for m in masks:
        kind, rle = data.draw(hs.sampled_from(list(_rle_variants(m))))
        rles.append(rle)
    policy = data.draw(hs.sampled_from(POLICIES))
    thr = data.draw(hs.sampled_from([0.5, 0.2, 1.0]))
    got = st.rles_to_grids(rles, (h, w), policy=policy, threshold=thr)
    want = np.stack([st.rle_to_grid(r, (h, w), policy=policy, threshold=thr) for r in rles])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (len(rles), h, w)


NAIVE_ENCODERS = {"rrle": naive.encode_rrle, "isd": naive.encode_isd, "irle": naive.encode_irle}


@given(hs.lists(binary_masks(max_side=40), min_size=1, max_size=5), hs.data())
def test_one_call_text_encoders_equal_the_naive_chain(masks, data):
    """rle_to_text / rles_to_texts (RLE -> text in one compiled call, with a cached call plan)
    against the naive grid of the dense mask written by the naive encoder."""
    h = data.draw(hs.integers(1, min(m.shape[0] for m in masks)))
    w = data.draw(hs.integers(1, min(m.shape[1] for m in masks)))
    policy = data.draw(hs.sampled_from(POLICIES))
    thr = data.draw(hs.sampled_from([0.5, 0.2, 1.0]))
    fmt = data.draw(hs.sampled_from(sorted(NAIVE_ENCODERS)))
    names = data.draw(hs.lists(hs.sampled_from(["dog", "white cat", "élève", "x"]),
                               min_size=len(masks), max_size=len(masks)))
    rles = [data.draw(hs.sampled_from(list(_rle_variants(m))))[1] for m in masks]
    want = [NAIVE_ENCODERS[fmt](naive.mask_to_grid(m, (h, w), policy, thr), ["others", name])
            for m, name in zip(masks, names)]
    for _ in range(2):  # the second time through, every call plan comes from the cache
        got = [st.rle_to_text(r, name, (h, w), policy, thr, fmt) for r, name in zip(rles, names)]
        assert got == want
    assert st.rles_to_texts(rles, names, (h, w), policy, thr, fmt) == want
    if all(isinstance(r["counts"], str) for r in rles):  # the batch read without a step per mask
        assert st.rles_to_texts(rles, names[0], (h, w), policy, thr, fmt) == [
            NAIVE_ENCODERS[fmt](naive.mask_to_grid(m, (h, w), policy, thr), ["others", names[0]])
            for m in masks]


def test_one_call_encoders_on_every_sample_mask(sample_annotations):
    rles = [a["segmentation"] for a in sample_annotations]
    names = [st.coco.COCO_CATEGORY_NAMES[a["category_id"]] for a in sample_annotations]
    for policy in POLICIES:
        want = [st.encode_rrle(st.rle_to_grid(r, 16, policy), ["others", n]) for r, n in zip(rles, names)]
        assert st.rles_to_texts(rles, names, 16, policy) == want
        assert [st.rle_to_text(r, n, 16, policy) for r, n in zip(rles, names)] == want


def test_cached_call_plan_still_checks_its_arguments():
    rle = {"size": [4, 4], "counts": [0, 16]}
    st.rle_to_text(rle, "dog", 2, "majority", 0.5)  # caches the plan of this call shape
    with pytest.raises(ValueError, match="threshold"):
        st.rle_to_text(rle, "dog", 2, "majority", 1.5)
    with pytest.raises(TypeError, match="threshold"):
        st.rle_to_text(rle, "dog", 2, "majority", True)
    st.rle_to_text(rle, "dog", 1)
    with pytest.raises(TypeError, match="grid_size"):  # True == 1, but never a grid size
        st.rle_to_text(rle, "dog", True)
    assert st.rle_to_text(rle, "dog", [2, 2]) == st.rle_to_text(rle, "dog", (2, 2))  # a list: not cached


# ------------------------------------------------------------------------------------------ segtext.coco


def test_decode_counts_matches_pycocotools(sample_annotations):
    for ann in sample_annotations[::7]:
        rle = ann["segmentation"]
        counts = st.coco.decode_counts(rle["counts"])
        assert counts.dtype == np.int64
        assert counts.tolist() == naive.decode_counts_string(rle["counts"])
        np.testing.assert_array_equal(naive.counts_to_mask(counts, rle["size"]), mask_utils.decode(rle))
        # bytes work too
        assert st.coco.decode_counts(rle["counts"].encode("ascii")).tolist() == counts.tolist()


@given(binary_masks(max_side=50))
def test_decode_counts_roundtrip_random(mask):
    rle = naive.compressed_rle(mask)
    counts = st.coco.decode_counts(rle["counts"])
    assert counts.tolist() == naive.uncompressed_counts(mask)
    assert counts.tolist() == naive.decode_counts_string(rle["counts"])


def _dense_from_any_rle(rle):
    H, W = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (list, np.ndarray)):
        return naive.counts_to_mask([int(c) for c in counts], (H, W))
    return mask_utils.decode(rle)


def test_to_rle_polygons_uncompressed_and_compressed():
    H, W = 60, 80
    polys = [[10.0, 10.0, 50.0, 12.0, 45.0, 40.0, 12.0, 35.0], [60.0, 5.0, 75.0, 5.0, 70.0, 20.0]]
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, H, W)))
    rle = st.coco.to_rle(polys, (H, W))
    assert isinstance(rle, dict) and list(rle["size"]) == [H, W]
    np.testing.assert_array_equal(_dense_from_any_rle(rle), want)
    np.testing.assert_array_equal(st.rle_to_grid(rle, (16, 16)), st.mask_to_grid(want, (16, 16)))

    mask = np.zeros((H, W), dtype=np.uint8)
    mask[5:30, 7:60] = 1
    unc = {"size": [H, W], "counts": naive.uncompressed_counts(mask)}
    np.testing.assert_array_equal(_dense_from_any_rle(st.coco.to_rle(unc, (H, W))), mask)
    comp = naive.compressed_rle(mask)
    np.testing.assert_array_equal(_dense_from_any_rle(st.coco.to_rle(comp, (H, W))), mask)
    comp_str = {"size": [H, W], "counts": comp["counts"].decode()}
    np.testing.assert_array_equal(_dense_from_any_rle(st.coco.to_rle(comp_str, (H, W))), mask)


def test_sample_and_category_names():
    assert os.path.exists(st.coco.SAMPLE_PATH)
    assert str(st.coco.SAMPLE_PATH).endswith("coco_val2014_sample.json")
    anns = st.coco.sample_annotations()
    assert len(anns) == 734
    assert all(isinstance(a, dict) and "segmentation" in a for a in anns)
    names = st.coco.COCO_CATEGORY_NAMES
    assert len(names) == 80
    assert names[1] == "person" and names[18] == "dog" and names[90] == "toothbrush"


def test_load_annotations_both_layouts(tmp_path, sample_annotations):
    anns = [dict(a) for a in sample_annotations[:5]]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(anns))
    loaded = st.coco.load_annotations(results)
    assert isinstance(loaded, list) and len(loaded) == 5
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({"images": [], "annotations": anns, "categories": []}))
    loaded = st.coco.load_annotations(str(instances))
    assert isinstance(loaded, list) and len(loaded) == 5
    for a, b in zip(loaded, anns, strict=True):
        np.testing.assert_array_equal(
            _dense_from_any_rle(st.coco.to_rle(a["segmentation"], b["segmentation"]["size"])),
            mask_utils.decode(b["segmentation"]),
        )
