"""Command-line arguments and checks shared by the commands of every folder.

Everything here is cheap to import (no torch, no numpy, no pyglet): every command's parser is built
from it on each start, and its checks answer bad input before the heavy modules load.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path
from typing import Any

# --accel choices (runtime/accel/apply.py resolves them); kept here so parsers need no torch
ACCEL_CHOICES = ("auto", "none", "compile", "onnx", "tensorrt", "cudagraph")

# The bundled model's weight files (runtime/worlds/bundled_world.py loads them); the frame size it was trained at
BUNDLED_FILES = ("bundled_vae.safetensors", "bundled_world.safetensors")
BUNDLED_SIZE = (160, 96)
REFERENCE_SIZE = (256, 144)  # WorldConfig's default size: the reference world's when none is given

# the action string's letters (controls/action_string.py), for --help; tests/test_controls_action_string.py
# checks that it names every key the parser takes
ACTION_STRING_HELP = (
    'a SANA-WM action string such as "w-24,jw-12,none-8": comma-separated KEYS-FRAMES tokens, the letters of '
    "KEYS held together for FRAMES frames: w/s forward/back, a/d left/right, i/k pitch up/down, j/l yaw "
    "left/right; none holds still"
)

DEFAULT_WORLD_HELP = (
    f"registered world: bundled (the default when its weights are installed; {BUNDLED_SIZE[0]}x{BUNDLED_SIZE[1]}), "
    "reference (the GLSL ground truth), sana-wm (needs --checkpoint), matrix-game (needs --checkpoint)"
)


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` (e.g. 256x144) as (width, height): positive and even, as video needs."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x144, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive and even in both directions (video)")
    return w, h


def add_accel_argument(parser: Any, default: str | None = "auto", help_suffix: str = "") -> None:
    """The `--accel` option for play / serve / render / bench."""
    parser.add_argument(
        "--accel",
        choices=ACCEL_CHOICES,
        default=default,
        help="chunk-step backend: eager (none), torch.compile, ONNX Runtime (CPU), TensorRT or CUDA graphs "
        "(NVIDIA); auto picks what is installed and measured fastest for the device (ONNX Runtime on a CPU)"
        + (help_suffix or " (default: auto)"),
    )


def bundled_weights_folder() -> Path | None:
    """The folder the bundled model's weights ship in (beside runtime/worlds/bundled_world.py), found
    without importing the model (or torch); None when the package is not importable."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("worldwalk.runtime.worlds")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


def bundled_weights_installed() -> bool:
    """Whether the bundled model's weights are installed."""
    folder = bundled_weights_folder()
    return folder is not None and all((folder / name).is_file() for name in BUNDLED_FILES)


def choose_world(world: str | None, checkpoint: str | None) -> str:
    """The world a command runs: the one named; else SANA-WM when a checkpoint folder is given;
    else the default (the bundled model when its weights are installed, else the reference world)."""
    if world:
        return world
    if checkpoint:
        return "sana-wm"
    from worldwalk.runtime.world import available_worlds

    return "bundled" if "bundled" in available_worlds() and bundled_weights_installed() else "reference"


def world_problem(name: str, checkpoint: str | None) -> str | None:
    """What is wrong with running world `name` from `checkpoint`, or None; answered before any model loads."""
    from worldwalk.runtime.world import available_worlds

    worlds = available_worlds()
    if name not in worlds:
        names = ", ".join(sorted(worlds)) or "none"
        return (f"unknown world {name!r}; registered worlds: {names}. "
                "Reinstall the package (pip install -e .) if one you expect is missing.")
    if name == "sana-wm" and not checkpoint:
        return ("the sana-wm world needs a checkpoint folder: pass --checkpoint DIR (a local SANA-WM_streaming "
                "download with sana_dit/model.pt and ltx2_causal_vae/, or a diffusers transformer/ + vae/ folder)")
    if checkpoint and not Path(checkpoint).is_dir():
        what = "is a file, not a folder" if Path(checkpoint).exists() else "does not exist"
        return f"--checkpoint {checkpoint} {what}; pass the checkpoint folder (e.g. SANA-WM_streaming/)"
    if name == "sana-wm":  # the layouts runtime/sana_wm/checkpoint.py loads; its loader names finer faults
        root = Path(checkpoint)
        if not ((root / "sana_dit" / "model.pt").is_file() or (root / "transformer" / "config.json").is_file()):
            return (f"no SANA-WM checkpoint in {root}: expected {root / 'sana_dit' / 'model.pt'} (official "
                    f"SANA-WM_streaming layout, with ltx2_causal_vae/) or {root / 'transformer'}/config.json plus "
                    "safetensors (diffusers layout, with vae/)")
    return None


def display_problem() -> str | None:
    """Why a window cannot open here, or None. Asked of Xlib directly: importing pyglet's window module
    opens the display (and a GL context) on import, and costs seconds when the answer is no."""
    if sys.platform != "linux":
        return None
    name = os.environ.get("DISPLAY")
    if not name:
        return "DISPLAY is not set"
    try:
        xlib = ctypes.CDLL("libX11.so.6")
    except OSError:
        return None  # no Xlib to ask: let pyglet answer
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = xlib.XOpenDisplay(name.encode())
    if not handle:
        return f"cannot connect to the X display {name}"
    xlib.XCloseDisplay(handle)
    return None
