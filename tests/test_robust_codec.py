"""Issue 8's reproducers for the RLE readers, polygons and the grid-text decoder, kept as tests.

Each input once crashed the process, raised the wrong error, allocated gigabytes or answered
wrong without a word. Every one must now be a clear ``ValueError`` / ``DecodeError`` or a
bounded result that reports what was repaired.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from pycocotools import mask as mask_utils

import segtext as st
from segtext import limits

WRAPPING = [0, 2**62, 2**62, 2**62, 2**62 + 4]  # sums to 4 in int64 arithmetic


def _peak_mib(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


# --------------------------------------------------------------------------- 1. runs that wrap int64


@pytest.mark.parametrize("counts", [WRAPPING, naive.encode_counts_string(WRAPPING)], ids=["list", "string"])
@pytest.mark.parametrize("reader", [
    lambda rle: st.metrics.mask_iou(np.zeros((2, 2), bool), rle),
    lambda rle: st.rle_to_grid(rle, 1),
    lambda rle: st.rles_to_grids([rle], 1),
    lambda rle: st.rle_to_text(rle, "dog", 1),
    lambda rle: st.rles_to_texts([rle], "dog", 1),
    lambda rle: st.box_from_mask(rle),
    lambda rle: st.encode_bsd([("dog", rle)], (2, 2)),
    lambda rle: st.coco.rle_runs(rle),
    lambda rle: st.coco.rles_runs([{"size": [1, 1], "counts": [1]}, rle]),
], ids=["mask_iou", "rle_to_grid", "rles_to_grids", "rle_to_text", "rles_to_texts", "box_from_mask",
        "encode_bsd", "rle_runs", "rles_runs"])
def test_runs_that_wrap_int64_are_refused(reader, counts):
    with pytest.raises(ValueError, match="run length|sum"):
        reader({"size": [2, 2], "counts": counts})


@given(hs.lists(hs.integers(0, 2**63 - 1), min_size=1, max_size=8), hs.integers(1, 6), hs.integers(1, 6))
def test_any_runs_are_accepted_exactly_when_they_sum_to_the_area(counts, H, W):
    rle = {"size": [H, W], "counts": counts}
    if sum(counts) == H * W:  # Python ints: the exact sum
        assert st.rle_to_grid(rle, 1).shape == (1, 1)
        assert st.coco.rles_runs([rle])[0].tolist() == counts
    else:
        for reader in (st.rle_to_grid, lambda r, g: st.rles_to_grids([r], g)):
            with pytest.raises(ValueError):
                reader(rle, 1)


def test_uint64_run_lengths_beyond_int64_are_refused():
    with pytest.raises(ValueError, match="larger than any image"):
        st.rle_to_grid({"size": [1, 1], "counts": np.array([2**63 + 1], np.uint64)}, 1)


def test_a_compressed_run_longer_than_any_image_is_named():
    with pytest.raises(ValueError, match="larger than any image"):
        st.coco.decode_counts(naive.encode_counts_string([0, limits.MAX_IMAGE_AREA + 1]))
    # cumulative deltas that would overflow int64 stop at the first oversized run
    s = naive.encode_counts_string([0, 5, 2**40, 7, 2**41])
    with pytest.raises(ValueError, match="larger than any image"):
        st.coco.decode_counts(s)


def test_eval_on_wrapping_ground_truth_exits_2_not_139(tmp_path):
    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"id": 0, "segmentation": {"size": [2, 2], "counts": WRAPPING}}) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": 0, "answer": "<seg>others *1\n</seg>"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "segtext", "eval", str(pred), str(gt), "--grid-size", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert "sum" in proc.stderr or "run length" in proc.stderr


# --------------------------------------------------------------------------- 9. sizes are checked first


@pytest.mark.parametrize("size", [[10**9, 1], [1, 10**9], [2**63, 1], [2**64 + 5, 3], [40000, 40000]])
def test_huge_rle_sizes_are_refused_before_any_work(size):
    rle = {"size": size, "counts": "0"}
    for policy in ("nearest", "majority"):
        peak = _peak_mib(lambda: pytest.raises(ValueError, st.rle_to_grid, rle, 1, policy))
        assert peak < 16
    with pytest.raises(ValueError, match="limit"):
        st.rle_to_grid(rle, 1)


@pytest.mark.parametrize("size", [[2.5, 3], ["2", 3], [True, 3], [2], None, [[2], 3]])
def test_malformed_rle_sizes_are_value_errors(size):
    with pytest.raises(ValueError, match="size"):
        st.rle_to_grid({"size": size, "counts": [6]}, 1)


def test_integral_float_sizes_still_read():
    assert st.rle_to_grid({"size": [2.0, 3.0], "counts": [6]}, 1).tolist() == [[0]]


@pytest.mark.parametrize("call", [
    lambda: st.grid_to_mask(np.zeros((1, 1), np.uint8), (limits.MAX_IMAGE_SIDE + 1, 1)),
    lambda: st.grid_to_mask(np.zeros((1, 1), np.uint8), (40000, 40000)),
    lambda: st.decode_rrle("a *1\n").to_mask((10**6, 10**6)),
    lambda: st.decode_rrle("a *1\n", grid_size=(10**5, 10**5)),
    lambda: st.decode_rrle("a *1\n", grid_size=limits.MAX_GRID_CELLS + 1),
    lambda: st.rle_to_grid({"size": [4, 4], "counts": [16]}, (3000, 3000)),
], ids=["side", "area", "to_mask", "grid_cells", "grid_int", "rle_grid"])
def test_oversized_arguments_are_instant_value_errors(call):
    peak = _peak_mib(lambda: pytest.raises(ValueError, call))
    assert peak < 16


# --------------------------------------------------------------------------- 2. polygons


@pytest.mark.parametrize("c", [1e9, -1e9, 4e8, 1e7, 1e300])
def test_far_polygons_do_not_crash_pycocotools(c):
    def run():
        rle = st.coco.to_rle([[0, 0, c, 0, 0, c]], (13, 13))
        return int(st.rle_to_grid(rle, 13).sum())

    assert _peak_mib(run) < 64
    assert run() == (169 if c > 0 else 0)  # the triangle covers the image, or none of it


@pytest.mark.parametrize("poly, match", [
    ([0, 0, float("inf"), 0, 0, 5], "NaN or infinite"),
    ([0, 0, float("nan"), 0, 0, 5], "NaN or infinite"),
    ([0, 0, 5, 0, 0], "even number"),
    ([0, 0, 5, 0], "even number"),
    ([], "even number"),
    ("0 0 5 0 0 5", "list of numbers"),
    ([0, 0, "x", 0, 0, 5], "list of numbers"),
    ([0, 0, "5", 0, 0, 5], "list of numbers"),
    ([0, 0, 10**400, 0, 0, 5], "too large"),
    ([[0, 0], [5, 0], [0, 5]], "list of numbers"),
])
def test_bad_polygons_are_refused(poly, match):
    with pytest.raises(ValueError, match=match):
        st.coco.to_rle([poly], (13, 13))


def test_no_polygon_is_refused():
    with pytest.raises(ValueError, match="empty"):
        st.coco.to_rle([], (13, 13))


def test_a_polygon_entirely_outside_far_away_gives_an_empty_mask():
    rle = st.coco.to_rle([[1e6, 1e6, 2e6, 1e6, 1e6, 2e6]], (4, 5))
    assert rle["size"] == [4, 5]
    assert mask_utils.decode(rle).sum() == 0


def test_a_polygon_with_a_huge_outline_is_refused():
    zigzag = [v for i in range(3000) for v in ((0, 0) if i % 2 else (60000, 60000))]
    with pytest.raises(ValueError, match="MAX_POLYGON_STEPS"):
        st.coco.to_rle([zigzag], (30000, 30000))


polygons = hs.integers(3, 7).flatmap(lambda n: hs.lists(
    hs.floats(-3, 4, allow_nan=False), min_size=2 * n, max_size=2 * n))


@given(hs.lists(polygons, min_size=1, max_size=4), hs.integers(1, 30), hs.integers(1, 30))
def test_polygons_within_the_margin_are_rasterised_as_pycocotools_does(units, H, W):
    # coordinates up to one image size outside the image reach pycocotools unchanged, and
    # several polygons merge to exactly the string pycocotools' merge writes
    polys = []
    for unit in units:
        poly = [round(v * (W if i % 2 == 0 else H), 2) for i, v in enumerate(unit)]
        polys.append([min(max(v, -(W if i % 2 == 0 else H)), 2 * (W if i % 2 == 0 else H))
                      for i, v in enumerate(poly)])
    want = mask_utils.merge(mask_utils.frPyObjects(polys, H, W))
    got = st.coco.to_rle(polys, (H, W))
    assert got["counts"] == want["counts"].decode("ascii")


@given(hs.lists(hs.integers(0, 2**40), max_size=12))
def test_counts_encoder_matches_the_plain_loop(counts):
    from segtext import _kernels as K

    got = K.encode_coco_counts(np.array(counts, np.int64)).tobytes().decode("ascii")
    assert got == naive.encode_counts_string(counts)
    if max(counts, default=0) <= limits.MAX_IMAGE_AREA:
        assert st.coco.decode_counts(got).tolist() == counts


@given(hs.lists(hs.integers(0, 2**32 - 1), min_size=1, max_size=5), hs.integers(1, 12), hs.integers(1, 12))
def test_union_of_runs_is_the_pixelwise_or(seeds, H, W):
    from segtext import _kernels as K

    masks = [np.random.default_rng(s).random((H, W)) < 0.4 for s in seeds]
    runs = [naive.uncompressed_counts(m) for m in masks]
    offsets = np.cumsum([0] + [len(r) for r in runs])
    got = K.union_runs(np.array([c for r in runs for c in r], np.int64), offsets.astype(np.int64), H * W)
    assert got.tolist() == naive.uncompressed_counts(np.logical_or.reduce(masks))


def test_merging_polygons_of_a_huge_image_takes_no_memory_per_pixel():
    # pycocotools' merge allocates 4 bytes a pixel (4 GiB here); under a 2 GiB address-space
    # cap that was a segmentation fault
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "import segtext as st; "
            "r = st.coco.to_rle([[16823] * 6, [190, -2.5, -2.5, -2.5, -2.5, -2.5], [0, 0, 9, 0, 0, 9]], (32768, 32768)); "
            "print(int(st.rle_to_grid(r, 1).sum()), r['size'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["0", "[32768,", "32768]"]


@given(hs.integers(3, 7).flatmap(lambda n: hs.lists(hs.floats(-50, 50, allow_nan=False), min_size=2 * n,
                                                    max_size=2 * n)),
       hs.floats(-5, 0), hs.floats(-5, 0), hs.floats(0.5, 10), hs.floats(0.5, 10))
def test_clip_kernel_matches_the_plain_sutherland_hodgman(poly, x0, y0, dx, dy):
    from segtext import _kernels as K

    got = K.clip_polygon(np.array(poly, np.float64), x0, y0, x0 + dx, y0 + dy)
    assert got.tolist() == naive.clip_polygon(poly, x0, y0, x0 + dx, y0 + dy)


@given(hs.lists(hs.one_of(hs.floats(-1.7976931348623157e308, 1.7976931348623157e308), hs.integers(-40, 40)),
                min_size=6, max_size=14).filter(lambda p: len(p) % 2 == 0),
       hs.integers(1, 64), hs.integers(1, 64))
def test_clipping_extreme_coordinates_stays_finite_and_inside(poly, H, W):
    from segtext import _kernels as K

    got = K.clip_polygon(np.array(poly, np.float64), float(-W), float(-H), 2.0 * W, 2.0 * H)
    assert np.isfinite(got).all()
    assert (got[0::2] >= -W).all() and (got[0::2] <= 2 * W).all()
    assert (got[1::2] >= -H).all() and (got[1::2] <= 2 * H).all()
    st.coco.to_rle([poly], (H, W))  # and pycocotools takes it


@given(hs.integers(3, 6).flatmap(lambda n: hs.lists(hs.floats(-30, 30, allow_nan=False), min_size=2 * n,
                                                    max_size=2 * n)),
       hs.integers(3, 20), hs.integers(3, 20))
def test_clipped_polygons_differ_from_the_unclipped_only_along_the_outline(unit, H, W):
    # far enough out to be clipped, near enough for pycocotools to rasterise the original
    poly = [round(v * (W if i % 2 == 0 else H), 1) for i, v in enumerate(unit)]
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], H, W)))
    got = mask_utils.decode(st.coco.to_rle([poly], (H, W)))
    for y, x in np.argwhere(got != want).tolist():
        # pycocotools' pixel (x, y) is decided by the outline passing near its centre
        assert naive.distance_to_outline(x, y, poly) <= 1.5, (x, y)


def test_encode_cli_skips_far_polygons_with_skip_invalid(tmp_path):
    data = {
        "images": [{"id": 1, "height": 13, "width": 13}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1e9, 0, 0, 1e9]]},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, float("inf"), 0, 0, 4]]},
        ],
    }
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(data))  # json writes inf as Infinity, which Python's json reads back
    proc = subprocess.run([sys.executable, "-m", "segtext", "encode", str(path), "--grid-size", "4",
                           "--skip-invalid"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == 1
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 4-8. the grid-text decoder


def test_thousands_of_digits_are_a_count_too_large():
    text = "a *" + "1" * 4301 + "\n"
    res = st.decode_rrle(text)
    assert [r.kind for r in res.repairs] == ["count_too_large"]
    assert res.grid.size <= limits.MAX_GRID_CELLS
    with pytest.raises(st.DecodeError) as e:
        st.decode_rrle(text, mode="strict")
    assert e.value.kind == "count_too_large" and (e.value.line, e.value.column) == (1, 4)
    res = st.decode_rrle("others *2| a *" + "9" * 5000 + "\n", grid_size=(1, 4))
    assert res.grid.tolist() == [[0, 0, 1, 1]]
    assert {r.kind for r in res.repairs} == {"count_too_large", "row_too_long"}
    res = st.decode_rrle("a *x" + "1" * 4301 + "\n", grid_size=(2, 2))  # junk before the digits
    assert "bad_count" in [r.kind for r in res.repairs]


@pytest.mark.parametrize("text", [
    "others| dog\r\n others| others\r\n",
    "others| dog\t\n others| others\n",
    "others| dog\u00a0\n others| others\n",
    "others| \u2003dog\n others| others\n",
    "others| dog\u3000\n others| others\n",
    "others| dog\x1f\n others| others\n",
    "others *1| dog\u0085 *1\n others *2\n",
])
def test_whitespace_around_a_label_is_reported_or_refused(text):
    with pytest.raises(st.DecodeError):
        st.decode_rrle(text, mode="strict")
    res = st.decode_rrle(text)
    assert res.repairs
    assert res.grid.tolist() == [[0, 1], [0, 0]]
    assert res.labels == ["others", "dog"]


def test_t4s_fallback_never_reuses_the_size_it_rejected():
    for text in ("a *99999999999\n", "<seg>others *0</seg>", "<seg>a *3\n b *" + "9" * 30 + "\n</seg>"):
        res = st.decode_rrle(text, mode="t4s")
        assert res.grid.shape == (16, 16)
        assert [r.kind for r in res.repairs] == ["t4s_parse_error"]
    assert st.decode_rrle("<seg>others *0</seg>", mode="t4s", grid_size=(2, 3)).grid.shape == (2, 3)


def test_counts_are_never_clipped_silently():
    with pytest.raises(st.DecodeError) as e:
        st.decode_rrle("a *5000000\n", mode="strict")
    assert e.value.kind == "count_too_large"
    res = st.decode_rrle("a *5000000\n")
    assert "count_too_large" in [r.kind for r in res.repairs]
    with pytest.raises(st.DecodeError) as e:  # a count past what a given grid holds
        st.decode_rrle("dog *100000000000000000000\n", grid_size=(16, 16), mode="strict")
    assert e.value.kind == "count_too_large"


def test_runs_past_the_row_are_not_expanded():
    text = "| ".join(["a *1048576"] * 833) + "\n"
    peak = _peak_mib(lambda: st.decode_rrle(text, grid_size=(1024, 1024)))
    assert peak < 64  # the grid is 4 MiB of int32; 833 expanded runs were 3.5 GB
    res = st.decode_rrle(text, grid_size=(1024, 1024))
    assert (res.grid == 1).all()
    assert "row_too_long" in [r.kind for r in res.repairs] or "total_mismatch" in [r.kind for r in res.repairs]


def test_an_inferred_grid_is_capped_in_every_mode():
    text = "| ".join(["a *65536"] * 4096) + "\n"  # a square total of 16384 x 16384 cells
    with pytest.raises(st.DecodeError) as e:
        st.decode_rrle(text, mode="strict")
    assert e.value.kind == "grid_too_large"
    peak = _peak_mib(lambda: st.decode_rrle(text))
    res = st.decode_rrle(text)
    assert res.grid.size <= limits.MAX_GRID_CELLS and peak < 64
    assert "grid_too_large" in [r.kind for r in res.repairs]
    res = st.decode_rrle(text, mode="t4s")
    assert res.grid.size <= limits.MAX_GRID_CELLS
    rows = "\n ".join(["a *4000"] * 2000) + "\n"  # 2000 rows of 4000: 8 M cells
    res = st.decode_rrle(rows)
    assert res.grid.size <= limits.MAX_GRID_CELLS
    assert "grid_too_large" in [r.kind for r in res.repairs]


def test_text_past_the_limit_is_cut_with_a_repair(monkeypatch):
    monkeypatch.setattr("segtext.repairs.MAX_TEXT_LENGTH", 20)
    text = "others *2| dog *2\n others *4\n"
    res = st.decode_rrle(text, grid_size=(2, 4))
    assert res.repairs[0].kind == "text_too_long"
    with pytest.raises(st.DecodeError) as e:
        st.decode_rrle(text, grid_size=(2, 4), mode="strict")
    assert e.value.kind == "text_too_long"
    assert st.decode_rrle(text, grid_size=(2, 4), mode="t4s").repairs[0].kind == "text_too_long"


# --------------------------------------------------------------------------- 11. unknown="nearest"


def test_nearest_searches_once_per_distinct_label(monkeypatch):
    import segtext.labels as labels_module  # where both decoders' LabelMatcher searches

    calls = []
    real = labels_module.nearest_label
    monkeypatch.setattr(labels_module, "nearest_label", lambda t, labels: calls.append(t) or real(t, labels))
    text = "| ".join(["dgo *1", "cta *1"] * 500) + "\n"
    res = st.decode_rrle(text, labels=["others", "dog", "cat"], grid_size=(1, 1000), unknown="nearest")
    assert sorted(calls) == ["cta", "dgo"]
    assert res.grid[0, :4].tolist() == [1, 2, 1, 2]
    assert sum(r.kind == "unknown_label" for r in res.repairs) == 1000  # each still reported


# --------------------------------------------------------------------------- what fuzzing found next


def test_encoders_refuse_texts_the_decoders_would_not_read():
    with pytest.raises(ValueError, match="MAX_TEXT_LENGTH"):
        st.encode_isd(np.zeros((1024, 1024), np.int32), ["others"])
    with pytest.raises(ValueError, match="MAX_TEXT_LENGTH"):
        st.encode_bsd([("cat", {"size": [1, 1], "counts": "01"})], (1, 1), resolution=1024,
                      policy="nearest", max_run=2)
    text = st.encode_isd(np.zeros((300, 300), np.int32), ["others"])  # 720 k characters: fine
    assert st.decode_rrle(text, mode="strict").grid.shape == (300, 300)


@pytest.mark.parametrize("option", [["--grid-size", "65536x65536"], ["--resolution", "99999999999"]])
def test_eval_refuses_options_past_the_limits_with_exit_2(tmp_path, option, capsys):
    from segtext import cli

    (tmp_path / "p.jsonl").write_text('{"id": 0, "answer": "others *1\\n"}\n')
    (tmp_path / "g.jsonl").write_text('{"id": 0, "segmentation": {"size": [1, 1], "counts": [1]}}\n')
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", str(tmp_path / "p.jsonl"), str(tmp_path / "g.jsonl"), *option])
    assert e.value.code == 2
    assert "limit" in capsys.readouterr().err


def test_eval_reads_an_infinite_image_size_as_a_bad_entry(tmp_path, capsys):
    from segtext import cli

    (tmp_path / "p.jsonl").write_text('{"id": 0, "answer": "others *1\\n"}\n{"id": 1, "answer": "a *1\\n"}\n')
    (tmp_path / "g.jsonl").write_text(
        '{"id": 0, "segmentation": [[0, 0, 3, 0, 3, 3]], "image_size": [4, 1e400]}\n'
        '{"id": 1, "segmentation": {"size": [1, 1], "counts": [0, 1]}}\n')
    rc = cli.main(["eval", str(tmp_path / "p.jsonl"), str(tmp_path / "g.jsonl"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "line 1" in err and "image size" in err


def test_the_repair_log_indexes_only_the_text_that_is_read():
    from segtext.repairs import bounded_log

    huge = "\n" * (limits.MAX_TEXT_LENGTH + 10)
    text, log = bounded_log(huge, strict=False)
    assert len(text) == len(log.text) == limits.MAX_TEXT_LENGTH
    assert [r.kind for r in log.repairs] == ["text_too_long"]
    assert log.repairs[0].line == limits.MAX_TEXT_LENGTH + 1  # the end of what is read
    with pytest.raises(st.DecodeError):
        bounded_log(huge, strict=True)
    for decode in (lambda t: st.decode_rrle(t), lambda t: st.decode_rrle(t, mode="t4s"),
                   lambda t: st.decode_bsd(t, (4, 4))):
        assert decode(huge).repairs[0].kind == "text_too_long"
