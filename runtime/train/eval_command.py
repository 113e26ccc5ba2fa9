"""`worldwalk eval`: the bundled model against the reference world's true renders.

Along held-out random walks (seeds never used in training), the model starts from the true first
frame and generates chunk by chunk for the walk's poses; every frame is compared with the
reference world's render of the same pose: PSNR and SSIM at 1 s, 5 s and 20 s (mean over the
frames within +-2 of that time, then over walks), beside
- `frozen`: the first frame held for the whole walk;
- `still camera`: the same model, same seed, with the camera held at the first pose;
- `vae ceiling`: the true frames through the VAE (encode, decode), the best the model could do.

Then the scripted paths players walk on purpose (`scripted.py`: out and back, strafe right then
left, a 360-degree turn, look up then down, a walk toward a landmark), each its own row, from
`--starts` start poses (the spawn point first): model and frozen first frame at 1 s and 5 s,
and the memory score: on a path that comes back to its start pose, the frames from the return on
(the return and the next 4, camera at rest at the start: one latent frame) against the truth
there (the first frame again), beside the VAE's reconstruction of them (the frame-group VAE
blurs a group the camera moves in, so the score is taken once it rests).
`--save` writes a strip per scripted path (truth over model, from the spawn point).

Beside PSNR/SSIM, the goals of the bundled world (goal_metrics.py): detail, the edge energy of the
frames over the truth's at 1, 5 and 10 s of the walks (for the model, the still camera, the frozen
frame and the VAE's reconstruction); the landmark, the blue block's area in the model's frames over
its true area and the IoU of the two masks at 2, 4 and 6 s of the walk toward it from each landmark
start (the spawn point, then 10 units to either side, facing it); ghosting, from the same starts a
360-degree turn in place, the share of the frame blue in the model's frames where the truth has no
blue, over the frames turned 90 degrees or more away, and the share of those frames with any ghost
(more than 0.1% of the frame), and the same count from six more starts (GHOST_SIDES), where a ghost the
three starts miss shows. Beside the landmark goal, the same walks with the cache written from the
truth's latents (truth_context.py), throughout and until 4 s: what the model draws one step ahead of the truth,
against what it keeps building on its own chunks.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from . import goal_metrics as gm
from .scripted import PATHS
from .train_command import timesteps_arg

TIMES = (1.0, 5.0, 10.0, 20.0)
EDGE_TIMES = (1.0, 5.0, 10.0)
LANDMARK_TIMES = (2.0, 4.0, 6.0)
GHOST_MIN = 0.001  # a frame ghosts when more than this share of it is blue where the truth has none
PATH_TIMES = (1.0, 5.0)
PATH_SECONDS = 6.25  # every scripted path that returns is back at its start and at rest for 4 frames by then
RETURN_FRAMES = 5  # the memory score: mean over the return frame and the 4 after it
TRUTH_UNTIL = 4.0  # s: the landmark walk with the cache from the truth until then, the model's own after


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM of the bundled model against the reference world along held-out walks")
    p.add_argument("--checkpoint", default=None, help="folder with the bundled weights (default: the shipped ones)")
    p.add_argument("--walks", type=int, default=12)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=9001, help="walk seed (training uses 1)")
    p.add_argument("--save", default=None, help="folder for PNG strips of the first walk and the JSON table")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", default="all",
                   help="scripted paths to score besides the walks: all, none, or a comma list of " + ", ".join(PATHS))
    p.add_argument("--starts", type=int, default=3, help="start poses per scripted path (the spawn point first)")
    p.add_argument("--timesteps", type=timesteps_arg, default=None,
                   help="score with this sampler instead of the one stored with the weights, e.g. 1000,667,333,0")
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

    from worldwalk.runtime.sana_wm.sampler import SamplerConfig
    from worldwalk.runtime.worlds.bundled_world import BundledWorld
    from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

    from .walks import WalkConfig, random_walk

    torch.set_num_threads(args.threads)
    sampler = SamplerConfig(timesteps=args.timesteps) if args.timesteps else None
    world = BundledWorld(Path(args.checkpoint) if args.checkpoint else None, sampler=sampler)
    print(f"sampler timesteps {', '.join(map(str, world.rollout.sampler.cfg.timesteps))}", flush=True)
    spec = world.spec
    wcfg = WalkConfig(width=spec.width, height=spec.height, fps=spec.fps)
    n_frames = spec.first_chunk_frames + spec.frames_per_chunk * math.ceil(
        (args.seconds * spec.fps + 3 - spec.first_chunk_frames) / spec.frames_per_chunk)
    K = np.broadcast_to(wcfg.intrinsics(), (n_frames, 3, 3)).copy()
    rows: dict[str, dict[float, list[tuple[float, float]]]] = {}
    edges: dict[str, dict[float, list[float]]] = {}
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
                score = _score_at(frames, truth, t, spec.fps)
                if score is not None:
                    rows.setdefault(name, {}).setdefault(t, []).append(score)
            for t in EDGE_TIMES:
                idx = gm.window(t, spec.fps, min(len(frames), len(truth)))
                if idx:
                    edges.setdefault(name, {}).setdefault(t, []).append(gm.edge_ratio(frames[idx], truth[idx]))
        if save is not None and w == 0:
            _strips(save, {"truth": truth, "model": gen, "still": still, "vae": recon}, spec.fps)
    names = _path_names(args.paths)
    scripted = _scripted(world, ref, names, args, spec, wcfg, save) if names else {}
    landmark = _landmark_goals(world, ref, args, spec, wcfg, save) if "toward-landmark" in names else {}
    ref.close()
    detail = {name: {f"{t:g}s": float(np.mean(v)) for t, v in by_t.items()} for name, by_t in edges.items()}
    table = {name: {f"{t:g}s": {"psnr": float(np.mean([v[0] for v in vals])),
                                "ssim": float(np.mean([v[1] for v in vals]))}
                    for t, vals in by_t.items()} for name, by_t in rows.items()}
    mean_chunk = float(np.mean(chunk_times)) if chunk_times else float("nan")
    if scripted:
        _print_scripted(scripted, args.starts)
    print(f"\n{args.walks} held-out walks, {spec.width}x{spec.height} @ {spec.fps:g} fps; PSNR dB / SSIM")
    print(f"{'':22s}" + "".join(f"{f'{t:g} s':>18s}" for t in TIMES))
    for name, by_t in table.items():
        cells = "".join(f"{by_t[f'{t:g}s']['psnr']:>10.2f} / {by_t[f'{t:g}s']['ssim']:.3f}" if f"{t:g}s" in by_t
                        else f"{'-':>18s}" for t in TIMES)
        print(f"{name:22s}{cells}")
    _print_goals(detail, landmark)
    print(f"chunk time ({spec.frames_per_chunk} frames, decode included, threads={args.threads}): "
          f"{mean_chunk * 1000:.0f} ms "
          f"-> {spec.frames_per_chunk / mean_chunk:.1f} frames/s")
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / "eval.json").write_text(json.dumps({"table": table, "scripted": scripted, "chunk_seconds": mean_chunk,
                                                    "detail": detail, "landmark": landmark,
                                                    "walks": args.walks, "seed": args.seed, "starts": args.starts,
                                                    "timesteps": list(world.rollout.sampler.cfg.timesteps)},
                                                   indent=1))
    world.close()
    return 0


def _score_at(frames: np.ndarray, truth: np.ndarray, t: float, fps: float) -> tuple[float, float] | None:
    """(PSNR, SSIM) of `frames` against `truth`, mean over the frames within +-2 of time t (none: None)."""
    c = int(round(t * fps))
    idx = [i for i in range(c - 2, c + 3) if 0 < i < min(len(frames), len(truth))]
    if not idx:
        return None
    return (float(np.mean([psnr(frames[i], truth[i]) for i in idx])),
            float(np.mean([ssim(frames[i], truth[i]) for i in idx])))


def _path_names(spec: str) -> list[str]:
    if spec == "none":
        return []
    if spec == "all":
        return list(PATHS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise SystemExit(f"worldwalk eval: unknown --paths {unknown}; known: all, none, {', '.join(PATHS)}")
    return names


def _scripted(world, ref, names: list[str], args: argparse.Namespace, spec, wcfg, save: Path | None) -> dict:  # noqa: ANN001
    """Scores of every scripted path over `args.starts` starts: {name: {"1s": {...}, "5s": {...}, "return": ...}}."""
    from .scripted import landmark_ahead, scripted_path, start_poses

    n_frames = spec.first_chunk_frames + spec.frames_per_chunk * math.ceil(
        (PATH_SECONDS * spec.fps + 1 - spec.first_chunk_frames) / spec.frames_per_chunk)
    K = np.broadcast_to(wcfg.intrinsics(), (n_frames, 3, 3)).copy()
    starts, toward = start_poses(args.starts, args.seed, landmark_ahead(wcfg.world_seed), wcfg)
    out: dict[str, dict] = {}
    for name in names:
        acc: dict[str, list[tuple[float, float]]] = {}
        ret = None
        for j in range(args.starts):
            path = scripted_path(name, (toward if name == "toward-landmark" else starts)[j], n_frames, wcfg)
            truth = ref.render_many(path.poses, K)
            gen, _ = generate(world, truth[0], path.poses, K, seed=j)
            frozen = np.broadcast_to(truth[0], truth.shape)
            for t in PATH_TIMES:
                for row, frames in (("model", gen), ("frozen first frame", frozen)):
                    score = _score_at(frames, truth, t, spec.fps)
                    if score is not None:
                        acc.setdefault(f"{t:g}s {row}", []).append(score)
            if path.returns is not None and path.returns + RETURN_FRAMES <= len(gen):
                r, ret = path.returns, path.returns / spec.fps
                recon = _vae_roundtrip(world, truth)
                back = range(r, r + RETURN_FRAMES)
                for row, frames in (("return model", gen), ("return vae ceiling", recon)):
                    acc.setdefault(row, []).append((float(np.mean([psnr(frames[i], truth[i]) for i in back])),
                                                    float(np.mean([ssim(frames[i], truth[i]) for i in back]))))
            if save is not None and j == 0:
                times = sorted({0, 0.5, 1, 2, 3, 4, 5, 6} | ({ret + 0.25} if ret is not None else set()))
                _strips(save, {"truth": truth, "model": gen}, spec.fps, times, f"strip_{name}.png")
        out[name] = {k: {"psnr": float(np.mean([v[0] for v in vals])), "ssim": float(np.mean([v[1] for v in vals]))}
                     for k, vals in acc.items()}
        if ret is not None:
            out[name]["return seconds"] = ret
        print(f"scripted {name}: done", flush=True)
    return out


def _landmark_goals(world, ref, args: argparse.Namespace, spec, wcfg, save: Path | None) -> dict:  # noqa: ANN001
    """The landmark and ghosting goals from the three landmark starts (module doc):
    {"area": {"2s": ...}, "iou": {...}, "ghost share": {"model": ..., "frozen first frame": ...},
    "ghost frames": {...}, "starts": 3, "ghost frames, more starts": {"sides": ..., "frames": n, "ghosted": k}}."""
    from .scripted import GHOST_SIDES, LANDMARK_STARTS, landmark_ahead, scripted_path, start_poses
    from .truth_context import truth_context_frames

    n_frames = spec.first_chunk_frames + spec.frames_per_chunk * math.ceil(
        (PATH_SECONDS * spec.fps + 1 - spec.first_chunk_frames) / spec.frames_per_chunk)
    K = np.broadcast_to(wcfg.intrinsics(), (n_frames, 3, 3)).copy()
    n_starts = LANDMARK_STARTS
    _, toward = start_poses(n_starts, args.seed, landmark_ahead(wcfg.world_seed), wcfg)
    area: dict[str, list[float]] = {}
    iou: dict[str, list[float]] = {}
    ghost: dict[str, list[float]] = {}
    ghosted: dict[str, list[float]] = {}
    context_area: dict[str, dict[str, list[float]]] = {}  # the cache from the truth's latents (truth_context.py)
    context_iou: dict[str, dict[str, list[float]]] = {}
    for j, start in enumerate(toward):
        path = scripted_path("toward-landmark", start, n_frames, wcfg)
        truth = ref.render_many(path.poses, K)
        gen, _ = generate(world, truth[0], path.poses, K, seed=j)
        _mask_scores(gen, truth, spec.fps, area, iou)
        for row, until in (("throughout", n_frames),
                           (f"until {TRUTH_UNTIL:g} s, then its own", TRUTH_UNTIL * spec.fps)):
            chunks = math.ceil(until / spec.frames_per_chunk)
            forced = truth_context_frames(world, truth, path.poses, K, j, chunks)
            _mask_scores(forced, truth, spec.fps, context_area.setdefault(row, {}), context_iou.setdefault(row, {}))
        gen, truth, away = _turn_away(world, ref, start, n_frames, K, j, wcfg)
        for row, frames in (("model", gen), ("frozen first frame", np.broadcast_to(truth[0], truth.shape))):
            shares = np.array([gm.ghost_share(frames[i], truth[i]) for i in away])
            ghost.setdefault(row, []).append(float(np.mean(shares)))
            ghosted.setdefault(row, []).append(float(np.mean(shares > GHOST_MIN)))
        if save is not None and j == 0:
            _strips(save, {"truth": truth, "model": gen}, spec.fps, (0, 1, 1.5, 2, 3, 4, 4.5, 5, 6),
                    "strip_turn-away.png")
    more, turned = ghosts_from(world, ref, GHOST_SIDES, n_frames, wcfg)  # a ghost the three starts miss
    print("landmark goals: done", flush=True)
    return {"area": {k: float(np.mean(v)) for k, v in area.items()},
            "iou": {k: float(np.mean(v)) for k, v in iou.items()},
            "ghost share": {k: float(np.mean(v)) for k, v in ghost.items()},
            "ghost frames": {k: float(np.mean(v)) for k, v in ghosted.items()}, "starts": n_starts,
            "ghost frames, more starts": {"sides": list(GHOST_SIDES), "frames": turned, "ghosted": more},
            "context": {row: {"area": {k: float(np.mean(v)) for k, v in context_area[row].items()},
                              "iou": {k: float(np.mean(v)) for k, v in context_iou[row].items()}}
                        for row in context_area}}


def ghosts_from(world, ref, sides: tuple[float, ...], n_frames: int, wcfg) -> tuple[int, int]:  # noqa: ANN001
    """`turn-360` from `sides` units across the line of sight to the landmark, facing it (seeds 300 on):
    (frames turned 90 degrees or more away that ghost, frames turned that far)."""
    from .scripted import facing_landmark, landmark_ahead

    K = np.broadcast_to(wcfg.intrinsics(), (n_frames, 3, 3)).copy()
    landmark = landmark_ahead(wcfg.world_seed)
    ghosted = turned = 0
    for j, side in enumerate(sides):
        gen, truth, away = _turn_away(world, ref, facing_landmark(side, landmark), n_frames, K, 300 + j, wcfg)
        ghosted += sum(gm.ghost_share(gen[i], truth[i]) > GHOST_MIN for i in away)
        turned += len(away)
    return int(ghosted), turned


def _turn_away(world, ref, start: np.ndarray, n_frames: int, K: np.ndarray, seed: int, wcfg  # noqa: ANN001
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`turn-360` in place from `start`: (the model's frames, the truth's, indices of the frames turned 90
    degrees or more away from where it started)."""
    from .scripted import scripted_path

    turn = scripted_path("turn-360", start, n_frames, wcfg)
    truth = ref.render_many(turn.poses, K)
    gen, _ = generate(world, truth[0], turn.poses, K, seed=seed)
    return gen, truth, np.flatnonzero(gm.turned_away(turn.poses[: len(gen)], 90.0))


def _mask_scores(frames: np.ndarray, truth: np.ndarray, fps: float, area: dict, iou: dict) -> None:
    """Append the block's area ratio and IoU of frames against truth near each of LANDMARK_TIMES."""
    for t in LANDMARK_TIMES:
        for i in gm.window(t, fps, len(frames)):
            scores = gm.mask_scores(frames[i], truth[i])
            if scores is not None:
                area.setdefault(f"{t:g}s", []).append(scores[0])
                iou.setdefault(f"{t:g}s", []).append(scores[1])


def _print_goals(detail: dict, landmark: dict) -> None:
    print("\ngoals: detail (edge energy over the truth's, goal >= 0.75) on the walks")
    print(f"{'':22s}" + "".join(f"{f'{t:g} s':>9s}" for t in EDGE_TIMES))
    for name, by_t in detail.items():
        print(f"{name:22s}" + "".join(f"{by_t.get(f'{t:g}s', math.nan):>9.3f}" for t in EDGE_TIMES))
    if landmark:
        print(f"landmark walk ({landmark['starts']} starts): blue block area over the truth's (goal 0.6-1.6) and "
              "mask IoU (goal >= 0.5)")
        for t in LANDMARK_TIMES:
            k = f"{t:g}s"
            a, u = landmark["area"].get(k, math.nan), landmark["iou"].get(k, math.nan)
            print(f"  {t:g} s: area {a:.3f}, IoU {u:.3f}")
        for row, scores in landmark.get("context", {}).items():
            cells = ", ".join(f"{t:g} s {scores['area'].get(f'{t:g}s', math.nan):.3f} / "
                              f"{scores['iou'].get(f'{t:g}s', math.nan):.3f}" for t in LANDMARK_TIMES)
            print(f"  the cache from the true latents {row}, area / IoU: {cells}")
        g, f = landmark["ghost share"], landmark["ghost frames"]
        print("turned >= 90 deg away from the block (goal: no blue where the truth has none): share of the frame "
              f"blue there {g['model']:.4f} (frozen frame {g['frozen first frame']:.4f}); frames with a ghost "
              f"{f['model']:.2f} (frozen frame {f['frozen first frame']:.2f})")
        m = landmark["ghost frames, more starts"]
        print(f"  the same turn from {len(m['sides'])} more starts ({', '.join(f'{x:g}' for x in m['sides'])} units "
              f"across the line of sight; not the goal's): frames with a ghost {m['ghosted']} of {m['frames']}")


def _print_scripted(scripted: dict, starts: int) -> None:
    print(f"\nscripted paths ({starts} starts each, spawn point first); PSNR dB / SSIM")
    heads = ("model 1 s", "frozen 1 s", "model 5 s", "frozen 5 s", "model at return", "vae at return")
    keys = ("1s model", "1s frozen first frame", "5s model", "5s frozen first frame", "return model",
            "return vae ceiling")
    print(f"{'':20s}" + "".join(f"{h:>17s}" for h in heads))
    for name, row in scripted.items():
        cells = "".join(f"{row[k]['psnr']:>9.2f} / {row[k]['ssim']:.3f}" if k in row else f"{'-':>17s}" for k in keys)
        at = f"  (back at {row['return seconds']:g} s)" if "return seconds" in row else ""
        print(f"{name:20s}{cells}{at}")


def _vae_roundtrip(world, truth: np.ndarray) -> np.ndarray:
    import torch

    from worldwalk.runtime.sana_wm.vae import to_uint8
    from worldwalk.runtime.worlds.bundled_vae import decode_raw, encode_mean

    vae = world.vae
    n = 1 + (len(truth) - 1) // vae.temporal_stride * vae.temporal_stride
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(truth[:n])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        return to_uint8(decode_raw(vae.vae, encode_mean(vae.vae, x)))


def _strips(folder: Path, videos: dict[str, np.ndarray], fps: float,
            times: tuple[float, ...] | list[float] = (0, 0.5, 1, 2, 5, 10, 20), name: str = "strip.png") -> None:
    """One PNG: a row per video, a column per time in `times` (seconds)."""
    try:
        from PIL import Image
    except ImportError:
        return
    folder.mkdir(parents=True, exist_ok=True)
    cols = [int(round(t * fps)) for t in times]
    rows = []
    for v in videos.values():
        rows.append(np.concatenate([v[min(c, len(v) - 1)] for c in cols], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(folder / name)
