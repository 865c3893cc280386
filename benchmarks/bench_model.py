"""segtext model benchmark: the text path on CPU with the tiny Qwen2-VL (answer lengths, generation, training).

    python benchmarks/bench_model.py [--steps 150] [--quick] [--qwen-tokenizer] [--threads 1] [--no-xsam]

Data: six synthetic 64 x 64 RGB images (grey background, one coloured shape each: square, bar,
corner, cross, frame, two blocks; edges on 8-pixel lines), one referring record per image made by
segtext.records (Sample + Target from the mask's COCO RLE, the template "Segment {phrase}." /
"{mask}", make_record(sample, Options(...), seed=0)), for
  R-RLE 16 (Options(encoding="rrle", grid_size=(16, 16)), Segmenter.tiny(encoding="rrle", grid_size=16));
  B-SD 64  (Options(encoding="bsd", resolution=64),        Segmenter.tiny(encoding="bsd", resolution=64)).
The model is Segmenter.tiny (a random 2-layer Qwen2-VL, hidden 64, vision depth 2, LoRA r 8, embedding
and output matrices trained), with its tiny byte-level tokenizer by default, or with
segtext.tokens.qwen2_tokenizer() (151,657 ids) under --qwen-tokenizer. torch runs with 1 thread.

Three parts:

  1. Tokens per mask of the records' answers (the assistant text plus <|im_end|>) in the model's
     tokenizer (B-SD: with the 126 brick tokens the Segmenter adds), mean / max; the plain reference is
     the answers' character count.
  2. Training: seg.fit(records, steps, lr=5e-3, batch_size=4); the step time is taken from fit's
     progress callback (called after each optimizer step), so the record encoding before step 1 and
     step 1 itself are left out: median of steps 2..N, and (time of steps 2..N) / (N - 1).
  3. Generation after that training, greedy, batch 1 (one image per phrase), constrained (the
     segtext.constrain processor, every answer strict) and unconstrained (plain generate: the
     reference), the same max_new_tokens for both (2 x the longest training answer). Each case runs
     twice, interleaved, and the faster run is shown (the machine is shared). Reported per mask: segment() wall,
     model.generate wall, tokens generated (up to and including EOS), tokens/s and masks/s (generate
     time), answers that decode cleanly (no repairs), mean IoU against the true mask, and for the
     constrained case the processor's own time (its __call__, summed; and its construction).

  4. The mask-head path (``--no-xsam`` leaves it out): XSamSegmenter.tiny(seed=0) (the same tiny
     Qwen2-VL with <SEG>, <p>, </p>, LoRA r 8, and the tiny X-SAM head on a conv backbone) fit on
     the same images' ``xsam`` records (make_record(sample, Options(style="xsam", ...))), the same
     steps and step-time rule; then segment() per image, greedy, batch 1, best of 2 runs: wall per
     mask, tokens generated, masks with a generated <SEG> (not forced), mean IoU against the true
     mask. There is no reference here: it is the cost of the other path, beside the text path's.

Reports only; never asserts.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

from common import print_header  # benchmarks/common.py

NAMES = ["square", "bar", "corner", "cross", "frame", "blocks"]
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200)]
CASES = (("R-RLE 16", "rrle", dict(grid_size=16)), ("B-SD 64", "bsd", dict(resolution=64)))


def shapes(np, n):
    out = []
    for k in range(n):
        m = np.zeros((64, 64), bool)
        if k == 0:
            m[16:48, 16:48] = True
        elif k == 1:
            m[8:56, 24:40] = True
        elif k == 2:
            m[:32, :16] = True
            m[:16, :32] = True
        elif k == 3:
            m[16:48, :] = True
            m[:, 16:48] = True
        elif k == 4:
            m[8:56, 8:56] = True
            m[24:40, 24:40] = False
        else:
            m[8:24, 8:24] = True
            m[40:56, 32:56] = True
        out.append(m)
    return out


def make_data(np, d: Path, n: int):
    import pycocotools.mask as pm
    from PIL import Image

    from segtext import records

    masks = shapes(np, n)
    samples = []
    for k, m in enumerate(masks):
        img = np.full((64, 64, 3), 90, np.uint8)
        img[m] = COLORS[k]
        Image.fromarray(img).save(d / f"img{k}.png")
        rle = pm.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        samples.append(records.Sample(f"s{k}", "referring", str(d / f"img{k}.png"), k, (64, 64),
                                      [records.Target(NAMES[k], rle)], phrase=NAMES[k]))
    templates = records.load_templates({"referring": {"questions": ["Segment {phrase}."], "answers": ["{mask}"]}})
    return masks, samples, templates, [d / f"img{k}.png" for k in range(n)]


def make_records(samples, templates, encoding, opts_kw):
    from segtext import records

    kw = {"grid_size": (opts_kw["grid_size"],) * 2} if "grid_size" in opts_kw else {"resolution": opts_kw["resolution"]}
    opts = records.Options(encoding=encoding, templates=templates, **kw)
    return [records.make_record(s, opts, seed=0) for s in samples]


def answer_of(rec):
    return next(m["content"] for m in rec["messages"] if m["role"] == "assistant")


def instrument(seg, torch):
    """Wrap seg.model.generate (wall, generated tokens) and seg._processor (construction, __call__)."""
    log = {"gen": [], "ntok": [], "proc_build": [], "proc_call": []}
    inner_generate = seg.model.generate
    eos = seg.tokenizer.eos_token_id

    def generate(*a, **kw):
        n = kw["input_ids"].shape[1]
        t0 = time.perf_counter()
        out = inner_generate(*a, **kw)
        log["gen"].append(time.perf_counter() - t0)
        for row in out[:, n:]:
            hit = (row == eos).nonzero()
            log["ntok"].append(int(hit[0, 0]) + 1 if len(hit) else int(row.shape[0]))
        return out

    inner_processor = seg._processor

    def processor(*a, **kw):
        t0 = time.perf_counter()
        p = inner_processor(*a, **kw)
        log["proc_build"].append(time.perf_counter() - t0)
        call = p.__call__

        class Timed:
            def __call__(self, input_ids, scores):
                t1 = time.perf_counter()
                r = call(input_ids, scores)
                log["proc_call"].append(time.perf_counter() - t1)
                return r

        return Timed()

    seg.model.generate = generate  # instance attributes: src/ untouched
    seg._processor = processor
    return log


def run_case(seg, log, images, phrases, masks, constrained, max_new, np):
    for v in log.values():
        v.clear()
    t0 = time.perf_counter()
    res = seg.segment(images, phrases, constrained=constrained, do_sample=False, max_new_tokens=max_new)
    wall = time.perf_counter() - t0
    ious = [float((r.mask & m).sum() / max((r.mask | m).sum(), 1)) for r, m in zip(res, masks)]
    return {"wall": wall, "gen": sum(log["gen"]), "ntok": list(log["ntok"]), "ok": sum(r.ok for r in res),
            "iou": float(np.mean(ious)), "proc_call": sum(log["proc_call"]), "proc_steps": len(log["proc_call"]),
            "proc_build": sum(log["proc_build"]), "texts": [r.text for r in res]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 150; 60 with --quick)")
    ap.add_argument("--quick", action="store_true", help="4 images, 60 steps: a quicker look")
    ap.add_argument("--qwen-tokenizer", action="store_true",
                    help="segtext.tokens.qwen2_tokenizer() (151,657 ids) instead of the tiny tokenizer")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-xsam", action="store_true", help="leave out the mask-head path (part 4)")
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else (60 if args.quick else 150)
    n_img = 4 if args.quick else 6

    import warnings

    import numpy as np
    import peft
    import torch
    import transformers

    from segtext.model.segmenter import Segmenter

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the torchvision fallback notice
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    print_header("segtext model benchmark (tiny Qwen2-VL, CPU)")
    print(f"  also      torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"torch {torch.get_num_threads()} thread(s); {n_img} images 64x64, {steps} training steps"
          f"{'; --quick' if args.quick else ''}")
    base_tok = None
    if args.qwen_tokenizer:
        from segtext.tokens import qwen2_tokenizer

        t0 = time.perf_counter()
        base_tok = qwen2_tokenizer(cache_dir=Path(tempfile.gettempdir()) / "segtext-bench-tokenizer")
        print(f"  tokenizer qwen2_tokenizer() {len(base_tok)} ids, {time.perf_counter() - t0:.2f} s")
    else:
        print("  tokenizer the tiny byte-level tokenizer of Segmenter.tiny (segtext.model._qwen.tiny_tokenizer)")
    print()

    tmp = Path(tempfile.mkdtemp(prefix="segtext-bench-model-"))
    masks, samples, templates, images = make_data(np, tmp, n_img)
    results = {}
    for name, enc, kw in CASES:
        t0 = time.perf_counter()
        seg = Segmenter.tiny(encoding=enc, seed=0, tokenizer=copy.deepcopy(base_tok) if base_tok else None, **kw)
        t_build = time.perf_counter() - t0
        recs = make_records(samples, templates, enc, kw)
        path = tmp / f"{enc}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        answers = [answer_of(r) for r in recs]
        ntoks = [len(seg.tokenizer(a, add_special_tokens=False).input_ids) + 1 for a in answers]
        chars = [len(a) for a in answers]
        n_params = sum(p.numel() for p in seg.model.parameters())
        n_train = sum(p.numel() for p in seg.model.parameters() if p.requires_grad)

        stamps = []
        t0 = time.perf_counter()
        losses = seg.fit(path, steps=steps, lr=5e-3, batch_size=4, progress=lambda s, l: stamps.append(time.perf_counter()))
        t_fit = time.perf_counter() - t0
        dt = np.diff(stamps)  # steps 2..N
        max_new = 2 * seg.max_answer_tokens
        log = instrument(seg, torch)
        phrases = NAMES[:n_img]
        seg.segment(images[:1], phrases[:1], max_new_tokens=8)  # warm-up (first generate, processor kernels)
        runs = {True: [], False: []}
        for _ in range(2):  # interleaved: constrained, unconstrained, constrained, unconstrained
            for constrained in (True, False):
                runs[constrained].append(run_case(seg, log, images, phrases, masks, constrained, max_new, np))
        gen = {}
        for constrained, rs in runs.items():
            best = min(rs, key=lambda r: r["gen"])
            best["both"] = [r["gen"] for r in rs]
            best["same"] = rs[0]["texts"] == rs[1]["texts"]
            gen[constrained] = best
        results[name] = dict(ntoks=ntoks, chars=chars, losses=losses, dt=dt, t_fit=t_fit, max_new=max_new, gen=gen,
                             n_params=n_params, n_train=n_train, t_build=t_build, vocab=len(seg.tokenizer))

    print(f"Tokens per mask: the {n_img} records' answers (assistant text + <|im_end|>) in the model's tokenizer; "
          f"reference: characters")
    print(f"  {'encoding':10} {'vocab':>7} {'tokens mean/max':>16} {'chars mean/max':>15} {'chars/token':>11}")
    for name, r in results.items():
        print(f"  {name:10} {r['vocab']:7d} {np.mean(r['ntoks']):9.1f}/{max(r['ntoks']):<6d} "
              f"{np.mean(r['chars']):8.1f}/{max(r['chars']):<6d} {sum(r['chars']) / sum(r['ntoks']):11.2f}")
    print()
    print(f"Training: Segmenter.tiny(...).fit(records, steps={steps}, lr=5e-3, batch_size=4) "
          f"(step time from fit's progress callback, steps 2..N)")
    print(f"  {'encoding':10} {'params':>8} {'trainable':>9} {'build s':>7} {'fit s':>7} {'median ms':>9} "
          f"{'mean ms':>8} {'p95 ms':>7} {'steps/s':>7} {'loss first -> last':>20}")
    for name, r in results.items():
        dt = r["dt"] * 1e3
        print(f"  {name:10} {r['n_params'] / 1e6:7.2f}M {r['n_train'] / 1e6:8.2f}M {r['t_build']:7.2f} "
              f"{r['t_fit']:7.1f} {np.median(dt):9.1f} {dt.sum() / len(dt):8.1f} {np.percentile(dt, 95):7.1f} "
              f"{1e3 / np.median(dt):7.1f} {r['losses'][0]:9.3f} -> {r['losses'][-1]:.4f}")
    print()
    print(f"Generation after training, greedy, batch 1, {n_img} masks, best of 2 runs (by generate time); "
          f"reference: unconstrained generate")
    print(f"  {'case':24} {'max_new':>7} {'clean':>6} {'IoU':>6} {'tokens mean/max':>15} {'segment ms':>10} "
          f"{'generate ms':>11} {'tokens/s':>8} {'masks/s':>7} {'ms/token':>8} {'2 runs, generate s':>19}")
    for name, r in results.items():
        for constrained in (True, False):
            g = r["gen"][constrained]
            n, tok = n_img, g["ntok"]
            label = f"{name} {'constrained' if constrained else 'unconstrained'}"
            print(f"  {label:24} {r['max_new']:7d} {g['ok']:>3d}/{n:<2d} {g['iou']:6.3f} "
                  f"{np.mean(tok):8.1f}/{max(tok):<6d} {g['wall'] / n * 1e3:10.1f} {g['gen'] / n * 1e3:11.1f} "
                  f"{sum(tok) / g['gen']:8.1f} {n / g['gen']:7.2f} {g['gen'] / sum(tok) * 1e3:8.2f} "
                  f"{g['both'][0]:9.2f} {g['both'][1]:.2f}")
        c, u = r["gen"][True], r["gen"][False]
        pc = c["proc_call"]
        print(f"    {name}: constrained / unconstrained per mask {c['gen'] / u['gen']:.2f}x, per token "
              f"{(c['gen'] / sum(c['ntok'])) / (u['gen'] / sum(u['ntok'])):.2f}x; processor __call__ "
              f"{pc * 1e3 / max(c['proc_steps'], 1):.3f} ms/step ({pc / c['gen'] * 100:.0f}% of the constrained "
              f"generate time), processor construction {c['proc_build'] / n_img * 1e3:.2f} ms/mask")
        print(f"    {name}: generate time less the processor's, per token: constrained "
              f"{(c['gen'] - pc) / sum(c['ntok']) * 1e3:.2f} ms, unconstrained {u['gen'] / sum(u['ntok']) * 1e3:.2f} ms; "
              f"answers identical in both runs: constrained {c['same']}, unconstrained {u['same']}")
        print(f"    row 0, constrained:   {c['texts'][0][:100]!r}")
        print(f"    row 0, unconstrained: {u['texts'][0][:100]!r}")
    if not args.no_xsam:
        xsam_part(samples, images, masks, steps, np)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def xsam_part(samples, images, masks, steps, np) -> None:
    """Part 4: the X-SAM mask-head path on the same images (see the module docstring)."""
    from segtext import records
    from segtext.model import XSamSegmenter

    templates = records.load_templates({"referring": {"questions": ["Segment {phrase}."], "answers": ["{mask}"]}})
    recs = [records.make_record(s, records.Options(style="xsam", templates=templates), seed=0) for s in samples]
    t0 = time.perf_counter()
    seg = XSamSegmenter.tiny(seed=0)
    t_build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in seg.model.parameters()) + sum(p.numel() for p in seg.head.parameters())
    n_train = sum(p.numel() for m in (seg.model, seg.head) for p in m.parameters() if p.requires_grad)
    stamps = []
    t0 = time.perf_counter()
    losses = seg.fit(recs, steps=steps, lr=5e-3, batch_size=4, progress=lambda s, l: stamps.append(time.perf_counter()))
    t_fit = time.perf_counter() - t0
    dt = np.diff(stamps)
    phrases = [s.phrase for s in samples]
    seg.segment(images[:1], phrases[:1])  # warm-up
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        res = seg.segment(images, phrases, batch_size=1)
        runs.append((time.perf_counter() - t0, res))
    wall, res = min(runs, key=lambda r: r[0])
    n = len(res)
    ious = [float((r.mask & m).sum() / max((r.mask | m).sum(), 1)) for r, m in zip(res, masks)]
    tokens = [len(seg.tokenizer(r.text, add_special_tokens=False).input_ids) + 1 for r in res]
    print(f"The mask-head path: XSamSegmenter.tiny(seed=0).fit(xsam records, steps={steps}, lr=5e-3, batch_size=4), "
          f"then segment() greedy, batch 1, best of 2 runs")
    print(f"  params {n_params / 1e6:.2f}M (VLM + head), trainable {n_train / 1e6:.2f}M; build {t_build:.2f} s, "
          f"fit {t_fit:.1f} s, step median {np.median(dt) * 1e3:.1f} ms (mean {dt.mean() * 1e3:.1f}), "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"  segment: {wall / n * 1e3:.1f} ms per mask, {np.mean(tokens):.1f} tokens per answer (max {max(tokens)}), "
          f"<SEG> generated {sum(not r.forced for r in res)}/{n}, mean IoU {np.mean(ious):.3f} "
          f"(runs {', '.join(f'{w / n * 1e3:.1f}' for w, _ in runs)} ms per mask)")
    print(f"    row 0: {res[0].text!r}")


if __name__ == "__main__":
    sys.exit(main())
