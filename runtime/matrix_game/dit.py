"""`CausalDiT`: Matrix-Game 2.0's chunk-causal Wan DiT, one call per denoising step of a block.

A call sees the block's 3 latent frames (noisy latent + first-image condition, 36 channels), one
timestep per frame, the raw action windows of those frames and the caches; it writes its keys and
values into the caches (see cache.py) and returns the flow prediction (noise - x0).

Block (`DiTBlock`), with (e0..e5) = block.modulation + the time projection, one set per latent frame:
    x += self_attn(LN(x) * (1 + e1) + e0) * e2      RMS-normed q, k; 3-axis RoPE; attends the window
    x += cross_attn(LN_affine(x), image tokens)      keys/values of the CLIP tokens, computed once
    x  = action(x)                                   blocks 0-14: mouse then keyboard, residual inside
    x += ffn(LN(x) * (1 + e4) + e3) * e5
Parameter names follow upstream's `CausalWanModel` (checkpoint keys `model.` + these names).
"""

from __future__ import annotations

import torch
from torch import nn

from .action import ActionModule, attend
from .cache import CrossKV, DiTCache, LayerCache, WindowKV
from .config import MatrixGameConfig
from .rope import apply_video_rope, video_rope


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) [cos | sin], float64, frequencies 10000^(-i / (dim/2))."""
    half = dim // 2
    pos = t.to(torch.float64)
    angles = torch.outer(pos, torch.pow(10000, -torch.arange(half).to(pos).div(half)))
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    """RMS norm with a learned gain, computed in fp32 (Wan's `WanRMSNorm`)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).type_as(x)


class _Attention(nn.Module):
    """q, k, v, o projections with RMS-normed q and k (the names upstream's checkpoints use)."""

    def __init__(self, cfg: MatrixGameConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(cfg.dim, cfg.dim) for _ in range(4))
        self.norm_q = RMSNorm(cfg.dim, cfg.eps)
        self.norm_k = RMSNorm(cfg.dim, cfg.eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], -1, self.heads, self.head_dim)  # (B, L, C) -> (B, L, H, D)


class SelfAttention(_Attention):
    def forward(self, x: torch.Tensor, rot: torch.Tensor, cache: WindowKV, start_token: int) -> torch.Tensor:
        q = apply_video_rope(self._heads(self.norm_q(self.q(x))), rot)  # (B, L, H, D)
        k = apply_video_rope(self._heads(self.norm_k(self.k(x))), rot)
        k_win, v_win = cache.write(k, self._heads(self.v(x)), start_token)  # (B, <= W*S, H, D)
        return self.o(attend(q, k_win, v_win).flatten(2))


class CrossAttention(_Attention):
    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.norm_k(self.k(context))), self._heads(self.v(context))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.o(attend(self._heads(self.norm_q(self.q(x))), k, v).flatten(2))


class DiTBlock(nn.Module):
    def __init__(self, cfg: MatrixGameConfig, index: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim))
        self.action_model = ActionModule(cfg) if index in cfg.action_blocks else None

    def forward(self, x: torch.Tensor, e0: torch.Tensor, rot: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor],
                cache: LayerCache, first_frame: int, frame_tokens: int, mouse: torch.Tensor | None,
                keyboard: torch.Tensor) -> torch.Tensor:
        b, L, c = x.shape
        f = e0.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.unsqueeze(1) + e0).chunk(6, dim=2)  # (B,F,1,C)

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, f, frame_tokens, c)

        h = (per_frame(self.norm1(x)) * (1 + scale1) + shift1).flatten(1, 2)
        y = self.self_attn(h, rot, cache.self_kv, first_frame * frame_tokens)
        x = x + (per_frame(y) * gate1).flatten(1, 2)
        x = x + self.cross_attn(self.norm3(x), *cross)
        if self.action_model is not None:
            x = self.action_model(x, mouse, keyboard, first_frame, cache.mouse_kv, cache.keyboard_kv)
        y = self.ffn((per_frame(self.norm2(x)) * (1 + scale2) + shift2).flatten(1, 2))
        return x + (per_frame(y) * gate2).flatten(1, 2)


class Head(nn.Module):
    def __init__(self, cfg: MatrixGameConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * cfg.patch[0] * cfg.patch[1])
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x (B, F*S, C), e (B, F, 1, C) -> (B, F, S, out*p*p)."""
        b, f = e.shape[:2]
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)
        return self.head(self.norm(x).view(b, f, -1, x.shape[-1]) * (1 + scale) + shift)


class ImageEmbedding(nn.Module):
    """CLIP image tokens (B, L, 1280) -> context (B, L, dim) (Wan's `MLPProj`)."""

    def __init__(self, cfg: MatrixGameConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(cfg.clip_dim), nn.Linear(cfg.clip_dim, cfg.clip_dim), nn.GELU(),
                                  nn.Linear(cfg.clip_dim, cfg.dim), nn.LayerNorm(cfg.dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


class CausalDiT(nn.Module):
    def __init__(self, cfg: MatrixGameConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ph, pw = cfg.patch
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=(1, ph, pw), stride=(1, ph, pw))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg, i) for i in range(cfg.num_layers))
        self.head = Head(cfg)
        self.img_emb = ImageEmbedding(cfg)

    # --- per session ---
    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str, cross: CrossKV) -> DiTCache:
        cfg = self.cfg
        w, s = cfg.local_attn_size, cfg.frame_tokens
        ah, ad = cfg.action_heads, cfg.action_head_dim
        layers = []
        for blk in self.blocks:
            layer = LayerCache(WindowKV.empty((batch, w * s, cfg.num_heads, cfg.head_dim), dtype, device))
            if blk.action_model is not None:
                layer.keyboard_kv = WindowKV.empty((batch, w, ah, ad), dtype, device)
                if cfg.mouse:
                    layer.mouse_kv = WindowKV.empty((batch * s, w, ah, ad), dtype, device)
            layers.append(layer)
        return DiTCache(layers, cross)

    def image_context(self, clip_tokens: torch.Tensor) -> CrossKV:
        """The cross-attention keys/values of the image tokens for every block (fixed for a session)."""
        context = self.img_emb(clip_tokens)  # (B, L, dim)
        kv = [blk.cross_attn.context_kv(context) for blk in self.blocks]
        return CrossKV([k for k, _ in kv], [v for _, v in kv])

    # --- per call ---
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cache: DiTCache, first_frame: int,
                mouse: torch.Tensor | None, keyboard: torch.Tensor) -> torch.Tensor:
        """x (B, 16, F, h, w) noisy latents of frames [first_frame, +F); t (B, F); cond (B, 20, F, h, w);
        mouse (B, F, 12, 2) | None, keyboard (B, F, 12, K) raw action windows -> flow (B, 16, F, h, w)."""
        cfg = self.cfg
        b, _, f, lh, lw = x.shape
        ph, pw = cfg.patch
        rows, cols = lh // ph, lw // pw
        tokens = self.patch_embedding(torch.cat([x, cond], dim=1))  # (B, dim, F, rows, cols)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, F*S, dim), (frame, row, col) order
        e = self.time_embedding(sinusoidal_embedding(cfg.freq_dim, t.flatten()).type_as(tokens))  # (B*F, dim)
        e0 = self.time_projection(e).unflatten(1, (6, cfg.dim)).unflatten(0, (b, f))  # (B, F, 6, dim)
        rot = video_rope(cfg.head_dim, first_frame, f, rows, cols, cfg.rope_theta, x.device)
        s = rows * cols
        for blk, layer, ck, cv in zip(self.blocks, cache.layers, cache.cross.k, cache.cross.v, strict=True):
            tokens = blk(tokens, e0, rot, (ck, cv), layer, first_frame, s, mouse, keyboard)
        out = self.head(tokens, e.unflatten(0, (b, f)).unsqueeze(2))  # (B, F, S, out*ph*pw)
        out = out.view(b, f, rows, cols, ph, pw, cfg.out_dim)
        out = torch.einsum("bfhwqrc->bcfhqwr", out)
        return out.reshape(b, cfg.out_dim, f, rows * ph, cols * pw)
