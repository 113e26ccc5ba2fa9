"""A real play window (on the caller's X display) around the tiny SANA-WM run with `--accel auto` and its
softmax in bf16, which ONNX Runtime refuses: the chunk step is set up on onnx and falls back to eager at
chunk 1, while the window runs (see tests/test_play_hud.py).

    python -m tests.play_hud_harness EXPORT_DIR SECONDS

Prints one JSON object (last line): the HUD's stats lines each time they changed, and the window's exit
figures. The window quits once the fallback has been on screen for a few frames (or after SECONDS).
"""

from __future__ import annotations

import json
import sys
import time

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.accel.apply import apply_accel
from worldwalk.runtime.session import Session

from .builders import tiny_world


def main(export_dir: str, seconds: float) -> dict:
    world = tiny_world(softmax_bf16=True)
    chosen = apply_accel(world, "auto", export_dir)  # no warm-up: chunk 1 builds (and fails) during play
    session = Session(world, integrator=PoseIntegrator())

    import pyglet

    from worldwalk.viewer.window import PlayWindow, WindowConfig

    window = PlayWindow(session, WindowConfig(size=(256, 192), seconds=seconds), title="worldwalk: tiny")
    seen: list[list[str]] = []
    fell_back: list[float] = []

    def watch(dt: float) -> None:
        lines = window.hud.lines
        if lines and (not seen or seen[-1] != lines):
            seen.append(lines)
        if any("failed" in line for line in lines):
            fell_back.append(time.monotonic())
            if len(fell_back) > 5:  # shown for a few ticks: enough
                window.on_close()

    pyglet.clock.schedule_interval(watch, 0.05)
    session.start()
    try:
        figures = window.run()
    finally:
        session.close()
    return {"chosen": chosen, "seen": seen, "figures": figures}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], float(sys.argv[2])), default=str))
