"""Stage 2 of `worldwalk train`: the bundled world model, flow matching under teacher forcing.

Data: windows of pre-rendered walks (`walks.ClipCache`), each encoded by the trained VAE on its
own, so its first frame has a latent of its own exactly as a session's first image does: a window
is the first image plus `chunks` chunks of 3 latent frames (1 + 12 * chunks video frames).

A training sample runs the streaming inference path with ground truth in the cache:
1. chunk 0: [clean image latent at t = 0, 3 noisy latent frames] -> velocity, loss on the noisy frames;
2. write the cache: one forward on the clean chunk at t = 0 (gradients flow through the cache);
3. chunk k: 3 noisy latent frames read the cache -> velocity, loss; write its clean frames; repeat.
No mask is needed: the chunk-causal structure is the cache itself. Noise levels are drawn mostly
from the sampler's sigma list (`--timesteps`: the only levels the sampler ever asks for), the
rest uniformly, one level per sample and chunk. The loss is the MSE of the velocity
(noise - x0).

Optional stage `rollout` (Self-Forcing in spirit, cheap): the cache is written from the model's
own sampled chunk (no gradient through the sampler) instead of the ground truth, and the next
chunk is trained against the ground truth, so the model learns to recover from its own drift.

Optional lead (`lead`, Self-Forcing's horizon at the cost of inference): before the trained chunks, the
model walks a random 0 to `lead` chunks of the window on its own, as a session does (its sampler, its own
chunks in the cache, no gradients, no loss), so the trained chunks are met seconds into its own drift while
their targets stay the truth. A rollout seconds long with gradients costs a backward through every chunk;
the lead costs only the sampler's forwards, so the drift of 6 s is seen at the price of a few chunks.

Optional motion weight (`motion_weight` = a): each latent pixel's squared error is weighted by
1 + a * c / mean(c), c its true latent's mean absolute change from the frame before (over channels,
the mean over the sample's frame), then normalised by the weights' mean. Most of a frame (sky, far
ground) barely changes in a chunk, and there copying the last frame is nearly right; what a walk
changes (a thing growing as it nears, parallax) is a few percent of the pixels and of the loss.

Weight averaging (`ema`): the weights exported are an exponential moving average of the trained
ones, so what ships does not depend on where the last few updates happened to land: at the learning
rates a fine-tune uses, what a rollout keeps over seconds (the landmark's area on the walk at it)
swung between checkpoints 100 steps apart while the loss did not move.

Camera augmentation: with probability `augment`, every pose of a window is moved by one random
rigid motion (yaw about world y, a horizontal shift), so the Plücker input is seen away from the
origin as it is late in a long session.

Device and precision (`--device`, `--precision`): see train_device.py. A batch is built on the host and
moved to the device once; the forwards run under its autocast, the loss in fp32.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldwalk.runtime.safe_files import check_regular
from worldwalk.runtime.sana_wm.camera import CameraInputs
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.vae import SanaWMVAE
from worldwalk.runtime.worlds.bundled_vae import FrameVAEStream
from worldwalk.runtime.worlds.bundled_world import (
    BundledConfig,
    camera_inputs,
    chunk_latent_indices,
    empty_text,
    relative_poses,
)

from .state_file import load_state, pack_optimizer, restoring, save_state, unpack_optimizer, write_safetensors
from .train_device import TrainDevice
from .walks import ClipCache

__all__ = ["TrainWorldConfig", "encode_windows", "export_world", "motion_weights", "sample_windows", "train_world",
           "world_loss"]


@dataclass
class TrainWorldConfig:
    steps: int = 1200
    minutes: float = 60.0
    batch: int = 2  # 720 tokens a chunk: twice the steps of a batch of 4 in the same time
    chunks: int = 2  # chunks after the first per sample (the first chunk is always trained)
    lr: float = 4e-4
    warmup: int = 50
    list_prob: float = 0.8  # share of noise levels taken from the sampler's sigma list
    augment: float = 0.5
    augment_shift: float = 3.0  # model units, radius of the random horizontal shift
    rollout_prob: float = 0.0  # share of samples whose cache is written from the model's own chunks
    context_noise: float = 0.0  # the cache is written from x0 noised to a level drawn in [0, context_noise]
    lead: int = 0  # at most this many chunks the model walks on its own before the trained ones (0: none)
    motion_weight: float = 0.0  # the loss weighted up where the true latents change from the frame before (0: off)
    ema: float = 0.0  # decay of an exponential moving average of the weights, exported instead of them (0: off)
    ckpt_every: int = 50
    seed: int = 0


@torch.no_grad()
def encode_windows(vae: FrameVAEStream | SanaWMVAE, clips: ClipCache, window: int, hop: int, progress: bool = True,
                   dev: TrainDevice | None = None) -> dict[str, np.ndarray]:
    """Encode every window of `window` frames (every `hop` frames) of every clip, with the VAE on `dev`.

    Always in fp32, whatever `dev.precision`: these latents are the data set every later stage reads, and a
    session encodes its first image in fp32 (one pass over the clips, cheap next to training).
    Returns latents (N, C, T, h, w) normalised as SanaWMVAE does, poses (N, window, 4, 4) and
    intrinsics (N, window, 3, 3).
    """
    from tqdm import tqdm

    dev = dev or TrainDevice()
    frames, poses, intr = clips.load()
    n, f = frames.shape[:2]
    starts = list(range(0, f - window + 1, hop))
    lat, ps, ks = [], [], []
    for i in tqdm(range(n), desc="encode", disable=not progress, mininterval=5.0):
        for s in starts:
            x = torch.from_numpy(np.array(frames[i, s : s + window])).permute(3, 0, 1, 2)[None]
            x = dev.put(x).float() / 127.5 - 1.0  # (1, 3, F, H, W)
            lat.append(_encode_normalised(vae, x)[0].cpu().numpy())
            ps.append(poses[i, s : s + window])
            ks.append(intr[i, s : s + window])
    return {"latents": np.stack(lat).astype(np.float32), "poses": np.stack(ps), "intrinsics": np.stack(ks)}


def _encode_normalised(vae, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Normalised latents as the world model sees them, from FrameVAEStream or SanaWMVAE."""
    if hasattr(vae, "encode_video"):
        return vae.encode_video(x)
    z = vae.vae.encode(x, causal=True).latent_dist.mode()
    mean, std, sf = vae._stats(z)
    return (z - mean) * sf / std


def _augment(rng: np.random.Generator, shift: float) -> np.ndarray:
    """A random rigid motion (4, 4) of model space: yaw about y and a horizontal shift."""
    a = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(a), math.sin(a)
    m = np.eye(4)
    m[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    r, b = shift * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    m[0, 3], m[2, 3] = r * math.cos(b), r * math.sin(b)
    return m


def _cameras(poses: np.ndarray, intr: np.ndarray, n_chunks: int, cfg: BundledConfig, tcfg: TrainWorldConfig,
             rng: np.random.Generator) -> list[CameraInputs]:
    """Per chunk camera inputs (batch 1) for one window of poses (F, 4, 4)."""
    rel = relative_poses(poses, poses[0], cfg.translation_scale)
    if rng.uniform() < tcfg.augment:
        rel = _augment(rng, tcfg.augment_shift)[None] @ rel
    pd = {i: rel[i] for i in range(len(rel))}
    kd = {i: intr[i] for i in range(len(intr))}
    return [camera_inputs(pd, kd, chunk_latent_indices(k, cfg.chunk_latents), cfg) for k in range(n_chunks)]


def _sigmas(rng: np.random.Generator, n: int, sampler: FlowSampler, list_prob: float) -> np.ndarray:
    listed = np.array(sampler.sigmas[:-1])
    pick = listed[rng.integers(0, len(listed), n)]
    uni = rng.uniform(0.02, 1.0, n)
    return np.where(rng.uniform(size=n) < list_prob, pick, uni)


def _wake_plucker(model: SanaWMStreamingTransformer, seed: int) -> None:
    """Give the Plücker embedder a random init if it is all zeros.

    The model zero-initialises both the Plücker embedder and every block's Plücker projection, as
    the official code does for fine-tuning a pretrained model; from scratch that product of two
    zeros gets no gradient and the branch never learns. With the projections still zero, a random
    embedder changes no output and lets the branch learn.
    """
    w = model.plucker_embedder.proj.weight
    if torch.count_nonzero(w) == 0:
        g = torch.Generator().manual_seed(seed + 101)
        with torch.no_grad():
            w.copy_(torch.randn(w.shape, generator=g) * (1.0 / w[0].numel()) ** 0.5)


def export_world(model: SanaWMStreamingTransformer, path: Path, cfg: BundledConfig, extra: dict | None = None,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
    """The weights (`model`'s own unless `weights` is given) with the model's config and sampler as metadata."""
    meta = {"config": json.dumps(model.cfg.to_dict()), "translation_scale": json.dumps(cfg.translation_scale),
            "sampler": json.dumps(asdict(cfg.sampler)),
            **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    write_safetensors(path, model.state_dict() if weights is None else weights, meta)


class WeightAverage:
    """An exponential moving average of a model's floating-point weights (its other buffers are copied as
    they are). The decay ramps up as (1 + n) / (10 + n) over the first updates, so the average is not held
    at its starting point."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        self.model, self.decay, self.updates = model, decay, 0
        own = model.state_dict()
        self.avg = {k: (state[k] if state and k in state else v).detach().clone().to(v.device)
                    for k, v in own.items()}

    def update(self) -> None:
        self.updates += 1
        move_average(self.avg, self.model.state_dict(), ramped_decay(self.decay, self.updates))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.avg.items()}


def ramped_decay(decay: float, updates: int) -> float:
    """A moving average's decay at its `updates`-th update: (1 + n) / (10 + n) until that reaches `decay`."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def move_average(avg: dict[str, torch.Tensor], own: dict[str, torch.Tensor], decay: float) -> None:
    """One update of a weights' moving average `avg` (in place) toward a model's state `own`: floating-point
    weights by `decay`, other buffers copied."""
    for k, v in own.items():
        if v.is_floating_point():
            avg[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        else:
            avg[k].copy_(v)


def train_world(tcfg: TrainWorldConfig, data: dict[str, np.ndarray], work: Path, out: Path, cfg: BundledConfig,
                resume: bool = True, progress: bool = True, tag: str = "world", init_weights: Path | None = None,
                dev: TrainDevice | None = None) -> Path:
    """Train (or resume) the world model on encoded windows on `dev`; checkpoints in `work`, weights to `out`.

    Without a checkpoint to resume, `init_weights` (a bundled_world.safetensors) gives the starting
    weights, so a run can continue the shipped model instead of starting from scratch."""
    dev = dev or TrainDevice()
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    model = SanaWMStreamingTransformer(cfg.transformer)
    sampler = FlowSampler(cfg.sampler)
    lat, poses, intr = data["latents"], data["poses"], data["intrinsics"]
    n_win, L = lat.shape[0], cfg.chunk_latents
    n_chunks = min(1 + tcfg.lead + tcfg.chunks, (lat.shape[2] - 1) // L)  # the lead's chunks, then the trained
    trained = min(1 + tcfg.chunks, n_chunks)
    step, ckpt = 0, work / f"{tag}_ckpt.safetensors"
    spent = 0.0  # seconds of training before this run (a resumed run carries on the schedule)
    init = work / "world_ckpt.safetensors"
    state = None  # a checkpoint's (tensors, meta), read on the CPU whatever device wrote it
    averaged: dict[str, torch.Tensor] = {}  # the weights' moving average, when resumed with one
    if resume and (ckpt.exists() or ckpt.with_suffix(".pt").exists()):
        state = tensors, meta = load_state(ckpt, "world")
        with restoring(ckpt):
            model.load_state_dict(_strip(tensors, "model."))
            step, rng.bit_generator.state = int(meta["step"]), meta["rng"]
            torch.set_rng_state(tensors["torch_rng"])
            spent = float(meta.get("seconds", 0.0))
            averaged = _strip(tensors, "ema.")
    elif init_weights is not None:  # continue from shipped weights (a new run: fresh optimiser and schedule)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(check_regular(init_weights))))
        print(f"{tag}: starting from the weights in {init_weights}", flush=True)
    elif tag != "world" and init.exists():  # a later stage starts from the teacher-forced model
        with restoring(init):
            model.load_state_dict(_strip(load_state(init, "world")[0], "model."))
    _wake_plucker(model, tcfg.seed)
    model.to(dev.device)  # fp32 master weights; the optimiser is made on the device and its state loaded there
    average = WeightAverage(model, tcfg.ema, averaged) if tcfg.ema > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=0.01, betas=(0.9, 0.99))
    if state is not None:
        with restoring(ckpt):
            unpack_optimizer(opt, state[0], state[1]["opt"])
            dev.set_rng_state(state[0])
        state = None  # the host copy of the checkpoint is not kept for the run

    def seconds() -> float:
        return spent + time.monotonic() - t0

    def save() -> None:
        otensors, ometa = pack_optimizer(opt)
        mean_weights = average.state_dict() if average else None  # what is exported, when averaged
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **otensors,
                   "torch_rng": torch.get_rng_state(), **dev.rng_state(),
                   **{f"ema.{k}": v for k, v in (mean_weights or {}).items()}}
        save_state(ckpt, "world", tensors, {"opt": ometa, "step": step, "seconds": seconds(),
                                            "rng": rng.bit_generator.state, "cfg": asdict(tcfg),
                                            "device": str(dev)})
        export_world(model, out, cfg, {"step": step, "stage": tag, "ema": tcfg.ema}, mean_weights)

    from tqdm import tqdm

    bar = tqdm(total=tcfg.steps, initial=step, desc=tag, disable=not progress, mininterval=5.0)
    t0, ema = time.monotonic(), None
    B = tcfg.batch
    text, mask = (dev.put(x) for x in empty_text(cfg, B))
    model.train()
    while step < tcfg.steps and seconds() < tcfg.minutes * 60:
        # the schedule follows whichever budget runs out first, so a slower machine still anneals
        progress = max(step / tcfg.steps, seconds() / (tcfg.minutes * 60))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        lr = tcfg.lr * min(1.0, (step + 1) / tcfg.warmup) * (0.1 + 0.9 * cosine)
        for g in opt.param_groups:
            g["lr"] = lr
        # the batch, built on the host and moved to the device once
        idx = rng.integers(0, n_win, B)
        lead = int(rng.integers(0, n_chunks - trained + 1)) if n_chunks > trained else 0  # this step's lead
        chunks = lead + trained
        z = dev.put(torch.from_numpy(lat[idx, :, : 1 + L * chunks]))  # (B, C, 1 + L chunks, h, w)
        cams = [_cameras(poses[i], intr[i], chunks, cfg, tcfg, rng) for i in idx]
        cams = [CameraInputs(dev.put(torch.cat([c[k].conditions for c in cams])),
                             dev.put(torch.cat([c[k].plucker for c in cams]))) for k in range(chunks)]
        rollout = rng.uniform() < tcfg.rollout_prob
        sigmas = np.stack([_sigmas(rng, B, sampler, tcfg.list_prob) for _ in range(chunks)])  # (chunks, B)
        loss = world_loss(model, sampler, z, cams, dev.put(torch.from_numpy(sigmas).float()), text, mask, L, dev,
                          rollout, tcfg.context_noise, lead, tcfg.motion_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if average:
            average.update()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr:.1e}")
        if step % tcfg.ckpt_every == 0:
            save()
    bar.close()
    save()
    return out


def world_loss(model: SanaWMStreamingTransformer, sampler: FlowSampler, z: torch.Tensor, cams: list[CameraInputs],
               sigmas: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, L: int, dev: TrainDevice,
               rollout: bool = False, context_noise: float = 0.0, lead: int = 0, motion_weight: float = 0.0
               ) -> torch.Tensor:
    """The flow-matching loss (fp32 scalar) of one batch through the streaming cache (module doc, steps 1-3).

    z (B, C, T, h, w), cams (one per chunk), sigmas (chunks, B) and text/mask all on `dev`; the forwards run
    under its autocast. With `rollout` the cache is written from the model's own samples, otherwise from
    the truth noised up to `context_noise`. The first `lead` chunks are the model's own, untrained (module doc).
    """
    B = z.shape[0]
    cache, losses = None, []
    for k in range(len(cams)):
        lo = 0 if k == 0 else 1 + L * k
        hi = 1 + L * (k + 1)
        x0 = z[:, :, lo:hi]  # (B, C, T, h, w)
        own = k < lead  # the model walks this chunk on its own: no loss, its sample in the cache, no gradients
        if not own:
            sig = sigmas[k].view(B, 1, 1, 1, 1)
            eps = torch.randn_like(x0)
            xt = (1 - sig) * x0 + sig * eps
            t = (sig.view(B, 1) * 1000).floor().expand(B, x0.shape[2]).clone()
            if k == 0:  # the image latent is clean, at t = 0
                xt[:, :, :1], t[:, :1] = x0[:, :, :1], 0.0
            with dev.autocast():
                v, _ = model(xt, t, text, mask, cams[k], cache, False)
            target = eps - x0
            first = 1 if k == 0 else 0
            if motion_weight > 0:  # where the truth changes from its frame before, weighted up (module doc)
                err = (v[:, :, first:].float() - target[:, :, first:]) ** 2  # (B, C, T, h, w)
                w = motion_weights(z, lo + first, hi, motion_weight)  # (B, 1, T, h, w)
                losses.append((w * err).mean() / w.mean())
            else:
                losses.append(F.mse_loss(v[:, :, first:].float(), target[:, :, first:]))
        if k + 1 < len(cams):
            ctx = x0
            if rollout or own:  # write the cache from the model's own sample of this chunk
                with torch.no_grad():
                    prefix = x0[:, :, :1] if k == 0 else None
                    shape = (B, x0.shape[1], L, x0.shape[3], x0.shape[4])
                    ctx = _sample_chunk(model, sampler, cams[k], cache, text, mask, shape, dev, prefix)
            elif context_noise > 0:  # a slightly wrong context, as the model's own chunks are
                s_ctx = torch.rand(B, 1, 1, 1, 1, device=x0.device) * context_noise
                ctx = (1 - s_ctx) * x0 + s_ctx * torch.randn_like(x0)
                if k == 0:
                    ctx[:, :, :1] = x0[:, :, :1]  # the first image is the player's own, exact
            with torch.set_grad_enabled(torch.is_grad_enabled() and not own), dev.autocast():
                _, cache = model(ctx, torch.zeros(B, x0.shape[2], device=x0.device), text, mask, cams[k], cache, True)
    return torch.stack(losses).mean()


def motion_weights(z: torch.Tensor, lo: int, hi: int, a: float) -> torch.Tensor:
    """The loss weights (B, 1, hi - lo, h, w) of latent frames lo..hi-1 of z (B, C, T, h, w), lo >= 1:
    1 + a * c / mean(c), c each pixel's mean absolute change (over channels) from the frame before, the
    mean over the sample's frames."""
    change = (z[:, :, lo:hi] - z[:, :, lo - 1 : hi - 1]).abs().mean(1, keepdim=True).float()
    return 1 + a * change / change.mean(dim=(2, 3, 4), keepdim=True).clamp_min(1e-6)


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _sample_chunk(model, sampler, cam, cache, text, mask, shape, dev, prefix=None) -> torch.Tensor:  # noqa: ANN001
    """The sampler on one chunk reading `cache` (no gradients; fp32 latents, the forwards under `dev`'s
    autocast); a clean prefix is prepended."""
    gen = dev.generator(int(torch.randint(0, 2**31, (1,))))
    with dev.autocast():
        return sampler.denoise(lambda x, t: model(x, t, text, mask, cam, cache, False)[0], tuple(shape), gen,
                               dev.device, torch.float32, prefix)


@torch.no_grad()
def sample_windows(model: SanaWMStreamingTransformer, vae: FrameVAEStream, frames: np.ndarray, poses: np.ndarray,
                   intr: np.ndarray, cfg: BundledConfig, n: int, seed: int, progress: bool = True,
                   dev: TrainDevice | None = None, window_frames: int | None = None
                   ) -> list[tuple[int, int, torch.Tensor]]:
    """The world model's own latents along `n` random training windows, as a session makes them.

    Each window starts from its true first image and follows its poses for as many chunks as fit in
    `window_frames` video frames and the clip (None: the whole clip; 49 frames are 3 s, 12 chunks of one
    latent frame or 4 of three), so the latents drift as far as a session's do in that time whatever the
    chunk size, and longer clips show longer drift; returns (clip, first
    frame, latents (1, C, 1 + n_chunks L, h, w) normalised, fp32 on the CPU) per window. The model and
    the VAE run where they are (`dev`'s device), under its autocast.
    """
    from tqdm import tqdm

    dev = dev or TrainDevice()
    rng = np.random.default_rng(seed)
    stream = LatentRollout(model.eval(), FlowSampler(cfg.sampler))
    text, mask = (dev.put(x) for x in empty_text(cfg))
    L = cfg.chunk_latents
    n_chunks = max(1, (min(window_frames or frames.shape[1], frames.shape[1]) - 1) // (cfg.stride * L))
    window = 1 + cfg.stride * L * n_chunks
    h, w = cfg.vae.latent_hw
    no_augment = TrainWorldConfig(augment=0.0)
    out = []
    for j in tqdm(range(n), desc="sample", disable=not progress, mininterval=5.0):
        i, s = int(rng.integers(len(frames))), int(rng.integers(0, frames.shape[1] - window + 1))
        image = dev.put(torch.from_numpy(np.array(frames[i, s : s + 1])).permute(3, 0, 1, 2)[None]).float()
        image = image / 127.5 - 1.0  # (1, 3, 1, H, W)
        cams = _cameras(poses[i, s : s + window], intr[i, s : s + window], n_chunks, cfg, no_augment, rng)
        stream.reset(text, mask, seed + j)
        with dev.autocast():
            z = [stream.step(cams[k], (1, cfg.transformer.in_channels, L, h, w),
                             vae.encode_video(image).float() if k == 0 else None) for k in range(n_chunks)]
        out.append((i, s, torch.cat(z, 2).float().cpu()))  # (1, C, 1 + n_chunks L, h, w)
    return out
