"""Stage `distill` of `worldwalk train`: a few-step student with short chunks, distilled from the world model.

SANA-WM's causal model is distilled (`../shared/design/SANA-WM.md`, last section), and that is why its few
steps give sharp frames where a model trained by flow matching alone lands on the average of what could be in
view. This stage follows the same recipe at the bundled model's size, in three resumable phases:

1. `ode-data`: the teacher (the world stage's model, `bundled_world.safetensors` in the work folder) runs a
   many-step deterministic Euler ODE (`teacher_steps`, on a grid that holds the student's sigmas) along
   training windows, chunk by chunk on its own cache, from the window's true first image. Kept per window:
   the state of the trajectory at each of the student's sigmas and where it lands (x0).
2. `ode`: the student regresses the teacher's landing point from each of those states, its cache written
   from the teacher's landing points (CausVid's ODE initialisation).
3. `dmd`: Self-Forcing with distribution matching. The student rolls a window out chunk by chunk on its own
   cache with its own few-step sampler (gradients through the last step of each chunk, the cache written from
   its own detached output), then the window, noised to a random level per teacher chunk, is scored twice:
   by the teacher (the "real" score) and by a fake score (a copy of the teacher, trained beside the student by
   flow matching on the student's rollouts). The student moves along (fake - real), normalised as DMD does.
   With `gan_weight` > 0 a small latent discriminator also pushes the student's latents toward the true
   latents of the reference world's renders (hinge loss). Two anchors hold the student to the truth where
   it can know: `regress_weight` adds the world stage's flow-matching loss on the window's true latents
   (teacher-forced), `rollout_weight` the distance of its own rollout to them (what a free run drifts from,
   such as a landmark left behind when the camera turns away).

The student is the teacher's transformer with `chunk_latents` latent frames a chunk (1: 4 video frames at
the VAE's temporal stride 4, 250 ms at 16 fps; the first chunk is the first image and 1 latent frame) and
the sampler `timesteps` (default 1000, 500, 0: two passes and the cache write a chunk). It starts from the
teacher's weights: the weights read a latent frame at a time, so the chunk size is the cache's business.

Checkpoints (safetensors, `state_file.py`) every `ckpt_minutes` and at the end of each phase; the weights
are exported to `<work>/distill/` with the VAE and the start frame beside them, a folder `worldwalk eval
--checkpoint` and `play --checkpoint` read. `--device cuda` runs every phase on a GPU under autocast.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldwalk.runtime.sana_wm.sampler import FlowSampler, SamplerConfig
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.worlds.bundled_world import (
    START_FILE,
    VAE_FILE,
    WEIGHTS,
    WORLD_FILE,
    BundledConfig,
    empty_text,
)

from .state_file import load_state, pack_optimizer, save_state, unpack_optimizer
from .train_device import TrainDevice
from .train_world import TrainWorldConfig, _cameras, _strip, export_world, move_average, ramped_decay, world_loss

__all__ = ["DistillConfig", "StudentStartError", "distill", "grown_student", "kept_steps", "kept_world",
           "student_config"]


@dataclass
class DistillConfig:
    chunk_latents: int = 1  # the student's latent frames a chunk (1: 4 video frames)
    timesteps: tuple[int, ...] = (1000, 500, 0)  # the student's sampler
    teacher_steps: int = 16  # Euler steps of the teacher's ODE (the student's sigmas are added to the grid)
    window_chunks: int = 3  # a training window: the first image and this many of the teacher's chunks
    ode_windows: int = 160
    ode_steps: int = 400
    ode_minutes: float = 20.0
    ode_lr: float = 1e-4
    dmd_steps: int = 4000
    dmd_minutes: float = 85.0
    lr: float = 3e-5  # the student in the dmd phase
    fake_lr: float = 1e-4
    fake_ratio: int = 2  # fake-score updates per student update (a rollout each)
    gan_weight: float = 0.0  # latent discriminator against the true renders' latents (0: off)
    ema: float = 0.0  # export a moving average of the student's weights with this decay (0: the student itself)
    regress_weight: float = 0.0  # the world stage's flow-matching loss on the window's true latents, added (0: off)
    rollout_weight: float = 0.0  # the student's own rollout against the window's true latents (MSE), added (0: off)
    return_weight: float = 0.0  # the same, only on latents back at the window's first view (what the sink holds)
    sigma_range: tuple[float, float] = (0.02, 0.98)  # noise levels the scores are taken at
    ckpt_minutes: float = 4.0
    keep_every: int = 0  # also keep the exported student every N dmd steps in <work>/distill/steps/ (0: off)
    kv_window: int = 0  # softmax blocks' attention window for teacher, fake score and student (0: the teacher's)
    student_init: str = ""  # a world file the student starts from ("": the teacher's weights)
    grow_blocks: int = 0  # blocks appended to the student, each starting as the identity (a larger student)
    grow_lr: float = 10.0  # the appended blocks' learning rate over the student's (their outputs start at zero)
    seed: int = 0


def student_config(cfg: BundledConfig, dcfg: DistillConfig) -> BundledConfig:
    """The teacher's config with the student's chunk size and sampler."""
    tr = dataclasses.replace(cfg.transformer, chunk_latent_frames=dcfg.chunk_latents)
    return dataclasses.replace(cfg, transformer=tr, sampler=SamplerConfig(timesteps=tuple(dcfg.timesteps)))


class StudentStartError(ValueError):
    """The student's start (`--distill-student`) is missing or is not a world of the teacher's shape."""


def grown_student(start: dict[str, torch.Tensor], scfg: BundledConfig, grow: int
                  ) -> tuple[SanaWMStreamingTransformer, BundledConfig, list[int]]:
    """The student from the weights `start` with `grow` blocks appended: (student, its config, the new blocks'
    indices). A new block is a copy of the last block of its kind (GDN or softmax) with its attention,
    cross-attention and FFN outputs zeroed: the residual stream passes it unchanged, so the grown student
    computes what `start` does, and its inner layers are trained ones from the first update (a new block at
    its initial weights would read zero keys: the short conv starts at zero). `scfg` gives everything but
    the number of blocks."""
    have = 1 + max(int(k.split(".")[1]) for k in start if k.startswith("blocks."))
    tr = dataclasses.replace(scfg.transformer, num_layers=have + grow)
    scfg = dataclasses.replace(scfg, transformer=tr)
    student = SanaWMStreamingTransformer(tr)
    new = list(range(have, have + grow))
    try:
        missing, unexpected = student.load_state_dict(start, strict=False)
    except RuntimeError as e:
        raise StudentStartError(f"the student's start does not fit the teacher's transformer (width, heads, "
                                f"channels must match; only the number of blocks may differ): {e}") from None
    missing = [k for k in missing if not any(k.startswith(f"blocks.{i}.") for i in new)]
    if missing or unexpected:
        raise StudentStartError(f"the student's start does not fit the teacher's transformer: missing "
                                f"{missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        for i in new:
            block = student.blocks[i]
            source = max(j for j in range(have) if student.blocks[j].softmax == block.softmax)
            own = block.state_dict()
            block.load_state_dict({k: v for k, v in student.blocks[source].state_dict().items() if k in own},
                                  strict=False)
            for out in (block.attn.proj, block.cross_attn.proj, block.mlp.point_conv.conv):
                out.weight.zero_()
                if out.bias is not None:
                    out.bias.zero_()
    return student, scfg, new


def _read_world(path: Path) -> dict[str, torch.Tensor]:
    """A world file's transformer weights (a `bundled_world.safetensors`), with a clear error when it is not one."""
    from safetensors.torch import load_file

    from worldwalk.runtime.safe_files import check_regular

    if not path.is_file():
        raise StudentStartError(f"the student's start {path} does not exist; give --distill-student a "
                                "bundled_world.safetensors file")
    check_regular(path)
    try:
        weights = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
        raise StudentStartError(f"the student's start {path} is not a safetensors world file ({e}); give "
                                "--distill-student a bundled_world.safetensors file") from None
    if not any(k.startswith("blocks.") for k in weights):
        raise StudentStartError(f"the student's start {path} holds no transformer blocks: give --distill-student a "
                                "world file (bundled_world.safetensors, not the VAE)")
    return weights


def _chunks(n_latents: int, L: int) -> list[tuple[int, int]]:
    """[lo, hi) latent ranges of the chunks of a window of `n_latents` (the first holds the image latent)."""
    out, lo = [], 0
    while True:
        hi = 1 + L * (len(out) + 1)
        if hi > n_latents:
            return out
        out.append((lo, hi))
        lo = hi


def _cams(poses: np.ndarray, intr: np.ndarray, n_chunks: int, cfg: BundledConfig, dev: TrainDevice) -> list:
    """Per chunk camera inputs (batch 1) on the device, no augmentation (student and teacher see the same)."""
    from worldwalk.runtime.sana_wm.camera import CameraInputs

    cams = _cameras(poses, intr, n_chunks, cfg, TrainWorldConfig(augment=0.0), np.random.default_rng(0))
    return [CameraInputs(dev.put(c.conditions), dev.put(c.plucker)) for c in cams]


def _t(sigma: float | torch.Tensor, B: int, T: int, device: torch.device) -> torch.Tensor:
    s = sigma if torch.is_tensor(sigma) else torch.tensor(float(sigma))
    return (s.float().view(-1, 1) * 1000).floor().expand(B, T).clone().to(device)


def _forward(model, x, t, text, mask, cam, cache, dev, write=False):  # noqa: ANN001
    with dev.autocast():
        v, new = model(x, t, text, mask, cam, cache, write)
    return v.float(), new


@torch.no_grad()
def teacher_trajectory(teacher: SanaWMStreamingTransformer, image: torch.Tensor, cams: list, n_latents: int,
                       L: int, grid: list[float], keep: list[float], gen: torch.Generator, dev: TrainDevice
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's deterministic Euler ODE chunk by chunk on its own cache from the clean `image` latent
    (1, C, 1, h, w): returns (states at the sigmas `keep` (S, C, n, h, w), landing points (1, C, n, h, w)),
    n = n_latents, frame 0 the image itself."""
    text, mask = (dev.put(x) for x in empty_text(_cfg_of(teacher)))
    C, h, w = image.shape[1], image.shape[3], image.shape[4]
    states = torch.zeros(len(keep), C, n_latents, h, w, device=image.device)
    x0s = torch.zeros(1, C, n_latents, h, w, device=image.device)
    x0s[:, :, :1] = image
    states[:, :, :1] = image[0]
    cache = None
    for k, (lo, hi) in enumerate(_chunks(n_latents, L)):
        P = 1 if k == 0 else 0
        x = torch.randn(1, C, hi - lo - P, h, w, generator=gen, device=gen.device).to(image.device)
        for a, b in zip(grid[:-1], grid[1:], strict=True):
            for j, s in enumerate(keep):
                if abs(a - s) < 1e-6:
                    states[j, :, lo + P : hi] = x[0]
            xin = torch.cat([image, x], 2) if P else x
            t = _t(a, 1, xin.shape[2], xin.device)
            if P:
                t[:, :1] = 0.0
            v, _ = _forward(teacher, xin, t, text, mask, cams[k], cache, dev)
            x = x + (b - a) * v[:, :, P:]
        x0s[:, :, lo + P : hi] = x
        clean = x0s[:, :, lo:hi]
        _, cache = _forward(teacher, clean, torch.zeros(1, hi - lo, device=clean.device), text, mask, cams[k], cache,
                            dev, write=True)
    return states, x0s


class Windows:
    """Training windows of the clip cache (as the encode stage cuts them: `window` frames every `hop`), with
    the first image encoded on demand by the VAE (fp32, no gradients): the distill stage needs the first
    image's latent and the poses, and the true latents only for the critic."""

    def __init__(self, clips, vae, window: int, hop: int, dev: TrainDevice) -> None:  # noqa: ANN001
        self.frames, self.poses, self.intr = clips.load()
        self.vae, self.window, self.dev = vae, window, dev
        f = self.frames.shape[1]
        if f < window:
            raise SystemExit(f"worldwalk train: the clips have {f} frames, fewer than the {window}-frame training "
                             f"window; make longer clips (`--stage data --clip-frames {window}` or more) or pass a "
                             "smaller --distill-window")
        self.index = [(i, s) for i in range(self.frames.shape[0]) for s in range(0, f - window + 1, hop)]

    def __len__(self) -> int:
        return len(self.index)

    @torch.no_grad()
    def latents(self, j: int, n: int = 1) -> torch.Tensor:
        """Normalised latents (1, C, n, h, w) of window j's first 1 + stride (n - 1) frames."""
        i, s = self.index[j]
        stride = self.vae.temporal_stride
        x = torch.from_numpy(np.array(self.frames[i, s : s + 1 + stride * (n - 1)])).permute(3, 0, 1, 2)[None]
        x = self.dev.put(x).float() / 127.5 - 1.0
        return self.vae.encode_video(x).float()

    def returns(self, j: int, n: int, stride: int, near: float = 0.2, degrees: float = 6.0) -> np.ndarray:
        """Which of window j's first `n` latents (bool (n,); latent k >= 1 holds frames (k - 1) stride + 1 ..
        k stride) hold a frame back at the first frame's view: within `near` units and `degrees` of it, after the walk
        went three times as far from it."""
        i, s = self.index[j]
        poses = np.asarray(self.poses[i, s : s + 1 + stride * (n - 1)], dtype=np.float64)  # (F, 4, 4)
        dist = np.linalg.norm(poses[:, :3, 3] - poses[0, :3, 3], axis=1)
        cos = (np.einsum("fij,ij->f", poses[:, :3, :3], poses[0, :3, :3]) - 1.0) / 2.0
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        gone = np.maximum.accumulate((dist > 3 * near) | (angle > 3 * degrees))  # it left the view first
        back = gone & (dist <= near) & (angle <= degrees)
        out = np.zeros(n, dtype=bool)
        for k in range(1, n):
            out[k] = bool(back[(k - 1) * stride + 1 : k * stride + 1].any())
        return out

    def cameras(self, j: int, n_chunks: int, cfg: BundledConfig) -> list:
        i, s = self.index[j]
        return _cams(self.poses[i, s : s + self.window], self.intr[i, s : s + self.window], n_chunks, cfg,
                     self.dev)


def _cfg_of(model: SanaWMStreamingTransformer) -> BundledConfig:
    return BundledConfig(transformer=model.cfg)


def student_rollout(student: SanaWMStreamingTransformer, sampler: FlowSampler, image: torch.Tensor, cams: list,
                    n_latents: int, gen: torch.Generator, dev: TrainDevice, grad: bool = True) -> torch.Tensor:
    """Self-Forcing: the student generates a window chunk by chunk on its own cache with its few-step sampler.

    Returns latents (1, C, n_latents, h, w) (frame 0 the image); with `grad`, gradients flow through the last
    denoising step of each chunk; the cache is written from the detached output without gradients."""
    text, mask = (dev.put(x) for x in empty_text(_cfg_of(student)))
    L = student.cfg.chunk_latent_frames
    C, h, w = image.shape[1], image.shape[3], image.shape[4]
    out = [image]
    cache = None
    sig = sampler.sigmas
    for k, (lo, hi) in enumerate(_chunks(n_latents, L)):
        P = 1 if k == 0 else 0
        x = torch.randn(1, C, hi - lo - P, h, w, generator=gen, device=gen.device).to(image.device) * sig[0]
        for i in range(len(sig) - 1):
            last = i == len(sig) - 2
            xin = torch.cat([image, x], 2) if P else x
            t = _t(sig[i], 1, xin.shape[2], xin.device)
            if P:
                t[:, :1] = 0.0
            with torch.set_grad_enabled(grad and last):
                v, _ = _forward(student, xin, t, text, mask, cams[k], cache, dev)
                x0 = x - sig[i] * v[:, :, P:]
            if not last:
                # drawn over the whole chunk, the image latent included, as the session's sampler draws it
                noise = torch.randn(xin.shape, generator=gen, device=gen.device).to(x0.device)[:, :, P:]
                x = (1 - sig[i + 1]) * x0.detach() + sig[i + 1] * noise
        out.append(x0)
        with torch.no_grad():
            clean = torch.cat([image, x0.detach()], 2) if P else x0.detach()
            _, cache = _forward(student, clean, torch.zeros(1, hi - lo, device=clean.device), text, mask, cams[k],
                                cache, dev, write=True)
    return torch.cat(out, 2)


def x0_scores(model: SanaWMStreamingTransformer, z: torch.Tensor, noisy: torch.Tensor, sigmas: torch.Tensor,
              cams: list, dev: TrainDevice) -> torch.Tensor:
    """The model's x0 prediction of each chunk of `noisy` (1, C, n, h, w; chunk k at level sigmas[k], the image
    latent clean) reading a cache written from the clean window `z`, in the model's own chunking."""
    text, mask = (dev.put(x) for x in empty_text(_cfg_of(model)))
    L = model.cfg.chunk_latent_frames
    out, cache = [], None
    chunks = _chunks(z.shape[2], L)
    for k, (lo, hi) in enumerate(chunks):
        xin = noisy[:, :, lo:hi]
        t = _t(sigmas[k], 1, hi - lo, xin.device)
        if k == 0:
            t[:, :1] = 0.0
        v, _ = _forward(model, xin, t, text, mask, cams[k], cache, dev)
        s = sigmas[k].view(1, 1, 1, 1, 1)
        x0 = xin - s * v
        if k == 0:
            x0 = torch.cat([z[:, :, :1], x0[:, :, 1:]], 2)
        out.append(x0)
        if k + 1 < len(chunks):
            with torch.no_grad():
                _, cache = _forward(model, z[:, :, lo:hi], torch.zeros(1, hi - lo, device=z.device), text, mask,
                                    cams[k], cache, dev, write=True)
    return torch.cat(out, 2)


class LatentCritic(nn.Module):
    """A small discriminator on single latent frames (C, h, w): true renders' latents against the student's."""

    def __init__(self, channels: int = 16, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, T, h, w) -> a logit map per latent frame."""
        B, C, T, h, w = z.shape
        return self.net(z.transpose(1, 2).reshape(B * T, C, h, w))


class _Phase:
    """A resumable training phase: modules and optimisers saved and restored together with step and RNGs."""

    def __init__(self, path: Path, kind: str, modules: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer],
                 rng: np.random.Generator, dev: TrainDevice, optional: tuple[str, ...] = ()) -> None:
        """`opts` are named as the `modules` they train (a module may have none); a name in `optional` may be
        missing from the file."""
        self.path, self.kind, self.modules, self.opts, self.rng, self.dev = path, kind, modules, opts, rng, dev
        self.optional = optional
        self.step, self.spent = 0, 0.0
        self.t0 = time.monotonic()
        self.last_save = time.monotonic()

    def seconds(self) -> float:
        return self.spent + time.monotonic() - self.t0

    def load(self) -> bool:
        if not (self.path.exists() or self.path.with_suffix(".pt").exists()):
            return False
        tensors, meta = load_state(self.path, self.kind)
        for name, m in self.modules.items():
            if name in self.optional and not any(k.startswith(f"{name}.") for k in tensors):
                continue  # switched on after the run that wrote the file (the critic, the average): it starts new
            m.load_state_dict(_strip(tensors, f"{name}."))
            if name in self.opts:  # a module without an optimiser (the student's average) has only weights
                unpack_optimizer(self.opts[name], tensors, meta["opt"][name], prefix=f"opt_{name}.")
        self.step, self.spent = int(meta["step"]), float(meta.get("seconds", 0.0))
        self.rng.bit_generator.state = meta["rng"]
        torch.set_rng_state(tensors["torch_rng"])
        self.dev.set_rng_state(tensors)
        self.t0 = time.monotonic()
        return True

    def save(self, extra: dict | None = None) -> None:
        tensors, ometa = {}, {}
        for name, m in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
        for name, o in self.opts.items():
            t, ometa[name] = pack_optimizer(o, prefix=f"opt_{name}.")
            tensors.update(t)
        tensors.update({"torch_rng": torch.get_rng_state(), **self.dev.rng_state()})
        save_state(self.path, self.kind, tensors, {"opt": ometa, "step": self.step, "seconds": self.seconds(),
                                                   "rng": self.rng.bit_generator.state, "device": str(self.dev),
                                                   **(extra or {})})
        self.last_save = time.monotonic()

    def due(self, minutes: float) -> bool:
        return time.monotonic() - self.last_save > minutes * 60


def _export(student: SanaWMStreamingTransformer, scfg: BundledConfig, work: Path, phase: str, step: int) -> Path:
    """The student's weights as a bundled-weights folder (`<work>/distill/`): world, VAE and start frame."""
    folder = work / "distill"
    export_world(student, folder / WORLD_FILE, scfg, {"step": step, "stage": f"distill-{phase}"})
    if (work / VAE_FILE).exists() and not (folder / VAE_FILE).exists():
        shutil.copyfile(work / VAE_FILE, folder / VAE_FILE)
    start = work / START_FILE if (work / START_FILE).exists() else WEIGHTS / START_FILE  # the ship stage's frame
    if start.exists() and not (folder / START_FILE).exists():
        shutil.copyfile(start, folder / START_FILE)
    return folder


def kept_world(work: Path, step: int) -> Path:
    """Where `keep_every` keeps the student exported at dmd step `step` (the world model only)."""
    return work / "distill" / "steps" / f"world_{step:06d}.safetensors"


def kept_steps(work: Path) -> list[int]:
    """The dmd steps at which `keep_every` kept a student in `work`, in order."""
    return sorted(int(f.stem.removeprefix("world_")) for f in kept_world(work, 0).parent.glob("world_*.safetensors"))


def _lr(base: float, step: int, steps: int, progress_s: float, minutes: float, warmup: int = 20) -> float:
    progress = min(1.0, max(step / steps, progress_s / (minutes * 60)))
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def distill(dcfg: DistillConfig, clips, work: Path, teacher_file: Path, resume: bool = True,  # noqa: ANN001
            dev: TrainDevice | None = None, log=print) -> Path:  # noqa: ANN001
    """Run (or resume) the three phases on windows of `clips` (a ClipCache) of the first image and
    `dcfg.window_chunks` teacher chunks; returns the folder of the exported student."""
    from worldwalk.runtime.worlds.bundled_vae import FrameVAEStream
    from worldwalk.runtime.worlds.bundled_world import load_weights

    dev = dev or TrainDevice()
    torch.manual_seed(dcfg.seed)
    cfg, vae, teacher = load_weights(teacher_file.parent)
    if dcfg.kv_window:  # the window the student will play with: the teacher and the fake score score with it too
        cfg = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, kv_window=dcfg.kv_window))
        weights = teacher.state_dict()
        teacher = SanaWMStreamingTransformer(cfg.transformer)
        teacher.load_state_dict(weights)
    teacher = teacher.to(dev.device).eval().requires_grad_(False)
    scfg = student_config(cfg, dcfg)
    n_latents = 1 + cfg.chunk_latents * dcfg.window_chunks
    stride = cfg.stride
    data = Windows(clips, FrameVAEStream(vae.to(dev.device).eval()), 1 + stride * (n_latents - 1),
                   stride * cfg.chunk_latents, dev)
    sampler = FlowSampler(scfg.sampler)
    keep = sampler.sigmas[:-1]
    grid = sorted({round(1 - i / dcfg.teacher_steps, 6) for i in range(dcfg.teacher_steps + 1)} |
                  {round(s, 6) for s in keep}, reverse=True)
    t_chunks = len(_chunks(n_latents, cfg.chunk_latents))
    s_chunks = len(_chunks(n_latents, dcfg.chunk_latents))
    log(f"distill: teacher {teacher_file} ({cfg.chunk_latents} latent frames a chunk), student "
        f"{dcfg.chunk_latents} a chunk on {', '.join(map(str, dcfg.timesteps))}; windows of {n_latents} latent "
        f"frames; teacher ODE on {len(grid) - 1} steps")

    start = _read_world(Path(dcfg.student_init)) if dcfg.student_init else teacher.state_dict()
    student, scfg, new_blocks = grown_student(start, scfg, dcfg.grow_blocks)
    student.to(dev.device)
    if dcfg.student_init or new_blocks:
        grown = f" ({len(new_blocks)} appended, learning at {dcfg.grow_lr:g}x)" if new_blocks else ""
        log(f"distill: the student starts from {dcfg.student_init or 'the teacher'} with "
            f"{scfg.transformer.num_layers} blocks{grown}")

    dmd_file = work / "distill_dmd_ckpt.safetensors"
    if resume and dmd_file.exists():
        log("distill: the dmd phase has a checkpoint; the ode phases are done")
    else:
        # -- phase 1: the teacher's trajectories
        ode_file = work / "distill_ode_data.safetensors"
        rng = np.random.default_rng(dcfg.seed + 31)
        have: dict[str, torch.Tensor] = {}
        meta: dict = {"windows": []}
        if resume and ode_file.exists():
            have, meta = load_state(ode_file, "distill-ode-data")
            rng.bit_generator.state = meta["rng"]
        gen = dev.generator(dcfg.seed + 5 + len(meta["windows"]))
        t_last = time.monotonic()
        while len(meta["windows"]) < dcfg.ode_windows:
            j, i = len(meta["windows"]), int(rng.integers(len(data)))
            image = data.latents(i)
            cams = data.cameras(i, t_chunks, cfg)
            states, x0s = teacher_trajectory(teacher, image, cams, n_latents, cfg.chunk_latents, grid, keep, gen, dev)
            have[f"states.{j}"], have[f"x0.{j}"] = states.cpu(), x0s.cpu()
            meta["windows"].append(i)
            if time.monotonic() - t_last > dcfg.ckpt_minutes * 60 or len(meta["windows"]) == dcfg.ode_windows:
                meta["rng"] = rng.bit_generator.state
                save_state(ode_file, "distill-ode-data", have, meta)
                t_last = time.monotonic()
                log(f"distill ode-data: {len(meta['windows'])}/{dcfg.ode_windows} teacher trajectories")
        windows = meta["windows"]

        # -- phase 2: ODE regression
        opt = torch.optim.AdamW(student.parameters(), lr=dcfg.ode_lr, weight_decay=0.0, betas=(0.9, 0.99))
        rng = np.random.default_rng(dcfg.seed + 41)
        ph = _Phase(work / "distill_ode_ckpt.safetensors", "distill-ode", {"student": student}, {"student": opt}, rng,
                    dev)
        if resume and ph.load():
            log(f"distill ode: resumed at step {ph.step}")
        ema = None
        student.train()
        text, mask = (dev.put(x) for x in empty_text(scfg))
        while ph.step < dcfg.ode_steps and ph.seconds() < dcfg.ode_minutes * 60:
            lr = _lr(dcfg.ode_lr, ph.step, dcfg.ode_steps, ph.seconds(), dcfg.ode_minutes)
            for g in opt.param_groups:
                g["lr"] = lr
            j = int(rng.integers(len(windows)))
            states, x0s = dev.put(have[f"states.{j}"]), dev.put(have[f"x0.{j}"])
            cams = data.cameras(windows[j], s_chunks, scfg)
            cache, losses = None, []
            for k, (lo, hi) in enumerate(_chunks(n_latents, dcfg.chunk_latents)):
                si = int(rng.integers(len(keep)))
                xin = states[si : si + 1, :, lo:hi]
                t = _t(keep[si], 1, hi - lo, xin.device)
                if k == 0:
                    t[:, :1] = 0.0
                v, _ = _forward(student, xin, t, text, mask, cams[k], cache, dev)
                first = 1 if k == 0 else 0
                pred = xin[:, :, first:] - keep[si] * v[:, :, first:]
                losses.append(F.mse_loss(pred, x0s[:, :, lo + first : hi]))
                with torch.no_grad():
                    _, cache = _forward(student, x0s[:, :, lo:hi], torch.zeros(1, hi - lo, device=xin.device), text,
                                        mask, cams[k], cache, dev, write=True)
            loss = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            ph.step += 1
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            if ph.step % 10 == 0:
                log(f"distill ode: step {ph.step} loss {ema:.4f} lr {lr:.1e} ({ph.seconds() / 60:.1f} min)")
            if ph.due(dcfg.ckpt_minutes):
                ph.save()
                _export(student, scfg, work, "ode", ph.step)
        ph.save()
        _export(student, scfg, work, "ode", ph.step)
        log(f"distill ode: done at step {ph.step}")
        del have

    # -- phase 3: Self-Forcing with distribution matching (and optionally a latent critic)
    fake = SanaWMStreamingTransformer(cfg.transformer)
    fake.load_state_dict(teacher.state_dict())
    fake.to(dev.device)
    critic = LatentCritic(cfg.transformer.in_channels).to(dev.device)
    new_params = [p for i in new_blocks for p in student.blocks[i].parameters()]
    new_ids = {id(p) for p in new_params}
    old_params = [p for p in student.parameters() if id(p) not in new_ids]
    groups = [{"params": old_params, "scale": 1.0}] + ([{"params": new_params, "scale": dcfg.grow_lr}]
                                                       if new_params else [])
    opt_s = torch.optim.AdamW(groups, lr=dcfg.lr, weight_decay=0.0, betas=(0.0, 0.99))
    opt_f = torch.optim.AdamW(fake.parameters(), lr=dcfg.fake_lr, weight_decay=0.0, betas=(0.0, 0.99))
    opt_c = torch.optim.AdamW(critic.parameters(), lr=dcfg.fake_lr, weight_decay=0.0, betas=(0.0, 0.99))
    rng = np.random.default_rng(dcfg.seed + 51)
    modules = {"student": student, "fake": fake}
    opts = {"student": opt_s, "fake": opt_f}
    if dcfg.gan_weight > 0:
        modules["critic"], opts["critic"] = critic, opt_c
    average = None  # the student's weights' moving average, what is exported when on
    if dcfg.ema > 0:
        average = SanaWMStreamingTransformer(scfg.transformer).to(dev.device).requires_grad_(False)
        average.load_state_dict(student.state_dict())
        modules["student_avg"] = average
    ph = _Phase(dmd_file, "distill-dmd", modules, opts, rng, dev, optional=("critic", "student_avg"))
    if resume and ph.load():
        log(f"distill dmd: resumed at step {ph.step}")
        for g in opt_s.param_groups[1:]:  # the appended blocks learn at the rate asked now, not the one saved
            g["scale"] = dcfg.grow_lr
    gen = dev.generator(dcfg.seed + 1000 + ph.step)
    teacher_sampler = FlowSampler(cfg.sampler)
    text, mask = (dev.put(x) for x in empty_text(cfg))
    lo_s, hi_s = dcfg.sigma_range
    ema: dict[str, float] = {}
    student.train()
    fake.train()
    while ph.step < dcfg.dmd_steps and ph.seconds() < dcfg.dmd_minutes * 60:
        for o, base in ((opt_s, dcfg.lr), (opt_f, dcfg.fake_lr), (opt_c, dcfg.fake_lr)):
            for g in o.param_groups:
                g["lr"] = _lr(base, ph.step, dcfg.dmd_steps, ph.seconds(), dcfg.dmd_minutes) * g.get("scale", 1.0)
        i = int(rng.integers(len(data)))
        image = data.latents(i)
        s_cams = data.cameras(i, s_chunks, scfg)
        t_cams = data.cameras(i, t_chunks, cfg)
        train_student = ph.step % (dcfg.fake_ratio + 1) == dcfg.fake_ratio
        z = student_rollout(student, sampler, image, s_cams, n_latents, gen, dev, grad=train_student)
        logs = {}
        if train_student:
            sig = torch.from_numpy(rng.uniform(lo_s, hi_s, t_chunks)).float().to(z.device)
            per = torch.cat([sig[k].expand(hi - lo) for k, (lo, hi) in enumerate(_chunks(n_latents,
                                                                                          cfg.chunk_latents))])
            s5 = per.view(1, 1, -1, 1, 1)
            noisy = (1 - s5) * z.detach() + s5 * torch.randn(z.shape, generator=gen, device=gen.device).to(z.device)
            noisy[:, :, :1] = z[:, :, :1].detach()
            with torch.no_grad():
                real = x0_scores(teacher, z.detach(), noisy, sig, t_cams, dev)
                fake_x0 = x0_scores(fake, z.detach(), noisy, sig, t_cams, dev)
                weight = 1.0 / (z.detach() - real).abs().mean(dim=(1, 3, 4), keepdim=True).clamp_min(1e-4)
                target = z.detach() - (fake_x0 - real) * weight
            loss = 0.5 * F.mse_loss(z[:, :, 1:], target[:, :, 1:])
            logs["dmd"] = loss.item()
            if dcfg.regress_weight > 0 or dcfg.rollout_weight > 0 or dcfg.return_weight > 0:
                true = data.latents(i, n_latents)  # (1, C, n_latents, h, w)
            if dcfg.rollout_weight > 0:  # its own rollout held to the truth: what a free run must still get right
                o_loss = F.mse_loss(z[:, :, 1:], true[:, :, 1:])
                loss = loss + dcfg.rollout_weight * o_loss
                logs["rollout"] = o_loss.item()
            if dcfg.return_weight > 0:  # back at the first view the free run can know the frame: the sink holds it
                back = torch.from_numpy(data.returns(i, n_latents, data.vae.temporal_stride)).to(z.device)
                if back.any():
                    b_loss = F.mse_loss(z[:, :, back], true[:, :, back])
                    loss = loss + dcfg.return_weight * b_loss
                    logs["return"] = b_loss.item()
            if dcfg.regress_weight > 0:  # anchored to the truth: the same window teacher-forced (slightly noised)
                sig_r = torch.from_numpy(rng.uniform(0.02, 1.0, (s_chunks, 1))).float().to(true.device)
                r_loss = world_loss(student, sampler, true, s_cams, sig_r, text, mask, dcfg.chunk_latents, dev,
                                    context_noise=0.1)
                loss = loss + dcfg.regress_weight * r_loss
                logs["regress"] = r_loss.item()
            if dcfg.gan_weight > 0:
                g_loss = -critic(z[:, :, 1:]).mean()
                loss = loss + dcfg.gan_weight * g_loss
                logs["gen"] = g_loss.item()
            opt_s.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt_s.step()
            if average is not None:  # the decay ramps up over the first updates, as the world stage's does
                n = 1 + ph.step // (dcfg.fake_ratio + 1)
                move_average(average.state_dict(), student.state_dict(), ramped_decay(dcfg.ema, n))
        # the fake score learns the student's distribution by flow matching on its rollouts (teacher chunking)
        zd = z.detach()
        sig_f = torch.from_numpy(rng.uniform(0.02, 1.0, (t_chunks, 1))).float().to(zd.device)
        f_loss = world_loss(fake, teacher_sampler, zd[:, :, :n_latents], t_cams, sig_f, text, mask,
                            cfg.chunk_latents, dev)
        opt_f.zero_grad(set_to_none=True)
        f_loss.backward()
        torch.nn.utils.clip_grad_norm_(fake.parameters(), 1.0)
        opt_f.step()
        logs["fake"] = f_loss.item()
        if dcfg.gan_weight > 0:
            true = data.latents(int(rng.integers(len(data))), n_latents)[:, :, 1:]
            c_loss = F.relu(1 - critic(true)).mean() + F.relu(1 + critic(zd[:, :, 1:])).mean()
            opt_c.zero_grad(set_to_none=True)
            c_loss.backward()
            opt_c.step()
            logs["critic"] = c_loss.item()
        ph.step += 1
        for k, v in logs.items():
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        if ph.step % 10 == 0:
            log(f"distill dmd: step {ph.step} " + " ".join(f"{k} {v:.4f}" for k, v in ema.items()) +
                f" ({ph.seconds() / 60:.1f} min)")
        if dcfg.keep_every and ph.step % dcfg.keep_every == 0:  # the dmd phase swings: keep a history to choose from
            kept_world(work, ph.step).parent.mkdir(parents=True, exist_ok=True)
            export_world(average or student, kept_world(work, ph.step), scfg, {"step": ph.step, "stage": "distill-dmd"})
        if ph.due(dcfg.ckpt_minutes):
            ph.save({"cfg": _jsonable(dcfg)})
            _export(average or student, scfg, work, "dmd", ph.step)
    ph.save({"cfg": _jsonable(dcfg)})
    folder = _export(average or student, scfg, work, "dmd", ph.step)
    log(f"distill dmd: done at step {ph.step}; the student is in {folder}")
    return folder


def _jsonable(dcfg: DistillConfig) -> dict:
    d = asdict(dcfg)
    d["timesteps"] = list(d["timesteps"])
    d["sigma_range"] = list(d["sigma_range"])
    return d
