"""The image tokens Matrix-Game's cross-attention reads: the visual tower of open-clip XLM-RoBERTa
ViT-H/14 (the `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth` that ships with the weights),
stopped after 31 of its 32 blocks, class token kept: (B, 257, 1280) for one image.

The image (in [-1, 1]) is resized bicubically to 224x224, mapped to [0, 1] and normalised with CLIP's
mean and std; 14x14 patches + a class token + learned positions, a pre-norm, then pre-LN transformer
blocks (fused qkv, GELU MLP). Parameter names are those of the checkpoint's `visual.*` keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .action import attend

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipVisionConfig:
    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    heads: int = 16
    layers: int = 32
    mlp_ratio: int = 4
    out_dim: int = 1024  # the projection head (unused for the tokens, kept for loading)
    eps: float = 1e-5
    use_layers: int = 31  # blocks run: upstream takes the output of the 31st

    @classmethod
    def tiny(cls) -> ClipVisionConfig:
        return cls(image_size=28, dim=64, heads=2, layers=3, out_dim=32, use_layers=2)


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        q, k, v = self.to_qkv(x).view(b, s, 3, self.heads, c // self.heads).unbind(2)  # (B, S, H, D)
        return self.proj(attend(q, k, v).reshape(b, s, c))


class _Block(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.norm1 = _LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = _Attention(cfg.dim, cfg.heads)
        self.norm2 = _LayerNorm(cfg.dim, eps=cfg.eps)
        hidden = cfg.dim * cfg.mlp_ratio
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClipVision(nn.Module):
    def __init__(self, cfg: ClipVisionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ClipVisionConfig()
        self.patch_embedding = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, (cfg.image_size // cfg.patch_size) ** 2 + 1, cfg.dim))
        self.pre_norm = _LayerNorm(cfg.dim, eps=cfg.eps)
        self.transformer = nn.Sequential(*[_Block(cfg) for _ in range(cfg.layers)])
        self.post_norm = _LayerNorm(cfg.dim, eps=cfg.eps)
        self.head = nn.Parameter(torch.zeros(cfg.dim, cfg.out_dim))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def reset_statistics(self, device: torch.device | str) -> None:
        """Sets the normalisation constants (not in the checkpoint) after building on the meta device."""
        self.mean = torch.tensor(CLIP_MEAN, device="cpu").view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(CLIP_STD, device="cpu").view(1, 3, 1, 1).to(device)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in [-1, 1] -> tokens (B, 1 + (224/14)^2, dim)."""
        size = (self.cfg.image_size,) * 2
        x = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        x = (x * 0.5 + 0.5 - self.mean) / self.std
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        x = self.pre_norm(x)
        for block in self.transformer[: self.cfg.use_layers]:
            x = block(x)
        return x
