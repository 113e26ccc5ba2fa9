"""`worldwalk bench --gpu-check`: one command for the first GPU machine, one pass/fail table.

On a machine with an NVIDIA GPU (a CUDA build of torch that sees a device):
1. every test marked `cuda` (pytest `-m cuda`: stream and event ordering, the decode overlap on two
   streams, CUDA graphs, TensorRT when installed, bf16 on the device, the memory plan against the
   allocator), one row per test;
2. the full-size bench (`--random-init full`, 8 chunks at 704x1280, bf16) for `--accel none` and
   `cudagraph` (or the `--accel` given: TensorRT and torch.compile of the 2.6B step take minutes to
   build, so they run only when asked), one row per backend with its real-time factor.
On a CPU it says there is no GPU, then runs the CPU-side checks only: the `cuda` tests are collected
(and so would run on a GPU), and the small random-init bench runs its whole path quickly. Exit status:
1 if any check failed, else 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


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
    """Run the `cuda`-marked tests; one Check per test (a skipped one passes with its reason)."""
    if not cuda_test_files():
        return [Check("cuda tests", False, "no tests/ folder with cuda tests: run --gpu-check from a source checkout")]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        try:
            out = _pytest(["-q", "-m", "cuda", f"--junitxml={xml}"], timeout)
        except subprocess.TimeoutExpired:
            return [Check("cuda tests", False, f"did not finish within {timeout:.0f} s")]
        if not xml.is_file():
            return [Check("cuda tests", False, (out.stdout + out.stderr).strip()[-300:], time.perf_counter() - t0)]
        checks = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).stem}::{case.get('name')}"
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            skip = case.find("skipped")
            if bad is not None:
                checks.append(Check(name, False, (bad.get("message") or "")[:200], float(case.get("time", 0))))
            elif skip is not None:
                checks.append(Check(name, True, f"skipped: {skip.get('message', '')[:160]}", 0.0))
            else:
                checks.append(Check(name, True, "", float(case.get("time", 0))))
        if not checks:
            checks.append(Check("cuda tests", out.returncode in (0, 5), "no test is marked cuda"))
        return checks


def collect_cuda_tests(timeout: float = 120.0) -> Check:
    """The CPU-side view: the `cuda` tests are collected (they import and would run on a GPU)."""
    if not cuda_test_files():
        return Check("cuda tests collected", False, "no tests/ folder with cuda tests: run from a source checkout")
    t0 = time.perf_counter()
    out = _pytest(["-q", "--collect-only", "-m", "cuda"], timeout)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    ok = out.returncode == 0 and bool(ids)
    detail = f"{len(ids)} tests wait for a GPU" if ok else (out.stdout + out.stderr).strip()[-300:]
    return Check("cuda tests collected", ok, detail, time.perf_counter() - t0)


def bench_check(kind: str, accel: str, chunks: int, size: tuple[int, int] | None = None) -> list[Check]:
    """The random-init bench for each backend in `accel` (comma list); one Check per backend."""
    from .context import BenchConfig, BenchContext
    from .full_size import RandomInitBench, random_init_figures

    checks = []
    for choice in accel.split(","):
        ctx = BenchContext(BenchConfig(quick=True))
        t0 = time.perf_counter()
        name = f"bench {kind} --accel {choice}"
        try:
            random_init_figures(ctx, RandomInitBench(kind=kind, chunks=chunks, accel=choice, size=size))
        except Exception as e:
            checks.append(Check(name, False, f"{type(e).__name__}: {e}"[:300], time.perf_counter() - t0))
            continue
        fig = {f.name: f.value for f in ctx.figures}
        rtf = [v for k, v in fig.items() if "real-time factor, pipelined" in k]
        peak = [v for k, v in fig.items() if "peak GPU memory" in k]
        if ctx.skipped or not rtf:
            why = "; ".join(f"{w}: {y}" for w, y in ctx.skipped) or "no figures"
            checks.append(Check(name, False, why[:300], time.perf_counter() - t0))
            continue
        detail = f"real-time factor {rtf[0]:.2f}x pipelined"
        if peak:
            detail += f", peak {peak[0]:.1f} GiB"
        checks.append(Check(name, True, detail, time.perf_counter() - t0))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = ["| check | result | seconds | detail |", "|---|---|---:|---|"]
    for c in checks:
        lines.append(f"| {c.name} | {'pass' if c.ok else 'FAIL'} | {c.seconds:.1f} | {c.detail} |")
    n_bad = sum(not c.ok for c in checks)
    lines.append("")
    lines.append(f"{len(checks) - n_bad} passed, {n_bad} failed")
    return "\n".join(lines)


def run_gpu_check(args: argparse.Namespace) -> int:
    gpu = torch.cuda.is_available()
    checks: list[Check] = []
    if gpu:
        name = torch.cuda.get_device_name(0)
        print(f"gpu-check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr)
        checks += cuda_tests()
        accel = args.accel if args.accel not in (None, "auto") else "none,cudagraph"
        checks += bench_check("full", accel, max(8, args.chunks or 8))
    else:
        print("gpu-check: no NVIDIA GPU here (torch.cuda.is_available() is False): the CUDA tests and the "
              "full-size bench need one. Running the CPU-side checks only.", file=sys.stderr)
        checks.append(collect_cuda_tests())
        checks += bench_check("small", "none", args.chunks or 1, size=(64, 48))
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
