#!/usr/bin/env python3
"""`segtext eval PREDICTIONS GROUND_TRUTH`, run in-process (segtext.cli.main) on fuzzed files.

Input: byte 0 picks --mode, --format, --on-bad-line, --box-format and whether the ground truth
is named .jsonl or .json (a .json file may hold COCO instances JSON); byte 1 picks --grid-size
and --resolution; the
rest is split at its first NUL byte into the predictions file and the ground-truth file.
Contract: main() returns 0 or 2 (or argparse exits with 0/1/2); any other exception, exit
status or a scores file with a score outside [0, 1] is a finding.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import common
from common import Call, Case, expect, pick, st

DICT = common.NUMBER_TOKENS + common.TEXT_TOKENS[:20] + [
    '{"id": ', '"answer": ', '"segmentation": ', '"image_size": ', '"counts": ', '"size": ', '"annotations": ',
    '"images": ', '"height": ', '"width": ', '"image_id": ', '"category_id": ', "\\n", "\n", "\x00"]
MAX_LEN = 16384
MODES = ["repair", "strict", "t4s"]
FORMATS = ["auto", "rrle", "bsd"]
GRIDS = [None] * 4 + ["16", "4x8", "1", "0", "65536x65536", "2048x2049"]
RESOLUTIONS = ["64"] * 8 + ["8", "1", "3", "1024", "1025", "99999999999"]
TMP = os.path.join(common.FUZZ_DIR, "logs", "cli_eval-files")  # the files of the latest input (gitignored)
os.makedirs(TMP, exist_ok=True)


def argv(b0: int, b1: int, gt_name: str) -> list[str]:
    out = os.path.join(TMP, "scores.json")
    args = ["eval", os.path.join(TMP, "pred.jsonl"), os.path.join(TMP, gt_name), "--no-progress",
            "--mode", pick(MODES, b0), "--format", pick(FORMATS, b0 >> 2),
            "--on-bad-line", ("skip", "fail")[(b0 >> 4) & 1], "--json", out,
            "--per-sample", os.path.join(TMP, "samples.jsonl")]
    grid = pick(GRIDS, b1)
    return args + (["--grid-size", grid] if grid else []) + ["--resolution", pick(RESOLUTIONS, b1 >> 4),
                                                             "--box-format", pick(common.BOX_FORMATS, b0 >> 6)]


def run(args: list[str], pred: bytes, gt: bytes) -> int:
    with open(args[1], "wb") as f:
        f.write(pred)
    with open(args[2], "wb") as f:
        f.write(gt)
    out = os.path.join(TMP, "scores.json")
    if os.path.exists(out):
        os.unlink(out)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            rc = st.cli.main(args)
        except SystemExit as e:  # argparse
            expect(e.code in (0, 1, 2), "exit status", e.code)
            return e.code
    expect(rc in (0, 2), "exit status", rc)
    if rc == 0:
        with open(out, encoding="utf-8") as f:
            m = json.load(f)["metrics"]
        for k in ("ciou", "giou", "acc50"):
            expect(isinstance(m[k], (int, float)) and 0.0 <= m[k] <= 1.0, "score in [0, 1]", (k, m[k]))
    return rc


def build(data: bytes) -> Case:
    (b0, b1), rest = common.header(data, 2)
    pred, _, gt = rest.partition(b"\0")
    gt_name = ("gt.jsonl", "gt.json")[(b0 >> 5) & 1]
    setup = (f"import segtext.cli; open({os.path.join(TMP, 'pred.jsonl')!r}, 'wb').write({pred!r}); "
             f"open({os.path.join(TMP, gt_name)!r}, 'wb').write({gt!r})")
    args = argv(b0, b1, gt_name)
    # the reproducer shows segtext.cli.main(args) after writing the two files (see setup)
    return Case(Call("segtext.cli.main", lambda a: run(a, pred, gt), (args,)), allowed=(), setup=setup)


def seeds() -> list[bytes]:
    preds, gts = [], []
    for i, (label, mask) in enumerate(common.real_masks(4)):
        H, W = mask.shape
        grid = st.mask_to_grid(mask, grid_size=(16, 16))
        answer = (st.encode_bsd([(label, mask)], (H, W), resolution=8) if i % 2 else
                  "<seg>" + st.encode_rrle(grid, ["others", label]) + "</seg>")
        preds.append(json.dumps({"id": i, "answer": answer}))
        gts.append(json.dumps({"id": i, "segmentation": common.dense_rle(mask), "image_size": [H, W]}))
    preds.append(json.dumps({"id": 9, "answer": "There is none."}))
    gts.append(json.dumps({"id": 9, "segmentation": None, "image_size": [4, 4]}))
    gts.append(json.dumps({"id": 10, "segmentation": [[0, 0, 3, 0, 3, 3]], "image_size": [4, 4]}))
    p, g = "\n".join(preds).encode(), "\n".join(gts).encode()
    coco = {"images": [{"id": 1, "height": 4, "width": 4}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3]]}]}
    big = json.dumps({"id": 0, "segmentation": {"size": [2**62, 2], "counts": [1]}, "image_size": [2**62, 2]})
    return [bytes([m, 0]) + p + b"\0" + g for m in range(3)] + [
        bytes([1 << 5, 4]) + p + b"\0" + json.dumps(coco).encode(),
        bytes([0, 5]) + p + b"\0" + big.encode(),
    ]


if __name__ == "__main__":
    common.main(__name__)
