"""A recorded session of the bundled model replays to the same raw frames, bit for bit, with
the chunk-step backend the log names (auto: ONNX Runtime on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.record.recorder import attach_recorder
from worldwalk.stream.record.replay import plan_from_log, render_frames

from .test_render import wait_chunks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.timeout(300)
def test_bundled_session_replays_bit_identical(tmp_path):
    wc = WorldConfig(name="bundled", seed=3, accel="auto")
    session = Session(create_world(wc), SessionConfig(seed=3))
    rec = attach_recorder(session, tmp_path / "bundled.mp4", world_cfg=wc, consume=True)
    live: list[np.ndarray] = []  # the frames the (headless) player took: the log holds exactly these
    take = rec.write
    rec.write = lambda frame: (live.append(frame.image.copy()), take(frame))[1]
    try:
        session.start()
        session.inputs.press("w")
        wait_chunks(session, 3, timeout=120)
        session.inputs.add_mouse(80.0, 0.0)
        wait_chunks(session, 5, timeout=120)
        assert session.rewind() is not None
        wait_chunks(session, 7, timeout=120)
    finally:
        session.close()
        rec.close()

    plan = plan_from_log(tmp_path / "bundled.jsonl")
    assert plan.world == "bundled" and plan.accel == "auto"
    assert plan.header["settings"]["accel_used"] == "onnx"
    assert "restore" in [s.kind for s in plan.steps]
    replay = render_frames(plan)
    assert np.array_equal(np.stack(live), replay)
