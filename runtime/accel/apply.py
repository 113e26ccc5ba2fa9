"""`--accel`: run a SANA-WM-family world's chunk step and VAE decode through a faster backend.

Choices: `none` (eager PyTorch), `compile` (torch.compile), `onnx` (ONNX Runtime, CPU execution
provider), `tensorrt` (TensorRT engines, NVIDIA GPUs), `cudagraph` (CUDA graphs of the fixed-shape
step under plain PyTorch, NVIDIA GPUs) and `auto`: on a CUDA device TensorRT when the `tensorrt`
package imports and a chunk-step engine is already on disk, else CUDA graphs (a cold TensorRT build
takes tens of minutes: `--accel tensorrt` builds the engines once); with TensorRT the VAE decoder runs
on CUDA graphs; on the CPU `CPU_DEFAULT` when its packages are installed, else
eager (`worldwalk bench`'s accel suite, runtime/bench/accel_suite.py, measures them all).

How it plugs in (`apply_accel(world, choice)`): a world that exports its steps (the `Accelerable`
interface of runtime/world.py: `rollout.transformer`, `rollout.backend`, `vae`) gets an `AcceleratedStep`
in `rollout.backend` and an `AcceleratedVAE` as its `vae`. `create_world` (runtime/worlds/) calls in here
with `WorldConfig.accel` once it has built the world; the world never imports accel. Both
run the first chunk eagerly (other shapes, once a session; on a GPU the chunk step also runs every chunk
before its attention window is full eagerly, so no masked graph is built for one chunk a session) and
every later chunk through the fixed-shape modules of onnx_export.py, built lazily at the first chunk
that needs them (exports are cached on disk). The typed `StreamingCache` and the VAE's decode state stay
the source of truth, flattened in and out around each step, so snapshot, restore and rewind work
unchanged. Asking for a backend that is not installed raises `AccelUnavailable` naming what to install.
Under `auto` a backend that fails to build falls back to eager with a warning, and what runs where is
fixed per device, never timed at run time (so a replay takes the same path as the session it replays):
on the CPU, ONNX Runtime for the chunk step and the VAE decoder.

Tolerance: every backend reproduces eager frames within 2/255 per pixel on the small configs
(tests/test_accel.py); the chunk step's velocity and carried cache within 1e-4 relative.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from worldwalk.runtime.args import ACCEL_CHOICES
from worldwalk.runtime.sana_wm.cache import PromptContext

from .announce import announce
from .onnx_export import (
    STEP_INPUTS,
    CacheLayout,
    ChunkStep,
    DecodeStep,
    decode_keys,
    export_chunk_step,
    export_decode_step,
    export_dir,
    module_hash,
    plucker_names,
    prompt_inputs,
    prompt_names,
    step_inputs,
)

log = logging.getLogger(__name__)

CHOICES = ACCEL_CHOICES  # defined beside the parsers, which must not import torch
# ONNX Runtime on the CPU: in the README's bench table (bundled model, 8x VAE, 2 cores) it and torch.compile
# both beat eager by about 1.2x, but compile's cold build takes minutes on a small CPU where ONNX Runtime's
# export takes seconds. Re-measure with `worldwalk bench --suite accel` before changing it.
CPU_DEFAULT = "onnx"
# Backends whose built graphs embed the weights: the chunk step's reads and write share one graph there.
SHARED_GRAPH = ("onnx", "tensorrt")
# The VAE decoder's backend where it is not the chunk step's (see apply_accel)
VAE_BACKEND = {"tensorrt": "cudagraph"}

# make(kind, module, example_inputs, input_names, export) -> callable like the module
Make = Callable[[str, nn.Module, list[torch.Tensor], list[str], Callable[[], Path]], Callable[..., Any]]


class AccelUnavailable(RuntimeError):
    pass


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def check(choice: str, device: torch.device | str) -> tuple[bool, str]:
    """Whether `choice` can run on `device`, and if not, what to install or change."""
    device = torch.device(device)
    if choice in ("none", "flat"):
        return True, ""
    if choice == "compile":
        from .compile_backend import compile_available

        return compile_available(device)
    if choice == "onnx":
        from .onnx_backend import onnxruntime_available

        if device.type != "cpu":
            return False, "the onnx backend runs ONNX Runtime's CPU execution provider: use it with --device cpu"
        return onnxruntime_available()
    if choice == "tensorrt":
        from .tensorrt_backend import tensorrt_available

        return tensorrt_available(device)
    if choice == "cudagraph":
        if not _cuda(device):
            return False, "CUDA graphs need an NVIDIA GPU with a CUDA build of torch (device cuda)"
        return True, ""
    raise ValueError(f"unknown --accel {choice!r}; choose one of {', '.join(CHOICES)}")


def resolve(choice: str, device: torch.device | str, cache_dir: str | Path | None = None) -> str:
    """The backend `choice` means on `device`; raises AccelUnavailable for an explicit choice that cannot run.

    `auto` on CUDA: TensorRT once a chunk-step engine for this GPU is on disk (built by `--accel tensorrt`:
    tens of minutes cold at full size, too long for a start that did not ask for it), else CUDA graphs."""
    device = torch.device(device)
    if choice == "auto":
        order = ["tensorrt", "cudagraph"] if _cuda(device) else [CPU_DEFAULT]
        for c in order:
            ok, why = check(c, device)
            if ok and c == "tensorrt":
                from .tensorrt_backend import engines_on_disk

                if not engines_on_disk(export_dir(cache_dir), device):
                    ok, why = False, "no TensorRT engine built yet (run once with --accel tensorrt to build them)"
            if ok:
                return c
            log.info("--accel auto: not %s (%s)", c, why)
        return "none"
    ok, why = check(choice, device)
    if not ok:
        raise AccelUnavailable(f"--accel {choice} is not available: {why}")
    return choice


# One graph is built at a time, whatever the backend: torch.onnx.export keeps global state
# (GLOBALS.in_onnx_export), torch.compile compiles on a runner's first call, CUDA graphs capture on
# one, and the chunk step (model thread) and the VAE decoder (decode thread) build during the same
# warm-up chunk. Held while a runner is made and during its first call (reentrant: the makers take it
# around their exports too).
_EXPORT_LOCK = threading.RLock()


def engine(choice: str, device: torch.device) -> Make:
    """The factory turning a fixed-shape step module into a runner for `choice`."""
    if choice == "flat":  # the fixed-shape modules run eagerly: what every backend compiles

        def make_flat(kind, module, inputs, names, export):
            return module

        return make_flat
    if choice == "onnx":
        from .onnx_backend import OrtStep

        def make_onnx(kind, module, inputs, names, export):
            if isinstance(module, ChunkStep) and module.tr.cfg.softmax_bf16 and module.tr.dtype == torch.float32:
                raise AccelUnavailable(
                    "ONNX Runtime's CPU provider has no bf16 kernels and this model runs its softmax attention in "
                    "bf16 (SanaWMConfig.softmax_bf16=True): use --accel compile or none, or softmax_bf16=False"
                )
            with _EXPORT_LOCK:  # torch.onnx.export keeps global state: the VAE thread's export waits
                path = export()
            step = OrtStep(path)
            step.bind_names(names)
            return step

        return make_onnx
    if choice == "compile":
        from .compile_backend import compiled

        return lambda kind, module, inputs, names, export: compiled(module)
    if choice == "tensorrt":
        from .tensorrt_backend import TrtStep, build_engine

        def make_trt(kind, module, inputs, names, export):
            with _EXPORT_LOCK:
                path = export()
            return TrtStep(build_engine(path, device), names)

        return make_trt
    if choice == "cudagraph":
        from .tensorrt_backend import CudaGraphStep

        return lambda kind, module, inputs, names, export: CudaGraphStep(module, inputs)
    raise ValueError(f"no engine for {choice!r}")


class AcceleratedStep:
    """Stand-in for `SanaWMStreamingTransformer` in `LatentRollout.backend` (same call signature).

    With `shared` (apply_accel: for the backends in SHARED_GRAPH) the denoising passes run the cache-writing
    graph too and take its velocity only: one graph, so a backend that embeds the weights in what it builds
    (TensorRT engines, ONNX Runtime sessions) holds them once, not once for the reads and once for the write
    (+10.6 GB at full size in bf16). A read computes the cache outputs too and drops them (neither TensorRT
    nor ONNX Runtime's inference build runs only what the requested outputs need): on the bundled model on
    the CPU a write-graph call costs about 3% more CPU than a read-graph call (79.0 vs 76.8 ms, fastest of
    150, ONNX Runtime, one thread). torch.compile and CUDA graphs run the live weights: separate graphs."""

    def __init__(
        self, transformer: nn.Module, make: Make, folder: Path, fallback: bool = False, backend: str = "accel",
        shared: bool = True,
    ) -> None:
        self.tr = transformer
        self.shared = shared
        self.make = make
        self.folder = folder
        self.fallback = fallback  # auto: a backend that fails to build falls back to eager
        self.backend = backend  # what the runners are (summary, logs)
        self.failed: str | None = None
        self.counts = {"eager": 0, "accel": 0}
        self.build_seconds = 0.0
        # graphs for full windows only, unmasked (chunks before run eagerly); None: on CUDA, where the unmasked
        # step runs flash attention (the CPU keeps one masked graph for every chunk after the first)
        self.full_window_only: bool | None = None
        self._runners: dict[tuple, Callable[..., Any]] = {}
        self._unused: set[tuple] = set()  # runners never called yet: their first call finishes the build
        self._layouts: dict[tuple, CacheLayout] = {}
        self._prep: tuple[Any, ...] | None = None  # (cache, camera, prompt, inputs, flat, layout) of the chunk
        self._prompt: tuple[Any, ...] | None = None  # (text, text_mask, PromptContext) when given raw text
        self._hash: str | None = None

    @property
    def runs_on(self) -> str:
        """What this step runs on now: its backend, or "eager (BACKEND failed)" after a fallback (`backends`)."""
        return _runs_on(self)

    def for_session(self) -> AcceleratedStep:
        """The same graphs (runners, layouts, build counts) for another session on the same model: only the
        per-chunk and per-prompt inputs are the session's own (`SanaWM.fork`)."""
        twin = copy.copy(self)  # shares _runners, _unused, _layouts and counts by reference
        twin._prep = twin._prompt = None
        return twin

    def __call__(self, latents, timesteps, text, text_mask, camera, cache=None, write=False):
        # eager: chunk 0 (other shapes), and on a GPU every chunk before the window is full (chunk 1 with the
        # default window) or near the first view (its recent chunks faded, SanaWMConfig.home_radius), as its
        # masked graphs, engines or pools would be built and held for a few chunks a session; the CPU's masked
        # graph takes both through its mask
        full_only = latents.is_cuda if self.full_window_only is None else self.full_window_only
        if (self.failed or cache is None or cache.chunks == 0 or camera is None
                or (full_only and (camera.home > 0 or not _window_full(cache, self.tr.cfg.kv_window - 1)))):
            self.counts["eager"] += 1
            return self.tr(latents, timesteps, text, text_mask, camera, cache, write)
        try:
            fixed, flat, lay = self._prepare(latents, timesteps, text, text_mask, camera, cache)
            inputs = [latents.to(fixed[0].dtype), timesteps.float(), *fixed[2:], *flat]
            # on a GPU the window is full here: no mask (flash attention); the CPU keeps one masked graph
            masked = not full_only
            key, run = self._runner(write or self.shared, inputs, lay, masked)
            if not write and self.shared:  # a read on the write graph: its velocity only
                run = partial(_velocity, run)
            out = _first_call_locked(self, (key, run), inputs)
        except Exception as e:
            if not self.fallback:
                raise
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("accelerated chunk step (%s) failed, running eagerly from now on: %s", self.backend,
                        self.failed)
            return self(latents, timesteps, text, text_mask, camera, cache, write)
        self.counts["accel"] += 1
        if not write:
            return out.to(latents.dtype), None
        self._prep = None  # the chunk is written: its flat cache (a whole copy of the cache) is not needed again
        return out[0].to(latents.dtype), lay.unflatten(list(out[1:]), cache, latents.shape[2])

    def _prepare(self, latents, timesteps, text, text_mask, camera, cache):
        """Per-chunk inputs (RoPE, UCPE, flat cache), shared by the chunk's four reads and its write."""
        prompt = self._prompt_context(text, text_mask)
        p = self._prep
        if p is not None and p[0] is cache and p[1] is camera and p[2] is prompt:
            return p[3], p[4], p[5]
        T, h, w = latents.shape[2:]
        key = tuple(latents.shape)
        if key not in self._layouts:
            ps = self.tr.cfg.patch_size
            self._layouts[key] = CacheLayout.from_cache(cache, self.tr, T * (h // ps[1]) * (w // ps[2]))
        lay = self._layouts[key]
        flat, mask = lay.flatten(cache, camera.home)
        if [tuple(t.shape) for t in flat] != [tuple(s) for s in lay.shapes]:  # another cache shape: re-read it
            lay = self._layouts[key] = CacheLayout.from_cache(cache, self.tr, lay.nc)
            flat, mask = lay.flatten(cache, camera.home)
        fixed, pluckers = step_inputs(self.tr, latents, timesteps, prompt, camera, cache)
        fixed.append(mask)
        # the graph's inputs after kv_mask: the blocks' Plücker projections, the prompt's K/V, the cache
        flat = [*pluckers, *prompt_inputs(prompt), *flat]
        self._prep = (cache, camera, prompt, fixed, flat, lay)
        return fixed, flat, lay

    def _prompt_context(self, text, text_mask) -> PromptContext:
        """`text` when it is the session's PromptContext (LatentRollout passes it), else made from raw text once."""
        if isinstance(text, PromptContext):
            return text
        p = self._prompt
        if p is None or p[0] is not text or p[1] is not text_mask:
            with torch.no_grad():
                p = self._prompt = (text, text_mask, self.tr.prompt_context(text, text_mask))
        return p[2]

    def _weights_hash(self) -> str:
        """Names the exported files; computed only when something is exported (it reads every weight)."""
        if self._hash is None:
            self._hash = module_hash(self.tr)
        return self._hash

    def _runner(
        self, write: bool, inputs: list[torch.Tensor], lay: CacheLayout, masked: bool = True
    ) -> tuple[tuple, Callable[..., Any]]:
        # every input's shape and dtype: a prompt of another length after a reset, or another window, is
        # another graph (a fixed-shape runner fed other shapes reads out of bounds or fails)
        key = (write, masked, *((tuple(t.shape), t.dtype) for t in inputs))
        if key not in self._runners:
            with _EXPORT_LOCK:
                t0 = time.perf_counter()
                step = ChunkStep(self.tr, lay, write, masked).eval()
                names = [*STEP_INPUTS, *plucker_names(self.tr), *prompt_names(len(self.tr.blocks)), *lay.names]
                kind = "chunk-write" if write else "chunk-read"
                self._runners[key] = self.make(
                    kind, step, inputs, names,
                    lambda: export_chunk_step(step, inputs, self.folder, self._weights_hash()),
                )
                self._unused.add(key)
                self.build_seconds += _built(kind, t0, self.backend)
        return key, self._runners[key]


class AcceleratedVAE:
    """Wraps a world's VAE (`SanaWMVAE` or alike): `decode_chunk` of chunks >= 1 runs the decoder step."""

    def __init__(self, inner: Any, make: Make, folder: Path, fallback: bool = False, backend: str = "accel") -> None:
        self.inner = inner
        self.make = make
        self.folder = folder
        self.fallback = fallback
        self.backend = backend
        self.failed: str | None = None
        self.counts = {"eager": 0, "accel": 0}
        self.build_seconds = 0.0
        self._runners: dict[tuple, Callable[..., Any]] = {}
        self._unused: set[tuple] = set()
        self._hash: str | None = None

    @property
    def runs_on(self) -> str:
        """What this step runs on now: its backend, or "eager (BACKEND failed)" after a fallback (`backends`)."""
        return _runs_on(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decode_chunk(self, z: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if self.failed or state is None or not getattr(state, "started", False):
            self.counts["eager"] += 1
            return self.inner.decode_chunk(z, state)
        keys = decode_keys(state)
        tails = [state.tails[k] for k in keys]
        try:
            inputs = [z.contiguous(), *(t.contiguous() for t in tails)]
            out = _first_call_locked(self, self._runner(inputs, keys, state), inputs)
        except Exception as e:
            if not self.fallback:
                raise
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("accelerated VAE decode (%s) failed, decoding eagerly from now on: %s", self.backend,
                        self.failed)
            return self.decode_chunk(z, state)
        self.counts["accel"] += 1
        if not keys:
            return (out[0] if isinstance(out, tuple) else out), state
        return out[0], replace(state, tails=dict(zip(keys, out[1:], strict=True)))

    def _runner(self, inputs: list[torch.Tensor], keys: list, state: Any) -> tuple[tuple, Callable[..., Any]]:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self._runners:
            with _EXPORT_LOCK:
                t0 = time.perf_counter()
                step = DecodeStep(self.inner, keys, state).eval()

                def export() -> Path:
                    if self._hash is None:  # only when exporting: it reads every weight
                        self._hash = module_hash(step)
                    return export_decode_step(step, inputs, self.folder, self._hash)

                names = ["z", *[f"tail{j}" for j in range(len(keys))]]
                self._runners[key] = self.make("vae-decode", step, inputs, names, export)
                self._unused.add(key)
                self.build_seconds += _built("vae-decode", t0, self.backend)
        return key, self._runners[key]


def _velocity(run: Callable[..., Any], *inputs: torch.Tensor) -> torch.Tensor:
    """The velocity of a write-graph call (its first output)."""
    return run(*inputs)[0]


def _window_full(cache: Any, keep: int) -> bool:
    """Every softmax block's recent region holds its `keep` chunks: no padded slot to mask."""
    return all(len(b.recent) >= keep for b in cache.blocks if hasattr(b, "recent"))


def _first_call_locked(owner: AcceleratedStep | AcceleratedVAE, keyed: tuple, inputs: list[torch.Tensor]) -> Any:
    """Run a runner; its first call holds the build lock (torch.compile compiles and CUDA graphs capture then)."""
    key, run = keyed
    if key not in owner._unused:
        return run(*inputs)
    with _EXPORT_LOCK:
        out = run(*inputs)
        owner._unused.discard(key)
    return out


def _built(kind: str, t0: float, backend: str) -> float:
    """Seconds since `t0`; every graph says which backend it runs on (a long build says how long it took)."""
    seconds = time.perf_counter() - t0
    log.info("accel: %s graph runs on %s (ready in %.1f s)", kind, backend, seconds)
    return seconds


def _world_parts(world: Any) -> tuple[Any, Any]:
    """(rollout, vae) that `world` exports (the `Accelerable` interface in runtime/world.py), or (None, None)."""
    stream = getattr(world, "rollout", None)
    if stream is None or not hasattr(stream, "transformer") or not hasattr(stream, "backend"):
        return None, None
    return stream, getattr(world, "vae", None)


def apply_accel(world: Any, choice: str = "auto", cache_dir: str | Path | None = None) -> str:
    """Route `world`'s chunk step and VAE decode through `choice`; returns the backend chosen.

    Worlds that export no chunk step (the reference world) have nothing to accelerate: "none".
    An explicit choice that cannot run raises `AccelUnavailable` with what to install; `auto` never raises.
    """
    if choice not in (*CHOICES, "flat"):
        raise ValueError(f"unknown --accel {choice!r}; choose one of {', '.join(CHOICES)}")
    stream, vae = _world_parts(world)
    if stream is None:
        if choice not in ("auto", "none"):
            log.warning("--accel %s: %s has no SANA-WM chunk step; running it as is", choice, type(world).__name__)
        return "none"
    device = stream.transformer.x_embedder.proj.weight.device
    chosen = resolve(choice, device, cache_dir)
    inner_vae = vae.inner if isinstance(vae, AcceleratedVAE) else vae
    if chosen == "none":
        stream.backend = None
        if vae is not inner_vae:
            world.vae = inner_vae
        return "none"
    folder = export_dir(cache_dir)
    make = engine(chosen, device)
    # the decoder's backend: TensorRT would run every LTX-2 conv in fp32/TF32 between casts (an ONNX bf16 Conv
    # needs opset 22, past the exporter's), slower than eager bf16: CUDA graphs run it in bf16
    vae_choice = VAE_BACKEND.get(chosen, chosen)
    # auto falls back to eager if a backend fails to build. Its choice is fixed per device, never
    # timed at run time, so a replay of a recorded session takes the same path and gives the same
    # frames: on the CPU, ONNX Runtime for the chunk step and the VAE decoder (see CPU_DEFAULT).
    auto = choice == "auto"
    # one graph for the reads and the write where the built graph holds the weights (see AcceleratedStep)
    stream.backend = AcceleratedStep(stream.transformer, make, folder, fallback=auto, backend=chosen,
                                     shared=chosen in SHARED_GRAPH)
    if inner_vae is not None and hasattr(inner_vae, "decode_chunk"):
        vae_make = make if vae_choice == chosen else engine(vae_choice, device)
        world.vae = AcceleratedVAE(inner_vae, vae_make, folder, fallback=auto, backend=vae_choice)
    log.info("accel: chunk step on %s, VAE decoder on %s (chunk 0 eager)", chosen, vae_choice)
    return chosen


def warm_up(world: Any) -> float:
    """Build the accelerated graphs now (export or load from the disk cache, compile) by generating two
    throwaway chunks; returns seconds. The world is left mid-session: reset it (a Session does on start).
    Without this the first chunk after chunk 0 pays the build, a stall in the middle of play."""
    from worldwalk.controls.camera import DEFAULT_FOV_DEG, intrinsics_from_fov

    t0 = time.perf_counter()
    stream = _world_parts(world)[0]
    if stream is None:
        return time.perf_counter() - t0
    folder = getattr(stream.backend, "folder", None)
    what = "accel: building this model's accelerated graphs on first use" + (f" (cached in {folder})" if folder else "")
    with announce(what):
        spec = world.spec
        K = intrinsics_from_fov(spec.width, spec.height, DEFAULT_FOV_DEG)
        world.reset(None, None, 0)
        # chunk 0 runs eagerly; on the CPU chunk 1 builds the fixed-shape graphs; on a GPU the chunks before the
        # window is full run eagerly too and the first chunk with a full window (chunk kv_window) builds them
        tr = stream.transformer
        cuda = next(tr.parameters()).is_cuda
        for k in range(1 + max(1, tr.cfg.kv_window) if cuda else 2):
            n = spec.chunk_frames(k)
            poses = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
            poses[:, 2, 3] = -0.05 * np.arange(k * n, (k + 1) * n)  # walking forward
            world.generate_chunk(poses, np.broadcast_to(K, (n, 3, 3)).copy())
    return time.perf_counter() - t0


def summary(world: Any) -> dict[str, Any]:
    """Per part ("step", "vae"): the backend it runs on now ("eager" once a build failed), counts of
    eager and accelerated calls, build time and the failure (for the bench, the HUD, logs and tests)."""
    stream, vae = _world_parts(world)
    out: dict[str, Any] = {}
    for name, obj in (("step", getattr(stream, "backend", None)), ("vae", vae)):
        if isinstance(obj, AcceleratedStep | AcceleratedVAE):
            out[name] = {"backend": "eager" if obj.failed else obj.backend, **obj.counts,
                         "build_s": obj.build_seconds, "failed": obj.failed}
    return out


def backends(world: Any) -> dict[str, str]:
    """What each accelerable step of `world` runs on now, for the HUD, the page and the exit figures:
    {"chunk": "onnx", "decode": "eager (onnx failed)"}; a world with no such steps (the reference world)
    has none: {}. Cheap (reads a few attributes): the window asks every frame."""
    stream, vae = _world_parts(world)
    if stream is None:
        return {}
    out = {"chunk": _runs_on(getattr(stream, "backend", None))}
    if vae is not None and hasattr(vae, "decode_chunk"):
        out["decode"] = _runs_on(vae)
    return out


def _runs_on(part: Any) -> str:
    if not isinstance(part, AcceleratedStep | AcceleratedVAE):
        return "eager"
    return f"eager ({part.backend} failed)" if part.failed else part.backend


__all__ = [
    "CHOICES",
    "CPU_DEFAULT",
    "AccelUnavailable",
    "AcceleratedStep",
    "AcceleratedVAE",
    "apply_accel",
    "backends",
    "check",
    "resolve",
    "warm_up",
]
