"""`FrameQueue`: the bounded hand-off between the model thread and the sinks.

The model thread puts frames; sinks take them. The queue never grows past its capacity: with
the "block" policy the producer waits (back-pressure, so the model never runs far ahead of what
is shown), with "drop_oldest" the oldest frame gives way. Every frame carries the session's
generation; `flush(generation)` drops everything older at once, so a reset is visible on the
next frame a sink takes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .chunk import Frame

Policy = Literal["block", "drop_oldest"]


class QueueClosed(Exception):
    """Raised to a blocked producer when the queue closes."""


@dataclass
class FrameQueueStats:
    put: int = 0
    taken: int = 0
    dropped_full: int = 0  # drop_oldest evictions
    dropped_stale: int = 0  # frames of an older generation


class FrameQueue:
    def __init__(self, capacity: int, policy: Policy = "block", clock: Callable[[], float] = time.monotonic) -> None:
        """`clock` stamps `last_taken_at` (tests give a clock of their own); waits are always in real time."""
        if capacity < 1:
            raise ValueError(f"FrameQueue capacity must be at least 1, got {capacity}")
        if policy not in ("block", "drop_oldest"):
            raise ValueError(f"FrameQueue policy must be 'block' or 'drop_oldest', got {policy!r}")
        self.capacity = capacity
        self.policy: Policy = policy
        self.stats = FrameQueueStats()
        self._frames: deque[Frame] = deque()
        self._generation = 0
        self._closed = False
        self._cond = threading.Condition()
        self.clock = clock
        self.last_taken: Frame | None = None  # what a sink took last: the frame on screen
        self.last_taken_at = 0.0  # clock() when it was taken

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    @property
    def generation(self) -> int:
        return self._generation

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Add a frame. Returns False if it was stale (older generation) and so discarded.

        With "block", waits for room; raises `QueueClosed` if the queue closes meanwhile and
        `TimeoutError` when `timeout` passes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise QueueClosed("frame queue closed")
                if frame.generation < self._generation:
                    self.stats.dropped_stale += 1
                    return False
                if len(self._frames) < self.capacity:
                    break
                if self.policy == "drop_oldest":
                    self._frames.popleft()
                    self.stats.dropped_full += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("frame queue stayed full")
                self._cond.wait(remaining)
            self._frames.append(frame)
            self.stats.put += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = 0.0) -> Frame | None:
        """Take the oldest current frame; None if none arrives within `timeout` (0: don't wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._frames:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._frames.popleft()
            self.last_taken = frame
            self.last_taken_at = self.clock()
            self.stats.taken += 1
            self._cond.notify_all()
            return frame

    def peek(self) -> Frame | None:
        with self._cond:
            return self._frames[0] if self._frames else None

    def flush(self, generation: int) -> int:
        """Enter `generation`: drop every queued frame of an older one. Returns how many."""
        with self._cond:
            self._generation = max(self._generation, generation)
            before = len(self._frames)
            self._frames = deque(f for f in self._frames if f.generation >= self._generation)
            dropped = before - len(self._frames)
            self.stats.dropped_stale += dropped
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._frames.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
