"""Resets and rewinds are the session's own events: a recording subscribes to them, so what plays the
walk (the window, the browser's input channel) never writes them into the log by hand."""

from __future__ import annotations

import threading
import time

from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.record.recorder import attach_recorder
from worldwalk.stream.record.session_log import read_log
from worldwalk.stream.record.session_recording import SessionRecording

from .builders import TINY_REFERENCE, pump_frames


def _more_chunks(session: Session, k: int, timeout: float = 20.0) -> None:
    target = session.stats()["chunks"] + k
    deadline = time.monotonic() + timeout
    while session.stats()["chunks"] < target:
        assert time.monotonic() < deadline and session.error is None, session.error
        time.sleep(0.01)


def _walk(session: Session) -> int:
    """Walk, rewind, walk, reset, walk: only the session is told. Returns the rewind's target."""
    session.start()
    session.inputs.press("w")
    _more_chunks(session, 3)
    target = session.rewind()
    assert target is not None
    _more_chunks(session, 2)
    session.reset()
    _more_chunks(session, 2)
    return target


def _events(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k in ("kind", "to_chunk")}
            for r in read_log(path).records if r["type"] == "event"]


def test_a_recorder_logs_the_sessions_resets_and_rewinds(tmp_path):
    session = Session(create_world(TINY_REFERENCE), SessionConfig(seed=1))
    rec = attach_recorder(session, tmp_path / "walk.mp4", world_cfg=TINY_REFERENCE, consume=True)
    try:
        target = _walk(session)
    finally:
        session.close()
        rec.close()
    assert _events(tmp_path / "walk.jsonl") == [{"kind": "rewind", "to_chunk": target}, {"kind": "reset"}]


def test_a_served_recording_logs_the_sessions_resets_and_rewinds(tmp_path):
    session = Session(create_world(TINY_REFERENCE), SessionConfig(seed=1))
    rec = SessionRecording(session, tmp_path, "session-x", world_cfg=TINY_REFERENCE)
    stop = threading.Event()
    pump = pump_frames(session, rec.write, stop)  # the fan-out's part: every frame to the recording
    try:
        target = _walk(session)
    finally:
        session.close()
        stop.set()
        pump.join(5)
        rec.close()
    assert rec.path is not None
    assert _events(rec.path.with_suffix(".jsonl")) == [{"kind": "rewind", "to_chunk": target}, {"kind": "reset"}]


def test_a_failing_event_listener_is_detached_and_the_command_still_runs():
    session = Session(create_world(TINY_REFERENCE), SessionConfig(seed=1))
    heard: list[str] = []

    def broken(kind: str, **data: object) -> None:
        raise OSError("disk full")

    session.add_event_listener(broken)
    session.add_event_listener(lambda kind, **data: heard.append(kind))
    try:
        generation = session.generation
        session.reset()
        session.reset()
        assert session.generation == generation + 2 and heard == ["reset", "reset"]
    finally:
        session.close()
