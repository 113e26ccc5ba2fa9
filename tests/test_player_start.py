"""A player's start is one value (`PlayerStart`): where the walk begins, the keys held there, where its
recording goes. Given to the server's session building, a walk that moved here goes on from its
boundary, with its keys, in its own recording's files, as the cluster's session hosts start it."""

from __future__ import annotations

import time

from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.worlds.world_pool import WorldPool
from worldwalk.stream.record.session_log import input_state_to_dict, read_log
from worldwalk.stream.record.session_recording import RecordingPlan
from worldwalk.stream.webrtc.config import ServeConfig
from worldwalk.stream.webrtc.sessions import PlayerSessions, PlayerStart, close_recording

from .test_recording_agrees import check_agree

WORLD = WorldConfig(name="reference", width=64, height=36, fps=16.0)


def shown(play, n: int) -> None:
    """The fan-out's part: the session's frames to its recording, until it holds `n` in all."""
    deadline = time.monotonic() + 30
    while play.recorder.recorder is None or play.recorder.recorder.frames_written < n:
        assert time.monotonic() < deadline, "the recording did not get its frames"
        frame = play.session.frames.get(timeout=0.05)
        if frame is not None:
            play.recorder.write(frame)


def test_a_walk_started_from_a_boundary_goes_on_with_its_keys_in_its_own_files(tmp_path):
    cfg = ServeConfig(port=0, world=WORLD, session=SessionConfig(just_in_time=False), record_dir=str(tmp_path))
    worlds = WorldPool(cfg.world)
    players = PlayerSessions(cfg, worlds)
    opened: list[str] = []
    records: dict[int, dict] = {}
    told: list = []

    def keep_records(session) -> None:  # what the cluster's store keeps of each chunk
        told.append(session)
        session.add_listener(lambda chunk, state, frames: records.__setitem__(
            chunk.index, {"input": input_state_to_dict(state), "poses": [f.pose.tolist() for f in frames]}))

    a = players.build(PlayerStart(recording=RecordingPlan(on_open=opened.append), on_session=keep_records))
    try:
        assert told == [a.session]
        a.session.inputs.press("w")
        shown(a, 30)
        boundary = a.session.latest_boundary()
    finally:
        a.session.close()
        close_recording(a.recorder)
    assert opened == [str(a.recorder.path)] and boundary is not None and boundary.chunk_index > 0

    plan = RecordingPlan(continue_path=opened[0], at_chunk=boundary.chunk_index, records=records,
                         on_open=opened.append)
    b = players.build(PlayerStart(resume=boundary, held_keys=("w",), recording=plan))
    try:
        assert b.session.inputs.peek().keys == {"w"}  # the walk goes on with the key held at the move
        assert b.recorder.path == a.recorder.path and b.recorder.continued_frames > 0
        first = b.session.frames.get(timeout=30)
        assert first is not None and first.chunk_index == boundary.chunk_index
        assert first.index == boundary.frame_index  # not the first frame again
        b.recorder.write(first)
        shown(b, b.recorder.continued_frames + 16)
    finally:
        b.session.close()
        close_recording(b.recorder)
        worlds.close()
    assert opened == [opened[0]]  # the old files went on: no new ones were opened
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".mp4", ".jsonl")) == \
        [a.recorder.path.with_suffix(".jsonl").name, a.recorder.path.name]
    log = read_log(a.recorder.path.with_suffix(".jsonl"))
    assert [r["kind"] for r in log.records if r["type"] == "event"] == ["moved"]
    assert check_agree(a.recorder.path) >= b.recorder.continued_frames + 16
