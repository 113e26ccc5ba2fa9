"""The options a world reads from `WorldConfig.options`, and the range each may take.

Options come from code, and from session logs that `worldwalk render --log` replays; a log may come
from anyone. So each world names its options with their limits (`OPTIONS` in its module), and its
`create` checks them before it builds or allocates anything: a frames-per-chunk of a million or a
10,000-pixel-wide frame is refused with the option, its limit and the fix, instead of becoming a
12 GiB allocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DTYPE", "Choice", "FilePath", "Flag", "Integer", "Integers", "Text", "WorldOptionError", "check_options"]


class WorldOptionError(ValueError):
    """A world option that is unknown, of the wrong type or beyond the world's limits."""


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Integer:
    lo: int
    hi: int
    unit: str = ""

    def problem(self, v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"is {_show(v)}, not a whole number"
        if not self.lo <= v <= self.hi:
            return f"is {v}, beyond its limit of {self.lo} to {self.hi}{' ' + self.unit if self.unit else ''}"
        return None

    def span(self) -> str:
        return f"a whole number from {self.lo} to {self.hi}"


@dataclass(frozen=True)
class Integers:
    """A list of whole numbers, each from lo to hi, with 1 to `most` items."""

    lo: int
    hi: int
    most: int

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= self.most:
            return f"is {_show(v)}, not a list of 1 to {self.most} whole numbers"
        bad = Integer(self.lo, self.hi)
        return next((f"has {_show(x)}, beyond {self.lo} to {self.hi}" for x in v if bad.problem(x)), None)

    def span(self) -> str:
        return f"a list of 1 to {self.most} whole numbers from {self.lo} to {self.hi}"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]

    def problem(self, v: Any) -> str | None:
        return None if v in self.values else f"is {_show(v)}, not one of {', '.join(self.values)}"

    def span(self) -> str:
        return f"one of {', '.join(self.values)}"


DTYPE = Choice(("float32", "bfloat16", "float16"))  # a world's torch dtype, by name


@dataclass(frozen=True)
class Flag:
    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else f"is {_show(v)}, not true or false"

    def span(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Text:
    most: int = 4096

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, str) or not v or len(v) > self.most:
            return f"is {_show(v)}, not a name of 1 to {self.most} characters"
        return None

    def span(self) -> str:
        return f"a name of 1 to {self.most} characters"


@dataclass(frozen=True)
class FilePath(Text):
    """A file or folder the world reads. A replayed log's are kept inside the log's folder (replay.py)."""

    def span(self) -> str:
        return f"a path of 1 to {self.most} characters"


Rule = Integer | Integers | Choice | Flag | Text | FilePath


def check_options(world: str, options: Mapping[str, Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """The options given (those not None: None stands for the default); WorldOptionError naming the first
    option of `options` that `rules` does not allow."""
    unknown = sorted(str(k) for k in options if k not in rules)
    if unknown:
        raise WorldOptionError(f"unknown {world} world options {unknown}; known: {sorted(rules)}")
    for name, rule in rules.items():
        value = options.get(name)
        if value is None:
            continue
        problem = rule.problem(value)
        if problem is not None:
            raise WorldOptionError(f"{world} world option {name!r} {problem}; set it to {rule.span()}, "
                                   "or leave it out for the default")
    return {k: v for k, v in options.items() if v is not None}
