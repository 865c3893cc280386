"""segtext token benchmark: answer lengths in real Qwen2 tokens, and the cost of constrained decoding.

    python benchmarks/bench_tokens.py [--quick] [--no-lengths] [--no-steps] [--cache-dir DIR]
                                      [--threads 1] [--cold-cache]

Two parts:

  1. Token lengths, on the 734 COCO val2014 masks bundled with the package
     (st.coco.sample_annotations(), label = the category name). Each mask is written as
       R-RLE at 16, 24, 32 cells a side: "<seg>" + st.rle_to_text(rle, label, n, policy="majority")
            + "</seg>", read back with st.decode_rrle(...).to_mask((H, W));
       B-SD at 32, 48, 64, 80 bricks a side: st.encode_bsd([(label, rle)], (H, W), resolution=S),
            read back with st.decode_bsd(...).mask();
     and counted with segtext.tokens.token_lengths in Qwen2's tokenizer (segtext.tokens.qwen2_tokenizer,
     built offline from qwen.tiktoken), plain and with the format tokens added
     (add_format_tokens(copy, ("bsd", "tags")): each brick, <seg>, </seg>, <ref>, ... one token).
     Printed: characters and tokens per mask (mean / median / max), the oracle cIoU and gIoU of the
     encoding (mask -> text -> mask against the original at full size; cIoU = sum(I) / sum(U),
     gIoU = mean(I / (U + 1e-5)) with empty/empty scoring 1, as bench_bsd.py), and gIoU per 100
     tokens (gIoU in % divided by the mean token count / 100: fidelity per token spent). The plain
     reference is the character count of the same texts.

  2. Processor step overhead: a tiny randomly initialised Qwen2ForCausalLM (hidden 64, 2 layers,
     4 heads, 2 kv heads, intermediate 128, vocab 151,936, untied, torch.manual_seed(0)), greedy
     model.generate of
       an R-RLE 16 x 16 answer with segtext.constrain.RRLELogitsProcessor(tok, ["others", "dog"], 16);
       a B-SD 64 answer with BSDLogitsProcessor(tok_with_bricks, ["dog"], 64, max_objects=1);
     at batch 1 and batch 4. The processor is wrapped in a LogitsProcessor that accumulates
     time.perf_counter around the real call, so its cost is isolated from the model's; a no-op
     processor first in the list stamps the time of each step, giving the model's own step time
     (the interval between stamps minus the processor's time). Each processor runs twice on the
     same prompts: the first generation starts with an empty memo (every new grammar state walks
     the token trie: "cold"), the second finds every state memoised ("warm"). The first step of a
     generation (prompt set-up) is reported on its own. The plain reference is the same generate
     without the processor, min_new_tokens = max_new_tokens = the constrained run's length, and the
     floor of this design (one (B, V) bool mask built with numpy and applied with masked_fill, no
     grammar). Also the automaton build: first construction for a tokenizer (token bytes + trie
     build), second for the same tokenizer (cached trie). Target: 0.3 ms per step at batch 1, cold and
     warm (medians; mean, p90 and p95 printed too). The number of trie walks of the cold run is printed
     (the memo keys states by a canonical form, so fewer walks than new states).

Timings are reported, never asserted. The random model writes nonsense that the grammar keeps
well-formed; greedy answers are cut off at max_new_tokens, which is fine for timing.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

from common import load_sample, print_header, use_cold_cache  # benchmarks/common.py

RRLE_SIDES = (16, 24, 32)
BSD_SIDES = (32, 48, 64, 80)
STEP_TARGET_MS = 0.3  # processor time per decoding step, batch 1


# ----------------------------------------------------------------------------- part 1: token lengths


def lengths_part(st, tok, tok_b, quick: bool) -> None:
    import numpy as np
    import pycocotools.mask as mask_util

    from segtext.tokens import token_lengths

    rles, labels, sizes = load_sample(st)
    if quick:
        rles, labels, sizes = rles[:200], labels[:200], sizes[:200]
    n = len(rles)
    masks = [mask_util.decode(r).astype(bool) for r in rles]

    def ious(backs):
        inter = np.array([np.count_nonzero(m & b) for m, b in zip(masks, backs)], dtype=np.float64)
        union = np.array([np.count_nonzero(m | b) for m, b in zip(masks, backs)], dtype=np.float64)
        per = np.where(union == 0, 1.0, inter / (union + 1e-5))  # empty prediction and empty mask: 1
        return inter.sum() / union.sum(), per.mean()

    rows = []
    t0 = time.perf_counter()
    for s in RRLE_SIDES:
        raw = [st.rle_to_text(r, lab, (s, s), policy="majority") for r, lab in zip(rles, labels)]
        texts = ["<seg>" + t + "</seg>" for t in raw]
        backs = [st.decode_rrle(t, ["others", lab], (s, s)).to_mask(sz).astype(bool)
                 for t, lab, sz in zip(raw, labels, sizes)]
        rows.append((f"R-RLE {s}x{s}", texts, *ious(backs)))
    for S in BSD_SIDES:
        texts = [st.encode_bsd([(lab, r)], tuple(r["size"]), resolution=S) for r, lab in zip(rles, labels)]
        backs = [st.decode_bsd(t, sz, resolution=S).mask().astype(bool) for t, sz in zip(texts, sizes)]
        rows.append((f"B-SD {S}x{S}", texts, *ious(backs)))
    t_enc = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = []
    for name, texts, ciou, giou in rows:
        chars = np.array([len(t) for t in texts])
        plain = token_lengths(texts, tok)
        added = token_lengths(texts, tok_b)
        table.append((name, chars, plain, added, ciou, giou))
    t_tok = time.perf_counter() - t0

    print(f"Token lengths: {n} COCO masks, policy majority; Qwen2 tokenizer plain and with the "
          f"{len(tok_b) - len(tok)} format tokens added (bricks <fg_1..63>/<bg_1..63>, <seg>, </seg>, <ref>, ...)")
    print(f"  (encode + decode of all texts {t_enc:.1f} s; token_lengths of all texts, both tokenizers "
          f"{t_tok:.2f} s)")
    hdr = (f"  {'encoding':12} {'chars mean/med/max':>20} {'tokens plain mean/med/max':>27} "
           f"{'tokens added mean/med/max':>27} {'chars/tok':>9} {'cIoU':>7} {'gIoU':>7} "
           f"{'gIoU/100 tok plain':>18} {'added':>6}")
    print(hdr)

    def mmm(a, fmt="{:.0f}"):
        return f"{np.mean(a):.1f}/{fmt.format(np.median(a))}/{int(np.max(a))}"

    for name, chars, plain, added, ciou, giou in table:
        print(f"  {name:12} {mmm(chars):>20} {mmm(plain):>27} {mmm(added):>27} "
              f"{chars.mean() / plain.mean():9.2f} {ciou * 100:6.2f}% {giou * 100:6.2f}% "
              f"{giou * 100 / (plain.mean() / 100):18.2f} {giou * 100 / (added.mean() / 100):6.2f}")
    print("  chars/tok: characters per plain token; gIoU/100 tok: gIoU in % per 100 tokens of the mean answer")
    print()


# ----------------------------------------------------------------------------- part 2: processor steps


def tiny_model(torch):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=151936, tie_word_embeddings=False,
                      max_position_embeddings=4096)
    return Qwen2ForCausalLM(cfg).eval()


def steps_part(st, tok, tok_b, quick: bool, torch) -> None:
    import numpy as np
    from transformers import LogitsProcessor, LogitsProcessorList

    from segtext.constrain import BSDLogitsProcessor, RRLELogitsProcessor

    class Timed(LogitsProcessor):
        """Accumulates the wall time of the real processor's call, one entry per step."""

        def __init__(self, inner):
            self.inner, self.times = inner, []

        def __call__(self, input_ids, scores):
            t0 = time.perf_counter()
            out = self.inner(input_ids, scores)
            self.times.append(time.perf_counter() - t0)
            return out

    class Stamp(LogitsProcessor):
        """A no-op that records when each step's logits reach the processors."""

        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    from segtext.constrain import TokenAutomaton

    walks = [0]  # trie walks of the cold run (states whose canonical form was new)
    plain_walk = TokenAutomaton._walk

    def counted_walk(self, state):
        walks[0] += 1
        return plain_walk(self, state)

    TokenAutomaton._walk = counted_walk
    model = tiny_model(torch)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    print(f"Processor step overhead: tiny random Qwen2ForCausalLM ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters, vocab {model.config.vocab_size}), greedy, torch {torch.get_num_threads()} thread(s), "
          f"float32 scores")

    # --- automaton build ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    RRLELogitsProcessor(tok, ["others", "dog"], 16)
    t_r1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    RRLELogitsProcessor(tok, ["others", "dog"], 16)
    t_r2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    BSDLogitsProcessor(tok_b, ["dog"], 64, max_objects=1)
    t_b1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    BSDLogitsProcessor(tok_b, ["dog"], 64, max_objects=1)
    t_b2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe = RRLELogitsProcessor(tok, ["others", "dog"], 16).automaton
    probe.allowed(probe.advance(probe.start(), tok.convert_tokens_to_ids("<")))
    RRLELogitsProcessor(tok, ["others", "dog"], 16, start="seg")(torch.zeros(1, 1, dtype=torch.long),
                                                                 torch.zeros(1, len(tok)))  # the masking kernels
    from segtext._kernels import constrain as CK

    CK.keep_all(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), 0)
    CK.keep_ids(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), 0, np.zeros(1, np.int64))
    t_k = time.perf_counter() - t0 - t_r2
    print("  Automaton build (processor construction)")
    print(f"    RRLE 16, Qwen2 tokenizer:        first {t_r1 * 1e3:8.1f} ms (token bytes + trie; numba kernels "
          f"loaded/compiled), second {t_r2 * 1e3:7.2f} ms (cached trie)")
    print(f"    B-SD 64, tokenizer + bricks:     first {t_b1 * 1e3:8.1f} ms (a new tokenizer: its own trie), "
          f"second {t_b2 * 1e3:7.2f} ms (cached trie)")
    print(f"    first advance() + allowed() + masking in the process (the step, trie-walk and masking kernels "
          f"loaded from numba's cache or compiled): {t_k * 1e3:.1f} ms, kept out of the step figures below")

    # --- the floor: one (B, V) mask, no grammar -----------------------------------------------------
    def floor_ms(B, reps=200):
        V = model.config.vocab_size
        scores = torch.randn(B, V)
        allowed = np.arange(10, 40, dtype=np.int64)
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            refuse = np.ones((B, V), bool)
            for r in range(B):
                refuse[r, allowed] = False
            scores.masked_fill(torch.from_numpy(refuse), float("-inf"))
            t.append(time.perf_counter() - t0)
        return np.median(t) * 1e3

    prompt_text = "Segment the dog in the image."
    p1 = torch.tensor([tok(prompt_text).input_ids])
    g = torch.Generator().manual_seed(1)
    p4 = torch.randint(0, 151000, (4, p1.shape[1]), generator=g)
    p4[0] = p1[0]

    def generate(ids, procs, n_new, fixed):
        kw = dict(max_new_tokens=n_new, do_sample=False, eos_token_id=eos, pad_token_id=pad,
                  attention_mask=torch.ones_like(ids), logits_processor=LogitsProcessorList(procs))
        if fixed:  # no EOS: exactly n_new steps (min_new_tokens would add ~5 ms a step of its own)
            kw["eos_token_id"] = None
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(ids, **kw)
            return out, time.perf_counter() - t0

    def stats(a):
        a = np.asarray(a) * 1e3
        if not len(a):
            return "    n/a"
        return f"{a.mean():7.3f} {np.median(a):7.3f} {np.percentile(a, 90):7.3f} {np.percentile(a, 95):7.3f}"

    def model_steps(stamp, proc_times):
        """Per-step model time: the interval between stamps minus the processor time in it."""
        iv = np.diff(np.asarray(stamp.stamps))
        if proc_times is not None:
            iv = iv - np.asarray(proc_times[:-1])  # the interval after step i holds processor call i
        return iv

    n_new = 150 if quick else 600
    cases = [
        ("R-RLE 16x16", lambda: RRLELogitsProcessor(tok, ["others", "dog"], 16)),
        ("B-SD 64", lambda: BSDLogitsProcessor(tok_b, ["dog"], 64, max_objects=1)),
    ]
    generate(p1, [], 4, True)  # warm torch up
    print()
    print(f"  Per decoding step, milliseconds (mean / median / p90 / p95); max_new_tokens {n_new}; target for the "
          f"processor: {STEP_TARGET_MS} ms per step at batch 1")
    print(f"  floor of the design (np.ones((B, V)) mask + masked_fill, no grammar): batch 1 {floor_ms(1):.3f} ms, "
          f"batch 4 {floor_ms(4):.3f} ms (median)")
    for name, make in cases:
        for B, ids in ((1, p1), (4, p4)):
            proc = Timed(make())
            walks[0] = 0
            runs = {}
            for run in ("cold", "warm"):
                stamp = Stamp()
                proc.times = []
                out, wall = generate(ids, [stamp, proc], n_new, False)
                runs[run] = (list(proc.times), stamp, out, wall)
                if run == "cold":
                    n_walks = walks[0]
            steps = len(runs["cold"][0])
            stamp0, stamp1 = Stamp(), Stamp()
            out0, wall0 = generate(ids, [stamp0], steps, True)
            _, wall1 = generate(ids, [stamp1], steps, True)  # twice: the machine is shared and noisy
            if wall1 < wall0:
                stamp0, wall0 = stamp1, wall1
            # the same warm steps replayed outside generate (the model's forward not in between)
            iso = []
            L0 = ids.shape[1]
            for k in range(steps):
                x, sc = out[:, : L0 + k], torch.zeros(B, model.config.vocab_size)
                t0 = time.perf_counter()
                proc.inner(x, sc)
                iso.append(time.perf_counter() - t0)
            cold_t, cold_stamp, out, wall = runs["cold"]
            warm_t, warm_stamp, out_w, wall_w = runs["warm"]
            same = torch.equal(out, out_w)
            gen = out[0, ids.shape[1]:]
            text = tok_b.decode(gen, skip_special_tokens=False) if "B-SD" in name else tok.decode(gen)
            finished = int((out[:, ids.shape[1]:] == eos).any(dim=1).sum())
            auto = proc.inner.automaton
            print(f"  {name}, batch {B}: {steps} steps, {finished}/{B} rows reached EOS, memo {len(auto._memo)} "
                  f"states, trie walks {n_walks} (cold run), warm run identical: {same}, refused {proc.inner.refused}")
            print(f"    row 0 begins: {text[:90]!r}")
            print(f"    {'':34} {'mean':>7} {'median':>7} {'p90':>7} {'p95':>7}")
            print(f"    processor, first step (cold)     {cold_t[0] * 1e3:7.3f}")
            print(f"    processor, later steps, cold memo {stats(cold_t[1:])}")
            print(f"    processor, first step (warm)     {warm_t[0] * 1e3:7.3f}")
            w = np.asarray(warm_t[1:]) * 1e3
            c = np.asarray(cold_t[1:]) * 1e3
            line = f"    processor, later steps, warm memo {stats(warm_t[1:])}"
            if B == 1:
                line += (f"   target {STEP_TARGET_MS} ms (median): warm {'met' if np.median(w) <= STEP_TARGET_MS else 'NOT met'}"
                         f", cold {'met' if np.median(c) <= STEP_TARGET_MS else 'NOT met'}")
            print(line)
            print(f"    same, replayed outside generate   {stats(iso[1:])}   floor {floor_ms(B):.3f} (median)")
            print(f"    model step, with processor (warm) {stats(model_steps(warm_stamp, warm_t))}")
            print(f"    model step, no processor, best of 2{stats(model_steps(stamp0, None))}")
            print(f"    whole generate: cold {wall * 1e3:.0f} ms, warm {wall_w * 1e3:.0f} ms, no processor "
                  f"{wall0 * 1e3:.0f} ms ({(wall_w / wall0 - 1) * 100:+.0f}% warm vs none)")
    print()


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 masks, 150 new tokens: a quicker look")
    ap.add_argument("--no-lengths", action="store_true", help="skip part 1 (token lengths)")
    ap.add_argument("--no-steps", action="store_true", help="skip part 2 (processor step overhead)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "segtext-bench-tokenizer"),
                    help="where qwen2_tokenizer keeps the built tokenizer (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--cold-cache", action="store_true",
                    help="point numba at an empty cache, so the first processor build includes compiling")
    args = ap.parse_args(argv)
    cache_dir = use_cold_cache(not args.cold_cache)

    import tokenizers
    import torch
    import transformers

    import segtext as st
    from segtext.tokens import add_format_tokens, qwen2_tokenizer

    torch.set_num_threads(args.threads)
    print_header("segtext token benchmark")
    print(f"  also      torch {torch.__version__}, transformers {transformers.__version__}, "
          f"tokenizers {tokenizers.__version__}; numba cache {'empty (cold)' if cache_dir else 'normal'}"
          f"{'; --quick' if args.quick else ''}")
    t0 = time.perf_counter()
    tok = qwen2_tokenizer(cache_dir=args.cache_dir)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok_b = copy.deepcopy(tok)
    add_format_tokens(tok_b, ("bsd", "tags"))
    t_add = time.perf_counter() - t0
    print(f"  tokenizer qwen2_tokenizer(cache_dir=...) {t_tok:.2f} s ({len(tok)} tokens); deepcopy + "
          f"add_format_tokens {t_add:.2f} s ({len(tok_b)} tokens)")
    print()
    if not args.no_lengths:
        lengths_part(st, tok, tok_b, args.quick)
    if not args.no_steps:
        steps_part(st, tok, tok_b, args.quick, torch)
    if cache_dir:
        import shutil

        shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
