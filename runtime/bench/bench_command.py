"""`worldwalk bench`: honest figures, printed as a table and written as JSON.

Every figure is a name, a value and a unit, with a note saying what it includes. Suites come
from the `worldwalk.benchmarks` entry-point group (`suite(ctx) -> None`, adding figures to
`ctx`), so the window and the stream packages measure their own paths. Timings are medians of
repeated runs after a warm-up; p95 where tails matter. No thresholds: this reports, it does not
judge.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from importlib.metadata import entry_points
from typing import Any

from worldwalk.runtime.args import add_accel_argument
from worldwalk.runtime.bench.machine import gather

from .context import BenchConfig, BenchContext, Figure, format_table, median, percentile, report  # noqa: F401 (suites import them from here)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    ctx = BenchContext(cfg)
    machine = gather(gl=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    for ep in sorted(entry_points(group="worldwalk.benchmarks"), key=lambda e: e.name):
        if cfg.suites and ep.name not in cfg.suites:
            continue
        ctx.suite = ep.name
        print(f"[{ep.name}]", file=sys.stderr, flush=True)
        try:
            ep.load()(ctx)
        except Exception as e:  # one broken suite must not hide the others' figures
            ctx.failed.append((ep.name, f"{type(e).__name__}: {e}"))
            print(f"  FAILED {ep.name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    return {
        "machine": machine,
        "date": started,
        "quick": cfg.quick,
        "figures": [asdict(f) for f in ctx.figures],
        "skipped": [{"what": w, "why": y} for w, y in ctx.skipped],
        "failed": [{"suite": n, "error": e} for n, e in ctx.failed],
    }


def run(args: argparse.Namespace) -> int:
    if getattr(args, "gpu_check", False):  # every CUDA-only test, then the full-size bench (runtime/bench/gpu_check.py)
        from .gpu_check import run_gpu_check

        return run_gpu_check(args)
    if getattr(args, "mode", None) and not (args.world == ["matrix-game"] and getattr(args, "random_init", None)):
        print("bench: --mode picks a Matrix-Game model: it goes with --world matrix-game --random-init full|small",
              file=sys.stderr)
        return 2
    if getattr(args, "random_init", None):  # SANA-WM at its real size, random weights (runtime/bench/full_size.py)
        from .full_size import run_random_init

        return run_random_init(args)
    cfg = BenchConfig(
        quick=args.quick,
        suites=args.suite or [],
        worlds=args.world or [],
        accel=args.accel,
    )
    result = run_bench(cfg)
    return report(result, args.json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark suite: fps with the VAE decode included, latency, cache cost")
    p.add_argument("--quick", action="store_true", help="a small subset in under a minute")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--suite", action="append", help="run only this suite (repeatable)")
    p.add_argument("--world", action="append", help="only these worlds where a suite builds worlds (repeatable)")
    add_accel_argument(p)
    p.add_argument("--random-init", choices=("full", "small"),
                   help="with --world sana-wm: SANA-WM with random weights, the released size on a GPU (full, bf16, "
                   "704x1280) or a small one anywhere; per-pass chunk times, real-time factor, peak memory")
    p.add_argument("--chunks", type=int, help="chunks to measure with --random-init (default 8; full: at least 8)")
    p.add_argument("--mode", choices=("universal", "gta_drive", "templerun"), default=None,
                   help="with --world matrix-game --random-init: which of its three models (default universal)")
    p.add_argument("--gpu-check", action="store_true",
                   help="on an NVIDIA GPU: every CUDA-only test, then the full-size bench; one pass/fail table")
    p.set_defaults(func=run)
