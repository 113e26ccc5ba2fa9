"""`worldwalk play`'s window on a 1280x720 screen (Xvfb): the frame scaled up to a good share of the
screen, centred, and the HUD saying when GL is a software renderer (Mesa's llvmpipe here)."""

from __future__ import annotations

import json
import subprocess
import sys

from .test_play_window import display, pytestmark  # noqa: F401 (a fixture; the same tool check)


def test_the_window_fits_the_screen_centred_and_names_software_gl(display):  # noqa: F811
    cmd = [sys.executable, "-m", "worldwalk.runtime.cli", "play", "--world", "reference", "--size", "160x96",
           "--seconds", "3"]
    proc = subprocess.run(cmd, env=display, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    x, y, w, h = figures["window"]
    assert abs(w / h - 160 / 96) < 0.02, figures["window"]  # the frame's aspect
    share = 0.6 if figures["software_gl"] else 0.75  # of the screen, in the tighter direction
    assert abs(max(w / 1280, h / 720) - share) < 0.02, figures["window"]
    assert abs(x + w / 2 - 640) <= 2 and abs(y + h / 2 - 360) <= 2, figures["window"]  # centred
    if figures["software_gl"]:
        assert any("software" in line and "GL" in line for line in figures["hud"]), figures["hud"]
    else:
        assert not any("software" in line for line in figures["hud"]), figures["hud"]
