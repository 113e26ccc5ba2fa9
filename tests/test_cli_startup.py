"""Cheap commands stay cheap: `--version`, `--help` and bad input are answered before torch, pyglet,
aiortc or PyAV load, and help text states the defaults the commands really use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "pyglet", "aiortc", "av", "onnxruntime")

# Runs the CLI in a fresh interpreter and reports the exit code and which heavy modules it loaded.
PROBE = """
import json, sys
from worldwalk.runtime.cli.main import main
try:
    rc = main(json.loads(sys.argv[1]))
except SystemExit as e:
    rc = e.code
sys.stdout.flush()
print("\\nPROBE " + json.dumps({"rc": rc, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def probe(argv: list[str]) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                         env=env, timeout=60)
    line = [s for s in out.stdout.splitlines() if s.startswith("PROBE ")][-1]
    return json.loads(line[6:]), out.stdout + out.stderr


@pytest.mark.parametrize("argv, rc, says", [
    (["--version"], 0, "worldwalk "),
    (["--help"], 0, "usage: worldwalk"),
    (["play", "--help"], 0, "usage: worldwalk play"),
    (["render", "--help"], 0, "usage: worldwalk render"),
    (["serve", "--help"], 0, "usage: worldwalk serve"),
    (["play"], 2, "no display to open a window on"),
    (["play", "--world", "sana-wm"], 2, "needs a checkpoint folder"),
    (["play", "--checkpoint", "/no/such/folder"], 2, "does not exist"),
    (["play", "--world", "nowhere"], 2, "unknown world 'nowhere'"),
    (["render", "--actions", "w-4", "--world", "sana-wm"], 2, "needs a checkpoint folder"),
    (["render", "--log", "/no/such/log.jsonl"], 2, "log.jsonl does not exist"),
    (["serve", "--world", "sana-wm"], 2, "needs a checkpoint folder"),
])
def test_answers_before_heavy_imports(argv: list[str], rc: int, says: str) -> None:
    result, text = probe(argv)
    assert result["rc"] == rc, text
    assert says in text, text
    assert result["heavy"] == [], f"{argv} loaded {result['heavy']} before answering"


def test_unknown_option_prints_the_commands_usage() -> None:
    result, text = probe(["play", "--wrold", "bundled"])
    assert result["rc"] == 2
    assert "usage: worldwalk play" in text and "unrecognized arguments: --wrold" in text, text


def test_help_states_the_real_defaults() -> None:
    from worldwalk.runtime.args import BUNDLED_SIZE, REFERENCE_SIZE, bundled_weights_installed, choose_world
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import create_world

    assert choose_world(None, None) == ("bundled" if bundled_weights_installed() else "reference")
    assert (WorldConfig(name="reference").width, WorldConfig(name="reference").height) == REFERENCE_SIZE
    if bundled_weights_installed():
        world = create_world(WorldConfig(name="bundled", accel="none", width=REFERENCE_SIZE[0],
                                         height=REFERENCE_SIZE[1]))
        try:
            assert (world.spec.width, world.spec.height) == BUNDLED_SIZE  # keeps its own size
        finally:
            world.close()
    _, text = probe(["render", "--help"])
    flat = " ".join(text.split())
    assert "else bundled when its weights are installed" in flat
    assert f"{BUNDLED_SIZE[0]}x{BUNDLED_SIZE[1]} for bundled" in flat
    assert f"{REFERENCE_SIZE[0]}x{REFERENCE_SIZE[1]} for reference" in flat
    assert "256x144)" not in flat.split("--size")[1].split("--device")[0].replace("for reference)", "")
