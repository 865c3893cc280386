"""segtext training-records benchmark: COCO instances -> JSON Lines training records, segtext's
records pipeline against a plain script of the same steps, in the same run.

    python benchmarks/bench_records.py [--annotations 100000] [--reference-annotations 5000]
                                       [--repeats 3] [--build-repeats 3] [--workers-list 1,2] [--warm-cache]
    python benchmarks/bench_records.py --annotations 10000 --reference-annotations 1000 --repeats 1   # quick

Data: a COCO instances.json written to a temporary directory from the 734 real COCO val2014 masks
bundled with the package (st.coco.sample_annotations(), compressed RLE with str counts), repeated
until there are --annotations annotations (unique annotation ids; the copies reuse the 99 image ids,
so "images" lists each image once with its height and width from the RLE size), and "categories"
from st.coco.COCO_CATEGORY_NAMES. Every annotation is a non-crowd one, so each gives one record.

Both pipelines turn each annotation into one "messages"-style record (id, messages [user "<image>"
+ question, assistant answer holding "<seg>" + R-RLE text + "</seg>"], images, image_id, image_size,
label, segmentation, task, source) and write one JSON line per record; grid 16 x 16, policy nearest
(Text4Seg's data), so the R-RLE texts are the same:

  reference (written out plainly here, nothing from segtext): json.load of the instances file, an
      image-id index, then per annotation: pycocotools.mask.decode of the RLE, PIL.Image.resize
      ((16, 16), NEAREST), a label string per cell ("others" or the category name), Text4Seg's
      Python run-length loop (common.t4s_encode), a fixed question and answer, json.dumps of the
      record, one line written to a file.
  segtext: records.read_coco(path, task="referring") (JSON reading and Sample objects), then
      records.build(samples, out, records.Options(encoding="rrle", grid_size=(16, 16),
      policy="nearest"), seed=0, workers=W) for each W of --workers-list (worker processes are
      started with "spawn"; their start-up is inside the build time, as a user pays it).

The reference at ~0.6 ms a record would take a minute for 100,000 annotations, so its per-record
loop is timed on the first --reference-annotations annotations (best of --repeats) and reported per
record; its json.load of the full file is timed on its own (best of --repeats) and counted per
record of the full file. segtext runs on all --annotations: read_coco best of --repeats, each build
best of --build-repeats. Ratios are per-record times, reference / segtext; the issue's target is
>= 30x for read + build in one process.

Fairness, checked before timing: the R-RLE texts inside <seg>...</seg> of segtext's first 200
records must equal the reference's byte for byte, and the workers > 1 outputs must be byte-identical
to the workers = 1 output.

First call: a build of a few samples (numba compilation, or loading from the cache) is timed on its
own and kept out of the figures. By default numba's cache is pointed at an empty temporary directory
(as bench_codec does), so that first build is the real compile cost; spawned workers inherit the
directory and load the kernels the parent compiled. --warm-cache uses the normal cache instead.

Timings are best-of-N wall times (time.perf_counter). Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from common import best_of, print_header, t4s_encode, timed, use_cold_cache  # benchmarks/common.py

GRID = (16, 16)
TARGET = 30.0  # the target: read + build in one process, against the plain script
CHECKED = 200  # records whose R-RLE texts are compared byte for byte


# ----------------------------------------------------------------------------- data


def write_instances(path: str, n: int, st) -> dict:
    """A COCO instances.json of n annotations: the bundled sample repeated, unique annotation ids."""
    anns = st.coco.sample_annotations()
    names = st.coco.COCO_CATEGORY_NAMES
    images = {}
    for a in anns:
        h, w = a["segmentation"]["size"]
        images.setdefault(a["image_id"], {"id": a["image_id"], "file_name": f"COCO_val2014_{a['image_id']:012d}.jpg",
                                          "height": int(h), "width": int(w)})
    cats = sorted({a["category_id"] for a in anns})
    out = []
    for k in range(n):
        a = anns[k % len(anns)]
        out.append({"id": k + 1, "image_id": a["image_id"], "category_id": a["category_id"], "iscrowd": 0,
                    "segmentation": {"size": list(a["segmentation"]["size"]),
                                     "counts": a["segmentation"]["counts"]}})
    data = {"images": list(images.values()),
            "categories": [{"id": c, "name": names.get(c, "object")} for c in cats],
            "annotations": out}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return {"images": len(images), "categories": len(cats), "bytes": os.path.getsize(path)}


# ----------------------------------------------------------------------------- reference (plain script)
# The same steps a plain data-creation script takes (Text4Seg's encoder loop); nothing from segtext.


def ref_load(path: str):
    with open(path, "rb") as f:
        data = json.load(f)
    images = {img["id"]: img for img in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    return data["annotations"], images, names


def ref_text(rle: dict, label: str, np, Image, mask_util) -> str:
    mask = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    small = Image.fromarray(mask.astype(np.uint8)).resize((GRID[1], GRID[0]), Image.NEAREST)
    cells = np.array(small).flatten()
    labels = [label if v > 0 else "others" for v in cells]
    return t4s_encode(np.reshape(labels, GRID))


def ref_records(anns, images, names, out_path: str, np, Image, mask_util) -> list[str]:
    texts = []
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for ann in anns:
            if ann.get("iscrowd"):
                continue
            img = images[ann["image_id"]]
            label = names[ann["category_id"]]
            text = ref_text(ann["segmentation"], label, np, Image, mask_util)
            texts.append(text)
            rec = {
                "id": f"ann{ann['id']}",
                "messages": [
                    {"role": "user", "content": f"<image>Please segment the {label} in this image."},
                    {"role": "assistant", "content": f"Sure, here is the segmentation of {label}: <seg>{text}</seg>"},
                ],
                "images": [img["file_name"]],
                "image_id": ann["image_id"],
                "image_size": [img["height"], img["width"]],
                "label": label,
                "segmentation": ann["segmentation"],
                "task": "referring",
                "source": {"ann_ids": [ann["id"]], "category_id": ann["category_id"]},
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return texts


# ----------------------------------------------------------------------------- main


def seg_texts(path: str, limit: int) -> list[str]:
    """The R-RLE texts inside <seg>...</seg> of the first ``limit`` records of a messages-style file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) == limit:
                break
            answer = json.loads(line)["messages"][-1]["content"]
            out.append(answer.split("<seg>", 1)[1].split("</seg>", 1)[0])
    return out


def same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotations", type=int, default=100_000, help="annotations in the file (default 100000)")
    ap.add_argument("--reference-annotations", type=int, default=5000,
                    help="annotations the reference's per-record loop is timed on (default 5000)")
    ap.add_argument("--repeats", type=int, default=3, help="best-of-N for read_coco, json.load and the reference "
                                                           "(default 3)")
    ap.add_argument("--build-repeats", type=int, default=3, help="best-of-N for each full build (default 3)")
    ap.add_argument("--workers-list", default="1,2", help="comma-separated worker counts for build (default 1,2)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use numba's normal on-disk cache (the first build may then load instead of compile)")
    args = ap.parse_args(argv)
    workers_list = [int(w) for w in args.workers_list.split(",") if w.strip()]
    if 1 not in workers_list:
        workers_list.insert(0, 1)  # the one-process figure and the byte-identity check need it

    cache_dir = use_cold_cache(args.warm_cache)  # before numba is imported

    t0 = time.perf_counter()
    import numba
    import numpy as np
    import pycocotools.mask as mask_util
    from PIL import Image

    import segtext as st
    from segtext import records
    t_import = time.perf_counter() - t0

    tmp = tempfile.mkdtemp(prefix="segtext-bench-records-")
    try:
        N = args.annotations
        n_ref = min(args.reference_annotations, N)
        inst_path = os.path.join(tmp, "instances.json")
        info, t_write = timed(lambda: write_instances(inst_path, N, st))

        print_header("segtext training-records benchmark")
        print(f"  data      instances.json: {N} annotations (the 734 bundled COCO val2014 masks repeated), "
              f"{info['images']} images, {info['categories']} categories, {info['bytes'] / 1e6:.1f} MB "
              f"(written in {t_write:.1f} s)")
        print(f"  records   messages style, R-RLE, grid {GRID[0]}x{GRID[1]}, policy nearest, seed 0; "
              f"workers {','.join(map(str, workers_list))}")
        print(f"  timing    read_coco, json.load, reference: best of {args.repeats}; each full build: best of "
              f"{args.build_repeats}; reference loop on the first {n_ref} annotations, per record")
        print()

        opts = records.Options(encoding="rrle", grid_size=GRID, policy="nearest")

        # --- first call ----------------------------------------------------------------------
        print("First call (kept out of the figures)")
        print(f"  import numpy, numba, pillow, pycocotools, segtext   {t_import * 1e3:9.1f} ms")
        with open(inst_path, "rb") as f:
            small = json.load(f)
        small["annotations"] = small["annotations"][:8]
        warm_samples = records.read_coco(small)
        _, t_first = timed(lambda: records.build(warm_samples, os.path.join(tmp, "warm.jsonl"), opts, seed=0))
        mode = "compile, empty numba cache" if cache_dir else "normal numba cache"
        print(f"  records.build of 8 samples      {t_first * 1e3:9.1f} ms   ({mode})")
        print(f"  numba threads: {numba.get_num_threads()}")
        print()

        # --- outputs and fairness ---------------------------------------------------------------
        samples = records.read_coco(inst_path, task="referring")
        outs = {}
        first_build = {}
        for w in workers_list:
            outs[w] = os.path.join(tmp, f"segtext-w{w}.jsonl")
            summary, secs = timed(lambda: records.build(samples, outs[w], opts, seed=0, workers=w))
            first_build[w] = secs
        anns, images, names = ref_load(inst_path)
        ref_out = os.path.join(tmp, "reference.jsonl")
        ref_check = ref_records(anns[:CHECKED], images, names, ref_out, np, Image, mask_util)
        st_check = seg_texts(outs[1], CHECKED)
        same = sum(a == b for a, b in zip(ref_check, st_check))
        print("Agreement with the reference")
        print(f"  records written by segtext                    {summary.records} of {len(samples)} samples "
              f"({N} annotations)")
        print(f"  R-RLE texts byte-identical, first {CHECKED}        {same}/{min(CHECKED, len(st_check))}")
        for w in workers_list:
            if w != 1:
                print(f"  workers={w} output bytes equal workers=1     {'yes' if same_bytes(outs[1], outs[w]) else 'NO'}")
        print()

        # --- timings -------------------------------------------------------------------------------
        R, RB = args.repeats, args.build_repeats
        t_load = best_of(lambda: ref_load(inst_path), R)
        sub = anns[:n_ref]
        t_ref_loop = best_of(lambda: ref_records(sub, images, names, ref_out, np, Image, mask_util), R)
        ref_loop_us = t_ref_loop * 1e6 / n_ref
        ref_load_us = t_load * 1e6 / N
        ref_total_us = ref_loop_us + ref_load_us
        del anns, sub

        t_read = best_of(lambda: records.read_coco(inst_path, task="referring"), R)
        read_us = t_read * 1e6 / N
        build_us = {}
        for w in workers_list:
            # the run above (outputs for the checks) counts as one of the repeats
            t_b = min(first_build[w], best_of(lambda: records.build(samples, outs[w], opts, seed=0, workers=w),
                                              RB - 1) if RB > 1 else float("inf"))
            build_us[w] = t_b * 1e6 / N

        w_ = 52
        print(f"{'Per record (microseconds)':{w_}} {'reference':>10} {'segtext':>10} {'rec/s':>10} {'ratio':>8}")

        def row(title, ref, mine, target=None):
            line = f"{title:{w_}} {ref:10.1f} {mine:10.1f} {1e6 / mine:10.0f} {ref / mine:7.1f}x"
            if target is not None:
                line += f"   target >= {target:.0f}x: {'met' if ref / mine >= target else 'NOT met'}"
            print(line)

        row("read: json.load + index / records.read_coco", ref_load_us, read_us)
        for w in workers_list:
            row(f"build: records loop / records.build, workers={w}", ref_loop_us, build_us[w])
        for w in workers_list:
            row(f"read + build, workers={w}", ref_total_us, read_us + build_us[w], TARGET if w == 1 else None)
        print(f"  reference: {1e6 / ref_total_us:.0f} records/s (loop timed on {n_ref} annotations, json.load on "
              f"all {N}); segtext on all {N}.")
        print(f"  whole file, read + build: reference ~{ref_total_us * N / 1e6:.1f} s (extrapolated), "
              + ", ".join(f"segtext workers={w} {(read_us + build_us[w]) * N / 1e6:.2f} s" for w in workers_list))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
