"""Matrix-Game 2.0 (Skywork): a keyboard-and-mouse world on a chunk-causal Wan 2.1 DiT, written to
match the official code (SkyworkAI/Matrix-Game, `Matrix-Game-2/`, commit 3ceb311) exactly.

config.py   `MatrixGameConfig` (full / per mode / tiny)       cache.py    typed rolling caches
rope.py     3-axis video RoPE and the action RoPE              action.py   mouse + keyboard module
dit.py      `CausalDiT`, one call per denoising step           sampler.py  warped few-step schedule
vae.py      Wan 2.1 VAE encoder and streaming decoder          rollout.py  the block loop
snapshots.py  chunk boundaries kept in (pinned) host memory
"""

from .cache import CrossKV, DiTCache, LayerCache, WindowKV
from .config import MODES, MatrixGameConfig
from .dit import CausalDiT
from .rollout import Block, ImageCondition, Rollout
from .sampler import FlowSchedule
from .vae import TimeCache, WanVAE

__all__ = [
    "MODES", "Block", "CausalDiT", "CrossKV", "DiTCache", "FlowSchedule", "ImageCondition", "LayerCache",
    "MatrixGameConfig", "Rollout", "TimeCache", "WanVAE", "WindowKV",
]
