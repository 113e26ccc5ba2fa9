"""Stage timings of a chunk that stay honest on a GPU and add no synchronisation to the chunk loop.

On CUDA the host returns from a forward long before the GPU finishes it, so host clocks time the
queueing, not the work. `Clock.now()` records a CUDA event on the current stream there (a float
from `perf_counter` on the CPU); `Clock.between(a, b)` keeps the pair, and `resolve(timings)` turns
pairs into seconds once the chunk's result is taken (`PendingChunk.result`, which waits for the
chunk anyway), so timing never stalls the pipeline.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()

    def now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    @staticmethod
    def between(start: Any, end: Any) -> Any:
        """Seconds from `start` to `end` (floats), or the pair of events to `resolve` later."""
        return end - start if isinstance(start, float) else (start, end)


def resolve(timings: dict[str, Any]) -> dict[str, Any]:
    """Replace event pairs by the seconds between them (waits for each pair's end event only)."""
    for name, value in list(timings.items()):
        if isinstance(value, tuple):
            start, end = value
            end.synchronize()
            timings[name] = start.elapsed_time(end) / 1000.0
    return timings
