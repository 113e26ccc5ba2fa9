"""`worldwalk eval`: the bundled model against the reference world's true renders.

Along held-out random walks (seeds never used in training), the model starts from the true first
frame and generates chunk by chunk for the walk's poses; every frame is compared with the
reference world's render of the same pose: PSNR and SSIM at 1 s, 5 s and 20 s (mean over the
frames within +-2 of that time, then over walks), beside
- `frozen`: the first frame held for the whole walk;
- `still camera`: the same model, same seed, with the camera held at the first pose;
- `vae ceiling`: the true frames through the VAE (encode, decode), the best the model could do.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

TIMES = (1.0, 5.0, 20.0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM of the bundled model against the reference world along held-out walks")
    p.add_argument("--checkpoint", default=None, help="folder with the bundled weights (default: the shipped ones)")
    p.add_argument("--walks", type=int, default=12)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=9001, help="walk seed (training uses 1)")
    p.add_argument("--save", default=None, help="folder for PNG strips of the first walk and the JSON table")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 images: 7x7 Gaussian window (sigma 1.5) on luma."""
    import torch
    import torch.nn.functional as F

    w = np.array([0.299, 0.587, 0.114])
    x = torch.from_numpy(a.astype(np.float64) @ w)[None, None]
    y = torch.from_numpy(b.astype(np.float64) @ w)[None, None]
    g = torch.exp(-((torch.arange(7, dtype=torch.float64) - 3) ** 2) / (2 * 1.5**2))
    g = (g[:, None] * g[None]) / g.sum() ** 2
    k = g[None, None]
    mu_x, mu_y = F.conv2d(x, k), F.conv2d(y, k)
    sxx = F.conv2d(x * x, k) - mu_x**2
    syy = F.conv2d(y * y, k) - mu_y**2
    sxy = F.conv2d(x * y, k) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def generate(world, first: np.ndarray, poses: np.ndarray, K: np.ndarray, seed: int) -> tuple[np.ndarray, list]:
    """Run the world along poses (N, 4, 4) from `first`; returns frames (N, H, W, 3) and chunk timings."""
    world.reset(first, None, seed)
    out, timings, k, i = [], [], 0, 0
    while i < len(poses):
        n = world.spec.chunk_frames(k)
        if i + n > len(poses):
            break
        c = world.generate_chunk(poses[i : i + n], K[i : i + n])
        out.append(c.frames)
        timings.append(c.timings)
        i, k = i + n, k + 1
    return np.concatenate(out), timings


def run(args: argparse.Namespace) -> int:
    import torch

    from worldwalk.runtime.worlds.bundled_world import BundledWorld
    from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

    from .walks import WalkConfig, random_walk

    torch.set_num_threads(args.threads)
    world = BundledWorld(Path(args.checkpoint) if args.checkpoint else None)
    spec = world.spec
    wcfg = WalkConfig(width=spec.width, height=spec.height, fps=spec.fps)
    n_frames = spec.first_chunk_frames + spec.frames_per_chunk * math.ceil(
        (args.seconds * spec.fps + 3 - spec.first_chunk_frames) / spec.frames_per_chunk)
    K = np.broadcast_to(wcfg.intrinsics(), (n_frames, 3, 3)).copy()
    rows: dict[str, dict[float, list[tuple[float, float]]]] = {}
    chunk_times: list[float] = []
    ref = ReferenceWorld(ReferenceWorldConfig(width=spec.width, height=spec.height, seed=wcfg.world_seed))
    save = Path(args.save) if args.save else None
    for w in range(args.walks):
        poses = random_walk(n_frames, args.seed * 1_000_003 + w, wcfg)
        truth = ref.render_many(poses, K)
        gen, timings = generate(world, truth[0], poses, K, seed=w)
        chunk_times += [t["total"] for t in timings[1:]]
        still, _ = generate(world, truth[0], np.broadcast_to(poses[0], poses.shape).copy(), K, seed=w)
        recon = _vae_roundtrip(world, truth)
        frozen = np.broadcast_to(truth[0], truth.shape)
        moved = float(np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]))
        print(f"walk {w}: {moved:.1f} units from the start after {len(poses) / spec.fps:.1f} s", flush=True)
        for name, frames in (("model", gen), ("still camera", still), ("frozen first frame", frozen),
                             ("vae ceiling", recon)):
            for t in TIMES:
                c = int(round(t * spec.fps))
                idx = [i for i in range(c - 2, c + 3) if 0 < i < min(len(frames), len(truth))]
                if not idx:
                    continue
                p = float(np.mean([psnr(frames[i], truth[i]) for i in idx]))
                s = float(np.mean([ssim(frames[i], truth[i]) for i in idx]))
                rows.setdefault(name, {}).setdefault(t, []).append((p, s))
        if save is not None and w == 0:
            _strips(save, {"truth": truth, "model": gen, "still": still, "vae": recon}, spec.fps)
    ref.close()
    table = {name: {f"{t:g}s": {"psnr": float(np.mean([v[0] for v in vals])),
                                "ssim": float(np.mean([v[1] for v in vals]))}
                    for t, vals in by_t.items()} for name, by_t in rows.items()}
    mean_chunk = float(np.mean(chunk_times)) if chunk_times else float("nan")
    print(f"\n{args.walks} held-out walks, {spec.width}x{spec.height} @ {spec.fps:g} fps; PSNR dB / SSIM")
    print(f"{'':22s}" + "".join(f"{f'{t:g} s':>18s}" for t in TIMES))
    for name, by_t in table.items():
        cells = "".join(f"{by_t[f'{t:g}s']['psnr']:>10.2f} / {by_t[f'{t:g}s']['ssim']:.3f}" if f"{t:g}s" in by_t
                        else f"{'-':>18s}" for t in TIMES)
        print(f"{name:22s}{cells}")
    print(f"chunk time (12 frames, decode included, threads={args.threads}): {mean_chunk * 1000:.0f} ms "
          f"-> {spec.frames_per_chunk / mean_chunk:.1f} frames/s")
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / "eval.json").write_text(json.dumps({"table": table, "chunk_seconds": mean_chunk,
                                                    "walks": args.walks, "seed": args.seed}, indent=1))
    world.close()
    return 0


def _vae_roundtrip(world, truth: np.ndarray) -> np.ndarray:
    import torch

    from worldwalk.runtime.sana_wm.vae import to_uint8
    from worldwalk.runtime.worlds.bundled_vae import decode_raw, encode_mean

    vae = world.vae
    n = 1 + (len(truth) - 1) // vae.temporal_stride * vae.temporal_stride
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(truth[:n])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        return to_uint8(decode_raw(vae.vae, encode_mean(vae.vae, x)))


def _strips(folder: Path, videos: dict[str, np.ndarray], fps: float) -> None:
    """One PNG: a row per video, columns at 0, 0.5, 1, 2, 5, 10, 20 s."""
    try:
        from PIL import Image
    except ImportError:
        return
    folder.mkdir(parents=True, exist_ok=True)
    cols = [int(round(t * fps)) for t in (0, 0.5, 1, 2, 5, 10, 20)]
    rows = []
    for v in videos.values():
        rows.append(np.concatenate([v[min(c, len(v) - 1)] for c in cols], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(folder / "strip.png")
