"""worldwalk.runtime: the engine. The world seam, chunks and frames, the session that drives a world
chunk by chunk, the bounded frame queue and the pacer; `args` the arguments and checks every command
shares. The rooms above it, in layers (a room imports only those below): `sana_wm/` and `matrix_game/`
the models, `accel/` their backends, `worlds/` the reference and bundled worlds, `create_world` and the
world pool, `train/` training and eval, `bench/` benchmarks, `cli/` the command line."""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Loaded on first use, so `worldwalk --help` and the commands' argument checks do not pay for numpy.
_EXPORTS = {
    "Chunk": "chunk", "Frame": "chunk", "FrameQueue": "frame_queue", "FramePacer": "pacer",
    "Session": "session", "SessionConfig": "session", "ModelSpec": "world", "WorldConfig": "world",
    "WorldModel": "world", "ChunkTiming": "latency", "LatencySplit": "latency",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Chunk",
    "ChunkTiming",
    "Frame",
    "FramePacer",
    "FrameQueue",
    "LatencySplit",
    "ModelSpec",
    "Session",
    "SessionConfig",
    "WorldConfig",
    "WorldModel",
]
