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
from typing import Any, Callable, Iterator, Sequence, TextIO

import segtext as st

BACKGROUND = "others"
DEFAULT_LABEL = "object"
MAX_REPORTED = 10  # skipped annotations listed one by one on stderr
CHUNK = 1024  # annotations per call of the batch kernel (bounds memory, paces the progress bar)

FORMATS = ("rrle", "isd", "irle")


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
    enc.add_argument("--format", choices=FORMATS, default="rrle",
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


def _load(args: argparse.Namespace, skipped: list) -> tuple[list[dict], str]:
    """The annotations of INPUT (the bundled sample by default) and a name for messages."""
    if args.input is None:
        source, name = st.coco.SAMPLE_PATH, f"bundled sample ({st.coco.SAMPLE_PATH})"
    elif args.input == "-":
        name = "stdin"
        try:
            source = json.load(sys.stdin)
        except json.JSONDecodeError as e:
            raise CliError(f"stdin is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    else:
        source = name = args.input
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
        raise CliError(f"{e} (use --skip-invalid to skip such annotations)") from None
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
    if args.label is not None:
        problem = _check_label(args.label)
        if problem:
            raise CliError(f"--label {args.label!r} cannot be used: {problem}")

    loader_skipped: list[tuple[int, Any, str]] = []
    anns, name = _load(args, loader_skipped)
    skipped: list[tuple[int, str, str]] = []  # (index, "annotation i (id n)", reason)

    def bad(index: int, aid: Any, why: str) -> None:
        where = f"annotation {index}" + (f" (id {aid})" if aid is not None else "")
        if not args.skip_invalid:
            raise CliError(f"{name}: {where}: {why} (use --skip-invalid to skip such annotations)")
        skipped.append((index, where, why))

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

    out = _AtomicOutput(args.output) if args.output else None
    stream = out.file if out else sys.stdout
    h, w = args.grid_size
    written = 0
    try:
        with _progress(len(items), args.no_progress or not sys.stderr.isatty()) as bar:
            for start in range(0, len(items), CHUNK):
                chunk = items[start:start + CHUNK]
                lines = []
                for it, text in _texts(chunk, args, lambda it, why: bad(it["index"], it["id"], why)):
                    lines.append(json.dumps({
                        "id": it["id"],
                        "image_id": it["image_id"],
                        "category_id": it["category_id"],
                        "label": it["text_label"],
                        "image_size": list(it["image_size"]),
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
