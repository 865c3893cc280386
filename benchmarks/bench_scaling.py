"""Scaling on hostile input (issue 8): time must grow linearly with the size of the input.

    python benchmarks/bench_scaling.py              # about half a minute on 2 cores
    python benchmarks/bench_scaling.py --max 200000 # stop at 200,000 repetitions

B-SD decoding (repair mode) of junk texts, each pattern repeated 2,000, 20,000 and 200,000 times,
and ``mask_to_grid`` of label maps with one label a pixel (the majority vote used to cost one
step per label per cell). Each row prints the best of ``--repeats`` runs and the ratio of the
last two sizes: about 10 for a tenfold input is linear, about 100 would be quadratic (less
than 10 where the largest text is longer than ``segtext.limits.MAX_TEXT_LENGTH``, which the
decoder reads up to the limit). Reports only; it never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import best_of, print_header  # noqa: E402

JUNK = [
    "<box>",
    "<ref>",
    "<seg>",
    "</seg>",
    "<fg_1>",
    "\n<box>",
    "<ref><box><seg>",
    "<ref>a</ref><box>[1,2,3,4]</box>",
    "<box>[1,2,3,4]<seg><fg_0>",
    "<ref>a</ref><box>[1,2,3,4]</box><seg><fg_1><bg_x>",
    "<ref>a</ref><box>[0,0,1000,1000]</box><seg><fg_1></seg>",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max", type=int, default=200_000, help="largest repetition count")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import numpy as np

    import segtext as st

    print_header("segtext scaling on hostile input")
    sizes = [n for n in (2_000, 20_000, 200_000) if n <= args.max]
    st.decode_bsd("<ref>a</ref><box>[1,2]</box><seg><fg_1><bg_x>", (480, 640))  # compile
    print(f"\ndecode_bsd (repair mode, 480 x 640), seconds for the pattern repeated {sizes} times")
    for unit in JUNK:
        times = []
        for n in sizes:
            text = unit * n
            times.append(best_of(lambda: st.decode_bsd(text, (480, 640)), args.repeats))
        ratio = f"x{times[-1] / times[-2]:.1f}" if len(times) > 1 and times[-2] > 0 else ""
        cut = "  (read up to MAX_TEXT_LENGTH)" if len(text) > st.limits.MAX_TEXT_LENGTH else ""
        print(f"  {unit!r:60} " + " ".join(f"{t:8.3f}" for t in times) + f"  {ratio}{cut}")

    print("\nmask_to_grid (majority) of H x W distinct labels, seconds")
    rng = np.random.default_rng(0)
    for side, grid in ((128, 64), (256, 128), (512, 256)):
        m = rng.permutation(side * side).reshape(side, side)
        st.mask_to_grid(m[:4, :4], 2)
        t = best_of(lambda: st.mask_to_grid(m, grid), args.repeats)
        print(f"  {side} x {side} ({side * side} labels) -> {grid} x {grid}: {t:.4f}")


if __name__ == "__main__":
    main()
