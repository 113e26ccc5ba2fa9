"""The session engine on a world that takes a controlled time per chunk."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import numpy as np
import pytest

from worldwalk.runtime.chunk import Frame
from worldwalk.runtime.frame_queue import FrameQueue
from worldwalk.runtime.pacer import FramePacer, PacerConfig
from worldwalk.runtime.session import Session, SessionConfig

from .builders import ManualClock, poll_until
from .timed_world import GatedWorld, TimedWorld


def drain(session: Session, count: int, timeout: float = 10.0) -> list:
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        f = session.frames.get(timeout=0.1)
        if f is not None:
            frames.append(f)
    assert len(frames) == count, f"got {len(frames)} of {count} frames; error: {session.error}"
    return frames


def test_frames_arrive_in_order_with_increasing_timestamps():
    world = TimedWorld(chunk_seconds=0.005)
    with Session(world).start() as session:
        frames = drain(session, 5 + 4 * 5)
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in pairwise(pts))
    assert [f.chunk_index for f in frames[:6]] == [0, 0, 0, 0, 0, 1]
    assert all(f.image.shape == (6, 8, 3) for f in frames)
    # the first frame is the start pose; the model thread, not the caller, ran the world
    np.testing.assert_allclose(frames[0].pose, np.eye(4))
    assert world.threads == {"model-timed"}


def test_holding_forward_moves_the_planned_poses():
    world = TimedWorld(chunk_seconds=0.001)
    with Session(world).start() as session:
        session.inputs.press("w")
        frames = drain(session, 30)
    z = [f.pose[2, 3] for f in frames]
    assert z[-1] > z[0] + 1e-3
    assert all(b >= a - 1e-12 for a, b in pairwise(z))


def test_reset_drops_stale_frames_at_once():
    world = TimedWorld(chunk_seconds=0.02)
    session = Session(world, SessionConfig(queue_capacity=64)).start()
    try:
        drain(session, 9)
        poll_until(lambda: len(session.frames) > 0, 10, "frames to pile up in the queue")
        old_generation = session.generation
        session.reset()
        # nothing of the old walk may come out after the reset returns
        assert session.frames.peek() is None or session.frames.peek().generation > old_generation
        after = drain(session, 6)
        assert all(f.generation > old_generation for f in after)
        assert after[0].index == 0 and after[0].chunk_index == 0
        assert world.resets == 2
    finally:
        session.close()


def _taking_nothing(policy: str) -> tuple[Session, TimedWorld, int]:
    """A session whose player takes nothing, on a clock that stands still, until the model has run on
    (drop_oldest: 20 chunks) or waits for the player (block: it has looked at the clock 10 times since
    its first chunk, or the queue is full); the session (closed), its world and the queue's peak length."""
    clock = ManualClock()
    world = TimedWorld(chunk_seconds=0.0)
    session = Session(world, SessionConfig(queue_capacity=7, queue_policy=policy), clock=clock)  # type: ignore[arg-type]
    peak, put = [0], session.frames.put

    def noted(frame, timeout=None):
        try:
            return put(frame, timeout)
        finally:
            peak[0] = max(peak[0], len(session.frames))

    session.frames.put = noted  # type: ignore[method-assign]
    with session.start():
        if policy == "drop_oldest":
            poll_until(lambda: world.chunk >= 20, 10, "20 chunks")
        else:
            poll_until(lambda: session.frames.stats.put > 0, 10, "the first frames")
            reads = clock.reads
            clock.settle(lambda: clock.reads >= reads + 10 or len(session.frames) == 7, "the model to wait")
    return session, world, peak[0]


def test_slow_consumer_never_grows_the_queue_beyond_its_bound():
    session, world, peak = _taking_nothing("block")
    assert peak <= 7
    assert world.chunk <= 4  # back-pressure: the model waited for the player
    session, world, peak = _taking_nothing("drop_oldest")
    assert peak <= 7
    assert session.frames.stats.dropped_full > 0


def test_close_leaves_no_thread_behind_and_frees_the_world():
    before = set(threading.enumerate())
    world = TimedWorld(chunk_seconds=0.05)
    session = Session(world).start()
    drain(session, 3)
    session.close()
    assert set(threading.enumerate()) <= before
    assert world.closed
    session.close()  # twice is fine


def test_close_unblocks_a_producer_waiting_on_a_full_queue():
    world = TimedWorld(chunk_seconds=0.0)
    session = Session(world, SessionConfig(queue_capacity=2)).start()
    poll_until(lambda: len(session.frames) == 2, 10, "the queue to fill")  # the model thread blocks on it
    t0 = time.monotonic()
    session.close()
    assert time.monotonic() - t0 < 2.0
    assert not any(t.name == "model-timed" for t in threading.enumerate())


def test_rewind_restores_an_earlier_boundary():
    world = TimedWorld(chunk_seconds=0.001)
    session = Session(world, SessionConfig(queue_capacity=6)).start()
    try:
        frames = drain(session, 5 + 4 * 3)  # chunks 0..3 seen
        shown = frames[-1].chunk_index
        assert session.rewind() == shown - 1
        after = drain(session, 4)
        assert after[0].chunk_index == shown - 1
        assert after[0].generation > frames[-1].generation
        # poses continue from the restored boundary: equal to the first walk's poses there
        first_walk = {f.chunk_index: f.pose for f in frames}
        np.testing.assert_allclose(after[0].pose, first_walk[shown - 1])
    finally:
        session.close()


def test_rewind_with_one_frame_chunks_goes_back_several_chunks():
    world = TimedWorld(chunk_seconds=0.001, frames_per_chunk=1, first_chunk_frames=1)
    session = Session(world, SessionConfig(queue_capacity=6, rewind_frames=4)).start()
    try:
        frames = drain(session, 12)
        shown = frames[-1].chunk_index
        assert session.rewind() == shown - 4
    finally:
        session.close()


def test_pause_stops_generation():
    world = TimedWorld(chunk_seconds=0.0)
    session = Session(world, SessionConfig(start_paused=True)).start()
    try:
        poll_until(lambda: session.standing, 10, "the model thread to stand, paused")
        assert world.chunk == 0 and len(session.frames) == 0
        session.set_paused(False)
        drain(session, 5)
    finally:
        session.close()


def test_a_failing_world_is_reported_not_hung():
    world = TimedWorld()

    def boom(poses, intrinsics):
        raise RuntimeError("out of memory in the decoder")

    world.generate_chunk = boom
    with Session(world).start() as session:
        assert "out of memory" in poll_until(lambda: session.error, 5, "the error")


def test_frame_queue_rejects_bad_configuration():
    with pytest.raises(ValueError, match="capacity"):
        FrameQueue(0)
    with pytest.raises(ValueError, match="policy"):
        FrameQueue(4, "newest")  # type: ignore[arg-type]


def _frame(i: int, chunk: int = 0, fps: float = 20.0) -> Frame:
    return Frame(image=np.zeros((2, 2, 3), np.uint8), pose=np.eye(4), intrinsics=np.eye(3), index=i,
                 pts=i / fps, chunk_index=chunk, generation=0, created=0.0)


def test_pacer_shows_frames_at_the_content_rate():
    # 20 fps content arriving in bursts (a chunk of 5 frames, then 4 a chunk, each queued whole when the
    # last one is on screen), polled every 2 ms of the test's clock: each frame is shown when it falls due
    queue = FrameQueue(16)
    pacer = FramePacer(queue, fps=20.0)
    shown, made, t = [], 0, 0.0
    while len(shown) < 20 and t < 5:
        if made < 21 and len(queue) == 0:
            n = 5 if made == 0 else 4
            for i in range(made, made + n):
                queue.put(_frame(i, chunk=made // 4))
            made += n
        f = pacer.poll(t)
        if f is not None:
            shown.append((t, f))
        t = round(t + 0.002, 6)
    assert [f.index for _, f in shown] == list(range(20))
    # each at its due time (within a poll step): paced, not bursted
    assert [t for t, _ in shown] == pytest.approx([i / 20 for i in range(20)], abs=0.0021)


def _queue_wait(just_in_time: bool) -> float:
    """Median time frames wait between their making and a paced consumer taking them, on the test's
    clock: chunks of 20 frames (0.2 s at 100 fps) that take 20 ms each to make, the consumer looking
    every 10 ms. At each step the model thread settles first (asks for a chunk, waits for room in the
    queue, or has looked at the new time and waits for the queue to run low)."""
    clock = ManualClock()
    world = GatedWorld(frames_per_chunk=20, first_chunk_frames=20, fps=100.0)
    cfg = SessionConfig(queue_capacity=60, just_in_time=just_in_time, jit_slack=0.02)
    waits, making_until = [], None
    with Session(world, cfg, clock=clock).start() as session:
        queue, pacer = session.frames, FramePacer(session.frames, fps=100.0)
        reads = clock.reads
        while clock.t < 1.0:
            clock.settle(lambda r=reads: world.asking.is_set() or len(queue) == queue.capacity
                         or clock.reads > r or session.error, "the model thread to settle")
            assert session.error is None, session.error
            if making_until is None and world.asking.is_set():
                making_until = clock.t + 0.02
            f = pacer.poll(clock.t)
            if f is not None and f.chunk_index >= 2:
                waits.append(clock.t - f.created)
            clock.t = round(clock.t + 0.01, 6)
            if making_until is not None and clock.t >= making_until:  # the chunk is made: queued now
                making_until, put = None, queue.stats.put
                world.gate.release()
                clock.settle(lambda p=put: queue.stats.put >= p + 20 or len(queue) == queue.capacity,
                             "the chunk's frames to be queued")
            reads = clock.reads
        world.gate.release(100)
    return float(np.median(waits))


def test_just_in_time_planning_keeps_the_queue_short():
    on, off = _queue_wait(True), _queue_wait(False)
    # without it the model fills the queue (60 frames = 0.6 s ahead); with it, about a chunk
    assert on < 0.6 * off, (on, off)


def test_held_pose_answers_mouse_look_at_once_at_the_shown_frames_position():
    from worldwalk.controls import yaw_pitch_roll

    world = TimedWorld(chunk_seconds=0.0, frames_per_chunk=8, first_chunk_frames=9, fps=16.0)
    with Session(world).start() as session:
        frames = drain(session, 9 + 8 * 2)
        shown = frames[-1]
        yaw_before = yaw_pitch_roll(session.held_pose(shown)[:3, :3])[0]
        session.inputs.add_mouse(100.0, 0.0)  # not planned yet: the view turns at once
        yaw_held = yaw_pitch_roll(session.held_pose(shown)[:3, :3])[0]
        expected = np.radians(100 * session.integrator.cfg.mouse_sensitivity)
        assert abs((yaw_held - yaw_before) - expected) < 1e-9
        np.testing.assert_allclose(session.held_pose(shown)[:3, 3], shown.pose[:3, 3])


def test_a_failing_listener_is_detached_and_the_walk_goes_on():
    world = TimedWorld(chunk_seconds=0.0)
    calls = []

    def full_disk(chunk, state, frames):
        calls.append(chunk.index)
        raise OSError("No space left on device")

    session = Session(world)
    session.add_listener(full_disk)  # before start(): added after it, chunk 0 could come first and be missed
    with session.start():
        drain(session, 5 + 4 * 3)
        assert session.error is None
    assert calls == [0]


def test_the_world_is_closed_once():
    world = TimedWorld(chunk_seconds=0.0)
    closes = []
    world.close = lambda: closes.append(1)
    session = Session(world).start()
    drain(session, 5)
    session.close()
    session.close()
    assert closes == [1]


def test_pacer_hands_every_frame_to_on_frame_even_the_skipped_ones():
    queue = FrameQueue(16)
    for i in range(6):
        queue.put(_frame(i, fps=50.0))
    seen = []
    pacer = FramePacer(queue, fps=50.0, cfg=PacerConfig(jitter_frames=2), on_frame=lambda f: seen.append(f.index))
    pacer.poll(0.0)  # anchors the timeline
    shown = pacer.poll(10.0)  # a display that stalled: every frame is due at once
    assert shown is not None and shown.index == 5 and pacer.skipped == 5
    assert seen == list(range(6))  # the recorder still gets all of them, in order
