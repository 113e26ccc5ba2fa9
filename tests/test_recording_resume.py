"""A recording goes on in its own files when its walk moves to another process (the cluster's
failover and drain; stream/record/recording_resume.py): one video and one log, which agree frame for
frame, and the log replays bit for bit to the frames the two processes made. No Ray here: the
move is two sessions in this process, the second resumed from a boundary of the first; the
cluster test does it across replicas."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.record.recorder import attach_recorder
from worldwalk.stream.record.recording_resume import ContinuedRecorder, read_recording
from worldwalk.stream.record.replay import plan_from_log, render_frames
from worldwalk.stream.record.session_log import image_hash, input_state_to_dict, read_log

from .builders import pump_frames, reference_config
from .test_recording_agrees import check_agree

WORLD = reference_config(width=64, height=36, fps=16.0)


def made_chunks(session: Session, hashes: dict[int, list[str]], records: dict[int, dict]) -> None:
    def on_chunk(chunk, state, frames) -> None:
        got = [image_hash(f.image) for f in frames]
        assert hashes.setdefault(chunk.index, got) == got, f"chunk {chunk.index} came out differently twice"
        records[chunk.index] = {"input": input_state_to_dict(state), "poses": [f.pose.tolist() for f in frames]}

    session.add_listener(on_chunk)


def wait_frames(rec, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while rec.frames_written < n:
        assert time.monotonic() < deadline, f"only {rec.frames_written} of {n} frames were recorded"
        time.sleep(0.02)


def replays_bit_identical(video: Path, hashes: dict[int, list[str]]) -> int:
    """The log's replay makes, frame for frame, the frames the live sessions made (hashes) for what the video holds."""
    log = read_log(video.with_suffix(".jsonl"))
    expected = []
    for r in log.chunks:
        keep = r.get("keep", len(r["poses"]))
        expected += hashes[r["index"]][:keep]
    replay = render_frames(plan_from_log(video.with_suffix(".jsonl")))
    assert [image_hash(f) for f in replay] == expected
    return len(expected)


def test_a_recording_goes_on_in_the_same_files_after_a_kill_and_replays_bit_identical(tmp_path):
    cfg = SessionConfig(just_in_time=False)
    hashes: dict[int, list[str]] = {}
    records: dict[int, dict] = {}
    a = Session(create_world(WORLD), cfg)
    made_chunks(a, hashes, records)
    rec_a = attach_recorder(a, tmp_path / "walk.mp4", world_cfg=WORLD)
    stop = threading.Event()
    a.inputs.press("w")
    a.start()
    worker = pump_frames(a, rec_a.write, stop)
    try:
        wait_frames(rec_a, 40)
        # what a process killed now leaves on disk: the fragments and lines flushed so far
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for p in tmp_path.glob("walk*"):
            shutil.copy(p, crashed / p.name)
        boundary = a.latest_boundary()  # the store's latest snapshot of the walk
    finally:
        stop.set()
        worker.join()
        a.close()
        rec_a.close()
    video = crashed / "walk.mp4"
    old = read_recording(video, boundary.chunk_index, records)
    assert 0 < old.frames <= boundary.frame_index  # up to the last complete fragment

    b = Session(create_world(WORLD), cfg, resume=boundary)
    made_chunks(b, hashes, records)
    rec_b = ContinuedRecorder(video, old).start()
    b.add_listener(rec_b.log_chunk)
    b.inputs.press("w")
    b.start()
    stop = threading.Event()
    worker = pump_frames(b, rec_b.write, stop)
    try:
        wait_frames(rec_b, old.frames + 24)
    finally:
        stop.set()
        worker.join()
        b.close()
        rec_b.close()

    assert sorted(p.name for p in crashed.iterdir()) == ["walk.jsonl", "walk.mp4"]  # the same two files
    kinds = [r.get("kind") for r in read_log(video.with_suffix(".jsonl")).records if r["type"] == "event"]
    assert kinds == ["moved"]
    n = check_agree(video)  # the video holds exactly the frames the log says, in its order
    assert n == replays_bit_identical(video, hashes) and n >= old.frames + 20
