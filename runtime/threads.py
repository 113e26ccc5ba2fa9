"""How many CPU threads torch may use for a world.

On a small machine the world shares the cores with the GL renderer (llvmpipe runs on the CPU),
the window or the WebRTC encoder and the recorder. Torch's intra-op threads wait for each other
at every operator, so one of them losing its core to another thread stalls them all: on a busy
2-core box two torch threads ran a small model about 50x slower than one. The default therefore
leaves one core to the rest of the pipeline.
"""

from __future__ import annotations

import os

import torch


def default_torch_threads() -> int:
    """`WORLDWALK_TORCH_THREADS` if set, else the cores less one (at least one)."""
    env = os.environ.get("WORLDWALK_TORCH_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"WORLDWALK_TORCH_THREADS must be a whole number, got {env!r}") from None
        if n < 1:
            raise ValueError(f"WORLDWALK_TORCH_THREADS must be at least 1, got {n}")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def use_torch_threads(n: int = 0) -> int:
    """Set torch's intra-op threads for the calling thread's work (0: the default). Returns n."""
    n = n or default_torch_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
