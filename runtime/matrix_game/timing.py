"""Times a Matrix-Game 2.0 rollout with random weights: seconds per DiT call, per decode and per block,
and the peak resident memory. The full architecture streams at its native 352x640 here.

    python -m worldwalk.runtime.matrix_game.timing --size full --blocks 2

The first-image condition is given ready-made (random latents): encoding it is a one-off cost of a
session start, timed separately with `--encode-chunks N` (that many 4-frame encoder chunks).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from .config import MatrixGameConfig
from .dit import CausalDiT
from .rollout import ImageCondition, Rollout
from .vae import TimeCache, WanVAE


def random_condition(cfg: MatrixGameConfig, generator: torch.Generator) -> ImageCondition:
    """A first-image condition of one random latent, repeated (no encoder run: for timing and tests)."""
    return ImageCondition.ready([torch.randn(1, cfg.out_dim, 1, cfg.latent_height, cfg.latent_width,
                                             generator=generator)])


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--mode", default="universal")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--encode-chunks", type=int, default=0)
    args = ap.parse_args()
    cfg = MatrixGameConfig.for_mode(args.mode) if args.size == "full" else MatrixGameConfig.tiny(args.mode)
    g = torch.Generator().manual_seed(0)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    dit = CausalDiT(cfg).eval()
    vae = WanVAE(dim=cfg.vae_dim, z_dim=cfg.out_dim, encoder=args.encode_chunks > 0).eval()
    print(f"built {sum(p.numel() for p in dit.parameters()) / 1e9:.3f} B DiT parameters + "
          f"{sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M VAE in {time.perf_counter() - t0:.1f} s; "
          f"{cfg.height}x{cfg.width}, {cfg.frame_tokens} tokens a frame, torch threads {torch.get_num_threads()}",
          flush=True)
    if args.encode_chunks:
        cache = TimeCache()
        image = torch.rand(1, 3, 1, cfg.height, cfg.width, generator=g) * 2 - 1
        for i in range(args.encode_chunks + 1):
            t = time.perf_counter()
            vae.encode_chunk(image if i == 0 else torch.zeros_like(image).expand(-1, -1, 4, -1, -1), cache)
            print(f"encoder chunk {i} ({1 if i == 0 else 4} frames): {time.perf_counter() - t:.1f} s", flush=True)
    roll = Rollout(cfg, dit, vae)
    stamps: list[tuple[float, float]] = [(time.perf_counter(), time.process_time())]

    def observe(c: dict) -> None:
        now = (time.perf_counter(), time.process_time())
        t = float(c["t"][0, 0])
        print(f"  DiT call at latent {c['first_frame']}, t={t:.1f}: {now[0] - stamps[-1][0]:.1f} s "
              f"({now[1] - stamps[-1][1]:.1f} s of CPU)", flush=True)
        stamps.append(now)

    roll.observer = observe
    roll.reset(torch.randn(1, 257, cfg.clip_dim, generator=g), condition=random_condition(cfg, g))
    for b in range(args.blocks):
        n = roll.raw_frames_needed()
        kb = (torch.rand(1, n, cfg.keyboard_dim, generator=g) < 0.3).float()
        ms = torch.randn(1, n, cfg.mouse_dim, generator=g) * 0.1 if cfg.mouse else None
        start, cpu_start = time.perf_counter(), time.process_time()
        stamps.append((start, cpu_start))
        real_decode = vae.decode_block

        def timed_decode(z, cache, _real=real_decode):
            t, c = time.perf_counter(), time.process_time()
            out = _real(z, cache)
            print(f"  VAE decode of {out.shape[1]} frames: {time.perf_counter() - t:.1f} s "
                  f"({time.process_time() - c:.1f} s of CPU)", flush=True)
            return out

        vae.decode_block = timed_decode  # type: ignore[method-assign]
        block = roll.step(kb, ms)
        vae.decode_block = real_decode  # type: ignore[method-assign]
        took, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        frames = block.video.shape[1]
        print(f"block {b}: {frames} frames in {took:.1f} s wall, {cpu:.1f} s of CPU on {torch.get_num_threads()} "
              f"thread(s) (real time needs {frames / cfg.fps:.2f} s); peak RSS {peak_rss_gib():.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
