"""segtext.evaluation end to end on synthetic data built here: ground-truth masks are encoded with
st.rle_to_text / st.encode_bsd, some answers are damaged on purpose, and the decode-health table
and the scores are checked against what was done and against a plain numpy reference."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive
import segtext as st
from segtext import evaluation as E

GRID = (16, 16)
LABEL = "the object"


# --------------------------------------------------------------------------- reference


def ref_scores(preds, gts):
    I = U = 0
    gious, hits = [], []
    nt = nt_empty = 0
    for p, g in zip(preds, gts):
        i = int((p & g).sum())
        u = int((p | g).sum())
        I += i
        U += u
        gious.append(1.0 if u == 0 else i / (u + 1e-5))
        hits.append(box_iou(p, g) > 0.5)
        if not g.any():
            nt += 1
            nt_empty += not p.any()
    return {"ciou": I / (U + 1e-10), "giou": float(np.mean(gious)), "acc50": float(np.mean(hits)),
            "n": len(gious), "n_acc": nt_empty / nt if nt else None}


def box_iou(p, g):
    def box(m):
        ys, xs = np.nonzero(m)
        return None if ys.size == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)

    a, b = box(p), box(g)
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rle_of(mask):
    return {"size": list(mask.shape), "counts": naive.uncompressed_counts(mask)}


def upsample(grid, size, method="exact"):
    return naive.grid_to_mask(np.asarray(grid) != 0, size, method).astype(bool)


# --------------------------------------------------------------------------- the synthetic set


def make_masks(n, seed=0, no_target_every=5):
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(n):
        H, W = int(rng.integers(24, 90)), int(rng.integers(24, 90))
        m = np.zeros((H, W), bool)
        if i % no_target_every != no_target_every - 1:
            for _ in range(int(rng.integers(1, 3))):
                y0, x0 = int(rng.integers(0, H - 4)), int(rng.integers(0, W - 4))
                m[y0:y0 + int(rng.integers(4, H // 2 + 5)), x0:x0 + int(rng.integers(4, W // 2 + 5))] = True
        masks.append(m)
    return masks


def drop_row_space(text):
    """'\\n others' instead of '\\n  others': one row_separator repair, same grid."""
    i = text.index("\n ")
    return text[:i + 1] + text[i + 2:]


def keep_rows(text, k):
    """The first k rows only: missing_rows, filled from the row above."""
    return "\n ".join(text.split("\n ")[:k]) + "\n"


@pytest.fixture(scope="module")
def synthetic():
    """30 samples: R-RLE and B-SD answers, clean and damaged, with the expected outcome of each."""
    masks = make_masks(30)
    rles = [rle_of(m) for m in masks]
    gts = [{"id": i, "segmentation": None if not m.any() else rles[i], "image_size": list(m.shape)}
           for i, m in enumerate(masks)]
    preds, expect = [], {}
    for i, (m, rle) in enumerate(zip(masks, rles)):
        grid = st.rle_to_grid(rle, GRID)
        text = st.rle_to_text(rle, LABEL, GRID)
        kind = i % 6
        if kind == 0:  # clean R-RLE in the usual sentence
            ans, pred, status, repairs = f"Sure, here it is: <seg>{text}</seg>", upsample(grid, m.shape), "clean", {}
        elif kind == 1:  # row break without its space: repaired, same grid
            ans, pred = "<seg>" + drop_row_space(text) + "</seg>", upsample(grid, m.shape)
            status, repairs = "repaired", {"row_separator": 1}
        elif kind == 2:  # never closed: repaired, same grid
            ans, pred, status, repairs = "<seg>" + text, upsample(grid, m.shape), "repaired", {"missing_seg_close": 1}
        elif kind == 3:  # cut after 10 rows: the last row is repeated
            g = np.concatenate([grid[:10], np.repeat(grid[9:10], 6, 0)])
            ans, pred, status, repairs = "<seg>" + keep_rows(text, 10) + "</seg>", upsample(g, m.shape), \
                "repaired", {"missing_rows": 1}
        elif kind == 4:  # B-SD, clean
            objs = [(LABEL, m)] if m.any() else []
            ans = "Sure. " + st.encode_bsd(objs, m.shape, resolution=16)
            pred = st.decode_bsd(ans, m.shape, resolution=16).mask()
            status, repairs = ("clean", {}) if m.any() else ("no_mask", {})
        else:  # no mask at all in the answer
            ans, pred, status, repairs = "I cannot find it.", np.zeros(m.shape, bool), "no_mask", {}
        if i in (7, 22):  # no prediction for these two
            expect[i] = ("missing", {}, np.zeros(m.shape, bool))
            continue
        preds.append({"id": i, "answer": ans})
        expect[i] = (status, repairs, pred)
    return masks, gts, preds, expect


def test_health_and_scores_match_what_was_done(synthetic):
    masks, gts, preds, expect = synthetic
    res = E.evaluate(preds, gts, grid_size=GRID, resolution=16)
    h = res.health
    statuses = [e[0] for e in expect.values()]
    assert h.ground_truths == 30 and h.predictions == 28 and h.scored == 30
    assert h.clean == statuses.count("clean")
    assert h.repaired == statuses.count("repaired")
    assert h.no_mask == statuses.count("no_mask")
    assert h.missing == 2 and h.no_ground_truth == 0 and h.bad_lines == 0 and h.rejected == 0
    assert h.answers == 28
    want_kinds = {}
    for status, repairs, _ in expect.values():
        for k in repairs:
            want_kinds[k] = want_kinds.get(k, 0) + 1
    assert h.repair_kinds == want_kinds
    assert h.empty == sum(1 for i, (s, _, p) in expect.items() if s != "missing" and not p.any())
    assert h.formats["bsd"] + h.formats["rrle"] + h.formats["none"] == 28
    assert h.grid_sizes == {"16x16": h.formats["rrle"]}

    # per-sample records
    by_id = {r.id: r for r in res.records}
    assert len(by_id) == 30
    for i, (status, repairs, pred) in expect.items():
        r = by_id[i]
        assert r.status == status and r.repairs == repairs, i
        g = masks[i]
        inter, union = int((pred & g).sum()), int((pred | g).sum())
        assert (r.intersection, r.union, r.pred_area, r.gt_area) == (inter, union, int(pred.sum()), int(g.sum())), i
        assert r.iou == (1.0 if union == 0 else inter / (union + 1e-5))

    # the figures against numpy
    order = list(expect)
    want = ref_scores([expect[i][2] for i in order], [masks[i] for i in order])
    for k in ("ciou", "giou", "acc50"):
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-12), k
    assert res.metrics["n"] == 30 and res.metrics["n_acc"] == pytest.approx(want["n_acc"])
    assert res.metrics["no_target"] == sum(not m.any() for m in masks)
    kinds = [p.kind for p in res.problems]
    assert kinds.count("missing_prediction") == 2
    assert {p.id for p in res.problems if p.kind == "missing_prediction"} == {7, 22}


def test_strict_mode_rejects_damaged_answers(synthetic):
    masks, gts, preds, expect = synthetic
    res = E.evaluate(preds, gts, mode="strict", grid_size=GRID, resolution=16)
    h = res.health
    n_damaged = sum(1 for s, _, _ in expect.values() if s == "repaired")
    assert h.rejected == n_damaged and h.repaired == 0
    assert sum(h.rejected_kinds.values()) == n_damaged
    assert set(h.rejected_kinds) <= {"row_separator", "missing_seg_close", "missing_rows"}
    rejected = [r for r in res.records if r.status == "rejected"]
    assert all(r.pred_area == 0 and r.error and "line" in r.error for r in rejected)
    # a rejected answer scores as an empty mask
    preds_ref = [np.zeros_like(expect[i][2]) if expect[i][0] == "repaired" else expect[i][2] for i in expect]
    want = ref_scores(preds_ref, [masks[i] for i in expect])
    assert res.metrics["ciou"] == pytest.approx(want["ciou"], abs=1e-12)
    assert res.metrics["giou"] == pytest.approx(want["giou"], abs=1e-12)


@pytest.mark.parametrize("upsample_method", [None, "exact"])
def test_t4s_mode_reproduces_text4seg(upsample_method):
    masks = make_masks(16, seed=3)
    gts, preds, want_preds = [], [], []
    rng = np.random.default_rng(5)
    for i, m in enumerate(masks):
        rle = rle_of(m)
        text = st.rle_to_text(rle, LABEL, GRID, policy="nearest")
        if i % 3 == 1:
            text = text[: int(rng.integers(5, len(text)))]  # cut anywhere: Text4Seg pads or fails
        elif i % 3 == 2:
            text = text.replace(" *", " *x", 1)  # int("x..") fails: all background in Text4Seg
        answer = "Sure, <seg>" + text + "</seg>"
        grid, _, _ = naive.t4s_decode(answer, ["others", LABEL], GRID)
        want_preds.append(upsample(grid, m.shape, "t4s" if upsample_method is None else upsample_method))
        gts.append({"id": f"s{i}", "segmentation": rle})
        preds.append((f"s{i}", answer))
    res = E.evaluate(preds, gts, mode="t4s", grid_size=GRID, upsample=upsample_method)
    want = ref_scores(want_preds, masks)
    for k in ("ciou", "giou", "acc50"):
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-12), k
    assert res.options["upsample"] == (upsample_method or "t4s")
    assert res.health.repair_kinds.get("t4s_parse_error", 0) >= 5


def test_inferred_grid_size_is_counted():
    masks = make_masks(6, seed=1, no_target_every=100)
    gts = [{"id": i, "segmentation": rle_of(m)} for i, m in enumerate(masks)]
    preds = []
    for i, m in enumerate(masks):
        size = (16, 16) if i < 4 else (8, 12)
        preds.append({"id": i, "text": st.rle_to_text(rle_of(m), LABEL, size)})
    res = E.evaluate(preds, gts)
    assert res.health.grid_sizes == {"16x16": 4, "8x12": 2}
    assert res.options["grid_size"] is None
    assert any("inferred grid sizes" in n for n in res.notes)
    # each answer is scored at its own size
    want = [upsample(st.rle_to_grid(rle_of(m), (16, 16) if i < 4 else (8, 12)), m.shape) for i, m in enumerate(masks)]
    assert res.metrics["ciou"] == pytest.approx(ref_scores(want, masks)["ciou"], abs=1e-12)


def test_forced_formats():
    m = np.zeros((20, 30), bool)
    m[5:15, 10:25] = True
    gts = [{"id": 1, "segmentation": rle_of(m)}]
    bsd = st.encode_bsd([("x", m)], m.shape)
    rrle = "<seg>" + st.rle_to_text(rle_of(m), "x", (4, 4)) + "</seg>"
    r = E.evaluate([(1, bsd)], gts, format="auto")
    assert r.records[0].format == "bsd" and r.records[0].status == "clean"
    r = E.evaluate([(1, rrle)], gts, format="bsd")  # R-RLE read as B-SD: no blocks, nothing predicted
    assert r.records[0].format == "bsd" and r.records[0].pred_area == 0
    r = E.evaluate([(1, bsd)], gts, format="rrle")  # B-SD read as a grid text: repaired junk
    assert r.records[0].format in ("rrle", "isd", "irle") and r.records[0].status == "repaired"
    qwen = st.encode_bsd([("x", m)], m.shape, box_format="qwen2vl")
    r = E.evaluate([(1, qwen)], gts, box_format="qwen2vl")
    assert r.records[0].status == "clean" and r.records[0].iou > 0.9
    with pytest.raises(ValueError, match="format"):
        E.evaluate([(1, bsd)], gts, format="png")
    with pytest.raises(ValueError, match="mode"):
        E.evaluate([(1, bsd)], gts, mode="lenient")


def test_t4s_mode_decodes_bsd_in_repair_mode_and_says_so():
    m = np.zeros((20, 30), bool)
    m[5:15, 10:25] = True
    r = E.evaluate([(1, st.encode_bsd([("x", m)], m.shape))], [{"id": 1, "segmentation": rle_of(m)}], mode="t4s")
    assert r.records[0].format == "bsd" and r.records[0].iou > 0.9
    assert any("B-SD" in n for n in r.notes)


@pytest.mark.parametrize("text, fmt", [
    ("<ref>a</ref><box>[0,0,10,10]</box><seg><fg_4></seg>", "bsd"),
    ("<|object_ref_start|>a<|object_ref_end|><|box_start|>(0,0),(5,5)<|box_end|>", "bsd"),
    ("<box>[1,2,3,4]</box>", "bsd"),
    ("<seg><fg_3><bg_2></seg>", "bsd"),
    ("Sure, <seg>others *4\n</seg>", "rrle"),
    ("others *16\n others *16\n", "rrle"),
    ("others| dog\n others| others\n", "rrle"),
    ("</seg>", "rrle"),
    ("", "none"),
    ("No, there is no such object in the image.", "none"),
])
def test_detect_format(text, fmt):
    assert E.detect_format(text) == fmt


def test_decode_answer_views():
    a = E.decode_answer("<seg>others *1| dog *1\n cat *2\n</seg>", (4, 6))
    assert a.status == "clean" and a.grid_size == (2, 2)
    lm, labels = a.label_map()
    assert labels == ["others", "dog", "cat"]
    assert lm.tolist() == [[0, 0, 0, 1, 1, 1]] * 2 + [[2] * 6] * 2
    assert a.mask().sum() == 18 and a.boxes() == []
    m = np.zeros((10, 10), bool)
    m[2:5, 3:8] = True
    b = E.decode_answer(st.encode_bsd([("cup", m)], (10, 10)), (10, 10))
    assert b.format == "bsd" and (b.mask() == m).all()
    assert b.boxes() == [(3, 2, 8, 5, "cup")]
    lm, labels = b.label_map()
    assert labels == ["others", "cup"] and (lm == m).all()
    s = E.decode_answer("<seg>oops", (3, 3), mode="strict")
    assert s.status == "rejected" and not s.mask().any() and s.error.kind == "missing_seg_close"
    n = E.decode_answer("nothing", (3, 3))
    assert n.status == "no_mask" and n.label_map()[1] == ["others"]
    with pytest.raises(TypeError):
        E.decode_answer(None, (3, 3))


# --------------------------------------------------------------------------- inputs


def write_jsonl(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


def test_bad_lines_are_reported_with_line_numbers(tmp_path):
    m = np.zeros((8, 8), bool)
    m[:4] = True
    gt = write_jsonl(tmp_path / "gt.jsonl", [{"id": i, "segmentation": rle_of(m)} for i in range(4)])
    text = "<seg>" + st.rle_to_text(rle_of(m), "x", (4, 4)) + "</seg>"
    pred = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 0, "answer": text},
        "{broken",                         # 2: not JSON
        "",                                # 3: blank: ignored, not a bad line
        "[1, 2]",                          # 4: not an object
        {"answer": text},                  # 5: no id
        {"id": 1},                         # 6: no answer
        {"id": 1, "output": 5},            # 7: answer not a string
        {"id": [1], "answer": text},       # 8: bad id
        {"id": "1", "output": text},       # 9: fine ("1" matches 1)
        {"id": 1, "answer": text},         # 10: duplicate of line 9
        {"id": 99, "answer": text},        # 11: no ground truth
    ])
    raw = pred.read_bytes() + b'{"id": 2, "answer": "\xff\xfe"}\n'  # 12: not UTF-8
    pred.write_bytes(raw)
    res = E.evaluate(pred, gt)
    bad = {p.line: p.message for p in res.problems if p.kind == "bad_line"}
    assert sorted(bad) == [2, 4, 5, 6, 7, 8, 10, 12]
    assert "not valid JSON" in bad[2] and "duplicate id" in bad[10] and "line 9" in bad[10]
    assert "UTF-8" in bad[12] and "'output' must be a string" in bad[7]
    assert res.health.bad_lines == 8 and res.health.no_ground_truth == 1 and res.health.predictions == 3
    assert [p.line for p in res.problems if p.kind == "no_ground_truth"] == [11]
    assert res.health.missing == 2 and res.metrics["n"] == 4
    assert all(str(p).startswith(str(pred)) for p in res.problems if p.kind == "bad_line")
    with pytest.raises(E.EvaluationError, match=r"line 2\b"):
        E.evaluate(pred, gt, on_bad_line="fail")


def test_ground_truth_files(tmp_path):
    m = np.zeros((12, 10), bool)
    m[2:6, 3:9] = True
    coco = {
        "images": [{"id": 5, "height": 12, "width": 10, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 40, "image_id": 5, "category_id": 1, "segmentation": [[3, 2, 9, 2, 9, 6, 3, 6]]},
            {"id": 41, "image_id": 5, "category_id": 1, "segmentation": rle_of(m)},
            {"id": 42, "image_id": 5, "category_id": 1},  # no segmentation
        ],
    }
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(coco))
    problems = []
    gts = E.load_ground_truth(path, problems=problems)
    assert list(gts) == ["40", "41"]
    assert gts["41"].file_name == "a.jpg" and gts["41"].image_size == (12, 10) and gts["41"].label == "thing"
    assert (gts["41"].mask() == m).all()
    assert [(p.kind, p.id) for p in problems] == [("bad_ground_truth", 42)]
    with pytest.raises(E.EvaluationError, match="42"):
        E.load_ground_truth(path, on_bad_line="fail")
    # JSONL with a no-target sample, a string id, a compressed RLE and two bad lines
    lines = [
        {"id": "a", "segmentation": None, "height": 4, "width": 5},
        {"id": "b", "rle": {"size": [12, 10], "counts": naive.compressed_rle(m)["counts"].decode()}},
        {"id": "c", "segmentation": None},                          # no size
        {"id": "d", "mask": {"size": [2, 2], "counts": [1, 1]}},   # runs do not cover the image
        {"id": "e", "segmentation": [[0, 0, 4, 0, 4, 4]], "image_size": [6, 6], "file_name": "e.png"},
    ]
    jl = write_jsonl(tmp_path / "gt.jsonl", lines)
    problems = []
    gts = E.load_ground_truth(jl, problems=problems)
    assert list(gts) == ["a", "b", "e"]
    assert gts["a"].mask().shape == (4, 5) and not gts["a"].mask().any()
    assert (gts["b"].mask() == m).all() and gts["e"].file_name == "e.png"
    assert sorted(p.line for p in problems) == [3, 4]
    with pytest.raises(E.EvaluationError, match="line 3"):
        E.load_ground_truth(jl, on_bad_line="fail")
    # not JSON at all / not there
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(E.EvaluationError, match="not valid JSON"):
        E.load_ground_truth(bad)
    with pytest.raises(E.EvaluationError, match="not found"):
        E.load_ground_truth(tmp_path / "missing.json")


def test_json_list_of_records_and_groundtruth_objects(tmp_path):
    m = np.zeros((6, 7), bool)
    m[1:4, 2:6] = True
    path = tmp_path / "gt.json"  # one JSON list (not JSON Lines) of records with ids, one no-target
    path.write_text(json.dumps([{"id": 1, "segmentation": rle_of(m)},
                                {"id": 2, "segmentation": None, "image_size": [6, 7]}]))
    gts = E.load_ground_truth(path)
    assert list(gts) == ["1", "2"] and not gts["2"].mask().any()
    path.write_text(json.dumps([{"image_id": 9, "category_id": 1, "segmentation": rle_of(m)}]))  # COCO results
    assert list(E.load_ground_truth(path)) == ["0"]
    objs = [E.GroundTruth("a", (6, 7), rle_of(m)), E.GroundTruth("b", (6, 7), rle_of(np.zeros((6, 7), bool)))]
    res = E.evaluate([("a", "<seg>x *7\n x *7\n</seg>"), ("b", "no")], objs)
    assert res.records[0].pred_area == 42 and res.records[1].iou == 1.0
    assert E.evaluate([("a", "no")], {g.id: g for g in objs}).health.missing == 1


def test_coco_file_end_to_end(tmp_path, sample_annotations):
    anns = [dict(a, id=1000 + i) for i, a in enumerate(sample_annotations[:25])]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(anns))
    texts = st.rles_to_texts([a["segmentation"] for a in anns], LABEL, GRID)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": a["id"], "answer": f"<seg>{t}</seg>"} for a, t in zip(anns, texts)])
    calls = []
    res = E.evaluate(preds, path, grid_size=16, progress=calls.append)
    assert len(calls) == 25 and res.health.clean == 25
    want_preds = [upsample(g, a["segmentation"]["size"]) for g, a in
                  zip(st.rles_to_grids([a["segmentation"] for a in anns], GRID), anns)]
    gts = [naive.decode_rle(a["segmentation"]).astype(bool) for a in anns]
    want = ref_scores(want_preds, gts)
    for k in ("ciou", "giou", "acc50"):
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-12)
    d = res.to_dict()
    json.dumps(d)  # plain JSON
    assert d["health"]["clean"] == 25 and d["options"]["grid_size"] == [16, 16]
    worst = res.worst(3)
    assert [r.iou for r in worst] == sorted(r.iou for r in res.records)[:3]
    assert "cIoU" in res.summary() and "parsed cleanly" in res.summary()


def test_read_predictions_answer_keys_and_pairs():
    got = list(E.read_predictions([{"id": 1, "output": "a", "text": "b"}, (2, "c"), {"id": 3, "answer": "d", "text": "e"}]))
    assert got == [(1, 1, "b"), (2, 2, "c"), (3, 3, "d")]
    with pytest.raises(ValueError, match="on_bad_line"):
        list(E.read_predictions([], on_bad_line="ignore"))


def test_rle_to_mask_matches_pycocotools(sample_annotations):
    for a in sample_annotations[:20]:
        assert (E.rle_to_mask(a["segmentation"]) == naive.decode_rle(a["segmentation"]).astype(bool)).all()


def test_importable_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import segtext.evaluation, segtext.cli; "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- robustness


_PIECES = ["<seg>", "</seg>", "<ref>", "</ref>", "<box>", "</box>", "[1,2,30,40]", "<fg_3>", "<bg_63>",
           "others", " *", "*0", "| ", "\n ", "\n", "cat", " *16", "<|box_start|>", "(1,2),(3,4)", "<bg_", "9" * 12]


@given(answers=hs.lists(hs.one_of(hs.text(max_size=40), hs.lists(hs.sampled_from(_PIECES), max_size=25).map("".join)),
                        min_size=1, max_size=5),
       mode=hs.sampled_from(["repair", "strict", "t4s"]),
       fmt=hs.sampled_from(["auto", "rrle", "bsd"]),
       grid=hs.sampled_from([None, (4, 4), (16, 16)]))
def test_any_answer_is_scored_never_raises(answers, mode, fmt, grid):
    m = np.zeros((12, 20), bool)
    m[3:9, 5:15] = True
    gts = [{"id": i, "segmentation": rle_of(m)} for i in range(len(answers))]
    res = E.evaluate(list(enumerate(answers)), gts, mode=mode, format=fmt, grid_size=grid, resolution=8)
    h = res.health
    assert h.answers == len(answers) == res.metrics["n"]
    assert h.clean + h.repaired + h.rejected + h.no_mask == len(answers)
    assert 0.0 <= res.metrics["ciou"] <= 1.0 and 0.0 <= res.metrics["giou"] <= 1.0
    for r in res.records:
        assert 0 <= r.intersection <= min(r.pred_area, r.gt_area) and r.union >= max(r.pred_area, r.gt_area)


def test_all_bundled_masks_against_an_independent_pipeline(sample_annotations):
    """734 real masks, a third of the answers damaged at random; every figure against a pipeline of
    pycocotools decode + decode_rrle + grid_to_mask + numpy."""
    rng = np.random.default_rng(11)
    rles = [a["segmentation"] for a in sample_annotations]
    texts = st.rles_to_texts(rles, LABEL, GRID)
    answers = []
    for t in texts:
        r = rng.random()
        if r < 0.1:
            t = t[: int(rng.integers(1, len(t)))]
        elif r < 0.2:
            t = t.replace("\n ", "\n", int(rng.integers(1, 4)))
        elif r < 0.3:
            t = t.replace(" *", " ", 1)
        answers.append("<seg>" + t + "</seg>")
    gts = [{"id": i, "segmentation": r} for i, r in enumerate(rles)]
    res = E.evaluate(list(enumerate(answers)), gts, grid_size=GRID)
    preds = [st.decode_rrle(a, grid_size=GRID).to_mask(tuple(r["size"])) != 0 for a, r in zip(answers, rles)]
    masks = [naive.decode_rle(r).astype(bool) for r in rles]
    want = ref_scores(preds, masks)
    for k in ("ciou", "giou", "acc50"):
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-12), k
    assert res.health.repaired == sum(not st.decode_rrle(a, grid_size=GRID).ok for a in answers)


# --------------------------------------------------------------------------- vocabulary (issue 9)


def test_decode_answer_with_a_vocabulary_repairs_slips_and_follows_unknown():
    from segtext.evaluation import decode_answer

    cut = "<seg>Others *2| dog *2\n others *2| do"
    a = decode_answer(cut, (2, 4), grid_size=(2, 4), labels=["dog"])
    assert a.mask().astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    assert {"label_case", "truncated_label"} <= {r.kind for r in a.repairs}
    typo = "<seg>others *2| dgo *2\n others *4\n</seg>"
    want = {"foreground": [[0, 0, 1, 1], [0] * 4], "background": [[0] * 4, [0] * 4],
            "nearest": [[0, 0, 1, 1], [0] * 4]}
    for unknown, grid in want.items():
        a = decode_answer(typo, (2, 4), labels=["others", "dog"], unknown=unknown)
        assert a.mask().astype(int).tolist() == grid, unknown
        assert [r.kind for r in a.repairs] == ["unknown_label"]
    # without a vocabulary the labels are inferred: "Others" is still the background
    a = decode_answer("<seg>Others *2| dog *2\n</seg>", (1, 4), grid_size=(1, 4))
    assert a.mask().astype(int).tolist() == [[0, 0, 1, 1]]
    with pytest.raises(ValueError, match="unknown"):
        decode_answer(typo, (2, 4), unknown="error")


def test_evaluate_reads_each_answer_with_its_ground_truths_label():
    gt = [{"id": 1, "segmentation": {"size": [1, 4], "counts": [2, 2]}, "label": "dog"},
          {"id": 2, "segmentation": {"size": [1, 4], "counts": [2, 2]}, "label": "cat"}]
    preds = [(1, "<seg>Others *2| do"), (2, "<seg>others *2| kat *2\n</seg>")]
    r = E.evaluate(preds, gt, grid_size=(1, 4))
    assert r.metrics["giou"] == pytest.approx(1.0, abs=1e-4)  # unknown "kat" kept as foreground
    assert {"label_case", "truncated_label", "unknown_label"} <= set(r.health.repair_kinds)
    assert r.options["labels"] is None and r.options["unknown"] == "foreground"
    r = E.evaluate(preds, gt, grid_size=(1, 4), unknown="background")
    assert r.metrics["giou"] == pytest.approx(0.5, abs=1e-4)  # "kat" is background now
    r = E.evaluate(preds, gt, grid_size=(1, 4), labels=["others", "dog", "cat"], unknown="nearest")
    assert r.metrics["giou"] == pytest.approx(1.0, abs=1e-4) and r.options["labels"] == ["others", "dog", "cat"]
    # t4s mode is Text4Seg's referring decoder: no vocabulary, "Others" is another label and the
    # first label is the background
    left = [{"id": 1, "segmentation": {"size": [1, 4], "counts": [0, 2, 2]}, "label": "dog"}]
    answer = [(1, "<seg>dog *2| Others *2\n</seg>")]
    assert E.evaluate(answer, left, grid_size=(1, 4)).metrics["giou"] == pytest.approx(1.0, abs=1e-4)
    assert E.evaluate(answer, left, grid_size=(1, 4), mode="t4s").metrics["giou"] == 0.0


def test_eval_cli_takes_the_vocabulary(tmp_path, capsys):
    from segtext import cli

    (tmp_path / "p.jsonl").write_text('{"id": 1, "answer": "<seg>others *2| dgo *2\\n</seg>"}\n')
    (tmp_path / "g.jsonl").write_text('{"id": 1, "segmentation": {"size": [1, 4], "counts": [2, 2]}}\n')
    (tmp_path / "labels.txt").write_text("others\ndog\n")
    args = ["eval", str(tmp_path / "p.jsonl"), str(tmp_path / "g.jsonl"), "--no-progress", "--json",
            str(tmp_path / "s.json"), "--grid-size", "1x4"]
    scores = {}
    for extra in ([], ["--labels", "dog", "--unknown", "background"],
                  ["--labels", str(tmp_path / "labels.txt"), "--unknown", "nearest"]):
        assert cli.main(args + extra) == 0
        scores[tuple(extra)] = json.loads((tmp_path / "s.json").read_text())["metrics"]["giou"]
    assert list(scores.values()) == pytest.approx([1.0, 0.0, 1.0], abs=1e-4)
    with pytest.raises(SystemExit) as e:
        cli.main(args + ["--labels", "a| b"])
    assert e.value.code == 2 and "cannot be used" in capsys.readouterr().err


def test_ground_truth_as_a_list_of_rles_is_their_union():
    """`segtext build --style xsam` records hold the target as a list of RLEs: its union."""
    a = {"size": [2, 2], "counts": [0, 1, 3]}   # pixel 0 (column-major)
    b = {"size": [2, 2], "counts": [3, 1]}      # pixel 3
    gts = st.evaluation.load_ground_truth([{"id": 1, "segmentation": [a, b]}, {"id": 2, "segmentation": [b]},
                                           {"id": 3, "segmentation": [], "image_size": [2, 2]}])
    runs = {k: st.coco.rle_runs(g.rle)[0].tolist() for k, g in gts.items()}
    assert runs == {"1": [0, 1, 2, 1], "2": [3, 1], "3": [4]}
    with pytest.raises(st.evaluation.EvaluationError, match="only masks of one image size"):
        st.evaluation.load_ground_truth([{"id": 1, "segmentation": [a, {"size": [3, 3], "counts": [9]}]}],
                                        on_bad_line="fail")
