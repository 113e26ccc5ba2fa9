"""What `worldwalk play`'s HUD says that the log and the page already said (the
failure standard): which backend each accelerated step runs on, a fallback to eager the moment it
happens, and a recording that stopped (a full disk), with what was recorded kept. Real windows under
Xvfb (see test_play_window.py); the full disk is a tiny tmpfs in a private mount namespace (root), as
in test_serve_disk_full.py. A bad --record path is refused before anything slow starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_play_window import display, needs_x  # noqa: F401 (a fixture)
from .test_serve_disk_full import _unavailable as _no_private_mounts

REPO = Path(__file__).resolve().parent.parent
ENV = {"OMP_NUM_THREADS": "1", "WORLDWALK_TORCH_THREADS": "1"}


@pytest.mark.parametrize("where", ["a file's child", "a folder"])
def test_a_bad_record_path_is_refused_before_anything_slow(tmp_path, where):
    (tmp_path / "notes.txt").write_text("not a folder")
    target = tmp_path / "notes.txt" / "walk.mp4" if where == "a file's child" else tmp_path
    cmd = [sys.executable, "-m", "worldwalk.runtime.cli", "play", "--world", "reference", "--record", str(target)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    expected = "is not a folder" if where == "a file's child" else "is a folder; name a video file in it"
    assert f"--record {target}" in proc.stderr and expected in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 20  # answered before the world (and torch) load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing made


@pytest.mark.gl
@needs_x
@pytest.mark.timeout(120)
def test_the_hud_says_which_backend_each_step_runs_on_and_shows_a_fallback(display, tmp_path):  # noqa: F811
    # The tiny SANA-WM with a bf16 softmax under `auto`: set up on ONNX Runtime, which refuses bf16 when
    # chunk 1 builds its graph; the chunk step goes on eagerly, the decoder stays on onnx.
    cmd = [sys.executable, "-m", "tests.play_hud_harness", str(tmp_path), "30"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, cwd=REPO, env={**display, **ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["chosen"] == "onnx"
    seen = [[line for line in lines if line.startswith("chunk:")] for lines in out["seen"]]
    assert seen[0] == ["chunk: onnx · decode: onnx"], out["seen"][0]  # before chunk 1 is made
    assert seen[-1] == ["chunk: eager (onnx failed) · decode: onnx"], out["seen"][-1]  # once it fell back
    figures = out["figures"]
    assert figures["backends"] == {"chunk": "eager (onnx failed)", "decode": "onnx"}
    assert "chunk: eager (onnx failed) · decode: onnx" in figures["hud"]
    assert figures["frames_shown"] > 0 and figures["error"] is None, figures


@pytest.mark.gl
@needs_x
@pytest.mark.timeout(90)
def test_a_disk_filling_up_during_play_shows_in_the_hud_and_keeps_the_recording(display, tmp_path):  # noqa: F811
    why = _no_private_mounts()
    if why:
        pytest.skip(why)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    # 32 KiB: a few seconds of the reference world's 160x96 video fill it
    play = (f'"{sys.executable}" -m worldwalk.runtime.cli play --world reference --size 160x96 --window 320x192 '
            f'--record "{disk}/walk.mp4" --seconds 6')
    script = f'mount -t tmpfs -o size=32k tmpfs "{disk}" && {{ {play}; rc=$?; cp -a "{disk}/." "{kept}/"; exit $rc; }}'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=80,
                          cwd=REPO, env={**display, **ENV})
    assert proc.returncode == 1, proc.stderr[-3000:]  # the walk ended well; the recording did not
    assert "Traceback" not in proc.stderr, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["recording_error"] == "not recording: disk full", figures
    assert "not recording: disk full" in figures["hud"], figures["hud"]  # on screen, for good
    assert figures["frames_shown"] > 60 and figures["error"] is None, figures  # the walk went on
    assert "not recording: disk full" in proc.stderr and "keeps what was recorded" in proc.stderr, proc.stderr

    import av

    frames = 0
    with av.open(str(kept / "walk.mp4")) as c:  # fragmented MP4: plays up to its last whole fragment
        try:
            for _ in c.decode(video=0):
                frames += 1
        except av.error.InvalidDataError:  # the fragment the disk cut short
            pass
    assert frames >= 16, frames  # at least the first second
    header = json.loads((kept / "walk.jsonl").read_text().splitlines()[0])
    assert header["type"] == "header" and header["world"] == "reference"
