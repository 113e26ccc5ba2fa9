"""Every input counts: input timelines through the InputBox, the PathPlanner and the session.

The session runs on a world that waits for the test between chunks, and the input box reads an
injected clock, so each chunk is planned at a time the test chooses; no sleeps. With an instant
velocity (accel_time 0) the expected path is written straight from the timeline: walking at
1 unit/s, z(t) is the number of seconds "w" was held up to t.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.controls import (
    InputBox,
    InputState,
    InputTimeline,
    IntegratorConfig,
    PathPlanner,
    PoseIntegrator,
    gamepad_to_intent,
    yaw_pitch_roll,
)
from worldwalk.runtime.session import Session, SessionConfig

from .builders import ManualClock, poll_until
from .timed_world import GatedWorld

FPS = 16.0
DT = 1 / FPS
N = 4  # frames a chunk: 0.25 s


class Walk:
    """A session whose chunks are planned when the test says, at the clock time it sets."""

    def __init__(self, accel_time: float = 0.0, **cfg) -> None:
        self.clock = ManualClock()
        self.box = InputBox(clock=self.clock)
        self.world = GatedWorld(frames_per_chunk=N, first_chunk_frames=N, fps=FPS)
        integrator = PoseIntegrator(IntegratorConfig(accel_time=accel_time))
        self.session = Session(self.world, SessionConfig(just_in_time=False, queue_capacity=4096, **cfg),
                               integrator=integrator, inputs=self.box).start()
        assert self.world.asked.acquire(timeout=10)  # chunk 0 planned at t = 0

    def close(self) -> None:
        self.world.gate.release(100)
        self.session.close()


@pytest.fixture
def walk():
    w = Walk()
    planned: list[np.ndarray] = []
    original = w.session.planner.plan

    def spy(timeline, m, dt):
        path = original(timeline, m, dt)
        planned.append(path)
        return path

    w.session.planner.plan = spy  # type: ignore[method-assign]
    w.planned = planned  # type: ignore[attr-defined]
    yield w
    w.close()


def chunk_after(w: Walk, t: float):
    """Plan the next chunk at clock time t; its PlannedPath."""
    count = len(w.planned)  # type: ignore[attr-defined]
    w.clock.t = t
    w.world.gate.release()
    assert w.world.asked.acquire(timeout=10), w.session.error
    assert len(w.planned) == count + 1  # type: ignore[attr-defined]
    return w.planned[-1]  # type: ignore[attr-defined]


def play(w: Walk, events: list[tuple[float, str, object]], plan_times: list[float]) -> list:
    """Feed `events` to the box as they happen, planning a chunk at each of `plan_times`; the
    PlannedPaths."""
    out, pending = [], sorted(events, key=lambda e: e[0])
    for t_plan in plan_times:
        while pending and pending[0][0] <= t_plan:
            t, kind, arg = pending.pop(0)
            if kind == "press":
                w.box.press(str(arg), now=t)
            elif kind == "release":
                w.box.release(str(arg), now=t)
            else:  # pad: the left stick's y
                w.box.set_gamepad((0.0, float(arg)), (0.0, 0.0), 0.0, 0.0, now=t)  # type: ignore[arg-type]
        out.append(chunk_after(w, t_plan))
    return out


def held_seconds(events: list[tuple[float, bool]], t: float) -> float:
    """Seconds a key was held up to t, from (time, down) pairs."""
    total, since = 0.0, None
    for when, down in events:
        if when > t:
            break
        if down and since is None:
            since = when
        elif not down and since is not None:
            total, since = total + when - since, None
    return total + (t - since if since is not None else 0.0)


# The first chunk (planned at 0) depicts 0 .. 3/16 s; from then on, chunks planned every 0.25 s
# depict exactly the 0.25 s before their planning.
T1 = 3 * DT + 0.25


def test_a_tap_shorter_than_a_chunk_walks_exactly_its_length(walk):
    walk.box.press("w", now=T1 - 0.2)
    walk.box.release("w", now=T1 - 0.1)  # a 0.1 s tap inside one chunk
    path = chunk_after(walk, T1)
    np.testing.assert_allclose(path.times, T1 - 0.25 + DT * np.arange(1, N + 1))
    events = [(T1 - 0.2, True), (T1 - 0.1, False)]
    expected = [held_seconds(events, t) for t in path.times]
    np.testing.assert_allclose(path.poses[:, 2, 3], expected, atol=1e-12)
    assert path.poses[-1, 2, 3] == pytest.approx(0.1, abs=1e-12)
    assert path.forecast_s == pytest.approx(0.0, abs=1e-12)
    # nothing held at the end: the next chunk stays where the tap left off
    nxt = chunk_after(walk, T1 + 0.25)
    np.testing.assert_allclose(nxt.poses[:, 2, 3], 0.1, atol=1e-12)


def test_two_taps_walk_twice_as_far_and_taps_across_chunks_add_up(walk):
    events = [(T1 - 0.22, True), (T1 - 0.17, False), (T1 - 0.12, True), (T1 - 0.07, False),
              (T1 - 0.02, True), (T1 + 0.03, False)]  # the last tap is held across a planning
    p1, p2 = play(walk, [(t, "press" if down else "release", "w") for t, down in events], [T1, T1 + 0.25])
    for p in (p1, p2):
        np.testing.assert_allclose(p.poses[:, 2, 3], [held_seconds(events, t) for t in p.times], atol=1e-12)
    assert p1.poses[-1, 2, 3] == pytest.approx(0.12, abs=1e-12)
    assert p2.poses[-1, 2, 3] == pytest.approx(0.15, abs=1e-12)


def test_a_press_released_mid_chunk_stops_where_it_was_released(walk):
    walk.box.press("w", now=T1 - 0.1)
    p1 = chunk_after(walk, T1)  # still held: walks to the planning time, no further
    assert p1.poses[-1, 2, 3] == pytest.approx(0.1, abs=1e-12)
    walk.box.release("w", now=T1 + 0.1)
    p2 = chunk_after(walk, T1 + 0.25)
    events = [(T1 - 0.1, True), (T1 + 0.1, False)]
    np.testing.assert_allclose(p2.poses[:, 2, 3], [held_seconds(events, t) for t in p2.times], atol=1e-12)
    assert p2.poses[-1, 2, 3] == pytest.approx(0.2, abs=1e-12)
    np.testing.assert_allclose(chunk_after(walk, T1 + 0.5).poses[:, 2, 3], 0.2, atol=1e-12)


def test_alternating_keys_trace_the_timeline(walk):
    # w, d, s, a for 0.06 s each, back to back, across two chunks
    keys = ["w", "d", "s", "a", "w", "d"]
    t0 = T1 - 0.2
    events = [(t0 + 0.06 * i + 0.06 * up, "release" if up else "press", k)
              for i, k in enumerate(keys) for up in (0, 1)]
    paths = play(walk, events, [T1, T1 + 0.25])

    def expected(t: float) -> tuple[float, float]:
        x = z = 0.0
        for i, k in enumerate(keys):
            held = min(max(t - (t0 + 0.06 * i), 0.0), 0.06)
            dx, dz = {"w": (0, 1), "s": (0, -1), "d": (1, 0), "a": (-1, 0)}[k]
            x, z = x + dx * held, z + dz * held
        return x, z

    for p in paths:
        got = p.poses[:, [0, 2], 3]
        np.testing.assert_allclose(got, [expected(t) for t in p.times], atol=1e-12)
    np.testing.assert_allclose(paths[-1].poses[-1, [0, 2], 3], (0.06, 0.06), atol=1e-12)


def test_a_stick_sweep_is_integrated_sample_by_sample(walk):
    # the left stick pushed from rest to full forward over 0.3 s, read at 60 Hz, then let go
    samples = [(T1 - 0.24 + i / 60, -min(1.0, i / 18)) for i in range(19)]
    ends = samples[1:] + [(T1 + 0.1, 0.0)]
    events = [(t, "pad", y) for t, y in samples] + [(T1 + 0.1, "pad", 0.0)]
    paths = play(walk, events, [T1, T1 + 0.25])

    def expected(t: float) -> float:
        z = 0.0
        for (a, y), (b, _) in zip(samples + [(T1 + 0.1, 0.0)], ends + [(math.inf, 0.0)], strict=True):
            forward = gamepad_to_intent((0.0, y), (0.0, 0.0)).forward
            z += forward * max(0.0, min(b, t) - a)
        return z

    for p in paths:
        np.testing.assert_allclose(p.poses[:, 2, 3], [expected(t) for t in p.times], atol=1e-12)


def test_a_half_second_turn_ends_45_degrees_on_screen_and_in_the_frames(walk):
    walk.box.press("e", now=T1 - 0.2)
    # while the key is held, the view (held_pose) turns with the clock, ahead of the frames
    walk.clock.t = T1 - 0.1
    held = walk.session.held_pose()
    assert math.degrees(yaw_pitch_roll(held[:3, :3])[0]) == pytest.approx(9.0, abs=1e-9)
    chunk_after(walk, T1)
    p2 = chunk_after(walk, T1 + 0.25)
    walk.box.release("e", now=T1 + 0.3)
    walk.clock.t = T1 + 0.4
    assert math.degrees(yaw_pitch_roll(walk.session.held_pose()[:3, :3])[0]) == pytest.approx(45.0, abs=1e-9)
    p3 = chunk_after(walk, T1 + 0.5)
    yaws = [math.degrees(yaw_pitch_roll(p[:3, :3])[0]) for p in np.concatenate([p2.poses, p3.poses])]
    assert yaws[-1] == pytest.approx(45.0, abs=1e-9)
    assert max(yaws) <= 45.0 + 1e-9  # never beyond


def test_a_forecast_that_did_not_come_true_is_corrected_without_a_jump(walk):
    walk.box.press("w", now=T1 - 0.25)
    chunk_after(walk, T1)
    # planned early (0.05 s after the last): the chunk extrapolates the held key past now
    ahead = chunk_after(walk, T1 + 0.05)
    assert ahead.forecast_s == pytest.approx(0.25 - 0.05)  # a steady walk goes on at content rate
    walk.box.release("w", now=T1 + 0.07)  # ... but it was let go soon after
    fix = chunk_after(walk, T1 + 0.3)
    exact = 0.25 + 0.07  # seconds held
    z_prev, z = ahead.poses[-1, 2, 3], fix.poses[:, 2, 3]
    overshoot = z_prev - exact
    assert overshoot == pytest.approx(0.25 - 0.07)
    # it comes back over the next chunk (catch_up 0.25 s), in equal steps, not a jump
    np.testing.assert_allclose(np.diff(np.concatenate([[z_prev], z])), -overshoot / N, atol=1e-12)
    assert z[-1] == pytest.approx(exact, abs=1e-12)


def chunk_after_plain(w: Walk, t: float) -> None:
    w.clock.t = t
    w.world.gate.release()
    assert w.world.asked.acquire(timeout=10), w.session.error


# ---- the box and the timeline value ---------------------------------------------------------------


def test_input_box_records_every_change_between_takes():
    clock = ManualClock()
    box = InputBox(clock=clock)
    box.press("w", now=0.1)
    box.release("w", now=0.15)
    box.add_mouse(3.0, -1.0, now=0.2)
    box.set_gamepad((0.5, 0.0), (0.0, 0.0), 0.0, 0.0, now=0.3)
    tl = box.take_timeline(now=0.4)
    assert (tl.start, tl.end) == (0.0, 0.4)
    assert tl.key_events() == [(0.1, "w", True), (0.15, "w", False)]
    assert tl.mouse == ((0.2, 3.0, -1.0),)
    assert tl.state.mouse_dx == 3.0 and tl.final.left_stick == (0.5, 0.0)
    # the next recording starts at the take with what is held then, and nothing else
    box.press("a", now=0.35)  # stamped before the take (a late message): counts at the take
    nxt = box.take_timeline(now=0.5)
    assert nxt.start == 0.4 and nxt.held[0][1].left_stick == (0.5, 0.0)
    assert nxt.key_events() == [(0.4, "a", True)] and nxt.mouse == ()
    # take() still returns the snapshot, and restarts the mouse accumulation
    box.add_mouse(1.0, 0.0, now=0.6)
    assert box.take().mouse_dx == 1.0 and box.peek().mouse_dx == 0.0


def test_frame_inputs_say_what_was_held_during_each_frame():
    tl = InputTimeline.from_events(0.0, 0.25, [
        (0.01, "press", "w"), (0.02, "release", "w"),  # a tap inside frame 0
        (0.07, "press", "a"), (0.2, "release", "a"),
        (0.1, "mouse", (4.0, 0.0)), (0.19, "mouse", (1.0, 2.0)),
    ])
    f = tl.frame_inputs(DT * np.arange(5))
    assert [sorted(x.keys) for x in f] == [["w"], ["a"], ["a"], ["a"]]
    assert f[0].held_s["w"] == pytest.approx(0.01)
    assert f[1].held_s["a"] == pytest.approx(0.125 - 0.07)
    assert [(x.mouse_dx, x.mouse_dy) for x in f] == [(0, 0), (4.0, 0.0), (0, 0), (1.0, 2.0)]
    # past the end the held input goes on
    assert tl.frame_inputs([0.3, 0.4])[0].keys == frozenset()


def test_follow_equals_ticking_through_the_same_input_with_easing():
    tl = InputTimeline.from_events(0.0, 0.6, [
        (0.05, "press", "w"), (0.13, "press", "e"), (0.2, "mouse", (30.0, -10.0)),
        (0.31, "release", "w"), (0.4, "pad", ((0.3, -0.8), (0.5, 0.2), 0.0, 0.7)), (0.52, "release", "e"),
    ])
    a = PoseIntegrator()
    poses = a.follow(tl, [0.1, 0.3, 0.6, 0.8])
    b = PoseIntegrator()
    cuts = sorted({0.0, 0.05, 0.13, 0.2, 0.31, 0.4, 0.52, 0.1, 0.3, 0.6, 0.8})
    ref = {}
    epoch = 100
    for t0, t1 in zip(cuts, cuts[1:], strict=False):
        state = tl.state_at(t0)
        if t0 == 0.2:  # the mouse motion lands at the start of the tick after it
            epoch += 1
            state = InputState(keys=state.keys, left_stick=state.left_stick, right_stick=state.right_stick,
                               left_trigger=state.left_trigger, mouse_dx=30.0, mouse_dy=-10.0, mouse_epoch=epoch)
        b.tick(t1 - t0, state)
        ref[t1] = b.pose
    for t, p in zip([0.1, 0.3, 0.6, 0.8], poses, strict=True):
        np.testing.assert_allclose(p, ref[t], atol=1e-12)


def test_planner_held_rotation_includes_the_unread_input():
    integrator = PoseIntegrator(IntegratorConfig(accel_time=0.0))
    planner = PathPlanner(integrator)
    planner.restart(0.0)
    pending = InputTimeline.from_events(0.0, 0.5, [(0.0, "press", "right"), (0.25, "mouse", (100.0, 0.0))])
    yaw, _, _ = planner.held_rotation(pending)
    assert math.degrees(yaw) == pytest.approx(45.0 + 100 * integrator.cfg.mouse_sensitivity, abs=1e-9)


def test_a_pause_keeps_the_turns_but_not_the_walk(walk):
    path = chunk_after(walk, T1)
    walk.session.set_paused(True)
    walk.clock.t = T1 + 0.1
    walk.world.gate.release()  # the chunk in flight finishes; then the model thread waits
    poll_until(lambda: walk.session.standing, 10, "the model thread to stand, paused")
    walk.box.press("w", now=T1 + 0.2)
    walk.box.add_mouse(100.0, 0.0, now=T1 + 0.3)
    walk.clock.t = T1 + 5.0
    count = len(walk.planned)  # type: ignore[attr-defined]
    walk.session.set_paused(False)
    assert walk.world.asked.acquire(timeout=10), walk.session.error
    path = walk.planned[count]  # type: ignore[attr-defined]
    yaw = math.degrees(yaw_pitch_roll(path.poses[0][:3, :3])[0])
    assert yaw == pytest.approx(100 * 0.15, abs=1e-9)
    # w is still held: the walk starts from where it stood, at the resume, not 4.8 s further
    assert path.poses[-1, 2, 3] <= 0.25 + 1e-9


def test_input_older_than_the_replay_limit_turns_but_does_not_walk():
    w = Walk(max_replay_s=1.0)  # a world far slower than real time: 3 s between plannings
    try:
        planned: list = []
        original = w.session.planner.plan
        w.session.planner.plan = lambda tl, m, dt: planned.append(original(tl, m, dt)) or planned[-1]
        w.planned = planned  # type: ignore[attr-defined]
        w.box.press("w", now=T1 - 0.25)
        assert chunk_after(w, T1).poses[-1, 2, 3] == pytest.approx(0.25, abs=1e-12)
        w.box.add_mouse(100.0, 0.0, now=T1 + 0.5)
        w.box.release("w", now=T1 + 2.75)
        path = chunk_after(w, T1 + 3.0)
        assert math.degrees(yaw_pitch_roll(path.poses[-1][:3, :3])[0]) == pytest.approx(15.0, abs=1e-9)
        # of the 2.75 s "w" was held since, only what lies in the last second counts: 0.75 s
        x, z = path.poses[-1, 0, 3], path.poses[-1, 2, 3]
        a = math.radians(15.0)
        assert x == pytest.approx(0.75 * math.sin(a), abs=1e-9)
        assert z == pytest.approx(0.25 + 0.75 * math.cos(a), abs=1e-9)
    finally:
        w.close()
