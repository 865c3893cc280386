"""What every segtext fuzz harness shares (see fuzz/README.md).

A harness module (``fuzz/fuzz_<name>.py``) defines

* ``build(data: bytes) -> Case | None``: the call to make for one fuzz input (``None``: skip it);
* ``seeds() -> list[bytes]``: a small seed corpus, generated in code;
* ``DICT``: tokens for libFuzzer's ``-dict`` (format tokens, interesting numbers);

and ends with ``common.main(__name__)``. :func:`main` bounds the process's memory, runs the seeds
once (so numba's compilation is not timed), then hands over to atheris/libFuzzer.

A *finding* is any exception the :class:`Case` does not allow, or a failed result check
(:class:`Finding`). Python-level findings do not stop the fuzzer: each distinct one (same
exception type at the same segtext line, or the same failed check) is saved once, as its
smallest input so far, to ``fuzz/crashes/<name>/<signature>.bin`` with a ``.txt`` report
holding the Python one-liner that reproduces it. Crashes of the process itself (a segfault,
an input running past ``-timeout``, ``-rss_limit_mb``) are caught by libFuzzer, which writes
``crash-*`` / ``timeout-*`` / ``oom-*`` into the same folder; ``fuzz/run.py`` restarts the harness.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import naive as _naive  # noqa: E402  (the tests' plain references)

# segtext's Python code is instrumented for coverage (atheris.instrument_imports, less one
# thing): the numba kernels are left out (numba compiles a function from its bytecode, and
# would meet the instrumentation calls), and comparisons are not traced: atheris 3.0's
# comparison hook leaks the result of a comparison that is a numpy array (`grid != 0` leaked
# 4 MB a call), which ran the harnesses out of memory in minutes. libFuzzer's -dict (DICT in
# each harness) gives it the format's tokens instead.
# atheris excludes modules by exact name, so each module of the kernels package is listed.
_KERNELS = {"segtext._kernels"} | {
    f"segtext._kernels.{p.stem}"
    for p in (Path(__file__).resolve().parents[1] / "src" / "segtext" / "_kernels").glob("*.py")}
try:
    _hook = atheris.import_hook.HookManager({"segtext"}, _KERNELS, enable_loader_override=True,
                                            trace_dataflow=False)
except (AttributeError, TypeError):  # another atheris: its public hook, comparisons traced
    _hook = atheris.instrument_imports(include=["segtext"], exclude=sorted(_KERNELS))
with _hook:
    import numpy as np

    import segtext as st
    import segtext.cli  # noqa: F401  (the eval harness calls it)
    import segtext.evaluation  # noqa: F401

FUZZ_DIR = os.path.dirname(os.path.abspath(__file__))
CRASH_DIR = os.environ.get("SEGTEXT_FUZZ_CRASHES", os.path.join(FUZZ_DIR, "crashes"))
MEMORY_LIMIT_MB = int(os.environ.get("SEGTEXT_FUZZ_MEMORY_MB", "3072"))
REPORT = os.environ.get("SEGTEXT_FUZZ_REPORT")  # run.py: one JSON line per new finding
ARGS = (ValueError, TypeError)  # what a reader may raise (DecodeError is a ValueError)

# values that break naive integer and float handling
BIG_INTS = [0, 1, 2, -1, -2, 3, 255, 256, 2**15, 2**16, 2**16 + 1, 2**22, 2**22 + 1, 2**30, 2**31 - 1,
            2**31, 2**32, 2**32 + 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**20,
            -(2**31), -(2**62), -(2**63), -(2**64)]
FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 5e-324, 1e9, 2.0**31, 2.0**53, 2.0**63, 2.0**64, 1e300,
          -1e300, 1.7976931348623157e308, math.inf, -math.inf, math.nan]
# a byte picks one of these (index = byte % len): mostly ordinary values, some past the limits
GRID_SIDES = list(range(1, 33)) + [0, -1, 64, 1000, 2**11, 2**22, 2**31, 2**62]
IMAGE_SIDES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 480, 640, 2**15, 2**16, 2**16 + 1, 0, -1]
RESOLUTIONS = [1, 2, 3, 4, 8, 16, 32, 64, 80, 1024, 1025, 0, -1, 2**31, 2**62]
MAX_RUNS = [63, 63, 63, 1, 2, 4, 7, 1000, 2**31, 0, -1]
LABEL_SETS = [["others", "dog"], ["others", "dog", "white horse", "a|b"], ["others"],
              ["others", "cat", "狗", "x*y", "|x"]]
BOX_FORMATS = list(st.BOX_FORMATS)

# tokens of the text formats, for libFuzzer's -dict (it splices them into inputs)
TEXT_TOKENS = ["<seg>", "</seg>", " *", "| ", "|", "\n", "\n ", "\r\n", "\r", "\t", "\u00a0",
               "others", "dog", "white horse", "*0", "*1", "*16", "*4194304", "*4194305",
               "*9223372036854775807", "*18446744073709551617", "0" * 60,
               "<ref>", "</ref>", "<box>", "</box>", "[", "]", ",", "(", ")", "<fg_", "<bg_", ">",
               "<fg_63>", "<bg_1>", "<fg_0>", "<bg_99999999999999999999>", "[0,0,1000,1000]",
               "[-1,0,1001,5]", "1000", "99999999999999999999",
               "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "(0,0),(1000,1000)"]
NUMBER_TOKENS = ["0", "1", "-1", "2147483648", "4294967296", "4611686018427387904", "9223372036854775807",
                 "9223372036854775808", "18446744073709551616", "-9223372036854775808", "1e308", "1e309",
                 "NaN", "Infinity", "-Infinity", "0.5", "null", "true", "[]", "{}", '""', "65536", "4194304"]


class Finding(AssertionError):
    """A result that breaks the contract (wrong type, shape, range)."""


def expect(cond: Any, what: str, detail: Any = "") -> None:
    """Raise a :class:`Finding` named ``what`` (its signature) unless ``cond``."""
    if not cond:
        raise Finding(f"{what}: {detail}" if detail != "" else what)


# --------------------------------------------------------------------------- calls


def py(v: Any) -> str:
    """``v`` as Python source (numpy arrays, nan and inf included)."""
    if isinstance(v, np.ndarray):
        src = f"np.array({v.tolist()!r}, dtype=np.{v.dtype})"
        if v.ndim > 1 and v.flags.f_contiguous and not v.flags.c_contiguous:
            src = f"np.asfortranarray({src})"
        return src
    if isinstance(v, float) and not math.isfinite(v):
        return f"float('{v}')"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(map(py, v)) + ("," if isinstance(v, tuple) and len(v) == 1 else "")
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{py(k)}: {py(x)}" for k, x in v.items()) + "}"
    return repr(v)


@dataclass
class Call:
    """``fn(*args, **kwargs)``, with ``name`` (e.g. ``"st.decode_rrle"``) for the one-liner."""

    name: str
    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    def source(self) -> str:
        parts = [py(a) for a in self.args] + [f"{k}={py(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def with_arg(self, i: int, value: Any) -> "Call":
        args = list(self.args)
        args[i] = value
        return Call(self.name, self.fn, tuple(args), dict(self.kwargs))


@dataclass
class Case:
    """One call and its contract.

    ``allowed``: the exceptions the call may raise. ``text_arg``: set for a repair-mode
    decoder (the index of its text argument): it may raise only for bad *non-text* arguments,
    so an allowed exception counts only when the same call with one of the ordinary texts
    ``probes`` raises it too (or ``excuse(exception)`` says it is a documented one). ``check``: called with the result; raises :class:`Finding` on a bad one.
    ``setup``: extra Python lines a reproducer needs before the call (shown in reports).
    """

    call: Call
    allowed: tuple = ARGS
    check: Callable[[Any], None] | None = None
    text_arg: int | None = None
    probes: tuple = ("",)
    excuse: Callable[[BaseException], bool] | None = None
    setup: str = ""

    def run(self) -> None:
        try:
            result = self.call()
        except self.allowed as e:
            if self.text_arg is None or (self.excuse is not None and self.excuse(e)):
                return
            for probe in self.probes:
                try:
                    self.call.with_arg(self.text_arg, probe)()
                except type(e):
                    return  # a bad non-text argument: an ordinary text is rejected too
            raise Finding(f"repair mode raised {type(e).__name__} on a str") from e
        if self.check is not None:
            self.check(result)

    def source(self) -> str:
        return "import numpy as np, segtext as st; " + (self.setup + "; " if self.setup else "") + self.call.source()


# --------------------------------------------------------------------------- input helpers


def text_of(data: bytes) -> str:
    """Fuzz bytes as text: UTF-8, invalid bytes replaced (so any str can come out)."""
    return data.decode("utf-8", "replace")


def json_or_none(data: bytes) -> Any:
    """The JSON value ``data`` holds (NaN and Infinity allowed), or None."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def big_int(fdp: atheris.FuzzedDataProvider) -> int:
    """An int that is often one of :data:`BIG_INTS`, else small, else any 64-bit or 80-bit value."""
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return fdp.PickValueInList(BIG_INTS)
    if k == 1:
        return fdp.ConsumeIntInRange(-3, 40)
    return fdp.ConsumeInt(8 if k == 2 else 10)


def any_float(fdp: atheris.FuzzedDataProvider) -> float:
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return fdp.PickValueInList(FLOATS)
    if k == 1:
        return float(fdp.ConsumeIntInRange(-5, 700))
    return fdp.ConsumeRegularFloat() if k == 2 else fdp.ConsumeFloat()


def sample(n: int = 6) -> list[dict]:
    """A few annotations of the bundled COCO sample (compressed RLEs of real masks), each with
    its category name as ``label``."""
    anns = st.coco.sample_annotations()
    out = [dict(anns[i * len(anns) // n]) for i in range(n)]
    for a in out:
        a["label"] = st.coco.COCO_CATEGORY_NAMES.get(a["category_id"], "object")
    return out


def pick(seq: list, b: int) -> Any:
    return seq[b % len(seq)]


def header(data: bytes, n: int) -> tuple[list[int], bytes]:
    """The first ``n`` bytes of ``data`` (zero-padded) as option bytes, and the rest."""
    head = list(data[:n]) + [0] * max(0, n - len(data))
    return head, data[n:]


def index(seq: list, value: Any) -> int:
    """A byte that :func:`pick` turns into ``value`` (for writing seeds)."""
    return seq.index(value)


def coco_string(counts: list[int]) -> str:
    """COCO's compressed counts string of any run lengths, with Python's unbounded ints (huge
    and negative values come out as long strings): the tests' plain reference."""
    return _naive.encode_counts_string(counts)


def dense_rle(m: np.ndarray) -> dict:
    """The uncompressed COCO RLE of a binary mask (column-major runs, background first)."""
    flat = np.asarray(m, bool).T.ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": list(m.shape), "counts": runs}


def real_masks(n: int = 4) -> list[tuple[str, np.ndarray]]:
    """``(label, mask)`` of a few sample masks, scaled to 64 x 64 and 32 x 100 (sides in IMAGE_SIDES)."""
    out = []
    for i, a in enumerate(sample(n)):
        size = ((64, 64), (32, 100))[i % 2]
        grid = st.rle_to_grid(a["segmentation"], grid_size=(32, 32), policy="any")
        out.append((a["label"], st.grid_to_mask(grid, size).astype(bool)))
    return out


def masks() -> list[np.ndarray]:
    """Small masks for seeds: empty, full, a block, a diagonal, a ring."""
    out = [np.zeros((4, 4), bool), np.ones((3, 5), bool)]
    m = np.zeros((8, 8), bool); m[2:5, 3:7] = True; out.append(m)
    out.append(np.eye(9, dtype=bool))
    r = np.ones((7, 7), bool); r[2:5, 2:5] = False; out.append(r)
    return out


# --------------------------------------------------------------------------- findings


def _signature(e: BaseException) -> str:
    """Stable name of a finding: the check that failed, or the exception type and where in
    segtext it was raised (its innermost segtext frame)."""
    if isinstance(e, Finding):
        head = str(e).split(":")[0]
        return f"check {head}" + (f" <- {_signature(e.__cause__)}" if e.__cause__ is not None else "")
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if f"{os.sep}segtext{os.sep}" in f.filename] or frames[-1:]
    where = f"{os.path.basename(ours[-1].filename)}:{ours[-1].lineno}" if ours else "?"
    return f"{type(e).__name__} at {where}"


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = os.path.join(CRASH_DIR, name)
        self.seen: set[str] = set()

    def record(self, data: bytes, case: Case | None, e: BaseException) -> None:
        sig = _signature(e)
        key = hashlib.sha1(sig.encode()).hexdigest()[:10]
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, key + ".bin")
        new = sig not in self.seen
        if os.path.exists(path) and os.path.getsize(path) <= len(data):
            if new:  # found again in this run: still reported
                self.seen.add(sig)
                self._report(sig, path, new_file=False)
            return
        with open(path, "wb") as f:
            f.write(data)
        with open(os.path.join(self.dir, key + ".txt"), "w", encoding="utf-8") as f:
            f.write(f"harness: {self.name}\nfinding: {sig}\ninput:   {path} ({len(data)} bytes)\n")
            f.write(f"replay:  python fuzz/run.py --replay {os.path.relpath(path, os.path.dirname(FUZZ_DIR))}\n")
            if case is not None:
                f.write(f"\nreproducer (Python):\n{_clip(case.source())}\n")
            f.write("\n" + "".join(traceback.format_exception(e)))
        if new:
            self.seen.add(sig)
            print(f"\n== FINDING [{self.name}] {sig}\n   {path}\n   {_clip(case.source(), 300) if case else ''}",
                  file=sys.stderr, flush=True)
            self._report(sig, path, new_file=True)

    def _report(self, sig: str, path: str, new_file: bool) -> None:
        if REPORT:
            with open(REPORT, "a", encoding="utf-8") as f:
                f.write(json.dumps({"harness": self.name, "finding": sig, "input": path}) + "\n")


def _clip(s: str, n: int = 20000) -> str:
    return s if len(s) <= n else s[:n] + f" ... [{len(s) - n} more characters]"


def one_input(build: Callable[[bytes], Case | None], recorder: Recorder | None, data: bytes) -> None:
    """Run one fuzz input; a finding is recorded (or, without a recorder, raised)."""
    case = None
    try:
        case = build(data)
        if case is not None:
            case.run()
    except Exception as e:  # noqa: BLE001 -- every exception that got here is a finding
        if recorder is None:
            raise
        recorder.record(data, case, e)


def _dict_entry(token: str) -> str:
    """A libFuzzer dictionary line: the token's UTF-8 bytes, quoted, with \\xHH escapes."""
    body = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}"
                   for b in token.encode("utf-8"))
    return f'"{body}"'


def limit_memory(mb: int = MEMORY_LIMIT_MB) -> None:
    """Cap the address space so a huge allocation is a MemoryError (a finding), not a dead machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = mb << 20
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def main(module_name: str) -> None:
    """Entry point of a harness: ``python fuzz/fuzz_<name>.py [libFuzzer flags] [corpus dirs]``."""
    mod = sys.modules[module_name]
    name = os.path.basename(mod.__file__)[len("fuzz_"):-len(".py")]
    recorder = Recorder(name)
    limit_memory()
    argv = sys.argv
    if len(argv) == 3 and argv[1] == "--replay":  # one input, no fuzzer; a finding raises
        with open(argv[2], "rb") as f:
            data = f.read()
        case = mod.build(data)
        print(case.source() if case is not None else "(input skipped by the harness)", flush=True)
        if case is not None:
            case.run()
            print("no finding", flush=True)
        return
    t0 = time.perf_counter()
    seeds = mod.seeds()
    for seed in seeds:  # warm-up: loads or compiles the kernels before libFuzzer's timer runs
        one_input(mod.build, recorder, seed)
    print(f"segtext fuzz [{name}]: {len(seeds)} seeds run in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    dirs = [a for a in argv[1:] if not a.startswith("-") and not os.path.isfile(a)]  # files: inputs to run
    if dirs:  # the seeds join the corpus
        os.makedirs(dirs[0], exist_ok=True)
        for i, seed in enumerate(seeds):
            with open(os.path.join(dirs[0], f"seed-{i:03d}"), "wb") as f:
                f.write(seed)
    flags = {a.split("=")[0] for a in argv[1:] if a.startswith("-")}
    extra = []
    if "-dict" not in flags and getattr(mod, "DICT", None):
        path = os.path.join(os.path.dirname(dirs[0]) if dirs else FUZZ_DIR, f"{name}.dict")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(_dict_entry(t) + "\n" for t in mod.DICT)
        extra.append(f"-dict={path}")
    if "-max_len" not in flags:
        extra.append(f"-max_len={getattr(mod, 'MAX_LEN', 4096)}")
    if "-rss_limit_mb" not in flags:
        extra.append(f"-rss_limit_mb={MEMORY_LIMIT_MB}")
    deadline = os.environ.get("SEGTEXT_FUZZ_DEADLINE")  # run.py: stop at this time, start-up included
    if deadline and "-max_total_time" not in flags:
        extra.append(f"-max_total_time={max(1, int(float(deadline) - time.time()))}")
    atheris.Setup(argv[:1] + extra + argv[1:], lambda data: one_input(mod.build, recorder, data))
    atheris.Fuzz()
