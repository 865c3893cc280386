"""``segtext train`` and ``segtext predict``: the command-line face of
:class:`~segtext.model.segmenter.Segmenter` (the text path) and
:class:`~segtext.model.xsam_model.XSamSegmenter` (the mask-head path).

``train`` picks the path from the records (``--head auto``): ``xsam`` records (a ``conversations``
layout whose answer holds ``<SEG>``, as ``segtext build --style xsam`` writes them) train the
mask head, anything else the text path; ``predict`` picks it from the saved model
(``segtext_xsam.json`` or ``segtext.json``).

Private to the command line (:mod:`segtext.cli` builds the parsers and calls these); torch,
transformers and peft are imported only when one of the commands runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any


class CommandError(Exception):
    """A problem the command reports as ``segtext CMD: error: ...`` with exit status 2."""


def _segmenter_cls(head: str = "text") -> Any:
    try:
        if head == "xsam":
            from segtext.model.xsam_model import XSamSegmenter as cls
        else:
            from segtext.model.segmenter import Segmenter as cls
    except ImportError as e:
        raise CommandError(f"{e} (the model commands need: pip install 'segtext[model]')") from None
    return cls


def _saved_head(path: str) -> str | None:
    """``"xsam"`` or ``"text"`` for a directory a segmenter saved, else None."""
    if os.path.isfile(os.path.join(path, "segtext_xsam.json")):
        return "xsam"
    if os.path.isfile(os.path.join(path, "segtext.json")):
        return "text"
    return None


def _records_head(path: str) -> str:
    """The path the first record of a JSON Lines file is for: ``"xsam"`` for X-SAM's layout (a
    ``conversations`` record whose gpt turn holds ``<SEG>``, or with ``segment_classes``), else
    ``"text"`` (the text path then checks the records and names any it cannot read)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    return "text"
                if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
                    return "text"
                answers = [t.get("value") for t in rec["conversations"] if isinstance(t, dict) and t.get("from") == "gpt"]
                if "segment_classes" in rec or any(isinstance(a, str) and "<SEG>" in a for a in answers):
                    return "xsam"
                return "text"
    return "text"


def train(args: Any) -> int:
    if not os.path.exists(args.records):
        raise CommandError(f"records file {args.records!r} does not exist")
    if os.path.exists(args.output) and not args.overwrite:
        raise CommandError(f"output {args.output!r} exists (pass --overwrite to replace it)")
    head = args.head if args.head != "auto" else _records_head(args.records)
    saved = None if args.model == "tiny" else _saved_head(args.model)
    if saved is not None and saved != head:
        raise CommandError(f"--model {args.model!r} is a saved {'X-SAM' if saved == 'xsam' else 'text-path'} "
                           f"segmenter, but the records are for the {'mask-head' if head == 'xsam' else 'text'} "
                           "path (--head says which)")
    cls = _segmenter_cls(head)
    lora = {"r": args.lora_r}
    try:
        if head == "xsam":
            seg = cls.tiny(seed=args.seed, lora=lora) if args.model == "tiny" else cls.from_pretrained(
                args.model, lora=lora)
        elif args.model == "tiny":
            seg = cls.tiny(encoding=args.encoding, grid_size=args.grid_size, resolution=args.resolution,
                           lora=lora, seed=args.seed)
        else:
            seg = cls.from_pretrained(args.model, encoding=args.encoding, grid_size=args.grid_size,
                                      resolution=args.resolution, lora=lora)
        t0 = time.perf_counter()
        every = max(1, args.steps // 20)

        def report(step: int, loss: float) -> None:
            if not args.quiet and (step % every == 0 or step + 1 == args.steps):
                print(f"segtext train: step {step + 1}/{args.steps} loss {loss:.4f}", file=sys.stderr, flush=True)

        losses = seg.fit(args.records, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         image_root=args.images, progress=report)
    except (ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    # written next to the output, then moved into place: a failure leaves no half-written model
    parent = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".segtext-train-", dir=parent)
    try:
        seg.save_pretrained(tmp)
        if os.path.exists(args.output):
            shutil.rmtree(args.output)
        os.replace(tmp, args.output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    kind = "the X-SAM mask head" if head == "xsam" else "the text path"
    print(f"segtext train: {kind}, {len(losses)} steps in {time.perf_counter() - t0:.1f} s, loss {first:.4f} -> "
          f"{last:.4f}, model written to {args.output}", file=sys.stderr)
    return 0


def _write_png(array: Any, path: str) -> None:
    """``array`` as a PNG at ``path``, written beside it and moved into place (the command line's
    own writer, :func:`segtext.cli.write_picture`)."""
    from PIL import Image

    from segtext.cli import write_picture

    write_picture(Image.fromarray(array), path, "PNG")


def _predict_xsam(args: Any) -> int:
    """``predict`` with a saved XSamSegmenter: a referring phrase, or classes (semantic, panoptic)."""
    import numpy as np

    if args.no_constrain or args.sample:
        raise CommandError("--no-constrain and --sample are for text-path models; an X-SAM model generates "
                           "greedily and draws its masks with the head")
    if args.prompt is not None and args.classes is not None:
        raise CommandError("give --prompt TEXT (a referring phrase) or --classes NAME,... (semantic, panoptic), "
                           "not both")
    task = args.task or ("referring" if args.classes is None else "semantic")
    if task == "referring":
        if args.prompt is None or args.classes is not None:
            raise CommandError("--task referring takes --prompt TEXT (and no --classes)")
    elif args.classes is None or args.prompt is not None:
        raise CommandError(f"--task {task} takes --classes NAME,NAME,... (and no --prompt)")
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",")]
    if classes is not None and not all(classes):
        raise CommandError(f"--classes {args.classes!r} holds an empty name")
    cls = _segmenter_cls("xsam")
    try:
        seg = cls.from_pretrained(args.model)
        if task == "referring":
            res = seg.segment([args.image], [args.prompt], max_new_tokens=args.max_new_tokens)[0]
        else:
            res = seg.segment([args.image], task=task, classes=classes, max_new_tokens=args.max_new_tokens)[0]
    except (ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    line: dict[str, Any] = {"image": os.fspath(args.image), "task": task, "text": res.text, "forced": res.forced}
    if task == "referring":
        mask = res.mask
        line.update(prompt=args.prompt, score=round(float(res.score), 6), image_size=list(mask.shape),
                    area=int(mask.sum()))
        png = mask.astype(np.uint8) * 255
    elif task == "semantic":
        labels = res.labels
        line.update(classes=classes, image_size=list(labels.shape),
                    areas={c: int((labels == k).sum()) for k, c in enumerate(classes)})
        png = (labels + 1).astype(np.uint8 if len(classes) < 255 else np.uint16)  # 0: no class
    else:
        segments = res.segments
        line.update(classes=classes, image_size=list(segments.shape),
                    segments_info=[{k: (round(float(v), 6) if k == "score" else v) for k, v in s.items()}
                                   for s in res.segments_info])
        ids = segments.astype(np.uint32)  # COCO panoptic's PNG: id = R + 256 G + 256^2 B
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
    if args.output:
        _write_png(png, args.output)
    print(json.dumps(line, ensure_ascii=False))
    return 0


def predict(args: Any) -> int:
    import numpy as np

    if not os.path.isdir(args.model):
        raise CommandError(f"--model {args.model!r} is not a directory (a `segtext train` output or a checkpoint)")
    if _saved_head(args.model) == "xsam":
        return _predict_xsam(args)
    if args.prompt is None or args.classes is not None or args.task not in (None, "referring"):
        raise CommandError(f"--model {args.model!r} is a text-path segmenter: it takes --prompt TEXT (--classes "
                           "and --task semantic|panoptic need a model trained on xsam records)")
    Segmenter = _segmenter_cls()
    try:
        seg = Segmenter.from_pretrained(args.model)
        res = seg.segment([args.image], [args.prompt], constrained=not args.no_constrain, do_sample=args.sample,
                          max_new_tokens=args.max_new_tokens, seed=args.seed)[0]
    except (ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    if args.output:
        _write_png(res.mask.astype(np.uint8) * 255, args.output)
    line = {"image": os.fspath(args.image), "prompt": args.prompt, "text": res.text, "ok": res.ok,
            "repairs": [r.kind for r in res.repairs], "image_size": list(res.mask.shape),
            "area": int(res.mask.sum())}
    print(json.dumps(line, ensure_ascii=False))
    return 0
