"""segtext.metrics against plain numpy references: per-sample IoU on dense masks and COCO RLE,
grid scoring without full-size masks, the referring conventions (cIoU, gIoU with the no-target
rule, Acc@0.5, N-acc / T-acc) and semantic mIoU with an ignore index."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive
import segtext as st
from strategies import make_mask

M = st.metrics
KINDS = ["noise", "rects", "stripes", "checker", "empty", "full"]


# --------------------------------------------------------------------------- references


def ref_box(m):
    """(x1, y1, x2, y2) in pixel edges of the non-zero pixels, None when there are none."""
    ys, xs = np.nonzero(np.asarray(m))
    if ys.size == 0:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def ref_box_iou(a, b):
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    ia = np.zeros((max(a[3], b[3]), max(a[2], b[2])), bool)
    ib = np.zeros_like(ia)
    ia[a[1]:a[3], a[0]:a[2]] = True
    ib[b[1]:b[3], b[0]:b[2]] = True
    u = (ia | ib).sum()
    return float((ia & ib).sum() / u) if u else 0.0


def ref_sample(p, g):
    p = np.asarray(p) != 0
    g = np.asarray(g) != 0
    i = int((p & g).sum())
    u = int((p | g).sum())
    return i, u, int(p.sum()), int(g.sum()), ref_box_iou(ref_box(p), ref_box(g))


def ref_referring(preds, gts):
    """LISA / Text4Seg / GRES conventions written out with numpy."""
    I, U, gious, hits = [], [], [], []
    nt = nt_empty = t = t_found = 0
    for p, g in zip(preds, gts):
        i, u, a, b, biou = ref_sample(p, g)
        I.append(i)
        U.append(u)
        gious.append(1.0 if u == 0 else i / (u + 1e-5))
        hits.append(biou > 0.5)
        if b == 0:
            nt += 1
            nt_empty += a == 0
        else:
            t += 1
            t_found += a > 0
    n = len(I)
    return {
        "ciou": sum(I) / (sum(U) + 1e-10),
        "giou": float(np.mean(gious)) if n else 0.0,
        "acc50": float(np.mean(hits)) if n else 0.0,
        "n": n,
        "n_acc": nt_empty / nt if nt else None,
        "t_acc": t_found / t if t else None,
        "no_target": nt,
        "target": t,
    }


def ref_miou(preds, gts, n_classes, ignore):
    inter = np.zeros(n_classes)
    union = np.zeros(n_classes)
    for p, g in zip(preds, gts):
        keep = np.ones(g.shape, bool) if ignore is None else g != ignore
        for c in range(n_classes):
            pc = (p == c) & keep
            gc = (g == c) & keep
            inter[c] += (pc & gc).sum()
            union[c] += (pc | gc).sum()
    iou = [inter[c] / union[c] if union[c] else math.nan for c in range(n_classes)]
    present = [v for v in iou if not math.isnan(v)]
    return (float(np.mean(present)) if present else math.nan), iou


def rle_u(m):
    m = np.asarray(m) != 0
    return {"size": list(m.shape), "counts": naive.uncompressed_counts(m)}


def rle_c(m):
    r = naive.compressed_rle(np.asarray(m) != 0)
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def close(result, ref):
    assert set(ref) <= set(result)
    for k, v in ref.items():
        if v is None or isinstance(v, int):
            assert result[k] == v, k
        else:
            assert result[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


st_composite = hs.composite


@st_composite
def mask_pairs(draw, max_side=40):
    H = draw(hs.integers(1, max_side))
    W = draw(hs.integers(1, max_side))
    rng = np.random.default_rng(draw(hs.integers(0, 2**32 - 1)))
    p = make_mask(rng, H, W, draw(hs.sampled_from(KINDS))).astype(bool)
    g = make_mask(rng, H, W, draw(hs.sampled_from(KINDS))).astype(bool)
    return p, g


# --------------------------------------------------------------------------- one sample


@given(pair=mask_pairs())
def test_mask_iou_matches_numpy_in_every_representation(pair):
    p, g = pair
    want = ref_sample(p, g)
    forms = {"dense": lambda m: m, "uint8": lambda m: m.astype(np.uint8),
             "rle": rle_u, "compressed": rle_c}
    for fp, tp in forms.items():
        for fg, tg in forms.items():
            s = M.mask_iou(tp(p), tg(g))
            got = (s.intersection, s.union, s.pred_area, s.gt_area, s.box_iou)
            assert got[:4] == want[:4], (fp, fg)
            assert got[4] == pytest.approx(want[4], abs=1e-12), (fp, fg)
            i, u = want[0], want[1]
            assert s.iou == (1.0 if u == 0 else i / (u + 1e-5))
            assert s.acc50 == (want[4] > 0.5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (13, 17)])
def test_empty_and_full_masks(shape):
    empty = np.zeros(shape, bool)
    full = np.ones(shape, bool)
    n = empty.size
    cases = [
        (empty, empty, (0, 0, 0, 0), 1.0, 1.0),  # no target, predicted empty: a hit everywhere
        (full, empty, (0, n, n, 0), 0.0, 0.0),   # no target, any foreground scores 0
        (empty, full, (0, n, 0, n), 0.0, 0.0),
        (full, full, (n, n, n, n), n / (n + 1e-5), 1.0),
    ]
    for p, g, iu, iou, biou in cases:
        for tp in (lambda m: m, rle_u, rle_c):
            for tg in (lambda m: m, rle_u, rle_c):
                s = M.mask_iou(tp(p), tg(g))
                assert (s.intersection, s.union, s.pred_area, s.gt_area) == iu
                assert s.iou == iou and s.box_iou == biou


def test_non_zero_is_foreground_for_int_and_float_masks():
    g = np.zeros((4, 4), bool)
    g[1:3, 1:3] = True
    p = np.zeros((4, 4), np.float32)
    p[1:3, 1:3] = 0.3  # non-zero, whatever its value
    p[0, 0] = -2.0
    s = M.mask_iou(p, g)
    assert (s.intersection, s.union, s.pred_area) == (4, 5, 5)
    s = M.mask_iou((p * 10).astype(np.int16), g)
    assert (s.intersection, s.union, s.pred_area) == (4, 5, 5)


def test_acc50_is_strictly_greater_than_half():
    g = np.zeros((4, 4), bool)
    g[0, 0] = True
    p = np.zeros((4, 4), bool)
    p[0, 0:2] = True  # box IoU exactly 0.5
    s = M.mask_iou(p, g)
    assert s.box_iou == 0.5 and s.acc50 is False
    assert M.box_iou((0, 0, 2, 2), (0, 0, 2, 3)) == pytest.approx(4 / 6)


def test_box_iou_uses_tight_boxes_not_masks():
    # two masks with no pixel in common but the same tight box: box IoU 1
    p = np.zeros((6, 6), bool)
    g = np.zeros((6, 6), bool)
    p[1, 1] = p[4, 4] = True
    g[1, 4] = g[4, 1] = True
    s = M.mask_iou(p, g)
    assert s.intersection == 0 and s.box_iou == 1.0 and s.acc50


@given(a=hs.tuples(*[hs.integers(0, 12)] * 4), b=hs.tuples(*[hs.integers(0, 12)] * 4))
def test_box_iou_matches_painted_boxes(a, b):
    def fix(t):
        x1, y1, x2, y2 = t
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    a, b = fix(a), fix(b)
    assert M.box_iou(a, b) == pytest.approx(ref_box_iou(a, b), abs=1e-12)


@pytest.mark.parametrize("bad", [
    (np.zeros((3, 4), bool), np.zeros((4, 3), bool)),
    (np.zeros((3, 4), bool), {"size": [4, 3], "counts": [12]}),
    ({"size": [3, 4], "counts": [12]}, {"size": [4, 3], "counts": [12]}),
])
def test_size_mismatch_is_an_error(bad):
    with pytest.raises(ValueError, match="size"):
        M.mask_iou(*bad)


@pytest.mark.parametrize("bad, err", [
    (np.zeros((2, 2, 2), bool), ValueError),
    (np.zeros((0, 3), bool), ValueError),
    (np.full((2, 2), np.nan), ValueError),
    (np.array([["a", "b"]]), TypeError),
    ({"size": [2, 2], "counts": [1, 1]}, ValueError),  # runs do not cover the image
    ("mask", TypeError),
])
def test_bad_masks_are_refused(bad, err):
    with pytest.raises(err):
        M.mask_iou(bad, np.zeros((2, 2), bool))


# --------------------------------------------------------------------------- grids


@st_composite
def grid_cases(draw):
    H = draw(hs.integers(1, 48))
    W = draw(hs.integers(1, 48))
    h = draw(hs.integers(1, min(H, 12) + (2 if draw(hs.booleans()) else 0)))  # sometimes more cells than pixels
    w = draw(hs.integers(1, min(W, 12) + (2 if draw(hs.booleans()) else 0)))
    rng = np.random.default_rng(draw(hs.integers(0, 2**32 - 1)))
    grid = make_mask(rng, h, w, draw(hs.sampled_from(KINDS)), n_labels=draw(hs.integers(2, 4)))
    gt = make_mask(rng, H, W, draw(hs.sampled_from(KINDS))).astype(bool)
    return grid.astype(np.int32), gt


@pytest.mark.parametrize("method", ["exact", "t4s"])
@given(case=grid_cases())
def test_grid_iou_matches_upsampled_mask(method, case):
    grid, gt = case
    H, W = gt.shape
    full = naive.grid_to_mask(grid, (H, W), method) != 0  # plain loops over the contract
    want = ref_sample(full, gt)
    if grid.shape[0] <= H and grid.shape[1] <= W:  # segtext's own upsampling agrees with the loops
        np.testing.assert_array_equal(st.grid_to_mask(grid, (H, W), method=method) != 0, full)
    for rle in (rle_u(gt), rle_c(gt)):
        for g in (grid, grid != 0, grid.astype(np.uint8)):
            s = M.grid_iou(g, rle, method)
            assert (s.intersection, s.union, s.pred_area, s.gt_area) == want[:4]
            assert s.box_iou == pytest.approx(want[4], abs=1e-12)


def test_grid_iou_methods_differ_where_the_geometry_differs():
    # 3 cells over 4 pixels: exact gives cells 0,1,1,2 (centres); t4s gives floor(y*3/4) = 0,0,1,2
    grid = np.array([[0, 1, 0]])
    gt = {"size": [1, 4], "counts": [1, 1, 2]}  # pixel 1 only
    assert M.grid_iou(grid, gt, "exact").pred_area == 2
    assert M.grid_iou(grid, gt, "exact").intersection == 1
    assert M.grid_iou(grid, gt, "t4s").pred_area == 1
    assert M.grid_iou(grid, gt, "t4s").intersection == 0


def test_grid_iou_refuses_bad_input():
    gt = {"size": [4, 4], "counts": [16]}
    with pytest.raises(ValueError, match="method"):
        M.grid_iou(np.zeros((2, 2), int), gt, "bilinear")
    with pytest.raises(ValueError, match="grid"):
        M.grid_iou(np.zeros((2, 2, 2), int), gt)
    with pytest.raises(ValueError, match="grid"):
        M.grid_iou(np.zeros((2, 2), float), gt)


@pytest.mark.parametrize("method", ["exact", "t4s"])
def test_grid_iou_on_real_masks_matches_decoded_masks(sample_annotations, method):
    rles = [a["segmentation"] for a in sample_annotations[:60]]
    grids = st.rles_to_grids(rles, grid_size=16)
    for grid, rle in zip(grids, rles):
        H, W = rle["size"]
        full = st.grid_to_mask(grid, (H, W), method=method) != 0
        gt = naive.decode_rle(rle).astype(bool)
        want = ref_sample(full, gt)
        s = M.grid_iou(grid, rle, method)
        assert (s.intersection, s.union, s.pred_area, s.gt_area) == want[:4]
        assert s.box_iou == pytest.approx(want[4], abs=1e-12)


# --------------------------------------------------------------------------- datasets


@st_composite
def datasets(draw):
    n = draw(hs.integers(0, 12))
    rng = np.random.default_rng(draw(hs.integers(0, 2**32 - 1)))
    preds, gts = [], []
    for _ in range(n):
        H, W = (int(v) for v in rng.integers(1, 24, size=2))
        preds.append(make_mask(rng, H, W, draw(hs.sampled_from(KINDS))).astype(bool))
        gts.append(make_mask(rng, H, W, draw(hs.sampled_from(KINDS + ["empty"]))).astype(bool))
    return preds, gts


@given(data=datasets(), form=hs.sampled_from(["dense", "rle", "mixed"]))
def test_evaluate_referring_matches_reference(data, form):
    preds, gts = data
    want = ref_referring(preds, gts)
    if form == "rle":
        args = [rle_c(p) for p in preds], [rle_u(g) for g in gts]
    elif form == "mixed":
        args = preds, [rle_c(g) for g in gts]
    else:
        args = preds, gts
    close(M.evaluate_referring(*args), want)


def test_no_target_rule():
    H, W = 5, 6
    empty = np.zeros((H, W), bool)
    some = empty.copy()
    some[1:3, 2:4] = True
    # three no-target samples: predicted empty (1), predicted something (0), missing as empty (1)
    # and two target samples: found exactly (~1) and missed (0)
    preds = [empty, some, empty, some, empty]
    gts = [empty, empty, empty, some, some]
    r = M.evaluate_referring(preds, gts)
    assert r["no_target"] == 3 and r["target"] == 2
    assert r["n_acc"] == pytest.approx(2 / 3)
    assert r["t_acc"] == pytest.approx(1 / 2)
    assert r["giou"] == pytest.approx((1 + 0 + 1 + 4 / (4 + 1e-5) + 0) / 5)
    assert r["acc50"] == pytest.approx(3 / 5)  # both-empty boxes count as hits
    assert r["ciou"] == pytest.approx(4 / (4 + 4 + 4))
    close(r, ref_referring(preds, gts))


def test_n_acc_and_t_acc_are_none_without_such_samples():
    m = np.ones((2, 2), bool)
    r = M.evaluate_referring([m], [m])
    assert r["n_acc"] is None and r["t_acc"] == 1.0
    r = M.evaluate_referring([m], [~m])
    assert r["t_acc"] is None and r["n_acc"] == 0.0


def test_empty_dataset_and_length_mismatch():
    r = M.evaluate_referring([], [])
    assert r["n"] == 0 and r["ciou"] == 0.0 and r["giou"] == 0.0
    with pytest.raises(ValueError, match="pair up"):
        M.evaluate_referring([np.zeros((1, 1))], [])


def test_streaming_evaluator_equals_batch_and_add_grid(sample_annotations):
    rles = [a["segmentation"] for a in sample_annotations[:40]]
    grids = st.rles_to_grids(rles, grid_size=16)
    ev = M.ReferringEvaluator()
    preds = []
    for grid, rle in zip(grids, rles):
        s = ev.add_grid(grid, rle)
        preds.append(st.grid_to_mask(grid, rle["size"]) != 0)
        assert isinstance(s, M.SampleScore)
    gts = [naive.decode_rle(r).astype(bool) for r in rles]
    close(ev.result(), ref_referring(preds, gts))
    close(M.evaluate_referring(preds, rles), ref_referring(preds, gts))
    # add_score accumulates a precomputed score exactly like add
    ev2 = M.ReferringEvaluator()
    for p, g in zip(preds, rles):
        ev2.add_score(M.mask_iou(p, g))
    assert ev2.result() == ev.result()


# --------------------------------------------------------------------------- semantic


@st_composite
def semantic_sets(draw):
    n_classes = draw(hs.integers(1, 6))
    rng = np.random.default_rng(draw(hs.integers(0, 2**32 - 1)))
    ignore_frac = draw(hs.sampled_from([0.0, 0.2, 1.0]))
    preds, gts = [], []
    for _ in range(draw(hs.integers(1, 4))):
        H, W = (int(v) for v in rng.integers(1, 20, size=2))
        p = rng.integers(0, n_classes, size=(H, W))
        g = rng.integers(0, n_classes, size=(H, W))
        if draw(hs.booleans()):  # leave some classes out altogether
            p = np.minimum(p, max(n_classes - 2, 0))
            g = np.minimum(g, max(n_classes - 2, 0))
        g = np.where(rng.random((H, W)) < ignore_frac, 255, g)
        preds.append(p)
        gts.append(g)
    return preds, gts, n_classes


@given(data=semantic_sets())
def test_miou_matches_reference_with_ignore_index(data):
    preds, gts, n = data
    want_miou, want_iou = ref_miou(preds, gts, n, 255)
    r = M.evaluate_semantic(preds, gts, n_classes=n, ignore_index=255)
    if math.isnan(want_miou):
        assert math.isnan(r["miou"])
    else:
        assert r["miou"] == pytest.approx(want_miou, rel=1e-12)
    for got, want in zip(r["iou"], want_iou):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_miou_details():
    p = np.array([[0, 1, 2, 2]])
    g = np.array([[0, 1, 1, 255]])
    r = M.evaluate_semantic([p], [g], n_classes=3)
    assert r["iou"] == pytest.approx([1.0, 0.5, 0.0])
    assert r["miou"] == pytest.approx(0.5)
    assert r["pixel_acc"] == pytest.approx(2 / 3)
    # a class that never occurs is NaN and left out of the mean
    r = M.evaluate_semantic([p], [g], n_classes=5)
    assert math.isnan(r["iou"][3]) and math.isnan(r["iou"][4]) and r["miou"] == pytest.approx(0.5)
    # without an ignore index 255 is an ordinary (out of range) label
    with pytest.raises(ValueError, match="outside"):
        M.evaluate_semantic([p], [g], n_classes=3, ignore_index=None)
    # a predicted label out of range is an error unless its pixel is ignored
    with pytest.raises(ValueError, match="outside"):
        M.evaluate_semantic([np.array([[7]])], [np.array([[0]])], n_classes=3)
    r = M.evaluate_semantic([np.array([[7]])], [np.array([[255]])], n_classes=3)
    assert math.isnan(r["pixel_acc"]) and math.isnan(r["miou"])


def test_semantic_evaluator_checks():
    with pytest.raises(ValueError):
        M.SemanticEvaluator(0)
    ev = M.SemanticEvaluator(2)
    with pytest.raises(ValueError, match="shape"):
        ev.add(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(TypeError):
        ev.add(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="pair up"):
        M.evaluate_semantic([np.zeros((1, 1), int)], [], n_classes=2)


def test_t4s_box_convention_matches_text4seg_boxes():
    """Text4Seg scores boxes from masks_to_boxes (inclusive last pixel) with area
    (x2 - x1) * (y2 - y1): a one-pixel-wide box has no area."""
    p = np.zeros((6, 6), bool)
    p[1:4, 2] = True  # one column wide
    g = p.copy()
    s = M.mask_iou(p, g)
    assert s.pred_box == (2, 1, 3, 4) and s.gt_box == (2, 1, 3, 4)
    assert s.hit50("edges") and not s.hit50("t4s")
    q = np.zeros((6, 6), bool)
    q[0:4, 0:4] = True
    h = np.zeros((6, 6), bool)
    h[1:5, 1:5] = True
    # inclusive boxes (0,0,3,3) and (1,1,4,4): intersection 2*2, areas 9 and 9
    assert M.box_iou(M.mask_iou(q, h).pred_box, M.mask_iou(q, h).gt_box, "t4s") == pytest.approx(4 / 14)
    ev = M.ReferringEvaluator(box_convention="t4s")
    ev.add(p, g)
    assert ev.result()["acc50"] == 0.0
    with pytest.raises(ValueError, match="box_convention"):
        M.ReferringEvaluator(box_convention="xyxy")
