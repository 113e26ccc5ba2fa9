"""Several sessions on one model: generated frames/s for 1, 2 and 4 sessions, batched or not.

Each session is a bundled world (all on one transformer) walking its own path with its own seed,
driven chunk by chunk (`generate_chunk`, the VAE decode included). Three ways to run N of them:
- one at a time: a single thread takes the sessions' chunks in turn (a device doing one forward at
  a time, as a GPU does);
- concurrent: one thread per session, each forward on its own (sessions contend for the cores);
- batched: one thread per session through a `ForwardBatcher` (runtime/batching.py): the sessions'
  passes go through the transformer as one forward with a batch dimension.
Frames/s is all sessions' frames over wall time, after each session's first chunk.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


def walk(world: Any, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk k of a session's path: forward, drifting sideways by its seed."""
    from worldwalk.controls import intrinsics_from_fov

    spec = world.spec
    n = spec.chunk_frames(k)
    start = 0 if k == 0 else spec.first_chunk_frames + (k - 1) * spec.frames_per_chunk
    f = start + np.arange(n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.02 * (1 + seed % 3) * f
    poses[:, 0, 3] = 0.01 * seed * np.sin(0.2 * f)
    return poses, np.broadcast_to(intrinsics_from_fov(spec.width, spec.height), (n, 3, 3)).copy()


def bundled_worlds(n: int) -> list[Any]:
    """`n` bundled worlds on one transformer (the first world's)."""
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import create_world

    worlds = [create_world(WorldConfig(name="bundled", accel="none")) for _ in range(n)]
    for w in worlds[1:]:
        w.transformer = w.rollout.transformer = worlds[0].rollout.transformer
    return worlds


def run_sessions(
    worlds: list[Any], chunks: int, mode: str, window: float = 0.005
) -> tuple[float, list[list], dict[int, int]]:
    """Frames/s of len(worlds) sessions over `chunks` chunks each (`mode`: serial, concurrent, batched),
    each session's frames, and the forwards run by batch size (batched mode)."""
    from worldwalk.runtime.batching import ForwardBatcher

    frames: list[list] = [[] for _ in worlds]
    batcher = ForwardBatcher(worlds[0].rollout.transformer, window) if mode == "batched" else None
    for w in worlds:
        if batcher is not None:
            batcher.attach(w)
    counted = [0]
    lock = threading.Lock()
    t_start = [0.0]
    first = threading.Barrier(len(worlds) if mode != "serial" else 1)

    def chunk(i: int, k: int) -> None:
        c = worlds[i].generate_chunk(*walk(worlds[i], k, i + 1))
        frames[i].append(c.frames)
        if k > 0:
            with lock:
                counted[0] += len(c.frames)

    try:
        if mode == "serial":
            for i, w in enumerate(worlds):
                w.reset(None, None, seed=i + 1)
                chunk(i, 0)
            t_start[0] = time.perf_counter()
            for k in range(1, chunks):
                for i in range(len(worlds)):
                    chunk(i, k)
        else:
            def session(i: int) -> None:
                worlds[i].reset(None, None, seed=i + 1)
                chunk(i, 0)
                if first.wait() == 0:
                    t_start[0] = time.perf_counter()
                for k in range(1, chunks):
                    chunk(i, k)

            threads = [threading.Thread(target=session, args=(i,)) for i in range(len(worlds))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if batcher is not None:
            for w in worlds:
                batcher.detach(w)
            batcher.close()
    batches = dict(batcher.batches) if batcher is not None else {}
    return counted[0] / (time.perf_counter() - t_start[0]), frames, batches


def batch_figures(ctx) -> None:
    """Bench suite `batching`: frames/s for 1, 2, 4 sessions, one at a time / concurrent / batched (full bench only)."""
    import os

    if ctx.quick:
        ctx.skip("batching", "not in --quick (1, 2 and 4 sessions of the bundled model take about half a minute)")
        return
    chunks = 6
    worlds = bundled_worlds(4)
    load = os.getloadavg()[0]
    for n in (1, 2, 4):
        for mode in ("serial", "concurrent", "batched") if n > 1 else ("serial",):
            fps, _, _ = run_sessions(worlds[:n], chunks, mode)
            ctx.add(f"bundled, {n} session(s), {mode}", fps, "frames/s",
                    f"{chunks - 1} chunks each after the first; load average {load:.1f} on {os.cpu_count()} cores")
    for w in worlds:
        w.close()
