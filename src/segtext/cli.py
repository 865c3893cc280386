"""The ``segtext`` command line.

``segtext encode`` turns COCO annotations into Text4Seg text, one JSON line per annotation::

    segtext encode --limit 3                      # the bundled sample of 734 real COCO masks
    segtext encode instances.json -o out.jsonl --grid-size 24 --policy nearest
    segtext encode results.json --format isd --label "the dog"

Exit status: 0 on success, 2 on a usage or input error (missing file, bad JSON, an annotation
without a usable segmentation unless ``--skip-invalid`` is given).  Diagnostics, the progress
bar and the closing summary go to stderr; stdout carries only the JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np

import segtext as st

BACKGROUND = "others"
DEFAULT_LABEL = "object"
MAX_REPORTED = 10  # skipped annotations listed one by one on stderr
CHUNK = 1024  # annotations per call of the batch kernel (bounds memory, paces the progress bar)

ENCODERS: dict[str, Callable[[np.ndarray, Sequence[str]], str]] = {
    "rrle": st.encode_rrle,
    "isd": st.encode_isd,
    "irle": st.encode_irle,
}


class CliError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


@dataclass
class _Item:
    index: int  # position in the input's annotation list
    ann: dict
    rle: dict
    image_size: tuple[int, int]
    label: str


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segtext",
        description="Segmentation masks as Text4Seg text (I-SD, R-RLE, I-RLE).",
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
            "With no INPUT the bundled sample of 734 real COCO val2014 masks is used."
        ),
    )
    enc.add_argument("input", nargs="?", metavar="INPUT",
                     help="COCO JSON file ('-' reads stdin); default: the bundled sample")
    enc.add_argument("-o", "--output", metavar="OUTPUT",
                     help="write the JSON lines here (atomically) instead of stdout")
    enc.add_argument("--grid-size", type=_grid_size, default=(16, 16), metavar="N|HxW",
                     help="grid size, N for NxN or HxW (default 16)")
    enc.add_argument("--policy", choices=("majority", "nearest", "any"), default="majority",
                     help="cell policy (default majority; nearest reproduces Text4Seg's Pillow resize)")
    enc.add_argument("--format", choices=tuple(ENCODERS), default="rrle",
                     help="text format: rrle (Text4Seg R-RLE, default), isd (one label per cell), irle")
    enc.add_argument("--threshold", type=_threshold, default=0.5,
                     help="foreground fraction for the majority policy, in (0, 1] (default 0.5)")
    enc.add_argument("--label", metavar="TEXT",
                     help="foreground label for every annotation (default: the category name)")
    enc.add_argument("--limit", type=_positive_int, metavar="N",
                     help="encode only the first N annotations")
    enc.add_argument("--skip-invalid", action="store_true",
                     help="skip annotations without a usable segmentation (and count them) instead of failing")
    enc.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    enc.set_defaults(func=_cmd_encode)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("segtext")
    except Exception:  # not installed (running from a source tree)
        return getattr(st, "__version__", "unknown")


# ----------------------------------------------------------------------------- input


def _load_json(path: str | None) -> tuple[Any, str]:
    """The parsed input and a name for messages."""
    if path is None:
        path = str(st.coco.SAMPLE_PATH)
        name = f"bundled sample ({path})"
    else:
        name = "stdin" if path == "-" else path
    try:
        if path == "-":
            return json.load(sys.stdin), name
        with open(path, "rb") as f:
            return json.load(f), name
    except FileNotFoundError:
        raise CliError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise CliError(f"input is a directory, expected a COCO JSON file: {path}") from None
    except PermissionError:
        raise CliError(f"cannot read input file (permission denied): {path}") from None
    except json.JSONDecodeError as e:
        raise CliError(f"{name} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"{name} is not valid JSON (not UTF-8 text): {e.reason} at byte {e.start}") from None


def _split_coco(data: Any, name: str) -> tuple[list, dict[Any, tuple[int, int]], dict[Any, str]]:
    """(annotations, image id -> (H, W), category id -> name) from instances or results JSON."""
    if isinstance(data, list):
        anns, images, categories = data, [], None
    elif isinstance(data, dict) and "annotations" in data:
        anns = data["annotations"]
        images = data.get("images") or []
        categories = data.get("categories")
    else:
        raise CliError(
            f"{name}: expected COCO instances JSON (an object with 'annotations') or COCO results JSON "
            f"(a list of annotations), got {type(data).__name__}"
            + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
        )
    if not isinstance(anns, list):
        raise CliError(f"{name}: 'annotations' must be a list, got {type(anns).__name__}")

    sizes: dict[Any, tuple[int, int]] = {}
    if isinstance(images, list):
        for img in images:
            if isinstance(img, dict) and isinstance(img.get("id"), (int, str)) and "height" in img and "width" in img:
                sizes[img["id"]] = (img["height"], img["width"])

    names: dict[Any, str] = {}
    if isinstance(categories, list):
        for cat in categories:
            if isinstance(cat, dict) and isinstance(cat.get("id"), (int, str)) and isinstance(cat.get("name"), str):
                names[cat["id"]] = cat["name"]
    return anns, sizes, names


def _label_for(ann: dict, names: dict[Any, str]) -> str:
    cid = ann.get("category_id")
    if not isinstance(cid, (int, str)):
        return DEFAULT_LABEL
    return names.get(cid) or st.coco.COCO_CATEGORY_NAMES.get(cid, DEFAULT_LABEL)


def _prepare(index: int, ann: Any, sizes: dict, names: dict, label: str | None) -> _Item:
    """Check one annotation and turn its segmentation into an RLE dict; ValueError says why not."""
    if not isinstance(ann, dict):
        raise ValueError(f"expected an annotation object, got {type(ann).__name__}")
    seg = ann.get("segmentation")
    if seg is None:
        raise ValueError("no 'segmentation'")
    if isinstance(seg, (list, dict)) and len(seg) == 0:
        raise ValueError("empty 'segmentation'")
    text = label if label is not None else _label_for(ann, names)

    try:
        image_size = sizes.get(ann.get("image_id"))
    except TypeError:  # an unhashable image_id: no image entry can match it
        image_size = None
    if image_size is None and "height" in ann and "width" in ann:
        image_size = (ann["height"], ann["width"])

    if isinstance(seg, dict) and "size" in seg and isinstance(seg.get("counts"), (str, bytes, list)):
        # An RLE that carries its size goes to the batch kernel as it is: decoding it here as
        # well would double the work. The batch call validates the runs (see _grids).
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ValueError(f"RLE 'size' must be [H, W] with positive integers, got {size!r}")
        if image_size is not None and tuple(image_size) != tuple(size):
            raise ValueError(f"RLE size {size} does not match the image's (height, width) {tuple(image_size)}")
        return _Item(index, ann, seg, (size[0], size[1]), text)

    if image_size is None and not isinstance(seg, dict):
        raise ValueError(f"cannot tell the image size of a polygon segmentation: image_id "
                         f"{ann.get('image_id')!r} has no entry with height and width in 'images'")
    try:
        rle = st.coco.to_rle(seg, image_size)  # rasterises polygons; validates other RLE dicts
    except (ValueError, TypeError) as e:
        raise ValueError(f"unusable segmentation: {e}") from None
    except Exception as e:  # pycocotools raises bare Exception for some malformed polygons
        raise ValueError(f"unusable segmentation ({type(e).__name__}: {e})") from None
    H, W = (int(v) for v in rle["size"])
    return _Item(index, ann, rle, (H, W), text)


# ----------------------------------------------------------------------------- work


def _grids(items: list[_Item], args: argparse.Namespace, bad: Callable[[_Item, str], None]) -> Iterator[tuple[_Item, np.ndarray]]:
    """Grids for a chunk of items, in one batch call; on failure, find the culprit(s) one by one."""
    kw = dict(grid_size=args.grid_size, policy=args.policy, threshold=args.threshold)
    try:
        grids = st.rles_to_grids([it.rle for it in items], **kw)
    except (ValueError, TypeError):
        pass
    else:
        yield from zip(items, grids)
        return
    for it in items:  # error path only: locate the annotation(s) the batch refused
        try:
            grid = st.rle_to_grid(it.rle, **kw)
        except (ValueError, TypeError) as e:
            bad(it, str(e))
        else:
            yield it, grid


def _check_label(label: str) -> str | None:
    """None if ``label`` can stand in a grid text, else the reason it cannot."""
    try:
        st.check_label(label)
    except (ValueError, TypeError) as e:
        return str(e)
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


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    # delay: short runs finish before the bar would appear, so only long inputs show it
    return tqdm(total=total, unit="mask", file=sys.stderr, disable=disable, delay=0.5,
                dynamic_ncols=True, leave=False)


def _cmd_encode(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    encode = ENCODERS[args.format]
    if args.label is not None:
        problem = _check_label(args.label)
        if problem:
            raise CliError(f"--label {args.label!r} cannot be used: {problem}")

    data, name = _load_json(args.input)
    anns, sizes, names = _split_coco(data, name)
    del data
    if args.limit is not None:
        anns = anns[: args.limit]

    skipped: list[tuple[int, str, str]] = []  # (index, "annotation i (id n)", reason)

    def bad(index: int, ann: Any, why: str) -> None:
        aid = ann.get("id") if isinstance(ann, dict) else None
        where = f"annotation {index}" + (f" (id {aid})" if aid is not None else "")
        if not args.skip_invalid:
            raise CliError(f"{name}: {where}: {why} (use --skip-invalid to skip such annotations)")
        skipped.append((index, where, why))

    # Pass 1: validate every annotation before a line is written.
    items: list[_Item] = []
    for i, ann in enumerate(anns):
        try:
            items.append(_prepare(i, ann, sizes, names, args.label))
        except ValueError as e:
            bad(i, ann, str(e))

    label_problem: dict[str, str | None] = {}
    out = _AtomicOutput(args.output) if args.output else None
    stream = out.file if out else sys.stdout
    h, w = args.grid_size
    written = 0
    try:
        with _progress(len(items), args.no_progress or not sys.stderr.isatty()) as bar:
            for start in range(0, len(items), CHUNK):
                chunk = items[start:start + CHUNK]
                lines = []
                for it, grid in _grids(chunk, args, lambda it, why: bad(it.index, it.ann, why)):
                    if it.label not in label_problem:
                        label_problem[it.label] = _check_label(it.label)
                    if label_problem[it.label]:
                        bad(it.index, it.ann, f"{label_problem[it.label]}; pass --label to override it")
                        continue
                    text = encode(grid, (BACKGROUND, it.label))
                    ann = it.ann
                    lines.append(json.dumps({
                        "id": ann.get("id", it.index),
                        "image_id": ann.get("image_id"),
                        "category_id": ann.get("category_id"),
                        "label": it.label,
                        "image_size": list(it.image_size),
                        "grid_size": [h, w],
                        "text": text,
                    }, ensure_ascii=False))
                if lines:
                    stream.write("\n".join(lines) + "\n")
                    written += len(lines)
                bar.update(len(chunk))
            if out:
                out.commit()
            else:
                sys.stdout.flush()
    except BaseException:
        if out:
            out.discard()
        raise

    dt = time.perf_counter() - t0
    rate = written / dt if dt > 0 else float("inf")
    dest = args.output if args.output else "stdout"
    msg = (f"segtext encode: {written} masks in {dt:.2f} s ({rate:,.{0 if rate >= 100 else 1}f} masks/s), "
           f"grid {h}x{w}, policy {args.policy}, format {args.format} -> {dest}")
    if skipped:
        skipped.sort()
        for _, where, why in skipped[:MAX_REPORTED]:
            print(f"segtext encode: skipped {where}: {why}", file=sys.stderr)
        if len(skipped) > MAX_REPORTED:
            print(f"segtext encode: ... and {len(skipped) - MAX_REPORTED} more", file=sys.stderr)
        msg += f"; skipped {len(skipped)} invalid annotation(s)"
    print(msg, file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``segtext`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
