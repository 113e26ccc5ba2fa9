"""Key -> presented latency step by step: the session's chunk timings and their split."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from worldwalk.runtime.session import Session
from worldwalk.viewer.metrics import LatencyMeter, LatencySplit

from .builders import ManualClock, poll_until
from .timed_world import TimedWorld

CHUNK_S = 0.03125  # what a chunk takes on the test's clock (a power of two: exact differences)


def _taken_after(session: Session, press: float):
    """Take the queued frames up to the first one planned with the press; that one, or None."""
    while (f := session.frames.get(timeout=0)) is not None:
        if f.input_time is not None and f.input_time >= press:
            return f
    return None


def test_the_steps_of_a_chunk_are_stamped_in_order_and_split_the_latency():
    clock = ManualClock(1.0)
    world = TimedWorld(chunk_seconds=CHUNK_S, clock=clock)  # only the world's chunks move the clock on
    with Session(world, clock=clock).start() as session:
        press = clock.t
        session.inputs.press("w", now=press)
        frame = poll_until(lambda: _taken_after(session, press), 10, "a frame planned after the press")
        taken = clock.t
        timing = session.timing(frame)
    assert timing is not None and timing.chunk_index == frame.chunk_index
    assert press <= timing.planned <= timing.model <= timing.generated <= timing.queued <= taken
    assert timing.generated - timing.model == CHUNK_S  # the world's own time is "generate"
    meter = LatencyMeter()
    meter.press(press)
    presented = taken + 0.004
    total = meter.presented(frame.input_time, presented, timing, taken=taken)
    split = meter.split_median()
    assert split is not None and split.total == pytest.approx(total)
    assert split.display == pytest.approx(0.004) and split.generate == pytest.approx(CHUNK_S)
    assert meter.summary()["median_split_ms"]["display"] == pytest.approx(4.0)


def test_a_reported_decode_is_split_from_generating():
    timing = SimpleNamespace(planned=1.0, model=1.01, generated=1.31, decode_s=0.1)
    s = LatencySplit.of(0.9, timing, taken=1.5, presented=1.52)
    assert (s.wait, s.plan, s.generate, s.decode, s.queue, s.display) == pytest.approx(
        (0.1, 0.01, 0.2, 0.1, 0.19, 0.02))
    assert s.text() == "wait 100 + plan 10 + gen 200 + dec 100 + queue 190 + show 20 ms"
