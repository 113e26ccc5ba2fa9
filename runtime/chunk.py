"""`Frame` and `Chunk`: what a world hands downstream.

Everything after `WorldModel.generate_chunk` sees only these, so the window, the WebRTC track
and the recorder cannot tell one world from another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """One chunk of video as a world generated it."""

    frames: np.ndarray  # (F, H, W, 3) uint8 RGB, top row first
    poses: np.ndarray  # (F, 4, 4) float64 camera-to-world, OpenCV camera (x right, y down, z fwd)
    intrinsics: np.ndarray  # (F, 3, 3) pixel intrinsics of the frames as generated
    index: int  # chunk number within the session, 0 is the first
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: denoise, decode, ...
    # what a world steered by actions (ModelSpec.steering == "actions") was given per frame: "keyboard"
    # (F, K) and "mouse" (F, 2) or None; None for camera worlds. The session log keeps it for the replay.
    actions: dict[str, np.ndarray | None] | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"Chunk.frames must be (F, H, W, 3) uint8, got {f.shape} {f.dtype}")
        if self.poses.shape != (f.shape[0], 4, 4):
            raise ValueError(f"Chunk.poses must be ({f.shape[0]}, 4, 4), got {self.poses.shape}")
        if self.intrinsics.shape != (f.shape[0], 3, 3):
            raise ValueError(f"Chunk.intrinsics must be ({f.shape[0]}, 3, 3), got {self.intrinsics.shape}")

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class Frame:
    """One video frame on its way to the sinks, stamped by the session."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, top row first
    pose: np.ndarray  # (4, 4) camera-to-world the frame was generated at
    intrinsics: np.ndarray  # (3, 3)
    index: int  # frame number within the session (continues across rewinds)
    pts: float  # presentation time in seconds of content time (index / fps)
    chunk_index: int
    generation: int  # session generation; bumped by reset/rewind so stale frames can be dropped
    created: float  # time.monotonic() when the session put it in the queue
    input_time: float | None = None  # monotonic time of the newest input the chunk was made with
