"""A recording whose last fragment the disk cuts short at close says so (it used to close as if whole:
FFmpeg's file output takes a short write for a full one). Real ENOSPC from a 32 KiB tmpfs in a
private mount namespace (root), as in test_serve_disk_full.py: with ever more frames, until the video
no longer fits, every recording either closes with the disk-full error or decodes every frame it
wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_serve_disk_full import _unavailable as _no_private_mounts

REPO = Path(__file__).resolve().parent.parent

# Runs inside the namespace, DISK mounted: record N frames (a moving bar, 160x96 at 16 fps), close, read back.
SCRIPT = """
import json, os, sys
import av, numpy as np
from worldwalk.stream.record.recorder import Recorder, RecorderConfig

disk, out = sys.argv[1], []
for n in range(300, 1000, 3):  # 160x96 of this picture: about 90 bytes a frame, 32 KiB at about 360 frames
    path = os.path.join(disk, "walk.mp4")
    rec = Recorder(path, RecorderConfig(block_when_full=True, write_log=False))
    rec.start({"fps": 16.0, "width": 160, "height": 96})
    for i in range(n):
        img = np.zeros((96, 160, 3), np.uint8)
        img[:, : (i * 7) % 160] = (200, 120, 40)
        rec.write(img)
    try:
        stats = rec.close()
        error, written = None, stats.frames_written
    except Exception as e:
        error, written = f"{type(e).__name__}: {e}", rec.frames_written
    decoded = 0
    try:
        with av.open(path) as c:
            for _ in c.decode(video=0):
                decoded += 1
    except av.error.FFmpegError:
        pass
    out.append({"n": n, "error": error, "written": written, "decoded": decoded})
    os.unlink(path)
    if error is not None and len([r for r in out if r["error"]]) >= 3:
        break
print(json.dumps(out))
"""


def test_a_video_cut_short_at_close_is_an_error_not_a_whole_recording(tmp_path):
    why = _no_private_mounts()
    if why:
        pytest.skip(why)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f'mount -t tmpfs -o size=32k tmpfs "{disk}" && exec "{sys.executable}" -c "$0" "{disk}"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, SCRIPT], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in runs:
        if r["error"] is None:  # closed as whole: then every frame is in the file
            assert r["decoded"] == r["written"] == r["n"], runs
        else:
            assert "No space left" in r["error"], runs
    assert runs[0]["error"] is None and runs[-1]["error"] is not None, runs  # the disk filled on the way
