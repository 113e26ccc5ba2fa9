"""The model seam: `WorldModel`, `ModelSpec`, and the registry of worlds.

A world is anything that turns camera poses into chunks of frames. Worlds register under the
`worldwalk.worlds` entry-point group (a factory `create(cfg: WorldConfig) -> WorldModel`), so a
world model from another package plugs in without touching this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .chunk import Chunk


@dataclass(frozen=True)
class ModelSpec:
    """What downstream code needs to know about a world's output."""

    name: str
    fps: float  # content frame rate
    frames_per_chunk: int
    first_chunk_frames: int  # the first chunk may differ (SANA-WM: the first image plus 3 latents)
    width: int
    height: int
    device: str = "cpu"
    dtype: str = "float32"
    is_model: bool = True  # False for renderers of ground truth (the reference world)
    label: str = ""  # what the HUD and logs call it

    def chunk_frames(self, chunk_index: int) -> int:
        return self.first_chunk_frames if chunk_index == 0 else self.frames_per_chunk


@runtime_checkable
class WorldModel(Protocol):
    spec: ModelSpec

    def reset(self, first_frame: np.ndarray | None, prompt: str | None, seed: int) -> None: ...

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        """poses (F, 4, 4) camera-to-world, intrinsics (F, 3, 3); F = spec.chunk_frames(k)."""
        ...

    def snapshot(self) -> object: ...

    def restore(self, snapshot: object) -> None: ...

    def close(self) -> None: ...


@dataclass
class WorldConfig:
    """How to build a world: its registered name plus options each world reads as it likes."""

    name: str = "reference"
    width: int = 256
    height: int = 144
    fps: float = 16.0
    seed: int = 0
    checkpoint: str | None = None
    device: str = "cpu"
    accel: str = "none"  # chunk-step backend: none, compile, onnx, tensorrt, cudagraph, auto (runtime/accel.py)
    options: dict[str, Any] = field(default_factory=dict)


class UnknownWorldError(LookupError):
    pass


def available_worlds() -> dict[str, Any]:
    """Registered world factories by name (entry points, loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group="worldwalk.worlds")}


def create_world(cfg: WorldConfig) -> WorldModel:
    worlds = available_worlds()
    if cfg.name not in worlds:
        names = ", ".join(sorted(worlds)) or "none"
        raise UnknownWorldError(
            f"unknown world {cfg.name!r}; registered worlds: {names}. "
            "Reinstall the package (pip install -e .) if one you expect is missing."
        )
    factory = worlds[cfg.name].load()
    world = factory(cfg)
    if cfg.accel != "none":
        from worldwalk.runtime.accel.apply import apply_accel, warm_up

        try:
            chosen = apply_accel(world, cfg.accel)
            if chosen != "none":
                warm_up(world)  # build the graphs now, not as a stall at the second chunk of play
        except BaseException:
            world.close()
            raise
        world.accel = chosen  # what ran: session logs record it
    return world


def default_world_name() -> str:
    """The world `play`, `serve` and `render` use when none is named: the bundled model when its
    weights are installed, else the reference world."""
    worlds = available_worlds()
    if "bundled" in worlds:
        try:
            module = worlds["bundled"].load().__module__
            import importlib

            if getattr(importlib.import_module(module), "weights_available", lambda: False)():
                return "bundled"
        except Exception:
            pass
    return "reference"
