#!/usr/bin/env python3
"""Run the segtext fuzz harnesses, each in its own subprocess, and summarise what they found.

    python fuzz/run.py --minutes 10              # every harness, 10 minutes in all
    python fuzz/run.py --minutes 5 --target rrle --target bsd
    python fuzz/run.py --list
    python fuzz/run.py --replay fuzz/crashes/rrle/1a2b3c4d5e.bin

The time is split evenly between the harnesses (start-up included). A harness whose process dies
(segfault, an input past --timeout, memory past --memory-mb) is restarted for the rest of its
time, at most --restarts times. Findings go to fuzz/crashes/<harness>/ (see fuzz/README.md), the
corpora libFuzzer grows to fuzz/corpus/<harness>/, the logs to fuzz/logs/<harness>.log.
Exit status: 0 when nothing was found, 1 when a harness found something, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def harnesses() -> dict[str, str]:
    """name -> path of every fuzz/fuzz_<name>.py."""
    return {os.path.basename(p)[5:-3]: p for p in sorted(glob.glob(os.path.join(HERE, "fuzz_*.py")))}


def doc_line(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        m = re.search(r'"""(.*?)(\n\n|""")', f.read(), re.S)
    return " ".join(m.group(1).split()) if m else ""


def run_one(name: str, path: str, seconds: float, args: argparse.Namespace) -> dict:
    crash_dir = os.path.join(args.crashes, name)
    corpus = os.path.join(HERE, "corpus", name)
    os.makedirs(crash_dir, exist_ok=True)
    os.makedirs(os.path.join(HERE, "logs"), exist_ok=True)
    log_path = os.path.join(HERE, "logs", f"{name}.log")
    report = tempfile.NamedTemporaryFile(prefix=f"segtext-fuzz-{name}-", suffix=".jsonl", delete=False).name
    deadline = time.time() + seconds
    result = {"harness": name, "seconds": 0.0, "executions": 0, "findings": [], "restarts": 0}
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        while True:
            env = dict(os.environ, SEGTEXT_FUZZ_REPORT=report, SEGTEXT_FUZZ_DEADLINE=str(deadline),
                       SEGTEXT_FUZZ_MEMORY_MB=str(args.memory_mb), SEGTEXT_FUZZ_CRASHES=args.crashes,
                       PYTHONUNBUFFERED="1")
            cmd = [sys.executable, path, corpus, f"-timeout={args.timeout}", f"-artifact_prefix={crash_dir}{os.sep}",
                   "-print_final_stats=1", *args.libfuzzer]
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            start = log.tell()
            try:  # start-up and warm-up are outside libFuzzer's clock: a hang there is caught here
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    timeout=max(60.0, deadline - time.time() + 120)).returncode
            except subprocess.TimeoutExpired:
                rc = "killed (ran past its time; see the log)"
            log.flush()
            with open(log_path, encoding="utf-8", errors="replace") as f:
                f.seek(start)
                out = f.read()
            execs = re.findall(r"stat::number_of_executed_units: (\d+)", out) or re.findall(r"^#(\d+)\t", out, re.M)
            result["executions"] += int(execs[-1]) if execs else 0
            artifacts = re.findall(r"Test unit written to (\S+)", out)
            for a in artifacts:
                kind = os.path.basename(a).split("-")[0]  # crash / timeout / oom / leak
                what = re.findall(r"==\d+== ?ERROR: libFuzzer: ([^\n]+)", out) or [kind]
                result["findings"].append({"finding": f"process {kind}: {what[-1].strip()}", "input": a})
            if rc != 0 and not artifacts:
                started = "segtext fuzz [" in out
                result["findings"].append({"finding": f"harness exited with {describe(rc)} "
                                           + ("(no reproducer)" if started else "before fuzzing"), "input": log_path})
            if not artifacts or time.time() > deadline - 15 or result["restarts"] >= args.restarts:
                break
            result["restarts"] += 1
    with open(report, encoding="utf-8") as f:
        found = [json.loads(line) for line in f if line.strip()]
    unique = {(x["finding"], x["input"]): x for x in found + result["findings"]}  # once per restart otherwise
    result["findings"] = list(unique.values())
    os.unlink(report)
    result["seconds"] = time.time() - t0
    return result


def describe(rc) -> str:
    if isinstance(rc, int) and rc < 0:
        return f"signal {signal.Signals(-rc).name}"
    return f"status {rc}" if isinstance(rc, int) else rc


def replay(path: str) -> int:
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    target = harnesses().get(name)
    if target is None:
        print(f"run.py: {path} is not under fuzz/crashes/<harness>/ (harnesses: {', '.join(harnesses())})",
              file=sys.stderr)
        return 2
    rc = subprocess.run([sys.executable, target, "--replay", path], cwd=ROOT).returncode
    if rc:
        print(f"run.py: the harness exited with {describe(rc)}", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="total fuzzing time, split between the harnesses")
    p.add_argument("--target", action="append", metavar="NAME", help="run only this harness (repeatable)")
    p.add_argument("--list", action="store_true", help="list the harnesses and exit")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take (libFuzzer -timeout)")
    p.add_argument("--memory-mb", type=int, default=3072, help="address-space limit of each harness process")
    p.add_argument("--restarts", type=int, default=3, help="restarts of a harness whose process died")
    p.add_argument("--crashes", default=os.path.join(HERE, "crashes"), help="where findings go")
    p.add_argument("--replay", metavar="FILE", help="run one saved input through its harness and exit")
    p.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --  (e.g. -- -jobs=1)")
    args = p.parse_args(argv)
    found = harnesses()
    if args.list:
        for name, path in found.items():
            print(f"{name:<12} {doc_line(path)}")
        return 0
    if args.replay:
        return replay(args.replay)
    names = args.target or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        p.error(f"unknown harness {', '.join(unknown)}; have {', '.join(found)}")
    each = args.minutes * 60 / len(names)
    print(f"fuzzing {len(names)} harness(es), {each:.0f} s each: {', '.join(names)}", flush=True)
    results = []
    for name in names:
        r = run_one(name, found[name], each, args)
        results.append(r)
        print(f"  {name:<12} {r['seconds']:6.0f} s  {r['executions']:>9} executions  "
              f"{len(r['findings'])} finding(s)" + (f", {r['restarts']} restart(s)" if r["restarts"] else ""),
              flush=True)
    print("\nsummary")
    print(f"  {'harness':<12} {'seconds':>7} {'executions':>10} {'findings':>8}  reproducers")
    for r in results:
        print(f"  {r['harness']:<12} {r['seconds']:7.0f} {r['executions']:>10} {len(r['findings']):>8}")
        for f in r["findings"]:
            print(f"      {f['finding']}\n        {os.path.relpath(f['input'], ROOT)}")
    total = sum(len(r["findings"]) for r in results)
    print(f"\n{total} finding(s)" + (f"; each .bin has a .txt beside it with the Python reproducer; "
                                    f"replay one with: python fuzz/run.py --replay FILE" if total else ""))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
