"""`worldwalk bench` suite `accel`: generated fps of the bundled model under each chunk-step backend.

Every backend (eager, torch.compile, ONNX Runtime, auto, and on NVIDIA GPUs TensorRT and CUDA graphs)
gets its own world on the same fixed walk; once each has built its graphs (chunks 0 and 1), the worlds
take turns chunk by chunk, so a load change on a shared machine hits them all alike. `--quick` leaves
torch.compile out: its cold build takes minutes on a small CPU, and quick means under a minute cold.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from worldwalk.controls import DEFAULT_FOV_DEG, InputState, PoseIntegrator, intrinsics_from_fov
from worldwalk.runtime.accel.apply import apply_accel, check, summary
from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.vae import SanaWMVAE
from worldwalk.runtime.threads import use_torch_threads
from worldwalk.runtime.worlds.bundled_vae import BundledVAEConfig, build_vae
from worldwalk.runtime.worlds.bundled_world import BundledWorld, transformer_config, weights_available

log = logging.getLogger(__name__)

FULL = ("none", "compile", "onnx", "auto", "tensorrt", "cudagraph")
QUICK = ("none", "auto")  # the default path only: no cold torch.compile build, no second copy of auto


def bench_world(seed: int = 0) -> tuple[Any, str]:
    """The bundled world when its weights are there, else a random-init SanaWM of the bundled model's shape."""
    if weights_available():
        try:
            return BundledWorld(seed=seed), "bundled model"
        except (OSError, ValueError) as e:  # weights in flux while the bundled model trains
            log.warning("bundled world unavailable (%s); using a random-init model of its shape", e)
    torch.manual_seed(seed)
    # the bundled LTX-2 VAE layout, with its oneDNN 3D convs
    vae = SanaWMVAE(build_vae(BundledVAEConfig(latent_channels=transformer_config().in_channels)))
    world = SanaWM(SanaWMStreamingTransformer(transformer_config()), vae, SanaWMRunConfig(width=160, height=96))
    return world, "bundled-size random model (160x96)"


class Walker:
    """Drives a world chunk by chunk along a fixed walk (forward and turning right) from a fixed first frame."""

    def __init__(self, world: Any, seed: int = 0) -> None:
        self.world = world
        spec = world.spec
        self.K = intrinsics_from_fov(spec.width, spec.height, DEFAULT_FOV_DEG)
        self.integ = PoseIntegrator()
        self.walk = InputState(keys=frozenset({"w", "e"}))
        start = np.full((spec.height, spec.width, 3), 96, np.uint8)
        start[: spec.height // 2] = (120, 160, 210)
        world.reset(start, None, seed)
        self.k = 0

    def step(self) -> tuple[np.ndarray, float]:
        """(frames of the next chunk, seconds it took)."""
        spec = self.world.spec
        n = spec.chunk_frames(self.k)
        poses = self.integ.plan(self.walk, n, 1.0 / spec.fps)
        t0 = time.perf_counter()
        chunk = self.world.generate_chunk(poses, np.broadcast_to(self.K, (n, 3, 3)).copy())
        self.k += 1
        return chunk.frames, time.perf_counter() - t0


def walk_chunks(world: Any, chunks: int, seed: int = 0) -> tuple[list[np.ndarray], list[float]]:
    """Generate `chunks` chunks on the fixed walk: (frames per chunk, seconds per chunk)."""
    w = Walker(world, seed)
    out = [w.step() for _ in range(chunks)]
    return [f for f, _ in out], [t for _, t in out]


def accel_figures(ctx: Any) -> None:
    """`worldwalk bench` suite: generated fps of the bundled model under eager, torch.compile, ONNX Runtime and auto.

    Every backend gets its own world on the same walk; after each has built its graphs (chunks 0 and 1), the
    worlds take turns chunk by chunk, so a load change on a shared machine hits them all alike.
    """
    use_torch_threads(0)
    rounds = 6 if ctx.quick else 16
    walkers: dict[str, Walker] = {}
    labels: dict[str, str] = {}
    label = ""
    for choice in QUICK if ctx.quick else FULL:
        world, label = bench_world()
        ok, why = (True, "") if choice == "auto" else check(choice, world.spec.device)
        if not ok:
            ctx.skip(f"{choice} fps", why)
            continue
        try:
            chosen = apply_accel(world, choice)
            walker = Walker(world)
            t0 = time.perf_counter()
            walker.step()  # chunk 0: eager everywhere
            walker.step()  # chunk 1: builds (exports, compiles, times) the fixed-shape graphs
            build = time.perf_counter() - t0
        except Exception as e:
            ctx.skip(f"{choice} fps", f"failed: {type(e).__name__}: {e}")
            continue
        walkers[choice] = walker
        labels[choice] = {"none": "eager", "auto": f"auto ({chosen}; {_kept(world)})"}.get(choice, choice)
        if choice != "none":
            ctx.add(f"{labels[choice]} first-use build", build, "s", "chunks 0-1 incl. export/compile/timing; "
                    "exports are cached on disk")
    frames: dict[str, list[np.ndarray]] = {c: [] for c in walkers}
    secs: dict[str, list[float]] = {c: [] for c in walkers}
    for _ in range(rounds):
        for c, w in walkers.items():
            f, t = w.step()
            frames[c].append(f)
            secs[c].append(t)
    fps = {c: sum(f.shape[0] for f in frames[c]) / sum(secs[c]) for c in walkers}
    for c in walkers:
        note = f"{label}, chunks 2..{rounds + 1} interleaved: all sampler steps + cache write + VAE decode"
        ctx.add(f"{labels[c]} generated fps", fps[c], "fps", note)
        ctx.add(f"{labels[c]} chunk time", 1000 * float(np.median(secs[c])), "ms", "median")
        if c != "none" and "none" in walkers:
            pairs = zip(frames["none"], frames[c], strict=True)
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in pairs)
            ctx.add(f"{labels[c]} max pixel difference vs eager", diff, "/255", f"over {rounds} chunks")
            ctx.add(f"{labels[c]} speed-up over eager", fps[c] / fps["none"], "x", "generated fps ratio")


def _kept(world: Any) -> str:
    """Which parts run accelerated, e.g. "step accelerated, VAE eager"."""
    s = summary(world)
    parts = (("step", "step"), ("vae", "VAE"))
    return ", ".join(f"{label} {'accelerated' if part in s else 'eager'}" for part, label in parts)
