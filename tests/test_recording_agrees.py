"""A recording's session log and its video agree frame for frame, for `play --record` (a real window
under Xvfb) and `serve --record-dir` (a WebRTC client on 127.0.0.1): the MP4 read back with PyAV has
as many frames as the log says, and each is the frame a replay of the log renders at that place."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .builders import reference_config, serve_config
from .test_play_window import TOOLS, display, wait_window, xdo  # noqa: F401 (display is a fixture)
from .webrtc_client import Player


def logged_frames(log: Path) -> int:
    """Frames the log says the video holds: each chunk's poses, or its `keep`."""
    n = 0
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r.get("type") == "chunk":
            n += int(r["keep"]) if "keep" in r else len(r["poses"])
    return n


def check_agree(video: Path) -> int:
    import av

    from worldwalk.stream.record.replay import plan_from_log, render_frames

    log = video.with_suffix(".jsonl")
    with av.open(str(video)) as f:
        shown = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
    assert len(shown) == logged_frames(log), f"{video.name}: {len(shown)} frames in the video, " \
        f"{logged_frames(log)} in its log"
    replay = render_frames(plan_from_log(log))
    assert replay.shape == shown.shape
    diff = np.abs(shown.astype(np.int16) - replay.astype(np.int16)).mean(axis=(1, 2, 3))
    assert diff.max() < 6.0, f"frame {diff.argmax()} differs from its replay by {diff.max():.1f}/255"
    if len(shown) > 8:  # the frames line up: one frame off would differ more (the camera walked)
        shifted = np.abs(shown[1:].astype(np.int16) - replay[:-1].astype(np.int16)).mean(axis=(1, 2, 3))
        assert diff[1:].mean() < shifted.mean()
    return len(shown)


@pytest.mark.timeout(90)
@pytest.mark.skipif(any(__import__("shutil").which(t) is None for t in TOOLS), reason="needs Xvfb and xdotool")
def test_play_recording_and_log_agree(display, tmp_path):  # noqa: F811
    env = display
    out = tmp_path / "walk.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldwalk.runtime.cli", "play", "--world", "reference", "--size", "128x72",
         "--window", "256x144", "--record", str(out), "--seconds", "6"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wid = wait_window(env, proc)
    time.sleep(1.0)
    xdo(env, "mousemove", "--window", wid, "128", "72", "click", "1")
    xdo(env, "keydown", "w")
    time.sleep(1.5)
    xdo(env, "key", "BackSpace")  # a rewind: the chunks made ahead of the screen are never shown
    time.sleep(1.0)
    xdo(env, "keyup", "w")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert any(json.loads(line).get("kind") == "rewind" for line in out.with_suffix(".jsonl").read_text().splitlines()
               if '"event"' in line)
    assert check_agree(out) > 20


@pytest.mark.timeout(90)
def test_serve_recording_and_log_agree(tmp_path):
    from worldwalk.stream.webrtc.server import StreamServer

    async def client(url: str) -> int:
        async with Player(url) as player:
            assert (await player.open(timeout=10))["type"] == "answer"
            await player.key("w", True)
            received = await player.frames_for(1.5)
            await player.command("rewind")
            return received + await player.frames_for(1.5)

    async def go() -> int:
        cfg = serve_config(reference_config(width=128, height=72, accel="none"),
                           record_dir=str(tmp_path))
        async with StreamServer(cfg) as server:
            received = await client(f"ws://127.0.0.1:{server.port}/ws")
            for _ in range(200):
                if not server.sessions:
                    break
                await asyncio.sleep(0.05)
        return received

    received = asyncio.run(asyncio.wait_for(go(), 60))
    assert received > 10
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1
    assert check_agree(videos[0]) > 10
