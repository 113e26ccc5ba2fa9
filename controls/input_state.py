"""What the player is doing right now: ``InputState``, the thread-safe ``InputBox`` that device
handlers write into, and ``Intent``, the device-free motion request the integrator consumes.

Device handlers (pyglet, a browser data channel, a gamepad poller) only record intent here; the
model thread reads the newest state. The newest state wins; nothing is queued.

Mouse deltas are accumulated pixels since the last ``InputBox.take()``. Every accumulation has an
id, ``mouse_epoch``: ``take()`` and ``clear()`` start a new one. Two states with the same epoch
carry running totals of the same accumulation, so a consumer can apply only what is new (see
``PoseIntegrator``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

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

# Epochs are unique across all boxes of the process; hand-made states use epoch 0.
_EPOCHS = itertools.count(1)
_EPOCH_LOCK = threading.Lock()


def _next_epoch() -> int:
    with _EPOCH_LOCK:
        return next(_EPOCHS)


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


@dataclass
class _Mutable:
    keys: set[str] = field(default_factory=set)
    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    left_stick: tuple[float, float] = (0.0, 0.0)
    right_stick: tuple[float, float] = (0.0, 0.0)
    left_trigger: float = 0.0
    right_trigger: float = 0.0
    timestamp: float = 0.0
    mouse_epoch: int = 0


class InputBox:
    """Thread-safe holder of the latest input. Writers: device handlers. Readers: the model thread
    (``take``) and the window (``peek``, for the pose the player holds right now).

    ``now`` arguments default to ``time.monotonic()``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s = _Mutable(mouse_epoch=_next_epoch())

    def _stamp(self, now: float | None) -> None:
        self._s.timestamp = time.monotonic() if now is None else float(now)

    def press(self, key: str, now: float | None = None) -> None:
        with self._lock:
            self._s.keys.add(key_name(key))
            self._stamp(now)

    def release(self, key: str, now: float | None = None) -> None:
        with self._lock:
            self._s.keys.discard(key_name(key))
            self._stamp(now)

    def set_keys(self, keys: Iterable[str], now: float | None = None) -> None:
        """Replace the held keys at once (for clients that send their whole key set)."""
        names = {key_name(k) for k in keys}
        with self._lock:
            self._s.keys = names
            self._stamp(now)

    def add_mouse(self, dx: float, dy: float, now: float | None = None) -> None:
        """Accumulate a mouse motion in pixels (+dx right, +dy down)."""
        with self._lock:
            self._s.mouse_dx += float(dx)
            self._s.mouse_dy += float(dy)
            self._stamp(now)

    def set_gamepad(
        self,
        left_stick: tuple[float, float],
        right_stick: tuple[float, float],
        lt: float,
        rt: float,
        now: float | None = None,
    ) -> None:
        """Set the raw stick vectors (x right, y down, clamped to [-1, 1]) and triggers ([0, 1])."""
        ls, rs = _stick(left_stick), _stick(right_stick)
        lt, rt = _clamp(float(lt), 0.0, 1.0), _clamp(float(rt), 0.0, 1.0)
        with self._lock:
            self._s.left_stick, self._s.right_stick = ls, rs
            self._s.left_trigger, self._s.right_trigger = lt, rt
            self._stamp(now)

    def clear(self, now: float | None = None) -> None:
        """Forget everything held (focus loss): keys, sticks, triggers and the pending mouse delta."""
        with self._lock:
            self._s = _Mutable(mouse_epoch=_next_epoch())
            self._stamp(now)

    def _snapshot(self) -> InputState:
        s = self._s
        return InputState(
            keys=frozenset(s.keys),
            mouse_dx=s.mouse_dx,
            mouse_dy=s.mouse_dy,
            left_stick=s.left_stick,
            right_stick=s.right_stick,
            left_trigger=s.left_trigger,
            right_trigger=s.right_trigger,
            timestamp=s.timestamp,
            mouse_epoch=s.mouse_epoch,
        )

    def peek(self) -> InputState:
        """The current state; the mouse delta keeps accumulating."""
        with self._lock:
            return self._snapshot()

    def take(self) -> InputState:
        """The current state; then the mouse delta restarts from zero in a new epoch."""
        with self._lock:
            state = self._snapshot()
            self._s.mouse_dx = self._s.mouse_dy = 0.0
            self._s.mouse_epoch = _next_epoch()
            return state


