"""`LatentRollout`: chunk-by-chunk latent generation with the streaming cache (no VAE, no pixels).

One `step` is one chunk: denoise it with the few-step sampler while reading the cache, then one
clean (t = 0) forward writes the cache. With `use_cache=False` the stream keeps the clean latents and
camera inputs of every past chunk instead and rebuilds the cache from them before each chunk: the
same numbers at a cost that grows with the session, for benchmarking the cache against recompute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .cache import StreamingCache
from .camera import CameraInputs
from .sampler import FlowSampler
from .timing import Clock, resolve
from .transformer import SanaWMStreamingTransformer


@dataclass
class RolloutState:
    """Everything `snapshot()` must keep: cache, RNG state and history (recompute mode)."""

    cache: StreamingCache
    rng: torch.Tensor
    history: list[tuple[torch.Tensor, CameraInputs]] = field(default_factory=list)


class LatentRollout:
    def __init__(self, transformer: SanaWMStreamingTransformer, sampler: FlowSampler, use_cache: bool = True) -> None:
        self.transformer = transformer
        self.sampler = sampler
        self.use_cache = use_cache
        # noise is drawn where the model runs (a CUDA generator on a GPU: no host copy per step); seeded, so
        # a replay on the same device draws the same noise
        dev = next(transformer.parameters()).device
        self.generator = torch.Generator(device=dev) if dev.type == "cuda" else torch.Generator()
        self.cache = transformer.new_cache()
        self.history: list[tuple[torch.Tensor, CameraInputs]] = []
        self.text: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self._reading: StreamingCache | None = None
        # Optional stand-in for `transformer` with the same call signature (an accelerated chunk step,
        # runtime/accel/apply.py); None runs the transformer itself.
        self.backend: Callable[..., tuple[torch.Tensor, StreamingCache | None]] | None = None

    def reset(self, text: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
        self.text, self.mask = text, mask
        self.generator.manual_seed(seed)
        self.cache = self.transformer.new_cache()
        self.history = []

    @property
    def chunk_index(self) -> int:
        return len(self.history) if not self.use_cache else self.cache.chunks

    def nbytes(self) -> int:
        hist = sum(z.numel() * z.element_size() for z, _ in self.history)
        return self.cache.nbytes() + hist

    def _forward(self, x, t, camera, cache, write):
        return (self.backend or self.transformer)(x, t, self.text, self.mask, camera, cache, write)

    def _rebuilt_cache(self) -> StreamingCache:
        """Recompute mode: replay every past chunk's clean latents at t = 0 from an empty cache."""
        cache = self.transformer.new_cache()
        for z, cam in self.history:
            t = torch.zeros(z.shape[0], z.shape[2], device=z.device)
            _, cache = self._forward(z, t, cam, cache, True)
        return cache

    @torch.no_grad()
    def denoise(
        self,
        camera: CameraInputs,
        shape: tuple[int, ...],
        clean_prefix: torch.Tensor | None = None,
        timings: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Denoise one chunk (B, C, P + T, H, W) reading the cache; `shape` is (B, C, T, H, W) of the new frames."""
        timings = timings if timings is not None else {}
        tr = self.transformer
        dev, dtype = tr.x_embedder.proj.weight.device, tr.dtype
        camera = camera.to(dev, dtype)
        clock = Clock(dev)  # CUDA events on a GPU (timing.py): resolved when the chunk's result is taken
        t0 = clock.now()
        # the cache this chunk reads: kept (streaming) or rebuilt from the history (recompute)
        self._reading = self.cache if self.use_cache else self._rebuilt_cache()
        t1 = clock.now()
        # the sampler's forwards read the cache and never write it
        z = self.sampler.denoise(
            lambda x, t: self._forward(x, t, camera, self._reading, False)[0],
            shape,
            self.generator,
            dev,
            dtype,
            clean_prefix,
        )
        timings.update(recompute=clock.between(t0, t1), denoise=clock.between(t1, clock.now()))
        return z

    @torch.no_grad()
    def commit(self, z: torch.Tensor, camera: CameraInputs, timings: dict[str, float] | None = None) -> None:
        """Write the finished chunk: one forward on the clean latents at t = 0 (or keep them, in recompute mode)."""
        clock = Clock(z.device)
        t0 = clock.now()
        tr = self.transformer
        camera = camera.to(z.device, tr.dtype)
        if self.use_cache:
            zero_t = torch.zeros(z.shape[0], z.shape[2], device=z.device)
            _, self.cache = self._forward(z, zero_t, camera, self._reading, True)
        else:
            self.history.append((z, camera))
        self._reading = None
        if timings is not None:
            timings["cache_write"] = clock.between(t0, clock.now())

    def step(self, camera, shape, clean_prefix=None, timings=None) -> torch.Tensor:
        """Denoise and commit one chunk."""
        z = self.denoise(camera, shape, clean_prefix, timings)
        self.commit(z, camera, timings)
        if timings is not None:
            resolve(timings)
        return z

    def snapshot(self) -> RolloutState:
        return RolloutState(self.cache.snapshot(), self.generator.get_state(), list(self.history))

    def restore(self, state: RolloutState) -> None:
        self.cache = state.cache.snapshot()
        self.generator.set_state(state.rng)
        self.history = list(state.history)
