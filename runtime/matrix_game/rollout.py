"""`Rollout`: a Matrix-Game 2.0 session, one block of 3 latent frames at a time, for as long as it runs.

The first image conditions every frame: a mask channel (ones on latent 0), the VAE latent of the
image followed by zero frames (upstream's "black" padding), and the CLIP tokens the cross-attention
reads. The encoder is causal and has a finite memory, so after a few latents the zero-frame latents
repeat exactly: `ImageCondition` encodes until its cache stops changing and then repeats that latent,
so a session needs no precomputed length (upstream encodes a fixed number of frames up front).

Raw actions arrive per block at the pixel frame rate: 9 for the first block (1 + 4 + 4), 12 after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .action import action_windows
from .cache import DiTCache
from .config import MatrixGameConfig
from .dit import CausalDiT
from .sampler import FlowSchedule
from .vae import TimeCache, WanVAE

NoiseSource = Callable[[str, tuple[int, ...]], torch.Tensor]  # ("block" | "fresh", shape) -> noise
CallObserver = Callable[[dict], None]


class ImageCondition:
    """Per latent frame, the 20 condition channels: 4 mask channels + the 16-channel image latent.

    Encoded when its latents are first read, on the thread that reads them (the session's: a block, or
    a snapshot, which `Rollout.live_state` makes ready): a walk resumed from a snapshot adopts the
    snapshot's condition, so the reset before it never runs the encoder."""

    MAX_CHUNKS = 64

    def __init__(self, vae: WanVAE, image: torch.Tensor) -> None:
        """image (B, 3, H, W) in [-1, 1]."""
        self._source: tuple[WanVAE, torch.Tensor] | None = (vae, image)
        self._latents: list[torch.Tensor] = []

    @classmethod
    def ready(cls, latents: list[torch.Tensor]) -> ImageCondition:
        """A condition whose latents are known (a snapshot's, moved between devices)."""
        made = cls.__new__(cls)
        made._source, made._latents = None, latents
        return made

    @property
    def latents(self) -> list[torch.Tensor]:
        """(B, 16, 1, h, w) per latent frame up to the encoder's fixed point; encoded on first read."""
        return self.encode()

    def encode(self) -> list[torch.Tensor]:
        """Run the encoder now if it has not run (`latents` does on first read)."""
        if self._source is not None:
            self._latents = self._encode(*self._source)
            self._source = None
        return self._latents

    @staticmethod
    @torch.no_grad()
    def _encode(vae: WanVAE, image: torch.Tensor) -> list[torch.Tensor]:
        cache = TimeCache()
        frames = image[:, :, None]  # (B, 3, 1, H, W)
        latents = [vae.encode_chunk(frames, cache)]  # (B, 16, 1, h, w) each
        zeros = torch.zeros_like(frames).expand(-1, -1, 4, -1, -1)
        before = None
        for _ in range(ImageCondition.MAX_CHUNKS):
            latents.append(vae.encode_chunk(zeros, cache))
            if before is not None and _same(before, cache):
                return latents  # the encoder reached its fixed point: every later latent equals the last one
            before = cache.clone()
        raise RuntimeError("the VAE encoder did not settle on zero frames")

    def block(self, first: int, frames: int) -> torch.Tensor:
        """(B, 20, frames, h, w) for latent frames [first, first + frames)."""
        lat = torch.cat([self.latents[min(f, len(self.latents) - 1)] for f in range(first, first + frames)], dim=2)
        mask = torch.zeros_like(lat[:, :4])
        if first == 0:
            mask[:, :, 0] = 1
        return torch.cat([mask, lat], dim=1)


def _same(a: TimeCache, b: TimeCache) -> bool:
    return len(a.slots) == len(b.slots) and all(
        (x == y) if isinstance(x, str) or isinstance(y, str) else torch.equal(x, y)
        for x, y in zip(a.slots, b.slots, strict=True)
    )


def first_raw_kept(cfg: MatrixGameConfig, first_frame: int) -> int:
    """The oldest raw action frame a window of latent frames from `first_frame` on still reads."""
    return max(0, cfg.vae_time_ratio * first_frame - cfg.raw_window)


@dataclass
class RolloutState:
    """Everything a rollout carries between blocks (for rewind and failover): caches, RNG, position."""

    cache: DiTCache
    vae_cache: TimeCache
    first_frame: int
    keyboard: torch.Tensor
    mouse: torch.Tensor
    raw_start: int
    rng: torch.Tensor
    condition: ImageCondition  # fixed for a session: shared, never copied

    def nbytes(self) -> int:
        """Bytes this state holds of its own: the caches' copies (not the cross-attention K/V or the image
        condition, which a session's states share), the action history and the generator's state."""
        own = sum(layer.nbytes() for layer in self.cache.layers) + self.vae_cache.nbytes()
        return own + sum(t.numel() * t.element_size() for t in (self.keyboard, self.mouse, self.rng))


@dataclass
class Block:
    latents: torch.Tensor  # (B, 16, F, h, w) the block's clean latents
    video: torch.Tensor  # (B, T, 3, H, W) in [-1, 1]; T = 9 for the first block, 12 after
    first_frame: int  # latent index of the block's first frame


class Rollout:
    def __init__(self, cfg: MatrixGameConfig, dit: CausalDiT, vae: WanVAE, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.cfg, self.dit, self.vae = cfg, dit, vae
        self.device, self.dtype = torch.device(device), dtype
        self.schedule = FlowSchedule.create(cfg)
        self.steps = self.schedule.warped_steps(cfg.denoising_steps)  # e.g. [1000, 908.84, 713.98]
        self.observer: CallObserver | None = None

    # -- session start --
    def reset(self, clip_tokens: torch.Tensor, image: torch.Tensor | None = None,
              condition: ImageCondition | None = None, seed: int = 0, noise: NoiseSource | None = None) -> None:
        """clip_tokens (B, L, 1280); the first image (B, 3, H, W) in [-1, 1] (or its ready `condition`)."""
        b = clip_tokens.shape[0]
        self.condition = condition if condition is not None else ImageCondition(self.vae, image)
        self.cache: DiTCache = self.dit.new_cache(b, self.dtype, self.device, self.dit.image_context(clip_tokens))
        self.vae_cache = TimeCache()
        self.first_frame = 0
        self.keyboard = torch.zeros(b, 0, self.cfg.keyboard_dim, device=self.device, dtype=self.dtype)
        self.mouse = torch.zeros(b, 0, self.cfg.mouse_dim, device=self.device, dtype=self.dtype)
        self.raw_start = 0  # raw frame index of self.keyboard[:, 0]: older frames no window reads are dropped
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.noise = noise or self._gaussian

    def _gaussian(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def live_state(self) -> RolloutState:
        """The state at this block boundary, its tensors the live ones (the next block writes the caches in
        place: a snapshot copies them, snapshots.py), the image condition encoded (here, on the session's
        thread, not where the snapshot is later read)."""
        self.condition.encode()
        return RolloutState(self.cache, self.vae_cache, self.first_frame, self.keyboard, self.mouse, self.raw_start,
                            self.generator.get_state(), self.condition)

    def adopt(self, state: RolloutState) -> None:
        """Go on from `state`, whose tensors become the rollout's own (a restore's fresh copies)."""
        self.cache, self.vae_cache = state.cache, state.vae_cache
        self.first_frame = state.first_frame
        self.keyboard, self.mouse, self.raw_start = state.keyboard, state.mouse, state.raw_start
        self.generator.set_state(state.rng)
        self.condition = state.condition

    def release(self) -> None:
        """Drop the session's caches and condition (a new session starts with `reset`)."""
        for name in ("cache", "vae_cache", "condition", "keyboard", "mouse"):
            self.__dict__.pop(name, None)

    def raw_frames_needed(self) -> int:
        """Raw action frames the next block takes: 9 for the first, 12 after."""
        n = self.cfg.frames_per_block
        return self.cfg.raw_frames(self.first_frame + n) - self.cfg.raw_frames(self.first_frame)

    # -- one block --
    @torch.no_grad()
    def step(self, keyboard: torch.Tensor, mouse: torch.Tensor | None = None) -> Block:
        """keyboard (B, n, K) and mouse (B, n, 2) raw actions of the block's frames (n = raw_frames_needed)."""
        cfg, dit, n = self.cfg, self.dit, self.cfg.frames_per_block
        first = self.first_frame
        b = keyboard.shape[0]

        # 1. extend the raw action timeline; cut each latent frame's window [4f - 12, 4f)
        need = self.raw_frames_needed()
        if keyboard.shape[1] != need:
            raise ValueError(f"the block at latent {first} takes {need} raw action frames, got {keyboard.shape[1]}")
        if cfg.mouse and (mouse is None or mouse.shape[1] != need):
            raise ValueError(f"mode {cfg.mode} is steered by the mouse too: give {need} raw frames of it")
        self.keyboard = torch.cat([self.keyboard, keyboard.to(self.keyboard)], dim=1)
        windows = dict(ratio=cfg.vae_time_ratio, window=cfg.action_window, offset=self.raw_start)
        kb = action_windows(self.keyboard, first, n, **windows)  # (B, F, 12, K)
        ms = None
        if cfg.mouse:
            self.mouse = torch.cat([self.mouse, mouse.to(self.mouse)], dim=1)
            ms = action_windows(self.mouse, first, n, **windows)  # (B, F, 12, 2)
        cond = self.condition.block(first, n).to(self.device, self.dtype)  # (B, 20, F, h, w)
        shape = (b, cfg.out_dim, n, cfg.latent_height, cfg.latent_width)

        def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            flow = dit(x, t, cond, self.cache, first, ms, kb)
            if self.observer is not None:
                self.observer(dict(x=x, t=t, first_frame=first, flow=flow, cache=self.cache))
            return flow

        # 2. start from Gaussian noise
        x = self.noise("block", shape)  # (B, 16, F, h, w)
        # 3. denoise with the warped timesteps; between steps re-noise x0 with FRESH noise
        for i, t_i in enumerate(self.steps):
            t = torch.full((b, n), float(t_i), device=self.device)
            x0 = self.schedule.to_x0(call(x, t), x, t)
            if i + 1 < len(self.steps):
                t_next = torch.full((b, n), float(self.steps[i + 1]), device=self.device)
                x = self.schedule.renoise(x0, self.noise("fresh", shape), t_next)
        # 4. one pass on the clean latents at t = 0 writes their keys/values into every cache
        call(x0, torch.zeros(b, n, device=self.device))
        # 5. decode the block's latents with the streaming decoder (timed: the session's latency split)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        video = self.vae.decode_block(x0.permute(0, 2, 1, 3, 4), self.vae_cache)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.decode_s = time.perf_counter() - start
        # 6. advance: positions keep counting; raw actions no later window reads are dropped
        self.first_frame += n
        keep_from = first_raw_kept(cfg, self.first_frame)
        if keep_from > self.raw_start:
            drop = keep_from - self.raw_start
            self.keyboard, self.mouse = self.keyboard[:, drop:].clone(), self.mouse[:, drop:].clone()
            self.raw_start = keep_from
        return Block(x0, video, first)
