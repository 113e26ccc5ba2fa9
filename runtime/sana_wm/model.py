"""`SanaWM`: the SANA-WM streaming world model behind the `WorldModel` seam.

One chunk, narrated (`submit` does steps 1-4 and returns; `PendingChunk.result` is step 5):
  1. check the poses and intrinsics (count, field of view) and make the poses relative to the
     session's first frame;
  2. build the camera inputs of the chunk's latent frames (UCPE + Plücker);
  3. denoise the chunk with the few-step sampler, reading the cache (chunk 0 also holds the
     clean first-image latent at t = 0);
  4. hand the clean latents to the decoder, which runs on its own thread (and, where CUDA
     exists, its own CUDA stream, ordered after the denoise by an event) with the carried VAE
     state, while the model writes the cache with one clean forward at t = 0;
  5. wait for the decode and convert to uint8.
`generate_chunk` is `submit(...).result()`. A caller that submits chunk k+1 before taking chunk
k's result (`Session` with `pipeline=True`) overlaps the decode of chunk k with the denoising of
chunk k+1. Where CUDA exists the model's work runs on its own CUDA stream; on the CPU the same
code runs with `nullcontext()` in place of streams, the decoder thread using the other core.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.snapshot_memory import PinnedArenas
from worldwalk.runtime.threads import use_torch_threads
from worldwalk.runtime.world import ModelSpec

from .camera import build_camera_inputs, check_fov, pose_inverse
from .config import SanaWMConfig
from .prompt import GemmaPromptEncoder, PromptEmbedding, empty_prompt, load_prompt_file
from .rollout import LatentRollout, RolloutState
from .sampler import FlowSampler, SamplerConfig
from .snapshots import SnapshotStore
from .timing import resolve
from .transformer import SanaWMStreamingTransformer
from .vae import DecodeState, SanaWMVAE, to_uint8


@dataclass
class SanaWMRunConfig:
    """How a SanaWM world runs (the model's shape is `SanaWMConfig`)."""

    width: int = 1280  # output size; a multiple of the VAE's spatial stride x patch size
    height: int = 704
    fps: float = 16.0
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" on GPUs
    use_cache: bool = True  # False: recompute the history every chunk (benchmark contrast)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    prompt_file: str | None = None  # precomputed prompt embedding (.pt)
    text_encoder: str | None = None  # local Gemma-2 folder
    prompt_cache_dir: str = "~/.cache/worldwalk/prompts"
    threads: int = 0  # torch CPU threads; 0 = WORLDWALK_TORCH_THREADS or the cores less one
    translation_scale: float = 1.0  # model units per world unit (the bundled model trained at 0.1)


@dataclass
class SanaWMSnapshot:
    """A chunk boundary, kept where `SnapshotStore` puts it (pinned host memory on CUDA)."""

    rollout: RolloutState
    decode: DecodeState | Future  # a Future while the previous chunk's decode is still running
    chunk_index: int
    first_pose_inv: np.ndarray | None
    cache_event: object = None  # CUDA event: the cache's copy to the host is done
    decode_event: object = None  # the same for the decode state
    cache_bytes: int = 0  # bytes this snapshot adds (the sink, shared by all, is counted once)
    decode_bytes: int = 0  # the decode state's bytes (the last known size while its decode runs)
    leases: list = field(default_factory=list)  # pinned arenas its host tensors live in (snapshots.py)
    sink_lease: object = None  # the arena of the session's host sink (shared with its other snapshots)

    def nbytes(self) -> int:
        """Memory this snapshot keeps: what a session's snapshot budget counts."""
        return self.cache_bytes + self.decode_bytes

    def __getstate__(self) -> dict:
        """What pickle keeps (the cluster's failover store): the copies off the device finished, a running
        decode waited for, CUDA events and pinned-arena leases dropped, every tensor a compact host copy
        (a tensor carved from an arena would otherwise pickle the whole arena)."""
        decode = self.decode  # read before its event: the decode's callback sets the event first, then this
        if isinstance(decode, Future):
            decode = decode.result()[1]
        for event in (self.cache_event, self.decode_event):
            if event is not None:
                event.synchronize()
        state = dict(self.__dict__)
        state.update(
            rollout=_on_host(self.rollout),
            decode=DecodeState({k: _host_copy(t) for k, t in decode.tails.items()}, decode.started),
            cache_event=None, decode_event=None, leases=[], sink_lease=None,
        )
        return state


@dataclass
class PendingChunk:
    """A chunk whose denoising and cache write are done; its decode may still be running."""

    index: int
    poses: np.ndarray  # (F, 4, 4)
    intrinsics: np.ndarray  # (F, 3, 3)
    timings: dict[str, float]
    t_start: float
    decoded: Future  # -> (frames (F, H, W, 3) uint8, DecodeState after it, decode seconds)

    def result(self) -> Chunk:
        frames, _, seconds = self.decoded.result()
        resolve(self.timings)  # GPU stage times (CUDA events) are read now, when the chunk is done anyway
        self.timings["decode"] = seconds
        self.timings["total"] = time.perf_counter() - self.t_start
        return Chunk(frames=frames, poses=self.poses, intrinsics=self.intrinsics, index=self.index,
                     timings=self.timings)


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def _host_copy(t):
    """A compact copy in (pageable) host memory that owns its storage."""
    return None if t is None else t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def _on_host(obj):
    """`obj` (tensors in dataclasses, lists, tuples, dicts) with every tensor a compact host copy."""
    if isinstance(obj, torch.Tensor):
        return _host_copy(obj)
    if isinstance(obj, list | tuple):
        return type(obj)(_on_host(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _on_host(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: _on_host(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init})
    return obj


def _copy(state: DecodeState) -> DecodeState:
    """A decode state that later decodes cannot change (they replace tails, never edit them)."""
    return DecodeState(dict(state.tails), state.started)


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (keeping aspect) and centre-crop an (H, W, 3) uint8 image to (height, width, 3)."""
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float()
    h0, w0 = x.shape[-2:]
    s = max(height / h0, width / w0)
    nh, nw = max(height, round(h0 * s)), max(width, round(w0 * s))
    if (nh, nw) != (h0, w0):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[..., top : top + height, left : left + width]
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class SanaWM:
    # where the sessions' snapshot stores take their arenas (None: the process's pool, on CUDA) and whether they
    # copy (None: on CUDA only); tests run the copying path on the CPU with an unpinned pool of their own
    snapshot_arenas: PinnedArenas | None = None
    snapshot_copies: bool | None = None

    def __init__(
        self,
        transformer: SanaWMStreamingTransformer,
        vae: SanaWMVAE,
        cfg: SanaWMRunConfig | None = None,
        null_caption: torch.Tensor | None = None,
        name: str = "sana-wm",
        label: str = "SANA-WM",
        takes_prompt: bool = True,
    ) -> None:
        self.cfg = cfg = cfg or SanaWMRunConfig()
        mc: SanaWMConfig = transformer.cfg
        self.device = torch.device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        self.transformer = transformer.to(self.device, self.dtype).eval()
        if vae.device != self.device or vae.dtype != self.dtype:
            vae.vae.to(device=self.device, dtype=self.dtype)
        self.vae = vae
        s = vae.temporal_stride
        if mc.plucker_stride != s:
            raise ValueError(
                f"the transformer packs {mc.plucker_stride} video frames per latent frame (chunk_plucker_channels="
                f"{mc.chunk_plucker_channels}) but the VAE's temporal stride is {s}: set chunk_plucker_channels={6 * s}"
            )
        if mc.in_channels != vae.latent_channels:
            raise ValueError(f"transformer in_channels {mc.in_channels} != VAE latent channels {vae.latent_channels}")
        step = vae.spatial_stride * mc.patch_size[1]
        if cfg.width % step or cfg.height % step:
            raise ValueError(f"output size {cfg.width}x{cfg.height} must be a multiple of {step} (VAE stride x patch)")
        self.latent_hw = (cfg.height // vae.spatial_stride, cfg.width // vae.spatial_stride)
        self.null_caption = null_caption
        L = mc.chunk_latent_frames
        self.spec = ModelSpec(
            name=name,
            fps=cfg.fps,
            frames_per_chunk=L * s,
            first_chunk_frames=1 + L * s,
            width=cfg.width,
            height=cfg.height,
            device=str(self.device),
            dtype=cfg.dtype,
            is_model=True,
            label=label,
            takes_prompt=takes_prompt,
        )
        self._encoders: dict[str, GemmaPromptEncoder] = {}  # the text encoder, made on first use; forks share it
        self._encoder_lock = threading.Lock()
        self._start_session_state(LatentRollout(transformer, FlowSampler(cfg.sampler), cfg.use_cache))

    def _start_session_state(self, rollout: LatentRollout) -> None:
        """What one session holds for itself over the model: its rollout (cache, noise generator, prompt),
        CUDA streams, decoder thread, snapshot store and position. Everything else (the transformer, the VAE,
        their accelerated graphs or engines, the text encoder) is the model, which `fork` shares."""
        self.rollout = rollout
        cuda = _cuda(self.device)
        self._model_stream = torch.cuda.Stream(self.device) if cuda else None
        self._decode_stream = torch.cuda.Stream(self.device) if cuda else None
        self._image_latent: torch.Tensor | None = None
        self._decode_start = DecodeState()  # the VAE state the running decode chain started from
        self._decoding: Future | None = None  # the last submitted chunk's decode, while it runs
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="sana-wm-decode")
        self._snapshots = SnapshotStore(self.device, self.snapshot_arenas, self.snapshot_copies)
        self._decode_bytes = 0  # size of the last decode state a snapshot kept
        self._chunk_index = 0
        self._first_pose_inv: np.ndarray | None = None

    def fork(self) -> SanaWM:
        """A light world for one more session on this one's model: the same transformer, VAE and
        accelerated graphs (one copy of the weights on the device), its own cache, noise, snapshots,
        streams and decoder thread. Sessions run their chunks on their own threads; the model's modules
        hold no per-session state (the per-chunk memo of the transformer is kept per thread). The fork
        starts like a fresh world: reset it (a Session does on start). Closing it frees its own state only."""
        twin = copy.copy(self)  # subclasses' read-only extras (the bundled start frame, configs) come along
        step = self.rollout.backend
        rollout = LatentRollout(self.transformer, self.rollout.sampler, self.rollout.use_cache)
        if step is not None:
            rollout.backend = step.for_session() if hasattr(step, "for_session") else step
        twin._start_session_state(rollout)
        return twin

    # ---- construction without a checkpoint (tests, the bundled model) ----
    @classmethod
    def random_init(
        cls, model_cfg: SanaWMConfig, vae_config: dict, run: SanaWMRunConfig | None = None, seed: int = 0
    ) -> SanaWM:
        from diffusers import AutoencoderKLLTX2Video

        torch.manual_seed(seed)
        return cls(SanaWMStreamingTransformer(model_cfg), SanaWMVAE(AutoencoderKLLTX2Video(**vae_config)), run)

    def backends(self) -> dict[str, str]:
        """What the chunk step and the VAE decode run on now ("onnx", "eager", "eager (onnx failed)"
        after a fallback): the HUD, the page and the exit figures say it (see runtime/world.py). A
        stand-in that runtime/accel installed says it as its `runs_on`; the model's own modules run eagerly."""
        out = {"chunk": getattr(self.rollout.backend, "runs_on", "eager")}
        if hasattr(self.vae, "decode_chunk"):
            out["decode"] = getattr(self.vae, "runs_on", "eager")
        return out

    def _stream_ctx(self, stream):
        return torch.cuda.stream(stream) if stream is not None else nullcontext()

    # ---- prompt ----
    def _prompt(self, prompt: str | None) -> PromptEmbedding:
        mc = self.transformer.cfg
        if self.cfg.prompt_file:
            return load_prompt_file(self.cfg.prompt_file, mc.caption_channels)
        if prompt and self.cfg.text_encoder:
            with self._encoder_lock:  # one encoder for the model and its forks, however many sessions reset at once
                if "gemma" not in self._encoders:
                    self._encoders["gemma"] = GemmaPromptEncoder(
                        self.cfg.text_encoder, os.path.expanduser(self.cfg.prompt_cache_dir), str(self.device)
                    )
                encoder = self._encoders["gemma"]
                return encoder.encode(prompt)
        if prompt:
            raise ValueError(
                "a text prompt needs a text encoder: pass options text_encoder=<local Gemma-2 folder> or "
                "prompt_file=<precomputed embedding .pt>"
            )
        return empty_prompt(self.null_caption, mc.caption_channels, mc.caption_tokens)

    # ---- WorldModel ----
    @torch.no_grad()
    def reset(self, first_frame: np.ndarray | None, prompt: str | None, seed: int) -> None:
        use_torch_threads(self.cfg.threads)  # on the model thread, which runs every chunk
        self._settle()
        H, W = self.cfg.height, self.cfg.width
        image = np.full((H, W, 3), 128, np.uint8) if first_frame is None else fit_image(first_frame, H, W)
        with self._stream_ctx(self._model_stream):
            self._image_latent = self.vae.encode_image(image).to(self.dtype)
            p = self._prompt(prompt).to(self.device, self.dtype)
            self.rollout.reset(p.embeds, p.mask, seed)
        self._decode_start = DecodeState()
        self._snapshots.reset()
        self._chunk_index = 0
        self._first_pose_inv = None

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        return self.submit(poses, intrinsics).result()

    @torch.no_grad()
    def submit(self, poses: np.ndarray, intrinsics: np.ndarray) -> PendingChunk:
        """Denoise chunk k and write the cache; its decode runs on the decoder thread meanwhile."""
        if self._image_latent is None:
            raise RuntimeError("call reset(first_frame, prompt, seed) before generate_chunk")
        k, s, L = self._chunk_index, self.vae.temporal_stride, self.transformer.cfg.chunk_latent_frames
        n = self.spec.chunk_frames(k)
        poses = np.asarray(poses, np.float64)
        intrinsics = np.asarray(intrinsics, np.float64)
        if poses.shape != (n, 4, 4) or intrinsics.shape != (n, 3, 3):
            raise ValueError(
                f"chunk {k} needs poses ({n}, 4, 4) and intrinsics ({n}, 3, 3); got {poses.shape}, {intrinsics.shape}"
            )
        timings: dict[str, float] = {}
        t_start = time.perf_counter()

        # 1. validate and make poses relative to the session's first frame
        check_fov(intrinsics, self.cfg.width, self.cfg.height)
        if k == 0:
            self._first_pose_inv = pose_inverse(poses[0])
        first_video = 0 if k == 0 else 1 + L * s * k
        rel_poses = self._first_pose_inv[None] @ poses  # (F, 4, 4)
        rel_poses[:, :3, 3] *= self.cfg.translation_scale
        rel = {first_video + i: p for i, p in enumerate(rel_poses)}
        Ks = {first_video + i: K for i, K in enumerate(intrinsics)}

        # 2. camera inputs of this chunk's latent frames, with how far it ends back at the first view (home view)
        first_latent = 0 if k == 0 else 1 + L * k
        latents = list(range(first_latent, 1 + L * (k + 1)))
        camera = build_camera_inputs(rel, Ks, latents, s, (self.cfg.height, self.cfg.width), self.latent_hw,
                                     self.transformer.cfg.home_view)
        shape = (1, self.vae.latent_channels, L, *self.latent_hw)

        with self._stream_ctx(self._model_stream):
            # 3. denoise, reading the cache
            z = self.rollout.denoise(camera, shape, self._image_latent if k == 0 else None, timings)
            # 4. the decoder takes the clean latents (after the denoise, by an event on CUDA) and
            #    runs while the clean pass writes the cache and, pipelined, the next chunk denoises
            ready = None
            if self._decode_stream is not None:
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(self.device))
                z.record_stream(self._decode_stream)
            # the decode chain's start goes with the job: nothing here holds it (0.55 GB at full size) after
            start = None
            if self._decoding is None:
                start, self._decode_start = self._decode_start, DecodeState()
            self._decoding = self._decoder.submit(self._decode_job, z, ready, self._decoding, n, k, start)
            self.rollout.commit(z, camera, timings)
        self._chunk_index += 1
        return PendingChunk(k, poses, intrinsics, timings, t_start, self._decoding)

    @torch.no_grad()
    def _decode_job(self, z: torch.Tensor, ready, previous: Future | None, n: int, k: int,
                    start: DecodeState | None = None):
        """On the decoder thread, in chunk order: (frames, decode state after, seconds)."""
        use_torch_threads(self.cfg.threads)
        state = previous.result()[1] if previous is not None else start
        t0 = time.perf_counter()
        if ready is not None:
            self._decode_stream.wait_event(ready)
        with self._stream_ctx(self._decode_stream):
            pixels, state = self.vae.decode_chunk(z, state)
            frames = to_uint8(pixels)  # copies to the host: waits for the decode stream
        if frames.shape[0] != n:
            raise RuntimeError(f"decoded {frames.shape[0]} frames for chunk {k}, expected {n}")
        return frames, state, time.perf_counter() - t0

    def _settle(self) -> DecodeState:
        """Wait for the running decode; the decode state after the last submitted chunk."""
        if self._decoding is not None:
            try:
                self._decode_start = self._decoding.result()[1]
            finally:
                self._decoding = None
        return self._decode_start

    def snapshot(self) -> SanaWMSnapshot:
        """Cache, RNG, position and VAE state at this chunk boundary. The VAE part is the running
        decode's future when there is one, so a snapshot never stalls the pipeline; once that decode is
        done its state replaces the future (and the frames the future also holds). On CUDA the tensors
        go to pinned host memory on a side stream (`SnapshotStore`)."""
        st = self.rollout.snapshot()
        cache, cache_bytes, event, leases = self._snapshots.offload_cache(st.cache, self._model_stream)
        snap = SanaWMSnapshot(
            replace(st, cache=cache),
            DecodeState(),
            self._chunk_index,
            None if self._first_pose_inv is None else self._first_pose_inv.copy(),
            cache_event=event,
            cache_bytes=cache_bytes,
            decode_bytes=self._decode_bytes,
            leases=leases,
            sink_lease=self._snapshots.sink_lease(),
        )
        if self._decoding is not None:
            snap.decode = self._decoding
            # by weak reference: the future keeps its callbacks, and a strong one would make a cycle that holds a
            # dropped snapshot (and its arenas, which the next snapshots would reuse) until the garbage collector runs
            self._decoding.add_done_callback(partial(self._keep_decode, weakref.ref(snap)))
        else:
            self._keep_decode_state(snap, self._decode_start)
        return snap

    def prepare_snapshots(self) -> int:
        """Make the snapshot arenas a session takes before any session runs (on CUDA: pinned memory, whose
        `cudaHostRegister` would otherwise stall the first session's first chunks). A throwaway session walks
        until its attention window is full and keeps a chunk boundary before each chunk, as a `Session` does,
        dropping each once the next is kept: every arena size a session's snapshots take (the sink, the cache
        as the window fills and once full, the decode state) is made once here and goes back to the pool,
        whose helper thread makes a spare of each. The world is left mid-session (the world pool closes it).
        Returns the arenas made; 0 where snapshots share the live tensors (the CPU)."""
        from worldwalk.controls.camera import DEFAULT_FOV_DEG, intrinsics_from_fov

        arenas = self._snapshots.arenas
        if not self._snapshots.copies or arenas is None:
            return 0
        made = arenas.allocations
        spec = self.spec
        K = intrinsics_from_fov(spec.width, spec.height, DEFAULT_FOV_DEG)
        self.reset(None, None, 0)
        kept = None
        for k in range(self.transformer.cfg.kv_window + 2):  # chunk k reads k chunks: the last two a full window
            kept = self.snapshot()  # the boundary before chunk k; the one before is dropped, its arenas freed
            n = spec.chunk_frames(k)
            self.generate_chunk(np.broadcast_to(np.eye(4), (n, 4, 4)).copy(), np.broadcast_to(K, (n, 3, 3)).copy())
        kept = self.snapshot()
        self._settle()  # the last decode's state is offloaded too
        del kept
        return arenas.allocations - made

    def _keep_decode(self, ref: weakref.ref, decoding: Future) -> None:
        """Done-callback of a decode a snapshot waits for (runs on the decoder thread); nothing for a snapshot
        dropped meanwhile."""
        snap = ref()
        if snap is not None and not decoding.cancelled() and decoding.exception() is None:
            self._keep_decode_state(snap, decoding.result()[1])

    def _keep_decode_state(self, snap: SanaWMSnapshot, state: DecodeState) -> None:
        decode, n, event, leases = self._snapshots.offload_decode(state, self._decode_stream)
        snap.leases = [*snap.leases, *leases]
        snap.decode_event, snap.decode_bytes = event, n
        snap.decode = decode  # last: restore() reads the event only once it sees the state
        self._decode_bytes = n

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, SanaWMSnapshot):
            raise TypeError(f"expected a SanaWMSnapshot from this world's snapshot(), got {type(snapshot).__name__}")
        self._settle()
        with self._stream_ctx(self._model_stream):  # copies back in the model's order (the decode waits for it)
            cache = self._snapshots.restore_cache(snapshot.rollout.cache, snapshot.cache_event, snapshot.sink_lease)
            self.rollout.restore(replace(snapshot.rollout, cache=cache))
            decode = snapshot.decode
            if isinstance(decode, Future):
                decode = decode.result()[1]  # on the device still
            else:
                decode = self._snapshots.restore_decode(decode, snapshot.decode_event)
                if self._decode_stream is not None:  # copied on the model stream, read on the decode stream
                    for t in decode.tails.values():
                        t.record_stream(self._decode_stream)
        self._decode_start = _copy(decode)
        self._chunk_index = snapshot.chunk_index
        self._first_pose_inv = None if snapshot.first_pose_inv is None else snapshot.first_pose_inv.copy()

    def close(self) -> None:
        try:
            self._settle()
        except Exception:
            pass  # the decode's error was already reported to whoever took its result
        self._decoder.shutdown(wait=True)
        self._image_latent = None
        self._decode_start = DecodeState()
        self._snapshots.reset()
        self.rollout.cache = self.transformer.new_cache()
        self.rollout.history = []
        self.rollout.prompt = self.rollout.text = self.rollout.mask = None
        if _cuda(self.device):
            torch.cuda.empty_cache()

    # ---- benchmarking hooks ----
    def cache_nbytes(self) -> int:
        """Bytes the streaming state holds (transformer cache or recompute history, plus VAE decode state)."""
        return self.rollout.nbytes() + self._settle().nbytes()
