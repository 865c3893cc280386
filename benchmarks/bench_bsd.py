"""segtext B-SD benchmark: fidelity of box + bricks against image grids, and speed against plain Python.

    python benchmarks/bench_bsd.py [--repeats 5] [--warm-cache] [--time-resolutions 32,48,64,80]

Works on the masks bundled with the package (st.coco.sample_annotations(): 734 COCO val2014 instance
masks as compressed RLE with their image size) and prints:

  1. The fidelity table. Every mask goes mask -> text -> mask and is compared with the original at
     full size:
       I-SD at 16, 24, 32 cells a side (policy majority): st.rle_to_text (R-RLE), read back with
            st.decode_rrle(...).to_mask((H, W));
       B-SD at 32, 48, 64, 80 bricks a side (policy majority): st.encode_bsd([(label, rle)], (H, W),
            resolution=S), read back with st.decode_bsd(...).mask().
     For each: cIoU = sum(I) / sum(U) over masks, gIoU = mean(I / (U + 1e-5)) with empty/empty
     scoring 1, the mean number of runs (R-RLE, counted as " *" separators) or bricks (<fg_k>/<bg_k>
     tokens) per mask, and the mean length of the text in characters. The I-SD text is counted with
     the "<seg>" and "</seg>" around it, as it stands in a model's answer; the B-SD block already holds
     its <ref>, <box> and <seg> tags. Figures quoted in issue 3 for this data (B-SD 64: gIoU ~0.988,
     ~142 bricks; I-SD 16 majority: gIoU ~0.31) are printed beside ours.

  2. Speed, per mask, of segtext against a plain Python/numpy/Pillow reference written out below
     (it uses nothing from segtext):
       encode: pycocotools.mask.decode -> numpy tight box -> quantise to 0..1000 and map back to the
               pixel crop -> majority vote per cell with numpy (np.add.reduceat over the pixels each
               cell holds, or the single pixel holding the cell centre when the crop is smaller than
               S on that axis) -> a Python run-length loop over the S*S cells writing <fg_k>/<bg_k>.
       decode: a regular expression over blocks and bricks -> Python list expansion of the runs ->
               S x S grid -> PIL.Image.resize((box_w, box_h), NEAREST) -> paste into a numpy canvas.
     Before timing, it checks that the reference texts are byte-identical to segtext's, that segtext
     decodes to exactly what the exact cell geometry predicts (a second reference decoder that expands
     with numpy indices instead of Pillow), and how many pixels Pillow's NEAREST gets differently at
     ties. The first call of each segtext function (numba compilation) is timed on its own, with
     numba's cache pointed at an empty directory unless --warm-cache is given. The decode row times
     st.decode_bsd(text, (H, W), resolution=S).mask(), what a user calls; in repair mode decode_bsd
     defers reading the text, and .mask() paints a clean text in one compiled call.

Timings are best-of-N wall times (time.perf_counter) over all 734 masks, divided by 734. They are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
import time
from common import best_of, load_sample, print_header, timed, use_cold_cache  # benchmarks/common.py

BSD_SIDES = (32, 48, 64, 80)
ISD_SIDES = (16, 24, 32)
SCALE = 1000  # box coordinates on the 0..1000 scale (the "norm1000" preset)
MAX_RUN = 63
SPEED_TARGET = 20.0  # encode (the B-SD issue)
DECODE_TARGET = 18.0  # decode to the full (H, W) mask (issue 9)

# Figures quoted in issue 3, "measured on this data with a simple script": (gIoU, runs or bricks per mask).
ISSUE_FIGURES = {("B-SD", 64): (0.988, 142.0), ("I-SD", 16): (0.31, None)}


# ----------------------------------------------------------------------------- reference (plain Python)
# Written from the format description (docs/formats.md, B-SD), not from segtext's code.


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def ref_tight_box(m, np):
    """(x1, y1, x2, y2) of the foreground, x2 and y2 exclusive."""
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def ref_quantize(box, H, W):
    x1, y1, x2, y2 = box
    return x1 * SCALE // W, y1 * SCALE // H, ceil_div(x2 * SCALE, W), ceil_div(y2 * SCALE, H)


def ref_dequantize(qbox, H, W):
    qx1, qy1, qx2, qy2 = qbox
    x1, y1 = qx1 * W // SCALE, qy1 * H // SCALE
    x2, y2 = ceil_div(qx2 * W, SCALE), ceil_div(qy2 * H, SCALE)
    return (min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H))


def ref_reduce_axis(a, S: int, axis: int, np):
    """Sum the pixels of each cell along one axis (crop >= S), or pick the centre pixel (crop < S).

    Returns the reduced array and the number of pixels each cell holds along this axis.
    """
    n = a.shape[axis]
    if n >= S:
        cell_of_pixel = (2 * np.arange(n) + 1) * S // (2 * n)  # the cell holding the pixel's centre
        starts = np.searchsorted(cell_of_pixel, np.arange(S))
        sizes = np.diff(np.append(starts, n))
        return np.add.reduceat(a, starts, axis=axis), sizes
    picks = (2 * np.arange(S) + 1) * n // (2 * S)  # the pixel holding the cell's centre
    return np.take(a, picks, axis=axis), np.ones(S, dtype=np.int64)


def ref_majority(crop, S: int, np):
    """S x S cells, foreground where at least half of the cell's voters are foreground."""
    a = crop.astype(np.int64)
    a, rows = ref_reduce_axis(a, S, 0, np)
    a, cols = ref_reduce_axis(a, S, 1, np)
    return 2 * a >= rows[:, None] * cols[None, :]  # threshold 0.5, in integers


def ref_bricks(cells: list) -> str:
    """Raster-order run-length coding, runs capped at MAX_RUN (longer ones split in order)."""
    out = []

    def emit(value, count):
        kind = "fg" if value else "bg"
        while count > MAX_RUN:
            out.append(f"<{kind}_{MAX_RUN}>")
            count -= MAX_RUN
        out.append(f"<{kind}_{count}>")

    prev = cells[0]
    count = 1
    for v in cells[1:]:
        if v == prev:
            count += 1
        else:
            emit(prev, count)
            prev = v
            count = 1
    emit(prev, count)
    return "".join(out)


def ref_encode_mask(m, label: str, S: int, np) -> str:
    H, W = m.shape
    qbox = ref_quantize(ref_tight_box(m, np), H, W)
    x1, y1, x2, y2 = ref_dequantize(qbox, H, W)
    cells = ref_majority(m[y1:y2, x1:x2], S, np)
    return (f"<ref>{label}</ref><box>[{qbox[0]},{qbox[1]},{qbox[2]},{qbox[3]}]</box>"
            f"<seg>{ref_bricks(cells.ravel().tolist())}</seg>")


def ref_encode(rle: dict, label: str, S: int, np, mask_util) -> str:
    return ref_encode_mask(mask_util.decode(rle), label, S, np)


BLOCK_RE = re.compile(r"<ref>(.*?)</ref><box>\[(\d+),(\d+),(\d+),(\d+)\]</box><seg>(.*?)</seg>", re.DOTALL)
BRICK_RE = re.compile(r"<(fg|bg)_(\d+)>")


def ref_decode(text: str, image_size, S: int, np, Image, exact: bool = False):
    """Well-formed text only. exact=False: Pillow NEAREST; exact=True: the cell holding each pixel's centre."""
    H, W = image_size
    canvas = np.zeros((H, W), dtype=bool)
    for _label, a, b, c, d, seg in BLOCK_RE.findall(text):
        x1, y1, x2, y2 = ref_dequantize((int(a), int(b), int(c), int(d)), H, W)
        cells = []
        for kind, k in BRICK_RE.findall(seg):
            cells.extend([kind == "fg"] * int(k))
        grid = np.array(cells, dtype=np.uint8).reshape(S, S)
        bh, bw = y2 - y1, x2 - x1
        if exact:
            rows = (2 * np.arange(bh) + 1) * S // (2 * bh)
            cols = (2 * np.arange(bw) + 1) * S // (2 * bw)
            patch = grid[np.ix_(rows, cols)]
        else:
            patch = np.asarray(Image.fromarray(grid).resize((bw, bh), Image.NEAREST))
        canvas[y1:y2, x1:x2] |= patch.astype(bool)
    return canvas


# ----------------------------------------------------------------------------- helpers


def count_bricks(text: str) -> int:
    return text.count("<fg_") + text.count("<bg_")


FIRST_CALL_PROBE = textwrap.dedent(
    """
    import time
    t0 = time.perf_counter(); import segtext as st; t_import = time.perf_counter() - t0
    rle = st.coco.sample_annotations()[0]["segmentation"]; size = tuple(rle["size"])
    t0 = time.perf_counter(); s = st.encode_bsd([("dog", rle)], size, resolution=64); t1 = time.perf_counter() - t0
    t0 = time.perf_counter(); st.decode_bsd(s, size, resolution=64).mask(); t2 = time.perf_counter() - t0
    print(t_import, t1, t2)
    """
)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="best-of-N repeats for each timing (default 5)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use numba's normal on-disk cache (first calls may then load instead of compile)")
    ap.add_argument("--time-resolutions", default="32,48,64,80",
                    help="B-SD resolutions to time, comma-separated (default 32,48,64,80)")
    ap.add_argument("--no-timing", action="store_true", help="only the fidelity table and the agreement checks")
    args = ap.parse_args(argv)
    time_sides = tuple(int(v) for v in args.time_resolutions.split(",") if v.strip())

    cache_dir = use_cold_cache(args.warm_cache)  # before numba is imported

    t0 = time.perf_counter()
    import numba
    import numpy as np
    import pycocotools.mask as mask_util
    from PIL import Image

    import segtext as st
    t_import = time.perf_counter() - t0

    rles, labels, sizes = load_sample(st)
    n = len(rles)

    print_header("segtext B-SD benchmark")
    print(f"  data      {n} COCO val2014 instance masks (bundled sample), policy majority, boxes norm1000, "
          f"runs <= {MAX_RUN}, best of {args.repeats} runs")
    print()

    # --- first calls (compile), timed separately ---------------------------------------------
    print("First call (kept out of the per-mask figures)")
    print(f"  import numpy, numba, pillow, pycocotools, segtext   {t_import * 1e3:9.1f} ms")
    text0, t_a = timed(lambda: st.encode_bsd([(labels[0], rles[0])], sizes[0], resolution=64))
    res0, t_b = timed(lambda: st.decode_bsd(text0, sizes[0], resolution=64))
    _, t_c = timed(lambda: res0.mask())
    m0 = mask_util.decode(rles[0]).astype(bool)
    _, t_d = timed(lambda: st.encode_bsd([(labels[0], m0)], sizes[0], resolution=64))
    mode = "compile, empty numba cache" if cache_dir else "normal numba cache"
    print(f"  st.encode_bsd (COCO RLE)       {t_a * 1e3:9.1f} ms   ({mode})")
    print(f"  st.decode_bsd                  {t_b * 1e3:9.1f} ms")
    print(f"  result.mask()                  {t_c * 1e3:9.1f} ms")
    print(f"  st.encode_bsd (bool array)     {t_d * 1e3:9.1f} ms")
    print(f"  total first-call cost          {(t_a + t_b + t_c + t_d) * 1e3:9.1f} ms")
    if cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        probe = subprocess.run([sys.executable, "-c", FIRST_CALL_PROBE], env=env, capture_output=True, text=True,
                               check=False)
        if probe.returncode == 0:
            ti, p1, p2 = (float(v) for v in probe.stdout.split())
            print(f"  a new process, same cache: import segtext {ti * 1e3:.1f} ms, first calls "
                  f"{(p1 + p2) * 1e3:.1f} ms (encode_bsd {p1 * 1e3:.1f}, decode_bsd + mask {p2 * 1e3:.1f})")
        else:
            print(f"  (cache probe failed: {probe.stderr.strip().splitlines()[-1:]})")
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        layer = "none used"
    print(f"  numba threads: {numba.get_num_threads()} (threading layer: {layer})")
    print()

    # --- agreement with the reference ----------------------------------------------------------
    masks = [mask_util.decode(r) for r in rles]  # uint8 (H, W), for the reference and the IoUs
    st_texts = {S: [st.encode_bsd([(lab, r)], sz, resolution=S) for r, lab, sz in zip(rles, labels, sizes)]
                for S in BSD_SIDES}
    print("Agreement with the reference (all 734 masks at each resolution)")
    print(f"  {'S':>3} {'texts equal':>12} {'from array':>11} {'boxes':>8} {'bricks':>8} "
          f"{'exact decode':>13} {'PIL NEAREST decode: masks, pixels':>35}")
    for S in BSD_SIDES:
        ref_texts = [ref_encode_mask(m, lab, S, np) for m, lab in zip(masks, labels)]
        same_text = sum(a == b for a, b in zip(ref_texts, st_texts[S]))
        same_arr = sum(st.encode_bsd([(lab, m.astype(bool))], m.shape, resolution=S) == t
                       for m, lab, t in zip(masks, labels, ref_texts))
        same_box = same_bricks = same_exact = same_pil = 0
        pix_agree = pix_total = 0
        for text, m, sz in zip(ref_texts, masks, sizes):
            res = st.decode_bsd(text, sz, resolution=S)
            mine = res.mask()
            blk = BLOCK_RE.search(text)
            q = tuple(int(v) for v in blk.groups()[1:5])
            box = ref_dequantize(q, *sz)
            if len(res.objects) == 1:
                obj = res.objects[0]
                same_box += tuple(int(v) for v in obj.box) == box
                cells = []
                for kind, k in BRICK_RE.findall(blk.group(6)):
                    cells.extend([kind == "fg"] * int(k))
                same_bricks += bool(np.array_equal(np.asarray(obj.bricks, dtype=bool),
                                                   np.array(cells, dtype=bool).reshape(S, S)))
            exact = ref_decode(text, sz, S, np, Image, exact=True)
            pil = ref_decode(text, sz, S, np, Image, exact=False)
            same_exact += bool(np.array_equal(mine, exact))
            same_pil += bool(np.array_equal(mine, pil))
            pix_agree += int(np.count_nonzero(mine == pil))
            pix_total += mine.size
        print(f"  {S:3d} {f'{same_text}/{n}':>12} {f'{same_arr}/{n}':>11} {f'{same_box}/{n}':>8} "
              f"{f'{same_bricks}/{n}':>8} {f'{same_exact}/{n}':>13} "
              f"{f'{same_pil}/{n}':>14}, {pix_agree / pix_total * 100:.5f}%")
    print("  texts equal: segtext's text from the COCO RLE == the reference's, byte for byte; from array: the")
    print("  same from the decoded bool mask; boxes / bricks: res.objects[0].box and .bricks == the reference's")
    print("  dequantised box and expanded runs; exact decode: res.mask() == the cell-centre expansion; PIL:")
    print("  masks identical to Pillow-NEAREST expansion, and the share of all pixels that agree")
    print()

    # --- oracle fidelity -----------------------------------------------------------------------
    def ious(backs):
        inter = np.array([np.count_nonzero(m.astype(bool) & b) for m, b in zip(masks, backs)], dtype=np.float64)
        union = np.array([np.count_nonzero(m.astype(bool) | b) for m, b in zip(masks, backs)], dtype=np.float64)
        per = np.where(union == 0, 1.0, inter / (union + 1e-5))  # empty prediction and empty mask: 1
        return inter.sum() / union.sum(), per.mean(), per

    rows = []
    for s in ISD_SIDES:
        texts = [st.rle_to_text(r, lab, grid_size=(s, s), policy="majority") for r, lab in zip(rles, labels)]
        backs = [st.decode_rrle(t, ["others", lab], (s, s)).to_mask(sz).astype(bool)
                 for t, lab, sz in zip(texts, labels, sizes)]
        ciou, giou, per = ious(backs)
        runs = np.mean([t.count(" *") for t in texts])
        chars = np.mean([len("<seg>" + t + "</seg>") for t in texts])
        empty = sum(not b.any() for b in backs)
        rows.append(("I-SD", s, ciou, giou, runs, chars, empty, per))
    for S in BSD_SIDES:
        texts = st_texts[S]
        backs = [st.decode_bsd(t, sz, resolution=S).mask() for t, sz in zip(texts, sizes)]
        ciou, giou, per = ious(backs)
        bricks = np.mean([count_bricks(t) for t in texts])
        chars = np.mean([len(t) for t in texts])
        empty = sum(not b.any() for b in backs)
        rows.append(("B-SD", S, ciou, giou, bricks, chars, empty, per))

    print(f"Oracle fidelity: mask -> text -> mask against the original, {n} masks, policy majority")
    print(f"  {'format':6} {'side':>6} {'cIoU':>8} {'gIoU':>8} {'runs/bricks':>12} {'chars':>8} "
          f"{'empty back':>11}   issue 3 (gIoU, bricks)")
    for fmt, s, ciou, giou, count, chars, empty, _ in rows:
        line = (f"  {fmt:6} {f'{s}x{s}':>6} {ciou * 100:7.2f}% {giou * 100:7.2f}% {count:12.1f} {chars:8.1f} "
                f"{empty:11d}")
        ref = ISSUE_FIGURES.get((fmt, s))
        if ref is not None:
            g, b = ref
            line += f"   {g * 100:.1f}%" + (f", {b:.0f}" if b is not None else "")
        print(line)
    rw = [st.encode_bsd([(lab, r)], sz, resolution=64, row_wise=True) for r, lab, sz in zip(rles, labels, sizes)]
    rw_same = sum(np.array_equal(st.decode_bsd(t, sz, resolution=64, row_wise=True).mask(), b)
                  for t, sz, b in zip(rw, sizes, (st.decode_bsd(t, sz, resolution=64).mask()
                                                  for t, sz in zip(st_texts[64], sizes))))
    print(f"  B-SD 64x64 row_wise=True: {np.mean([count_bricks(t) for t in rw]):.1f} bricks, "
          f"{np.mean([len(t) for t in rw]):.1f} chars per mask (same masks back as raster order: {rw_same}/{n})")
    print("  runs/bricks: R-RLE runs (I-SD) or <fg_k>/<bg_k> tokens (B-SD) per mask; chars: text length, I-SD")
    print("  with <seg>...</seg> around it; empty back: masks that decode to no foreground at all")

    # Where B-SD loses: small crops (both sides < S) come back exactly; larger ones are resampled.
    side_lt = np.array([0] * n)
    for i, m in enumerate(masks):
        x1, y1, x2, y2 = ref_dequantize(ref_quantize(ref_tight_box(m, np), *m.shape), *m.shape)
        side_lt[i] = max(x2 - x1, y2 - y1)
    for fmt, s, _c, giou, *_rest, per in rows:
        if fmt != "B-SD":
            continue
        small = side_lt <= s
        print(f"  B-SD {s}: crop fits in {s}x{s} (copied exactly) for {small.sum()} masks, gIoU there "
              f"{per[small].mean() * 100:.2f}%; the other {(~small).sum()} masks (resampled) "
              f"gIoU {per[~small].mean() * 100:.2f}%, worst {per.min() * 100:.1f}%")
    print()

    # --- timings -------------------------------------------------------------------------------
    if not args.no_timing:
        R = args.repeats

        def per_mask(fn) -> float:
            """Best-of-R wall time of fn() over all masks, in microseconds per mask."""
            return best_of(fn, R) * 1e6 / n

        bool_masks = [m.view(bool) for m in masks]  # Fortran-ordered, as pycocotools returns them
        by_image: dict = {}
        for a, r, lab, sz in zip(st.coco.sample_annotations(), rles, labels, sizes):
            by_image.setdefault(a["image_id"], (sz, []))[1].append((lab, r))
        groups = list(by_image.values())
        grouped = [st.encode_bsd(objs, sz, resolution=64) for sz, objs in groups]
        joined = ["".join(st.encode_bsd([o], sz, resolution=64) for o in objs) for sz, objs in groups]
        print(f"One call per image (several objects): texts equal to the per-mask blocks joined, "
              f"{sum(a == b for a, b in zip(grouped, joined))}/{len(groups)} images")
        print()

        def each(fn, *columns):
            """Call fn on every mask in turn, dropping each result (as a data loader would)."""
            def run():
                for args_ in zip(*columns):
                    fn(*args_)
            return run

        table = []
        t_floor = per_mask(each(lambda sz: np.zeros(sz, np.uint8), sizes))  # the same canvases at every S
        for S in time_sides:
            texts = [st.encode_bsd([(lab, r)], sz, resolution=S) for r, lab, sz in zip(rles, labels, sizes)]
            t_ref_enc = per_mask(each(lambda r, lab, S=S: ref_encode(r, lab, S, np, mask_util), rles, labels))
            t_st_enc = per_mask(each(lambda r, lab, sz, S=S: st.encode_bsd([(lab, r)], sz, resolution=S),
                                     rles, labels, sizes))
            t_ref_dec = per_mask(each(lambda t, sz, S=S: ref_decode(t, sz, S, np, Image), texts, sizes))
            t_st_dec = per_mask(each(lambda t, sz, S=S: st.decode_bsd(t, sz, resolution=S).mask(), texts, sizes))
            table.append((f"encode RLE -> B-SD text, S={S}", t_ref_enc, t_st_enc, SPEED_TARGET))
            table.append((f"decode B-SD text -> (H, W) mask, S={S}", t_ref_dec, t_st_dec, DECODE_TARGET))
            table.append((f"  ceiling at S={S}: reference / an empty canvas", t_ref_dec, t_floor, None))
            if S != 64:
                continue
            t_ref_arr = per_mask(each(lambda m, lab: ref_encode_mask(m, lab, 64, np), masks, labels))
            table.append(("  encode from the (H, W) bool mask, S=64", t_ref_arr,
                          per_mask(each(lambda m, lab: st.encode_bsd([(lab, m)], m.shape, resolution=64),
                                        bool_masks, labels)), None))
            c_masks = [np.ascontiguousarray(m) for m in bool_masks]
            table.append(("    same, C-ordered copies of the masks", t_ref_arr,
                          per_mask(each(lambda m, lab: st.encode_bsd([(lab, m)], m.shape, resolution=64),
                                        c_masks, labels)), None))
            del c_masks
            table.append((f"  encode one call per image ({len(groups)} images), S=64", t_ref_enc,
                          per_mask(each(lambda sz, objs: st.encode_bsd(objs, sz, resolution=64), *zip(*groups))),
                          None))
            table.append(("  of the reference encode: pycocotools decode",
                          per_mask(each(mask_util.decode, rles)), None, None))
            table.append(("  of segtext's decode: st.decode_bsd alone (*)", None,
                          per_mask(each(lambda t, sz: st.decode_bsd(t, sz, resolution=64), texts, sizes)), None))
            decoded = [st.decode_bsd(t, sz, resolution=64) for t, sz in zip(texts, sizes)]
            table.append(("  of segtext's decode: result.mask() alone (*)", None,
                          per_mask(each(lambda r: r.mask(), decoded)), None))
            del decoded
            table.append(("  an empty (H, W) canvas alone: np.zeros", None, t_floor, None))

        w = 46
        print(f"{'Per mask (microseconds)':{w}} {'reference':>10} {'segtext':>10} {'ratio':>9}")
        for title, ref, mine, target in table:
            if mine is None:
                print(f"{title:{w}} {ref:10.1f}")
                continue
            if ref is None:
                print(f"{title:{w}} {'':>10} {mine:10.1f}")
                continue
            ratio = ref / mine
            line = f"{title:{w}} {ref:10.1f} {mine:10.1f} {ratio:8.1f}x"
            if target is not None:
                line += f"   target >= {target:.0f}x: " + ("met" if ratio >= target else
                                                             f"NOT met (needs <= {ref / target:.1f} us)")
            print(line)

        print("  (*) in repair mode st.decode_bsd only checks its arguments and keeps the text; the text is")
        print("  read when the result is first asked for .objects or .repairs, or, clean, painted straight into")
        print("  the canvas by .mask() in one compiled call (so almost all of the decode is under mask())")

    if cache_dir:
        import shutil

        shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
