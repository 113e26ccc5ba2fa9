"""a full disk never takes the service down. Real ENOSPC from tiny tmpfs mounts
in a private mount namespace (`unshare -m`, root): with the record folder full, players are
still served and told "not recording: disk full"; a disk that fills during a recording does not
end the walk; sockets that never send an offer leave no files; every file opened is closed
(the process's descriptors come back to their count); no traceback is logged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.gl  # the servers here build reference worlds (EGL)

REPO = Path(__file__).resolve().parent.parent


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for `unshare -m` and mount"
    if shutil.which("unshare") is None:
        return "`unshare` is not installed"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"`unshare -m` failed: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def disk_full():
    why = _unavailable()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="worldwalk-disk-"))
    full, filling, plain = root / "full", root / "filling", root / "plain"
    for d in (full, filling, plain):
        d.mkdir()
    script = (f'mount -t tmpfs -o size=1m tmpfs "{full}" && mount -t tmpfs -o size=24k tmpfs "{filling}" '
              f'&& exec "{sys.executable}" -m tests.disk_full_harness "{full}" "{filling}" "{plain}"')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLDWALK_TORCH_THREADS": "1"}
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                              timeout=150, cwd=REPO, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_full_record_folder_refuses_no_player(disk_full):
    full = disk_full["full"]
    for p in full["players"]:
        assert "error" not in p, p["error"]
        assert p["frames"] > 10, p
        assert p["recording"][-1] == "not recording: disk full", p["recording"]


def test_a_disk_filling_up_mid_walk_does_not_end_it(disk_full):
    (p,) = disk_full["filling"]["players"]
    assert "error" not in p, p["error"]
    assert "recording" in p["recording"] and p["recording"][-1] == "not recording: disk full", p["recording"]
    assert p["frames"] > 60, p  # six seconds of frames: the walk went on after the disk filled
    assert any(name.endswith(".mp4") and size > 0 for name, size in disk_full["filling"]["files"].items())


def test_recordings_start_with_the_first_frame_and_close_every_file(disk_full):
    for name in ("full", "filling", "plain"):
        r = disk_full[name]
        assert r["no_offer_files"] == {}, f"{name}: sockets that sent no offer left {r['no_offer_files']}"
        assert r["fds_after"] <= r["fds_before"], f"{name}: {r['fds_after'] - r['fds_before']} descriptors leaked"
    plain = disk_full["plain"]["files"]
    assert sorted(Path(n).suffix for n in plain) == [".jsonl", ".mp4"] and all(plain.values()), plain
    assert not disk_full["tracebacks"], disk_full["tracebacks"]
    disk_lines = [line for line in disk_full["log"]
                  if "disk full" in line and line.startswith("worldwalk.stream.webrtc.server")]
    # each server says it once (two servers met a full disk; the first had two players)
    assert len(disk_lines) == 2, disk_full["log"]
