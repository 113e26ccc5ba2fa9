"""`memory_plan`: what a Matrix-Game session holds, computed from the shapes (on the meta device, so a
full-size plan costs no memory): weights, the DiT caches, the VAE decoder's time cache.

Upstream allocates the mouse cache for all 30 blocks; only the 15 action blocks use it, so ours is half.
"""

from __future__ import annotations

import torch

from .clip import ClipVision, ClipVisionConfig
from .config import MatrixGameConfig
from .dit import CausalDiT
from .vae import TimeCache, WanVAE

MiB = 2**20


def _bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.empty((), dtype=dtype).element_size()


def memory_plan(cfg: MatrixGameConfig, dtype: torch.dtype = torch.bfloat16,
                vae_dtype: torch.dtype = torch.float16) -> dict[str, int]:
    """Bytes per item for one session (weights are shared between sessions on a device)."""
    size = torch.empty((), dtype=dtype).element_size()
    with torch.device("meta"):
        dit = CausalDiT(cfg)
        vae = WanVAE(dim=cfg.vae_dim, z_dim=cfg.out_dim)
        clip = ClipVision(ClipVisionConfig())
        cross_k = torch.empty(1, 257, cfg.num_heads, cfg.head_dim, dtype=dtype)
        from .cache import CrossKV

        cache = dit.new_cache(1, dtype, "meta", CrossKV([cross_k] * cfg.num_layers, [cross_k] * cfg.num_layers))
        vae.reset_statistics("meta")
        time_cache = TimeCache()
        z = torch.empty(1, 2, cfg.out_dim, cfg.latent_height, cfg.latent_width, dtype=vae_dtype)
        vae.to(vae_dtype).decode_block(z, time_cache)  # two latents: every slot at its steady size
    self_kv = sum(layer.self_kv.nbytes() for layer in cache.layers)
    mouse = sum(layer.mouse_kv.nbytes() for layer in cache.layers if layer.mouse_kv is not None)
    keyboard = sum(layer.keyboard_kv.nbytes() for layer in cache.layers if layer.keyboard_kv is not None)
    return {
        "weights.dit": _bytes(dit, dtype),
        "weights.vae": _bytes(vae, vae_dtype),
        "weights.clip_visual": _bytes(clip, dtype),
        "cache.self_attention": self_kv,
        "cache.mouse": mouse,
        "cache.keyboard": keyboard,
        "cache.cross_attention": cache.cross.nbytes(),
        "cache.vae_decoder": time_cache.nbytes(),
        "cache.per_session": self_kv + mouse + keyboard + cache.cross.nbytes() + time_cache.nbytes(),
        "_dtype_bytes": size,
    }


def plan_text(cfg: MatrixGameConfig, dtype: torch.dtype, gpu_bytes: int) -> str:
    """The plan as `worldwalk info --world matrix-game` prints it."""
    plan = memory_plan(cfg, dtype=dtype)
    weights = sum(v for k, v in plan.items() if k.startswith("weights."))
    session = plan["cache.per_session"]
    lines = [f"Matrix-Game 2.0 {cfg.mode}, {cfg.height}x{cfg.width}, DiT {str(dtype)[6:]}, VAE float16"]
    for key, value in plan.items():
        if not key.startswith("_"):
            lines.append(f"  {key:<24} {value / MiB:10.1f} MiB")
    fit = max(0, (gpu_bytes - weights) // session) if session else 0
    lines.append(f"  sessions in {gpu_bytes / 1e9:.0f} GB: {fit} (weights shared; activations not counted)")
    return "\n".join(lines)
