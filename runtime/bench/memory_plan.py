"""How much GPU memory a SANA-WM world needs, and how many sessions fit: planned on the `meta` device.

Nothing is allocated: the transformer and the LTX-2 VAE are built on `meta` (shapes and dtypes, no
data), and the streaming code itself runs on meta tensors, so every figure is shapes x dtype of the
tensors the real code makes:
- weights: parameters and buffers of the transformer and of the VAE (encoder + decoder);
- per-session state: the streaming cache after the attention window is full (GDN states, softmax
  sink + window K/V and camera K/V, conv tails), the VAE decode state (causal conv tails), the
  first-image latent and the prompt; plus what each rewind snapshot adds (a session keeps as many chunk
  boundaries as `SessionConfig.snapshot_budget_mb` holds, at most `max_snapshots`, and each holds the
  tensors its chunk wrote);
- activation peak of one chunk: the largest live-bytes high-water mark of a denoising forward (on
  chunk 0, and at steady state with the full window), of the cache-writing forward, and of the VAE
  decode, tracked op by op (`LiveBytes`). Each pass measured is a chunk's first, so its peak includes
  what the chunk's passes share and hold until its write (the blocks' Plücker projections and the softmax
  blocks' attention contexts, transformer.ChunkInputs), also listed on their own. Softmax attention counts
  as a fused kernel (output plus log-sum-exp, as flash / memory-efficient SDPA on CUDA), not the (N x M)
  score matrix that the meta device's reference path would make.

Sessions per GPU = (GPU memory - reserve - weights - transformer peak - VAE decode peak) // per-session
bytes: the sessions' chunks take turns on the GPU, and a pipelined session decodes one chunk while the
next denoises, so one transformer and one decoder peak are live at once. Rewind snapshots are counted in
host memory (on CUDA the session's snapshot store keeps them in pinned host memory); the plan also says
how many sessions would fit with them on the GPU. The reserve (CUDA context,
cuBLAS workspaces, allocator slack) is `RESERVE_BYTES` plus `RESERVE_FRACTION` of the GPU.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from worldwalk.runtime.byte_sizes import parse_bytes  # noqa: F401 (re-exported: info and tests read it here)
from worldwalk.runtime.device_memory import (
    MIN_SNAPSHOTS,
    RESERVE_BYTES,
    RESERVE_FRACTION,
    GiB,
    gpu_total_memory,
    kept_snapshots,
    tracked,
)
from worldwalk.runtime.sana_wm.cache import GDNCache, SoftmaxCache, StreamingCache
from worldwalk.runtime.sana_wm.camera import CameraInputs
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.memory import reported_bytes
from worldwalk.runtime.world import CPU_SESSIONS


def released_vae_config() -> dict[str, Any]:
    """The released LTX-2 video VAE (diffusers' defaults: 128 latent channels, 32x spatial, 8x temporal)."""
    return {}  # AutoencoderKLLTX2Video() with no arguments is the released size


def _held(t: torch.Tensor | None, held: set[int] | None = None) -> int:
    """Bytes `t` keeps alive: its whole storage (a view holds its base), each storage counted once in `held`."""
    if t is None:
        return 0
    if held is None:
        return t.numel() * t.element_size()
    s = t.untyped_storage()
    if s._cdata in held:
        return 0
    held.add(s._cdata)
    return s.nbytes()


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------


@dataclass
class MemoryPlan:
    width: int
    height: int
    dtype: str
    transformer_params: int
    vae_params: int
    weight_bytes: dict[str, int]  # transformer, vae
    session_bytes: dict[str, int]  # per-session state, by part
    snapshot_bytes: int  # what one kept chunk boundary (rewind point) adds
    peak_bytes: dict[str, int]  # activation high-water marks, by pass
    notes: list[str] = field(default_factory=list)

    @property
    def weights(self) -> int:
        return sum(self.weight_bytes.values())

    @property
    def per_session(self) -> int:
        return sum(self.session_bytes.values())

    @property
    def chunk_peak(self) -> int:
        """One chunk's activation peak: the largest transformer pass plus a decode beside it (pipelined)."""
        p = self.peak_bytes
        model = max(p["denoise_first_chunk"], p["denoise_steady"], p["cache_write"], p["vae_encode_first_image"])
        return model + p["vae_decode"]

    def per_session_with(self, snapshots: int) -> int:
        return self.per_session + snapshots * self.snapshot_bytes

    def reserve(self, gpu_bytes: int) -> int:
        return RESERVE_BYTES + int(RESERVE_FRACTION * gpu_bytes)

    def graph_bytes(self, backend: str = "none") -> int:
        """Device memory one model's accelerated graphs or engines hold for good (shared by its sessions).
        An estimate from the plan's parts, not a measurement (`bench --gpu-check` compares):
        - cudagraph: each graph keeps its static inputs and outputs and a private pool as large as its pass's
          activations: the chunk read (the cache, the prompt K/V and the blocks' Plücker projections in; a
          denoising pass), the chunk write (the cache in and out, the projections in; the write pass) and the
          decoder (the tails in and out; a decode). Chunks whose window is not full run eagerly, so there is
          no masked graph;
        - tensorrt: the chunk-step engine embeds the transformer's weights (one engine for the reads and the
          write) plus its activation memory; the decoder runs on a CUDA graph (runtime/accel/apply.py);
        - none, compile, onnx: nothing held beyond the eager peak."""
        s, p = self.session_bytes, self.peak_bytes
        cache = sum(v for k, v in s.items() if k not in ("vae_decode_state", "first_image_latent", "prompt"))
        decode = s.get("vae_decode_state", 0)
        decoder_graph = 2 * decode + p["vae_decode"]
        # the eager peaks hold the chunk's shared inputs (ChunkInputs); a graph gets the Plücker projections as
        # inputs (static buffers of a CUDA graph) and joins the softmax contexts inside, one block at a time
        pluckers = p.get("held_plucker_projections", 0)
        held = pluckers + p.get("held_softmax_contexts", 0)
        read, write = p["denoise_steady"] - held, p["cache_write"] - held
        if backend == "cudagraph":
            return (cache + pluckers + read) + (2 * cache + pluckers + write) + decoder_graph
        if backend == "tensorrt":
            return self.weight_bytes["transformer"] + write + decoder_graph
        return 0

    def sessions_fit(self, gpu_bytes: int, snapshots: int, backend: str = "none", shared: bool = True) -> int:
        """Sessions a GPU holds. `shared`: one model (weights, graphs) per device and a light world per
        session (runtime/worlds/world_pool.py); otherwise every session builds the whole world (how `serve` ran
        before the pool), its own weights, graphs and activation peak."""
        model = self.weights + self.graph_bytes(backend)
        if not shared:
            return max(0, (gpu_bytes - self.reserve(gpu_bytes)) //
                       (model + self.chunk_peak + self.per_session_with(snapshots)))
        free = gpu_bytes - self.reserve(gpu_bytes) - model - self.chunk_peak
        return max(0, free // self.per_session_with(snapshots))

    def pinned_snapshot_bytes(self) -> int:
        """Pinned host memory one kept snapshot takes: its bytes rounded up to the arena (a power of two,
        as the pinned pool of runtime/snapshot_memory.py allocates them)."""
        from worldwalk.runtime.snapshot_memory import arena_size

        return arena_size(self.snapshot_bytes)

    def sessions_fit_host(self, pinned_budget: int, snapshots: int = MIN_SNAPSHOTS) -> int:
        """Sessions whose rewind snapshots (at least `snapshots` each) fit the process's pinned budget."""
        return pinned_budget // max(1, snapshots * self.pinned_snapshot_bytes())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(weights=self.weights, per_session=self.per_session, chunk_peak=self.chunk_peak)
        return d


def _param_bytes(module: torch.nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """(parameter count, bytes of parameters + buffers once cast to `dtype`; integer buffers keep theirs)."""
    n = sum(p.numel() for p in module.parameters())
    size = torch.empty((), dtype=dtype).element_size()
    b = sum(p.numel() * (size if p.is_floating_point() else p.element_size()) for p in module.parameters())
    b += sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in module.buffers())
    return n, b


def cache_parts(cache: StreamingCache) -> dict[str, int]:
    """Bytes a streaming cache keeps alive, by part (storages, so a view counts what it holds)."""
    held: set[int] = set()

    def _nbytes(t):
        return _held(t, held)

    parts = dict.fromkeys(
        ("gdn_state", "gdn_norm_state", "gdn_camera_state", "gdn_conv_tails", "ffn_tails", "softmax_sink_kv",
         "softmax_window_kv", "softmax_sink_camera_kv", "softmax_window_camera_kv"), 0)
    for b in cache.blocks:
        parts["ffn_tails"] += _nbytes(b.ffn_tail)
        if isinstance(b, GDNCache):
            parts["gdn_state"] += _nbytes(b.state)
            parts["gdn_norm_state"] += _nbytes(b.norm_state)
            parts["gdn_camera_state"] += _nbytes(b.cam_state)
            parts["gdn_conv_tails"] += _nbytes(b.k_tail) + _nbytes(b.cam_k_tail)
        elif isinstance(b, SoftmaxCache):
            for name, kvs in (("sink", [b.sink] if b.sink is not None else []), ("window", list(b.recent))):
                for kv in kvs:
                    parts[f"softmax_{name}_kv"] += _nbytes(kv.k) + _nbytes(kv.v)
                    parts[f"softmax_{name}_camera_kv"] += _nbytes(kv.cam_k) + _nbytes(kv.cam_v)
    return parts


def _storages(*objs: Any) -> dict[int, int]:
    """Unique storages (key -> bytes) of every tensor inside caches / decode states."""
    out: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            out[s._cdata] = s.nbytes()

    for o in objs:
        if isinstance(o, StreamingCache):
            for b in o.blocks:
                for v in vars(b).values():
                    if isinstance(v, tuple):
                        for kv in v:
                            for t in vars(kv).values():
                                add(t)
                    elif v is not None and not isinstance(v, torch.Tensor):
                        for t in vars(v).values():
                            add(t)
                    else:
                        add(v)
        else:  # DecodeState
            for t in o.tails.values():
                add(t)
    return out


def plan_memory(
    model_cfg: SanaWMConfig,
    vae_config: dict[str, Any],
    width: int = 1280,
    height: int = 704,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "meta",
) -> MemoryPlan:
    """Run the streaming code on `device` ("meta": no memory; "cpu": real tensors, for the test) and size it."""
    from diffusers import AutoencoderKLLTX2Video
    from diffusers.utils import logging as diffusers_logging

    from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
    from worldwalk.runtime.sana_wm.vae import DecodeState, SanaWMVAE

    dev = torch.device(device)
    torch.manual_seed(0)
    with torch.device(dev):
        tr = SanaWMStreamingTransformer(model_cfg)
        vae_module = AutoencoderKLLTX2Video(**vae_config)
    tr = tr.to(dtype).eval()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "keep some modules in float32" hint: the LTX-2 VAE has none
    try:
        vae = SanaWMVAE(vae_module.to(dtype))
    finally:
        diffusers_logging.set_verbosity(verbosity)
    n_tr, b_tr = _param_bytes(tr, dtype)
    n_vae, b_vae = _param_bytes(vae_module, dtype)

    s, L, C = vae.spatial_stride, model_cfg.chunk_latent_frames, vae.latent_channels
    if width % (s * model_cfg.patch_size[1]) or height % (s * model_cfg.patch_size[1]):
        step = s * model_cfg.patch_size[1]
        raise ValueError(f"size {width}x{height} must be a multiple of {step} (VAE stride x patch)")
    h, w = height // s, width // s
    text = torch.randn(1, model_cfg.caption_tokens, model_cfg.caption_channels, device=dev, dtype=dtype)
    mask = torch.ones(1, model_cfg.caption_tokens, device=dev, dtype=torch.bool)

    def camera(T: int) -> CameraInputs:
        cond = torch.zeros(1, T, 20, device=dev)
        cond[..., :16] = torch.eye(4, device=dev).flatten()
        cond[..., 16:] = torch.tensor([w * 0.7, h * 0.7, w / 2, h / 2], device=dev)
        return CameraInputs(cond, torch.randn(1, model_cfg.chunk_plucker_channels, T, h, w, device=dev, dtype=dtype))

    def latents(T: int) -> torch.Tensor:
        return torch.randn(1, C, T, h, w, device=dev, dtype=dtype)

    peaks: dict[str, int] = {}
    with torch.no_grad():
        image = torch.zeros(1, 3, 1, height, width, device=dev, dtype=dtype)
        with tracked() as live:
            vae_module.encode(image, causal=True).latent_dist.mode()
        peaks["vae_encode_first_image"] = live.peak
        image_latent = latents(1)
        # chunk 0 (image latent + L frames), then enough chunks to fill the attention window
        first = torch.cat([image_latent, latents(L)], 2)
        tr._chunk_memo = None
        with tracked() as live:
            tr(first, torch.full((1, L + 1), 960.0, device=dev), text, mask, camera(L + 1), None, False)
        peaks["denoise_first_chunk"] = live.peak
        _, cache = tr(first, torch.zeros(1, L + 1, device=dev), text, mask, camera(L + 1), None, True)
        snaps = []
        for _ in range(model_cfg.kv_window):
            _, cache = tr(latents(L), torch.zeros(1, L, device=dev), text, mask, camera(L), cache, True)
            snaps.append(cache)
        # the window is full (chunk 0 has slid out, or sits in the sink): this write is a steady one
        tr._chunk_memo = None
        with tracked() as live:
            _, cache = tr(latents(L), torch.zeros(1, L, device=dev), text, mask, camera(L), cache, True)
        write_peak = live.peak
        snaps.append(cache)
        tr._chunk_memo = None  # the chunk's held inputs are made inside the pass measured, so its peak has them
        with tracked() as live:
            tr(latents(L), torch.full((1, L), 960.0, device=dev), text, mask, camera(L), cache, False)
        peaks["denoise_steady"] = live.peak
        peaks["cache_write"] = write_peak
        # what the chunk's passes share (transformer.ChunkInputs), held from its first pass to its write: part of
        # the peaks above, listed to show what holding them costs
        held = tr._chunk_memo[2]
        peaks["held_plucker_projections"] = reported_bytes(held.pluckers)
        peaks["held_softmax_contexts"] = reported_bytes(held.windows)
        tr._chunk_memo = None
        _, d0 = vae.decode_chunk(latents(L + 1), DecodeState())
        _, d1 = vae.decode_chunk(latents(L), d0)
        with tracked() as live:
            _, d2 = vae.decode_chunk(latents(L), d1)
        peaks["vae_decode"] = live.peak

    session = cache_parts(cache)
    session["vae_decode_state"] = sum(_storages(d2).values())
    session["first_image_latent"] = _held(image_latent)
    session["prompt"] = _held(text) + _held(mask)
    with torch.no_grad():  # the cross-attention K/V every block reads, made once a session (PromptContext)
        session["prompt_kv"] = sum(_held(t) for kv in tr.prompt_context(text, mask).kv for t in kv)
    # a kept chunk boundary holds the tensors its chunk wrote: unique bytes of two consecutive states,
    # less one state
    one = _storages(snaps[-1], d2)
    two = _storages(snaps[-2], snaps[-1], d1, d2)
    snapshot = sum(two.values()) - sum(one.values())
    L_tok = L * h * w
    notes = [
        f"latent grid {h}x{w} = {h * w} tokens a frame; a chunk is {L} latent frames ({L_tok} tokens), "
        f"chunk 0 adds the first-image latent",
        f"softmax blocks keep the sink (chunk 0) and {model_cfg.kv_window - 1} recent chunk(s) of K/V",
        "attention counted as a fused kernel (flash / memory-efficient SDPA), as on CUDA",
    ]
    return MemoryPlan(
        width, height, str(dtype).removeprefix("torch."), n_tr, n_vae,
        {"transformer": b_tr, "vae": b_vae}, session, snapshot, peaks, notes,
    )


# ---------------------------------------------------------------------------------------------
# configs from a checkpoint folder, without reading weights into memory
# ---------------------------------------------------------------------------------------------


def checkpoint_configs(path: str | Path) -> tuple[SanaWMConfig, dict[str, Any]]:
    """(SanaWMConfig, VAE config dict) of a local SANA-WM folder (official or diffusers layout)."""
    from worldwalk.runtime.sana_wm.checkpoint import CheckpointError, _read_torch, infer_config, official_to_ours

    root = Path(path)
    official = root / "sana_dit" / "model.pt"
    if official.is_file():
        cfg_file, vae_dir = official.with_name("config.json"), root / "ltx2_causal_vae"
        if cfg_file.is_file():
            cfg = SanaWMConfig.from_dict(json.loads(cfg_file.read_text()))
        else:
            cfg = infer_config(official_to_ours(_read_torch(official))[0])  # memory-mapped: shapes only
    elif (root / "transformer" / "config.json").is_file():
        cfg = SanaWMConfig.from_diffusers(json.loads((root / "transformer" / "config.json").read_text()))
        vae_dir = root / "vae"
    else:
        raise CheckpointError(
            f"no SANA-WM checkpoint in {root}: expected sana_dit/model.pt (official layout) or transformer/config.json"
        )
    vae_file = vae_dir / "config.json"
    if not vae_file.is_file():
        raise CheckpointError(f"{root} has no VAE config {vae_file}")
    vae_cfg = {k: v for k, v in json.loads(vae_file.read_text()).items() if not k.startswith("_")}
    return cfg, vae_cfg


def format_plan(plan: MemoryPlan, gpu_bytes: int, snapshots: int, pinned_budget: int = 0) -> str:
    def gib(b: int) -> str:
        return f"{b / GiB:8.3f} GiB" if b >= GiB // 4 else f"{b / 2**20:8.1f} MiB"

    lines = [
        f"memory plan: SANA-WM {plan.transformer_params / 1e9:.2f}B transformer + {plan.vae_params / 1e9:.2f}B VAE, "
        f"{plan.dtype}, {plan.width}x{plan.height}",
        f"  weights                           {gib(plan.weights)}",
    ]
    lines += [f"    {k:<31} {gib(v)}" for k, v in plan.weight_bytes.items()]
    lines.append(f"  per-session state                 {gib(plan.per_session)}")
    lines += [f"    {k:<31} {gib(v)}" for k, v in plan.session_bytes.items()]
    lines.append(f"  each rewind snapshot adds         {gib(plan.snapshot_bytes)}")
    lines.append(f"  activation peak of one chunk      {gib(plan.chunk_peak)}  (largest model pass + a decode beside)")
    lines += [f"    {k:<31} {gib(v)}" + ("  (of the passes' peaks: made once a chunk, held to its write)"
                                           if k.startswith("held_") else "") for k, v in plan.peak_bytes.items()]
    lines += [
        f"  GPU {gpu_bytes / 1e9:.0f} GB: reserve {gib(plan.reserve(gpu_bytes)).strip()}, "
        f"weights + peak {gib(plan.weights + plan.chunk_peak).strip()}",
        f"  sessions that fit                 {plan.sessions_fit(gpu_bytes, 0):8d}"
        f"  ({gib(plan.per_session).strip()} each; rewind snapshots in host memory)",
        f"    with {snapshots} snapshots on the GPU    {plan.sessions_fit(gpu_bytes, snapshots):8d}"
        f"  ({gib(plan.per_session_with(snapshots)).strip()} each)",
        f"  host memory for {snapshots} snapshots    {gib(snapshots * plan.snapshot_bytes)} a session"
        f"  ({gib(snapshots * plan.pinned_snapshot_bytes()).strip()} pinned)",
        "  sessions per GPU by backend       shared model  a world each",
    ]
    for backend in ("none", "cudagraph", "tensorrt"):
        shared, each = plan.sessions_fit(gpu_bytes, 0, backend), plan.sessions_fit(gpu_bytes, 0, backend, False)
        lines.append(f"    {backend:<12} graphs {gib(plan.graph_bytes(backend))}  {shared:8d}  {each:8d}")
    if pinned_budget:
        lines.append(f"  pinned host budget {gib(pinned_budget).strip()}: sessions with {MIN_SNAPSHOTS} snapshots each"
                     f" {plan.sessions_fit_host(pinned_budget):6d}")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def full_size_configs() -> tuple[SanaWMConfig, dict[str, Any]]:
    """The released stage-1 transformer and LTX-2 VAE."""
    return SanaWMConfig(), released_vae_config()


@functools.lru_cache(maxsize=4)
def full_size_plan(width: int = 1280, height: int = 704, dtype: torch.dtype = torch.bfloat16) -> MemoryPlan:
    """The released model's plan at one size and dtype, planned once per process (about ten CPU seconds
    of meta-tensor work: `info --random-init full` and the bench's refusal of `full` both read it).
    Shared: read it, do not change it."""
    return plan_memory(*full_size_configs(), width, height, dtype)


def planned_sessions(world: Any, gpu_bytes: int | None = None, pinned: int | None = None) -> tuple[int, str]:
    """(sessions, why) a device holds for `world` (a WorldConfig) with one shared model: the world's own plan
    (SANA-WM's here, for its backend; Matrix-Game's in runtime/matrix_game/memory.py), its GPU fit bounded
    by the snapshots' pinned budget; at least 1. Worlds no plan can size (no checkpoint, no GPU) get the CPU
    default."""
    from worldwalk.runtime.snapshot_memory import pinned_budget

    matrix_game = world.name == "matrix-game" and bool(
        world.checkpoint or world.options.get("random_init") in ("tiny", "full"))
    if not matrix_game and (world.name != "sana-wm" or not world.checkpoint):
        return CPU_SESSIONS, f"no memory plan for world {world.name!r}: the default {CPU_SESSIONS}"
    device = torch.device(world.device)
    if gpu_bytes is None:
        gpu_bytes = gpu_total_memory(device)
        if gpu_bytes is None:
            return CPU_SESSIONS, f"no GPU: the default {CPU_SESSIONS}"
    pinned = pinned_budget() if pinned is None else pinned
    if matrix_game:
        from worldwalk.runtime.matrix_game.memory import planned_sessions as matrix_game_sessions

        return matrix_game_sessions(world, gpu_bytes, pinned)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    o = world.options
    dtype = getattr(torch, o.get("dtype", "bfloat16"))
    plan = plan_memory(*checkpoint_configs(world.checkpoint), int(o.get("width", 1280)), int(o.get("height", 704)),
                       dtype)
    if world.accel == "auto":
        from worldwalk.runtime.accel.apply import resolve

        backend = resolve("auto", device) if cuda else "cudagraph"
    else:
        backend = world.accel
    gpu = plan.sessions_fit(gpu_bytes, 0, backend)
    host = plan.sessions_fit_host(pinned)
    n = max(1, min(gpu, host))
    return n, (f"memory plan: {gpu} fit on {gpu_bytes / 1e9:.0f} GB beside one {backend} model, {host} within "
               f"{pinned / 1e9:.0f} GB of pinned snapshot memory")


def run_plan(args: Any) -> int:
    """The `info --world sana-wm` path: print the plan (or its JSON); 2 on bad input."""
    import sys

    from worldwalk.runtime.session import SessionConfig

    if args.world == "matrix-game":
        from worldwalk.runtime.matrix_game.memory import run_info

        return run_info(args)
    if args.world != "sana-wm":
        print(f"info: a memory plan exists for --world sana-wm and matrix-game only, not {args.world!r}",
              file=sys.stderr)
        return 2
    if getattr(args, "mode", None):
        print(f"info: --mode picks a Matrix-Game model (--world matrix-game), not a mode of {args.world!r}",
              file=sys.stderr)
        return 2
    if bool(args.checkpoint) == bool(args.random_init):
        print("info --world sana-wm: pass exactly one of --checkpoint DIR or --random-init full|small", file=sys.stderr)
        return 2
    try:
        width, height = args.size  # (width, height): parsed by the command line
        gpu = parse_bytes(args.gpu_memory)
        dtype = getattr(torch, args.dtype)
        if args.checkpoint:
            plan = plan_memory(*checkpoint_configs(args.checkpoint), width, height, dtype)
        elif args.random_init == "full":
            plan = full_size_plan(width, height, dtype)
        else:
            from worldwalk.runtime.bench.model_suite import small_configs

            plan = plan_memory(*small_configs(), width, height, dtype)
    except (ValueError, OSError) as e:
        print(f"info: {e}", file=sys.stderr)
        return 2
    snapshots = kept_snapshots(plan.snapshot_bytes, SessionConfig()) if args.snapshots is None else args.snapshots
    if getattr(args, "json", False):
        d = plan.to_dict()
        d.update(gpu_bytes=gpu, snapshots=snapshots, sessions_fit=plan.sessions_fit(gpu, 0),
                 sessions_fit_snapshots_on_gpu=plan.sessions_fit(gpu, snapshots),
                 graph_bytes={b: plan.graph_bytes(b) for b in ("none", "cudagraph", "tensorrt")},
                 sessions_fit_by_backend={b: {"shared": plan.sessions_fit(gpu, 0, b),
                                              "world_each": plan.sessions_fit(gpu, 0, b, False)}
                                          for b in ("none", "cudagraph", "tensorrt")},
                 pinned_snapshot_bytes=plan.pinned_snapshot_bytes())
        print(json.dumps(d, indent=2))
    else:
        from worldwalk.runtime.snapshot_memory import pinned_budget

        print(format_plan(plan, gpu, snapshots, pinned_budget()))
    return 0
