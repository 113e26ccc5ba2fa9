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
