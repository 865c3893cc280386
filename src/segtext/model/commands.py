"""``segtext train`` and ``segtext predict``: the command-line face of :class:`~segtext.model.segmenter.Segmenter`.

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


def _segmenter_cls() -> Any:
    try:
        from segtext.model.segmenter import Segmenter
    except ImportError as e:
        raise CommandError(f"{e} (the model commands need: pip install 'segtext[model]')") from None
    return Segmenter


def train(args: Any) -> int:
    Segmenter = _segmenter_cls()
    if not os.path.exists(args.records):
        raise CommandError(f"records file {args.records!r} does not exist")
    if os.path.exists(args.output) and not args.overwrite:
        raise CommandError(f"output {args.output!r} exists (pass --overwrite to replace it)")
    lora = {"r": args.lora_r}
    try:
        if args.model == "tiny":
            seg = Segmenter.tiny(encoding=args.encoding, grid_size=args.grid_size, resolution=args.resolution,
                                 lora=lora, seed=args.seed)
        else:
            seg = Segmenter.from_pretrained(args.model, encoding=args.encoding, grid_size=args.grid_size,
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
    print(f"segtext train: {len(losses)} steps in {time.perf_counter() - t0:.1f} s, loss {first:.4f} -> "
          f"{last:.4f}, model written to {args.output}", file=sys.stderr)
    return 0


def predict(args: Any) -> int:
    import numpy as np
    from PIL import Image

    Segmenter = _segmenter_cls()
    if not os.path.isdir(args.model):
        raise CommandError(f"--model {args.model!r} is not a directory (a `segtext train` output or a checkpoint)")
    try:
        seg = Segmenter.from_pretrained(args.model)
        res = seg.segment([args.image], [args.prompt], constrained=not args.no_constrain, do_sample=args.sample,
                          max_new_tokens=args.max_new_tokens, seed=args.seed)[0]
    except (ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    if args.output:
        parent = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(prefix=".segtext-", suffix=".png", dir=parent)
        os.close(fd)
        try:
            Image.fromarray(res.mask.astype(np.uint8) * 255).save(tmp, format="PNG")
            os.replace(tmp, args.output)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    line = {"image": os.fspath(args.image), "prompt": args.prompt, "text": res.text, "ok": res.ok,
            "repairs": [r.kind for r in res.repairs], "image_size": list(res.mask.shape),
            "area": int(res.mask.sum())}
    print(json.dumps(line, ensure_ascii=False))
    return 0
