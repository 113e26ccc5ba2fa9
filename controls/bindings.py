"""Key bindings as data: which key names drive which motion action, overridable from TOML.

A bindings file lists only the actions it changes; each names one key or a list of keys, and
replaces that action's default keys::

    [bindings]              # the table is optional: a file of bare actions works too
    forward = ["w", "up"]
    look_up = []            # unbound
    fast = "ctrl"

Key names are those of ``input_state.key_name`` (lower case: "w", "shift", "space", "left").
A key may drive several actions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .input_state import Intent, key_name


class BindingsError(ValueError):
    """A bindings file or table names an unknown action or a malformed key list."""


@dataclass(frozen=True)
class Bindings:
    """Action name -> the key names that trigger it."""

    forward: tuple[str, ...] = ("w",)
    back: tuple[str, ...] = ("s",)
    left: tuple[str, ...] = ("a",)
    right: tuple[str, ...] = ("d",)
    up: tuple[str, ...] = ("space",)
    down: tuple[str, ...] = ("c",)
    turn_left: tuple[str, ...] = ("q", "left")
    turn_right: tuple[str, ...] = ("e", "right")
    look_up: tuple[str, ...] = ("up",)
    look_down: tuple[str, ...] = ("down",)
    fast: tuple[str, ...] = ("shift",)

    @classmethod
    def action_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], source: str = "bindings") -> Bindings:
        """Defaults overridden by ``table`` (action -> key name or list of key names)."""
        valid = cls.action_names()
        overrides: dict[str, tuple[str, ...]] = {}
        for action, value in table.items():
            if action not in valid:
                raise BindingsError(
                    f"{source}: unknown action {action!r}; valid actions are: {', '.join(valid)}"
                )
            keys = [value] if isinstance(value, str) else value
            if not isinstance(keys, list | tuple) or not all(isinstance(k, str) and k for k in keys):
                raise BindingsError(
                    f"{source}: action {action!r} must be a key name or a list of key names, "
                    f"got {value!r}"
                )
            overrides[action] = tuple(dict.fromkeys(key_name(k) for k in keys))
        defaults = cls()
        return cls(**{name: overrides.get(name, getattr(defaults, name)) for name in valid})

    @classmethod
    def load(cls, path: str | Path) -> Bindings:
        """Defaults overridden by the TOML file at ``path`` (its ``[bindings]`` table if it has
        one, else its top level)."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise BindingsError(f"{path}: not valid TOML ({e})") from e
        table = data.get("bindings", data)
        if not isinstance(table, dict):
            raise BindingsError(f"{path}: [bindings] must be a table of action = keys")
        return cls.from_mapping(table, source=str(path))

    def to_mapping(self) -> dict[str, list[str]]:
        """Action -> list of key names (the shape ``from_mapping`` and TOML files use)."""
        return {name: list(getattr(self, name)) for name in self.action_names()}

    def actions(self, keys: Iterable[str]) -> set[str]:
        """The actions triggered by the held ``keys``."""
        held = {key_name(k) for k in keys}
        return {name for name in self.action_names() if held.intersection(getattr(self, name))}

    def intent(self, keys: Iterable[str]) -> Intent:
        """The motion the held ``keys`` ask for. Opposite actions cancel; moving diagonally is no
        faster than moving straight."""
        a = self.actions(keys)
        forward = float("forward" in a) - float("back" in a)
        right = float("right" in a) - float("left" in a)
        norm = math.hypot(forward, right)
        if norm > 1.0:
            forward, right = forward / norm, right / norm
        return Intent(
            forward=forward,
            right=right,
            up=float("up" in a) - float("down" in a),
            yaw=float("turn_right" in a) - float("turn_left" in a),
            pitch=float("look_up" in a) - float("look_down" in a),
            fast="fast" in a,
        )
