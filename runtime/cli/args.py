"""Command-line argument types shared by the commands of every folder."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` (e.g. 256x144) as (width, height): positive and even, as video needs."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x144, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive and even in both directions (video)")
    return w, h


def choose_world(world: str | None, checkpoint: str | None) -> str:
    """The world a command runs: the one named; else SANA-WM when a checkpoint folder is given;
    else the default (the bundled model when its weights are installed, else the reference world)."""
    from worldwalk.runtime.world import default_world_name

    if world:
        return world
    if checkpoint:
        return "sana-wm"
    return default_world_name()
