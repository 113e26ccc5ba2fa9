"""`worldwalk bench --world matrix-game --random-init full|small`: Matrix-Game 2.0 with random weights.

- `full`: the released universal model (1.62 B DiT, Wan 2.1 VAE, CLIP ViT-H/14 tower) at its native
  352x640; bf16 on CUDA, fp32 on the CPU, where it runs if the memory plan fits in the RAM it finds;
- `small`: the tiny test model at 32x48 (runs anywhere in seconds).
Per chunk: each DiT pass (the denoising steps and the t=0 cache pass) and the VAE decode, the chunk
time, the real-time factor, the time to the first frame (reset: CLIP + image condition, then chunk 0)
and the peak memory (GPU allocator on CUDA, resident set on the CPU). Wall clock, synchronised on CUDA.
"""

from __future__ import annotations

import os
import resource
import time
from statistics import median
from typing import Any

import numpy as np
import torch

from worldwalk.runtime.device_memory import NotEnoughMemory

from .memory import memory_plan
from .world import MatrixGameWorld, random_world


def _sync(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _available_bytes(device: str) -> int:
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(kind: str, device: str, dtype: torch.dtype, mode: str = "universal") -> int:
    """Bytes the full model needs (the memory plan's weights + one session's caches and activations);
    refuses when the device does not have them."""
    if kind != "full":
        return 0
    from .config import MatrixGameConfig
    from .memory import weights

    plan = memory_plan(MatrixGameConfig.for_mode(mode), dtype=dtype, vae_dtype=dtype)
    need = weights(plan) + plan["per_session_with_activations"]
    have = _available_bytes(device)
    if have < need:
        raise NotEnoughMemory(f"Matrix-Game at full size in {str(dtype)[6:]} needs about {need / 2**30:.1f} GiB on "
                              f"{device}; {have / 2**30:.1f} GiB are free")
    return need


def _peak(device: str) -> tuple[float, str]:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "peak GPU memory (torch allocator)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak resident memory of the process"


def measure(world: MatrixGameWorld, chunks: int) -> dict[str, Any]:
    device = world.device
    roll = world.rollout
    passes: list[float] = []
    mark = [0.0]

    def observe(_: dict) -> None:
        _sync(device)
        now = time.perf_counter()
        passes.append(now - mark[0])
        mark[0] = now

    decode_times: list[float] = []
    real_decode = roll.vae.decode_block

    def timed_decode(z, cache):
        _sync(device)
        t = time.perf_counter()
        out = real_decode(z, cache)
        _sync(device)
        decode_times.append(time.perf_counter() - t)
        return out

    roll.vae.decode_block = timed_decode  # type: ignore[method-assign]
    roll.observer = observe
    try:
        image = (np.random.default_rng(0).random((world.spec.height, world.spec.width, 3)) * 255).astype(np.uint8)
        t0 = time.perf_counter()
        world.reset(image, None, seed=0)
        world.rollout.condition.encode()  # a new walk's first block would (a resumed one takes its snapshot's)
        _sync(device)
        reset = time.perf_counter() - t0
        chunk_times: list[float] = []
        for k in range(chunks + 1):
            n = world.spec.chunk_frames(k)
            eye, intr = np.repeat(np.eye(4)[None], n, 0), np.repeat(np.eye(3)[None], n, 0)
            world.set_actions(np.tile(np.eye(world.cfg.keyboard_dim)[k % world.cfg.keyboard_dim], (n, 1)),
                              np.full((n, 2), 0.1 * ((-1) ** k)) if world.cfg.mouse else None)
            _sync(device)
            mark[0] = t = time.perf_counter()
            world.generate_chunk(eye, intr)
            chunk_times.append(time.perf_counter() - t)
    finally:
        roll.vae.decode_block = real_decode  # type: ignore[method-assign]
        roll.observer = None
    per_chunk = len(roll.steps) + 1
    return {"reset": reset, "chunks": chunk_times, "passes": [passes[i::per_chunk] for i in range(per_chunk)],
            "decode": decode_times, "steps": len(roll.steps)}


def random_init_figures(ctx, kind: str, chunks: int, device: str = "", mode: str = "universal") -> None:
    """Adds the figures to a bench context (`ctx.add`, `ctx.add_timings`)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    need = check_memory(kind, device, dtype, mode)
    t0 = time.perf_counter()
    world = random_world("full" if kind == "full" else "tiny", mode=mode, device=device, dtype=dtype)
    label = f"{kind} {mode} {world.spec.height}x{world.spec.width} {str(dtype)[6:]} {device}"
    ctx.add(f"build random {label}", time.perf_counter() - t0, "s",
            f"{sum(p.numel() for p in world.rollout.dit.parameters()) / 1e6:.1f} M DiT parameters"
            + (f"; plan {need / 2**30:.1f} GiB" if need else ""))
    r = measure(world, chunks)
    later = r["chunks"][1:] or r["chunks"]
    note = f"{len(later)} chunks of {world.spec.frames_per_chunk} frames after the first, {label}"
    ctx.add_timings("chunk time", later, note)
    for i, secs in enumerate(r["passes"]):
        name = f"denoise_{i + 1}" if i < r["steps"] else "cache_write (t=0)"
        ctx.add_timings(f"  {name}", secs[1:] or secs, "wall clock")
    ctx.add_timings("  vae_decode", r["decode"][1:] or r["decode"], "wall clock")
    ctx.add("real-time factor", world.spec.frames_per_chunk / world.spec.fps / median(later), "x",
            "seconds of video per second of wall time (p50 chunk)")
    ctx.add("time to first frame", 1000 * (r["reset"] + r["chunks"][0]), "ms",
            "reset (CLIP + image condition) + chunk 0")
    peak, what = _peak(device)
    ctx.add("peak memory", peak, "GiB", what)
