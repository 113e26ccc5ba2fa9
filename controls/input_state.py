"""What the player is doing: ``InputState``, a snapshot of the input, and ``Intent``, the
device-free motion request the integrator consumes (``InputBox``, in input_box.py, is where device
handlers write).

Mouse deltas are accumulated pixels since the last ``InputBox.take()``. Every accumulation has an
id, ``mouse_epoch``: ``take()`` and ``clear()`` start a new one. Two states with the same epoch
carry running totals of the same accumulation, so a consumer can apply only what is new (see
``PoseIntegrator``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Common spellings of the same key from pyglet, browsers (KeyboardEvent.key) and people.
KEY_ALIASES: dict[str, str] = {
    " ": "space",
    "spacebar": "space",
    "lshift": "shift",
    "rshift": "shift",
    "shiftleft": "shift",
    "shiftright": "shift",
    "lctrl": "ctrl",
    "rctrl": "ctrl",
    "control": "ctrl",
    "controlleft": "ctrl",
    "controlright": "ctrl",
    "lalt": "alt",
    "ralt": "alt",
    "altleft": "alt",
    "altright": "alt",
    "arrowleft": "left",
    "arrowright": "right",
    "arrowup": "up",
    "arrowdown": "down",
    "esc": "escape",
    "return": "enter",
}

def key_name(raw: str) -> str:
    """The canonical lower-case name of a key: ``key_name("ArrowLeft") == "left"``,
    ``key_name("LSHIFT") == "shift"``, ``key_name("KeyW") == "w"``."""
    name = raw if raw == " " else raw.strip().lower()
    if len(name) == 4 and name.startswith("key") and name[3].isalpha():  # browser KeyboardEvent.code
        name = name[3]
    return KEY_ALIASES.get(name, name)


@dataclass(frozen=True)
class InputState:
    """A snapshot of the player's input.

    keys: names of the held keys, lower case ("w", "shift", "space", "left", ...).
    mouse_dx, mouse_dy: pixels accumulated since the last take (+dx right, +dy down).
    left_stick, right_stick: (x, y) in [-1, 1], x right, y down, raw (no dead zone applied).
    left_trigger, right_trigger: [0, 1].
    timestamp: time.monotonic() of the newest event.
    mouse_epoch: id of the mouse accumulation these totals belong to (0 for hand-made states).
    """

    keys: frozenset[str] = frozenset()
    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    left_stick: tuple[float, float] = (0.0, 0.0)
    right_stick: tuple[float, float] = (0.0, 0.0)
    left_trigger: float = 0.0
    right_trigger: float = 0.0
    timestamp: float = 0.0
    mouse_epoch: int = 0


@dataclass(frozen=True)
class Intent:
    """A device-free motion request; every field is unitless in [-1, 1] (speeds come from the
    integrator's config).

    forward: +1 forward, -1 back.  right: +1 strafe right.  up: +1 rise (world -y).
    yaw: +1 turn right at full rate.  pitch: +1 look up at full rate.  fast: the speed modifier.
    """

    forward: float = 0.0
    right: float = 0.0
    up: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    fast: bool = False


def _clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def _stick(v: Iterable[float]) -> tuple[float, float]:
    x, y = (float(c) for c in v)
    return _clamp(x, -1.0, 1.0), _clamp(y, -1.0, 1.0)


