"""The action module of a Matrix-Game DiT block: mouse and keyboard steer every token.

Raw actions come at the pixel frame rate, 4 a latent frame (the first latent frame has 1). Latent
frame f reads the window of raw frames [4f - 12, 4f) (`action_windows`; indices before 0 repeat raw
frame 0). That window leaves out raw frame 4f, the last raw frame of latent f: upstream's choice,
kept exactly.

Mouse (universal, GTA): each spatial token concatenates its hidden state with the 12x2 mouse values
of its frame's window -> MLP -> q, k, v (RMS-normalised q, k, no gain) -> temporal RoPE -> attention
over that token's own cached frames -> projection, added to the token.
Keyboard: the 12 raw key vectors of a frame's window are embedded one by one, flattened -> k, v for
that frame, shared by all tokens; q comes from each token (after the mouse residual); RMS norm, RoPE,
attention over the cached keyboard frames -> projection, added to the token.
Parameter names follow upstream's `ActionModule` (checkpoint keys `blocks.N.action_model.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import WindowKV
from .config import MatrixGameConfig
from .rope import action_rope, apply_action_rope


def action_windows(raw: torch.Tensor, first_latent: int, frames: int, ratio: int, window: int,
                   offset: int = 0) -> torch.Tensor:
    """raw (B, T, C) holding raw frames [offset, offset + T) -> (B, frames, ratio*window, C): the raw
    frames [4f - 12, 4f) of each latent frame f (frames before 0 repeat raw frame 0)."""
    span = ratio * window
    idx = torch.arange(first_latent, first_latent + frames)[:, None] * ratio - span + torch.arange(span)[None, :]
    idx = idx.clamp(min=0) - offset
    if int(idx.min()) < 0 or int(idx.max()) >= raw.shape[1]:
        last = first_latent + frames - 1
        raise ValueError(f"latent frames {first_latent}..{last} need raw actions {int(idx.min()) + offset}.."
                         f"{int(idx.max()) + offset}, have {offset}..{offset + raw.shape[1] - 1}")
    return raw[:, idx.to(raw.device)]


class GainFreeRMSNorm(nn.Module):
    """RMS norm over the last dim without applying its gain (upstream's action norms ignore `weight`,
    which the checkpoint still carries, so the parameter is kept for loading)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention, no mask, over (N, L, H, D) tensors (the DiT's and the action module's)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class ActionModule(nn.Module):
    def __init__(self, cfg: MatrixGameConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, h = cfg.action_hidden, cfg.action_heads
        hd = c // h
        if cfg.mouse:
            self.mouse_mlp = nn.Sequential(
                nn.Linear(cfg.dim + cfg.mouse_dim * cfg.raw_window, c), nn.GELU(approximate="tanh"),
                nn.Linear(c, c), nn.LayerNorm(c),
            )
            self.t_qkv = nn.Linear(c, 3 * c, bias=False)
            self.img_attn_q_norm = GainFreeRMSNorm(hd)
            self.img_attn_k_norm = GainFreeRMSNorm(hd)
            self.proj_mouse = nn.Linear(c, cfg.dim, bias=False)
        emb = cfg.keyboard_embed_dim
        self.keyboard_embed = nn.Sequential(nn.Linear(cfg.keyboard_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.key_attn_q_norm = GainFreeRMSNorm(hd)
        self.key_attn_k_norm = GainFreeRMSNorm(hd)
        self.mouse_attn_q = nn.Linear(cfg.dim, c, bias=False)
        self.keyboard_attn_kv = nn.Linear(emb * cfg.raw_window, 2 * c, bias=False)
        self.proj_keyboard = nn.Linear(c, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, mouse: torch.Tensor | None, keyboard: torch.Tensor, first_frame: int,
                mouse_kv: WindowKV | None, keyboard_kv: WindowKV) -> torch.Tensor:
        """x (B, F*S, C) tokens of latent frames [first_frame, first_frame + F); mouse (B, F, 12, 2) and
        keyboard (B, F, 12, K) their raw action windows. Writes the caches; returns x with both residuals."""
        cfg = self.cfg
        b, fs, _ = x.shape
        f = keyboard.shape[1]
        s = fs // f
        heads, hd = cfg.action_heads, cfg.action_head_dim
        cos, sin = action_rope(cfg.action_rope_dims[0], cfg.action_rope_theta, first_frame, f, x.device)

        if cfg.mouse:
            assert mouse is not None and mouse_kv is not None
            tokens = x.view(b, f, s, -1).transpose(1, 2).reshape(b * s, f, -1)  # (B*S, F, C)
            m = mouse.reshape(b, 1, f, -1).expand(b, s, f, mouse.shape[2] * mouse.shape[3])
            h = self.mouse_mlp(torch.cat([tokens, m.reshape(b * s, f, -1)], dim=-1))  # (B*S, F, c)
            q, k, v = self.t_qkv(h).view(b * s, f, 3, heads, hd).unbind(2)  # (B*S, F, Ha, Da) each
            q = apply_action_rope(self.img_attn_q_norm(q), cos, sin)
            k = apply_action_rope(self.img_attn_k_norm(k), cos, sin)
            k_win, v_win = mouse_kv.write(k, v, first_frame)
            out = attend(q, k_win, v_win)  # (B*S, F, Ha, Da)
            out = out.reshape(b, s, f, heads * hd).transpose(1, 2).reshape(b, fs, -1)
            x = x + self.proj_mouse(out)

        emb = self.keyboard_embed(keyboard).flatten(2)  # (B, F, 12*emb)
        k, v = self.keyboard_attn_kv(emb).view(b, f, 2, heads, hd).unbind(2)  # (B, F, Ha, Da)
        q = self.mouse_attn_q(x).view(b, f, s, heads, hd).transpose(1, 2).reshape(b * s, f, heads, hd)
        q = apply_action_rope(self.key_attn_q_norm(q), cos, sin)
        k = apply_action_rope(self.key_attn_k_norm(k), cos, sin)
        k_win, v_win = keyboard_kv.write(k, v, first_frame)  # (B, W, Ha, Da)
        w = k_win.shape[1]
        k_tok = k_win[:, None].expand(b, s, w, heads, hd).reshape(b * s, w, heads, hd)
        v_tok = v_win[:, None].expand(b, s, w, heads, hd).reshape(b * s, w, heads, hd)
        out = attend(q, k_tok, v_tok)  # (B*S, F, Ha, Da)
        out = out.reshape(b, s, f, heads * hd).transpose(1, 2).reshape(b, fs, -1)
        return x + self.proj_keyboard(out)
