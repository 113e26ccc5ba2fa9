"""The schema of a session log's lines, checked in one place: `read_log` runs every line it reads
through `check_line`, so nothing downstream (replay, render) sees a field of the wrong type or
an absurd size. A log is untrusted input: it may come from anywhere.

Each rule names its field and what it expects; a failure raises `SchemaError(field, problem)`,
which `read_log` turns into "<file>:<line>: field '<field>': <problem>". Unknown fields are
allowed (newer writers may add some); the known ones must be as described here. Sizes and
counts are bounded so that a log cannot ask for more work or memory than a real session makes.
Paths in a log (first_image, checkpoint) are checked against the log's folder by the replay,
which knows what the user named on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MAX_LINE_BYTES = 4 * 2**20  # a chunk line of 1,024 frames is ~1 MiB
MAX_LINES = 1_000_000
MAX_SIDE = 8192  # frame width or height, pixels
MAX_PIXELS = 4096 * 4096  # width x height
MAX_CHUNK_FRAMES = 1024  # poses in one chunk
MAX_CHUNK_INDEX = 10_000_000
MAX_TEXT = 100_000  # a prompt
MAX_NAME = 4096  # names and paths

Rule = Callable[[Any], str | None]  # value -> None if fine, else what is wrong with it


class SchemaError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}': {problem}")
        self.field = field
        self.problem = problem


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(lo: int, hi: int) -> Rule:
    def rule(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {_show(v)}"
        if not lo <= v <= hi:
            return f"expected an integer from {lo} to {hi}, got {_show(v)}"
        return None

    return rule


def number(lo: float, hi: float, lo_open: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"expected a finite number, got {_show(v)}"
        if v > hi or v < lo or (lo_open and v == lo):
            span = f"above {lo} and at most {hi}" if lo_open else f"from {lo} to {hi}"
            return f"expected a number {span}, got {_show(v)}"
        return None

    return rule


def text(max_len: int = MAX_NAME, nonempty: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"expected a string, got {_show(v)}"
        if len(v) > max_len:
            return f"expected at most {max_len} characters, got {len(v)}"
        if nonempty and not v:
            return "expected a non-empty string"
        return None

    return rule


def optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else rule(v)


def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"expected a JSON object, got {_show(v)}"


def matrices(rows: int, cols: int, count: tuple[int, int] | None = None) -> Rule:
    """A rows x cols matrix of finite numbers, or (count given) a list of such matrices."""

    def one(m: Any) -> bool:
        return (isinstance(m, list) and len(m) == rows and all(
            isinstance(r, list) and len(r) == cols and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r)
            for r in m))

    def rule(v: Any) -> str | None:
        if count is None:
            return None if one(v) else f"expected a {rows}x{cols} list of finite numbers"
        lo, hi = count
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            n = len(v) if isinstance(v, list) else _show(v)
            return f"expected a list of {lo} to {hi} {rows}x{cols} matrices, got {n}"
        bad = next((i for i, m in enumerate(v) if not one(m)), None)
        return None if bad is None else f"item {bad} is not a {rows}x{cols} list of finite numbers"

    return rule


HEADER: dict[str, Rule] = {
    "format": text(100),
    "format_version": integer(0, 10**6),
    "worldwalk_version": optional(text(100)),
    "world": text(200, nonempty=True),
    "model": text(200),
    "label": optional(text(MAX_NAME)),
    "fps": number(0, 1000, lo_open=True),
    "width": integer(2, MAX_SIDE),
    "height": integer(2, MAX_SIDE),
    "frames_per_chunk": optional(integer(1, MAX_CHUNK_FRAMES)),
    "first_chunk_frames": optional(integer(1, MAX_CHUNK_FRAMES)),
    "seed": integer(-(2**63), 2**64 - 1),
    "device": optional(text(64)),
    "dtype": optional(text(64)),
    "intrinsics": matrices(3, 3),
    "checkpoint": optional(text(MAX_NAME, nonempty=True)),
    "checkpoint_hash": optional(text(200)),
    "prompt": optional(text(MAX_TEXT)),
    "first_image": optional(text(MAX_NAME, nonempty=True)),
    "first_image_hash": optional(text(200)),
    "world_options": optional(mapping),
    "settings": optional(mapping),
    "video": optional(text(MAX_NAME)),
    "created": optional(text(100)),
}
HEADER_REQUIRED = ("format", "format_version", "world", "model", "fps", "width", "height", "seed", "intrinsics")

CHUNK: dict[str, Rule] = {
    "index": integer(0, MAX_CHUNK_INDEX),
    "t": optional(number(-1e12, 1e12)),
    "input": optional(mapping),
    "poses": matrices(4, 4, (1, MAX_CHUNK_FRAMES)),
    "timings": optional(mapping),
    "actions": optional(mapping),
}
CHUNK_REQUIRED = ("index", "poses")

EVENT: dict[str, Rule] = {
    "kind": text(64),
    "t": optional(number(-1e12, 1e12)),
    "to_chunk": optional(integer(0, MAX_CHUNK_INDEX)),
    "seed": optional(integer(-(2**63), 2**64 - 1)),
}

END: dict[str, Rule] = {
    "t": optional(number(-1e12, 1e12)),
    "chunks": optional(integer(0, MAX_LINES)),
}

RULES = {"header": (HEADER, HEADER_REQUIRED), "chunk": (CHUNK, CHUNK_REQUIRED), "event": (EVENT, ()),
         "end": (END, ())}


MAX_ACTION_WIDTH = 16  # action values a frame: Matrix-Game's keyboards take 2, 4 or 7; its mouse 2


def _actions_problems(actions: dict[str, Any], n: int) -> list[tuple[str, str]]:
    """An action world's per-frame actions: "keyboard" and "mouse", each n rows of finite numbers."""
    out = [("keyboard", "missing")] if actions and "keyboard" not in actions else []
    for name, v in actions.items():
        if name not in ("keyboard", "mouse"):
            out.append((name, "unknown action; expected keyboard or mouse"))
        elif not (isinstance(v, list) and len(v) == n and all(
                isinstance(r, list) and 1 <= len(r) <= MAX_ACTION_WIDTH and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r)
                for r in v)):
            out.append((name, f"expected {n} rows (one a frame) of 1 to {MAX_ACTION_WIDTH} finite numbers"))
    return out


def _check(obj: dict[str, Any], rules: dict[str, Rule], required: tuple[str, ...]) -> None:
    for key in required:
        if key not in obj:
            raise SchemaError(key, "missing")
    for key, rule in rules.items():
        if key in obj:
            problem = rule(obj[key])
            if problem is not None:
                raise SchemaError(key, problem)


def check_line(obj: Any, first: bool) -> str:
    """Check one parsed line; returns its type. The first line must be the header."""
    if not isinstance(obj, dict):
        raise SchemaError("type", "expected a JSON object with a 'type'")
    kind = obj.get("type")
    if kind not in RULES:
        raise SchemaError("type", f"unknown line type {_show(kind)}; expected header, chunk, event or end")
    if first != (kind == "header"):
        raise SchemaError("type", "the first line must be the header, and only the first")
    rules, required = RULES[kind]
    _check(obj, rules, required)
    if kind == "header":
        if obj["width"] * obj["height"] > MAX_PIXELS:
            raise SchemaError("width", f"{obj['width']}x{obj['height']} is more than {MAX_PIXELS} pixels")
    elif kind == "chunk":
        n = len(obj["poses"])
        if "intrinsics" in obj:
            problem = matrices(3, 3, (n, n))(obj["intrinsics"])
            if problem is not None:
                raise SchemaError("intrinsics", problem)
        for name, problem in _actions_problems(obj.get("actions") or {}, n):
            raise SchemaError(f"actions.{name}", problem)
        if obj.get("keep") is not None:  # 0: made (the replay needs it) but none of its frames in the video
            problem = integer(0, n)(obj["keep"])
            if problem is not None:
                raise SchemaError("keep", f"{problem} (the chunk has {n} poses)")
    return kind
