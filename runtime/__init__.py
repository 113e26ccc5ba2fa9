"""worldwalk.runtime: the engine. The world seam, chunks and frames, the session that drives a world
chunk by chunk, the bounded frame queue and the pacer. The rooms below hold the rest: `sana_wm/` the
model, `worlds/` the reference and bundled worlds, `accel/` backends, `train/` training and eval,
`bench/` benchmarks, `cli/` the command line."""

from .chunk import Chunk, Frame
from .frame_queue import FrameQueue
from .pacer import FramePacer
from .session import Session, SessionConfig
from .world import ModelSpec, WorldConfig, WorldModel, create_world

__all__ = [
    "Chunk",
    "Frame",
    "FramePacer",
    "FrameQueue",
    "ModelSpec",
    "Session",
    "SessionConfig",
    "WorldConfig",
    "WorldModel",
    "create_world",
]
