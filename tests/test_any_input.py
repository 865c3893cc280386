"""Any input, bounded time and memory (issue 8): every decoder, RLE reader, polygon reader and
the eval command either returns a well-formed result or raises ValueError / TypeError
(DecodeError is a ValueError) -- and the repair-mode decoders never raise on a str.

Each call runs under :func:`bounded`: Python and numpy allocations are traced (tracemalloc),
the peak resident size of the process is reset and read back (so memory the numba kernels
touch counts too), the address space may grow by at most 1 GiB (a runaway allocation is a
MemoryError, not a dead machine), and the wall time is checked as a hang guard only.
The fuzz harnesses in fuzz/ check the same contracts with libFuzzer (see fuzz/README.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as hs

from naive import encode_counts_string as coco_string  # Python ints: huge and negative runs too
from numba.core import event as numba_event

import segtext as st
from segtext import cli, evaluation
from segtext.limits import MAX_GRID_CELLS

MEMORY = 512 << 20  # bytes one call may allocate (traced) or add to the resident peak
SECONDS = 10.0  # hang guard; the calls here take milliseconds
# 60 examples a test under the default profile (12 under quick, 1200 under thorough)
EXAMPLES = settings(max_examples=max(10, settings.default.max_examples * 3 // 5),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _status(key: str) -> int:
    """A ``Vm*`` figure of this process from /proc/self/status, in bytes (0 if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def bounded(what: str = ""):
    """Run the block with bounded memory and time, and fail when it goes past them (also when
    the block raises). A call that compiles a numba kernel (its first call with new argument
    types, when the cache is cold) is exempt from the time and memory bounds, not from the
    address-space cap."""
    rss_ok = _reset_peak_rss()
    rss0 = _status("VmRSS")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = _status("VmSize")
    if vm and soft == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), hard))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with numba_event.install_recorder("numba:compile") as compiles:
            yield
    finally:
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        rss = _status("VmHWM") - rss0 if rss_ok else 0
        problems = [] if compiles.buffer else [
            f"allocated {peak / 2**20:.0f} MiB (traced)" if peak >= MEMORY else "",
            f"grew the resident peak by {rss / 2**20:.0f} MiB" if rss >= MEMORY else "",
            f"took {dt:.1f} s" if dt >= SECONDS else ""]
        if any(problems):
            raise AssertionError(f"{what}: " + "; ".join(p for p in problems if p)
                                 + f" (bounds: {MEMORY >> 20} MiB, {SECONDS:.0f} s)")


def reads(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under :func:`bounded`; ValueError/TypeError come back as the value."""
    try:
        with bounded(getattr(fn, "__name__", str(fn))):
            return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        return e


@pytest.fixture(scope="module", autouse=True)
def warm_kernels():
    """Load (or compile) the kernels the tests reach, with the argument types they use, before
    any bound is checked."""
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True
    for dt in (bool, np.uint8, np.int64, np.float64):
        for a in (m.astype(dt), np.asfortranarray(m.astype(dt)), np.zeros((8, 8), dt)[::2, ::2]):
            st.box_from_mask(a) if a.any() else None
            st.metrics.mask_iou(a, a)
            st.encode_bsd([("cat", a)], (4, 4), resolution=2, skip_empty=True)
    rle = {"size": [4, 4], "counts": [5, 2, 2, 2, 5]}
    for r in (rle, st.coco.to_rle([[0, 0, 3, 0, 3, 3]], (4, 4))):
        st.rle_to_grid(r, 2), st.rles_to_grids([r], 2), st.rle_to_text(r, "dog", 2), st.metrics.mask_iou(r, r)
        st.metrics.grid_iou(np.eye(2, dtype=np.int32), r), st.box_from_mask(r)
        st.encode_bsd([("cat", r)], (4, 4), resolution=2)
    for mode in MODES:
        for text in ("others *2| dog *2\n others *4\n", "x", "<ref>a</ref><box>[0,0,500,500]</box><seg><fg_3>"):
            evaluation.decode_answer(text, (4, 4), mode=mode, resolution=2).score(rle)
    yield


# --------------------------------------------------------------------------- strategies

BIG = [0, 1, 2, -1, 3, 2**16, 2**22, 2**22 + 1, 2**30, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1,
       2**63, 2**64, -(2**62), -(2**63), 10**20]
TOKENS = ["<seg>", "</seg>", " *", "*", "| ", "|", "\n", "\n ", "\r", "\r\n", "\t", "\u00a0", " ", "others",
          "dog", "white horse", "cat", "<ref>", "</ref>", "<box>", "</box>", "[", "]", ",", "(", ")", "<fg_",
          "<bg_", ">", "<fg_63>", "<bg_1>", "<fg_0>", "1000", "[0,0,1000,1000]", "<|object_ref_start|>",
          "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "-", "٣", "\x00", "\u2028", "é"]
LONG_DIGITS = ["9" * 5000, "0" * 4400 + "7", "1" * 400]
LABEL_SETS = [["others", "dog"], ["others", "dog", "white horse", "a|b"], ["others"]]
MODES = ["repair", "strict", "t4s"]

digits = hs.one_of(hs.integers(0, 10**30).map(str), hs.sampled_from([str(v) for v in BIG if v >= 0]),
                   hs.sampled_from(LONG_DIGITS))
texts = hs.one_of(
    hs.text(max_size=120),
    hs.lists(hs.one_of(hs.sampled_from(TOKENS), digits, hs.text(max_size=4)), max_size=60).map("".join),
)
grid_sizes = hs.one_of(hs.none(), hs.tuples(hs.integers(1, 40), hs.integers(1, 40)), hs.integers(1, 40),
                       hs.sampled_from([(1, MAX_GRID_CELLS), (2048, 2048), (1, 1)]))
image_sizes = hs.one_of(hs.tuples(hs.integers(1, 64), hs.integers(1, 64)),
                        hs.sampled_from([(480, 640), (1, 4096), (4096, 1)]))


def big_ints():
    return hs.one_of(hs.sampled_from(BIG), hs.integers(-5, 50), hs.integers(-(2**64), 2**64))




@hs.composite
def rles(draw):
    """Dicts that look more or less like COCO RLEs: sizes and runs from BIG, compressed strings
    of huge or negative runs, runs that sum to H*W exactly or only modulo 2**64, junk."""
    if draw(hs.integers(0, 9)) == 0:
        return draw(hs.sampled_from([None, [], "", {"size": [2, 2]}, {"counts": [4]}, {"size": [2, 2], "counts": None}]))
    H, W = draw(hs.one_of(hs.tuples(hs.integers(1, 12), hs.integers(1, 12)), hs.tuples(big_ints(), big_ints())))
    size = draw(hs.sampled_from([[H, W], [H, W], (H, W), [float(H), W], [H], [True, W], [str(H), W]]))
    runs = draw(hs.lists(hs.one_of(hs.integers(0, 20), big_ints()), max_size=8))
    fix = draw(hs.integers(0, 3))
    if fix <= 1:
        last = H * W - sum(runs)
        runs = runs + [last if fix == 0 or last >= 0 else last % (1 << 64)]
    kind = draw(hs.integers(0, 4))
    if kind == 0:
        counts = runs
    elif kind == 1:
        counts = coco_string(runs)
    elif kind == 2:
        counts = draw(hs.one_of(hs.text(max_size=30), hs.binary(max_size=30)))
    elif kind == 3:
        counts = np.array([v % (1 << 63) for v in runs], np.uint64).astype(draw(hs.sampled_from(["int64", "uint64", "float64"])))
    else:
        counts = draw(hs.sampled_from([None, 5, 2.5, [1.5, 2], [[1, 2]], [True, False], ["1"], {}]))
    return {"size": size, "counts": counts}


def runs_of(rle):
    try:
        return st.coco.rle_runs(rle)
    except (TypeError, ValueError):
        return None


@hs.composite
def masks(draw, max_side=16):
    H, W = draw(hs.integers(1, max_side)), draw(hs.integers(1, max_side))
    fill = draw(hs.sampled_from(["empty", "full", "random", "random"]))
    if fill == "empty":
        m = np.zeros((H, W), bool)
    elif fill == "full":
        m = np.ones((H, W), bool)
    else:
        m = np.array(draw(hs.lists(hs.booleans(), min_size=H * W, max_size=H * W)), bool).reshape(H, W)
    m = m.astype(draw(hs.sampled_from([bool, np.uint8, np.int64, np.float64])))
    layout = draw(hs.sampled_from(["C", "F", "strided", "transposed"]))
    if layout == "F":
        m = np.asfortranarray(m)
    elif layout == "strided":
        big = np.zeros((2 * H, 2 * W), m.dtype)
        big[::2, ::2] = m
        m = big[::2, ::2]
    elif layout == "transposed":
        m = np.ascontiguousarray(m.T).T
    return m


def tight_box(m):
    m = np.asarray(m) != 0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --------------------------------------------------------------------------- result checks


def check_grid(res, grid_size=None, labels=None, strict=False):
    assert isinstance(res, st.DecodedGrid), type(res)
    g = res.grid
    assert isinstance(g, np.ndarray) and g.ndim == 2 and g.dtype.kind in "iu", (type(g), getattr(g, "dtype", None))
    assert 1 <= g.size <= MAX_GRID_CELLS, g.shape
    if grid_size is not None:
        want = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        assert g.shape == want, (g.shape, want)
    assert isinstance(res.labels, list) and all(isinstance(s, str) for s in res.labels)
    assert g.min() >= 0 and g.max() < len(res.labels), (int(g.min()), int(g.max()), res.labels)
    if labels is not None:
        assert res.labels == list(labels)
    assert all(isinstance(r, st.Repair) and r.kind in st.REPAIR_KINDS for r in res.repairs)
    assert res.format in st.FORMATS
    if strict:
        assert not res.repairs


def check_objects(res, image_size, S, strict=False):
    H, W = image_size
    assert isinstance(res, st.DecodedObjects)
    for o in res.objects:
        assert isinstance(o.label, str)
        x1, y1, x2, y2 = o.box
        assert all(type(v) is int for v in o.box) and 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, (o.box, image_size)
        assert isinstance(o.bricks, np.ndarray) and o.bricks.shape == (S, S) and o.bricks.dtype == bool
    if H * W <= 1 << 20:
        m = res.mask()
        assert m.shape == (H, W) and m.dtype == bool
    assert all(isinstance(r, st.Repair) and r.kind in st.REPAIR_KINDS for r in res.repairs)
    if strict:
        assert not res.repairs


def check_score(s, size):
    H, W = size
    i, u, a, b = s.intersection, s.union, s.pred_area, s.gt_area
    assert 0 <= i <= min(a, b) and u == a + b - i and max(a, b) <= H * W, s
    assert 0.0 <= s.iou <= 1.0
    for box in (s.pred_box, s.gt_box):
        assert box is None or (0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H), box


# --------------------------------------------------------------------------- text decoders


@EXAMPLES
@given(text=texts, mode=hs.sampled_from(["repair", "t4s"]), labels=hs.none() | hs.sampled_from(LABEL_SETS),
       grid_size=grid_sizes, unknown=hs.sampled_from(["background", "nearest"]))
@example(text="others *" + "9" * 5000 + "\n", mode="repair", labels=None, grid_size=None, unknown="background")
@example(text="dog *3\n", mode="t4s", labels=None, grid_size=None, unknown="background")
@example(text="others *4194304\n" * 8, mode="repair", labels=None, grid_size=None, unknown="background")
@example(text="others *1| " * 3000 + "\n", mode="t4s", labels=None, grid_size=None, unknown="background")
def test_decode_rrle_repair_never_raises(text, mode, labels, grid_size, unknown):
    kw = {} if labels is None else {"labels": labels, "unknown": unknown}
    with bounded("decode_rrle"):
        res = st.decode_rrle(text, grid_size=grid_size, mode=mode, **kw)
    check_grid(res, grid_size, labels)


@EXAMPLES
@given(text=texts, labels=hs.none() | hs.sampled_from(LABEL_SETS), grid_size=grid_sizes,
       unknown=hs.sampled_from(["background", "nearest", "error"]))
@example(text="others *" + "9" * 5000 + "\n", labels=None, grid_size=None, unknown="background")
def test_decode_rrle_strict_raises_only_decode_error(text, labels, grid_size, unknown):
    kw = {} if labels is None else {"labels": labels, "unknown": unknown}
    res = reads(st.decode_rrle, text, grid_size=grid_size, mode="strict", **kw)
    if isinstance(res, Exception):
        assert isinstance(res, st.DecodeError), repr(res)
    else:
        check_grid(res, grid_size, labels, strict=True)


@EXAMPLES
@given(text=texts, image_size=image_sizes, S=hs.sampled_from([1, 2, 3, 8, 64, 1024]),
       max_run=hs.sampled_from([63, 1, 4]), row_wise=hs.booleans(), box_format=hs.sampled_from(list(st.BOX_FORMATS)))
@example(text="<ref>a</ref><box>[0,0,1000,1000]</box><seg>" + "<fg_9999999999999999999999>" * 3 + "</seg>",
         image_size=(8, 8), S=8, max_run=63, row_wise=False, box_format="norm1000")
def test_decode_bsd_repair_never_raises(text, image_size, S, max_run, row_wise, box_format):
    with bounded("decode_bsd"):
        res = st.decode_bsd(text, image_size, resolution=S, max_run=max_run, row_wise=row_wise, box_format=box_format)
    check_objects(res, image_size, S)


@EXAMPLES
@given(text=texts, image_size=image_sizes, S=hs.sampled_from([1, 2, 8, 64]), box_format=hs.sampled_from(list(st.BOX_FORMATS)))
def test_decode_bsd_strict_raises_only_decode_error(text, image_size, S, box_format):
    res = reads(st.decode_bsd, text, image_size, resolution=S, mode="strict", box_format=box_format)
    if isinstance(res, Exception):
        assert isinstance(res, st.DecodeError), repr(res)
    else:
        check_objects(res, image_size, S, strict=True)


@EXAMPLES
@given(text=texts, image_size=image_sizes, fmt=hs.sampled_from(["auto", "rrle", "bsd"]), mode=hs.sampled_from(MODES),
       grid_size=grid_sizes, upsample=hs.sampled_from([None, "exact", "t4s"]),
       resolution=hs.sampled_from([1, 8, 64, 1024]), box_format=hs.sampled_from(list(st.BOX_FORMATS)))
def test_decode_answer_never_raises(text, image_size, fmt, mode, grid_size, upsample, resolution, box_format):
    H, W = image_size
    with bounded("decode_answer"):
        a = evaluation.decode_answer(text, image_size, format=fmt, mode=mode, grid_size=grid_size, upsample=upsample,
                                     resolution=resolution, box_format=box_format)
        m = a.mask()
        s = a.score({"size": [H, W], "counts": [H * W]})
    assert a.status in ("rejected", "no_mask", "repaired", "clean")
    assert m.shape == (H, W) and m.dtype == bool
    assert s.intersection == 0 and 0.0 <= s.iou <= 1.0


BAD_ARGS = [
    (st.decode_rrle, {"grid_size": (0, 4)}), (st.decode_rrle, {"grid_size": (2**31, 2**31)}),
    (st.decode_rrle, {"grid_size": (MAX_GRID_CELLS + 1, 1)}), (st.decode_rrle, {"mode": "lenient"}),
    (st.decode_rrle, {"labels": []}), (st.decode_rrle, {"labels": "others"}),
    (lambda t, **k: st.decode_bsd(t, (4, 4), **k), {"resolution": 0}),
    (lambda t, **k: st.decode_bsd(t, (4, 4), **k), {"resolution": 2**40}),
    (lambda t, **k: st.decode_bsd(t, (4, 4), **k), {"resolution": st.limits.MAX_RESOLUTION + 1}),
    (lambda t, **k: st.decode_bsd(t, (4, 4), **k), {"max_run": 0}),
    (lambda t, **k: st.decode_bsd(t, (4, 4), **k), {"box_format": "yolo"}),
    (lambda t, **k: st.decode_bsd(t, **k), {"image_size": (2**16 + 1, 1)}),
    (lambda t, **k: st.decode_bsd(t, **k), {"image_size": (2**15 + 1, 2**15)}),
    (lambda t, **k: st.decode_bsd(t, **k), {"image_size": (0, 4)}),
    (lambda t, **k: evaluation.decode_answer(t, **k), {"image_size": (2**16, 2**16)}),
    (lambda t, **k: evaluation.decode_answer(t, (4, 4), **k), {"resolution": 2**40}),
]


@pytest.mark.parametrize("fn, kw", BAD_ARGS, ids=[f"{i}-{k}={v}" for i, (_, kw) in enumerate(BAD_ARGS) for k, v in kw.items()])
@pytest.mark.parametrize("text", ["", "<seg>others *2\n</seg>", "<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_1></seg>"],
                         ids=["empty", "rrle", "bsd"])
def test_bad_arguments_raise_value_or_type_error_whatever_the_text(fn, kw, text):
    """A bad non-text argument is rejected up front, for every text alike (not only for texts
    that happen to reach the code that uses it)."""
    with pytest.raises((ValueError, TypeError)):
        with bounded("bad argument"):
            fn(text, **kw)


@pytest.mark.parametrize("text, call", [
    ("<seg>" * 100_000, lambda t: st.decode_bsd(t, (8, 8), resolution=8)),
    ("<ref>a</ref><box>[0,0,1000,1000]</box><seg>" * 10_000, lambda t: st.decode_bsd(t, (8, 8), resolution=8)),
    ("<ref>a</ref><box>[0,0,1,1]</box><seg></seg>" * 600, lambda t: st.decode_bsd(t, (8, 8), resolution=1024)),
    ("x" * 300_000 + "\n", lambda t: st.decode_rrle(t)),
    ("others *1| dog\n" * 20_000, lambda t: st.decode_rrle(t)),
    ("others *1\n" * 40_000, lambda t: st.decode_rrle(t, grid_size=(4, 4))),
    ("others *1| dog *1\n" * 50_000, lambda t: st.decode_rrle(t, mode="t4s")),
    ("\n" * 200_000, lambda t: st.decode_rrle(t, grid_size=(2048, 2048))),
    ("others *4194304\n", lambda t: evaluation.decode_answer(t, (4096, 4096)).score(
        {"size": [4096, 4096], "counts": [4096 * 4096]})),
], ids=["bsd-stray-seg", "bsd-unclosed", "bsd-600-objects-S1024", "rrle-one-long-label", "rrle-missing-counts",
        "rrle-extra-rows", "t4s-many-rows", "rrle-blank-lines", "answer-4M-cells"])
def test_big_adversarial_texts_bounded(text, call):
    """Texts of up to a million characters built to cost the most per character (a repair, a
    block or a row per few characters): a linear decoder reads each in well under a second, so
    the time bound catches a quadratic one; 600 empty objects at resolution 1024 must not cost
    600 MiB of bricks."""
    with bounded(repr(text[:24])):
        call(text)


# --------------------------------------------------------------------------- RLE readers

GRIDS = hs.sampled_from([(1, 1), (2, 3), (4, 4), (16, 16)])
POLICY = hs.sampled_from(["majority", "nearest", "any"])


@EXAMPLES
@given(rle=rles(), grid=GRIDS, policy=POLICY)
@example(rle={"size": [1, 2], "counts": [2**63 - 1, 2**63 - 1, 4]}, grid=(1, 1), policy="majority")
@example(rle={"size": [1, 2], "counts": coco_string([2**63 - 1, 2**63 - 1, 4])}, grid=(1, 1), policy="any")
@example(rle={"size": [2**16, 2**16], "counts": coco_string([2**32])}, grid=(16, 16), policy="majority")
def test_rle_grids(rle, grid, policy):
    g = reads(st.rle_to_grid, rle, grid_size=grid, policy=policy)
    if not isinstance(g, Exception):
        assert g.shape == grid and g.dtype.kind in "iu" and np.isin(g, (0, 1)).all()
    gs = reads(st.rles_to_grids, [rle, rle], grid_size=grid, policy=policy)
    if not isinstance(gs, Exception):
        assert gs.shape == (2, *grid) and np.isin(gs, (0, 1)).all()
    assert isinstance(g, Exception) == isinstance(gs, Exception), (g, gs)
    t = reads(st.rle_to_text, rle, "dog", grid_size=grid, policy=policy)
    if not isinstance(t, Exception):
        assert st.decode_rrle(t, grid_size=grid, mode="strict").grid.tolist() == g.tolist()


@EXAMPLES
@given(rle=rles())
@example(rle={"size": [1, 2], "counts": [2**63 - 1, 2**63 - 1, 4]})
@example(rle={"size": [2, 2], "counts": coco_string([2**62, -(2**62) + 4])})
def test_rle_runs_metrics_and_boxes(rle):
    r = reads(st.coco.rle_runs, rle)
    ok = not isinstance(r, Exception)
    if ok:
        counts, (H, W) = r
        assert counts.ndim == 1 and (counts >= 0).all() and int(counts.sum()) == H * W
    for other in [rle] + ([{"size": [H, W], "counts": [H * W]}] if ok else []):
        s = reads(st.metrics.mask_iou, rle, other)
        assert isinstance(s, Exception) != ok, (s, r)
        if ok:
            check_score(s, (H, W))
    s = reads(st.metrics.grid_iou, np.eye(2, dtype=np.int32), rle)
    if not isinstance(s, Exception):
        assert ok, f"grid_iou read an RLE that rle_runs rejects: {r!r}"
        check_score(s, (H, W))
    box = reads(st.box_from_mask, rle)
    if not isinstance(box, Exception):
        assert ok and counts[1::2].sum() > 0, f"a box {box} of an unreadable or empty RLE"
        assert 0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H, box
    if isinstance(rle, dict) and isinstance(rle.get("counts"), (str, bytes)):
        c = reads(st.coco.decode_counts, rle["counts"])
        if not isinstance(c, Exception):
            assert c.ndim == 1 and c.dtype == np.int64 and (c >= 0).all()
    if ok and H * W <= 1 << 20:
        m = reads(evaluation.rle_to_mask, rle)
        assert m.shape == (H, W) and int(m.sum()) == int(counts[1::2].sum())


@EXAMPLES
@given(counts=hs.one_of(hs.text(max_size=60), hs.binary(max_size=60), hs.lists(big_ints(), max_size=6).map(coco_string)))
@example(counts="o" * 30 + "0")
def test_decode_counts(counts):
    c = reads(st.coco.decode_counts, counts)
    if not isinstance(c, Exception):
        assert c.ndim == 1 and c.dtype == np.int64 and (c >= 0).all()


# --------------------------------------------------------------------------- dense masks, encode_bsd


@EXAMPLES
@given(m=masks())
@example(m=np.asfortranarray(np.zeros((3, 4), bool)))
@example(m=np.asfortranarray(np.zeros((4, 11), np.int8)))
def test_box_from_mask(m):
    box = reads(st.box_from_mask, m)
    if (m != 0).any():
        assert box == tight_box(m), (box, tight_box(m))
    else:
        assert isinstance(box, ValueError), f"an empty mask has no box, got {box!r}"


@EXAMPLES
@given(objects=hs.lists(hs.tuples(hs.sampled_from(["cat", "white horse", "狗", "", "a<ref>b", "x</seg>", 5]),
                                  hs.one_of(masks(12), masks(12).map(lambda m: {"size": list(m.shape),
                                                                                    "counts": _runs(m)}))),
                        max_size=3),
       S=hs.sampled_from([1, 2, 8, 64]), policy=hs.sampled_from(["majority", "nearest", "any"]),
       box_format=hs.sampled_from(list(st.BOX_FORMATS)), skip_empty=hs.booleans(), max_run=hs.sampled_from([63, 1, 3]))
def test_encode_bsd_round_trip(objects, S, policy, box_format, skip_empty, max_run):
    sizes = {(tuple(m["size"]) if isinstance(m, dict) else m.shape) for _, m in objects} or {(4, 4)}
    size = max(sizes)
    text = reads(st.encode_bsd, objects, size, resolution=S, policy=policy, box_format=box_format,
                 skip_empty=skip_empty, max_run=max_run)
    if isinstance(text, Exception):
        return
    res = st.decode_bsd(text, size, resolution=S, mode="strict", box_format=box_format, max_run=max_run)
    kept = [label for label, m in objects if _foreground(m)]
    assert [o.label for o in res.objects] == kept


def _runs(m):
    flat = (np.asarray(m) != 0).T.ravel()
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat.astype(np.int8))) + 1, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0] + runs if flat[0] else runs


def _foreground(m):
    if isinstance(m, dict):
        return sum(m["counts"][1::2]) > 0
    return bool((np.asarray(m) != 0).any())


@EXAMPLES
@given(a=masks(8), b=masks(8))
def test_mask_iou_dense(a, b):
    s = reads(st.metrics.mask_iou, a, b)
    if a.shape != b.shape:
        assert isinstance(s, ValueError)
        return
    pa, pb = a != 0, b != 0
    assert (s.intersection, s.union, s.pred_area, s.gt_area) == (
        int((pa & pb).sum()), int((pa | pb).sum()), int(pa.sum()), int(pb.sum()))


# --------------------------------------------------------------------------- the eval command

json_values = hs.recursive(hs.one_of(hs.none(), hs.booleans(), big_ints(), hs.floats(), hs.text(max_size=8)),
                           lambda v: hs.lists(v, max_size=3) | hs.dictionaries(hs.text(max_size=6), v, max_size=3),
                           max_leaves=8)
pred_lines = hs.one_of(
    hs.builds(lambda i, a: json.dumps({"id": i, "answer": a}), hs.integers(0, 4), texts),
    hs.builds(lambda v: json.dumps(v), json_values),
    hs.text(max_size=30),
)
gt_lines = hs.one_of(
    hs.builds(lambda i, rle, size: json.dumps({"id": i, "segmentation": rle, "image_size": size}),
              hs.integers(0, 4), rles().filter(lambda r: not isinstance(r, dict) or not isinstance(r.get("counts"), (np.ndarray, bytes))),
              hs.sampled_from([[4, 4], [8, 8], [2**62, 2], [0, 4], None, "4x4", [math.inf, 4], [4.5, 4]])),
    hs.builds(lambda i, p: json.dumps({"id": i, "segmentation": p, "image_size": [8, 8]}), hs.integers(0, 4),
              hs.lists(hs.lists(hs.floats(), max_size=8), max_size=2)),
    hs.builds(lambda v: json.dumps(v), json_values),
)


@settings(max_examples=max(10, settings.default.max_examples // 4), suppress_health_check=list(HealthCheck))
@given(preds=hs.lists(pred_lines, max_size=5), gts=hs.lists(gt_lines, max_size=5), mode=hs.sampled_from(MODES),
       on_bad_line=hs.sampled_from(["skip", "fail"]), grid=hs.sampled_from([None, "4", "2x3", "65536x65536"]),
       resolution=hs.sampled_from(["64", "8", "2000"]))
@example(preds=['{"id": 0, "answer": "<seg>others *16\\n</seg>"}'], gts=['{"id": 0, "segmentation": null, "image_size": [Infinity, 4]}'],
         mode="repair", on_bad_line="skip", grid=None, resolution="64")
@example(preds=['{"id": 0, "answer": "<seg>others *16\\n</seg>"}'], gts=['{"id": 0, "segmentation": null, "image_size": [4, 4]}'],
         mode="repair", on_bad_line="skip", grid="65536x65536", resolution="64")
@example(preds=['{"id": 0, "answer": "<seg>others *16\\n</seg>"}'], gts=['{"id": 0, "segmentation": null, "image_size": [4, 4]}'],
         mode="repair", on_bad_line="skip", grid=None, resolution="2000")
def test_eval_cli_any_files(tmp_path_factory, preds, gts, mode, on_bad_line, grid, resolution):
    """Exit status 0, or 2 with a message (a usage or input error); never a traceback."""
    d = tmp_path_factory.mktemp("eval")
    (d / "p.jsonl").write_text("\n".join(preds) + "\n", encoding="utf-8")
    (d / "g.jsonl").write_text("\n".join(gts) + "\n", encoding="utf-8")
    argv = ["eval", str(d / "p.jsonl"), str(d / "g.jsonl"), "--no-progress", "--mode", mode, "--on-bad-line",
            on_bad_line, "--json", str(d / "s.json"), "--resolution", resolution] + (["--grid-size", grid] if grid else [])
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        with bounded("segtext eval"):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse: a usage error
                rc = e.code
    assert rc in (0, 2), rc
    if rc == 0:
        m = json.loads((d / "s.json").read_text())["metrics"]
        assert all(0.0 <= m[k] <= 1.0 for k in ("ciou", "giou", "acc50")), m


# --------------------------------------------------------------------------- polygons (last: pycocotools may crash the process)

coords = hs.one_of(hs.integers(-3, 40), hs.floats(allow_nan=True, allow_infinity=True),
                   hs.sampled_from([1e300, -1e300, 1.7976931348623157e308, 2.0**63, math.inf, math.nan, 10**400, 2**64]))


@EXAMPLES
@given(polys=hs.lists(hs.lists(coords, max_size=14), max_size=3),
       image_size=hs.one_of(image_sizes, hs.sampled_from([(32768, 64), (2**16, 2**16), (0, 4), (-1, 4)])))
@example(polys=[[13.5, 1.7976931348623157e308, 1.0, 1.7976931348623157e308, 1.7976931348623157e308, -6.4e293]],
         image_size=(32768, 64))
@example(polys=[[0.0, 1.6e308, 3.9e307, -1.4e307, -2.5, -2.5]], image_size=(1, 1))
@example(polys=[[0, 0, 10**400, 0, 5, 5]], image_size=(8, 8))
@example(polys=[[0, 0, 1, 0, 1, 1]] * 2, image_size=(32768, 32768))  # pycocotools' merge mallocs 4*H*W bytes
def test_polygons(polys, image_size):
    rle = reads(st.coco.to_rle, polys, image_size)
    if not isinstance(rle, Exception):
        H, W = image_size
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        counts, size = st.coco.rle_runs(rle)
        assert size == (H, W) and int(counts.sum()) == H * W
