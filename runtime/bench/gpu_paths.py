"""The paths `worldwalk bench --gpu-check` checks, each with its bar (gpu_check.py prints the table).

A path returns (passed, what was measured), or raises `Skip` with the reason it cannot run here. GPU paths
share one full-size random-init world (built once, about 8 GB of weights) and one small one; CPU paths run
the same checks on the CPU models (small random init at 64x48, the bundled model).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .check import FAIL, PASS, SKIP, Check

LEVELS = 4  # frames within this many levels of 255 of eager
WEIGHTS_TOL, STEADY_TOL = 0.02, 0.10  # the memory plan against the allocator
RTF_BAR = 1.0  # pipelined real-time factor of eager bf16 at full size
GiB = 2**30


class Skip(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------


class Worlds:
    """The worlds the paths share, built on first use and closed at the end."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self._full: Any = None
        self.full_weights = 0  # allocated bytes the full world's build added
        self._small: dict[str, Any] = {}

    def full(self):
        from .full_size import NotEnoughMemory, check_memory, random_world

        if self._full is None:
            dev = torch.device("cuda")
            try:
                check_memory("full", dev, torch.bfloat16)
            except NotEnoughMemory as e:
                raise Skip(str(e)) from None
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)
            self._full = random_world("full", dev, torch.bfloat16)
            self.full_weights = torch.cuda.memory_allocated(dev) - base
        return self._full

    def small(self, device: str):
        from .full_size import random_world

        if device not in self._small:
            dev = torch.device(device)
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
            self._small[device] = random_world("small", dev, dtype, size=(64, 48) if dev.type == "cpu" else None)
        return self._small[device]

    def bundled(self):
        from worldwalk.runtime.worlds.bundled_world import BundledWorld, weights_available

        if "bundled" not in self._small:
            if not weights_available():
                raise Skip("the bundled weights are not installed")
            self._small["bundled"] = BundledWorld()
        return self._small["bundled"]

    def close(self) -> None:
        from worldwalk.runtime.accel.apply import apply_accel

        for w in [self._full, *self._small.values()]:
            if w is not None:
                apply_accel(w, "none")
                w.close()
        self._full, self._small = None, {}


def play(world, chunks: int, seed: int, start: int = 0) -> list[np.ndarray]:
    """Frames of chunks `start`.. `start + chunks` of a fresh session (reset at `start` = 0)."""
    from .full_size import _walk

    if start == 0:
        world.reset(None, None, seed=seed)
    return [world.generate_chunk(*_walk(world, k)).frames for k in range(start, start + chunks)]


def levels(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """The largest difference, in levels of 255, between two lists of frames."""
    return max(int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) for x, y in zip(a, b, strict=True))


class FiniteWatch:
    """Records whether every velocity and decoded frame (before uint8) of a world is finite; checked on the
    device and read once at the end (no host sync per pass)."""

    def __init__(self, world) -> None:
        self.world = world
        self.flags: list[torch.Tensor] = []
        stream = world.rollout
        inner = stream.backend or stream.transformer
        decode = world.vae.decode_chunk

        def step(*args):
            out = inner(*args)
            self.flags.append(torch.isfinite(out[0]).all())
            return out

        def decode_chunk(z, state):
            pixels, after = decode(z, state)
            self.flags.append(torch.isfinite(pixels).all())
            return pixels, after

        self._undo = (stream, stream.backend)
        stream.backend = step
        world.vae.decode_chunk = decode_chunk

    def finite(self) -> bool:
        return all(bool(f) for f in self.flags)

    def remove(self) -> None:
        stream, backend = self._undo
        stream.backend = backend
        self.world.vae.__dict__.pop("decode_chunk", None)


# ---------------------------------------------------------------------------------------------
# GPU paths
# ---------------------------------------------------------------------------------------------


def plan_full(w: Worlds) -> tuple[bool, str]:
    """Weights and a session's steady state (allocated deltas) against the plan; reserved and used reported."""
    from .memory_plan import full_size_plan

    world = w.full()
    dev = world.device
    plan = full_size_plan()
    warm_workspaces(world)  # cuBLAS takes a 32 MiB workspace per (thread, stream): not a session's state
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    play(world, 2 + world.transformer.cfg.kv_window, seed=0)
    world.cache_nbytes()  # settles the decode
    torch.cuda.synchronize(dev)
    steady = torch.cuda.memory_allocated(dev) - before
    free, total = torch.cuda.mem_get_info(dev)
    ok_w = abs(w.full_weights - plan.weights) <= WEIGHTS_TOL * plan.weights
    ok_s = abs(steady - plan.per_session) <= STEADY_TOL * plan.per_session
    return ok_w and ok_s, (
        f"weights {w.full_weights / GiB:.3f} GiB (plan {plan.weights / GiB:.3f}); steady state {steady / GiB:.3f} GiB "
        f"(plan {plan.per_session / GiB:.3f}); peak allocated {torch.cuda.max_memory_allocated(dev) / GiB:.2f}, "
        f"peak reserved {torch.cuda.max_memory_reserved(dev) / GiB:.2f}, in use (mem_get_info) "
        f"{(total - free) / GiB:.2f} GiB")


def warm_workspaces(world) -> None:
    """One small matmul on each stream and thread the world computes on, so their cuBLAS workspaces exist."""
    dev = world.device
    a = torch.ones(8, 8, device=dev, dtype=world.dtype)

    def mm(stream) -> None:
        with torch.cuda.stream(stream) if stream is not None else torch.cuda.device(dev):
            _ = a @ a
        torch.cuda.synchronize(dev)

    for s in (None, world._model_stream, world._decode_stream):
        mm(s)
    world._decoder.submit(mm, world._decode_stream).result()


def eager_full(w: Worlds) -> tuple[bool, str]:
    from .full_size import measure

    world = w.full()
    watch = FiniteWatch(world)
    try:
        r = measure(world, w.chunks)
    finally:
        watch.remove()
    rtf = r["video_seconds"] / r["pipelined"]
    finite = watch.finite()
    return finite and rtf >= RTF_BAR, (
        f"{'finite' if finite else 'NaN/Inf found'} over {len(watch.flags)} velocities and decodes; pipelined "
        f"real-time factor {rtf:.2f}x (bar {RTF_BAR:.1f}); chunk p50 {1000 * float(np.median(r['chunk'])):.0f} ms")


def snapshot_full(w: Worlds) -> tuple[bool, str]:
    return snapshot_restore(w.full())


def snapshot_restore(world) -> tuple[bool, str]:
    """After 4 chunks: snapshot, 2 chunks, restore, the same 2 chunks again: bit-exact."""
    from worldwalk.runtime.snapshot_memory import process_arenas

    cuda = world.device.type == "cuda"
    play(world, 4, seed=1)
    t0 = time.perf_counter()
    snap = world.snapshot()
    if cuda and snap.cache_event is not None:
        snap.cache_event.synchronize()
    snap_ms = 1000 * (time.perf_counter() - t0)
    a = play(world, 2, seed=1, start=4)
    t0 = time.perf_counter()
    world.restore(snap)
    if cuda:
        torch.cuda.synchronize(world.device)
    restore_ms = 1000 * (time.perf_counter() - t0)
    b = play(world, 2, seed=1, start=4)
    same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    detail = f"{'bit-exact' if same else f'differs by up to {levels(a, b)} levels'}; snapshot {snap_ms:.0f} ms, " \
             f"restore {restore_ms:.0f} ms on the host; snapshot {snap.nbytes() / 2**20:.0f} MiB"
    if cuda:
        detail += f"; pinned arenas {process_arenas().stats()['allocated'] / GiB:.2f} GiB"
    return same, detail


def cudagraph_full(w: Worlds) -> tuple[bool, str]:
    return against_eager(w.full(), "cudagraph", 4)


def against_eager(world, backend: str, chunks: int) -> tuple[bool, str]:
    """Frames of `chunks` chunks through `backend` against eager, same seed: within LEVELS."""
    from worldwalk.runtime.accel.apply import apply_accel, summary, warm_up

    want = play(world, chunks, seed=2)
    t0 = time.perf_counter()
    try:
        if apply_accel(world, backend) != backend:
            raise Skip(f"{backend} did not apply")
        warm_up(world)
        build = time.perf_counter() - t0
        got = play(world, chunks, seed=2)
        calls = summary(world).get("step", {}).get("accel", 0)
    finally:
        apply_accel(world, "none")
    diff = levels(got, want)
    return diff <= LEVELS and calls > 0, (f"up to {diff} levels from eager over {chunks} chunks; {calls} accelerated "
                                          f"chunk-step calls; graphs built in {build:.0f} s")


def compile_small(w: Worlds) -> tuple[bool, str]:
    return against_eager(w.small("cuda"), "compile", 3)


def tensorrt_small(w: Worlds) -> tuple[bool, str]:
    from worldwalk.runtime.accel.tensorrt_backend import tensorrt_available

    ok, why = tensorrt_available(torch.device("cuda"))
    if not ok:
        raise Skip(why)
    return against_eager(w.small("cuda"), "tensorrt", 3)


def batching(world, exact: bool, chunks: int = 3) -> tuple[bool, str]:
    """Two sessions on one model (a fork), batched against serial."""
    from .batch_suite import run_sessions

    worlds = [world, world.fork()]
    try:
        _, alone, _ = run_sessions(worlds, chunks, "serial")
        _, together, batches = run_sessions(worlds, chunks, "batched", window=2.0)
    finally:
        worlds[1].close()
    diff = max(levels(a, b) for a, b in zip(alone, together, strict=True))
    ok = (diff == 0 if exact else diff <= LEVELS) and batches.get(2, 0) > 0
    return ok, f"up to {diff} levels from serial; forwards by batch size {dict(batches)}"


def batching_cuda(w: Worlds) -> tuple[bool, str]:
    return batching(w.small("cuda"), exact=False)


# ---------------------------------------------------------------------------------------------
# CPU paths
# ---------------------------------------------------------------------------------------------


def eager_small_cpu(w: Worlds) -> tuple[bool, str]:
    world = w.small("cpu")
    watch = FiniteWatch(world)
    try:
        t0 = time.perf_counter()
        frames = play(world, 2, seed=0)
        seconds = time.perf_counter() - t0
    finally:
        watch.remove()
    finite = watch.finite()
    return finite and frames[-1].std() > 0, (
        f"{'finite' if finite else 'NaN/Inf found'} over {len(watch.flags)} velocities and decodes; "
        f"2 chunks in {seconds:.1f} s")


def batching_cpu(w: Worlds) -> tuple[bool, str]:
    return batching(w.bundled(), exact=True, chunks=2)


def snapshot_cpu(w: Worlds) -> tuple[bool, str]:
    return snapshot_restore(w.bundled())


# name, on the GPU (else the CPU), the check, its bar
PATHS: list[tuple[str, bool, Callable[[Worlds], tuple[bool, str]], str]] = [
    ("memory plan vs allocator, full size", True, plan_full,
     f"weights within {WEIGHTS_TOL:.0%}, a session's steady state within {STEADY_TOL:.0%}"),
    ("eager bf16, full size", True, eager_full, f"no NaN/Inf; pipelined real-time factor >= {RTF_BAR:.1f}"),
    ("snapshot/restore, full size", True, snapshot_full, "bit-exact"),
    ("CUDA graphs vs eager, full size", True, cudagraph_full, f"frames within {LEVELS}/255, graphs ran"),
    ("batching 2 small worlds vs serial (cuda)", True, batching_cuda, f"frames within {LEVELS}/255, batches of 2"),
    ("torch.compile vs eager, small (cuda)", True, compile_small, f"frames within {LEVELS}/255"),
    ("TensorRT vs eager, small (cuda)", True, tensorrt_small, f"frames within {LEVELS}/255"),
    ("small model eager (cpu)", False, eager_small_cpu, "no NaN/Inf, frames not flat"),
    ("batching 2 bundled sessions vs serial (cpu)", False, batching_cpu, "frames equal, batches of 2"),
    ("snapshot/restore, bundled (cpu)", False, snapshot_cpu, "bit-exact"),
]


def run_paths(gpu: bool, chunks: int | None = None) -> list[Check]:
    worlds = Worlds(max(3, chunks or 8) if gpu else 2)
    checks = []
    try:
        for name, on_gpu, fn, bar in PATHS:
            if on_gpu and not gpu:
                checks.append(Check(name, SKIP, "no CUDA device", 0.0, bar))
                continue
            t0 = time.perf_counter()
            try:
                ok, detail = fn(worlds)
                status = PASS if ok else FAIL
            except Skip as e:
                status, detail = SKIP, str(e)
            except Exception as e:  # one path failing must not hide the others
                status, detail = FAIL, f"{type(e).__name__}: {e}"
            checks.append(Check(name, status, detail[:400], time.perf_counter() - t0, bar))
    finally:
        worlds.close()
    return checks
