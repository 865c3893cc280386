"""`segtext encode --format bsd`, '-' for standard input, zero output as an error and the
`segtext show` answer / output checks, through segtext.cli.main (subprocess only for stdin)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import naive
import segtext as st
from segtext.cli import main

SAMPLE = st.coco.SAMPLE_PATH


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_stdin(argv, data):
    p = subprocess.run([sys.executable, "-m", "segtext", *argv], input=data, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def rle_of(mask):
    return {"size": list(mask.shape), "counts": naive.uncompressed_counts(mask)}


def instances(tmp_path, masks_by_image, name="inst.json"):
    """A COCO instances file: {image_id: [mask, ...]}, annotation ids in order."""
    images, anns = [], []
    for image_id, masks in masks_by_image.items():
        h, w = masks[0].shape
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.png"})
        for m in masks:
            anns.append({"id": 100 + len(anns), "image_id": image_id, "category_id": 1, "segmentation": rle_of(m)})
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def decodes(line, n_objects):
    rec = json.loads(line)
    dec = st.decode_bsd(rec["text"], tuple(rec["image_size"]), resolution=rec["resolution"],
                        box_format=rec["box_format"], row_wise=rec["row_wise"], mode="strict")
    assert len(dec.objects) == n_objects
    return rec, dec


# --------------------------------------------------------------------------- encode --format bsd


@pytest.mark.parametrize("box_format", ["norm1000", "qwen2vl", "pixel"])
@pytest.mark.parametrize("row_wise", [False, True])
def test_encode_bsd_one_line_per_image(capsys, box_format, row_wise):
    argv = ["encode", "--limit", "12", "--format", "bsd", "--resolution", "16", "--box-format", box_format,
            "--no-progress"] + (["--row-wise"] if row_wise else [])
    code, out, err = run(argv, capsys)
    assert code == 0
    anns = st.coco.load_annotations(SAMPLE, limit=12)
    by_image: dict = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    lines = out.splitlines()
    assert len(lines) == len(by_image)
    for line, (image_id, group) in zip(lines, by_image.items()):
        rec, dec = decodes(line, len(group))
        assert rec["image_id"] == image_id and rec["ids"] == [a["id"] for a in group]
        assert rec["labels"] == [a["label"] for a in group]
        assert rec["resolution"] == 16 and rec["box_format"] == box_format and rec["row_wise"] is row_wise
        assert rec["image_size"] == list(group[0]["image_size"])
        assert rec["text"] == st.encode_bsd([(a["label"], a["segmentation"]) for a in group],
                                            group[0]["image_size"], resolution=16, box_format=box_format,
                                            row_wise=row_wise)
    assert "12 masks" in err and "B-SD resolution 16" in err and f"{len(lines)} line(s)" in err


def test_encode_bsd_per_annotation_default_resolution(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    code, stdout, err = run(["encode", "--limit", "4", "--format", "bsd", "--per-annotation", "--label", "it",
                             "-o", str(out), "--no-progress"], capsys)
    assert code == 0 and stdout == ""
    lines = out.read_text().splitlines()
    anns = st.coco.load_annotations(SAMPLE, limit=4)
    assert len(lines) == 4
    for line, a in zip(lines, anns):
        rec, _ = decodes(line, 1)
        assert rec["id"] == a["id"] and rec["label"] == "it" and rec["resolution"] == 64
        assert rec["box_format"] == "norm1000"


def test_encode_bsd_empty_mask(tmp_path, capsys):
    shape = (20, 30)
    path = instances(tmp_path, {1: [box(shape, 2, 9, 3, 12), np.zeros(shape, bool), box(shape, 10, 18, 5, 25)],
                                2: [np.zeros(shape, bool)]})
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    code, stdout, err = run(["encode", str(path), "--format", "bsd", "--resolution", "8", "-o", str(out)], capsys)
    assert code == 2 and "annotation 1 (id 101)" in err and "empty" in err and "--skip-invalid" in err
    assert "skip_empty" not in err
    assert out.read_text() == "old\n"  # -o is atomic: the old file is kept
    code, stdout, err = run(["encode", str(path), "--format", "bsd", "--resolution", "8", "--skip-invalid",
                             "--no-progress"], capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert len(lines) == 1  # image 2 had only an empty mask: no line
    rec, _ = decodes(lines[0], 2)
    assert rec["ids"] == [100, 102]
    assert "skipped annotation 1 (id 101)" in err and "skipped annotation 3 (id 103)" in err
    assert "skipped 2 invalid annotation(s)" in err


def test_encode_bsd_option_checks(capsys):
    code, _, err = run(["encode", "--format", "bsd", "--grid-size", "8", "--limit", "1"], capsys)
    assert code == 2 and "--grid-size" in err and "--resolution" in err
    for opt in (["--resolution", "8"], ["--box-format", "pixel"], ["--row-wise"], ["--per-annotation"]):
        code, _, err = run(["encode", "--limit", "1", *opt], capsys)
        assert code == 2 and opt[0] in err and "--format bsd" in err
    code, out, _ = run(["encode", "--limit", "1", "--grid-size", "2", "--no-progress"], capsys)
    assert code == 0 and json.loads(out)["grid_size"] == [2, 2]


# --------------------------------------------------------------------------- '-' reads stdin


@pytest.fixture()
def eval_files(tmp_path):
    masks = [box((24, 32), 2, 12, 3, 20), box((24, 32), 5, 20, 10, 30)]
    gt_lines = [json.dumps({"id": i, "segmentation": rle_of(m), "image_size": [24, 32]}) for i, m in enumerate(masks)]
    pred_lines = [json.dumps({"id": i, "answer": "<seg>" + st.rle_to_text(rle_of(m), "it", 8) + "</seg>"})
                  for i, m in enumerate(masks)]
    gt = tmp_path / "gt.jsonl"
    gt.write_text("\n".join(gt_lines) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(pred_lines) + "\n")
    return tmp_path, pred, gt


def test_stdin_for_encode_eval_and_show(eval_files):
    tmp, pred, gt = eval_files
    inst = instances(tmp, {1: [box((20, 30), 2, 9, 3, 12), box((20, 30), 10, 18, 5, 25)]})
    code, out, err = run_stdin(["encode", "-", "--format", "bsd", "--resolution", "8", "--no-progress"],
                               inst.read_text())
    assert code == 0, err
    decodes(out, 2)
    code, out, err = run_stdin(["eval", "-", str(gt), "--no-progress"], pred.read_text())
    assert code == 0, err
    assert "stdin against" in out and "100.00" in out
    code, out, err = run_stdin(["eval", str(pred), "-", "--no-progress"], gt.read_text())  # JSON Lines, read twice
    assert code == 0, err
    assert "100.00" in out
    code, _, err = run_stdin(["eval", "-", "-"], gt.read_text())
    assert code == 2 and "only one input" in err
    code, _, err = run_stdin(["eval", "-", str(gt)], "not json\n")
    assert code == 2 and "stdin line 1" in err and "stdin holds no usable prediction" in err
    assert "segtext-stdin" not in err  # the temporary copy is never named
    png = tmp / "w.png"
    code, _, err = run_stdin(["show", "--worst", "2", "--predictions", str(pred), "--ground-truth", "-",
                              "-o", str(png)], gt.read_text())
    assert code == 0 and png.exists(), err
    answer = st.encode_bsd([("cat", box((24, 32), 2, 12, 3, 20))], (24, 32), resolution=8)
    code, _, err = run_stdin(["show", "--text", "-", "--image-size", "24x32", "--resolution", "8",
                              "-o", str(tmp / "a.png")], answer)
    assert code == 0 and "B-SD, 1 object" in err
    code, _, err = run_stdin(["show", "--answer", answer, "--gt-rle", "-", "--resolution", "8",
                              "-o", str(tmp / "b.png")], json.dumps(rle_of(box((24, 32), 2, 12, 3, 20))))
    assert code == 0 and "IoU" in err
    code, _, err = run_stdin(["encode", "-"], "")
    assert code == 2 and "stdin is empty" in err and "--skip-invalid" not in err


# --------------------------------------------------------------------------- zero output is an error


def test_zero_output_is_an_error(tmp_path, eval_files, capsys):
    _, pred, gt = eval_files
    empty = tmp_path / "empty.json"
    empty.write_text("")
    code, _, err = run(["encode", str(empty)], capsys)
    assert code == 2 and "is empty" in err and "--skip-invalid" not in err
    code, _, err = run(["encode", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "not found" in err and "--skip-invalid" not in err
    (tmp_path / "bad.json").write_text("{oops")
    code, _, err = run(["encode", str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "not valid JSON" in err and "--skip-invalid" not in err
    noann = tmp_path / "noann.json"
    noann.write_text(json.dumps({"images": [], "annotations": []}))
    out = tmp_path / "o.jsonl"
    for fmt in ("rrle", "bsd"):
        code, stdout, err = run(["encode", str(noann), "--format", fmt, "-o", str(out)], capsys)
        assert code == 2 and "nothing to write" in err and "no annotations" in err and not out.exists()
    allbad = tmp_path / "allbad.json"
    allbad.write_text(json.dumps([{"id": 5, "segmentation": []}]))
    code, _, err = run(["encode", str(allbad), "--skip-invalid"], capsys)
    assert code == 2 and "skipped annotation 0 (id 5)" in err and "all 1 annotation(s) were skipped" in err
    code, _, err = run(["encode", str(allbad)], capsys)
    assert code == 2 and "--skip-invalid" in err  # the hint where it applies
    # eval: an empty or all-bad predictions file
    code, out, err = run(["eval", str(empty), str(gt)], capsys)
    assert code == 2 and "predictions" in err and "is empty" in err and out == ""
    (tmp_path / "bad.jsonl").write_text('garbage\n{"x": 1}\n')
    code, out, err = run(["eval", str(tmp_path / "bad.jsonl"), str(gt)], capsys)
    assert code == 2 and "holds no usable prediction (2 bad line(s))" in err and "line 1" in err
    code, _, err = run(["show", "--worst", "1", "--predictions", str(tmp_path / "bad.jsonl"),
                        "--ground-truth", str(gt), "-o", str(tmp_path / "w.png")], capsys)
    assert code == 2 and "no usable prediction" in err and not (tmp_path / "w.png").exists()


# --------------------------------------------------------------------------- show: --answer, -o, size


def test_show_answer_text_and_output_formats(tmp_path, capsys):
    from PIL import Image

    m = box((24, 32), 2, 12, 3, 20)
    answer = st.encode_bsd([("cat", m)], (24, 32), resolution=8)
    (tmp_path / "answer.txt").write_text(answer)
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP")):
        out = tmp_path / f"a{suffix}"
        code, _, err = run(["show", "--answer", answer, "--image-size", "24x32", "--resolution", "8",
                            "-o", str(out)], capsys)
        assert code == 0, err
        with Image.open(out) as im:
            assert im.format == fmt
    out = tmp_path / "a.pdf"
    code, _, err = run(["show", "--text", str(tmp_path / "answer.txt"), "--image-size", "24x32",
                        "--resolution", "8", "-o", str(out)], capsys)
    assert code == 0 and out.read_bytes().startswith(b"%PDF")
    code, _, err = run(["show", "--text", str(tmp_path / "answr.txt"), "--image-size", "24x32",
                        "-o", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "no such file" in err and "--answer" in err
    code, _, err = run(["show", "--text", answer, "--image-size", "24x32", "--resolution", "8",
                        "-o", str(tmp_path / "old.png")], capsys)
    assert code == 2 and "no such file" in err and not (tmp_path / "old.png").exists()  # never the answer itself
    for bad in ("x.gif", "x", "x.txt"):
        code, _, err = run(["show", "--answer", answer, "--image-size", "24x32", "-o", str(tmp_path / bad)], capsys)
        assert code == 2 and "-o" in err and ".png" in err and not (tmp_path / bad).exists()
    code, _, err = run(["show", "--worst", "2", "--predictions", "nope", "--ground-truth", "nope",
                        "-o", str(tmp_path / "w.bmp")], capsys)
    assert code == 2 and "suffix" in err  # before any input is read
    with pytest.raises(SystemExit):
        main(["show", "--answer", answer, "--text", "f", "-o", str(tmp_path / "y.png")])
    capsys.readouterr()


def test_show_refuses_huge_pictures(tmp_path, capsys):
    out = tmp_path / "a.png"
    code, _, err = run(["show", "--answer", "<seg>others *1\n</seg>", "--image-size", "10000x10000",
                        "-o", str(out)], capsys)
    assert code == 2 and "64 megapixels" in err and not out.exists()
    with pytest.raises(SystemExit):  # past MAX_IMAGE_AREA: refused by the argument parser
        main(["show", "--answer", "x", "--image-size", "40000x40000", "-o", str(out)])
    assert "MAX_IMAGE_AREA" in capsys.readouterr().err
    code, _, err = run(["show", "--answer", "x", "--gt-rle", json.dumps({"size": [9000, 9000], "counts": [81000000]}),
                        "-o", str(out)], capsys)
    assert code == 2 and "64 megapixels" in err
    code, _, err = run(["show", "--worst", "5000", "--predictions", "p", "--ground-truth", "g", "-o", str(out)],
                       capsys)
    assert code == 2 and "--worst 5000" in err and "64 megapixels" in err
