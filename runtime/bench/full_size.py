"""`worldwalk bench --world sana-wm --random-init full|small`: SANA-WM at its real size, random weights.

Speed does not depend on the weights' values, so this measures what a GPU does with the released model
before any checkpoint is at hand:
- `full`: the released stage-1 transformer (20 blocks, width 2240, camera branch: about 2.66B
  parameters) and an LTX-2 causal VAE of the released size (about 1.22B), bf16, CUDA, 704x1280 at 16 fps;
- `small`: `SanaWMConfig.small()` and a small LTX-2 VAE at 144x256 (runs anywhere; the CPU check).
The modules are built on the `meta` device and then materialised straight on the target device in the
target dtype (no fp32 copy first), each weight drawn N(0, 1/fan_in).

Per `--accel` (on CUDA, `auto` means every backend that can run: none, compile, cudagraph, tensorrt when
installed; on the CPU, none), after one warm-up session it runs `chunks` chunks one at a time and reports:
chunk time p50/p95 and, within it, each of the 4 denoising passes, the cache-writing pass and the VAE
decode (CUDA events on CUDA, wall clock on the CPU); the real-time factor (seconds of video per second
of wall time) one chunk at a time and pipelined (the decode of chunk k beside the denoising of chunk
k+1, as a CUDA session runs); the time to the first frame (reset + chunk 0); and the peak GPU memory.
On a machine without the memory for `full` (a CPU) it refuses and says how much it would need.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worldwalk.runtime.device_memory import NotEnoughMemory
from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig

SIZES = {"full": (1280, 704), "small": (256, 144)}


@dataclass
class RandomInitBench:
    kind: str = "small"  # "full" or "small"
    chunks: int = 8  # measured chunks after chunk 0 (>= 8 for the figures)
    device: str = ""  # "" = cuda when available, else cpu
    accel: str = "auto"
    dtype: str = ""  # "" = bfloat16 on CUDA, float32 on the CPU (bf16 is several times slower there)
    size: tuple[int, int] | None = None  # (width, height); None = SIZES[kind]

    def resolved_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def configs(kind: str):
    if kind == "full":
        from .memory_plan import full_size_configs

        return full_size_configs()
    if kind == "small":
        from .model_suite import small_configs

        return small_configs()
    raise ValueError(f"--random-init must be full or small, got {kind!r}")


@torch.no_grad()
def _materialise(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A meta module -> real tensors on `device` in `dtype`, random N(0, 1/fan_in) weights, norms at 1."""
    module = module.to(dtype=dtype).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.normal_(0.0, fan_in**-0.5, generator=g)
        elif name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=g)
    for name, b in module.named_buffers():
        if b.is_floating_point():
            b.fill_(1.0 if "std" in name else 0.0)
    if _cuda(device):  # drawn on the default stream: the world's own streams must not read them before
        torch.cuda.synchronize(device)
    return module


def random_world(
    kind: str, device: torch.device, dtype: torch.dtype, seed: int = 0, size: tuple[int, int] | None = None
) -> SanaWM:
    """The `full` or `small` SANA-WM with random weights, built directly on `device`."""
    from diffusers import AutoencoderKLLTX2Video
    from diffusers.utils import logging as diffusers_logging

    from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
    from worldwalk.runtime.sana_wm.vae import SanaWMVAE

    model_cfg, vae_cfg = configs(kind)
    with torch.device("meta"):
        transformer = SanaWMStreamingTransformer(model_cfg)
        vae = AutoencoderKLLTX2Video(**vae_cfg)
    transformer = _materialise(transformer, device, dtype, seed)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the "keep modules in float32" hint: the LTX-2 VAE has none
    try:
        vae = _materialise(vae, device, dtype, seed + 1)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    width, height = size or SIZES[kind]
    run = SanaWMRunConfig(width=width, height=height, fps=16.0, device=str(device), dtype=str(dtype)[6:])
    return SanaWM(transformer, SanaWMVAE(vae), run)


def check_memory(kind: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raise NotEnoughMemory (naming what it would take) when `kind` cannot fit on `device`."""
    if kind != "full":
        return
    from .memory_plan import GiB, full_size_plan

    plan = full_size_plan(*SIZES["full"], torch.bfloat16 if dtype == torch.float32 else dtype)  # once per process
    need = plan.weights + plan.chunk_peak + plan.per_session
    what = (f"{need / GiB:.1f} GiB of GPU memory (weights {plan.weights / GiB:.1f} GiB, one session's state "
            f"{plan.per_session / GiB:.2f} GiB, activation peak {plan.chunk_peak / GiB:.2f} GiB, bf16; "
            f"`worldwalk info --world sana-wm --random-init full` has the plan)")
    if not _cuda(device):
        raise NotEnoughMemory(
            f"--random-init full needs an NVIDIA GPU with about {what}; this machine has no CUDA device. "
            "Run --random-init small here."
        )
    free, _ = torch.cuda.mem_get_info(device)
    if free < need + plan.reserve(free) // 2:
        raise NotEnoughMemory(f"--random-init full needs about {what}; {device} has {free / GiB:.1f} GiB free")


# ---------------------------------------------------------------------------------------------
# timing the passes of a chunk
# ---------------------------------------------------------------------------------------------


class _Clock:
    """Intervals on the calling thread: CUDA events on the current stream, else the wall clock."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[str, Any, Any]] = []

    def start(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, name: str, started: Any) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append((name, started, e))
        else:
            self.marks.append((name, started, time.perf_counter()))

    def take(self) -> dict[str, float]:
        """Seconds per name since the last take (waits for the GPU)."""
        out: dict[str, float] = {}
        for name, a, b in self.marks:
            sec = a.elapsed_time(b) / 1000 if self.cuda else b - a
            out[name] = out.get(name, 0.0) + sec
        self.marks = []
        return out


class PassTimer:
    """Wraps the world's chunk step (`rollout.backend`) and VAE decode to time each pass of a chunk."""

    def __init__(self, world: SanaWM) -> None:
        cuda = _cuda(world.device)
        self.world = world
        self.model_clock, self.decode_clock = _Clock(cuda), _Clock(cuda)
        self._denoise = 0
        stream = world.rollout
        inner = stream.backend or stream.transformer

        def step(x, t, text, mask, camera, cache, write):
            name = "cache_write" if write else f"denoise_{self._denoise + 1}"
            self._denoise = 0 if write else self._denoise + 1
            t0 = self.model_clock.start()
            out = inner(x, t, text, mask, camera, cache, write)
            self.model_clock.stop(name, t0)
            return out

        vae = world.vae
        decode_chunk = vae.decode_chunk

        def decode(z, state):
            t0 = self.decode_clock.start()
            out = decode_chunk(z, state)
            self.decode_clock.stop("vae_decode", t0)
            return out

        self._undo = (stream, stream.backend, vae)
        stream.backend = step
        vae.decode_chunk = decode  # an instance attribute over the method; remove() drops it

    def take(self) -> dict[str, float]:
        if _cuda(self.world.device):
            torch.cuda.synchronize(self.world.device)
        return {**self.model_clock.take(), **self.decode_clock.take()}

    def remove(self) -> None:
        stream, backend, vae = self._undo
        stream.backend = backend
        vae.__dict__.pop("decode_chunk", None)


def _walk(world: SanaWM, k: int) -> tuple[np.ndarray, np.ndarray]:
    from worldwalk.controls import intrinsics_from_fov

    spec = world.spec
    n = spec.chunk_frames(k)
    start = 0 if k == 0 else spec.first_chunk_frames + (k - 1) * spec.frames_per_chunk
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.025 * (start + np.arange(n))  # forward at the reference scripts' step
    K = intrinsics_from_fov(spec.width, spec.height, 60.0)
    return poses, np.broadcast_to(K, (n, 3, 3)).copy()


def measure(world: SanaWM, chunks: int) -> dict[str, Any]:
    """One session of 1 + `chunks` chunks one at a time, then `chunks` pipelined; the figures."""
    cuda = _cuda(world.device)
    timer = PassTimer(world)
    try:
        if cuda:
            torch.cuda.synchronize(world.device)
            torch.cuda.reset_peak_memory_stats(world.device)
        t0 = time.perf_counter()
        world.reset(None, None, seed=0)
        world.generate_chunk(*_walk(world, 0))
        ttff = time.perf_counter() - t0
        timer.take()
        totals, passes = [], []
        for k in range(1, 1 + chunks):
            t1 = time.perf_counter()
            world.generate_chunk(*_walk(world, k))
            totals.append(time.perf_counter() - t1)
            passes.append(timer.take())
        # pipelined: chunk k+1 is submitted before chunk k's frames are taken
        t1 = time.perf_counter()
        pending = None
        for k in range(1 + chunks, 1 + 2 * chunks):
            nxt = world.submit(*_walk(world, k))
            if pending is not None:
                pending.result()
            pending = nxt
        pending.result()
        pipelined = (time.perf_counter() - t1) / chunks
        timer.take()
        peak = torch.cuda.max_memory_allocated(world.device) if cuda else None
        reserved = torch.cuda.max_memory_reserved(world.device) if cuda else None
        used = (lambda free, total: total - free)(*torch.cuda.mem_get_info(world.device)) if cuda else None
    finally:
        timer.remove()
    video = world.spec.frames_per_chunk / world.spec.fps
    return {"chunk": totals, "passes": passes, "ttff": ttff, "pipelined": pipelined, "video_seconds": video,
            "peak_bytes": peak, "reserved_bytes": reserved, "used_bytes": used}


def accel_choices(choice: str, device: torch.device) -> list[str]:
    """The backends to measure: every one that can run for `auto` on CUDA, else the one asked for."""
    if choice != "auto":
        return [choice]
    if not _cuda(device):
        return ["none"]
    from worldwalk.runtime.accel.apply import check

    return ["none"] + [c for c in ("compile", "cudagraph", "tensorrt") if check(c, device)[0]]


def random_init_figures(ctx, cfg: RandomInitBench) -> None:
    """Add the figures of `cfg` to a bench context (`ctx.add`, `ctx.add_timings`, `ctx.skip`)."""
    from worldwalk.runtime.accel.apply import apply_accel, warm_up

    device = cfg.resolved_device()
    dtype = getattr(torch, cfg.dtype or ("bfloat16" if _cuda(device) else "float32"))
    check_memory(cfg.kind, device, dtype)
    t0 = time.perf_counter()
    world = random_world(cfg.kind, device, dtype, size=cfg.size)
    w, h = cfg.size or SIZES[cfg.kind]
    label = f"{cfg.kind} {h}x{w} {str(dtype)[6:]} {device.type}"
    ctx.add(f"build random {label}", time.perf_counter() - t0, "s",
            f"{sum(p.numel() for p in world.transformer.parameters()) / 1e9:.2f}B transformer + "
            f"{sum(p.numel() for p in world.vae.vae.parameters()) / 1e9:.2f}B VAE")
    try:
        for choice in accel_choices(cfg.accel, device):
            try:
                chosen = apply_accel(world, choice)
                t0 = time.perf_counter()
                if chosen != "none":
                    warm_up(world)
                    ctx.add(f"[{chosen}] graph build + warm-up", time.perf_counter() - t0, "s", "once per shape")
                r = measure(world, cfg.chunks)
            except Exception as e:  # one backend failing must not hide the others
                ctx.skip(f"--accel {choice} ({label})", f"{type(e).__name__}: {e}")
                continue
            tag = f"[{chosen}]"
            note = f"{cfg.chunks} chunks of {world.spec.frames_per_chunk} frames, {label}"
            ctx.add_timings(f"{tag} chunk time", r["chunk"], note)
            for name in [*(f"denoise_{i}" for i in range(1, 5)), "cache_write", "vae_decode"]:
                secs = [p.get(name, float("nan")) for p in r["passes"]]
                ctx.add_timings(f"{tag}   {name}", secs, "CUDA events" if _cuda(device) else "wall clock")
            from .context import median

            ctx.add(f"{tag} real-time factor, one chunk at a time", r["video_seconds"] / median(r["chunk"]), "x",
                    "seconds of video per second (p50 chunk)")
            ctx.add(f"{tag} real-time factor, pipelined", r["video_seconds"] / r["pipelined"], "x",
                    "decode of chunk k beside the denoising of chunk k+1")
            ctx.add(f"{tag} time to first frame", 1000 * r["ttff"], "ms", "reset (first-image encode) + chunk 0")
            if r["peak_bytes"] is not None:
                ctx.add(f"{tag} peak GPU memory", r["peak_bytes"] / 2**30, "GiB", "torch max_memory_allocated")
                # allocated misses CUDA-graph pools' intermediates and TensorRT's engine and context memory
                ctx.add(f"{tag} peak GPU memory reserved", r["reserved_bytes"] / 2**30, "GiB",
                        "torch max_memory_reserved (graph pools included)")
                ctx.add(f"{tag} GPU memory in use", r["used_bytes"] / 2**30, "GiB",
                        "cudaMemGetInfo total - free (TensorRT engines and contexts included)")
    finally:
        apply_accel(world, "none")
        world.close()
        if _cuda(device):
            torch.cuda.empty_cache()


def run_random_init(args: argparse.Namespace) -> int:
    """`worldwalk bench --world sana-wm --random-init KIND`: the figures as a table (and JSON)."""
    from .context import BenchConfig, BenchContext

    worlds = args.world or ["sana-wm"]
    if worlds == ["matrix-game"]:
        return _matrix_game(args)
    if worlds != ["sana-wm"]:
        print(f"bench: --random-init builds SANA-WM; drop --world {' '.join(worlds)} or pass --world sana-wm",
              file=sys.stderr)
        return 2
    chunks = max(8, getattr(args, "chunks", None) or 8) if args.random_init == "full" else (
        getattr(args, "chunks", None) or (3 if args.quick else 8))
    cfg = RandomInitBench(kind=args.random_init, chunks=chunks, accel=args.accel or "auto")
    ctx = BenchContext(BenchConfig(quick=args.quick, worlds=worlds, accel=cfg.accel))
    ctx.suite = f"sana-wm random {cfg.kind}"
    return _run_and_report(ctx, lambda: random_init_figures(ctx, cfg), cfg.chunks, args.json)


def _matrix_game(args: argparse.Namespace) -> int:
    """`worldwalk bench --world matrix-game --random-init KIND` (runtime/matrix_game/bench.py)."""
    from worldwalk.runtime.matrix_game.bench import random_init_figures as mg_figures

    from .context import BenchConfig, BenchContext

    chunks = getattr(args, "chunks", None) or (2 if args.random_init == "full" or args.quick else 8)
    ctx = BenchContext(BenchConfig(quick=args.quick, worlds=["matrix-game"], accel="none"))
    ctx.suite = f"matrix-game random {args.random_init} {getattr(args, 'mode', None) or 'universal'}"
    return _run_and_report(ctx, lambda: mg_figures(ctx, args.random_init, chunks,
                                                   mode=getattr(args, "mode", None) or "universal"), chunks, args.json)


def _run_and_report(ctx: Any, run: Any, chunks: int, json_path: str | None) -> int:
    """Run one random-init bench (`run()` fills `ctx`) and print its table (and JSON): 2 when the model does
    not fit here, a failure is listed in the report."""
    from worldwalk.runtime.bench.machine import gather

    from .context import report

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"[{ctx.suite}]", file=sys.stderr, flush=True)
    try:
        run()
    except NotEnoughMemory as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        ctx.failed.append((ctx.suite, f"{type(e).__name__}: {e}"))
    result = {
        "machine": gather(gl=False), "date": started, "quick": chunks < 8,
        "figures": [f.__dict__ for f in ctx.figures],
        "skipped": [{"what": w, "why": y} for w, y in ctx.skipped],
        "failed": [{"suite": n, "error": e} for n, e in ctx.failed],
    }
    return report(result, json_path)
