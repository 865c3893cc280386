"""`segtext eval` and `segtext show` through segtext.cli.main: exit codes, bad lines with their line
numbers, the --json and --per-sample files, and PNGs that Pillow can open."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import naive
import segtext as st
from segtext import evaluation as E
from segtext.cli import main

LABEL = "the object"


def rle_of(mask):
    return {"size": list(mask.shape), "counts": naive.uncompressed_counts(mask)}


def write_jsonl(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path):
    """8 ground truths (one no-target), predictions with one repaired answer, one bad line,
    one unknown id and one missing prediction."""
    rng = np.random.default_rng(0)
    masks = []
    for i in range(8):
        m = np.zeros((40, 56), bool)
        if i != 7:
            y, x = int(rng.integers(0, 20)), int(rng.integers(0, 30))
            m[y:y + 15, x:x + 20] = True
        masks.append(m)
    gt = write_jsonl(tmp_path / "gt.jsonl", [
        {"id": i, "segmentation": rle_of(m) if m.any() else None, "image_size": [40, 56], "file_name": f"{i}.png"}
        for i, m in enumerate(masks)])
    lines = []
    for i, m in enumerate(masks):
        text = st.rle_to_text(rle_of(m), LABEL, 8)
        if i == 2:
            text = text.replace("\n ", "\n", 1)  # row_separator
        if i == 5:
            continue  # missing
        lines.append({"id": i, "answer": f"Sure, <seg>{text}</seg>"})
    lines.insert(3, '{"id": 100, "answer": ')  # line 4: broken JSON
    lines.append({"id": 999, "answer": "<seg>others *8\n</seg>"})
    pred = write_jsonl(tmp_path / "pred.jsonl", lines)
    return tmp_path, pred, gt, masks


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- eval


def test_eval_prints_scores_and_health(files, capsys):
    tmp, pred, gt, _ = files
    code, out, err = run(["eval", str(pred), str(gt), "--grid-size", "8", "--no-progress"], capsys)
    assert code == 0
    for word in ("cIoU", "gIoU", "Acc@0.5", "N-acc", "T-acc", "parsed cleanly", "row_separator",
                 "missing prediction", "bad prediction lines"):
        assert word in out, word
    assert "line 4" in err and "not valid JSON" in err  # the bad line, with its number
    assert "999" in err and "no ground truth" in err
    assert "samples in" in err
    res = E.evaluate(pred, gt, grid_size=8)
    assert f"{100 * res.metrics['ciou']:6.2f}" in out


def test_eval_json_and_per_sample(files, capsys):
    tmp, pred, gt, masks = files
    js, ps = tmp / "out" / "s.json", tmp / "out" / "ps.jsonl"
    js.parent.mkdir()
    code, out, err = run(["eval", str(pred), str(gt), "--grid-size", "8", "--json", str(js),
                          "--per-sample", str(ps), "--no-progress"], capsys)
    assert code == 0
    doc = json.loads(js.read_text())
    res = E.evaluate(pred, gt, grid_size=8)
    assert doc["metrics"] == pytest.approx(res.metrics)
    h = doc["health"]
    assert (h["clean"], h["repaired"], h["missing"], h["bad_lines"], h["no_ground_truth"]) == (6, 1, 1, 1, 1)
    assert h["repair_kinds"] == {"row_separator": 1}
    assert doc["options"]["grid_size"] == [8, 8] and doc["options"]["mode"] == "repair"
    assert doc["inputs"] == {"predictions": str(pred), "ground_truth": str(gt)}
    assert {p["kind"] for p in doc["problems"]} == {"bad_line", "no_ground_truth", "missing_prediction"}
    assert [p["line"] for p in doc["problems"] if p["kind"] == "bad_line"] == [4]
    rows = [json.loads(l) for l in ps.read_text().splitlines()]
    assert len(rows) == 8 and {r["id"] for r in rows} == set(range(8))
    by_id = {r["id"]: r for r in rows}
    assert by_id[5]["status"] == "missing" and by_id[2]["repairs"] == {"row_separator": 1}
    assert by_id[7]["gt_area"] == 0 and by_id[7]["iou"] == 1.0
    for r in rows:
        assert set(r) >= {"id", "iou", "repairs", "status", "intersection", "union"}


def test_eval_on_bad_line_fail(files, capsys):
    tmp, pred, gt, _ = files
    js = tmp / "s.json"
    code, out, err = run(["eval", str(pred), str(gt), "--on-bad-line", "fail", "--json", str(js),
                          "--no-progress"], capsys)
    assert code == 2
    assert "line 4" in err and "error" in err
    assert not js.exists() and out == ""
    assert not list(tmp.glob(".segtext-*"))  # no temporary file left behind


@pytest.mark.parametrize("mode", ["strict", "t4s"])
def test_eval_modes(files, capsys, mode):
    tmp, pred, gt, _ = files
    js = tmp / f"{mode}.json"
    code, out, err = run(["eval", str(pred), str(gt), "--mode", mode, "--json", str(js), "--no-progress"], capsys)
    assert code == 0
    doc = json.loads(js.read_text())
    if mode == "strict":
        assert doc["health"]["rejected"] == 1 and doc["health"]["rejected_kinds"] == {"row_separator": 1}
        assert "rejected" in out
    else:
        assert doc["options"]["upsample"] == "t4s"


def test_eval_errors(files, capsys):
    tmp, pred, gt, _ = files
    code, _, err = run(["eval", str(tmp / "nope.jsonl"), str(gt)], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run(["eval", str(pred), str(tmp / "nope.json")], capsys)
    assert code == 2 and "not found" in err
    (tmp / "bad.json").write_text("{not json")
    code, _, err = run(["eval", str(pred), str(tmp / "bad.json")], capsys)
    assert code == 2 and "not valid JSON" in err
    (tmp / "empty.jsonl").write_text("")
    code, _, err = run(["eval", str(pred), str(tmp / "empty.jsonl")], capsys)
    assert code == 2 and "no usable sample" in err
    code, _, err = run(["eval", str(pred), str(gt), "--json", str(tmp / "no" / "dir" / "s.json")], capsys)
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit) as e:
        main(["eval", str(pred), str(gt), "--grid-size", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["eval", str(pred), str(gt), "--mode", "loose"])
    assert e.value.code == 2


def test_eval_coco_ground_truth(tmp_path, capsys, sample_annotations):
    anns = sample_annotations[:12]
    coco = {"images": [{"id": a["image_id"], "height": a["segmentation"]["size"][0],
                        "width": a["segmentation"]["size"][1], "file_name": f"{a['image_id']}.jpg"} for a in anns],
            "annotations": [{"id": 500 + i, "image_id": a["image_id"], "category_id": a["category_id"],
                             "segmentation": a["segmentation"]} for i, a in enumerate(anns)]}
    gt = tmp_path / "instances.json"
    gt.write_text(json.dumps(coco))
    # each answer names its ground truth's category, the vocabulary it is read with by default
    names = [st.coco.COCO_CATEGORY_NAMES[a["category_id"]] for a in anns]
    texts = st.rles_to_texts([a["segmentation"] for a in anns], names, 16)
    bsd = st.encode_bsd([(names[0], anns[0]["segmentation"])], anns[0]["segmentation"]["size"])
    lines = [{"id": str(500 + i), "output": f"<seg>{t}</seg>"} for i, t in enumerate(texts)]
    lines[0] = {"id": 500, "text": bsd}
    pred = write_jsonl(tmp_path / "p.jsonl", lines)
    js = tmp_path / "s.json"
    code, out, err = run(["eval", str(pred), str(gt), "--json", str(js), "--no-progress"], capsys)
    assert code == 0
    doc = json.loads(js.read_text())
    assert doc["health"]["formats"] == {"rrle": 11, "bsd": 1} and doc["metrics"]["n"] == 12
    assert doc["health"]["clean"] == 12 and "B-SD resolution 64" in out
    # another label than the ground truth's is still foreground, but reported
    other = st.rles_to_texts([a["segmentation"] for a in anns], LABEL, 16)
    lines[1:] = [{"id": str(500 + i), "output": f"<seg>{t}</seg>"} for i, t in enumerate(other) if i]
    write_jsonl(pred, lines)
    code, out, err = run(["eval", str(pred), str(gt), "--json", str(js), "--no-progress"], capsys)
    doc2 = json.loads(js.read_text())
    named = sum(LABEL in t for t in other[1:])  # answers with a foreground cell at 16 x 16
    assert named >= 3
    assert code == 0 and doc2["health"]["clean"] == 12 - named and doc2["metrics"] == doc["metrics"]
    assert doc2["health"]["repair_kinds"] == {"unknown_label": named}
    # so is a B-SD <ref> label: in another case it is the ground truth's label (label_case);
    # another label is foreground by default, dropped with --unknown background
    size = anns[0]["segmentation"]["size"]
    for ref, unknown, kinds, same in [(names[0].upper(), "foreground", {"label_case": 1}, True),
                                      (LABEL, "foreground", {"unknown_label": 1}, True),
                                      (LABEL, "background", {"unknown_label": 1}, False)]:
        lines = [{"id": 500, "text": st.encode_bsd([(ref, anns[0]["segmentation"])], size)}]  # (11 not predicted)
        write_jsonl(pred, lines)
        code, out, err = run(["eval", str(pred), str(gt), "--json", str(js), "--no-progress",
                              "--unknown", unknown], capsys)
        doc3 = json.loads(js.read_text())
        assert code == 0 and doc3["health"]["repair_kinds"] == kinds and doc3["health"]["clean"] == 0
        assert (doc3["metrics"]["giou"] * doc3["metrics"]["n"] > 0.5) == same, (ref, unknown, doc3["metrics"])


# --------------------------------------------------------------------------- show


def png_ok(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_show_one_answer(tmp_path, capsys):
    m = np.zeros((48, 64), bool)
    m[10:30, 20:50] = True
    text = "Sure, <seg>" + st.rle_to_text(rle_of(m), "cat", 8) + "</seg>"
    out = tmp_path / "a.png"
    code, _, err = run(["show", "--answer", text, "--image-size", "48x64", "-o", str(out)], capsys)
    assert code == 0 and png_ok(out)[0] == "PNG" and png_ok(out)[1][1] >= 48
    assert "R-RLE 8x8" in err and "clean" in err
    # the answer in a file, the ground truth as a file, an image of that size
    (tmp_path / "answer.txt").write_text(text.replace("\n ", "\n", 1))
    (tmp_path / "gt.json").write_text(json.dumps(rle_of(m)))
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(tmp_path / "img.png")
    out2 = tmp_path / "b.png"
    code, _, err = run(["show", "--text", str(tmp_path / "answer.txt"), "--gt-rle", str(tmp_path / "gt.json"),
                        "--image", str(tmp_path / "img.png"), "-o", str(out2)], capsys)
    assert code == 0 and png_ok(out2)[1][1] >= 48
    assert "row_separator" in err and "IoU" in err
    # inline JSON ground truth, B-SD answer with its box
    out3 = tmp_path / "c.png"
    bsd = st.encode_bsd([("cat", m)], (48, 64))
    code, _, err = run(["show", "--answer", bsd, "--gt-rle", json.dumps(rle_of(m)), "-o", str(out3)], capsys)
    assert code == 0 and png_ok(out3)[0] == "PNG" and "B-SD, 1 object" in err


def test_show_one_answer_errors(tmp_path, capsys):
    out = tmp_path / "a.png"
    code, _, err = run(["show", "--answer", "<seg>others *4\n</seg>", "-o", str(out)], capsys)
    assert code == 2 and "--image-size" in err
    # --text names a file: an answer given there is never read as the answer itself
    code, _, err = run(["show", "--text", "<seg>others *4\n</seg>", "--image-size", "4x4", "-o", str(out)], capsys)
    assert code == 2 and "no such file" in err and "--answer" in err
    code, _, err = run(["show", "--answer", "x", "--image-size", "4x4", "--gt-rle", '{"size": [5, 5], "counts": [25]}',
                        "-o", str(out)], capsys)
    assert code == 2 and "disagree" in err
    code, _, err = run(["show", "--answer", "x", "--gt-rle", "{oops", "-o", str(out)], capsys)
    assert code == 2 and "--gt-rle" in err
    code, _, err = run(["show", "--answer", "x", "--image", str(tmp_path / "none.png"), "-o", str(out)], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run(["show", "--answer", "x", "--image-size", "4x4", "-o", str(tmp_path / "no" / "a.png")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run(["show", "--answer", "x", "--image-size", "4x4", "--predictions", "p", "-o", str(out)], capsys)
    assert code == 2 and "--worst" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["show", "-o", str(out)])  # neither --text nor --worst
    assert e.value.code == 2


def test_show_worst(files, capsys):
    tmp, pred, gt, masks = files
    images = tmp / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 56, 3), 30 * i, np.uint8)).save(images / f"{i}.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(images / "3.png")  # wrong size: blank canvas
    out = tmp / "worst.png"
    code, _, err = run(["show", "--worst", "4", "--predictions", str(pred), "--ground-truth", str(gt),
                        "--images", str(images), "--grid-size", "8", "-o", str(out)], capsys)
    assert code == 0 and png_ok(out)[0] == "PNG"
    assert "4 worst of 8" in err and "line 4" in err
    code, _, err = run(["show", "--worst", "3", "--predictions", str(pred), "-o", str(out)], capsys)
    assert code == 2 and "--ground-truth" in err
    code, _, err = run(["show", "--worst", "3", "--predictions", str(pred), "--ground-truth", str(gt),
                        "--images", str(tmp / "nowhere"), "-o", str(out)], capsys)
    assert code == 2 and "--images" in err


def test_encode_still_works(capsys):
    code, out, _ = run(["encode", "--limit", "1", "--grid-size", "2", "--no-progress"], capsys)
    assert code == 0 and json.loads(out)["text"] == "others *1| dog *1\n others *2\n"


def test_encode_refuses_the_background_word_as_label(capsys):
    from segtext import cli

    assert cli.main(["encode", "--limit", "1", "--label", "others", "--no-progress"]) == 2
    assert "background word" in capsys.readouterr().err
