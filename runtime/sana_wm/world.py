"""`create(cfg)`: the `sana-wm` entry of the `worldwalk.worlds` registry.

Needs `cfg.checkpoint` (a local SANA-WM folder, official or diffusers layout; see checkpoint.py).
Options read from `cfg.options`: dtype ("bfloat16" on CUDA by default), width/height (default
1280x704, the model's native size), use_cache, kv_window, renoise, timesteps, prompt_file,
text_encoder, progress.
"""

from __future__ import annotations

import torch

from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.world_options import DTYPE, FilePath, Flag, Integer, Integers, check_options

from .checkpoint import from_pretrained
from .model import SanaWM, SanaWMRunConfig
from .sampler import SamplerConfig

# The options `create` reads, and their limits (a session log may carry any). 2048 a side: 4.5x the native
# 1280x704 in pixels, where a chunk's cache and snapshots already take tens of GB.
OPTIONS = {
    "dtype": DTYPE,
    "width": Integer(32, 2048, "pixels"),
    "height": Integer(32, 2048, "pixels"),
    "use_cache": Flag(),
    "kv_window": Integer(1, 64, "chunks"),
    "renoise": Flag(),
    "timesteps": Integers(0, 1000, 16),
    "prompt_file": FilePath(),
    "text_encoder": FilePath(),
    "progress": Flag(),
}


def create(cfg: WorldConfig) -> SanaWM:
    if not cfg.checkpoint:
        raise ValueError(
            "the sana-wm world needs a checkpoint folder: pass --checkpoint DIR (a local SANA-WM_streaming "
            "download with sana_dit/model.pt and ltx2_causal_vae/, or a diffusers transformer/ + vae/ folder)"
        )
    o = check_options("sana-wm", cfg.options, OPTIONS)
    cuda = cfg.device.startswith("cuda") and torch.cuda.is_available()
    dtype = o.get("dtype", "bfloat16" if cuda else "float32")
    overrides = {k: o[k] for k in ("kv_window",) if k in o}
    loaded = from_pretrained(cfg.checkpoint, cfg.device, getattr(torch, dtype), o.get("progress", True), **overrides)
    sampler = SamplerConfig(
        timesteps=tuple(o.get("timesteps", SamplerConfig.timesteps)), renoise=bool(o.get("renoise", True))
    )
    run = SanaWMRunConfig(
        width=int(o.get("width", 1280)),
        height=int(o.get("height", 704)),
        fps=cfg.fps,
        device=cfg.device,
        dtype=dtype,
        use_cache=bool(o.get("use_cache", True)),
        sampler=sampler,
        prompt_file=o.get("prompt_file"),
        text_encoder=o.get("text_encoder"),
    )
    return SanaWM(loaded.transformer, loaded.vae, run, null_caption=loaded.null_caption)
