"""Display-side figures: frames per second over a sliding window, and input-to-frame latency.

Latency is measured the way a player feels it: from the key press that asks for motion to the
first presented frame whose chunk was planned with that press (`Frame.input_time` is the
monotonic time of the newest input the chunk was made with, so the first frame with
`input_time >= press time` is the first that can reflect it).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import fields
from typing import Any

from worldwalk.runtime.latency import LatencySplit


class RateMeter:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return float(len(self._times)) / self.window
        span = max(now - self._times[0], 1e-9)
        return len(self._times) / max(span, self.window * 0.5)


class LatencyMeter:
    """Key press -> first presented frame that reflects it, in seconds, and step by step when
    the frame's chunk timing is known."""

    def __init__(self, keep: int = 256) -> None:
        self.pending: float | None = None  # time of the oldest press not yet answered
        self.samples: deque[float] = deque(maxlen=keep)
        self.splits: deque[LatencySplit] = deque(maxlen=keep)

    def press(self, now: float) -> None:
        if self.pending is None:
            self.pending = now

    def cancel(self) -> None:
        """A reset or rewind: the press will never be answered by the old timeline."""
        self.pending = None

    def presented(self, input_time: float | None, now: float, timing: Any = None,
                  taken: float | None = None) -> float | None:
        """A frame was presented at `now` (taken for the screen at `taken`; its chunk's
        `ChunkTiming` is `timing`); returns the latency it completes, if any."""
        if self.pending is None or input_time is None or input_time < self.pending:
            return None
        latency = now - self.pending
        if timing is not None:
            self.splits.append(LatencySplit.of(self.pending, timing, now if taken is None else taken, now))
        self.pending = None
        self.samples.append(latency)
        return latency

    def split_median(self) -> LatencySplit | None:
        return LatencySplit.median(list(self.splits))

    @property
    def last(self) -> float | None:
        return self.samples[-1] if self.samples else None

    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def summary(self) -> dict[str, float | int | None]:
        s = sorted(self.samples)
        return {
            "n": len(s),
            "median_ms": 1000 * statistics.median(s) if s else None,
            "mean_ms": 1000 * statistics.fmean(s) if s else None,
            "min_ms": 1000 * s[0] if s else None,
            "max_ms": 1000 * s[-1] if s else None,
            "median_split_ms": None if (m := self.split_median()) is None
            else {f.name: 1000 * getattr(m, f.name) for f in fields(m)},
        }
