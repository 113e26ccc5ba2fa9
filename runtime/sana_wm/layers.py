"""Small pieces shared by the SANA-WM blocks: RMSNorm, the K short conv, the self-attention parameters, and
`fp32_island` for the computations that stay fp32 under autocast."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

_Fn = TypeVar("_Fn", bound=Callable)


def fp32_island(fn: _Fn) -> _Fn:
    """Run `fn` with autocast switched off, so the fp32 it computes in stays fp32.

    The model keeps a few computations in fp32 by casting their inputs (the GDN delta-rule state, the UCPE
    transforms). Under `torch.autocast` (bf16 training, runtime/train/train_device.py) that is not enough:
    autocast would run their matmuls in bf16 again. Outside autocast this is a plain call (inference and
    exported graphs are unchanged)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        on = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
        if not on:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for d in on:
                stack.enter_context(torch.autocast(d, enabled=False))
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a learned scale, computed in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        y = x * torch.rsqrt(var + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            y = y.to(self.weight.dtype)
        return y * self.weight


def qk_norm(dim: int, enabled: bool, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if enabled else nn.Identity()


class TemporalShortConv(nn.Module):
    """Depthwise temporal conv on K: a causal pass across chunks plus an anti-causal pass inside one.

    With weights w_0..w_{K-1}, y[t] = sum_j w_j x[t-K+1+j] (left context from the cached tail of the
    previous chunk, zeros at the session start) + sum_j w_j x[t+K-1-j] (zeros past the chunk end)
    - w_{K-1} x[t] (the shared centre tap counted once). On a first chunk this is diffusers'
    bidirectional short conv; across chunks it is the official chunk-causal one.
    """

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel))

    def forward(self, x: torch.Tensor, frames: int, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T*S, C), tail (B, S, K-1, C) or None -> (y (B, T*S, C), new tail (B, S, K-1, C))."""
        B, N, C = x.shape
        S, K = N // frames, self.kernel
        xt = x.view(B, frames, S, C).transpose(1, 2)  # (B, S, T, C)
        if tail is None:
            tail = xt.new_zeros(B, S, K - 1, C)
        full = torch.cat([tail.to(xt.dtype), xt], 2)  # (B, S, K-1+T, C)
        w = self.weight.to(x.dtype)
        seq = full.reshape(B * S, -1, C).transpose(1, 2)  # (B*S, C, K-1+T)
        fwd = F.conv1d(seq, w, groups=C)  # causal: output t sees inputs t-K+1..t
        own = seq[..., K - 1 :]
        bwd = F.conv1d(F.pad(own.flip(-1), (K - 1, 0)), w, groups=C).flip(-1)
        y = fwd + bwd - own * w[:, 0, -1].view(1, C, 1)
        y = y.transpose(1, 2).reshape(B, S, frames, C).transpose(1, 2).reshape(B, N, C)
        return y, full[:, :, -(K - 1) :]


class SelfAttentionParams(nn.Module):
    """Parameters every SANA-WM self-attention block carries (GDN and softmax alike).

    Names and shapes match diffusers' `BidirectionalGDNUCPESinglePathLiteLA`: the softmax blocks carry
    the GDN gates too (unused) so one checkpoint layout fits every block.
    """

    def __init__(self, dim: int, heads: int, use_qk_norm: bool, short_conv: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = qk_norm(dim, use_qk_norm, 1e-5)
        self.k_norm = qk_norm(dim, use_qk_norm, 1e-5)
        self.beta_proj = nn.Linear(dim, heads)
        self.gate_proj = nn.Linear(dim, heads)
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1.0, 16.0)))
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.register_buffer("recall_gate", torch.zeros(1))  # unused; part of the checkpoint layout
        self.output_gate = nn.Linear(dim, dim)
        if short_conv > 0:
            self.conv_k = TemporalShortConv(dim, short_conv)
        self.q_proj_cam = nn.Linear(dim, dim)
        self.k_proj_cam = nn.Linear(dim, dim)
        self.v_proj_cam = nn.Linear(dim, dim)
        self.out_proj_cam = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj_cam.weight)
        nn.init.zeros_(self.out_proj_cam.bias)
        self.q_norm_cam = qk_norm(dim, use_qk_norm, 1e-5)
        self.k_norm_cam = qk_norm(dim, use_qk_norm, 1e-5)
        if short_conv > 0:
            self.conv_k_cam = TemporalShortConv(dim, short_conv)

    FP32 = ("A_log", "dt_bias")  # the GDN decay's parameters: A = exp(A_log) in bf16 is off by up to 0.8%

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        """`.to(dtype)`, `.half()`, `.to_empty(...)` and alike move A_log and dt_bias but keep them fp32: the
        model's dtype would shift every frame's decay (the GDN scan reads them as fp32)."""
        keep = {n: getattr(self, n).data for n in self.FP32}
        out = super()._apply(fn, recurse)
        for n, old in keep.items():
            p = getattr(self, n)
            if p.dtype != old.dtype:
                p.data = (torch.empty_like(p, dtype=old.dtype) if old.is_meta or p.is_meta
                          else old.to(p.device, copy=True))
        return out

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, H, N, D)."""
        B, N, _ = x.shape
        return x.reshape(B, N, self.heads, self.head_dim).transpose(1, 2)

    def finish(self, main: torch.Tensor, cam: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Sum the branches, apply the shared SiLU output gate and the output projection."""
        out = main if cam is None else main + self.out_proj_cam(cam)
        out = out * F.silu(self.output_gate(x).float())
        return self.proj(out.to(x.dtype))
