"""`segtext encode --panoptic` (COCO panoptic JSON + PNGs) and `--label-dir` (semantic label
maps), through segtext.cli.main in-process, against st.mask_to_grid on the same label maps."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

import segtext as st
from segtext.cli import main

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_panoptic_val2017"

CATS = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "dog", "isthing": 1},
        {"id": 50, "name": "grass", "isthing": 0}]


def run(argv, capsys):
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def panoptic_png(ids):
    """An RGB panoptic PNG array for an (H, W) array of segment ids."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_panoptic(tmp_path, images, categories=CATS):
    """images: [(file_name, id map, segments_info)] -> (JSON path, PNG folder)."""
    png_dir = tmp_path / "png"
    png_dir.mkdir(exist_ok=True)
    anns, infos = [], []
    for n, (file_name, ids, segs) in enumerate(images):
        Image.fromarray(panoptic_png(ids)).save(png_dir / file_name)
        h, w = np.asarray(ids).shape
        infos.append({"id": 10 + n, "file_name": file_name.replace(".png", ".jpg"), "height": h, "width": w})
        anns.append({"image_id": 10 + n, "file_name": file_name, "segments_info": segs})
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps({"images": infos, "annotations": anns, "categories": categories}))
    return path, png_dir


def scene():
    """8x8: grass at the bottom, two people (ids 300 and 70000), a dog (5), unlabelled pixels (0)."""
    ids = np.zeros((8, 8), np.int64)
    ids[5:, :] = 9
    ids[0:4, 0:3] = 300
    ids[1:5, 5:8] = 70000
    ids[6:8, 3:5] = 5
    segs = [{"id": 300, "category_id": 1}, {"id": 70000, "category_id": 1}, {"id": 5, "category_id": 2},
            {"id": 9, "category_id": 50}, {"id": 11, "category_id": 2}]  # 11: no pixel
    return ids, segs


def check_grid_line(line, png, segs, cats, instances, grid, policy="majority"):
    label_map, labels = st.coco.panoptic_to_label_map(png, segs, cats, instances=instances)
    assert line["labels"] == labels
    assert line["image_size"] == list(label_map.shape) and line["grid_size"] == list(grid)
    want = st.mask_to_grid(label_map, grid, policy)
    got = st.decode_rrle(line["text"], labels=line["labels"], grid_size=tuple(line["grid_size"]), mode="strict")
    np.testing.assert_array_equal(got.grid, want)


@pytest.mark.parametrize("fmt", ["rrle", "isd", "irle"])
@pytest.mark.parametrize("instances", [False, True])
def test_panoptic_grid_formats(tmp_path, capsys, fmt, instances):
    ids, segs = scene()
    path, png_dir = write_panoptic(tmp_path, [("a.png", ids, segs), ("b.png", ids.T.copy(), segs)])
    argv = ["encode", "--panoptic", str(path), "--png-dir", str(png_dir), "--format", fmt, "--grid-size", "4"]
    code, lines, err = run(argv + (["--instances"] if instances else []), capsys)
    assert code == 0 and len(lines) == 2
    assert [ln["file_name"] for ln in lines] == ["a.png", "b.png"] and [ln["image_id"] for ln in lines] == [10, 11]
    for line, m in zip(lines, (ids, ids.T)):
        check_grid_line(line, panoptic_png(m), segs, CATS, instances, (4, 4))
    want = ["others", "person 1", "person 2", "grass", "dog 1"] if instances else ["others", "person", "grass", "dog"]
    assert lines[0]["labels"] == want
    assert "2 images" in err and "format " + fmt in err


@pytest.mark.parametrize("instances", [False, True])
def test_panoptic_bsd_one_block_per_segment(tmp_path, capsys, instances):
    ids, segs = scene()
    path, png_dir = write_panoptic(tmp_path, [("a.png", ids, segs)])
    argv = ["encode", "--panoptic", str(path), "--png-dir", str(png_dir), "--format", "bsd", "--resolution", "8"]
    code, (line,), _ = run(argv + (["--instances"] if instances else []), capsys)
    assert code == 0
    assert line["segment_ids"] == [300, 70000, 9, 5]  # order of the first pixel
    assert line["category_ids"] == [1, 1, 50, 2]
    assert line["labels"] == (["person 1", "person 2", "grass", "dog 1"] if instances
                              else ["person", "person", "grass", "dog"])
    dec = st.decode_bsd(line["text"], tuple(line["image_size"]), resolution=line["resolution"],
                        box_format=line["box_format"], row_wise=line["row_wise"], mode="strict")
    assert [o.label for o in dec.objects] == line["labels"]
    want = st.encode_bsd([(label, ids == sid) for label, sid in zip(line["labels"], line["segment_ids"])],
                         (8, 8), resolution=8)
    assert line["text"] == want


def test_panoptic_stdin_limit_and_output(tmp_path, capsys, monkeypatch):
    import io

    ids, segs = scene()
    path, png_dir = write_panoptic(tmp_path, [("a.png", ids, segs), ("b.png", ids, segs)])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    out = tmp_path / "out.jsonl"
    code = main(["encode", "--panoptic", "-", "--png-dir", str(png_dir), "--limit", "1", "-o", str(out),
                 "--grid-size", "4", "--no-progress"])
    assert code == 0
    assert [json.loads(ln)["file_name"] for ln in out.read_text().splitlines()] == ["a.png"]
    assert "1 images" in capsys.readouterr().err


@pytest.mark.parametrize("case, needle", [
    ("unknown_id", "segment id 77 is in the PNG but not in segments_info"),
    ("unknown_category", "segment 5 (segments_info[2]) has category_id 99, not in 'categories'"),
    ("missing_png", "file not found"),
])
def test_panoptic_errors_name_the_file(tmp_path, capsys, case, needle):
    ids, segs = scene()
    bad_ids, bad_segs = ids.copy(), [dict(s) for s in segs]
    if case == "unknown_id":
        bad_ids[0, 7] = 77
    elif case == "unknown_category":
        bad_segs[2]["category_id"] = 99
    path, png_dir = write_panoptic(tmp_path, [("good.png", ids, segs), ("bad.png", bad_ids, bad_segs)])
    if case == "missing_png":
        (png_dir / "bad.png").unlink()
    argv = ["encode", "--panoptic", str(path), "--png-dir", str(png_dir), "--grid-size", "4"]
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    code, _, err = run(argv + ["-o", str(out)], capsys)
    assert code == 2
    assert needle in err and str(png_dir / "bad.png") in err and "annotation 1" in err
    assert "--skip-invalid" in err and out.read_text() == "old\n"  # -o left as it was
    code, lines, err = run(argv + ["--skip-invalid"], capsys)
    assert code == 0 and [ln["file_name"] for ln in lines] == ["good.png"]
    assert "skipped 1 invalid image(s)" in err and needle in err


def test_panoptic_all_skipped_and_bad_options(tmp_path, capsys):
    ids, segs = scene()
    path, png_dir = write_panoptic(tmp_path, [("a.png", ids, segs)])
    (png_dir / "a.png").unlink()
    code, _, err = run(["encode", "--panoptic", str(path), "--png-dir", str(png_dir), "--skip-invalid"], capsys)
    assert code == 2 and "nothing to write: all 1 image(s) were skipped" in err
    for extra, needle in [([], "--panoptic needs --png-dir"), (["--png-dir", "x", "--label", "a"], "--label"),
                          (["--png-dir", str(png_dir), "--ignore-index", "3"], "--ignore-index goes with"),
                          (["--png-dir", str(tmp_path / "nope")], "--png-dir is not a folder")]:
        code, _, err = run(["encode", "--panoptic", str(path), *extra], capsys)
        assert code == 2 and needle in err, (extra, err)
    code, _, err = run(["encode", "--instances"], capsys)
    assert code == 2 and "--instances goes with --panoptic" in err
    code, _, err = run(["encode", "--panoptic", str(tmp_path / "none.json"), "--png-dir", str(png_dir)], capsys)
    assert code == 2 and "input file not found" in err


@pytest.mark.skipif(not (SHARED / "panoptic_examples.json").exists(), reason="no COCO panoptic sample")
@pytest.mark.parametrize("instances", [False, True])
@pytest.mark.parametrize("grid, policy", [((16, 16), "majority"), ((24, 32), "nearest")])
def test_real_coco_panoptic_sample(capsys, instances, grid, policy):
    path = SHARED / "panoptic_examples.json"
    data = json.loads(path.read_text())
    argv = ["encode", "--panoptic", str(path), "--png-dir", str(SHARED / "panoptic_examples"),
            "--grid-size", f"{grid[0]}x{grid[1]}", "--policy", policy]
    code, lines, _ = run(argv + (["--instances"] if instances else []), capsys)
    assert code == 0 and len(lines) == len(data["annotations"]) == 2
    for line, ann in zip(lines, data["annotations"]):
        assert line["file_name"] == ann["file_name"] and line["image_id"] == ann["image_id"]
        png = np.asarray(Image.open(SHARED / "panoptic_examples" / ann["file_name"]).convert("RGB"))
        check_grid_line(line, png, ann["segments_info"], data["categories"], instances, grid, policy)


# ----------------------------------------------------------------------------- semantic


def write_semantic(tmp_path, maps, names=("background", "road", "car")):
    d = tmp_path / "labels"
    d.mkdir(exist_ok=True)
    for file_name, m in maps.items():
        Image.fromarray(np.asarray(m, np.uint8)).save(d / file_name)
    classes = tmp_path / "names.txt"
    classes.write_text("\n".join(names) + "\n")
    return d, classes


def semantic_maps():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (12, 10))
    a[:4, :] = 255
    b = np.full((6, 9), 2)
    b[:, :3] = 255
    return {"b.png": b, "a.png": a}


@pytest.mark.parametrize("fmt", ["rrle", "isd", "irle"])
@pytest.mark.parametrize("policy", ["majority", "nearest", "any"])
def test_semantic_label_maps_with_ignore(tmp_path, capsys, fmt, policy):
    maps = semantic_maps()
    d, classes = write_semantic(tmp_path, maps)
    code, lines, err = run(["encode", "--label-dir", str(d), "--classes", str(classes), "--ignore-index", "255",
                            "--grid-size", "3x2", "--format", fmt, "--policy", policy], capsys)
    assert code == 0 and [ln["file_name"] for ln in lines] == ["a.png", "b.png"]  # sorted by name
    for line in lines:
        m = maps[line["file_name"]].astype(np.uint8)
        assert line["labels"] == ["others", "road", "car"]  # id 0 is written as 'others'
        assert line["image_size"] == list(m.shape) and line["grid_size"] == [3, 2]
        want = st.mask_to_grid(m, (3, 2), policy, ignore_index=255)
        got = st.decode_rrle(line["text"], labels=line["labels"], grid_size=(3, 2), mode="strict")
        np.testing.assert_array_equal(got.grid, want)
    assert "2 images" in err


def test_semantic_value_beyond_classes(tmp_path, capsys):
    maps = semantic_maps()
    d, classes = write_semantic(tmp_path, maps)
    argv = ["encode", "--label-dir", str(d), "--classes", str(classes), "--grid-size", "2"]
    code, _, err = run(argv, capsys)  # 255 without --ignore-index is a value beyond the classes
    assert code == 2 and str(d / "a.png") in err and "pixel value 255 is beyond the classes file" in err
    assert "--ignore-index" in err
    maps["c.png"] = np.full((4, 4), 7)
    d, classes = write_semantic(tmp_path, maps)
    code, lines, err = run(argv + ["--ignore-index", "255", "--skip-invalid", "--limit", "3"], capsys)
    assert code == 0 and [ln["file_name"] for ln in lines] == ["a.png", "b.png"]
    assert "pixel value 7" in err and str(d / "c.png") in err and "skipped 1 invalid image(s)" in err


def test_semantic_bad_inputs(tmp_path, capsys):
    d, classes = write_semantic(tmp_path, {"a.png": np.zeros((2, 2))})
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(d / "rgb.png")
    code, _, err = run(["encode", "--label-dir", str(d), "--classes", str(classes), "--grid-size", "2"], capsys)
    assert code == 2 and "rgb.png" in err and "single-channel" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["encode", "--label-dir", str(empty), "--classes", str(classes)], capsys)
    assert code == 2 and "no PNG files" in err
    code, _, err = run(["encode", "--label-dir", str(d), "--classes", str(classes), "--format", "bsd"], capsys)
    assert code == 2 and "not --format bsd" in err
    code, _, err = run(["encode", "--label-dir", str(d)], capsys)
    assert code == 2 and "--label-dir needs --classes" in err
    dup = tmp_path / "dup.txt"
    dup.write_text("others\nroad\nroad\n")
    code, _, err = run(["encode", "--label-dir", str(d), "--classes", str(dup)], capsys)
    assert code == 2 and "line 3" in err


def test_panoptic_png_size_must_match_its_image(tmp_path, capsys):
    ids, segs = scene()
    path, png_dir = write_panoptic(tmp_path, [("a.png", ids, segs)])
    data = json.loads(path.read_text())
    data["images"][0]["height"] = 9
    path.write_text(json.dumps(data))
    code, _, err = run(["encode", "--panoptic", str(path), "--png-dir", str(png_dir), "--grid-size", "4"], capsys)
    assert code == 2 and "a.png" in err and "the PNG is 8x8 pixels, the image entry says 9x8" in err


def test_semantic_palette_png(tmp_path, capsys):
    d, classes = write_semantic(tmp_path, {})
    m = np.array([[0, 1], [2, 255]], np.uint8)
    im = Image.fromarray(m, mode="L").convert("P")
    im.putpalette([v for k in range(256) for v in (k, 0, 0)])
    im.save(d / "p.png")
    code, (line,), _ = run(["encode", "--label-dir", str(d), "--classes", str(classes), "--grid-size", "2",
                            "--ignore-index", "255", "--format", "isd"], capsys)
    assert code == 0
    assert line["text"] == st.encode_isd(st.mask_to_grid(m, (2, 2), ignore_index=255), line["labels"])
