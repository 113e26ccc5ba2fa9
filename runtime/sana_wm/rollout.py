"""`LatentRollout`: chunk-by-chunk latent generation with the streaming cache (no VAE, no pixels).

One `step` is one chunk: denoise it with the few-step sampler while reading the cache, then one
clean (t = 0) forward writes the cache. What is constant for longer is made once: the prompt's
cross-attention keys/values per session (`PromptContext`, at `reset`), the camera inputs on the model's
device per chunk, and what the transformer makes of them and of the cache read (RoPE, UCPE, every block's
Plücker projection, the softmax blocks' attention contexts: `transformer.ChunkInputs`), shared by the chunk's
denoising passes and its cache write and dropped once it is written (`commit`). With `use_cache=False`
the stream keeps the clean latents and camera inputs of every past chunk instead and rebuilds the cache
from them before each chunk: the same numbers at a cost that grows with the session, for benchmarking
the cache against recompute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .cache import PromptContext, StreamingCache
from .camera import CameraInputs
from .sampler import FlowSampler
from .timing import Clock, resolve
from .transformer import SanaWMStreamingTransformer


@dataclass
class RolloutState:
    """Everything `snapshot()` must keep: cache, RNG state, history (recompute mode) and the prompt (references,
    not copies: the prompt is fixed for a session)."""

    cache: StreamingCache
    rng: torch.Tensor
    history: list[tuple[torch.Tensor, CameraInputs]] = field(default_factory=list)
    text: torch.Tensor | None = None
    mask: torch.Tensor | None = None


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
        self.prompt: PromptContext | None = None  # text and mask as the cross-attentions read them
        self._reading: StreamingCache | None = None
        self._camera: tuple[CameraInputs, CameraInputs] | None = None  # (the chunk's camera, on the device)
        # Optional stand-in for `transformer` with the same call signature (an accelerated chunk step,
        # runtime/accel/apply.py); None runs the transformer itself.
        self.backend: Callable[..., tuple[torch.Tensor, StreamingCache | None]] | None = None

    def reset(self, text: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
        self._set_prompt(text, mask)
        self.generator.manual_seed(seed)
        self.cache = self.transformer.new_cache()
        self.history = []

    @torch.no_grad()
    def _set_prompt(self, text: torch.Tensor, mask: torch.Tensor) -> None:
        """Embed the prompt and project it to every block's cross-attention K/V, once for the session."""
        self.text, self.mask = text, mask
        self.prompt = self.transformer.prompt_context(text, mask)

    def _on_device(self, camera: CameraInputs) -> CameraInputs:
        """The chunk's camera inputs on the model's device and dtype: moved once for its passes and its write."""
        memo = self._camera
        if memo is None or memo[0] is not camera:
            tr = self.transformer
            memo = self._camera = (camera, camera.to(tr.x_embedder.proj.weight.device, tr.dtype))
        return memo[1]

    @property
    def chunk_index(self) -> int:
        return len(self.history) if not self.use_cache else self.cache.chunks

    def nbytes(self) -> int:
        hist = sum(z.numel() * z.element_size() for z, _ in self.history)
        return self.cache.nbytes() + hist

    def _forward(self, x, t, camera, cache, write):
        return (self.backend or self.transformer)(x, t, self.prompt, None, camera, cache, write)

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
        camera = self._on_device(camera)
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
        camera = self._on_device(camera)
        if self.use_cache:
            zero_t = torch.zeros(z.shape[0], z.shape[2], device=z.device)
            _, self.cache = self._forward(z, zero_t, camera, self._reading, True)
        else:
            self.history.append((z, camera))
        self._reading = self._camera = None
        # the chunk is written: its RoPE and camera inputs (kept for its passes, per thread) are not needed again
        if getattr(self.transformer, "memo_chunk_inputs", False):
            self.transformer._chunk_memo = None
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
        return RolloutState(self.cache.snapshot(), self.generator.get_state(), list(self.history), self.text,
                            self.mask)

    def restore(self, state: RolloutState) -> None:
        if state.text is not None and (state.text is not self.text or state.mask is not self.mask):
            dev = self.transformer.x_embedder.proj.weight.device  # an unpickled prompt comes in host memory
            self._set_prompt(state.text.to(dev), state.mask.to(dev))  # taken under another prompt: its K/V again
        self.cache = state.cache.snapshot()
        self.generator.set_state(state.rng)
        self.history = list(state.history)
