"""Stage 1 of `worldwalk train`: the bundled VAE, trained on clips of the reference world.

Windows of pre-rendered random walks, whole frames (crops mislead the small VAE: with 4x4
latents every position is near a border, and it decoded whole frames to one blurred image).
Loss: L1 + MSE on pixels in [-1, 1], an L1 on image gradients (edges stay sharp without a
perceptual network), and a tiny KL that keeps the latent scale bounded. The decoder is trained
on the posterior mean (LTX-2's encoder shares one log-variance channel that starts at std 1;
sampling it only adds noise here, and the world model reads the mean).

The run is bounded by steps and by wall-clock minutes (the budget on a shared 2-core CPU), saves
a resumable checkpoint (model, optimiser, step, RNG) every `ckpt_every` steps and at the end
exports `vae.safetensors` with the latent statistics filled in.

Device and precision (`--device`, `--precision`): see train_device.py; the forwards run under the
device's autocast, the losses in fp32 (`vae_loss`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldwalk.runtime.worlds.bundled_vae import (
    BundledVAEConfig,
    FrameVAE,
    FrameVAEConfig,
    build_vae,
    decode_raw,
    encode_mean,
    vae_config_from_dict,
)

from .state_file import (
    load_state,
    pack_optimizer,
    restoring,
    save_state,
    unpack_optimizer,
    work_file,
    write_safetensors,
)
from .train_device import TrainDevice
from .walks import ClipCache

__all__ = ["DecoderTuneConfig", "PatchCritic", "TrainVAEConfig", "edge_energy_t", "export_vae", "finetune_decoder",
           "read_vae",
           "latent_stats", "train_vae", "vae_loss"]


@dataclass
class TrainVAEConfig:
    steps: int = 4000
    minutes: float = 20.0  # stop after this much wall-clock time, whatever the step
    batch: int = 4
    frames: int = 9  # 4k + 1 frames per crop
    crop: tuple[int, int] = (64, 64)  # (h, w), multiples of the spatial stride
    lr: float = 1e-3
    warmup: int = 100
    kl_weight: float = 1e-6
    sample_posterior: bool = False  # the shared log-variance channel starts at std 1: sampling stalls training
    edge_weight: float = 0.5
    ckpt_every: int = 200
    seed: int = 0


def _batch(frames: np.ndarray, cfg: TrainVAEConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random space-time crops -> (B, 3, T, h, w) in [-1, 1]."""
    n, f, H, W, _ = frames.shape
    h, w = cfg.crop
    out = np.empty((cfg.batch, cfg.frames, h, w, 3), np.uint8)
    for b in range(cfg.batch):
        i, t = rng.integers(n), rng.integers(0, f - cfg.frames + 1)
        y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        clip = frames[i, t : t + cfg.frames, y : y + h, x : x + w]
        out[b] = clip[:, :, ::-1] if rng.uniform() < 0.5 else clip  # mirror
    x = torch.from_numpy(out).permute(0, 4, 1, 2, 3).float()  # (B, 3, T, h, w)
    return x / 127.5 - 1.0


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    return F.l1_loss(dy(a), dy(b)) + F.l1_loss(dx(a), dx(b))


def vae_loss(vae: torch.nn.Module, x: torch.Tensor, cfg: TrainVAEConfig, dev: TrainDevice
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, reconstruction) of a batch x (B, 3, T, h, w) on `dev`: forwards under its autocast, loss in fp32.

    L1 + MSE on pixels, `edge_weight` x the L1 of image gradients, `kl_weight` x the KL (a small L2 on
    the latents for the deterministic FrameVAE)."""
    with dev.autocast():
        if isinstance(vae, FrameVAE):
            z = vae.encode(x)
        else:
            post = vae.encode(x).latent_dist
            post = type(post)(post.parameters.float())  # the posterior (and its KL) in fp32
            z = post.sample() if cfg.sample_posterior else post.mode()
        y = vae.decode(z) if isinstance(vae, FrameVAE) else vae.decode(z).sample
    y = y.float()
    if isinstance(vae, FrameVAE):  # deterministic: a small L2 on the latents stands in for the KL
        kl = 0.5 * z.float().square().sum() / x.numel()
    else:
        kl = post.kl().mean() / x[0].numel()
    rec = F.l1_loss(y, x) + F.mse_loss(y, x)
    return rec + cfg.edge_weight * _grad_l1(y, x) + cfg.kl_weight * kl, y


@torch.no_grad()
def latent_stats(vae: torch.nn.Module, frames: np.ndarray, clips: int = 16, n_frames: int = 13,
                 dev: TrainDevice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (on the CPU) of the posterior means over a few whole clips, with the VAE on
    `dev` in fp32 whatever the precision (they normalise every latent; a few clips are cheap)."""
    dev = dev or TrainDevice()
    zs = []
    for i in range(min(clips, len(frames))):
        x = dev.put(torch.from_numpy(np.array(frames[i, :n_frames])).permute(3, 0, 1, 2)[None]).float() / 127.5 - 1
        zs.append(encode_mean(vae, x).cpu())  # (1, C, t, h, w)
    z = torch.cat([z.transpose(0, 1).flatten(1) for z in zs], dim=1)  # (C, N)
    return z.mean(1), z.std(1)


def export_vae(vae: torch.nn.Module, path: Path, vcfg: BundledVAEConfig | FrameVAEConfig,
               extra: dict | None = None) -> None:
    meta = {"config": json.dumps(vcfg.to_dict()), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    write_safetensors(path, vae.state_dict(), meta)


def _save_ckpt(path: Path, kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
               rng: np.random.Generator, step: int, extra: dict, dev: TrainDevice) -> None:
    otensors, ometa = pack_optimizer(opt)
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **otensors,
               "torch_rng": torch.get_rng_state(), **dev.rng_state()}
    save_state(path, kind, tensors, {"opt": ometa, "step": step, "rng": rng.bit_generator.state,
                                     "device": str(dev), **extra})


def _load_ckpt(path: Path, kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
               rng: np.random.Generator, dev: TrainDevice) -> int:
    """Restore model, optimiser and RNGs from a `_save_ckpt` file (whatever device wrote it) into `model`
    and `opt`, already on `dev`; returns the step."""
    tensors, meta = load_state(path, kind)  # CPU tensors: load_state_dict copies them to the model's device
    with restoring(path):
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        unpack_optimizer(opt, tensors, meta["opt"])  # the optimiser state follows its parameters' device
        rng.bit_generator.state = meta["rng"]
        torch.set_rng_state(tensors["torch_rng"])
        dev.set_rng_state(tensors)
        return int(meta["step"])


def train_vae(cfg: TrainVAEConfig, clips: ClipCache, work: Path, out: Path, resume: bool = True,
              vcfg: BundledVAEConfig | FrameVAEConfig | None = None, progress: bool = True,
              dev: TrainDevice | None = None) -> Path:
    """Train (or resume) the VAE on `dev`; writes checkpoints under `work` and the weights to `out`."""
    vcfg = vcfg or FrameVAEConfig()
    dev = dev or TrainDevice()
    work.mkdir(parents=True, exist_ok=True)
    frames, _, _ = clips.load()
    torch.manual_seed(cfg.seed)
    vae = build_vae(vcfg).to(dev.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    rng = np.random.default_rng(cfg.seed)
    step, ckpt = 0, work / "vae_ckpt.safetensors"
    if resume and (ckpt.exists() or ckpt.with_suffix(".pt").exists()):
        step = _load_ckpt(ckpt, "vae", vae, opt, rng, dev)

    def save() -> None:
        _save_ckpt(ckpt, "vae", vae, opt, rng, step, {"cfg": asdict(cfg)}, dev)

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, desc="vae", disable=not progress, mininterval=5.0)
    t0, ema = time.monotonic(), None
    vae.train()
    while step < cfg.steps and (time.monotonic() - t0) < cfg.minutes * 60:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = dev.put(_batch(frames, cfg, rng))  # (B, 3, T, h, w)
        loss, y = vae_loss(vae, x, cfg, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        mse = F.mse_loss(y.detach().clamp(-1, 1), x).item()
        psnr = 10 * math.log10(4.0 / max(mse, 1e-10))
        ema = psnr if ema is None else 0.98 * ema + 0.02 * psnr
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{ema:.2f}", lr=f"{lr:.1e}")
        if step % cfg.ckpt_every == 0:
            save()
    bar.close()
    save()
    vae.eval()
    mean, std = latent_stats(vae, frames, dev=dev)
    vae.latents_mean.copy_(mean)
    vae.latents_std.copy_(std)
    export_vae(vae, out, vcfg, {"step": step, "train_psnr_ema": ema})
    return out


@dataclass
class DecoderTuneConfig:
    steps: int = 1200
    minutes: float = 12.0
    batch: int = 2
    frames: int = 9
    lr: float = 3e-4
    latent_noise: float = 0.1  # x latent std: the decoder learns to tolerate the world model's errors
    sample_share: float = 0.5  # share of steps on the world model's own latents (when given samples)
    edge_weight: float = 0.5
    adv_weight: float = 0.0  # a patch critic on the decoded frames against the true ones (hinge); 0: off
    adv_start: int = 100  # steps of reconstruction alone before the critic joins
    adv_stop: int | None = None  # the critic leaves at this step (the rest sharpens toward the truth alone)
    detail_weight: float = 0.0  # match each frame's edge energy (the eval's detail measure) at 1x and 2x
    profile_weight: float = 0.0  # match each frame's row and column means (bands across the frame, which the
    # per-pixel losses dilute and the whole-frame detail term pays for)
    detail_tile: int = 0  # match it per square tile of this many pixels (0: over the whole frame, where edges
    # drawn anywhere, a band in a clear sky too, make up for edges missing elsewhere)
    decoder_channels: tuple[int, ...] | None = None  # a new decoder of these widths, trained beside the frozen
    # encoder from scratch (None: tune the decoder the VAE has)
    paired_frames: int = 0  # on the world model's own latents, the per-pixel losses see only the first this many
    # frames of a window (0: all); past them the model has drifted from the true frames, and only the frame's
    # statistics (detail, profile) are matched, so drift teaches no blur and no fading of what it cannot place
    decoder_padding: str | None = None  # the decoder's convolutions pad the frame's edge this way from now on
    # (the weights are kept: a padding mode has none); None keeps the VAE's
    ckpt_every: int = 100
    seed: int = 0


class PatchCritic(nn.Module):
    """A small patch discriminator on frames (N, 3, H, W) in [-1, 1]: a logit per 8x8 patch."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for c in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(cin, c, 4, stride=2, padding=1), nn.GroupNorm(8, c), nn.LeakyReLU(0.2)]
            cin = c
        self.net = nn.Sequential(*layers[:1], *layers[2:], nn.Conv2d(cin, 1, 3, padding=1))  # no norm on the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _frames(y: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B F, 3, H, W)."""
    return y.transpose(1, 2).flatten(0, 1)


def _grey(y: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> the eval's grey levels of 0-255 (0.299 R + 0.587 G + 0.114 B), (N, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    return (y * w).sum(1) * 127.5


def edge_energy_t(y: torch.Tensor) -> torch.Tensor:
    """The eval's edge energy (goal_metrics.edge_energy) per frame of (N, 3, H, W) in [-1, 1], in grey levels
    of 0-255, differentiable: (N,)."""
    g = _grey(y)
    return (g[:, 1:] - g[:, :-1]).abs().mean((1, 2)) + (g[:, :, 1:] - g[:, :, :-1]).abs().mean((1, 2))


def tile_edge_energy_t(y: torch.Tensor, tile: int) -> torch.Tensor:
    """Edge energy (as `edge_energy_t`) of each `tile` x `tile` square of (N, 3, H, W) frames in [-1, 1]:
    (N, ceil((H - 1) / tile), ceil((W - 1) / tile)), over the (H - 1) x (W - 1) pixels that have both
    neighbours."""
    g = _grey(y)[:, None]  # (N, 1, H, W)
    e = (g[:, :, 1:, :-1] - g[:, :, :-1, :-1]).abs() + (g[:, :, :-1, 1:] - g[:, :, :-1, :-1]).abs()
    return F.avg_pool2d(e, tile, ceil_mode=True)[:, 0]


def _profile_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the row means and between the column means of y and x (B, 3, T, H, W): a band across the
    frame costs here what it looks like, while a pixel's own error mostly averages out."""
    return (F.l1_loss(y.mean(-1), x.mean(-1)) + F.l1_loss(y.mean(-2), x.mean(-2))) / 2


def _detail_loss(y: torch.Tensor, x: torch.Tensor, tile: int = 0) -> torch.Tensor:
    """|edge energy of y - that of x| / 255 per frame (or per `tile`-pixel square of it), at full and half
    resolution."""
    def gap(fy: torch.Tensor, fx: torch.Tensor, tile: int) -> torch.Tensor:
        if tile:
            return (tile_edge_energy_t(fy, tile) - tile_edge_energy_t(fx, tile)).abs().mean()
        return (edge_energy_t(fy) - edge_energy_t(fx)).abs().mean()

    fy, fx = _frames(y), _frames(x)
    half = gap(F.avg_pool2d(fy, 2), F.avg_pool2d(fx, 2), max(tile // 2, 1) if tile else 0)
    return (gap(fy, fx, tile) + half) / 255.0


def _decoder_loss(y: torch.Tensor, x: torch.Tensor, cfg: DecoderTuneConfig, paired: int = 0) -> torch.Tensor:
    """Decoded video y against the true x (B, 3, F, H, W): pixels (L1, MSE, gradients) over the first `paired`
    frames (0: all), each frame's edge energy and row and column means over all of them."""
    yp, xp = (y[:, :, :paired], x[:, :, :paired]) if paired else (y, x)
    loss = F.l1_loss(yp, xp) + F.mse_loss(yp, xp) + cfg.edge_weight * _grad_l1(yp, xp)
    if cfg.detail_weight > 0:
        loss = loss + cfg.detail_weight * _detail_loss(y, x, cfg.detail_tile)
    if cfg.profile_weight > 0:
        loss = loss + cfg.profile_weight * _profile_loss(y, x)
    return loss


def _repad_decoder(vae: FrameVAE, padding: str) -> FrameVAE:
    """`vae` with its decoder padding the frame's edge by `padding`, every weight kept."""
    new = FrameVAE(replace(vae.cfg, decoder_padding=padding))
    new.load_state_dict(vae.state_dict())
    return new


def _widen_decoder(vae: FrameVAE, channels: tuple[int, ...]) -> FrameVAE:
    """A FrameVAE with `vae`'s encoder and latent statistics and a new, randomly initialised decoder."""
    new = FrameVAE(replace(vae.cfg, decoder_channels=tuple(channels)))
    new.encoder.load_state_dict(vae.encoder.state_dict())
    new.latents_mean.copy_(vae.latents_mean)
    new.latents_std.copy_(vae.latents_std)
    return new


def read_vae(vae_file: Path) -> tuple[nn.Module, BundledVAEConfig | FrameVAEConfig]:
    """(the VAE in `vae_file`, written by export_vae, built from the config stored with it (a wider decoder
    included), on the CPU; that config)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with restoring(vae_file):
        with safe_open(str(work_file(vae_file)), "pt") as f:
            meta = f.metadata() or {}
        vcfg = vae_config_from_dict(json.loads(meta["config"]))
        vae = build_vae(vcfg)
        vae.load_state_dict(load_file(str(work_file(vae_file))))
    return vae, vcfg


def finetune_decoder(cfg: DecoderTuneConfig, clips: ClipCache, vae_file: Path, work: Path, out: Path,
                     resume: bool = True, progress: bool = True,
                     samples: list[tuple[int, int, torch.Tensor]] | None = None, dev: TrainDevice | None = None
                     ) -> Path:
    """Stage 1b: sharpen the decoder on whole frames with the encoder frozen.

    The latents (and so the trained world model) stay exactly the same; only the pixels they decode to
    improve. Runs after the world model, when its latents are fixed. Half the steps (`sample_share`)
    decode the world model's own latents along training windows (`samples`, from
    `train_world.sample_windows`) against the true frames of those windows, so the decoder learns to
    turn what the model really makes into the frames it should show; the other half decode the true
    latents, with noise, so reconstruction stays sharp. Runs on `dev` (forwards under its autocast, the
    loss in fp32).
    """
    dev = dev or TrainDevice()
    work.mkdir(parents=True, exist_ok=True)
    frames, _, _ = clips.load()
    torch.manual_seed(cfg.seed)
    vae, vcfg = read_vae(vae_file)
    if cfg.decoder_padding and isinstance(vae, FrameVAE) and cfg.decoder_padding != vae.cfg.decoder_padding:
        vae = _repad_decoder(vae, cfg.decoder_padding)
        vcfg = vae.cfg
    if cfg.decoder_channels and isinstance(vae, FrameVAE) and tuple(cfg.decoder_channels) != vae.cfg.dec_channels:
        vae = _widen_decoder(vae, cfg.decoder_channels)
        vcfg = vae.cfg
    vae.to(dev.device)
    vae.encoder.requires_grad_(False)  # the latents (and the world model trained on them) stay fixed
    params = [p for p in vae.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    rng = np.random.default_rng(cfg.seed + 11)
    critic = PatchCritic().to(dev.device)
    opt_c = torch.optim.AdamW(critic.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.5, 0.99))
    step, ckpt, ckpt_c = 0, work / "decoder_ckpt.safetensors", work / "decoder_critic_ckpt.safetensors"
    if resume and (ckpt.exists() or ckpt.with_suffix(".pt").exists()):
        step = _load_ckpt(ckpt, "decoder", vae, opt, rng, dev)
        if cfg.adv_weight > 0 and ckpt_c.exists():
            _load_ckpt(ckpt_c, "decoder-critic", critic, opt_c, np.random.default_rng(), dev)

    def save() -> None:
        _save_ckpt(ckpt, "decoder", vae, opt, rng, step, {}, dev)
        if cfg.adv_weight > 0:
            _save_ckpt(ckpt_c, "decoder-critic", critic, opt_c, np.random.default_rng(), step, {}, dev)

    from tqdm import tqdm

    h, w = frames.shape[2:4]
    bcfg = TrainVAEConfig(batch=cfg.batch, frames=cfg.frames, crop=(h, w))
    std = vae.latents_std.view(1, -1, 1, 1, 1)
    bar = tqdm(total=cfg.steps, initial=step, desc="decoder", disable=not progress, mininterval=5.0)
    t0, ema = time.monotonic(), None
    vae.decoder.train()
    while step < cfg.steps and (time.monotonic() - t0) < cfg.minutes * 60:
        lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        if samples and rng.uniform() < cfg.sample_share:
            i, s, zn = samples[int(rng.integers(len(samples)))]  # zn (1, C, T, h, w) normalised
            n = 1 + vae.cfg.temporal_stride * (zn.shape[2] - 1)
            x = dev.put(torch.from_numpy(np.array(frames[i, s : s + n])).permute(3, 0, 1, 2)[None]).float()
            x = x / 127.5 - 1.0
            z = dev.put(zn) * std + vae.latents_mean.view(1, -1, 1, 1, 1)
            paired = cfg.paired_frames
        else:
            paired = 0
            x = dev.put(_batch(frames, bcfg, rng))  # (B, 3, T, H, W)
            with torch.no_grad(), dev.autocast():
                z = encode_mean(vae, x).float()
            z = z + cfg.latent_noise * std * torch.randn_like(z)
        with dev.autocast():
            y = decode_raw(vae, z)
        y = y.float()  # the loss in fp32
        loss = _decoder_loss(y, x, cfg, paired)
        adv = cfg.adv_weight > 0 and cfg.adv_start <= step < (cfg.adv_stop or cfg.steps)
        if adv:
            with dev.autocast():
                g_adv = -critic(_frames(y)).float().mean()
            loss = loss + cfg.adv_weight * g_adv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if adv:  # the critic: true frames against the decoded ones (hinge)
            with dev.autocast():
                c_loss = (F.relu(1 - critic(_frames(x))).float().mean() +
                          F.relu(1 + critic(_frames(y.detach()))).float().mean())
            opt_c.zero_grad(set_to_none=True)
            c_loss.backward()
            opt_c.step()
        step += 1
        psnr = 10 * math.log10(4.0 / max(F.mse_loss(y.detach().clamp(-1, 1), x).item(), 1e-10))
        ema = psnr if ema is None else 0.98 * ema + 0.02 * psnr
        bar.update(1)
        bar.set_postfix(psnr=f"{ema:.2f}", lr=f"{lr:.1e}")
        if step % cfg.ckpt_every == 0:
            save()
    bar.close()
    save()
    vae.eval()
    export_vae(vae, out, vcfg, {"step": step, "decoder_psnr_ema": ema})
    return out
