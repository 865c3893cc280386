"""segtext.records and `segtext build`: upstream-format files (built from the bundled COCO masks by
tests/upstream_fixtures.py) -> training records, checked against the core's own grids and bricks."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest

import segtext as st
from segtext import records
import importlib

build_module = importlib.import_module("segtext.records.builder")
from upstream_fixtures import annotation_kinds, refer_layout, write_bad_variants


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return refer_layout(tmp_path_factory.mktemp("refer"))


def answer_of(rec):
    if "messages" in rec:
        return rec["messages"][-1]["content"]
    if "completion" in rec:
        return rec["completion"][-1]["content"]
    return rec["conversations"][-1]["value"]


def seg_body(answer):
    assert answer.count("<seg>") == 1 and answer.endswith("</seg>"), answer[-40:]
    return answer.split("<seg>")[1][: -len("</seg>")]


def dense(rle):
    counts = rle["counts"]
    return mask_util.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------------------------ readers


def test_refcoco_reader_one_sample_per_sentence(layout):
    refs = pickle.load(open(layout["refcoco"], "rb"))
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    assert len(samples) == sum(len(r["sentences"]) for r in refs)
    val = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"], split="val")
    assert len(val) == sum(len(r["sentences"]) for r in refs if r["split"] == "val") > 0
    per_ref = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"], per="ref")
    assert len(per_ref) == len(refs) and len({s.id for s in per_ref}) == len(refs)
    raw = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"], sentence="raw")
    first = refs[0]["sentences"][0]
    assert samples[0].phrase == first["sent"] and raw[0].phrase == " ".join(first["raw"].split())
    anns = {a["id"]: a for a in layout["instances_data"]["annotations"]}
    for s, r in zip(per_ref, refs):
        assert s.targets[0].segmentation == anns[r["ann_id"]]["segmentation"]
        assert s.source["ref_id"] == r["ref_id"] and s.source["split"] == r["split"]


def test_grefcoco_reader_multi_and_no_target(layout):
    grefs = json.load(open(layout["grefcoco"]))
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])
    assert len(samples) == sum(len(r["sentences"]) for r in grefs)
    by_ref = {}
    for s in samples:
        by_ref.setdefault(s.source["ref_id"], s)
    for r in grefs:
        s = by_ref[r["ref_id"]]
        if r.get("no_target"):
            assert s.targets == [] and s.source["no_target"] is True
        else:
            assert [t.ann_id for t in s.targets] == r["ann_id"] and s.source["no_target"] is False
    assert any(len(s.targets) > 1 for s in samples) and any(not s.targets for s in samples)


def test_coco_reader_tasks(layout):
    data = layout["instances_data"]
    kinds = annotation_kinds(data)
    refer = records.read_coco(layout["refcoco_instances"])
    assert len(refer) == len(data["annotations"]) - len(kinds["crowd"])
    assert len(records.read_coco(layout["refcoco_instances"], include_crowd=True)) == len(data["annotations"])
    sem = records.read_coco(layout["refcoco_instances"], "semantic")
    assert [s.image_id for s in sem] == list(dict.fromkeys(a["image_id"] for a in data["annotations"]))
    assert all(s.task == "semantic" and s.phrase is None for s in sem)


# ------------------------------------------------------------------------------------------ answers


def test_every_referring_answer_decodes_strictly_to_the_grid_of_its_mask(layout, tmp_path):
    for policy in ("majority", "nearest"):
        out = tmp_path / f"{policy}.jsonl"
        samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
        records.build(samples, out, records.Options(grid_size=(16, 16), policy=policy))
        recs = read_jsonl(out)
        assert [r["id"] for r in recs] == [s.id for s in samples]
        for rec, s in zip(recs, samples):
            rle = st.coco.to_rle(s.targets[0].segmentation, s.image_size)
            want = st.rle_to_grid(rle, 16, policy)
            res = st.decode_rrle(seg_body(answer_of(rec)), ["others", s.phrase], (16, 16), mode="strict")
            np.testing.assert_array_equal(res.grid, want)
            assert rec["label"] == s.phrase and rec["image_size"] == list(s.image_size)
            np.testing.assert_array_equal(dense(rec["segmentation"]), dense(rle))  # the score's target


def test_nearest_answers_are_text4segs_pillow_grids(layout, tmp_path):
    """--policy nearest reproduces Text4Seg's data: Pillow NEAREST to 16x16, then its run-length loop."""
    import naive
    from PIL import Image

    samples = records.read_coco(layout["refcoco_instances"])[:8]
    out = tmp_path / "n.jsonl"
    records.build(samples, out, records.Options(policy="nearest"))
    for rec, s in zip(read_jsonl(out), samples):
        m = dense(st.coco.to_rle(s.targets[0].segmentation, s.image_size))
        small = np.array(Image.fromarray(m).resize((16, 16), Image.NEAREST))
        assert seg_body(answer_of(rec)) == naive.encode_rrle(small.astype(np.int64), ["others", s.phrase])


def test_grefcoco_union_and_no_target_answers(layout, tmp_path):
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])
    out = tmp_path / "g.jsonl"
    records.build(samples, out, records.Options(grid_size=(24, 24)))
    for rec, s in zip(read_jsonl(out), samples):
        body = seg_body(answer_of(rec))
        if not s.targets:
            assert rec["segmentation"] is None
            assert body == st.encode_rrle(np.zeros((24, 24), int), ["others"])
            continue
        union = np.zeros(s.image_size, bool)
        for t in s.targets:
            union |= dense(st.coco.to_rle(t.segmentation, s.image_size)).astype(bool)
        np.testing.assert_array_equal(dense(rec["segmentation"]).astype(bool), union)
        want = st.mask_to_grid(union, 24)
        np.testing.assert_array_equal(st.decode_rrle(body, ["others", s.phrase], 24, mode="strict").grid, want)


def test_bsd_answers_are_one_block_per_target_or_none(layout, tmp_path):
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])
    out = tmp_path / "b.jsonl"
    records.build(samples, out, records.Options(encoding="bsd", resolution=32, verify=True))
    for rec, s in zip(read_jsonl(out), samples):
        answer = answer_of(rec)
        rles = [st.coco.to_rle(t.segmentation, s.image_size) for t in s.targets]
        blocks = st.encode_bsd([(s.phrase, r) for r in rles], s.image_size, resolution=32)
        assert answer.endswith(blocks) and answer.count("<ref>") == len(s.targets)
        res = st.decode_bsd(answer, s.image_size, resolution=32, mode="strict")
        assert [o.label for o in res.objects] == [s.phrase] * len(s.targets)


def test_semantic_and_instance_answers(layout, tmp_path):
    for task in ("semantic", "instances"):
        samples = records.read_coco(layout["refcoco_instances"], task)
        out = tmp_path / f"{task}.jsonl"
        records.build(samples, out, records.Options(grid_size=(16, 16), verify=True))
        for rec, s in zip(read_jsonl(out), samples):
            names = [seg["label"] for seg in rec["segments"]]
            label_map = np.zeros(s.image_size, np.int32)
            for k, seg in enumerate(rec["segments"], 1):
                label_map[dense(seg["segmentation"]).astype(bool)] = k
            want = st.mask_to_grid(label_map, 16)
            res = st.decode_rrle(seg_body(answer_of(rec)), ["others", *names], 16, mode="strict")
            np.testing.assert_array_equal(res.grid, want)
            if task == "instances":
                assert len(names) == len(s.targets) and all(n.rsplit(" ", 1)[1].isdigit() for n in names)
            else:
                assert names == list(dict.fromkeys(t.label for t in s.targets))


# ------------------------------------------------------------------------------------------ styles


@pytest.mark.parametrize("style", records.STYLES)
def test_styles(layout, tmp_path, style):
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])[:6]
    out = tmp_path / "s.jsonl"
    records.build(samples, out, records.Options(style=style, images="/data/coco/train2014"))
    for rec in read_jsonl(out):
        assert {"id", "image_id", "image_size", "label", "segmentation"} <= set(rec)
        path = rec["images"][0] if "images" in rec else rec["image"]
        assert path.startswith("/data/coco/train2014/COCO_")
        if style == "messages":
            assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
            assert rec["messages"][0]["content"].startswith("<image>")
        elif style == "prompt-completion":
            assert rec["prompt"][0]["role"] == "user" and rec["completion"][0]["role"] == "assistant"
        else:
            assert [c["from"] for c in rec["conversations"]] == ["human", "gpt"]
            assert rec["conversations"][0]["value"].startswith("<image>\n")
        if style == "xsam":
            assert f"<p>{rec['label']}</p>" in rec["conversations"][0]["value"]
            assert answer_of(rec).count("<SEG>") == len(rec["segmentation"])


@pytest.mark.parametrize("task", ["semantic", "instances"])
def test_xsam_class_records_list_the_categories_and_keep_one_seg(layout, tmp_path, task):
    """X-SAM's generic segmentation: the categories as <p>...</p> in the question, exactly one <SEG>
    in the answer, every mask in segmentation with the index of its category (several masks of a
    category in the instances task, named by the category, not 'cat 2')."""
    data = layout["instances_data"]
    names = {c["id"]: c["name"] for c in data["categories"]}
    samples = records.read_coco(layout["refcoco_instances"], task)
    out = tmp_path / "x.jsonl"
    records.build(samples, out, records.Options(style="xsam"))
    recs = read_jsonl(out)
    assert len(recs) == len(samples)
    several = 0
    for rec, s in zip(recs, samples):
        question, answer = rec["conversations"][0]["value"], answer_of(rec)
        assert answer.count("<SEG>") == 1 and "<p>" not in answer
        assert question.endswith(" Categories: " + ", ".join(f"<p>{c}</p>" for c in rec["classes"]) + ".")
        assert "segments" not in rec and len(rec["classes"]) == len(set(rec["classes"]))
        anns = [a for a in data["annotations"] if a["image_id"] == s.image_id and not a.get("iscrowd")]
        if task == "instances":
            assert [rec["classes"][k] for k in rec["segment_classes"]] == [names[a["category_id"]] for a in anns]
            for seg, a in zip(rec["segmentation"], anns):
                np.testing.assert_array_equal(dense(seg), dense(st.coco.to_rle(a["segmentation"], s.image_size)))
            several += len(rec["segment_classes"]) > len(rec["classes"])
        else:
            assert rec["segment_classes"] == list(range(len(rec["classes"])))
            for seg, c in zip(rec["segmentation"], rec["classes"]):
                union = np.zeros(s.image_size, bool)
                for a in anns:
                    if names[a["category_id"]] == c:
                        union |= dense(st.coco.to_rle(a["segmentation"], s.image_size)).astype(bool)
                np.testing.assert_array_equal(dense(seg).astype(bool), union)
    assert task == "semantic" or several  # the fixture has an image with two masks of one category


def test_xsam_negatives_list_absent_categories_reproducibly(layout, tmp_path):
    samples = records.read_coco(layout["refcoco_instances"], "instances")
    vocab = records.dataset_classes(samples)
    assert vocab == list(dict.fromkeys(t.label for s in samples for t in s.targets))
    plain = read_jsonl(_built(samples, tmp_path / "plain.jsonl", records.Options(style="xsam")))
    runs = [read_jsonl(_built(samples, tmp_path / f"n{k}.jsonl", records.Options(style="xsam", negatives=2,
                                                                               classes=vocab), seed=seed))
            for k, seed in enumerate((0, 0, 1))]
    assert runs[0] == runs[1] and runs[0] != runs[2]  # the seed decides, nothing else
    orders = set()
    for rec, before in zip(runs[0], plain):
        present = set(before["classes"])
        absent = [c for c in rec["classes"] if c not in present]
        assert set(rec["classes"]) >= present and len(absent) == min(2, len(vocab) - len(present))
        assert set(absent) <= set(vocab) and len(set(rec["classes"])) == len(rec["classes"])
        # every mask keeps its category under the new order; no mask names a negative
        assert ([rec["classes"][k] for k in rec["segment_classes"]]
                == [before["classes"][k] for k in before["segment_classes"]])
        assert rec["segmentation"] == before["segmentation"]
        assert rec["conversations"][0]["value"].endswith(", ".join(f"<p>{c}</p>" for c in rec["classes"]) + ".")
        orders.add(tuple(rec["classes"]).index(before["classes"][0]))
    assert len(orders) > 1  # the present categories do not always come first
    with pytest.raises(ValueError, match="negatives need classes"):
        records.Options(style="xsam", negatives=1)
    with pytest.raises(ValueError, match="xsam records only"):
        records.Options(negatives=1, classes=["cat"])
    with pytest.raises(ValueError, match="non-negative int"):
        records.Options(style="xsam", negatives=-1, classes=["cat"])
    with pytest.raises(ValueError, match="classes must be a list of non-empty str"):
        records.Options(style="xsam", negatives=1, classes=["cat", ""])
    with pytest.raises(TypeError, match="samples must be a list of Sample"):
        records.dataset_classes("cat")


def _built(samples, out, options, seed=0):
    records.build(samples, out, options, seed=seed)
    return out


# ------------------------------------------------------------------------------------------ templates


def test_templates_seeded_and_user_file(layout, tmp_path):
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    records.build(samples, a, records.Options(), seed=1)
    records.build(samples, b, records.Options(), seed=1)
    records.build(samples, c, records.Options(), seed=2)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    questions = {r["messages"][0]["content"] for r in read_jsonl(a)}
    assert len(questions) > 3  # several templates in use
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"referring": {"questions": ["Find {phrase}."], "answers": ["OK {mask}"]}}))
    d = tmp_path / "d.jsonl"
    records.build(samples, d, records.Options(templates=records.load_templates(f)))
    for rec, s in zip(read_jsonl(d), samples):
        assert rec["messages"][0]["content"] == f"<image>Find {s.phrase}."
        assert answer_of(rec).startswith("OK <seg>")


@pytest.mark.parametrize("data, match", [
    ({"referring": {"answers": ["no mask here"]}}, "has no {mask}"),
    ({"semantic": {"questions": ["Segment {phrase}"]}}, "uses {phrase}"),
    ({"referrring": {"questions": ["x"]}}, "unknown task kind"),
    ({"referring": {"questions": []}}, "non-empty list"),
])
def test_bad_templates_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        records.load_templates(data)


def test_template_file_errors(tmp_path):
    f = tmp_path / "t.json"
    f.write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        records.load_templates(f)
    f.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        records.load_templates(f)
    with pytest.raises(TypeError, match="path or a dict"):
        records.load_templates([])


def test_phrase_cannot_inject_a_placeholder():
    t = records.default_templates()
    q, a = t.choose("referring", "the {mask} thing", "<seg>M</seg>", 0, "x")
    assert "the {mask} thing" in q and a.count("<seg>M</seg>") == 1


# ------------------------------------------------------------------------------------------ reproducible, resumable


def test_workers_give_the_same_bytes(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "CHUNK", 7)  # several chunks, so the pool really splits the work
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    one, two = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    records.build(samples, one, records.Options())
    records.build(samples, two, records.Options(), workers=2)
    assert one.read_bytes() == two.read_bytes()


def test_resume_after_a_torn_line_is_byte_identical(layout, tmp_path):
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])
    full = tmp_path / "full.jsonl"
    records.build(samples, full, records.Options())
    data = full.read_bytes()
    lines = data.split(b"\n")
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    partial.write_bytes(b"\n".join(lines[:20]) + b"\n" + lines[20][: len(lines[20]) // 2])  # killed mid-line
    with pytest.raises(ValueError, match="resume"):
        records.build(samples, out, records.Options())
    summary = records.build(samples, out, records.Options(), resume=True)
    assert out.read_bytes() == data and not partial.exists()
    assert summary.resumed_after == 20 and summary.records == len(samples)


@pytest.mark.parametrize("path", ["batched", "one by one"])
def test_interrupt_leaves_complete_lines_then_resume(layout, tmp_path, monkeypatch, path):
    """Ctrl-C during the 5th chunk of 5 samples (at its 3rd record, one by one; at its batched call,
    batched): four whole chunks are kept, nothing torn, and resuming gives the uninterrupted bytes."""
    monkeypatch.setattr(build_module, "CHUNK", 5)
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    options = records.Options(verify=path == "one by one")  # verify encodes one by one, checking each
    full = tmp_path / "full.jsonl"
    records.build(samples, full, options)
    name = "_record_parts" if path == "one by one" else "_fast_lines"  # where every record of the path passes
    real = getattr(build_module, name)
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == (23 if path == "one by one" else 5):
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(build_module, name, flaky)
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        records.build(samples, out, options)
    assert not out.exists()
    kept = (tmp_path / "out.jsonl.partial").read_bytes()
    assert kept.endswith(b"\n") and kept.count(b"\n") == 20  # four whole chunks, nothing torn
    assert full.read_bytes().startswith(kept)
    monkeypatch.setattr(build_module, name, real)
    records.build(samples, out, options, resume=True)
    assert out.read_bytes() == full.read_bytes()


def test_resume_of_another_build_is_refused(layout, tmp_path):
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    out = tmp_path / "o.jsonl"
    (tmp_path / "o.jsonl.partial").write_text(json.dumps({"id": "not-a-sample"}) + "\n")
    with pytest.raises(ValueError, match="not among this build's samples"):
        records.build(samples, out, records.Options(), resume=True)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_name_the_file_and_entry(layout, tmp_path):
    bad = write_bad_variants(tmp_path, layout["instances_data"])
    with pytest.raises(ValueError, match=r"ref .*ann_id \d+ is not in"):
        records.read_refcoco(bad["refs_unknown_ann"], layout["refcoco_instances"])
    problems = []
    ok = records.read_refcoco(bad["refs_unknown_ann"], layout["refcoco_instances"], skip_invalid=True,
                              problems=problems)
    assert len(problems) == 1 and "ann_id" in problems[0] and ok
    with pytest.raises(ValueError, match=r"ann_id \d+ is not in"):
        records.read_grefcoco(bad["grefs_unknown_ann"], layout["grefcoco_instances"])
    with pytest.raises(ValueError, match="no usable 'height' and 'width'"):
        records.read_coco(bad["instances_polygon_no_size"])
    samples = records.read_coco(bad["instances_bad_rle"])
    with pytest.raises(ValueError, match=r"sample ann\d+ .*annotation \d+.*kept in .*x.jsonl.partial"):
        records.build(samples, tmp_path / "x.jsonl", records.Options())
    assert not (tmp_path / "x.jsonl").exists()  # never a file that looks complete
    summary = records.build(samples, tmp_path / "x.jsonl", records.Options(), skip_invalid=True, resume=True)
    assert summary.skipped == 1 and summary.records == len(samples) - 1
    records.build(samples, tmp_path / "y.jsonl", records.Options(), skip_invalid=True)
    assert (tmp_path / "x.jsonl").read_bytes() == (tmp_path / "y.jsonl").read_bytes()


def test_phrase_that_cannot_be_a_label_is_reported(tmp_path):
    s = records.Sample("s1", "referring", "a.jpg", 1, (2, 2),
                       [records.Target("a | b", {"size": [2, 2], "counts": [0, 4]})], phrase="a | b")
    with pytest.raises(ValueError, match="sample s1 .*'\\| '"):
        records.encode_sample(s, records.Options(grid_size=1))
    other = records.Sample("s2", "referring", "a.jpg", 1, (2, 2),
                           [records.Target("others", {"size": [2, 2], "counts": [0, 4]})], phrase="others")
    with pytest.raises(ValueError, match="background word"):
        records.encode_sample(other, records.Options(grid_size=1))


def test_options_are_checked():
    for kwargs, match in [({"encoding": "png"}, "encoding"), ({"style": "alpaca"}, "style"),
                          ({"grid_size": (0, 4)}, "grid_size"), ({"box_format": "xyxy"}, "box_format"),
                          ({"policy": "mode"}, "policy"), ({"threshold": 0.0}, "threshold"),
                          ({"resolution": 0}, "resolution"), ({"resolution": 5000}, "resolution")]:
        with pytest.raises(ValueError, match=match):
            records.Options(**kwargs)


# ------------------------------------------------------------------------------------------ command line


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "segtext", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ))


def test_cli_build_and_eval_reads_the_records(layout, tmp_path):
    out = tmp_path / "val.jsonl"
    r = run_cli("build", "refcoco", "--refs", str(layout["refcoco"]), "--instances",
                str(layout["refcoco_instances"]), "--split", "val", "-o", str(out), "--verify", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "record(s) ->" in r.stderr and "dataset_info.json" in r.stderr
    recs = read_jsonl(out)
    assert recs and all(x["source"]["split"] == "val" for x in recs)
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": x["id"], "answer": answer_of(x)}) + "\n" for x in recs))
    e = run_cli("eval", str(preds), str(out), "--json", str(tmp_path / "s.json"), "--no-progress")
    assert e.returncode == 0, e.stderr
    scores = json.loads((tmp_path / "s.json").read_text())
    ious = []
    for x in recs:  # the oracle of a 16x16 grid, computed here
        m = dense(x["segmentation"]).astype(bool)
        back = st.grid_to_mask(st.rle_to_grid(x["segmentation"], 16), m.shape).astype(bool)
        ious.append((m & back).sum() / ((m | back).sum() + 1e-5))
    assert scores["metrics"]["giou"] == pytest.approx(float(np.mean(ious)), abs=1e-6)


def test_eval_reads_xsam_records_as_ground_truth(layout, tmp_path):
    """The segmentation of an xsam record is a list of RLEs (their union is the target): `segtext
    eval` scores answers against it exactly as against the messages records of the same samples,
    no-target samples ([] there) included."""
    args = ["build", "grefcoco", "--refs", str(layout["grefcoco"]), "--instances", str(layout["grefcoco_instances"]),
            "--no-progress"]
    messages, xsam = tmp_path / "m.jsonl", tmp_path / "x.jsonl"
    assert run_cli(*args, "-o", str(messages)).returncode == 0
    assert run_cli(*args, "--style", "xsam", "-o", str(xsam)).returncode == 0
    recs = read_jsonl(messages)
    assert any(not r["segmentation"] for r in read_jsonl(xsam))  # no-target samples: []
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": x["id"], "answer": answer_of(x)}) + "\n" for x in recs))
    scores = []
    for gt in (messages, xsam):
        out = tmp_path / f"{gt.stem}.json"
        e = run_cli("eval", str(preds), str(gt), "--json", str(out), "--no-progress")
        assert e.returncode == 0, e.stderr
        scores.append(json.loads(out.read_text())["metrics"])
    assert scores[0] == scores[1] and scores[0]["giou"] > 0.3


def test_cli_build_shards_and_errors(layout, tmp_path):
    args = ["build", "grefcoco", "--refs", str(layout["grefcoco"]), "--instances",
            str(layout["grefcoco_instances"]), "--no-progress"]
    whole = tmp_path / "all.jsonl"
    assert run_cli(*args, "-o", str(whole)).returncode == 0
    parts = []
    for i in range(2):
        p = tmp_path / f"part{i}.jsonl"
        assert run_cli(*args, "-o", str(p), "--shard", f"{i}/2").returncode == 0
        parts.append(read_jsonl(p))
    assert sorted(x["id"] for x in parts[0] + parts[1]) == sorted(x["id"] for x in read_jsonl(whole))
    bad = write_bad_variants(tmp_path, layout["instances_data"])
    r = run_cli("build", "refcoco", "--refs", str(bad["refs_unknown_ann"]), "--instances",
                str(layout["refcoco_instances"]), "-o", str(tmp_path / "b.jsonl"), "--no-progress")
    assert r.returncode == 2 and "ann_id" in r.stderr and not (tmp_path / "b.jsonl").exists()
    r = run_cli("build", "refcoco", "--refs", str(bad["refs_unknown_ann"]), "--instances",
                str(layout["refcoco_instances"]), "-o", str(tmp_path / "b.jsonl"), "--no-progress",
                "--skip-invalid")
    assert r.returncode == 0 and "skipped 1" in r.stderr
    r = run_cli(*args, "-o", str(tmp_path / "c.jsonl"), "--shard", "2/2")
    assert r.returncode == 2 and "I/N" in r.stderr


# ------------------------------------------------------------------------------------------ panoptic, label maps

import pathlib  # noqa: E402

from PIL import Image  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_panoptic_val2017"
needs_panoptic = pytest.mark.skipif(not (SHARED / "panoptic_examples.json").exists(),
                                    reason="the shared COCO panoptic sample is not beside the project")


@needs_panoptic
@pytest.mark.parametrize("task", ["semantic", "instances"])
def test_panoptic_records_from_the_real_sample(tmp_path, task):
    data = json.loads((SHARED / "panoptic_examples.json").read_text())
    samples = records.read_panoptic(SHARED / "panoptic_examples.json", SHARED / "panoptic_examples", task)
    assert len(samples) == len(data["annotations"]) == 2
    out = tmp_path / "p.jsonl"
    records.build(samples, out, records.Options(grid_size=(24, 24), verify=True))
    for rec, ann in zip(read_jsonl(out), data["annotations"]):
        png = SHARED / "panoptic_examples" / ann["file_name"]
        label_map, labels = st.coco.panoptic_to_label_map(png, ann["segments_info"], data["categories"],
                                                          instances=task == "instances")
        res = st.decode_rrle(seg_body(answer_of(rec)), labels, 24, mode="strict")
        np.testing.assert_array_equal(res.grid, st.mask_to_grid(label_map, 24))
        assert rec["image_size"] == list(label_map.shape) and rec["image_id"] == ann["image_id"]
        for seg in rec["segments"]:  # the scoring masks are the PNG's own
            np.testing.assert_array_equal(dense(seg["segmentation"]).astype(bool),
                                          label_map == labels.index(seg["label"]))
    xsam = tmp_path / "x.jsonl"  # X-SAM's records: the categories in the question, one <SEG>
    records.build(samples, xsam, records.Options(style="xsam"))
    cats = {c["id"]: c["name"] for c in data["categories"]}
    for rec, ann in zip(read_jsonl(xsam), data["annotations"]):
        assert rec["conversations"][1]["value"].count("<SEG>") == 1
        listed = [cats[s["category_id"]] for s in ann["segments_info"]]
        assert sorted(rec["classes"]) == sorted(set(listed))
        if task == "instances":  # one mask per segment, named by its category
            assert sorted(rec["classes"][k] for k in rec["segment_classes"]) == sorted(listed)
        else:
            assert rec["segment_classes"] == list(range(len(rec["classes"])))
    bsd = tmp_path / "b.jsonl"
    records.build(samples, bsd, records.Options(encoding="bsd", resolution=32, verify=True))
    for rec in read_jsonl(bsd):
        assert answer_of(rec).count("<ref>") == len(rec["segments"]) > 3


def test_panoptic_png_with_unknown_ids_is_named(tmp_path):
    png_dir = tmp_path / "png"
    png_dir.mkdir()
    ids = np.zeros((6, 6, 3), np.uint8)
    ids[:3, :3, 0] = 7
    ids[3:, 3:, 0] = 9  # not in segments_info
    Image.fromarray(ids).save(png_dir / "a.png")
    Image.fromarray(np.where(ids == 9, 0, ids).astype(np.uint8)).save(png_dir / "b.png")
    cats = [{"id": 1, "name": "person", "isthing": 1}]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 6},
                       {"id": 2, "file_name": "b.jpg", "height": 6, "width": 6}],
            "categories": cats,
            "annotations": [{"image_id": i, "file_name": f, "segments_info": [{"id": 7, "category_id": 1}]}
                            for i, f in ((1, "a.png"), (2, "b.png"))]}
    samples = records.read_panoptic(data, png_dir)
    with pytest.raises(ValueError, match=r"a\.png"):
        records.build(samples, tmp_path / "x.jsonl", records.Options(grid_size=2))
    summary = records.build(samples, tmp_path / "x.jsonl", records.Options(grid_size=2), skip_invalid=True,
                            resume=True)
    assert summary.records == 1 and summary.skipped == 1 and "a.png" in summary.problems[0]


def test_semantic_label_maps_with_ignore_index(tmp_path):
    d = tmp_path / "maps"
    d.mkdir()
    rng = np.random.default_rng(0)
    maps = {}
    for name in ("b", "a", "c"):
        m = rng.integers(0, 3, (20, 30)).astype(np.uint8)
        m[:5] = 255
        maps[name] = m
        Image.fromarray(m).save(d / f"{name}.png")
    (tmp_path / "names.txt").write_text("background\nroad\ncar\n")
    samples = records.read_semantic(d, tmp_path / "names.txt", ignore_index=255)
    assert [s.image for s in samples] == ["a.jpg", "b.jpg", "c.jpg"]
    out = tmp_path / "s.jsonl"
    records.build(samples, out, records.Options(grid_size=(4, 6), verify=True))
    for rec, name in zip(read_jsonl(out), "abc"):
        want = st.mask_to_grid(maps[name], (4, 6), ignore_index=255)
        res = st.decode_rrle(seg_body(answer_of(rec)), ["others", "road", "car"], (4, 6), mode="strict")
        np.testing.assert_array_equal(res.grid, want)
        assert [s["label"] for s in rec["segments"]] == ["road", "car"]
    no_ignore = records.read_semantic(d, tmp_path / "names.txt")
    with pytest.raises(ValueError, match="pixel value 255 is beyond the classes"):
        records.build(no_ignore, tmp_path / "t.jsonl", records.Options())


def test_cli_build_panoptic_and_semantic(tmp_path):
    if (SHARED / "panoptic_examples.json").exists():
        out = tmp_path / "p.jsonl"
        r = run_cli("build", "panoptic", "--panoptic", str(SHARED / "panoptic_examples.json"), "--png-dir",
                    str(SHARED / "panoptic_examples"), "--task", "instances", "--encoding", "bsd",
                    "--style", "llava", "-o", str(out), "--no-progress", "--verify")
        assert r.returncode == 0, r.stderr
        assert len(read_jsonl(out)) == 2
        xsam = tmp_path / "x.jsonl"  # negatives from all 133 categories of the panoptic JSON
        r = run_cli("build", "panoptic", "--panoptic", str(SHARED / "panoptic_examples.json"), "--png-dir",
                    str(SHARED / "panoptic_examples"), "--style", "xsam", "--negatives", "3", "-o", str(xsam),
                    "--no-progress")
        assert r.returncode == 0, r.stderr
        names = {c["name"] for c in json.loads((SHARED / "panoptic_examples.json").read_text())["categories"]}
        for rec in read_jsonl(xsam):
            named = {rec["classes"][k] for k in rec["segment_classes"]}
            assert len(rec["classes"]) == len(named) + 3 and set(rec["classes"]) <= names
        r = run_cli("build", "panoptic", "--panoptic", str(SHARED / "panoptic_examples.json"), "--png-dir",
                    str(SHARED / "panoptic_examples"), "--negatives", "3", "-o", str(tmp_path / "y.jsonl"),
                    "--no-progress")
        assert r.returncode == 2 and "xsam records only" in r.stderr
    d = tmp_path / "maps"
    d.mkdir()
    Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8)).save(d / "x.png")
    (tmp_path / "names.txt").write_text("bg\nroad\ncar\n")
    out = tmp_path / "s.jsonl"
    r = run_cli("build", "semantic", "--label-dir", str(d), "--classes", str(tmp_path / "names.txt"),
                "--grid-size", "2", "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert seg_body(answer_of(read_jsonl(out)[0])) == "others *1| road *1\n car *2\n"
    (tmp_path / "bad.txt").write_text("bg\nroad\nroad\n")
    r = run_cli("build", "semantic", "--label-dir", str(d), "--classes", str(tmp_path / "bad.txt"),
                "-o", str(tmp_path / "t.jsonl"), "--no-progress")
    assert r.returncode == 2 and "line 3" in r.stderr


def test_a_killed_build_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL in the middle of `segtext build`, then --resume: the file equals an uninterrupted run."""
    import signal
    import time

    anns = st.coco.sample_annotations() * 4
    images, annotations = {}, []
    for n, a in enumerate(anns):
        H, W = a["segmentation"]["size"]
        images[a["image_id"]] = {"id": a["image_id"], "file_name": f"{a['image_id']}.jpg", "height": H, "width": W}
        annotations.append({"id": n + 1, "image_id": a["image_id"], "category_id": a["category_id"], "iscrowd": 0,
                            "segmentation": a["segmentation"]})
    cats = [{"id": c, "name": st.coco.COCO_CATEGORY_NAMES[c]} for c in sorted({a["category_id"] for a in anns})]
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": list(images.values()), "annotations": annotations, "categories": cats}))
    args = [sys.executable, "-m", "segtext", "build", "coco", "--instances", str(inst), "--no-progress"]
    whole = tmp_path / "whole.jsonl"
    assert subprocess.run([*args, "-o", str(whole)], capture_output=True).returncode == 0
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    for attempt in range(3):  # kill it once some records are written (retry if it finished first)
        proc = subprocess.Popen([*args, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and partial.stat().st_size > 20000:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            break
        out.unlink(missing_ok=True)
    assert proc.returncode == -signal.SIGKILL and partial.exists() and not out.exists()
    r = subprocess.run([*args, "-o", str(out), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed after" in r.stderr
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()


def test_batched_and_one_by_one_encoding_write_the_same_bytes(layout, tmp_path):
    """Referring samples are encoded a chunk at a time in one compiled call; --verify encodes them one by
    one (and checks each): both files must be identical."""
    samples = records.read_coco(layout["refcoco_instances"], include_crowd=True)
    fast, checked = tmp_path / "fast.jsonl", tmp_path / "checked.jsonl"
    for fmt in ("rrle", "isd", "irle"):
        records.build(samples, fast, records.Options(encoding=fmt, grid_size=(12, 20)))
        records.build(samples, checked, records.Options(encoding=fmt, grid_size=(12, 20), verify=True))
        assert fast.read_bytes() == checked.read_bytes()


def test_summary_answer_lengths_with_a_tokenizer(layout, tmp_path):
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])[:10]
    out = tmp_path / "t.jsonl"

    class Words:  # any object with encode(text, add_special_tokens=False), as Hugging Face tokenizers have
        def encode(self, text, add_special_tokens=True):
            assert add_special_tokens is False
            return text.split()

    summary = records.build(samples, out, records.Options(), tokenizer=Words())
    lengths = np.array([len(answer_of(r).split()) for r in read_jsonl(out)])
    assert summary.answer_tokens == {"mean": pytest.approx(lengths.mean()),
                                     "p95": pytest.approx(np.percentile(lengths, 95)), "max": float(lengths.max())}
    plain = records.build(samples, tmp_path / "u.jsonl", records.Options(), tokenizer=lambda t: list(t))
    assert plain.answer_tokens["max"] == max(len(answer_of(r)) for r in read_jsonl(out))


@pytest.mark.parametrize("style", records.STYLES)
def test_lines_are_json_dumps_of_the_records(layout, style):
    """build writes each line from the JSON of its parts; it must be json.dumps of make_record's dict."""
    from segtext.records.builder import _record_parts, line_of
    from segtext.records.styles import shape

    samples = [*records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"]),
               *records.read_coco(layout["refcoco_instances"], "instances")]
    weird = records.Sample('q"\\\u00e9\n', "referring", "d\u00e8/\"x\".jpg", {"k": [1, None]}, (32, 32),
                           [records.Target("ça va", {"size": [32, 32], "counts": [0, 1024]})], "ça va",
                           source={"id": "clash", "messages": 3})
    for options in (records.Options(style=style), records.Options(style=style, encoding="bsd", resolution=16)):
        for s in [*samples, weird]:
            parts = _record_parts(s, options, 5, None)
            want = json.dumps(shape(*parts), ensure_ascii=False, separators=(", ", ": "))
            assert line_of(*parts) == want
            assert json.loads(want) == records.make_record(s, options, 5)


def test_resume_reads_a_partial_file_in_blocks(layout, tmp_path, monkeypatch):
    """The resume point is found block by block (lines across block edges, a torn tail, one line)."""
    monkeypatch.setattr(build_module, "_RESUME_BLOCK", 97)  # far smaller than a line
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])
    full = tmp_path / "full.jsonl"
    records.build(samples, full, records.Options())
    data = full.read_bytes()
    ends = [k + 1 for k, b in enumerate(data) if b == 10]
    for n_lines in (1, 7, len(ends) - 1):
        for torn in (0, 5, 300):
            part = tmp_path / f"o{n_lines}_{torn}.jsonl.partial"
            part.write_bytes(data[: ends[n_lines - 1] + torn])
            assert build_module._resume_point(str(part), samples) == (n_lines, n_lines)
            assert part.read_bytes() == data[: ends[n_lines - 1]]
    torn_only = tmp_path / "t.jsonl.partial"
    torn_only.write_bytes(data[:50])
    assert build_module._resume_point(str(torn_only), samples) == (0, 0) and torn_only.read_bytes() == b""
