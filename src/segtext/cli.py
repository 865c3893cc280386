"""The ``segtext`` command line.

``segtext encode`` turns COCO annotations into Text4Seg text, one JSON line per annotation::

    segtext encode --limit 3                      # the bundled sample of 734 real COCO masks
    segtext encode instances.json -o out.jsonl --grid-size 24 --policy nearest
    segtext encode results.json --format isd --label "the dog"
    segtext encode instances.json --format bsd --resolution 64   # one line per image, B-SD
    segtext encode --panoptic panoptic_val2017.json --png-dir panoptic_val2017 --instances
    segtext encode --label-dir annotations --classes names.txt --ignore-index 255

``segtext eval`` scores a model's raw answers against ground truth (cIoU, gIoU, Acc@0.5, N-acc)
and prints a decode-health table; ``segtext show`` draws one answer, or the worst samples of an
evaluation, as a picture (PNG, JPEG, WebP or PDF, by the suffix of ``-o``)::

    segtext eval predictions.jsonl instances.json --grid-size 16 --json scores.json
    segtext show --text answer.txt --image-size 480x640 -o answer.png
    segtext show --answer "<ref>dog</ref><box>[0,0,500,500]</box><seg><fg_4></seg>" --image-size 4x4 -o a.webp
    segtext show --worst 12 --predictions predictions.jsonl --ground-truth instances.json -o worst.png

Every file argument that is read may be ``-`` for standard input (at most one per run).

Exit status: 0 on success, 2 on a usage or input error (missing or empty file, bad JSON, an
annotation without a usable segmentation unless ``--skip-invalid`` is given, a malformed
predictions line under ``--on-bad-line fail``, nothing to write or to score).  Diagnostics, the progress bar and the closing summary go to
stderr; stdout carries only the JSON lines (encode) or the scores (eval).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np

import segtext as st
from segtext._validate import check_image_size
from segtext.limits import MAX_GRID_CELLS, MAX_RESOLUTION

BACKGROUND = "others"
DEFAULT_LABEL = "object"
MAX_DRAW_PIXELS = 64 << 20  # the largest picture `segtext show` draws (64 megapixels)
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".pdf": "PDF"}
WORST_TILE = 256  # pixels a side of a tile of `segtext show --worst`
MAX_REPORTED = 10  # skipped annotations listed one by one on stderr
CHUNK = 1024  # annotations per call of the batch kernel (bounds memory, paces the progress bar)

FORMATS = ("rrle", "isd", "irle", "bsd")
GRID_FORMATS = ("rrle", "isd", "irle")
DEFAULT_GRID = (16, 16)
DEFAULT_RESOLUTION = 64
DEFAULT_BOX_FORMAT = "norm1000"


class CliError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- arguments


def _grid_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 16 or 24x32), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"grid sides must be positive, got {text!r}")
    if h * w > MAX_GRID_CELLS:
        raise argparse.ArgumentTypeError(f"{text!r} is {h * w} cells, more than the limit of "
                                         f"{MAX_GRID_CELLS} (segtext.limits.MAX_GRID_CELLS)")
    return h, w


def _threshold(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < t <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return t


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return n


def _resolution(text: str) -> int:
    n = _positive_int(text)
    if n > MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"{n} is more than the limit of {MAX_RESOLUTION} bricks a "
                                         "side (segtext.limits.MAX_RESOLUTION)")
    return n


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        H, W = (int(p) for p in (parts * 2 if len(parts) == 1 else parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels (e.g. 480x640), got {text!r}") from None
    if H <= 0 or W <= 0:
        raise argparse.ArgumentTypeError(f"image sides must be positive, got {text!r}")
    try:
        check_image_size(H, W, "--image-size")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return H, W


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segtext",
        description="Segmentation masks as Text4Seg text (I-SD, R-RLE, I-RLE, B-SD), and scores for model answers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    enc = sub.add_parser(
        "encode",
        help="COCO annotations (RLE or polygons) -> one JSON line of text per annotation",
        description=(
            "Read COCO instance annotations (a dict with 'annotations', 'images', 'categories') or COCO "
            "results (a list of annotations whose RLE carries its size) and write one JSON line per "
            "annotation: id, image_id, category_id, label, image_size, grid_size, text. "
            "With no INPUT the bundled sample of 734 real COCO val2014 masks is used. "
            "--panoptic (COCO panoptic JSON + PNGs) or --label-dir (semantic PNG label maps) instead "
            "write one line per image: its label map as text, with the labels list."
        ),
    )
    enc.add_argument("input", nargs="?", metavar="INPUT",
                     help="COCO JSON file ('-' reads stdin); default: the bundled sample")
    enc.add_argument("-o", "--output", metavar="OUTPUT",
                     help="write the JSON lines here (atomically) instead of stdout")
    enc.add_argument("--grid-size", type=_grid_size, metavar="N|HxW",
                     help="grid size for rrle/isd/irle, N for NxN or HxW (default 16)")
    enc.add_argument("--policy", choices=("majority", "nearest", "any"), default="majority",
                     help="cell policy (default majority; nearest reproduces Text4Seg's Pillow resize)")
    enc.add_argument("--format", choices=FORMATS, default="rrle",
                     help="text format: rrle (Text4Seg R-RLE, default), isd (one label per cell), irle, "
                          "or bsd (Text4Seg++ B-SD: one line per image holding all its objects)")
    enc.add_argument("--threshold", type=_threshold, default=0.5,
                     help="foreground fraction for the majority policy, in (0, 1] (default 0.5)")
    enc.add_argument("--label", metavar="TEXT",
                     help="foreground label for every annotation (default: the category name)")
    enc.add_argument("--limit", type=_positive_int, metavar="N",
                     help="encode only the first N annotations (images with --panoptic or --label-dir)")
    enc.add_argument("--skip-invalid", action="store_true",
                     help="skip annotations without a usable segmentation (and count them) instead of failing")
    enc.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    bsd = enc.add_argument_group("B-SD (--format bsd)")
    bsd.add_argument("--resolution", type=_resolution, metavar="S",
                     help=f"bricks per box side (default {DEFAULT_RESOLUTION})")
    bsd.add_argument("--box-format", choices=tuple(st.BOX_FORMATS),
                     help="box spelling: norm1000 (default), qwen2vl or pixel")
    bsd.add_argument("--row-wise", action="store_true", help="restart the brick runs at every row")
    bsd.add_argument("--per-annotation", action="store_true",
                     help="one line per annotation instead of one per image")
    pan = enc.add_argument_group("COCO panoptic (instead of INPUT)")
    pan.add_argument("--panoptic", metavar="JSON",
                     help="COCO panoptic JSON ('annotations' with file_name + segments_info, 'images', "
                          "'categories'; '-' reads stdin): one line per image")
    pan.add_argument("--png-dir", metavar="DIR", help="folder of the panoptic PNGs (required with --panoptic)")
    pan.add_argument("--instances", action="store_true",
                     help="one label per thing instance (person 1, person 2, ...) instead of one per category")
    sem = enc.add_argument_group("semantic label maps (instead of INPUT)")
    sem.add_argument("--label-dir", metavar="DIR",
                     help="folder of PNG label maps (pixel = class index): one line per PNG, sorted by name")
    sem.add_argument("--classes", metavar="NAMES.txt",
                     help="class names, one a line; line 1 is id 0, the background, written 'others'")
    sem.add_argument("--ignore-index", type=_non_negative_int, metavar="V",
                     help="pixel value that never votes (e.g. 255)")
    enc.set_defaults(func=_cmd_encode)
    _add_build_parser(sub)
    _add_eval_parser(sub)
    _add_show_parser(sub)
    _add_model_parsers(sub)
    return parser


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _add_build_parser(sub) -> None:
    b = sub.add_parser(
        "build",
        help="dataset annotation files -> training records (JSON Lines) for ms-swift, LLaMA-Factory, TRL, LLaVA",
        description=(
            "Read a dataset's annotation files as they are shipped and write one training record per sample: "
            "a question, an answer holding the mask as text (R-RLE/I-SD/I-RLE in <seg>...</seg>, or B-SD "
            "blocks), the image, and what scoring needs (image_id, image_size, label, segmentation), so that "
            "`segtext eval --ground-truth` reads the records file. Same inputs and --seed: same bytes, "
            "with any --workers; an interrupted run continues with --resume."
        ),
    )
    src = b.add_subparsers(dest="source", metavar="SOURCE")
    src.required = True
    coco = src.add_parser("coco", help="COCO instances_*.json: per annotation, per image (semantic) or per "
                          "image with every instance")
    coco.add_argument("--instances", required=True, metavar="JSON", help="COCO instances file")
    coco.add_argument("--task", choices=("referring", "semantic", "instances"), default="referring",
                      help="referring: one record per annotation (the category name as the phrase); "
                           "semantic: one per image, every category; instances: one per image, every "
                           "instance (default referring)")
    coco.add_argument("--include-crowd", action="store_true", help="also use iscrowd annotations")
    ref = src.add_parser("refcoco", help="RefCOCO / RefCOCO+ / RefCOCOg: refs(unc).p, refs(umd).p or "
                         "refs(google).p + instances.json")
    ref.add_argument("--refs", required=True, metavar="FILE",
                     help="the refs pickle (a pickle can run code: only files you trust) or the same list as JSON")
    gref = src.add_parser("grefcoco", help="gRefCOCO: grefs(unc).json + instances.json (several or no targets)")
    gref.add_argument("--refs", required=True, metavar="JSON", help="grefs(unc).json")
    pan = src.add_parser("panoptic", help="COCO panoptic_*.json + PNG folder: one record per image")
    pan.add_argument("--panoptic", required=True, metavar="JSON", help="the panoptic JSON")
    pan.add_argument("--png-dir", required=True, metavar="DIR", help="the folder of its PNGs")
    pan.add_argument("--task", choices=("semantic", "instances"), default="semantic",
                     help="semantic: one label per category, things and stuff (default); instances: each "
                          "thing its own label (person 1, person 2, ...), one B-SD block per segment")
    sem = src.add_parser("semantic", help="a folder of PNG label maps + class names (ADE20K, COCO-Stuff, PASCAL)")
    sem.add_argument("--label-dir", required=True, metavar="DIR", help="PNG label maps (pixel = class index)")
    sem.add_argument("--classes", required=True, metavar="NAMES.txt",
                     help="class names, one a line; line 1 is id 0, the background, written 'others'")
    sem.add_argument("--ignore-index", type=_non_negative_int, metavar="V", help="pixel value that never votes")
    for p in (ref, gref):
        p.add_argument("--instances", required=True, metavar="JSON", help="the dataset's instances.json")
        p.add_argument("--split", metavar="NAME", help="keep one split (train, val, testA, testB, test)")
        p.add_argument("--per", choices=("sentence", "ref"), default="sentence",
                       help="one record per sentence (default) or per ref")
        p.add_argument("--sentence", choices=("sent", "raw"), default="sent",
                       help="the phrase: 'sent' (tokenised, lower case; default) or 'raw'")
    for p in (coco, ref, gref, pan, sem):
        p.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl",
                       help="records file (written as OUTPUT.partial, renamed when complete)")
        p.add_argument("--encoding", choices=FORMATS, default="rrle",
                       help="mask text: rrle (default), isd, irle, or bsd (boxes and bricks)")
        p.add_argument("--grid-size", type=_grid_size, default=DEFAULT_GRID, metavar="N|HxW",
                       help="grid of the I-SD family (default 16)")
        p.add_argument("--resolution", type=_resolution, default=DEFAULT_RESOLUTION, metavar="S",
                       help=f"B-SD bricks per box side (default {DEFAULT_RESOLUTION})")
        p.add_argument("--box-format", choices=tuple(st.BOX_FORMATS), default=DEFAULT_BOX_FORMAT,
                       help="B-SD box spelling (default norm1000)")
        p.add_argument("--policy", choices=("majority", "nearest", "any"), default="majority",
                       help="cell policy (default majority; nearest reproduces Text4Seg's data)")
        p.add_argument("--threshold", type=_threshold, default=0.5,
                       help="foreground fraction for majority, in (0, 1] (default 0.5)")
        p.add_argument("--style", choices=("messages", "llava", "prompt-completion", "xsam"),
                       default="messages", help="record layout (default messages)")
        p.add_argument("--negatives", type=_non_negative_int, default=0, metavar="N",
                       help="--style xsam, semantic/instances/panoptic: also list N categories absent from "
                            "the image (X-SAM's negatives), drawn from the dataset's categories (default 0)")
        p.add_argument("--images", metavar="DIR", help="folder joined to each image file name")
        p.add_argument("--templates", metavar="JSON", help="question/answer templates replacing the built-in ones")
        p.add_argument("--seed", type=int, default=0, help="seeds the template choices (default 0)")
        p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="processes encoding samples (the output does not depend on it)")
        p.add_argument("--ray", metavar="ADDRESS",
                       help="encode on a Ray cluster with Ray Data ('local' starts one on this machine, "
                            "'auto' joins the running one); the output does not depend on it")
        p.add_argument("--shard", type=_shard, metavar="I/N", help="write only samples I, I+N, I+2N, ...")
        p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N samples")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.partial")
        p.add_argument("--skip-invalid", action="store_true",
                       help="skip samples that cannot be read or encoded (and count them) instead of failing")
        p.add_argument("--verify", action="store_true",
                       help="decode every answer in strict mode and check it against the mask's grid")
        p.add_argument("--tokenizer", metavar="PATH",
                       help="a local Hugging Face tokenizer (a folder written by save_pretrained, or a "
                            "tokenizer.json file): report the answer lengths in tokens, mean, p95 and max "
                            "(needs transformers; checked before anything is read or written)")
        p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
        p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from segtext import records

    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None  # a bad path fails before any work
    t0 = time.perf_counter()  # the summary's time and rate: reading and writing, not loading the tokenizer
    problems: list[str] = []
    try:
        if args.source == "coco":
            samples = records.read_coco(args.instances, args.task, include_crowd=args.include_crowd,
                                        skip_invalid=args.skip_invalid, problems=problems)
        elif args.source == "refcoco":
            samples = records.read_refcoco(args.refs, args.instances, args.split, args.per, args.sentence,
                                           skip_invalid=args.skip_invalid, problems=problems)
        elif args.source == "grefcoco":
            samples = records.read_grefcoco(args.refs, args.instances, args.split, args.per, args.sentence,
                                            skip_invalid=args.skip_invalid, problems=problems)
        elif args.source == "panoptic":
            samples = records.read_panoptic(args.panoptic, args.png_dir, args.task,
                                            skip_invalid=args.skip_invalid, problems=problems)
        else:
            samples = records.read_semantic(args.label_dir, args.classes, args.ignore_index)
        # negatives come from every category of the dataset (before any shard or limit, so all
        # parts of a sharded build draw from the same list)
        classes = records.dataset_classes(samples) if args.negatives else None
        if args.shard is not None:
            i, n = args.shard
            samples = samples[i::n]
        if args.limit is not None:
            samples = samples[: args.limit]
        templates = records.load_templates(args.templates) if args.templates else None
        options = records.Options(
            encoding=args.encoding, grid_size=args.grid_size, resolution=args.resolution,
            policy=args.policy, threshold=args.threshold, box_format=args.box_format, style=args.style,
            images=args.images, templates=templates, verify=args.verify, negatives=args.negatives,
            classes=classes)
        if args.ray:
            _start_ray(args.ray)
        summary = records.build(samples, args.output, options, seed=args.seed, workers=args.workers,
                                resume=args.resume, skip_invalid=args.skip_invalid,
                                progress=not args.no_progress and sys.stderr.isatty(), tokenizer=tokenizer,
                                backend="ray" if args.ray else "processes")
    except KeyboardInterrupt:
        print(f"segtext build: interrupted; the records written so far are in {args.output}.partial: "
              "run the same command with --resume to continue", file=sys.stderr)
        return 130
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    problems.extend(summary.problems)
    for p in problems[:MAX_REPORTED]:
        print(f"segtext build: skipped: {p}", file=sys.stderr)
    if len(problems) > MAX_REPORTED:
        print(f"segtext build: ... and {len(problems) - MAX_REPORTED} more skipped", file=sys.stderr)
    dt = time.perf_counter() - t0
    msg = (f"segtext build: {summary.records} record(s) -> {summary.output} ({summary.written} written in "
           f"{dt:.2f} s, {summary.written / dt if dt > 0 else 0:,.0f} records/s")
    if summary.resumed_after:
        msg += f", resumed after {summary.resumed_after}"
    msg += f"); skipped {len(problems)}"
    if summary.answer_tokens:
        t = summary.answer_tokens
        msg += f"; answer tokens: mean {t['mean']:.1f}, p95 {t['p95']:.1f}, max {t['max']:.0f}"
    print(msg, file=sys.stderr)
    if args.style == "messages":
        name = os.path.splitext(os.path.basename(args.output))[0]
        entry = records.styles.llamafactory_entry(name, os.path.basename(args.output))
        print("segtext build: LLaMA-Factory dataset_info.json entry: " + json.dumps(entry), file=sys.stderr)
    return 0


def _start_ray(address: str) -> None:
    try:
        import ray
    except ImportError:
        raise CliError("--ray needs Ray Data (pip install 'ray[data]')") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {k: os.environ[k] for k in ("NUMBA_CACHE_DIR", "RAY_USAGE_STATS_ENABLED") if k in os.environ}
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CliError(f"--ray {address}: cannot start or join Ray: {e}") from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model", "merges.txt")


def _load_tokenizer(path: str) -> Any:
    """The tokenizer at ``path`` (a ``save_pretrained`` folder or a ``tokenizer.json`` file), tried
    on a short answer; a :class:`CliError` naming the path if it is missing or cannot be used."""
    where = f"--tokenizer {path}"
    if not os.path.exists(path):
        raise CliError(f"{where}: no such file or folder (expected a folder written by save_pretrained "
                       "or a tokenizer.json file)")
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, n)) for n in _TOKENIZER_FILES):
        raise CliError(f"{where}: the folder holds no tokenizer files (expected tokenizer.json or "
                       "tokenizer_config.json, as save_pretrained writes)")
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError:
        raise CliError(f"{where}: reading a tokenizer needs transformers (pip install transformers)") from None
    try:
        if os.path.isdir(path):
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        else:
            tok = PreTrainedTokenizerFast(tokenizer_file=path)
        ids = tok.encode("<seg>others *16\n</seg>", add_special_tokens=False)
    except Exception as e:  # noqa: BLE001 - transformers and tokenizers raise many kinds (even bare Exception)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"{where}: cannot load a tokenizer from it: {first}") from None
    if not ids or not all(isinstance(v, int) for v in ids):
        raise CliError(f"{where}: the tokenizer gives no token ids for a test answer")
    return tok


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    """Options that say how answers are decoded (shared by eval and show)."""
    g = p.add_argument_group("decoding")
    g.add_argument("--format", choices=("auto", "rrle", "bsd"), default="auto",
                   help="answer format: auto (B-SD when the text has <ref>/<box> blocks, else the R-RLE "
                        "family), or force rrle / bsd (default auto)")
    g.add_argument("--mode", choices=("repair", "strict", "t4s"), default="repair",
                   help="repair (fix and report, default), strict (a deviation rejects the answer: scored "
                        "empty) or t4s (Text4Seg's own R-RLE decoder)")
    g.add_argument("--grid-size", type=_grid_size, metavar="N|HxW",
                   help="R-RLE grid size, N for NxN or HxW (default: inferred from each answer)")
    g.add_argument("--upsample", choices=("exact", "t4s"),
                   help="grid -> pixels: exact (segtext's cell geometry) or t4s (Text4Seg's PyTorch "
                        "nearest); default t4s with --mode t4s, else exact")
    g.add_argument("--resolution", type=_resolution, default=64, metavar="S",
                   help="B-SD bricks per box side (default 64)")
    g.add_argument("--box-format", choices=tuple(st.BOX_FORMATS), default="norm1000",
                   help="B-SD box spelling: norm1000 (<box>[x1,y1,x2,y2]</box> on 0..1000, default), "
                        "qwen2vl or pixel")
    g.add_argument("--labels", type=_labels_arg, metavar="FILE|a,b,...",
                   help="vocabulary: a file with one label a line, or labels joined by commas "
                        "(others first, added if missing; B-SD <ref> labels are read with the rest); "
                        "default: each ground truth's own label, else inferred from the answer")
    g.add_argument("--unknown", choices=("foreground", "background", "nearest"), default="foreground",
                   help="a label outside the vocabulary: foreground (default, as Text4Seg), "
                        "background (a B-SD object is dropped), or the nearest known label")


def _labels_arg(text: str) -> list[str]:
    """``--labels``: a file of one label a line, else labels joined by commas."""
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as f:
                labels = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"cannot read the labels file {text}: {e}") from None
    else:
        labels = [s.strip() for s in text.split(",") if s.strip()]
    if not labels:
        raise argparse.ArgumentTypeError(f"no label in {text!r}")
    for label in labels:
        problem = _check_label(label) if label != st.labels.BACKGROUND else None
        if problem:
            raise argparse.ArgumentTypeError(f"label {label!r} cannot be used: {problem}")
    return labels


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="score raw model answers against ground truth: cIoU, gIoU, Acc@0.5, decode health",
        description=(
            "Decode every answer in PREDICTIONS (JSON lines with 'id' and the raw answer under 'answer', "
            "'text' or 'output') and score it against GROUND_TRUTH (COCO instances/results JSON, sample id = "
            "annotation id; or JSON lines with 'id', 'segmentation' (COCO RLE or polygons, null for no "
            "target) and 'image_size' [H, W]). Prints cIoU, gIoU, Acc@0.5 (N-acc and T-acc when there are "
            "no-target samples) and a decode-health table. A ground truth without a prediction is scored "
            "as an empty mask; a prediction without ground truth is reported and not scored."
        ),
    )
    ev.add_argument("predictions", metavar="PREDICTIONS", help="JSON lines: id + raw answer text")
    ev.add_argument("ground_truth", metavar="GROUND_TRUTH",
                    help="COCO instances/results JSON, or JSON lines of id + COCO RLE + image size")
    _add_decode_options(ev)
    out = ev.add_argument_group("output")
    out.add_argument("--json", metavar="OUT.json", dest="json_out",
                     help="write every figure (scores, decode health, options, problems) as JSON")
    out.add_argument("--per-sample", metavar="OUT.jsonl",
                     help="write one JSON line per sample: id, iou, intersection, union, areas, status, "
                          "repairs (sort by iou to find the worst)")
    ev.add_argument("--on-bad-line", choices=("skip", "fail"), default="skip",
                    help="a malformed input line: report it with its line number and skip it (default), "
                         "or stop with exit status 2")
    ev.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    ev.set_defaults(func=_cmd_eval)


def _add_show_parser(sub) -> None:
    sh = sub.add_parser(
        "show",
        help="draw one answer over its image, or the N worst samples of an evaluation (PNG, JPEG, WebP or PDF)",
        description=(
            "(a) --text FILE or --answer TEXT: decode one answer and draw it (label colours and legend, the I-SD "
            "grid lines or the B-SD boxes, the ground-truth outline with --gt-rle) over --image or a "
            "blank canvas of --image-size. (b) --worst N: evaluate --predictions against --ground-truth "
            "as `segtext eval` does and lay out the N samples with the lowest IoU on one page."
        ),
    )
    what = sh.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", metavar="FILE",
                      help="a file holding the answer ('-' reads stdin)")
    what.add_argument("--answer", metavar="TEXT", help="the answer itself, as literal text")
    what.add_argument("--worst", type=_positive_int, metavar="N",
                      help="draw the N samples with the lowest IoU of an evaluation")
    sh.add_argument("-o", "--output", required=True, metavar="OUT.png",
                    help="the picture to write (atomically), in the format its suffix names: "
                         ".png, .jpg/.jpeg, .webp or .pdf")
    one = sh.add_argument_group("one answer (--text or --answer)")
    one.add_argument("--image-size", type=_image_size, metavar="HxW",
                     help="image size in pixels (default: the size of --image or of --gt-rle)")
    one.add_argument("--image", metavar="IMG", help="draw over this image (default: a blank canvas)")
    one.add_argument("--gt-rle", metavar="JSON",
                     help="ground truth to outline: a COCO RLE as a JSON string or a file ('-' reads stdin)")
    many = sh.add_argument_group("worst samples (--worst)")
    many.add_argument("--predictions", metavar="P",
                      help="predictions JSON lines, as for `segtext eval` ('-' reads stdin)")
    many.add_argument("--ground-truth", metavar="G", help="ground truth, as for `segtext eval` ('-' reads stdin)")
    many.add_argument("--images", metavar="DIR",
                      help="folder of the images, found by the ground truth's file_name (default: blank canvas)")
    many.add_argument("--columns", type=_positive_int, default=4, help="tiles per row (default 4)")
    many.add_argument("--on-bad-line", choices=("skip", "fail"), default="skip",
                      help="a malformed input line: skip it (reported) or stop (default skip)")
    _add_decode_options(sh)
    sh.set_defaults(func=_cmd_show)


def _add_model_parsers(sub) -> None:
    tr = sub.add_parser(
        "train",
        help="fine-tune a Qwen2-VL (LoRA) on `segtext build` records; needs segtext[model]",
        description=("Train on RECORDS (the JSON lines `segtext build` writes) and save the model to --output "
                     "(written next to it, then moved into place): messages records train "
                     "segtext.model.Segmenter (the model writes the mask as text), xsam records "
                     "segtext.model.XSamSegmenter (the model writes <SEG>, an X-SAM head draws the masks)."),
    )
    tr.add_argument("records", metavar="RECORDS", help="JSON lines from `segtext build` (messages or xsam style)")
    tr.add_argument("--head", choices=("auto", "text", "xsam"), default="auto",
                    help="text: the text path; xsam: the X-SAM mask head; auto (default): xsam when the first "
                         "record is an xsam record (its answer holds <SEG>), else text")
    tr.add_argument("--model", required=True, metavar="PATH",
                    help="a Qwen2-VL / Qwen2.5-VL checkpoint directory, a saved Segmenter, or 'tiny' "
                         "(a random 2-layer model, for trying the pipeline)")
    tr.add_argument("--output", required=True, metavar="DIR", help="where to save the trained model")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    tr.add_argument("--steps", type=_positive_int, default=100, help="optimiser steps (default 100)")
    tr.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate (default 5e-3)")
    tr.add_argument("--batch-size", type=_positive_int, default=4, help="records per step (default 4)")
    tr.add_argument("--encoding", choices=("rrle", "isd", "irle", "bsd"), default="rrle",
                    help="text path: the answers' format (default rrle); bsd adds the brick tokens")
    tr.add_argument("--grid-size", type=_positive_int, default=16, help="grid side of the I-SD family (default 16)")
    tr.add_argument("--resolution", type=_resolution, default=64, help="B-SD bricks per side (default 64)")
    tr.add_argument("--lora-r", type=_positive_int, default=8, help="LoRA rank (default 8)")
    tr.add_argument("--images", metavar="DIR", help="folder the records' image paths are relative to "
                                                   "(default: the records file's folder)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the batch order (default 0)")
    tr.add_argument("--quiet", action="store_true", help="no per-step loss lines")
    tr.set_defaults(func=_cmd_model, model_command="train")
    pr = sub.add_parser(
        "predict",
        help="segment one image with a trained model: JSON line on stdout, mask PNG with -o; needs segtext[model]",
        description=("Segment IMG with a `segtext train` model: a text-path model writes the mask text for "
                     "PROMPT (constrained by default, so it always decodes); an X-SAM model answers PROMPT or "
                     "--classes with its mask head."),
    )
    pr.add_argument("--model", required=True, metavar="DIR", help="a `segtext train` output (or a checkpoint)")
    pr.add_argument("--image", required=True, metavar="IMG", help="the image")
    pr.add_argument("--prompt", metavar="TEXT", help="what to segment (the referring phrase)")
    pr.add_argument("--classes", metavar="NAME,NAME,...",
                    help="X-SAM models: the classes of a semantic or panoptic segmentation (comma-separated)")
    pr.add_argument("--task", choices=("referring", "semantic", "panoptic"),
                    help="X-SAM models: referring (with --prompt; the default), semantic (with --classes; the "
                         "default then; -o writes the class index + 1 per pixel, 0 for none) or panoptic "
                         "(with --classes; -o writes COCO panoptic's RGB segment ids)")
    pr.add_argument("-o", "--output", metavar="MASK.png", help="write the mask as a PNG (0 / 255)")
    pr.add_argument("--no-constrain", action="store_true", help="text path: generate freely and decode in "
                                                                "repair mode")
    pr.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    pr.add_argument("--seed", type=int, default=None, help="seed for --sample")
    pr.add_argument("--max-new-tokens", type=_positive_int, default=None,
                    help="generation budget (default: twice the longest training answer)")
    pr.set_defaults(func=_cmd_model, model_command="predict")


def _cmd_model(args: argparse.Namespace) -> int:
    from segtext.model import commands

    try:
        return getattr(commands, args.model_command)(args)
    except commands.CommandError as e:
        raise CliError(str(e)) from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("segtext")
    except Exception:  # not installed (running from a source tree)
        return getattr(st, "__version__", "unknown")


# ----------------------------------------------------------------------------- input


def _parse_json(data: bytes, name: str) -> Any:
    if not data.strip():
        raise CliError(f"{name} is empty")
    try:
        return json.loads(data)
    except UnicodeDecodeError as e:
        raise CliError(f"{name} is not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise CliError(f"{name} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None


def _stdin_json() -> Any:
    return _parse_json(sys.stdin.buffer.read(), "stdin")


def _read_json(path: str, what: str) -> tuple[Any, str]:
    """The parsed JSON of ``path`` (``-``: stdin) and a name for messages."""
    if path == "-":
        return _stdin_json(), "stdin"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CliError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise CliError(f"input is a directory, expected {what}: {path}") from None
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    return _parse_json(data, path), path


def _load(args: argparse.Namespace, skipped: list) -> tuple[list[dict], str]:
    """The annotations of INPUT (the bundled sample by default) and a name for messages."""
    if args.input is None:
        source, name = st.coco.SAMPLE_PATH, f"bundled sample ({st.coco.SAMPLE_PATH})"
    elif args.input == "-":
        source, name = _stdin_json(), "stdin"
    else:
        source = name = args.input
        if os.path.isfile(source) and os.path.getsize(source) == 0:
            raise CliError(f"{name} is empty")
    try:
        anns = st.coco.load_annotations(source, skip_invalid=args.skip_invalid, skipped=skipped,
                                        limit=args.limit)
    except FileNotFoundError:
        raise CliError(f"input file not found: {name}") from None
    except IsADirectoryError:
        raise CliError(f"input is a directory, expected a COCO JSON file: {name}") from None
    except OSError as e:
        raise CliError(f"cannot read {name}: {e.strerror}") from None
    except ValueError as e:
        hint = " (use --skip-invalid to skip such annotations)" if re.search(r": annotation \d+", str(e)) else ""
        raise CliError(f"{e}{hint}") from None
    return anns, name


# ----------------------------------------------------------------------------- work


def _texts(items: list[dict], args: argparse.Namespace,
           bad: Callable[[dict, str], None]) -> Iterator[tuple[dict, str]]:
    """Texts for a chunk of annotations in one batch call; on failure, find the culprits one by one."""
    kw = dict(grid_size=args.grid_size, policy=args.policy, threshold=args.threshold,
              format=args.format, background=BACKGROUND)
    try:
        texts = st.rles_to_texts([it["segmentation"] for it in items], [it["text_label"] for it in items], **kw)
    except (ValueError, TypeError):
        pass
    else:
        yield from zip(items, texts)
        return
    for it in items:  # error path only: locate the annotation(s) the batch refused
        try:
            text = st.rle_to_text(it["segmentation"], it["text_label"], **kw)
        except (ValueError, TypeError) as e:
            bad(it, str(e))
        else:
            yield it, text


def _check_label(label: str) -> str | None:
    """None if ``label`` can stand in a grid text, else the reason it cannot."""
    try:
        st.check_label(label)
    except (ValueError, TypeError) as e:
        return str(e)
    if label == st.labels.BACKGROUND:
        return (f"{label!r} is the background word: the mask would decode as background; "
                "give the foreground another name")
    return None


class _AtomicOutput:
    """A text file written to a temporary name beside OUTPUT and renamed over it only on success."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise CliError(f"output directory does not exist: {directory}")
        if os.path.isdir(self.path):
            raise CliError(f"output is a directory: {path}")
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".segtext-", suffix=".part", dir=directory)
        except OSError as e:
            raise CliError(f"cannot write to {directory}: {e.strerror}") from None
        self.file: TextIO = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _progress(total: int, disable: bool, unit: str = "mask"):
    from tqdm import tqdm

    # delay: short runs finish before the bar would appear, so only long inputs show it
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, delay=0.5,
                dynamic_ncols=True, leave=False)


def _encode_options(args: argparse.Namespace) -> None:
    """Check that the options fit --format (before any input is read) and fill in the defaults."""
    if args.format == "bsd":
        if args.grid_size is not None:
            raise CliError("--grid-size is for the grid formats (rrle, isd, irle); "
                           "B-SD takes --resolution")
        args.resolution = DEFAULT_RESOLUTION if args.resolution is None else args.resolution
        args.box_format = DEFAULT_BOX_FORMAT if args.box_format is None else args.box_format
        return
    given = [opt for opt, value in (("--resolution", args.resolution), ("--box-format", args.box_format),
                                    ("--row-wise", args.row_wise), ("--per-annotation", args.per_annotation))
             if value not in (None, False)]
    if given:
        raise CliError(f"{', '.join(given)} goes with --format bsd, not --format {args.format}")
    args.grid_size = DEFAULT_GRID if args.grid_size is None else args.grid_size


def _bsd_reason(message: str) -> str:
    """An encode_bsd error for one object, without its position and the Python-only hint."""
    message = re.sub(r"^objects\[\d+\]:\s*", "", message)
    return re.sub(r"\s*\(pass skip_empty=True[^)]*\)", "", message)


def _bsd_groups(items: list[dict], args: argparse.Namespace,
                bad: Callable[[dict, str], None]) -> Iterator[tuple[list[dict], list[dict], str]]:
    """``(annotations, the ones encoded, text)`` per output line: per image, in annotation order."""
    groups: dict[Any, list[dict]] = {}
    for it in items:
        per_image = not args.per_annotation and it["image_id"] is not None
        key = ("image", it["image_id"]) if per_image else ("annotation", it["index"])
        groups.setdefault(key, []).append(it)
    kw = dict(resolution=args.resolution, policy=args.policy, threshold=args.threshold,
              row_wise=args.row_wise, box_format=args.box_format)
    for group in groups.values():
        size = tuple(group[0]["image_size"])
        fits = []
        for it in group:
            if tuple(it["image_size"]) != size:
                bad(it, f"image size {list(it['image_size'])} differs from {list(size)}, the size of "
                        f"the first annotation of image {it['image_id']}")
            else:
                fits.append(it)
        try:
            text = st.encode_bsd([(it["text_label"], it["segmentation"]) for it in fits], size, **kw)
        except (ValueError, TypeError):
            pass
        else:
            yield group, fits, text
            continue
        good, parts = [], []
        for it in fits:  # error path only: find the annotation(s) encode_bsd refused
            try:
                parts.append(st.encode_bsd([(it["text_label"], it["segmentation"])], size, **kw))
            except (ValueError, TypeError) as e:
                bad(it, _bsd_reason(str(e)))
            else:
                good.append(it)
        yield group, good, "".join(parts)  # the blocks of one image are written independently


def _grid_lines(items: list[dict], args: argparse.Namespace, bad: Callable[[dict, str], None],
                bar) -> Iterator[tuple[int, str]]:
    h, w = args.grid_size
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        for it, text in _texts(chunk, args, bad):
            yield 1, json.dumps({
                "id": it["id"],
                "image_id": it["image_id"],
                "category_id": it["category_id"],
                "label": it["text_label"],
                "image_size": list(it["image_size"]),
                "grid_size": [h, w],
                "text": text,
            }, ensure_ascii=False)
        bar.update(len(chunk))


def _bsd_lines(items: list[dict], args: argparse.Namespace, bad: Callable[[dict, str], None],
               bar) -> Iterator[tuple[int, str]]:
    common = {"resolution": args.resolution, "box_format": args.box_format, "row_wise": args.row_wise}
    for group, good, text in _bsd_groups(items, args, bad):
        bar.update(len(group))
        if not good:
            continue
        first = good[0]
        if args.per_annotation:
            rec = {"id": first["id"], "image_id": first["image_id"], "category_id": first["category_id"],
                   "label": first["text_label"]}
        else:
            rec = {"image_id": first["image_id"], "ids": [it["id"] for it in good],
                   "category_ids": [it["category_id"] for it in good],
                   "labels": [it["text_label"] for it in good]}
        rec.update(image_size=list(first["image_size"]), **common, text=text)
        yield len(good), json.dumps(rec, ensure_ascii=False)


# ----------------------------------------------------------------------------- label-map sources


def _source_options(args: argparse.Namespace) -> str | None:
    """Which label-map source (``"panoptic"``, ``"semantic"`` or None) and whether its options fit."""
    source = "panoptic" if args.panoptic is not None else "semantic" if args.label_dir is not None else None
    if args.panoptic is not None and args.label_dir is not None:
        raise CliError("--panoptic and --label-dir are two different inputs; give one")
    pairs = (("--panoptic", args.panoptic, "--png-dir", args.png_dir),
             ("--label-dir", args.label_dir, "--classes", args.classes))
    for main_opt, main_val, other, other_val in pairs:
        if main_val is not None and other_val is None:
            raise CliError(f"{main_opt} needs {other}")
        if main_val is None and other_val is not None:
            raise CliError(f"{other} goes with {main_opt}")
    if args.instances and source != "panoptic":
        raise CliError("--instances goes with --panoptic")
    if args.ignore_index is not None and source != "semantic":
        raise CliError("--ignore-index goes with --label-dir")
    if source is None:
        return None
    flag = "--panoptic" if source == "panoptic" else "--label-dir"
    if args.input is not None:
        raise CliError(f"{flag} replaces INPUT; give one of them")
    for opt, value in (("--label", args.label), ("--per-annotation", args.per_annotation)):
        if value not in (None, False):
            raise CliError(f"{opt} is for COCO instance annotations, not {flag}")
    if source == "semantic" and args.format == "bsd":
        raise CliError("--label-dir writes the grid formats (rrle, isd, irle), not --format bsd")
    return source


def _read_png(path: str) -> np.ndarray:
    """The pixels of a PNG file as a numpy array (ValueError for a missing or unreadable one)."""
    from segtext.records import read_label_png

    return read_label_png(path)


def _labels_problem(labels: Sequence[str], cache: dict[str, str | None]) -> str | None:
    for label in labels:
        if label not in cache:
            cache[label] = _check_label(label)
        if cache[label]:
            return f"label {label!r}: {cache[label]}"
    return None


def _grid_record(args: argparse.Namespace, rec: dict, label_map: np.ndarray, labels: list[str],
                 ignore_index: int | None = None) -> str:
    grid = st.mask_to_grid(label_map, args.grid_size, args.policy, threshold=args.threshold,
                           ignore_index=ignore_index)
    encode = {"rrle": st.encode_rrle, "isd": st.encode_isd, "irle": st.encode_irle}[args.format]
    rec.update(image_size=list(label_map.shape[:2]), grid_size=list(args.grid_size), labels=list(labels),
               text=encode(grid, labels))
    return json.dumps(rec, ensure_ascii=False)


def _panoptic_input(args: argparse.Namespace) -> tuple[str, list, dict, list, dict, set]:
    """``(name, annotations, images by id, categories, category names, thing ids)`` of --panoptic."""
    data, name = _read_json(args.panoptic, "a COCO panoptic JSON file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise CliError(f"{name}: expected COCO panoptic JSON (an object with an 'annotations' list)")
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise CliError(f"{name}: expected a 'categories' list (id, name, isthing) in the panoptic JSON")
    names: dict[int, str] = {}
    for n, c in enumerate(cats):
        if not isinstance(c, dict) or type(c.get("id")) is not int or not isinstance(c.get("name"), str):
            raise CliError(f"{name}: categories[{n}] needs an int 'id' and a str 'name'")
        names[c["id"]] = c["name"]
    things = {c["id"] for c in cats if c.get("isthing", 1)}
    images = {img["id"]: img for img in data.get("images") or [] if isinstance(img, dict) and "id" in img}
    if not os.path.isdir(args.png_dir):
        raise CliError(f"--png-dir is not a folder: {args.png_dir}")
    anns = data["annotations"][:args.limit] if args.limit else data["annotations"]
    return name, anns, images, cats, names, things


def _panoptic_segments(ann: Any, names: dict, png: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The segment id of every pixel and ``(segment id, category id)`` of the segments present,
    in the order of their first pixel (raster order); ValueError naming a bad segment."""
    segs = ann.get("segments_info")
    if not isinstance(segs, list):
        raise ValueError("no 'segments_info' list")
    cat_of: dict[int, int] = {}
    for n, seg in enumerate(segs):
        if not isinstance(seg, dict) or type(seg.get("id")) is not int or type(seg.get("category_id")) is not int:
            raise ValueError(f"segments_info[{n}] needs an int 'id' and 'category_id'")
        if seg["category_id"] not in names:
            raise ValueError(f"segment {seg['id']} (segments_info[{n}]) has category_id "
                             f"{seg['category_id']}, not in 'categories'")
        cat_of[seg["id"]] = seg["category_id"]
    if png.ndim != 3 or png.shape[2] != 3:
        raise ValueError("not an RGB picture (a panoptic PNG holds segment ids as R + 256*G + 256**2*B)")
    ids = png[..., 0].astype(np.int64) + 256 * png[..., 1].astype(np.int64) + 65536 * png[..., 2].astype(np.int64)
    present, first = np.unique(ids, return_index=True)
    unknown = [int(v) for v in present if v != 0 and int(v) not in cat_of]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"segment id {unknown[0]} is in the PNG but not in segments_info{more}")
    order = [int(present[k]) for k in np.argsort(first, kind="stable") if present[k] != 0]
    return ids, [(sid, cat_of[sid]) for sid in order]


def _panoptic_lines(args: argparse.Namespace, anns: list, images: dict, cats: list, names: dict,
                    things: set, skips: _Skips, bar) -> Iterator[tuple[int, str]]:
    cache: dict[str, str | None] = {}
    kw = dict(resolution=args.resolution, policy=args.policy, threshold=args.threshold,
              row_wise=args.row_wise, box_format=args.box_format)
    for n, ann in enumerate(anns):
        bar.update(1)
        file_name = ann.get("file_name") if isinstance(ann, dict) else None
        if not isinstance(file_name, str):
            skips.bad(n, f"annotation {n}", "no 'file_name'")
            continue
        path = os.path.join(args.png_dir, file_name)
        try:
            png = _read_png(path)
            ids, segments = _panoptic_segments(ann, names, png)
            H, W = ids.shape
            info = images.get(ann.get("image_id"), {})
            if "height" in info and "width" in info and (info["height"], info["width"]) != (H, W):
                raise ValueError(f"the PNG is {H}x{W} pixels, the image entry says "
                                 f"{info['height']}x{info['width']}")
            rec: dict[str, Any] = {"image_id": ann.get("image_id"), "file_name": file_name}
            if args.format == "bsd":
                count: dict[int, int] = {}
                labels = []
                for _, cat in segments:
                    count[cat] = count.get(cat, 0) + 1
                    labels.append(f"{names[cat]} {count[cat]}" if args.instances and cat in things else names[cat])
                problem = _labels_problem(labels, cache)
                if problem:
                    raise ValueError(problem)
                objects = [(label, ids == sid) for label, (sid, _) in zip(labels, segments)]
                text = st.encode_bsd(objects, (H, W), **kw)
                rec.update(image_size=[H, W], resolution=args.resolution, box_format=args.box_format,
                           row_wise=args.row_wise, segment_ids=[sid for sid, _ in segments],
                           category_ids=[cat for _, cat in segments], labels=labels, text=text)
                line = json.dumps(rec, ensure_ascii=False)
            else:
                label_map, labels = st.coco.panoptic_to_label_map(png, ann["segments_info"], cats,
                                                                  instances=args.instances)
                problem = _labels_problem(labels[1:], cache)
                if problem:
                    raise ValueError(problem)
                line = _grid_record(args, rec, label_map, labels)
        except (ValueError, TypeError) as e:
            skips.bad(n, f"annotation {n} ({path})", _bsd_reason(str(e)))
            continue
        yield 1, line


def _read_classes(path: str) -> list[str]:
    """The class names of --classes, id 0 written as the background word."""
    from segtext.records import read_class_names

    try:
        return read_class_names(path)
    except ValueError as e:
        raise CliError(str(e)) from None


def _semantic_lines(args: argparse.Namespace, files: list[str], classes: list[str], skips: _Skips,
                    bar) -> Iterator[tuple[int, str]]:
    ignore = args.ignore_index
    for n, file_name in enumerate(files):
        bar.update(1)
        path = os.path.join(args.label_dir, file_name)
        try:
            label_map = _read_png(path)
            if label_map.ndim != 2:
                raise ValueError("not a single-channel label map (expected a PNG of mode L, P, I or I;16)")
            values = np.unique(label_map)
            beyond = [int(v) for v in values if int(v) >= len(classes) and int(v) != ignore]
            if beyond:
                hint = "" if ignore is not None else "; pass --ignore-index for a value that marks unlabelled pixels"
                raise ValueError(f"pixel value {beyond[0]} is beyond the classes file ({len(classes)} names, "
                                 f"ids 0..{len(classes) - 1}){hint}")
            line = _grid_record(args, {"file_name": file_name}, label_map.astype(np.int32), classes, ignore)
        except (ValueError, TypeError) as e:
            skips.bad(n, path, str(e))
            continue
        yield 1, line


def _encode_label_maps(args: argparse.Namespace, source: str, t0: float) -> int:
    """`segtext encode --panoptic ... / --label-dir ...`: one line per image."""
    if source == "panoptic":
        name, anns, images, cats, names, things = _panoptic_input(args)
        skips = _Skips(name, args.skip_invalid, "image")
        make = lambda bar: _panoptic_lines(args, anns, images, cats, names, things, skips, bar)  # noqa: E731
        total, empty = len(anns), "it holds no annotations"
    else:
        if not os.path.isdir(args.label_dir):
            raise CliError(f"--label-dir is not a folder: {args.label_dir}")
        classes = _read_classes(args.classes)
        files = sorted(f for f in os.listdir(args.label_dir)
                       if f.lower().endswith(".png") and os.path.isfile(os.path.join(args.label_dir, f)))
        files = files[:args.limit] if args.limit else files
        skips = _Skips(args.label_dir, args.skip_invalid, "image", prefix=False)  # each file named in full
        make = lambda bar: _semantic_lines(args, files, classes, skips, bar)  # noqa: E731
        total, empty = len(files), "it holds no PNG files"
    written, images_done = _write_lines(args, total, "image", make, skips, empty)
    _summary(args, t0, images_done, "images", written, skips)
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    source = _source_options(args)
    _encode_options(args)
    if source is not None:
        return _encode_label_maps(args, source, t0)
    if args.label is not None:
        problem = _check_label(args.label)
        if problem:
            raise CliError(f"--label {args.label!r} cannot be used: {problem}")

    loader_skipped: list[tuple[int, Any, str]] = []
    anns, name = _load(args, loader_skipped)
    skips = _Skips(name, args.skip_invalid, "annotation")

    def bad(index: int, aid: Any, why: str) -> None:
        skips.bad(index, f"annotation {index}" + (f" (id {aid})" if aid is not None else ""), why)

    for index, aid, why in loader_skipped:
        bad(index, aid, why)
    # every label is checked before a line is written
    items: list[dict] = []
    label_problem: dict[str, str | None] = {}
    for ann in anns:
        label = args.label if args.label is not None else (ann["label"] or DEFAULT_LABEL)
        if label not in label_problem:
            label_problem[label] = _check_label(label)
        if label_problem[label]:
            bad(ann["index"], ann["id"], f"{label_problem[label]}; pass --label to override it")
            continue
        items.append({**ann, "text_label": label})

    lines_of = _bsd_lines if args.format == "bsd" else _grid_lines
    written, masks = _write_lines(
        args, len(items), "mask",
        lambda bar: lines_of(items, args, lambda it, why: bad(it["index"], it["id"], why), bar),
        skips, "it holds no annotations")
    _summary(args, t0, masks, "masks", written, skips)
    return 0


class _Skips:
    """Invalid inputs of a run: an error naming the first one, or with --skip-invalid, a count."""

    def __init__(self, name: str, skip: bool, what: str, prefix: bool = True):
        self.name, self.skip, self.what, self.prefix = name, skip, what, prefix
        self.items: list[tuple[int, str, str]] = []  # (index, where, reason)

    def bad(self, index: int, where: str, why: str) -> None:
        if not self.skip:
            where = f"{self.name}: {where}" if self.prefix else where
            raise CliError(f"{where}: {why} (use --skip-invalid to skip such {self.what}s)")
        self.items.append((index, where, why))

    def report(self) -> None:
        self.items.sort()
        for _, where, why in self.items[:MAX_REPORTED]:
            print(f"segtext encode: skipped {where}: {why}", file=sys.stderr)
        if len(self.items) > MAX_REPORTED:
            print(f"segtext encode: ... and {len(self.items) - MAX_REPORTED} more", file=sys.stderr)


def _write_lines(args: argparse.Namespace, total: int, unit: str,
                 make_lines: Callable[[Any], Iterator[tuple[int, str]]], skips: _Skips,
                 empty: str) -> tuple[int, int]:
    """Write ``(count, JSON line)`` pairs to stdout or, atomically, to -o; ``(lines, count)``.

    ``make_lines(bar)`` yields the lines and advances the progress bar (of ``total`` units). A run
    that writes nothing is an error: every input skipped, or ``empty`` (why there was nothing).
    """
    out = _AtomicOutput(args.output) if args.output else None
    stream = out.file if out else sys.stdout
    written = count = 0
    try:
        with _progress(total, args.no_progress or not sys.stderr.isatty(), unit) as bar:
            batch: list[str] = []
            for n, line in make_lines(bar):
                batch.append(line)
                count += n
                if len(batch) >= CHUNK:
                    stream.write("\n".join(batch) + "\n")
                    written += len(batch)
                    batch = []
            if batch:
                stream.write("\n".join(batch) + "\n")
                written += len(batch)
        if written == 0:  # nothing to write is an error, not an empty success
            skips.report()
            if skips.items:
                raise CliError(f"{skips.name}: nothing to write: all {len(skips.items)} "
                               f"{skips.what}(s) were skipped")
            raise CliError(f"{skips.name}: nothing to write: {empty}")
        if out:
            out.commit()
        else:
            sys.stdout.flush()
    except BaseException:
        if out:
            out.discard()
        raise
    return written, count


def _summary(args: argparse.Namespace, t0: float, count: int, unit: str, written: int,
             skips: _Skips) -> None:
    """The closing line of `segtext encode` on stderr, after the skipped inputs."""
    dt = time.perf_counter() - t0
    rate = count / dt if dt > 0 else float("inf")
    dest = args.output if args.output else "stdout"
    if args.format == "bsd":
        how = (f"B-SD resolution {args.resolution}, boxes {args.box_format}"
               + (", row-wise" if args.row_wise else "") + f", policy {args.policy}, {written} line(s)")
    else:
        h, w = args.grid_size
        how = f"grid {h}x{w}, policy {args.policy}, format {args.format}"
    msg = (f"segtext encode: {count} {unit} in {dt:.2f} s ({rate:,.{0 if rate >= 100 else 1}f} {unit}/s), "
           f"{how} -> {dest}")
    if skips.items:
        skips.report()
        msg += f"; skipped {len(skips.items)} invalid {skips.what}(s)"
    print(msg, file=sys.stderr)


# ----------------------------------------------------------------------------- eval


def _report_problems(command: str, problems: list, limit: int = MAX_REPORTED) -> None:
    """Print problems to stderr, at most ``limit`` of each kind, then how many more."""
    by_kind: dict[str, list] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    what = {"bad_line": "bad line", "bad_ground_truth": "bad ground truth",
            "no_ground_truth": "no ground truth", "missing_prediction": "missing prediction"}
    for kind, items in by_kind.items():
        for p in items[:limit]:
            print(f"segtext {command}: {what.get(kind, kind)}: {p}", file=sys.stderr)
        if len(items) > limit:
            print(f"segtext {command}: ... and {len(items) - limit} more {what.get(kind, kind)}(s)",
                  file=sys.stderr)


class _Inputs:
    """File arguments where '-' means standard input.

    Standard input is copied to a temporary file (the evaluation reads a ground truth twice when it
    is JSON Lines), and messages name it "stdin"."""

    def __init__(self, **paths: str | None):
        dashes = [k for k, v in paths.items() if v == "-"]
        if len(dashes) > 1:
            raise CliError(f"only one input can be read from stdin ('-'), not {' and '.join(dashes)}")
        self.dir: str | None = None
        self.tmp: str | None = None
        self.paths: dict[str, str | None] = {}
        for key, value in paths.items():
            if value == "-":
                self.dir = tempfile.mkdtemp(prefix="segtext-stdin-")
                self.tmp = os.path.join(self.dir, "stdin")
                with open(self.tmp, "wb") as f:
                    shutil.copyfileobj(sys.stdin.buffer, f)
                value = self.tmp
            self.paths[key] = value

    def name(self, text: str) -> str:
        """``text`` with the temporary file's name replaced by "stdin"."""
        return text.replace(self.tmp, "stdin") if self.tmp else text

    def rename(self, problems: list) -> None:
        """Name "stdin" in each problem (in place) instead of the temporary file."""
        if self.tmp:
            problems[:] = [dataclasses.replace(p, source=self.name(p.source)) for p in problems]

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "_Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _refuse_empty(path: str, what: str, inputs: _Inputs) -> None:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        holds = "no usable sample" if what == "ground truth" else "no prediction"
        raise CliError(f"{what}: {inputs.name(path)} is empty: it holds {holds}")


def _run_evaluation(args: argparse.Namespace, predictions: str, ground_truth: str, keep_answers: bool,
                    inputs: _Inputs):
    from segtext import evaluation as E

    command = args.command
    _refuse_empty(ground_truth, "ground truth", inputs)
    _refuse_empty(predictions, "predictions", inputs)
    problems: list = []
    try:
        gts = E.load_ground_truth(ground_truth, args.on_bad_line, problems)
    except E.EvaluationError as e:
        raise CliError(inputs.name(f"ground truth: {e}")) from None
    inputs.rename(problems)
    if not gts:
        _report_problems(command, problems)  # say why each entry was unusable
        raise CliError(f"ground truth: {inputs.name(ground_truth)} holds no usable sample")
    disable = getattr(args, "no_progress", False) or not sys.stderr.isatty()
    with _progress(len(gts), disable) as bar:
        bar.unit = "sample"
        try:
            res = E.evaluate(predictions, gts, format=args.format, mode=args.mode,
                             grid_size=args.grid_size, upsample=args.upsample,
                             resolution=args.resolution, box_format=args.box_format,
                             labels=args.labels, unknown=args.unknown,
                             on_bad_line=args.on_bad_line, keep_records=True,
                             keep_answers=keep_answers, progress=bar.update)
        except E.EvaluationError as e:
            raise CliError(inputs.name(f"predictions: {e}")) from None
    inputs.rename(res.problems)
    if res.health.predictions == 0:  # zero predictions read: nothing was scored against the answers
        _report_problems(command, [p for p in res.problems if p.kind == "bad_line"])
        raise CliError(f"predictions: {inputs.name(predictions)} holds no usable prediction "
                       f"({res.health.bad_lines} bad line(s))")
    if res.metrics["n"] == 0:
        raise CliError("no sample was scored")
    # the ground truth was read here, so its problems are merged in front
    res.problems[:0] = problems
    res.health.bad_ground_truth = sum(p.kind == "bad_ground_truth" for p in problems)
    return res, gts


def _write_atomic_text(path: str, lines: Iterator[str]) -> None:
    out = _AtomicOutput(path)
    try:
        for line in lines:
            out.file.write(line)
        out.commit()
    except BaseException:
        out.discard()
        raise


def _cmd_eval(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    for opt in (args.json_out, args.per_sample):  # fail before the work, not after it
        if opt:
            directory = os.path.dirname(os.path.abspath(opt))
            if not os.path.isdir(directory):
                raise CliError(f"output directory does not exist: {directory}")
            if os.path.isdir(opt):
                raise CliError(f"output is a directory: {opt}")
    with _Inputs(PREDICTIONS=args.predictions, GROUND_TRUTH=args.ground_truth) as inputs:
        res, _ = _run_evaluation(args, inputs.paths["PREDICTIONS"], inputs.paths["GROUND_TRUTH"],
                                 keep_answers=False, inputs=inputs)
    dt = time.perf_counter() - t0
    _report_problems("eval", [p for p in res.problems if p.kind != "missing_prediction"])
    missing = [p for p in res.problems if p.kind == "missing_prediction"]
    _report_problems("eval", missing, limit=3)
    for note in res.notes:
        print(f"segtext eval: note: {note}", file=sys.stderr)

    o = res.options
    grid = "x".join(map(str, o["grid_size"])) if o["grid_size"] else "inferred"
    names = ["stdin" if v == "-" else v for v in (args.predictions, args.ground_truth)]
    header = (f"segtext eval: {names[0]} against {names[1]}\n"
              f"format {o['format']}, mode {o['mode']}, grid {grid}, upsample {o['upsample']}"
              + (f", B-SD resolution {o['resolution']}, boxes {o['box_format']}"
                 if res.health.formats.get("bsd") or o["format"] == "bsd" else ""))
    sys.stdout.write(header + "\n\n" + res.summary() + "\n")
    sys.stdout.flush()

    if args.json_out:
        doc = res.to_dict()
        doc["inputs"] = {"predictions": args.predictions, "ground_truth": args.ground_truth}
        doc["seconds"] = dt
        doc["segtext_version"] = _version()
        _write_atomic_text(args.json_out, iter([json.dumps(doc, indent=2, ensure_ascii=False) + "\n"]))
    if args.per_sample:
        _write_atomic_text(args.per_sample, (json.dumps(r.to_dict(), ensure_ascii=False) + "\n"
                                             for r in res.records))
    rate = res.metrics["n"] / dt if dt > 0 else float("inf")
    msg = f"segtext eval: {res.metrics['n']} samples in {dt:.2f} s ({rate:,.{0 if rate >= 100 else 1}f} samples/s)"
    written = [p for p in (args.json_out, args.per_sample) if p]
    if written:
        msg += " -> " + ", ".join(written)
    print(msg, file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- show


def _read_text_arg(value: str) -> str:
    """The answer in the file ``value`` (stdin for '-')."""
    if value == "-":
        return sys.stdin.read()
    if os.path.isdir(value):
        raise CliError(f"--text is a directory, expected a file: {value}")
    if not os.path.isfile(value):
        raise CliError(f"no such file: {value} (use --answer for a literal answer)")
    try:
        with open(value, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read --text file {value}: {e}") from None


def _read_gt_rle(value: str) -> dict:
    if value == "-":
        value, where = sys.stdin.read(), "--gt-rle from stdin"
    elif os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                value = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read --gt-rle file: {e}") from None
        where = "--gt-rle file"
    else:
        where = "--gt-rle"
    if not value.strip():
        raise CliError(f"{where} is empty")
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise CliError(f"{where} is neither a file nor valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    if isinstance(obj, dict) and "counts" not in obj:
        obj = next((obj[k] for k in ("segmentation", "rle", "mask") if isinstance(obj.get(k), dict)), obj)
    try:
        st.coco.rle_runs(obj, "--gt-rle")
    except (TypeError, ValueError) as e:
        raise CliError(f"{where} is not a usable COCO RLE: {e}") from None
    return obj


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            _check_picture_size(im.height, im.width, f"--image {path}")  # before decoding its pixels
            return im.convert("RGB")
    except FileNotFoundError:
        raise CliError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise CliError(f"cannot read image {path}: {e}") from None


def _check_picture_size(H: int, W: int, where: str) -> None:
    """Refuse a picture larger than the limits before anything of its size is allocated."""
    try:
        check_image_size(H, W, where)
    except ValueError as e:
        raise CliError(str(e)) from None
    if H * W > MAX_DRAW_PIXELS:
        raise CliError(f"{where} {[H, W]} has {H * W} pixels, more than segtext show draws "
                       f"({MAX_DRAW_PIXELS} = 64 megapixels)")


def _picture_format(path: str) -> str:
    """The Pillow format the suffix of ``path`` names; CliError for any other suffix."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in PICTURE_FORMATS:
        raise CliError(f"-o {path}: the suffix {suffix or '(none)'!r} names no picture format segtext show "
                       f"writes; use {', '.join(PICTURE_FORMATS)}")
    return PICTURE_FORMATS[suffix]


def _save_png(img, path: str) -> None:
    """Write ``img`` in the format of the suffix of ``path`` (:func:`write_picture`)."""
    write_picture(img, path, _picture_format(path))


def write_picture(img, path: str, fmt: str) -> None:
    """Write the Pillow image ``img`` as ``fmt`` to a temporary file beside ``path`` and rename it
    over ``path`` (the mode other files get, nothing left behind on failure; a :class:`CliError`
    for a missing folder or a folder given as the file). Also ``segtext predict``'s writer."""
    if fmt in ("JPEG", "PDF") and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise CliError(f"output directory does not exist: {directory}")
    if os.path.isdir(target):
        raise CliError(f"output is a directory: {path}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".segtext-", suffix=".part", dir=directory)
    except OSError as e:
        raise CliError(f"cannot write to {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cmd_show(args: argparse.Namespace) -> int:
    _picture_format(args.output)  # refuse an unknown suffix or a missing folder before any work
    directory = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(directory):
        raise CliError(f"output directory does not exist: {directory}")
    if args.worst is None:
        given = "--text" if args.text is not None else "--answer"
        for opt in ("predictions", "ground_truth", "images"):
            if getattr(args, opt) is not None:
                raise CliError(f"--{opt.replace('_', '-')} goes with --worst, not {given}")
        if args.text == "-" and args.gt_rle == "-":
            raise CliError("only one input can be read from stdin ('-'), not --text and --gt-rle")
        return _show_one(args)
    for opt in ("image_size", "image", "gt_rle"):
        if getattr(args, opt) is not None:
            raise CliError(f"--{opt.replace('_', '-')} goes with --text or --answer, not --worst")
    if args.predictions is None or args.ground_truth is None:
        raise CliError("--worst needs --predictions and --ground-truth")
    if args.worst * WORST_TILE * WORST_TILE > MAX_DRAW_PIXELS:
        raise CliError(f"--worst {args.worst}: a page of more than {MAX_DRAW_PIXELS // WORST_TILE ** 2} tiles "
                       f"is more than segtext show draws ({MAX_DRAW_PIXELS} pixels = 64 megapixels)")
    return _show_worst(args)


def _show_one(args: argparse.Namespace) -> int:
    from segtext import evaluation as E
    from segtext import viz

    gt_rle = _read_gt_rle(args.gt_rle) if args.gt_rle is not None else None
    image = _open_image(args.image) if args.image is not None else None
    sizes = {}
    if args.image_size is not None:
        sizes["--image-size"] = tuple(args.image_size)
    if image is not None:
        sizes["--image"] = (image.height, image.width)
    if gt_rle is not None:
        sizes["--gt-rle"] = tuple(int(v) for v in gt_rle["size"])
    if not sizes:
        raise CliError("give the image size: --image-size HxW (or --image, or --gt-rle)")
    if len(set(sizes.values())) > 1:
        raise CliError("the sizes disagree: " + ", ".join(f"{k} {h}x{w}" for k, (h, w) in sizes.items()))
    size = next(iter(sizes.values()))
    _check_picture_size(*size, "the image size")
    text = _read_text_arg(args.text) if args.text is not None else args.answer
    dec = E.decode_answer(text, size, format=args.format, mode=args.mode, grid_size=args.grid_size,
                          upsample=args.upsample, resolution=args.resolution, box_format=args.box_format,
                          labels=args.labels, unknown=args.unknown)
    pred, labels = dec.label_map()
    gs = dec.grid_size if dec.error is None else None
    if gs is not None and (gs[0] > size[0] or gs[1] > size[1]):
        gs = None  # more cells than pixels: no grid lines to draw
    gt = E.rle_to_mask(gt_rle) if gt_rle is not None else None
    try:
        img = viz.overlay(pred, image=image, labels=labels, grid_size=gs, boxes=dec.boxes() or None, gt=gt)
    except (ValueError, TypeError) as e:
        raise CliError(f"cannot draw the answer: {e}") from None
    _save_png(img, args.output)

    what = {"rrle": "R-RLE", "isd": "I-SD", "irle": "I-RLE", "bsd": "B-SD", "none": "no mask"}[dec.format]
    if gs is not None:
        what += f" {gs[0]}x{gs[1]}"
    if dec.objects is not None:
        what += f", {len(dec.objects.objects)} object(s)"
    msg = f"segtext show: {what}, {dec.status}"
    if dec.error is not None:
        msg += f" ({dec.error})"
    if dec.repairs:
        kinds = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in
                          sorted(Counter(r.kind for r in dec.repairs).items()))
        msg += f": {len(dec.repairs)} repair(s) ({kinds})"
    if gt is not None:
        s = dec.score(gt_rle)
        msg += f"; IoU {s.iou:.4f} against --gt-rle"
    print(msg + f" -> {args.output}", file=sys.stderr)
    for r in dec.repairs[:MAX_REPORTED]:
        print(f"segtext show:   {r}", file=sys.stderr)
    if len(dec.repairs) > MAX_REPORTED:
        print(f"segtext show:   ... and {len(dec.repairs) - MAX_REPORTED} more", file=sys.stderr)
    return 0


def _show_worst(args: argparse.Namespace) -> int:
    from segtext import evaluation as E
    from segtext import viz

    if args.images is not None and not os.path.isdir(args.images):
        raise CliError(f"--images is not a folder: {args.images}")
    with _Inputs(**{"--predictions": args.predictions, "--ground-truth": args.ground_truth}) as inputs:
        res, gts = _run_evaluation(args, inputs.paths["--predictions"], inputs.paths["--ground-truth"],
                                   keep_answers=True, inputs=inputs)
    _report_problems("show", [p for p in res.problems if p.kind != "missing_prediction"])
    worst = res.worst(args.worst)
    samples = []
    no_image = 0
    for rec in worst:
        gt = gts[rec.id if isinstance(rec.id, str) else str(rec.id)]
        if rec.answer is not None:
            dec = E.decode_answer(rec.answer, gt.image_size, format=args.format, mode=args.mode,
                                  grid_size=args.grid_size, upsample=args.upsample,
                                  resolution=args.resolution, box_format=args.box_format,
                                  labels=args.labels, unknown=args.unknown, gt_label=gt.label)
            pred = dec.mask()
        else:
            pred = np.zeros(gt.image_size, bool)
        image = None
        if args.images is not None:
            image = _find_image(args.images, gt)
            if image is None:
                no_image += 1
        title = f"{rec.id}  IoU {rec.iou:.3f}  {rec.status}"
        if rec.repairs:
            title += "\n" + ", ".join(sorted(rec.repairs))
        samples.append({"pred": pred, "gt": gt.mask(), "image": image, "title": title})
    page = viz.worst_page(samples, columns=args.columns, tile_size=WORST_TILE,
                          title=f"{len(samples)} worst of {res.metrics['n']} samples by IoU "
                                f"(cIoU {100 * res.metrics['ciou']:.2f}, gIoU {100 * res.metrics['giou']:.2f})")
    _save_png(page, args.output)
    if no_image:
        print(f"segtext show: {no_image} sample(s) drawn on a blank canvas: no matching image in {args.images}",
              file=sys.stderr)
    print(f"segtext show: {len(samples)} worst of {res.metrics['n']} samples "
          f"(IoU {worst[0].iou:.3f} to {worst[-1].iou:.3f}) -> {args.output}" if worst else
          f"segtext show: no samples -> {args.output}", file=sys.stderr)
    return 0


def _find_image(folder: str, gt):
    """The image of a ground truth in ``folder`` as an RGB array, or None when absent or of another size."""
    names = []
    if gt.file_name:
        names += [gt.file_name, os.path.basename(gt.file_name)]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                img = _open_image(path)
            except CliError as e:
                print(f"segtext show: {e}", file=sys.stderr)
                return None
            if (img.height, img.width) != tuple(gt.image_size):
                print(f"segtext show: {path} is {img.height}x{img.width}, the ground truth "
                      f"{gt.image_size[0]}x{gt.image_size[1]}; drawn on a blank canvas", file=sys.stderr)
                return None
            return np.asarray(img)
    return None


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``segtext`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> from segtext.cli import main
        >>> main(["encode", "--limit", "1", "--grid-size", "2", "--no-progress"])  # doctest: +NORMALIZE_WHITESPACE
        {"id": 0, "image_id": 42, "category_id": 18, "label": "dog", "image_size": [478, 640],
         "grid_size": [2, 2], "text": "others *1| dog *1\\n others *2\\n"}
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"segtext {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segtext {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `segtext encode | head`); silence the flush at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as e:  # e.g. the disk filled up while writing; -o leaves the old OUTPUT intact
        print(f"segtext {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
