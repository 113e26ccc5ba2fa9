"""The window on an action-steered world (the tiny random Matrix-Game world, under Xvfb): its frames are
never timewarped (T says why instead of turning it on), the help shows the mode's key map and the HUD
shows the actions sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_play_window import display  # noqa: F401 (a fixture)

SCRIPT = r"""
import json, time
from pyglet.window import key
from worldwalk.runtime.matrix_game.world import random_world
from worldwalk.runtime.session import Session
from worldwalk.viewer.window import PlayWindow, WindowConfig

world = random_world("tiny")
session = Session(world).start()
asked = []
def held_pose(*args, **kwargs):  # what the window reprojects a frame by
    asked.append(1)
    raise AssertionError("an action world's frame was reprojected")
session.held_pose = held_pose
win = PlayWindow(session, WindowConfig(size=(256, 144), vsync=False))
session.inputs.press("w")
deadline = time.monotonic() + 90
while time.monotonic() < deadline and not (win.frames_shown > 12 and world.actions_sent.startswith("forward")):
    win.window.dispatch_events()
    win._draw_once()
    time.sleep(0.01)
win.on_key_press(key.T, 0)  # asks for timewarp: refused
win._draw_once()
print(json.dumps({"timewarp": win.presenter.cfg.timewarp, "asked": len(asked), "shown": win.frames_shown,
                  "hud": win.hud.lines, "help": win.hud._help.text, "toast": win.hud._toast.text}))
session.close()
win.window.close()
"""


@pytest.mark.gl
@pytest.mark.timeout(150)
def test_an_action_world_is_never_timewarped_and_its_keys_and_actions_show(display):  # noqa: F811
    env = {**os.environ, **display, "OMP_NUM_THREADS": "1", "WORLDWALK_TORCH_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shown"] > 12 and out["asked"] == 0 and out["timewarp"] is False
    assert "timewarp off (action world)" in "\n".join(out["hud"])
    assert any(line.startswith("sent forward") for line in out["hud"]), out["hud"]
    assert "forward: W" in out["help"] and "look: mouse" in out["help"]
    assert "no timewarp for this world" in (out["toast"] or "")
