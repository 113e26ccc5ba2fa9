"""`worldwalk bench --gpu-check`: one command for the first GPU machine, one verdict.

Each path of the GPU code is a row: PASS, FAIL or SKIP, with the bar it was held to and what was
measured, then a one-line summary. A SKIP is never counted as a pass: the summary says how many
paths were not run and why, and `0 failed` with skips is "incomplete", not "all good".
Paths (runtime/bench/gpu_paths.py has each one, with its bar):
1. every test marked `cuda` (pytest `-m cuda`), one row per test (a skipped test is a SKIP);
2. eager bf16 at full size: no NaN/Inf in any velocity or decoded frame; pipelined real-time factor
   against 1.0;
3. CUDA graphs at full size against eager for 4 chunks, same seed: frames within 4/255;
4. snapshot/restore at full size: bit-exact, host milliseconds and pinned bytes reported;
5. the memory plan against the allocator at full size: weights within 2%, a session's steady state within
   10% (allocated deltas; `max_memory_reserved` and `mem_get_info` reported too);
6. batching: 2 small worlds on one model, batched against serial, frames equal;
7. torch.compile and TensorRT (when installed) on the small config against eager: frames within 4/255.
The full-size TensorRT and torch.compile builds take longer than the check's 10 minutes: `--accel
tensorrt` (or `compile`) adds a full-size bench of that backend, with its build time, as one more row.
On a CPU every GPU path is a SKIP and the CPU paths run: the `cuda` tests collected, the small model eager
(finite frames), batching and snapshot/restore on the small model. Exit status: 1 if any row failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from .check import FAIL, PASS, SKIP, Check, verdict


def tests_dir() -> Path | None:
    """The source checkout's tests/ (the editable install's), or None in an installed wheel."""
    here = Path(__file__).resolve().parents[2] / "tests"
    return here if (here / "conftest.py").is_file() else None


def cuda_test_files() -> list[Path]:
    """Test modules that mark something `cuda` (collecting only these keeps the check quick)."""
    root = tests_dir()
    return [] if root is None else sorted(p for p in root.glob("test_*.py") if "mark.cuda" in p.read_text())


# installed pytest plugins that no worldwalk test uses: loading them costs the check a CPU second or two
UNUSED_PLUGINS = ["-p", "no:hypothesispytest", "-p", "no:anyio"]


def _pytest(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    args = [*UNUSED_PLUGINS, *args]
    root = tests_dir()
    files = [str(p) for p in cuda_test_files()]
    # `-o addopts=`: one process, not the suite's two xdist workers (GPU tests share one device)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", *args, *files],
                          capture_output=True, text=True, timeout=timeout, cwd=root.parent, env=env)


def cuda_tests(timeout: float = 300.0) -> list[Check]:
    """Run the `cuda`-marked tests; one Check per test (a skipped one is a SKIP with its reason)."""
    bar = "the test passes"
    if not cuda_test_files():
        return [Check("cuda tests", FAIL, "no tests/ folder with cuda tests: run --gpu-check from a source checkout")]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        try:
            out = _pytest(["-q", "-m", "cuda", f"--junitxml={xml}"], timeout)
        except subprocess.TimeoutExpired:
            return [Check("cuda tests", FAIL, f"did not finish within {timeout:.0f} s")]
        if not xml.is_file():
            return [Check("cuda tests", FAIL, (out.stdout + out.stderr).strip()[-300:], time.perf_counter() - t0)]
        checks = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).stem}::{case.get('name')}"
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            skip = case.find("skipped")
            seconds = float(case.get("time", 0))
            if bad is not None:
                checks.append(Check(name, FAIL, (bad.get("message") or "")[:200], seconds, bar))
            elif skip is not None:
                checks.append(Check(name, SKIP, skip.get("message", "")[:160], 0.0, bar))
            else:
                checks.append(Check(name, PASS, "", seconds, bar))
        if not checks:
            checks.append(Check("cuda tests", FAIL, "no test is marked cuda"))
        return checks


def collect_cuda_tests(timeout: float = 120.0) -> Check:
    """The CPU-side view: the `cuda` tests are collected (they import and would run on a GPU)."""
    if not cuda_test_files():
        return Check("cuda tests collected", FAIL, "no tests/ folder with cuda tests: run from a source checkout")
    t0 = time.perf_counter()
    out = _pytest(["-q", "--collect-only", "-m", "cuda"], timeout)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    ok = out.returncode == 0 and bool(ids)
    detail = f"{len(ids)} tests wait for a GPU" if ok else (out.stdout + out.stderr).strip()[-300:]
    return Check("cuda tests collected", verdict(ok), detail, time.perf_counter() - t0, "they import and would run")


def bench_check(kind: str, accel: str, chunks: int) -> list[Check]:
    """The random-init bench for each backend in `accel` (comma list); one Check per backend, its build time
    and pipelined real-time factor in the detail (a speed figure: it passes when it ran)."""
    from .context import BenchConfig, BenchContext
    from .full_size import RandomInitBench, random_init_figures

    checks = []
    for choice in accel.split(","):
        ctx = BenchContext(BenchConfig(quick=True))
        t0 = time.perf_counter()
        name = f"bench {kind} --accel {choice}"
        bar = "runs; speed reported"
        try:
            random_init_figures(ctx, RandomInitBench(kind=kind, chunks=chunks, accel=choice))
        except Exception as e:
            checks.append(Check(name, FAIL, f"{type(e).__name__}: {e}"[:300], time.perf_counter() - t0, bar))
            continue
        fig = {f.name: f.value for f in ctx.figures}
        rtf = [v for k, v in fig.items() if "real-time factor, pipelined" in k]
        build = [v for k, v in fig.items() if "graph build" in k]
        if ctx.skipped or not rtf:
            why = "; ".join(f"{w}: {y}" for w, y in ctx.skipped) or "no figures"
            checks.append(Check(name, FAIL, why[:300], time.perf_counter() - t0, bar))
            continue
        detail = f"real-time factor {rtf[0]:.2f}x pipelined"
        if build:
            detail += f", graphs built in {build[0]:.0f} s"
        checks.append(Check(name, PASS, detail, time.perf_counter() - t0, bar))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = ["| path | result | bar | measured | seconds |", "|---|---|---|---|---:|"]
    for c in checks:
        lines.append(f"| {c.name} | {c.status} | {c.bar} | {c.detail} | {c.seconds:.1f} |")
    lines.append("")
    lines.append(summary(checks))
    return "\n".join(lines)


def summary(checks: list[Check]) -> str:
    """One line: passed, failed, skipped, and the verdict (skips make it incomplete, never all good)."""
    n = {s: sum(c.status == s for c in checks) for s in (PASS, FAIL, SKIP)}
    if n[FAIL]:
        word = "FAIL"
    elif n[SKIP]:
        word = "INCOMPLETE (skipped paths were not checked)"
    else:
        word = "PASS"
    return f"gpu-check: {n[PASS]} passed, {n[FAIL]} failed, {n[SKIP]} skipped: {word}"


def run_gpu_check(args: argparse.Namespace) -> int:
    from . import gpu_paths

    gpu = torch.cuda.is_available()
    checks: list[Check] = []
    if gpu:
        name = torch.cuda.get_device_name(0)
        print(f"gpu-check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr)
        checks += cuda_tests()
    else:
        print("gpu-check: no NVIDIA GPU here (torch.cuda.is_available() is False): every GPU path is a SKIP; "
              "running the CPU paths.", file=sys.stderr)
        checks.append(collect_cuda_tests())
    checks += gpu_paths.run_paths(gpu, args.chunks)
    if gpu and args.accel not in (None, "auto", "none", "cudagraph"):  # the long full-size builds, when asked
        checks += bench_check("full", args.accel, max(8, args.chunks or 8))
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
