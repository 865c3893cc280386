"""segtext evaluation benchmark: raw R-RLE answers -> cIoU / gIoU / Acc@0.5 for 10,000 samples,
segtext's pipeline against a plain numpy/Pillow pipeline of the same steps, in the same run.

    python benchmarks/bench_eval.py [--samples 10000] [--repeats 3] [--shift 6]

Data: the 734 real COCO val2014 instance masks bundled with the package, repeated with shifted
copies until there are --samples ground truths: copy 0 is the mask itself, copy k >= 1 is the
mask moved by a seeded random (dy, dx) of at most --shift pixels each way (pixels pushed out of
the image are lost, the uncovered band is background), so the ground truths are distinct masks.
The answers are R-RLE texts of the ground truths (st.rles_to_texts, 16 x 16, policy nearest)
wrapped as a model writes them: "Sure, here is the mask: <seg>TEXT</seg>".

Both pipelines get the same in-memory inputs (a list of {"id", "answer"} dicts and a list of
{"id", "segmentation": COCO RLE} dicts) and produce cIoU, gIoU and Acc@0.5:

  reference (numpy / Pillow / pycocotools, written out plainly here, following Text4Seg's eval):
      answer.split("<seg>")[1].split("</seg>")[0]; Text4Seg's split decoder (rows on "\\n ", runs on
      "| ", split(" *"), expand); label -> 0/1 ("others" is 0); pad with the last value / truncate
      to 16*16; reshape; PIL.Image.resize((W, H), NEAREST); pycocotools.mask.decode of the ground
      truth; numpy intersection / union; tight boxes with numpy for Acc@0.5.
  segtext: segtext.evaluation.evaluate(predictions, ground_truth, grid_size=16): ground truth read
      and its RLE runs decoded in one compiled call; every answer decoded in repair mode
      (st.decode_rrle) and scored on the ground truth's runs (st.metrics grid_iou, no full-size
      mask); decode-health table and per-sample records kept. Also timed: the same from JSONL
      files on disk (JSON parsing included), and with Text4Seg's upsampling (upsample="t4s").

Agreement: segtext upsamples a grid with the cell geometry of FORMATS.md, Pillow's NEAREST breaks
some ties the other way, so per-sample figures can differ. The benchmark finds the samples whose
image size makes Pillow's upsampling index identical to segtext's on both axes and checks that
both pipelines give the same cIoU / gIoU / Acc@0.5 over those to 1e-9; over all samples it
reports the difference.

Timings are best-of-N wall times (time.perf_counter). A warm-up call on a few samples (numba
compilation or cache load) is timed on its own and kept out. Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from common import t4s_decode  # benchmarks/common.py

GRID = (16, 16)
LABEL = "the object"
TARGET = 10.0


# ----------------------------------------------------------------------------- reference pipeline
# Plain numpy / Pillow / pycocotools; nothing from segtext is used here.


def ref_evaluate(preds: list[dict], gts: list[dict], np, Image, mask_util) -> tuple[dict, list]:
    """cIoU, gIoU, Acc@0.5 and the per-sample (I, U, hit) of the reference pipeline."""
    by_id = {str(g["id"]): g["segmentation"] for g in gts}
    n_cells = GRID[0] * GRID[1]

    def box(m):
        rows = np.flatnonzero(m.any(1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(m.any(0))
        return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1

    def box_iou(a, b):
        if a is None or b is None:
            return 1.0 if a is None and b is None else 0.0
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    sum_i = sum_u = 0
    giou = 0.0
    hits = 0
    per = []
    for p in preds:
        rle = by_id[str(p["id"])]
        H, W = rle["size"]
        text = p["answer"]
        try:
            labels = t4s_decode(text.split("<seg>")[1].split("</seg>")[0])
            cells = [0 if s == "others" else 1 for s in labels]
            cells = (cells + [cells[-1]] * n_cells)[:n_cells]
        except (ValueError, IndexError):
            cells = [0] * n_cells
        grid = np.array(cells, np.uint8).reshape(GRID)
        pred = np.asarray(Image.fromarray(grid).resize((W, H), Image.NEAREST)).astype(bool)
        gt = mask_util.decode(rle).astype(bool)
        i = int(np.count_nonzero(pred & gt))
        u = int(np.count_nonzero(pred | gt))
        hit = box_iou(box(pred), box(gt)) > 0.5
        sum_i += i
        sum_u += u
        giou += 1.0 if u == 0 else i / (u + 1e-5)
        hits += hit
        per.append((i, u, hit))
    n = len(preds)
    return {"ciou": sum_i / (sum_u + 1e-10), "giou": giou / n, "acc50": hits / n}, per


# ----------------------------------------------------------------------------- data


def build_data(n_samples: int, shift: int, np, mask_util, st):
    """Ground truths (distinct shifted copies of the bundled masks) and R-RLE answers."""
    anns = st.coco.sample_annotations()
    base = [a["segmentation"] for a in anns]
    rng = np.random.default_rng(2026)
    gts = []
    for k in range(n_samples):
        rle = base[k % len(base)]
        copy = k // len(base)
        if copy == 0:
            seg = {"size": list(rle["size"]), "counts": rle["counts"]}
        else:
            m = mask_util.decode(rle)
            H, W = m.shape
            dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
            out = np.zeros_like(m)
            out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
                m[max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
            enc = mask_util.encode(np.asfortranarray(out))
            seg = {"size": [H, W], "counts": enc["counts"].decode("ascii")}
        gts.append({"id": k, "segmentation": seg})
    texts = st.rles_to_texts([g["segmentation"] for g in gts], LABEL, GRID, policy="nearest")
    preds = [{"id": g["id"], "answer": f"Sure, here is the mask: <seg>{t}</seg>"} for g, t in zip(gts, texts)]
    return preds, gts


def pillow_agrees(H: int, W: int, np, Image, st) -> bool:
    """Pillow's NEAREST upsampling of a 16 x 16 grid to (H, W) picks segtext's cell on both axes."""
    def axis(n, cells):
        ramp = np.arange(cells, dtype=np.int32)[None, :]
        up = np.asarray(Image.fromarray(ramp).resize((n, 1), Image.NEAREST))[0]
        return np.array_equal(up, st.cell_index(n, cells))

    return axis(H, GRID[0]) and axis(W, GRID[1])


# ----------------------------------------------------------------------------- main


def best_of(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10_000, help="number of samples (default 10000)")
    ap.add_argument("--repeats", type=int, default=3, help="best-of-N repeats for each timing (default 3)")
    ap.add_argument("--shift", type=int, default=6, help="largest shift of a copy, in pixels (default 6)")
    args = ap.parse_args(argv)

    import numpy as np
    import numba
    import PIL
    import pycocotools.mask as mask_util
    from PIL import Image

    import segtext as st
    from segtext.evaluation import evaluate

    t0 = time.perf_counter()
    preds, gts = build_data(args.samples, args.shift, np, mask_util, st)
    t_data = time.perf_counter() - t0
    n = len(preds)
    n_distinct = len({g["segmentation"]["counts"] for g in gts})

    print("segtext evaluation benchmark")
    print(f"  date      {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"  machine   {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, CPU only")
    print(f"  versions  python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"pillow {PIL.__version__}, segtext {getattr(st, '__version__', '?')}")
    print(f"  data      {n} samples: the 734 bundled COCO masks and shifted copies (|shift| <= {args.shift} px), "
          f"{n_distinct} distinct ground truths; answers are R-RLE {GRID[0]}x{GRID[1]} (policy nearest) in "
          f"<seg>...</seg>; built in {t_data:.1f} s")
    print(f"  timing    best of {args.repeats} runs")
    print()

    # warm-up: compile or load the kernels, kept out of the figures
    t0 = time.perf_counter()
    evaluate(preds[:8], gts[:8], grid_size=GRID)
    evaluate(preds[:8], gts[:8], grid_size=GRID, upsample="t4s")
    t_warm = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="segtext-bench-eval-") as tmp:
        p_path = os.path.join(tmp, "predictions.jsonl")
        g_path = os.path.join(tmp, "ground_truth.jsonl")
        with open(p_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in preds)
        with open(g_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(g) + "\n" for g in gts)

        t_ref, (ref, ref_per) = best_of(lambda: ref_evaluate(preds, gts, np, Image, mask_util), args.repeats)
        t_st, res = best_of(lambda: evaluate(preds, gts, grid_size=GRID), args.repeats)
        t_files, res_files = best_of(lambda: evaluate(p_path, g_path, grid_size=GRID), args.repeats)
        t_t4s, res_t4s = best_of(lambda: evaluate(preds, gts, grid_size=GRID, upsample="t4s"), args.repeats)

    m = res.metrics
    same_from_files = res_files.metrics == m  # same inputs, same figures (reported, not asserted)

    print(f"Warm-up (kernels compiled or loaded from the cache, 2 x 8 samples): {t_warm * 1e3:.0f} ms")
    print()
    print(f"{'pipeline':<58}{'seconds':>9}{'samples/s':>12}{'vs reference':>14}")

    def row(name, t, extra=""):
        print(f"{name:<58}{t:9.2f}{n / t:12,.0f}{t_ref / t:13.1f}x{extra}")

    print(f"{'reference: split decoder, PIL NEAREST, pycocotools, numpy':<58}{t_ref:9.2f}{n / t_ref:12,.0f}{'1.0x':>14}")
    row("segtext evaluate(), in memory", t_st, f"   target >= {TARGET:.0f}x: {'met' if t_ref / t_st >= TARGET else 'NOT met'}")
    row("segtext evaluate(), from JSONL files", t_files)
    row("segtext evaluate(), upsample='t4s'", t_t4s)
    print()

    # --- agreement -------------------------------------------------------------------------------
    cache: dict = {}
    for g in gts:
        size = tuple(g["segmentation"]["size"])
        if size not in cache:
            cache[size] = pillow_agrees(*size, np, Image, st)
    agree = np.array([cache[tuple(g["segmentation"]["size"])] for g in gts])
    recs = res.records
    st_per = [(r.intersection, r.union, r.acc50) for r in recs]
    same_iu = sum(a[:2] == b[:2] for a, b in zip(st_per, ref_per))

    def figures(per, mask):
        sel = [p for p, k in zip(per, mask) if k]
        I = sum(p[0] for p in sel)
        U = sum(p[1] for p in sel)
        g = sum(1.0 if p[1] == 0 else p[0] / (p[1] + 1e-5) for p in sel) / max(len(sel), 1)
        a = sum(bool(p[2]) for p in sel) / max(len(sel), 1)
        return I / (U + 1e-10), g, a

    sa = figures(st_per, agree)
    ra = figures(ref_per, agree)
    print("Agreement with the reference")
    print(f"  samples whose image size makes Pillow's NEAREST upsampling index equal segtext's: "
          f"{int(agree.sum())}/{n}")
    print(f"    over those: cIoU {sa[0]:.12f} vs {ra[0]:.12f}, gIoU {sa[1]:.12f} vs {ra[1]:.12f}, "
          f"Acc@0.5 {sa[2]:.6f} vs {ra[2]:.6f}")
    print(f"    largest difference {max(abs(x - y) for x, y in zip(sa, ra)):.1e} "
          f"({'within 1e-9' if max(abs(x - y) for x, y in zip(sa, ra)) <= 1e-9 else 'NOT within 1e-9'})")
    print(f"  all samples: per-sample (I, U) identical for {same_iu}/{n}")
    print(f"    cIoU  segtext {m['ciou']:.9f}  reference {ref['ciou']:.9f}  difference {m['ciou'] - ref['ciou']:+.2e}")
    print(f"    gIoU  segtext {m['giou']:.9f}  reference {ref['giou']:.9f}  difference {m['giou'] - ref['giou']:+.2e}")
    print(f"    Acc@0.5 segtext {m['acc50']:.6f}  reference {ref['acc50']:.6f}  difference {m['acc50'] - ref['acc50']:+.2e}")
    print(f"    segtext with upsample='t4s' (Text4Seg's PyTorch nearest): cIoU {res_t4s.metrics['ciou']:.9f}, "
          f"gIoU {res_t4s.metrics['giou']:.9f}")
    print(f"  figures from files == figures in memory: {same_from_files}")
    h = res.health
    print(f"  segtext decode health: {h.clean} clean, {h.repaired} repaired, {h.empty} decoded empty, "
          f"{h.missing} missing, {h.bad_lines} bad lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
