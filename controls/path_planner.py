"""``PathPlanner``: a chunk's camera path, integrated from the input timelines the player made.

Two clocks meet here. The player's input happens in real time (the ``InputBox`` clock); a chunk's
frames depict ``content`` time, ``1 / fps`` apart. The planner keeps:

- ``exact``: the integrator at ``committed``, the end of the last timeline read: every input
  the player made, integrated exactly (taps, releases, stick sweeps, mouse motions at their times).
- ``cursor``: the timeline time the last planned frame depicts, and ``path``: the integrator
  state at that frame (what the frames showed, forecasts included).

Planning a chunk of ``m`` frames with a new timeline ``(committed, now]``:

1. The chunk depicts ``(c, c + span]`` with ``c = max(cursor, committed)``: it starts where
   the last frame left off, or at the timeline's start if the frames fell behind it (their
   forecast could not show what happened meanwhile; the correction below does).
   ``span = max(now - c, min_span * m / fps)``: the chunk ends at ``now`` when it can, so
   every frame is integrated from input that really happened; a chunk planned sooner than its
   length after the last one stretches over at least ``min_span`` of its length and extrapolates
   the held input past ``now`` (a forecast); one planned late covers all the time since (faster
   motion, nothing dropped).
2. The exact integrator runs through the timeline and on (extrapolated) past ``now``; the frames
   sample it at ``c + span (i + 1) / m``.
3. Where an earlier forecast differs from what then happened (a key let go during a frame that
   showed it held), the frames start from where the last frame was and the difference fades out
   over ``catch_up`` seconds of content: no jump, and the walk ends where the input put it.

When nothing changed since the last plan (the same keys held, no mouse), the path simply goes on
at content rate, exactly as holding that input for ``m`` frames (``PoseIntegrator.plan``), and a
correction still fading goes on fading: a steady walk is the same however the chunks were timed.

The rotation the player holds right now, for timewarp (``held_rotation``): the exact
integrator plus the not-yet-read input integrated to now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .camera import pose_matrix, rotation, yaw_pitch_roll
from .input_state import InputState
from .pose_integrator import IntegratorState, PoseIntegrator
from .timeline import InputTimeline, held_part


@dataclass(frozen=True)
class PlannerState:
    """Everything the planner carries from one chunk to the next, clock-free (times relative to
    ``committed``), so a walk can resume in another process with another clock."""

    exact: IntegratorState
    path: IntegratorState  # the target path at the cursor, without the correction
    ahead: float = 0.0  # cursor - committed, seconds
    held: InputState = InputState()  # the input held at ``committed`` (the forecast's assumption)
    correction: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)  # x, y, z, yaw, pitch
    fade: tuple[float, float] = (1.0, 1.0)  # (seconds of content the correction fades over, done)


@dataclass(frozen=True)
class PlannedPath:
    """A planned chunk: poses (m, 4, 4) at content times ``times`` (m,), frame intervals
    ``edges`` (m + 1,) on the timeline's clock (what an action world reads per frame with
    ``timeline.frame_inputs(edges)``), and the timeline they were planned from."""

    poses: np.ndarray
    times: np.ndarray
    edges: np.ndarray
    timeline: InputTimeline
    forecast_s: float  # seconds of the chunk past the newest input (extrapolated)


@dataclass
class PlannerConfig:
    min_span: float = 0.75  # a chunk depicts at least this share of its length in content time
    catch_up: float = 0.25  # s of content over which a correction fades (at least one chunk)


def _wrap(a: float) -> float:
    return math.remainder(a, math.tau)


class PathPlanner:
    """See the module docstring. Not thread-safe: the session calls it under its lock."""

    def __init__(self, integrator: PoseIntegrator, cfg: PlannerConfig | None = None) -> None:
        self.cfg = cfg or PlannerConfig()
        self.exact = integrator  # the session's integrator: its pose is the exact one
        self.path = integrator.clone()
        self.committed = 0.0
        self.cursor = 0.0
        self._held = InputState()
        self._correction = np.zeros(5)
        self._fade = (1.0, 1.0)

    # ---- state --------------------------------------------------------------------------------

    def restart(self, now: float, held: InputState | None = None) -> None:
        """Begin at the exact integrator's pose at time ``now`` with ``held`` held."""
        self.path.set_state(self.exact.get_state())
        self.committed = self.cursor = float(now)
        self._held = held_part(held or InputState())
        self._correction = np.zeros(5)  # x, y, z, yaw, pitch: shown minus target, when the fade began
        self._fade = (1.0, 1.0)  # (length, done) in seconds of content

    def get_state(self) -> PlannerState:
        c = tuple(float(v) for v in self._correction)
        return PlannerState(self.exact.get_state(), self.path.get_state(), self.cursor - self.committed,
                            self._held, c, self._fade)  # type: ignore[arg-type]

    def set_state(self, state: PlannerState, now: float) -> None:
        self.exact.set_state(state.exact)
        self.path.set_state(state.path)
        self.committed = float(now)
        self.cursor = self.committed + state.ahead
        self._held = state.held
        self._correction = np.array(state.correction, dtype=np.float64)
        self._fade = state.fade

    def _weight(self, done: float) -> float:
        """The share of the correction still shown after ``done`` seconds of its fade."""
        length = self._fade[0]
        return max(0.0, 1.0 - done / length) if length > 0 else 0.0

    def _corrected(self, pose: np.ndarray, w: float) -> np.ndarray:
        """``pose`` with ``w`` of the correction added."""
        if w == 0.0 or not self._correction.any():
            return pose
        d = w * self._correction
        yaw, pitch, roll = yaw_pitch_roll(pose[:3, :3])
        limit = math.radians(self.exact.cfg.pitch_limit)
        pitch = min(max(pitch + d[4], -limit), limit)
        return pose_matrix(rotation(yaw + d[3], pitch, roll), pose[:3, 3] + d[:3])

    @property
    def shown_pose(self) -> np.ndarray:
        """The pose of the last frame planned (the target with what is left of the correction)."""
        return self._corrected(self.path.pose, self._weight(self._fade[1]))

    # ---- planning -----------------------------------------------------------------------------

    def plan(self, timeline: InputTimeline, m: int, dt: float) -> PlannedPath:
        """The next ``m`` frames, ``dt`` apart in content time, from ``timeline`` (which must
        start at ``committed``, as the box's takes do)."""
        if m < 0:
            raise ValueError(f"plan needs m >= 0 frames, got {m}")
        timeline = self._from_committed(self.exact, timeline, eps=1e-9)
        now = timeline.end
        unchanged = len(timeline.held) == 1 and not timeline.mouse and timeline.held[0][1] == self._held

        if unchanged:
            # The forecast came true: the target goes on at content rate (and a correction still
            # fading goes on fading), the same however the chunks were timed.
            c = self.cursor
            state = timeline.final
            target = self.path.plan(state, m, dt)
            times = c + dt * np.arange(1, m + 1)
            edges = c + dt * np.arange(m + 1)
            self.exact.follow(timeline, [])
        else:
            # 1. The chunk's span of timeline time.
            c = max(self.cursor, timeline.start)
            span = max(now - c, self.cfg.min_span * m * dt) if m else 0.0
            times = c + span * np.arange(1, m + 1) / max(m, 1)
            edges = c + span * np.arange(m + 1) / max(m, 1)

            # 2. The exact path through the timeline, extrapolated past its end.
            probe = self.exact.clone()
            sampled = probe.follow(timeline, np.concatenate([[c], times]))
            self.exact.follow(timeline, [])

            # 3. The correction: where the last frame was, against where the input put it then.
            shown, ref = self.shown_pose, sampled[0]
            y0, p0, _ = yaw_pitch_roll(shown[:3, :3])
            y1, p1, _ = yaw_pitch_roll(ref[:3, :3])
            self._correction = np.array([*(shown[:3, 3] - ref[:3, 3]), _wrap(y0 - y1), p0 - p1])
            self._fade = (max(self.cfg.catch_up, m * dt), 0.0)
            target = sampled[1:]
            if m:
                self.path.set_state(probe.get_state())
                self.path._mark_mouse_applied(timeline.state)

        length, done = self._fade
        poses = np.stack([self._corrected(target[i], self._weight(done + (i + 1) * dt)) for i in range(m)]) \
            if m else np.empty((0, 4, 4))
        self._fade = (length, done + m * dt)
        self._advance_committed(now, float(times[-1]) if m else c, timeline.final)
        return PlannedPath(poses, times, edges, timeline, max(0.0, float(edges[-1]) - now))

    def skip(self, timeline: InputTimeline) -> None:
        """Let ``timeline`` pass without walking (a pause): the turns in it still count, as the
        view showed them, but the walk stays where the last frame was, at rest."""
        probe = self.exact.clone()
        timeline = self._from_committed(probe, timeline)
        probe.follow(timeline, [])
        turned = probe.get_state()
        shown = self.shown_pose
        yaw, pitch, roll = yaw_pitch_roll(shown[:3, :3])
        p = shown[:3, 3]
        state = replace(self.path.get_state(), position=(float(p[0]), float(p[1]), float(p[2])),
                        yaw=turned.yaw, pitch=turned.pitch, roll=roll, velocity=(0.0, 0.0, 0.0))
        self.exact.set_state(state)
        self.exact._mark_mouse_applied(timeline.state)
        self.path.set_state(state)
        self.path._mark_mouse_applied(timeline.state)
        self._correction = np.zeros(5)
        self._advance_committed(timeline.end, timeline.end, timeline.final)

    def _from_committed(self, integrator: PoseIntegrator, timeline: InputTimeline,
                        eps: float = 0.0) -> InputTimeline:
        """`timeline` from `committed` on: what came before it cut off, and a gap before its start
        (input skipped, discarded) followed by `integrator` holding what was held."""
        if timeline.start < self.committed - eps:
            timeline = timeline.since(self.committed)
        if timeline.start > self.committed:
            integrator.follow(InputTimeline.still(self.committed, timeline.start, self._held), [])
        return timeline

    def _advance_committed(self, now: float, cursor: float, held: InputState) -> None:
        self.committed = now
        self.cursor = cursor
        self._held = held_part(held)

    # ---- what the player holds right now ----------------------------------------------------------

    def held_rotation(self, pending: InputTimeline) -> tuple[float, float, float]:
        """(yaw, pitch, roll) radians the player holds at ``pending.end``: every input read so far
        and ``pending`` (the box's not-yet-read timeline, which starts at ``committed``)."""
        probe = self.exact.clone()
        probe.follow(self._from_committed(probe, pending), [])
        s = probe.get_state()
        return s.yaw, s.pitch, s.roll
