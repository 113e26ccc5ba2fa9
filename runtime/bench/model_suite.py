"""Benchmark figures for the SANA-WM streaming code on small random-init configs.

`small_world` builds the same `SanaWM` the real checkpoint runs, with `SanaWMConfig.small()` (8
blocks, width 256) and a small LTX-2 VAE, so its figures include every sampler step, the cache
write and the VAE decode. Random weights make the pictures noise, not the cost.
"""

from __future__ import annotations

import numpy as np

from worldwalk.controls import InputState, PoseIntegrator, intrinsics_from_fov
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig
from worldwalk.runtime.sana_wm.vae import small_vae_config


def small_configs(temporal_stride: int = 4) -> tuple[SanaWMConfig, dict]:
    """`SanaWMConfig.small()` and a small LTX-2 VAE that fit together (the `--random-init small` model)."""
    vae = small_vae_config(temporal_stride=temporal_stride, latent_channels=32)
    return SanaWMConfig.small(chunk_plucker_channels=6 * temporal_stride), vae


def small_world(width: int = 256, height: int = 144, use_cache: bool = True, temporal_stride: int = 4) -> SanaWM:
    model, vae = small_configs(temporal_stride)
    return SanaWM.random_init(model, vae, SanaWMRunConfig(width=width, height=height, use_cache=use_cache))


def _chunk_times(world: SanaWM, chunks: int) -> tuple[list[float], list[int]]:
    """Seconds per chunk (everything generate_chunk does) and state bytes after each chunk."""
    spec = world.spec
    K = intrinsics_from_fov(spec.width, spec.height)  # controls.DEFAULT_FOV_DEG
    integrator = PoseIntegrator()
    walk = InputState(keys=frozenset({"w", "e"}))
    world.reset(None, None, 0)
    times, sizes = [], []
    for k in range(chunks):
        n = spec.chunk_frames(k)
        poses = integrator.plan(walk, n, 1.0 / spec.fps)
        chunk = world.generate_chunk(poses, np.broadcast_to(K, (n, 3, 3)).copy())
        times.append(chunk.timings["total"])
        sizes.append(world.cache_nbytes())
    return times, sizes


def cache_figures(ctx) -> None:
    size = (64, 64)  # 4x4 tokens a latent frame: long sessions in bench time; the ratios are the point
    n_cached = 15 if ctx.quick else 100  # quick: the whole bench under a minute cold
    n_recompute = 10 if ctx.quick else 30
    label = f"small config {size[0]}x{size[1]}"
    times, sizes = _chunk_times(small_world(*size, use_cache=True), n_cached + 1)
    early = float(np.median(times[4:7]))  # chunks 4..6, around chunk 5
    late = float(np.median(times[-3:]))
    ctx.add(f"cached chunk time at chunk 5 ({label})", 1000 * early, "ms", "all steps + cache write + decode")
    ctx.add(f"cached chunk time at chunk {n_cached} ({label})", 1000 * late, "ms", "same")
    ctx.add(f"cached time ratio chunk {n_cached} / chunk 5", late / early, "x", "near 1: cost flat in session length")
    ctx.add("cache memory at chunk 5", sizes[5] / 2**20, "MiB", "GDN states + softmax K/V window + conv tails")
    ctx.add(f"cache memory at chunk {n_cached}", sizes[-1] / 2**20, "MiB", "same")
    ctx.add(f"cache memory ratio chunk {n_cached} / chunk 5", sizes[-1] / sizes[5], "x", "1: bounded")
    times, sizes = _chunk_times(small_world(*size, use_cache=False), n_recompute + 1)
    early = float(np.median(times[4:7]))
    late = float(np.median(times[-3:]))
    ctx.add(f"no-cache chunk time at chunk 5 ({label})", 1000 * early, "ms", "recomputes the whole history")
    ctx.add(f"no-cache chunk time at chunk {n_recompute} ({label})", 1000 * late, "ms", "same")
    ctx.add(f"no-cache time ratio chunk {n_recompute} / chunk 5", late / early, "x", "grows with history")
    ctx.add(f"no-cache state at chunk {n_recompute}", sizes[-1] / 2**20, "MiB", "kept history latents")


def overlap_figures(ctx) -> None:
    """Chunks per second through a Session with and without the decode/denoise pipeline."""
    import time

    from worldwalk.runtime.session import Session, SessionConfig

    seconds = 2.0 if ctx.quick else 12.0
    for pipeline in (False, True):
        world = small_world(128, 80)
        session = Session(world, SessionConfig(pipeline=pipeline, just_in_time=False))
        session.inputs.press("w")
        with session.start():
            while session.stats()["chunks"] < 2:  # warm-up: the first chunk and one more
                time.sleep(0.01)
                if session.error:
                    raise RuntimeError(session.error)
            c0, t0 = session.stats()["frames"], time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                session.frames.get(timeout=0.2)
            fps = (session.stats()["frames"] - c0) / (time.perf_counter() - t0)
        label = "pipelined" if pipeline else "one chunk at a time"
        ctx.add(f"small config 128x80, {label}", fps, "frames/s",
                "session, VAE decode of chunk k beside denoising of chunk k+1" if pipeline else "session")
