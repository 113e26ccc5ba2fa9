"""`worldwalk bench`: honest figures, printed as a table and written as JSON.

Every figure is a name, a value and a unit, with a note saying what it includes. Suites come
from the `worldwalk.benchmarks` entry-point group (`suite(ctx) -> None`, adding figures to
`ctx`), so the window and the stream packages measure their own paths. Timings are medians of
repeated runs after a warm-up; p95 where tails matter. No thresholds: this reports, it does not
judge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Any

from worldwalk.runtime.cli.args import add_accel_argument
from worldwalk.runtime.cli.info import gather


@dataclass
class Figure:
    suite: str
    name: str
    value: float
    unit: str
    note: str = ""


@dataclass
class BenchConfig:
    quick: bool = False  # a small subset in under a minute (CI smoke test)
    suites: list[str] = field(default_factory=list)  # empty: all
    worlds: list[str] = field(default_factory=list)  # empty: every world a suite knows how to build
    seconds: float = 0.0  # a suite's own budget per measurement; 0 = its default
    accel: str = "auto"  # the chunk-step backend of the worlds suites build, as play runs them


class BenchContext:
    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.figures: list[Figure] = []
        self.skipped: list[tuple[str, str]] = []  # (what, why): not measurable here
        self.failed: list[tuple[str, str]] = []  # (suite, error): a bug, and the command fails
        self.suite = ""

    @property
    def quick(self) -> bool:
        return self.cfg.quick

    def add(self, name: str, value: float, unit: str, note: str = "") -> None:
        self.figures.append(Figure(self.suite, name, float(value), unit, note))
        print(f"  {name:<48} {_fmt(value):>10} {unit:<8} {note}", file=sys.stderr, flush=True)

    def add_timings(self, name: str, seconds: list[float], note: str = "", p95: bool = True) -> None:
        """Median (and p95) of repeated timings, reported in milliseconds."""
        self.add(f"{name} p50", 1000 * median(seconds), "ms", note)
        if p95 and len(seconds) >= 5:
            self.add(f"{name} p95", 1000 * percentile(seconds, 95), "ms", note)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append((what, why))
        print(f"  (skipped {what}: {why})", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _fmt(v: float) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


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


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    gl = m.get("gl", {}).get("renderer", "?")
    lines = [
        f"worldwalk {m['worldwalk']} bench, {result['date']}" + (" (quick)" if result["quick"] else ""),
        f"machine: {m['cpu']}, {m['cores']} cores; torch {m.get('torch')} on {', '.join(m.get('torch_devices', []))};"
        f" GL: {gl}",
        "",
        "| suite | figure | value | unit | includes |",
        "|---|---|---:|---|---|",
    ]
    for f in result["figures"]:
        lines.append(f"| {f['suite']} | {f['name']} | {_fmt(f['value'])} | {f['unit']} | {f['note']} |")
    for s in result["skipped"]:
        lines.append(f"| (skipped) | {s['what']} | | | {s['why']} |")
    for s in result.get("failed", []):
        lines.append(f"| (FAILED) | {s['suite']} | | | {s['error']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "gpu_check", False):  # every CUDA-only test, then the full-size bench (runtime/bench/gpu_check.py)
        from .gpu_check import run_gpu_check

        return run_gpu_check(args)
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
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    if result["failed"]:
        print(f"bench: {len(result['failed'])} suite(s) failed", file=sys.stderr)
        return 1
    return 0


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
    p.add_argument("--gpu-check", action="store_true",
                   help="on an NVIDIA GPU: every CUDA-only test, then the full-size bench; one pass/fail table")
    p.set_defaults(func=run)
