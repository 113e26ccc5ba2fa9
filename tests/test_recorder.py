"""The recorder sink and the session log, read back with PyAV and json (synthetic frames)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from worldwalk.controls import InputState
from worldwalk.runtime.chunk import Chunk, Frame
from worldwalk.stream.record.recorder import Recorder, RecorderConfig
from worldwalk.stream.record.session_log import SessionHeader, SessionLogWriter, read_log

from .conftest import decode_video as decode
from .conftest import psnr

W, H, FPS = 128, 72, 16


def synthetic(i: int) -> np.ndarray:
    """A smooth moving pattern that a codec keeps well: (H, W, 3) uint8."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([
        128 + 100 * np.sin((x + 3 * i) / 11.0),
        128 + 100 * np.cos((y - 2 * i) / 9.0),
        np.full_like(x, (40 + 7 * i) % 256),
    ], axis=-1)
    return img.clip(0, 255).astype(np.uint8)


def frame(i: int, pts: float | None = None, image: np.ndarray | None = None) -> Frame:
    return Frame(
        image=synthetic(i) if image is None else image, pose=np.eye(4), intrinsics=np.eye(3), index=i,
        pts=i / FPS if pts is None else pts, chunk_index=i // 4, generation=0, created=time.monotonic(),
    )


def header(**kw) -> SessionHeader:
    base = dict(world="reference", model="reference", fps=FPS, width=W, height=H, frames_per_chunk=4,
                first_chunk_frames=4, seed=0, intrinsics=np.eye(3))
    return SessionHeader(**{**base, **kw})


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_recording_reads_back_with_count_size_fps_timestamps_and_content(tmp_path, suffix):
    path = tmp_path / f"rec{suffix}"
    n = 40
    with Recorder(path, RecorderConfig()).start(header()) as rec:
        for i in range(n):
            assert rec.write(frame(i))
    assert (rec.frames_written, rec.frames_dropped) == (n, 0)

    images, times, stream = decode(path)
    assert len(images) == n
    assert (stream.width, stream.height) == (W, H)
    assert stream.average_rate == FPS
    np.testing.assert_allclose(times, np.arange(n) / FPS, atol=1e-3)
    worst = min(psnr(img, synthetic(i)) for i, img in enumerate(images))
    assert worst > 30, f"worst frame PSNR {worst:.1f} dB"
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == ("h264" if suffix == ".mp4" else "vp9")


def test_timestamps_follow_frame_pts_through_gaps_and_resets(tmp_path):
    path = tmp_path / "gaps.mp4"
    # frame 3 never reaches the recorder (a gap stays a gap); then a reset sends pts back to 0
    pts = [0, 1, 2, 4, 5, 0, 1, 2]
    with Recorder(path).start(header()) as rec:
        for i, p in enumerate(pts):
            rec.write(frame(i, pts=p / FPS))
    _, times, _ = decode(path)
    ticks = [round(t * FPS) for t in times]
    assert ticks == [0, 1, 2, 4, 5, 6, 7, 8]


def test_a_slow_encoder_drops_and_counts_instead_of_blocking(tmp_path, monkeypatch):
    path = tmp_path / "slow.mp4"
    cfg = RecorderConfig(max_queue_mb=0, min_queue_frames=2)
    rec = Recorder(path, cfg).start(header())
    encode = rec._encode
    monkeypatch.setattr(rec, "_encode", lambda f: (time.sleep(0.05), encode(f)))
    t0 = time.perf_counter()
    accepted = sum(rec.write(frame(i)) for i in range(20))
    assert time.perf_counter() - t0 < 0.2  # write() never waited for the encoder
    stats = rec.close()
    assert stats.frames_dropped > 0
    assert stats.frames_written == accepted
    assert stats.frames_written + stats.frames_dropped == 20
    assert len(decode(path)[0]) == stats.frames_written
    assert read_log(tmp_path / "slow.jsonl").end["frames_dropped"] == stats.frames_dropped


def test_session_log_round_trips_poses_exactly_and_input_states(tmp_path):
    path = tmp_path / "s.jsonl"
    log = SessionLogWriter(path)
    log.write_header(header(seed=7), first_image=synthetic(0))
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[:, :3, :] = rng.normal(size=(4, 3, 4))  # arbitrary float64 bits
    K = np.broadcast_to(np.eye(3), (4, 3, 3))
    state = InputState(keys=frozenset({"w", "shift"}), mouse_dx=3.5, timestamp=12.0)
    log.write_chunk(Chunk(np.zeros((4, 2, 2, 3), np.uint8), poses, K, 0, {"render": 0.01}), state)
    log.write_event("reset")
    # killed mid-write: no end line, and a torn last line
    with open(path, "a") as f:
        f.write('{"type": "chunk", "ind')
    r = read_log(path)
    assert r.header["seed"] == 7 and r.header["worldwalk_version"]
    assert r.header["first_image_hash"].startswith("sha256:")
    assert (tmp_path / r.header["first_image"]).exists()
    assert r.end is None and r.truncated
    chunk = r.chunks[0]
    assert np.array_equal(np.array(chunk["poses"]), poses)  # bit-exact through JSON
    assert chunk["input"]["keys"] == ["shift", "w"] and chunk["input"]["mouse_dx"] == 3.5
    assert "intrinsics" not in chunk  # same as the header's
    assert [x["type"] for x in r.records] == ["chunk", "event"]
    log.close()


CHILD = textwrap.dedent("""
    import signal, sys, time
    import numpy as np
    from worldwalk.runtime.chunk import Chunk, Frame
    from worldwalk.stream.record.recorder import Recorder, RecorderConfig
    from worldwalk.stream.record.session_log import SessionHeader

    W, H, FPS = 128, 72, 16
    header = SessionHeader(world="reference", model="reference", fps=FPS, width=W, height=H,
                           frames_per_chunk=4, first_chunk_frames=4, seed=0, intrinsics=np.eye(3))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
    rec = Recorder(sys.argv[1], RecorderConfig(keyframe_seconds=1.0)).start(header)
    i = 0
    try:
        while True:
            img = np.full((H, W, 3), (i * 5) % 256, np.uint8)
            rec.write(Frame(img, np.eye(4), np.eye(3), i, i / FPS, i // 4, 0, time.monotonic()))
            if i % 4 == 3:  # a chunk's log line, as the session listener writes it
                rec.log_chunk(Chunk(np.zeros((4, 2, 2, 3), np.uint8), np.tile(np.eye(4), (4, 1, 1)),
                                    np.tile(np.eye(3), (4, 1, 1)), i // 4), None, None)
            i += 1
            time.sleep(0.004)
            print(rec.frames_written, flush=True)
    finally:
        stats = rec.close()
        print("closed", stats.frames_written, flush=True)
""")


def _run_child(tmp_path: Path, sig: int, wait_frames: int) -> tuple[Path, list[str]]:
    path = tmp_path / f"child{sig}.mp4"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip().isdigit() and int(line) >= wait_frames or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    lines += [ln.strip() for ln in proc.stdout]
    proc.wait(10)
    return path, lines


def test_sigkill_leaves_a_file_that_plays_to_its_last_fragment(tmp_path):
    path, lines = _run_child(tmp_path, signal.SIGKILL, wait_frames=100)
    recorded = max(int(x) for x in lines if x.isdigit())
    images, times, stream = decode(path)
    assert len(images) >= recorded - FPS, f"{len(images)} decoded of {recorded} (fragment {FPS} frames)"
    assert (stream.width, stream.height) == (W, H)
    np.testing.assert_allclose(times, np.arange(len(images)) / FPS, atol=1e-3)
    log = read_log(path.with_suffix(".jsonl"))  # every chunk line up to the kill is on disk
    assert log.end is None and len(log.chunks) >= recorded // 4


def test_ctrl_c_finalizes_every_frame(tmp_path):
    path, lines = _run_child(tmp_path, signal.SIGINT, wait_frames=40)
    closed = [x for x in lines if x.startswith("closed")]
    assert closed, f"the child did not close its recorder: {lines[-3:]}"
    written = int(closed[0].split()[1])
    assert len(decode(path)[0]) == written >= 40
    assert read_log(path.with_suffix(".jsonl")).end["frames_written"] == written


def test_bad_settings_fail_at_start(tmp_path):
    with pytest.raises(ValueError, match="even"):
        Recorder(tmp_path / "odd.mp4").start(header(width=127))
    with pytest.raises(ValueError, match="unknown recorder codec"):
        Recorder(tmp_path / "x.mp4", RecorderConfig(codec="mpeg1"))


def test_log_lines_are_json_objects(tmp_path):
    with Recorder(tmp_path / "j.mp4").start(header()) as rec:
        rec.log_chunk(Chunk(np.zeros((4, 2, 2, 3), np.uint8), np.tile(np.eye(4), (4, 1, 1)),
                            np.tile(np.eye(3), (4, 1, 1)), 0), None, None)
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["header", "chunk", "end"]
    assert lines[0]["video"] == "j.mp4"


def test_next_recording_path_gives_one_fresh_name_per_session(tmp_path):
    from worldwalk.stream.record.recorder import next_recording_path

    names = {next_recording_path(tmp_path / "recs") for _ in range(3)}
    assert len(names) == 3 and all(p.suffix == ".mp4" and p.parent == tmp_path / "recs" for p in names)


def test_close_frees_a_lock_orphaned_by_ctrl_c(tmp_path):
    """A KeyboardInterrupt between acquire and `with` can leave the queue's lock held by nobody."""
    rec = Recorder(tmp_path / "o.mp4").start(header())
    rec.write(Frame(np.zeros((72, 128, 3), np.uint8), np.eye(4), np.eye(3), 0, 0.0, 0, 0, time.monotonic()))
    assert rec._queue.mutex.acquire(timeout=5)  # the orphan
    stats = rec.close()
    assert stats.frames_written == 1
