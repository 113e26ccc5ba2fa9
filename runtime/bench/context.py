"""What `worldwalk bench` suites write into: `BenchContext` (figures, skips, failures), its config,
the statistics they report and the table they print. Its own module so that the bench command and
the commands built on it (gpu_check, full_size) import it without importing each other."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any


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


def report(result: dict[str, Any], json_path: str | None) -> int:
    """Print the table (and write the JSON when asked); the exit code: 1 when a suite failed."""
    print(format_table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {json_path}")
    for failed in result["failed"]:
        print(f"bench: {failed['suite']} failed: {failed['error']}", file=sys.stderr)
    return 1 if result["failed"] else 0
