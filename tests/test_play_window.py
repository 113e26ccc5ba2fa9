"""`worldwalk play` in a real window under Xvfb, driven with xdotool like a player would.

Each test starts its own `worldwalk play --world reference` process on a private X display,
clicks into the window, holds keys, takes screenshots (the window's own F12 PNGs, HUD included,
and `import` from ImageMagick) and reads the JSON line the command prints on exit.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TOOLS = ("Xvfb", "xdotool", "import")
needs_x = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs Xvfb, xdotool and ImageMagick's import (apt-get install xvfb xdotool imagemagick)",
)
pytestmark = [pytest.mark.gl, needs_x]


@pytest.fixture
def display():
    """A private Xvfb display; yields the environment for processes that should use it. The server picks a
    free display number itself (-displayfd), so Xvfbs started at the same time never share one."""
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    number = proc.stdout.readline().decode().strip() if ready else ""
    if not number.isdigit():
        proc.kill()
        pytest.skip("Xvfb did not start")
    env = {**os.environ, "DISPLAY": f":{number}"}
    try:
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def xdo(env, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=10).stdout


def play(env, tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "worldwalk.runtime.cli", "play", "--world", "reference",
           "--window", "512x288", "--screenshot-dir", str(tmp_path), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_window(env, proc: subprocess.Popen, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = xdo(env, "search", "--onlyvisible", "--name", "worldwalk").split()
        if ids:
            return ids[0]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"no worldwalk window appeared\nstdout:\n{out}\nstderr:\n{err}")


def grab(env, wid: str, path: Path) -> np.ndarray:
    """The window's pixels as the X server shows them: (H, W, 3) uint8."""
    from PIL import Image

    subprocess.run(["import", "-window", wid, f"png:{path}"], env=env, check=True, timeout=10)
    return np.asarray(Image.open(path).convert("RGB"))


def wait_picture(env, wid: str, tmp_path: Path, timeout: float = 15.0) -> np.ndarray:
    """Wait until the first chunk is on screen (the bottom of the picture is no longer black)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shot = grab(env, wid, tmp_path / "waiting.png")
        if shot[-60:].mean() > 40:  # the ground; the "generating" message sits in the middle
            return shot
        time.sleep(0.2)
    pytest.fail("the window never showed a picture")


def finish(env, wid: str, proc: subprocess.Popen) -> tuple[dict, str, str]:
    """Quit like a player (Esc releases the mouse, Esc twice quits); returns (figures, out, err)."""
    for _ in range(3):
        xdo(env, "key", "--clearmodifiers", "Escape")
        time.sleep(0.15)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"play did not quit on Esc, Esc\nstderr:\n{err}")
    assert proc.returncode == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    return figures, out, err


def load_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.mark.timeout(60)
def test_holding_w_walks_forward_and_the_hud_shows(display, tmp_path):
    env = display
    proc = play(env, tmp_path, "--seconds", "40")
    wid = wait_window(env, proc)
    before = wait_picture(env, wid, tmp_path)
    assert before.shape[:2] == (288, 512)

    xdo(env, "mousemove", "--window", wid, "256", "144", "click", "1")  # captures the mouse
    time.sleep(0.3)
    xdo(env, "keydown", "w")
    time.sleep(2.5)
    xdo(env, "keyup", "w")
    # Captured mouse: look right. (pyglet's first motion after capturing reads as zero: a nudge.)
    xdo(env, "mousemove_relative", "--", "1", "0")
    time.sleep(0.1)
    xdo(env, "mousemove_relative", "--", "100", "0")
    time.sleep(1.0)  # the chunks planned while W was held reach the screen
    after = grab(env, wid, tmp_path / "after.png")
    # The picture changed where the HUD is not (the lower half: ground coming closer).
    lower = slice(150, 288)
    change = np.abs(after[lower].astype(int) - before[lower].astype(int)).mean()
    assert change > 4.0, f"walking forward barely changed the picture (mean abs diff {change:.2f})"

    # HUD: pause so the picture holds still, then the window's own screenshots with HUD on and off.
    xdo(env, "key", "p")
    time.sleep(2.8)  # the "paused" toast fades
    xdo(env, "key", "F12")
    time.sleep(0.5)
    xdo(env, "key", "F2", "F12")  # F2 hides the HUD, as it hides the page's stats
    time.sleep(0.5)
    figures, out, err = finish(env, wid, proc)
    shots = sorted(tmp_path.glob("worldwalk-*.png"))
    assert len(shots) == 2, (out, err)
    hud_on, hud_off = load_png(shots[0]), load_png(shots[1])
    assert hud_on.mean() > 30, "the screenshot is black"
    diff = np.abs(hud_on - hud_off).max(axis=2)
    panel = diff[:110, :300]  # the stats panel, top-left
    assert (panel > 60).mean() > 0.03, "no HUD text in the top-left of the screenshot"
    middle = diff[120:230, :]  # picture only (the toast lives at the bottom)
    assert (middle > 8).mean() < 0.01, "toggling the HUD changed the picture itself"
    bright_text = ((hud_on[:110, :300] > 200).all(axis=2) & (hud_off[:110, :300] < 200).any(axis=2)).sum()
    assert bright_text > 200, "the HUD text is not bright over the panel"

    # The pose moved forward (+z is forward at the start) and frames kept coming.
    x, y, z = figures["position"]
    assert z > 1.0 and abs(x) < 0.2, figures
    # 100 pixels of captured mouse motion to the right turned the camera right (0.15 deg/pixel).
    assert 5.0 < figures["yaw_pitch_roll_deg"][0] < 30.0, figures
    assert figures["frames_shown"] > 20, figures
    assert figures["latency"]["n"] >= 1, figures


@pytest.mark.timeout(40)
def test_no_gamepad_says_so_once(display, tmp_path):
    env = display
    proc = play(env, tmp_path, "--seconds", "4")
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"play --seconds 4 did not end\nstderr:\n{err}")
    assert proc.returncode == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    if figures["gamepad"] is not None:
        pytest.skip(f"a gamepad is connected here ({figures['gamepad']})")
    text = out + err
    assert text.count("no gamepad found") == 1, text
    if not Path("/dev/input").exists():
        assert "/dev/input" in err
    assert figures["frames_shown"] > 10, figures
    assert figures["error"] is None


@pytest.mark.timeout(60)
def test_a_short_tap_moves_the_view(display, tmp_path):
    """A 0.1 s tap of the turn key, shorter than planning a chunk could once catch: the view turns
    by what 0.1 s at 90 degrees/s is worth (xdotool's own timing adds a little), not nothing and
    not a whole chunk's worth."""
    env = display
    proc = play(env, tmp_path, "--seconds", "30", "--no-hud")
    wid = wait_window(env, proc)
    wait_picture(env, wid, tmp_path)
    xdo(env, "mousemove", "--window", wid, "256", "144", "click", "1")  # focus (captures the mouse)
    time.sleep(0.5)
    before = grab(env, wid, tmp_path / "before.png")
    xdo(env, "keydown", "e", "sleep", "0.1", "keyup", "e")
    time.sleep(1.0)
    after = grab(env, wid, tmp_path / "after.png")
    change = np.abs(after.astype(int) - before.astype(int)).mean()
    assert change > 4.0, f"a short tap did not move the view (mean abs diff {change:.2f})"
    figures, _, _ = finish(env, wid, proc)
    yaw = figures["yaw_pitch_roll_deg"][0]
    assert 6.0 < yaw < 20.0, figures  # 9 degrees for 0.1 s
