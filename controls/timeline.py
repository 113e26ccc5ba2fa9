"""``InputTimeline``: what the player did between two readings of the ``InputBox``, with times.

A timeline covers the interval ``(start, end]`` of the box's clock (``time.monotonic()`` unless
the box was given another). It holds:

- ``held``: the held input (keys, sticks, triggers; an ``InputState`` with no mouse) as a step
  function: ``held[j] = (t_j, state_j)`` means ``state_j`` is held from ``t_j`` until the next
  change. ``held[0]`` starts at ``start`` and is what was held when the timeline began.
- ``mouse``: mouse motions as impulses ``(t, dx, dy)`` in pixels (+dx right, +dy down).

Past ``end`` the last held state is taken to go on (the extrapolation a plan makes for frames
the player has not reached yet); no mouse motion is assumed there.

The same value serves both kinds of worlds: pose worlds integrate a camera path from it
(``PoseIntegrator.follow``), action worlds ask what was held during each frame
(``frame_inputs``): which keys were down at any moment of the frame and for how long, the mouse
motion in it and the mean stick deflection.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .input_state import InputState, key_name


@dataclass(frozen=True)
class FrameInput:
    """The input during one frame's interval ``(t0, t1]`` (an action world's per-frame action).

    keys: names of the keys down at any moment of the interval (a tap shorter than a frame counts).
    held_s: seconds each of those keys was down within the interval.
    mouse_dx, mouse_dy: pixels moved within the interval.
    left_stick, right_stick, left_trigger, right_trigger: time-averaged over the interval.
    """

    t0: float
    t1: float
    keys: frozenset[str] = frozenset()
    held_s: dict[str, float] = field(default_factory=dict)
    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    left_stick: tuple[float, float] = (0.0, 0.0)
    right_stick: tuple[float, float] = (0.0, 0.0)
    left_trigger: float = 0.0
    right_trigger: float = 0.0


def held_part(state: InputState) -> InputState:
    """``state`` without its mouse totals and time stamp: what a player holds."""
    return InputState(keys=state.keys, left_stick=state.left_stick, right_stick=state.right_stick,
                      left_trigger=state.left_trigger, right_trigger=state.right_trigger)


@dataclass(frozen=True)
class InputTimeline:
    """See the module docstring. ``state`` is the snapshot ``InputBox.take()`` returns: the held
    input at ``end`` with the mouse totals of the whole timeline."""

    start: float
    end: float
    held: tuple[tuple[float, InputState], ...]
    mouse: tuple[tuple[float, float, float], ...] = ()
    state: InputState = InputState()

    def __post_init__(self) -> None:
        if not self.held:
            raise ValueError("an InputTimeline needs the state held at its start")
        if self.end < self.start:
            raise ValueError(f"timeline ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def still(cls, start: float, end: float, state: InputState | None = None) -> InputTimeline:
        """``state`` held from ``start`` to ``end`` with nothing else happening."""
        s = held_part(state or InputState())
        return cls(start, end, ((start, s),), (), replace(s, timestamp=0.0))

    @classmethod
    def from_events(
        cls,
        start: float,
        end: float,
        events: Sequence[tuple[float, str, object]],
        initial: InputState | None = None,
    ) -> InputTimeline:
        """Build a timeline from a script: ``(t, "press" | "release", key)``, ``(t, "mouse", (dx,
        dy))`` and ``(t, "pad", (left_stick, right_stick, lt, rt))`` in time order (for tests and
        replays; the box builds its own). Times before ``start`` count at ``start``."""
        now = held_part(initial or InputState())
        held: list[tuple[float, InputState]] = [(start, now)]
        mouse: list[tuple[float, float, float]] = []
        dx = dy = 0.0
        for t, kind, arg in events:
            t = max(float(t), start)
            if kind in ("press", "release"):
                keys = set(now.keys)
                (keys.add if kind == "press" else keys.discard)(key_name(str(arg)))
                now = replace(now, keys=frozenset(keys))
            elif kind == "mouse":
                mx, my = arg  # type: ignore[misc]
                mouse.append((t, float(mx), float(my)))
                dx, dy = dx + float(mx), dy + float(my)
                continue
            elif kind == "pad":
                ls, rs, lt, rt = arg  # type: ignore[misc]
                now = replace(now, left_stick=tuple(ls), right_stick=tuple(rs),
                              left_trigger=float(lt), right_trigger=float(rt))
            else:
                raise ValueError(f"unknown timeline event kind {kind!r}")
            if now == held[-1][1]:
                continue
            if t <= held[-1][0] and len(held) > 1:
                held[-1] = (held[-1][0], now)
            else:
                held.append((t, now))
        state = replace(now, mouse_dx=dx, mouse_dy=dy)
        return cls(start, end, tuple(held), tuple(mouse), state)

    # ---- reading it ---------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def final(self) -> InputState:
        """The input held at ``end`` (and, by extrapolation, after it)."""
        return self.held[-1][1]

    def state_at(self, t: float) -> InputState:
        """The held input just after time ``t`` (a change at exactly ``t`` is in effect)."""
        times = [h[0] for h in self.held]
        j = max(0, bisect.bisect_right(times, t) - 1)
        return self.held[j][1]

    def segments(self, t0: float, t1: float) -> Iterator[tuple[float, float, InputState]]:
        """``(a, b, state)`` pieces covering ``[t0, t1]`` in order, each with one held state."""
        times = [h[0] for h in self.held]
        j = max(0, bisect.bisect_right(times, t0) - 1)
        a = t0
        while a < t1:
            b = t1 if j + 1 >= len(self.held) else min(t1, max(a, self.held[j + 1][0]))
            if b > a:
                yield a, b, self.held[j][1]
            a = b
            j += 1
            if j >= len(self.held):
                if a < t1:
                    yield a, t1, self.held[-1][1]
                return

    def mouse_between(self, t0: float, t1: float) -> tuple[float, float]:
        """Pixels moved within ``(t0, t1]`` (an impulse at ``start`` counts from ``start`` on)."""
        lo = min(t0, self.start - 1.0) if t0 <= self.start else t0
        dx = sum(m[1] for m in self.mouse if lo < m[0] <= t1)
        dy = sum(m[2] for m in self.mouse if lo < m[0] <= t1)
        return dx, dy

    def key_events(self) -> list[tuple[float, str, bool]]:
        """``(t, key, down)`` for every press and release within the timeline, in order."""
        out: list[tuple[float, str, bool]] = []
        for (_, a), (t, b) in zip(self.held, self.held[1:], strict=False):
            out += [(t, k, True) for k in sorted(b.keys - a.keys)]
            out += [(t, k, False) for k in sorted(a.keys - b.keys)]
        return out

    def frame_inputs(self, edges: Sequence[float] | np.ndarray) -> list[FrameInput]:
        """Per frame ``i``, the input during ``(edges[i], edges[i + 1]]``: what an action world
        conditions frame ``i`` on. Edges past ``end`` extrapolate the held input."""
        out = []
        for t0, t1 in zip(edges[:-1], edges[1:], strict=True):
            t0, t1 = float(t0), float(t1)
            held: dict[str, float] = {}
            ls = np.zeros(2)
            rs = np.zeros(2)
            lt = rt = 0.0
            span = max(t1 - t0, 1e-12)
            pieces = list(self.segments(t0, t1)) or [(t0, t1, self.state_at(t0))]
            for a, b, s in pieces:
                w = (b - a) / span
                for k in s.keys:
                    held[k] = held.get(k, 0.0) + (b - a)
                ls += w * np.asarray(s.left_stick)
                rs += w * np.asarray(s.right_stick)
                lt += w * s.left_trigger
                rt += w * s.right_trigger
            keys = set(held) | set(self.state_at(t0).keys)
            # a press and release both inside the interval leave no piece of their own: count them
            for t, k, down in self.key_events():
                if t0 < t <= t1 and down:
                    keys.add(k)
                    held.setdefault(k, 0.0)
            dx, dy = self.mouse_between(t0, t1)
            out.append(FrameInput(t0, t1, frozenset(keys), held, dx, dy,
                                  (float(ls[0]), float(ls[1])), (float(rs[0]), float(rs[1])), lt, rt))
        return out

    def until(self, t: float) -> InputTimeline:
        """This timeline up to ``t`` (clipped to it): what ``since(t)`` leaves out."""
        t = min(max(t, self.start), self.end)
        held = tuple(h for h in self.held if h[0] <= t) or self.held[:1]
        mouse = tuple(m for m in self.mouse if m[0] <= t)
        return InputTimeline(self.start, t, held, mouse, self.state)

    def since(self, t: float, fold_mouse: bool = True) -> InputTimeline:
        """This timeline from ``t`` on (``t`` clipped to it): what came before is folded into the
        held state at ``t`` and (``fold_mouse``) one mouse impulse at ``t``, so no mouse motion is
        lost; without it, the mouse motion before ``t`` is left out (``until(t)`` has it)."""
        if t <= self.start:
            return self
        t = min(t, self.end)
        held = [(t, self.state_at(t))] + [h for h in self.held if h[0] > t]
        dx = sum(m[1] for m in self.mouse if m[0] <= t)
        dy = sum(m[2] for m in self.mouse if m[0] <= t)
        mouse = [m for m in self.mouse if m[0] > t]
        if fold_mouse and (dx or dy):
            mouse.insert(0, (t, dx, dy))
        return InputTimeline(t, self.end, tuple(held), tuple(mouse), self.state)
