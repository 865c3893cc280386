"""What the benchmarks share: the numba cache switch, the run header, timers, and Text4Seg's
own encode/decode loops (the plain reference every benchmark compares against)."""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time


def use_cold_cache(warm: bool) -> str | None:
    """Point numba at an empty cache (before it is imported) so first calls really compile."""
    if warm:
        return None
    cache_dir = tempfile.mkdtemp(prefix="segtext-bench-numba-")
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    return cache_dir


def print_header(title: str) -> None:
    """Title, date, machine and library versions."""
    import numba
    import numpy as np
    import PIL

    import segtext as st

    print(title)
    print(f"  date      {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"  machine   {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          "CPU only")
    print(f"  versions  python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"pillow {PIL.__version__}, segtext {getattr(st, '__version__', '?')}")


def best_of(fn, repeats: int) -> float:
    """The shortest of ``repeats`` runs of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timed(fn):
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def t4s_encode(label_grid) -> str:
    """Text4Seg's R-RLE encoder: a Python loop over the label strings of each row."""
    rows = []
    for row in label_grid:
        encoded_row = []
        count = 1
        for j in range(1, len(row)):
            if row[j] == row[j - 1]:
                count += 1
            else:
                encoded_row.append(f"{row[j - 1]} *{count}")
                count = 1
        encoded_row.append(f"{row[-1]} *{count}")
        rows.append("| ".join(encoded_row))
    return "\n ".join(rows) + "\n"


def t4s_decode(text: str) -> list[str]:
    """Text4Seg's decoder: split rows, runs and counts, and flatten into one label per cell."""
    rows = text.strip("\n").split("\n ")
    out: list[str] = []
    for row in rows:
        for token in row.split("| "):
            label, count = token.split(" *")
            out.extend([label] * int(count))
    return out


def load_sample(st):
    """The bundled COCO sample: ``(rles, labels, sizes)``, labels being the category names."""
    anns = st.coco.sample_annotations()
    names = st.coco.COCO_CATEGORY_NAMES
    rles = [a["segmentation"] for a in anns]
    labels = [names.get(a["category_id"], "object") for a in anns]
    return rles, labels, [tuple(r["size"]) for r in rles]
