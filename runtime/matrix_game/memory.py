"""`memory_plan`: what a Matrix-Game session holds, computed from the shapes (on the meta device, so a
full-size plan costs no memory): weights, the DiT caches, the VAE decoder's time cache, and the
activations of the streaming code.

Upstream allocates the mouse cache for all 30 blocks; only the 15 action blocks use it, so ours is half.

Activations are tracked op by op on meta tensors (`LiveBytes` of runtime/device_memory.py, as the
SANA-WM plan does; attention counted as a fused kernel: its output and log-sum-exp, not the score
matrix): the high-water mark of the bytes the code itself allocates
- in one DiT call at steady state (the self-attention window full, a new block rolling the cache), and
- in the streaming decode of a steady block (3 latents -> 12 frames, the video it returns included), and
- at a session's start (`reset`, and before its first block): the CLIP tower, and the image condition's
  encoder passes with the time caches they fill and the copy compared.
A session does these one after another, so one session's activation peak is the largest
(`activation.session`). Sessions of one process share a GPU without taking turns: another session's
decode (or start) may run beside a DiT call, so the sessions-per-GPU figure leaves room for both at
once, plus the reserve the SANA-WM plan keeps (CUDA context, workspaces, fragmentation).

Rewind snapshots (kept chunk boundaries) are not on the GPU: each is a copy of the caches a block changes
and of the action history in host memory, on CUDA one pinned arena of the process's pool
(snapshots.py), so they count against the pinned budget (`sessions_fit_host`), not the device.
"""

from __future__ import annotations

import torch

from .clip import ClipVision, ClipVisionConfig
from .config import MatrixGameConfig
from .dit import CausalDiT
from .rollout import RolloutState, first_raw_kept
from .snapshots import host_bytes
from .vae import TimeCache, WanVAE

MiB = 2**20


def _bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.empty((), dtype=dtype).element_size()


def _action_windows(cfg: MatrixGameConfig, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A block's raw action windows (B, F, 12, 2) and (B, F, 12, K), as the rollout hands them to a call."""
    f, r = cfg.frames_per_block, cfg.raw_window
    mouse = torch.zeros(1, f, r, cfg.mouse_dim, dtype=dtype) if cfg.mouse else None
    return mouse, torch.zeros(1, f, r, cfg.keyboard_dim, dtype=dtype)


_PLANS: dict[str, dict[str, int]] = {}  # planned once per process (a full-size plan is seconds of meta work)


def memory_plan(cfg: MatrixGameConfig, dtype: torch.dtype = torch.bfloat16,
                vae_dtype: torch.dtype = torch.float16, device: str = "meta",
                clip_cfg: ClipVisionConfig | None = None) -> dict[str, int]:
    """Bytes per item for one session (weights are shared between sessions on a device). `device`
    "meta" costs nothing; "cpu" runs the same code on real (zero) tensors. `clip_cfg`: the image
    encoder (default the released ViT-H/14: 257 tokens)."""
    clip_cfg = clip_cfg or ClipVisionConfig()
    key = repr((cfg, dtype, vae_dtype, device, clip_cfg))
    if key not in _PLANS:
        _PLANS[key] = _plan(cfg, dtype, vae_dtype, device, clip_cfg)
    return dict(_PLANS[key])


def _plan(cfg: MatrixGameConfig, dtype: torch.dtype, vae_dtype: torch.dtype, device: str,
          clip_cfg: ClipVisionConfig) -> dict[str, int]:
    tokens = 1 + (clip_cfg.image_size // clip_cfg.patch_size) ** 2
    from worldwalk.runtime.device_memory import tracked

    size = torch.empty((), dtype=dtype).element_size()
    with torch.device(device), torch.no_grad():
        dit = CausalDiT(cfg).to(dtype)
        vae = WanVAE(dim=cfg.vae_dim, z_dim=cfg.out_dim).to(vae_dtype)
        clip = ClipVision(clip_cfg).to(dtype)
        clip.reset_statistics(device)
        cross_k = torch.zeros(1, tokens, cfg.num_heads, cfg.head_dim, dtype=dtype)
        from .cache import CrossKV

        cache = dit.new_cache(1, dtype, device, CrossKV([cross_k] * cfg.num_layers, [cross_k] * cfg.num_layers))
        vae.reset_statistics(device)

        # the DiT: t=0 calls fill the window block by block; the last block's first call rolls it (the
        # eviction copies what stays), a repeated call overwrites; both tracked at steady state
        n = cfg.frames_per_block
        shape = (1, cfg.out_dim, n, cfg.latent_height, cfg.latent_width)
        x, cond = torch.zeros(shape, dtype=dtype), torch.zeros(1, cfg.in_dim - cfg.out_dim, *shape[2:], dtype=dtype)
        mouse, keyboard = _action_windows(cfg, dtype)
        t = torch.zeros(1, n)
        blocks = max(2, -(-cfg.local_attn_size // n) + 1)  # the window full, then one block more
        dit_peak = 0
        for b in range(blocks):
            for _ in range(2 if b == blocks - 1 else 1):
                with tracked() as live:
                    dit(x, t, cond, cache, b * n, mouse, keyboard)
                dit_peak = max(dit_peak, live.peak) if b == blocks - 1 else dit_peak

        # the streaming decode: the first block (9 frames), a second (every time slot at its steady
        # size), then a tracked one
        time_cache = TimeCache()
        z = torch.zeros(1, n, cfg.out_dim, cfg.latent_height, cfg.latent_width, dtype=vae_dtype)
        for _ in range(2):
            vae.decode_block(z, time_cache)
        with tracked() as live:
            vae.decode_block(z, time_cache)
        decode_peak = live.peak

        # a session's start: the image condition (the encoder on the image, then on zero frames until its
        # time cache repeats, a copy of the cache kept to compare: ImageCondition's loop, whose rounds are
        # all alike from the second on) and the CLIP tower
        image = torch.zeros(1, 3, cfg.height, cfg.width, dtype=vae_dtype)
        with tracked() as live:
            enc_cache = TimeCache()
            latents = [vae.encode_chunk(image[:, :, None], enc_cache)]
            zeros = torch.zeros_like(image[:, :, None]).expand(-1, -1, cfg.vae_time_ratio, -1, -1)
            before = None
            for _ in range(2):
                latents.append(vae.encode_chunk(zeros, enc_cache))
                before = enc_cache.clone()
            del before, latents, enc_cache
        reset_peak = live.peak
        with tracked() as live:
            clip(torch.zeros(1, 3, cfg.height, cfg.width, dtype=dtype))
        reset_peak = max(reset_peak, live.peak)
        # a kept boundary: the caches a block changes, at steady state, and the raw action history
        ff = 100 * n  # any boundary once the windows are full
        history = cfg.raw_frames(ff) - first_raw_kept(cfg, ff)
        state = RolloutState(cache, time_cache, ff, torch.zeros(1, history, cfg.keyboard_dim, dtype=dtype),
                             torch.zeros(1, history if cfg.mouse else 0, cfg.mouse_dim, dtype=dtype),
                             first_raw_kept(cfg, ff), torch.empty(0, dtype=torch.uint8), None)
        snapshot, snapshot_pinned = host_bytes(state)
    self_kv = sum(layer.self_kv.nbytes() for layer in cache.layers)
    mouse_b = sum(layer.mouse_kv.nbytes() for layer in cache.layers if layer.mouse_kv is not None)
    keyboard_b = sum(layer.keyboard_kv.nbytes() for layer in cache.layers if layer.keyboard_kv is not None)
    caches = self_kv + mouse_b + keyboard_b + cache.cross.nbytes() + time_cache.nbytes()
    return {
        "weights.dit": _bytes(dit, dtype),
        "weights.vae": _bytes(vae, vae_dtype),
        "weights.clip_visual": _bytes(clip, dtype),
        "cache.self_attention": self_kv,
        "cache.mouse": mouse_b,
        "cache.keyboard": keyboard_b,
        "cache.cross_attention": cache.cross.nbytes(),
        "cache.vae_decoder": time_cache.nbytes(),
        "cache.per_session": caches,
        "activation.dit_call": dit_peak,
        "activation.vae_decode": decode_peak,
        "activation.reset": reset_peak,
        "activation.session": max(dit_peak, decode_peak, reset_peak),
        "per_session_with_activations": caches + max(dit_peak, decode_peak, reset_peak),
        # a kept chunk boundary (rewind, failover): copies of the caches a session changes and of its action
        # history, in host memory (snapshots.py); on CUDA one pinned arena of them, rounded up to 2 MiB
        "snapshot": snapshot,
        "snapshot.pinned": snapshot_pinned,
        "_dtype_bytes": size,
    }


def weights(plan: dict[str, int]) -> int:
    return sum(v for k, v in plan.items() if k.startswith("weights."))


def kept_snapshots(plan: dict[str, int]) -> int:
    """Boundaries a session keeps by default (`SessionConfig.snapshot_budget_mb`, at least one)."""
    from worldwalk.runtime.device_memory import kept_snapshots as kept
    from worldwalk.runtime.session import SessionConfig

    return kept(plan["snapshot"], SessionConfig())


def sessions_fit(plan: dict[str, int], gpu_bytes: int) -> int:
    """Sessions a GPU holds beside one shared model: the reserve, the weights, and one DiT call beside one
    VAE pass (a decode, or a new session's start) at once (two sessions' model threads) come first; then
    each session's caches. Its rewind snapshots are in host memory (`sessions_fit_host`)."""
    from worldwalk.runtime.device_memory import RESERVE_BYTES, RESERVE_FRACTION

    reserve = RESERVE_BYTES + int(RESERVE_FRACTION * gpu_bytes)
    vae_pass = max(plan["activation.vae_decode"], plan["activation.reset"])
    free = gpu_bytes - reserve - weights(plan) - plan["activation.dit_call"] - vae_pass
    each = plan["cache.per_session"]
    return max(0, free // each) if each else 0


def sessions_fit_host(plan: dict[str, int], pinned_budget: int, snapshots: int | None = None) -> int:
    """Sessions whose snapshots (`snapshots` each, default the least a session keeps: the boundary it is at
    and one to rewind to) fit the process's pinned budget (runtime/snapshot_memory.py)."""
    from worldwalk.runtime.device_memory import MIN_SNAPSHOTS

    return pinned_budget // max(1, (snapshots or MIN_SNAPSHOTS) * plan["snapshot.pinned"])


def world_config(world) -> tuple[MatrixGameConfig, ClipVisionConfig]:
    """The model a `WorldConfig` of this world builds: read off its checkpoint's header, or the random
    weights' size (`random_init` full or tiny), in its `mode`."""
    o = world.options
    mode = o.get("mode")
    if world.checkpoint:
        from .checkpoint import read_config

        return read_config(world.checkpoint, mode), ClipVisionConfig()
    if o.get("random_init") == "tiny":
        clip = ClipVisionConfig.tiny()
        return MatrixGameConfig.tiny(mode or "universal", clip_dim=clip.dim), clip
    return MatrixGameConfig.for_mode(mode or "universal"), ClipVisionConfig()


def planned_sessions(world, gpu_bytes: int, pinned_budget: int) -> tuple[int, str]:
    """(sessions, why) a GPU of `gpu_bytes` holds for `world` (a WorldConfig) beside one shared model: this
    plan's GPU fit, bounded by the snapshots' pinned budget; at least 1 (`serve --max-sessions`)."""
    cfg, clip = world_config(world)
    plan = memory_plan(cfg, dtype=getattr(torch, world.options.get("dtype", "bfloat16")), clip_cfg=clip)
    gpu, host = sessions_fit(plan, gpu_bytes), sessions_fit_host(plan, pinned_budget)
    n = max(1, min(gpu, host))
    return n, (f"Matrix-Game memory plan ({cfg.mode}): {gpu} fit on {gpu_bytes / 1e9:.0f} GB beside one model, "
               f"{host} within {pinned_budget / 1e9:.0f} GB of pinned snapshot memory")


def mode_lines(cfg: MatrixGameConfig) -> list[str]:
    """The mode's action space, cache window and sampler steps, as the plan prints them."""
    from .steering import KEYBOARD

    keys = ", ".join(name for name, _ in KEYBOARD[cfg.mode])
    hot = "one-hot" if cfg.mode == "templerun" else "multi-hot"
    mouse = "mouse [pitch, yaw]" if cfg.mode == "universal" else ("mouse [0, yaw]" if cfg.mouse else "no mouse")
    return [f"  actions: keyboard {cfg.keyboard_dim} {hot} [{keys}]; {mouse}",
            f"  window: {cfg.local_attn_size} latent frames in every cache "
            f"({cfg.local_attn_size * cfg.frame_tokens} self-attention tokens)",
            f"  steps: {len(cfg.denoising_steps)} {list(cfg.denoising_steps)} + the t=0 cache pass "
            f"= {len(cfg.denoising_steps) + 1} DiT calls a block"]


def _pinned_budget() -> int:
    from worldwalk.runtime.snapshot_memory import pinned_budget

    return pinned_budget()


def plan_text(cfg: MatrixGameConfig, dtype: torch.dtype, gpu_bytes: int, pinned_budget: int | None = None) -> str:
    """The plan as `worldwalk info --world matrix-game` prints it."""
    plan = memory_plan(cfg, dtype=dtype)
    lines = [f"Matrix-Game 2.0 {cfg.mode}, {cfg.height}x{cfg.width}, DiT {str(dtype)[6:]}, VAE float16",
             *mode_lines(cfg)]
    for key, value in plan.items():
        if not key.startswith("_"):
            lines.append(f"  {key:<28} {value / MiB:10.1f} MiB")
    lines.append(f"  weights (shared)             {weights(plan) / MiB:10.1f} MiB")
    kept = kept_snapshots(plan)
    lines.append(f"  sessions in {gpu_bytes / 1e9:.0f} GB: {sessions_fit(plan, gpu_bytes)} (weights shared; "
                 "one DiT call beside one VAE pass at once; reserve as for SANA-WM; snapshots in host memory)")
    pinned = pinned_budget if pinned_budget is not None else _pinned_budget()
    lines.append(f"  snapshots in host memory: {plan['snapshot.pinned'] / MiB:.1f} MiB pinned each; a session keeps "
                 f"{kept} by default ({kept * plan['snapshot.pinned'] / 2**30:.2f} GiB)")
    lines.append(f"    a pinned budget of {pinned / 2**30:.1f} GiB (WORLDWALK_PINNED_BUDGET) holds the snapshots of "
                 f"{sessions_fit_host(plan, pinned)} sessions keeping 2, of {sessions_fit_host(plan, pinned, kept)} "
                 f"keeping {kept} (beyond it they go to pageable memory)")
    return "\n".join(lines)


def run_info(args) -> int:
    """`worldwalk info --world matrix-game [--checkpoint DIR | --random-init full|small] [--mode M]`."""
    import sys

    from worldwalk.runtime.byte_sizes import parse_bytes

    from .checkpoint import CheckpointError, read_config

    mode = getattr(args, "mode", None)
    if args.checkpoint and args.random_init:
        print("info --world matrix-game: pass one of --checkpoint DIR or --random-init full|small", file=sys.stderr)
        return 2
    try:
        if args.checkpoint:
            cfg = read_config(args.checkpoint, mode)
        elif args.random_init == "small":
            cfg = MatrixGameConfig.tiny(mode or "universal")
        else:
            cfg = MatrixGameConfig.for_mode(mode or "universal")
        gpu = parse_bytes(args.gpu_memory)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"info: {e}", file=sys.stderr)
        return 2
    print(plan_text(cfg, getattr(torch, args.dtype), gpu))
    return 0
