"""A world that takes a controlled time per chunk: the engine's test double.

Each frame's pixels encode (chunk index, frame-in-chunk, generation-independent counter) so the
tests can check order without any renderer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.world import ModelSpec


class TimedWorld:
    def __init__(self, chunk_seconds: float = 0.01, frames_per_chunk: int = 4, first_chunk_frames: int = 5,
                 width: int = 8, height: int = 6, fps: float = 100.0, clock: Any = None) -> None:
        """A chunk takes `chunk_seconds` of real time (a sleep), or of `clock` (a ManualClock from
        tests/builders.py, moved on by that much) when one is given."""
        self.spec = ModelSpec(name="timed", fps=fps, frames_per_chunk=frames_per_chunk,
                              first_chunk_frames=first_chunk_frames, width=width, height=height,
                              is_model=False, label="timed test world")
        self.chunk_seconds = chunk_seconds
        self.clock = clock
        self.chunk = 0
        self.resets = 0
        self.closed = False
        self.threads: set[str] = set()
        self.calls: list[np.ndarray] = []

    def reset(self, first_frame, prompt, seed) -> None:
        self.chunk = 0
        self.resets += 1

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        self.threads.add(threading.current_thread().name)
        if self.clock is not None:
            self.clock.t += self.chunk_seconds
        else:
            time.sleep(self.chunk_seconds)
        n = poses.shape[0]
        frames = np.zeros((n, self.spec.height, self.spec.width, 3), np.uint8)
        frames[:, 0, 0, 0] = self.chunk % 256
        frames[:, 0, 1, 0] = np.arange(n)
        self.calls.append(poses.copy())
        chunk = Chunk(frames=frames, poses=poses.copy(), intrinsics=intrinsics.copy(), index=self.chunk)
        self.chunk += 1
        return chunk

    def snapshot(self) -> object:
        return self.chunk

    def restore(self, snapshot: object) -> None:
        self.chunk = int(snapshot)  # type: ignore[call-overload]

    def close(self) -> None:
        self.closed = True


class GatedWorld(TimedWorld):
    """A `TimedWorld` that makes a chunk only when the test lets it through (`gate.release()`). Each time
    it is asked for one it releases `asked` and sets `asking` (cleared once let through)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**{"chunk_seconds": 0.0, **kw})
        self.gate = threading.Semaphore(0)
        self.asked = threading.Semaphore(0)
        self.asking = threading.Event()

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        self.asking.set()
        self.asked.release()
        assert self.gate.acquire(timeout=10), "the test never let the chunk through"
        self.asking.clear()
        return super().generate_chunk(poses, intrinsics)
