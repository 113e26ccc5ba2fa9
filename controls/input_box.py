"""``InputBox``: the thread-safe place device handlers write the player's input into.

Device handlers (pyglet, a browser data channel, a gamepad poller) only record intent here. The
box keeps the newest state (``peek``) and, for the model thread, the timeline of every change
since it last read (``take_timeline``): a tap between two plannings is not lost.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .input_state import InputState, _clamp, _stick, key_name
from .timeline import InputTimeline

# Epochs are unique across all boxes of the process; hand-made states use epoch 0.
_EPOCHS = itertools.count(1)
_EPOCH_LOCK = threading.Lock()


def _next_epoch() -> int:
    with _EPOCH_LOCK:
        return next(_EPOCHS)


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
    """Thread-safe holder of the player's input. Writers: device handlers. Readers: the model
    thread (``take_timeline`` / ``take``) and the window (``peek``, ``peek_timeline``, for the pose
    the player holds right now).

    Besides the current state, the box records every change since the last take as an
    ``InputTimeline`` (timeline.py): presses and releases, stick values and mouse motions, each
    with its time. ``now`` arguments default to ``clock()`` (``time.monotonic`` unless given);
    a time earlier than the last take counts as the take's time.
    """

    # A recording longer than this (minutes of gamepad motion with nothing planning) keeps only
    # its newest changes; the older ones are folded into the state held before them.
    MAX_EVENTS = 65536

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._s = _Mutable(mouse_epoch=_next_epoch())
        self._t0 = float(clock())  # start of the recording
        self._held: list[tuple[float, InputState]] = [(self._t0, InputState())]
        self._mouse: list[tuple[float, float, float]] = []

    def _time(self, now: float | None) -> float:
        t = float(self.clock()) if now is None else float(now)
        return max(t, self._t0)

    def _stamp(self, now: float | None) -> float:
        """Stamp the state with the event's time; returns the time the recording files it under."""
        t = float(self.clock()) if now is None else float(now)
        self._s.timestamp = t
        return max(t, self._t0)

    def _held_now(self) -> InputState:
        s = self._s
        return InputState(keys=frozenset(s.keys), left_stick=s.left_stick, right_stick=s.right_stick,
                          left_trigger=s.left_trigger, right_trigger=s.right_trigger)

    def _record_held(self, t: float) -> None:
        state = self._held_now()
        last_t, last = self._held[-1]
        if state == last:
            return
        if t <= last_t and len(self._held) > 1:  # several changes at one time: the last one stands
            self._held[-1] = (last_t, state)
            if len(self._held) > 1 and self._held[-2][1] == state:
                self._held.pop()
        else:
            self._held.append((t, state))
        if len(self._held) > self.MAX_EVENTS:
            del self._held[: len(self._held) // 2]

    def press(self, key: str, now: float | None = None) -> None:
        with self._lock:
            self._s.keys.add(key_name(key))
            self._record_held(self._stamp(now))

    def release(self, key: str, now: float | None = None) -> None:
        with self._lock:
            self._s.keys.discard(key_name(key))
            self._record_held(self._stamp(now))

    def set_keys(self, keys: Iterable[str], now: float | None = None) -> None:
        """Replace the held keys at once (for clients that send their whole key set)."""
        names = {key_name(k) for k in keys}
        with self._lock:
            self._s.keys = names
            self._record_held(self._stamp(now))

    def add_mouse(self, dx: float, dy: float, now: float | None = None) -> None:
        """Accumulate a mouse motion in pixels (+dx right, +dy down)."""
        with self._lock:
            self._s.mouse_dx += float(dx)
            self._s.mouse_dy += float(dy)
            t = self._stamp(now)
            self._mouse.append((t, float(dx), float(dy)))
            if len(self._mouse) > self.MAX_EVENTS:  # fold the older half into one motion
                half = len(self._mouse) // 2
                old = self._mouse[:half]
                self._mouse[:half] = [(old[-1][0], sum(m[1] for m in old), sum(m[2] for m in old))]

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
            self._record_held(self._stamp(now))

    def clear(self, now: float | None = None) -> None:
        """Forget everything held (focus loss): keys, sticks, triggers and the pending mouse delta.
        The recording keeps what happened before, and the release of everything at ``now``."""
        with self._lock:
            self._s = _Mutable(mouse_epoch=_next_epoch())
            t = self._stamp(now)
            self._record_held(t)

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

    def _timeline(self, end: float) -> InputTimeline:
        return InputTimeline(self._t0, end, tuple(self._held), tuple(self._mouse), self._snapshot())

    def peek_timeline(self, now: float | None = None) -> InputTimeline:
        """What happened since the last take, up to ``now``; nothing is consumed."""
        with self._lock:
            return self._timeline(self._time(now))

    def take_timeline(self, now: float | None = None) -> InputTimeline:
        """What happened since the last take, up to ``now``; the next recording starts at ``now``
        with the input held then, and the mouse delta restarts from zero in a new epoch."""
        with self._lock:
            end = self._time(now)
            timeline = self._timeline(end)
            self._t0 = end
            self._held = [(end, self._held_now())]
            self._mouse = []
            self._s.mouse_dx = self._s.mouse_dy = 0.0
            self._s.mouse_epoch = _next_epoch()
            return timeline

    def take(self) -> InputState:
        """The current state; then the mouse delta restarts from zero in a new epoch (and the
        recording restarts, as with ``take_timeline``)."""
        return self.take_timeline().state
