"""Softmax self-attention over the current chunk plus cached K/V (every 4th SANA-WM block).

The chunk's queries attend to its own keys and to the cached post-RoPE keys/values of the sink chunk
(chunk 0) and the most recent `kv_window - 1` chunks; the camera branch does the same with
post-UCPE keys/values. Cached keys keep the RoPE of their absolute frame positions, so only the new
chunk is rotated. With an empty cache this is diffusers' bidirectional softmax block on the chunk.

Precision follows the official code: q/k/v are cast to bf16 for SDPA when the model runs in fp32
(`SanaWMConfig.softmax_bf16`), and the cache stores them in that dtype.

Difference from diffusers 0.42.1 (documented on purpose): besides the UCPE RMS rescale (see gdn.py),
diffusers pads the camera branch's head dim to 128 for SDPA without restoring the 1/sqrt(D) scale
(D = 112 in the released model); the official code restores it and so do we (we do not pad at all).
For head dims of 32, 64, 128 or 256 the two agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cache import ChunkKV, SoftmaxCache, owned
from .camera import UcpeTransforms, apply_ucpe
from .layers import SelfAttentionParams
from .rope import apply_rope


def joined(window: dict[str, torch.Tensor] | None, name: str, context: list[torch.Tensor], new: torch.Tensor
           ) -> torch.Tensor:
    """torch.cat([*context, new], 2) in `new`'s dtype: the keys (or values) a chunk's queries attend to.

    The context (the cached chunks) is the same for every pass of a chunk, so with a `window` (the chunk's,
    held by transformer.ChunkInputs) it is copied once, at the chunk's first pass, into a buffer with room
    for the chunk's own N tokens, and each later pass writes only those (N of the N_ctx + N tokens). The
    buffer is overwritten by the next pass, so whatever reads it must have read it by then (SDPA, at once)."""
    if not context:
        return new
    if window is None:
        return torch.cat([c.to(new.dtype) for c in context] + [new], 2)
    n_ctx = sum(c.shape[2] for c in context)
    buf = window.get(name)
    if buf is None or buf.dtype != new.dtype or buf.shape[2] != n_ctx + new.shape[2] or buf.shape[:2] != new.shape[:2]:
        buf = window[name] = torch.cat([c.to(new.dtype) for c in context] + [new], 2)
        return buf
    buf[:, :, n_ctx:].copy_(new)
    return buf


class SoftmaxAttention(SelfAttentionParams):
    """One softmax self-attention block (main + camera branch) over one chunk with a K/V window."""

    def __init__(self, dim: int, heads: int, use_qk_norm: bool, bf16: bool) -> None:
        super().__init__(dim, heads, use_qk_norm, short_conv=0)
        self.bf16 = bf16

    def _sdpa_dtype(self, x: torch.Tensor) -> torch.Tensor:
        return x.bfloat16() if self.bf16 and x.dtype == torch.float32 else x

    def forward(
        self,
        x: torch.Tensor,
        T: int,
        rope: torch.Tensor,
        ucpe: UcpeTransforms | None,
        cam_rope: torch.Tensor | None,
        cache: SoftmaxCache,
        write: bool,
        window: dict[str, torch.Tensor] | None = None,
        home: float = 0.0,
    ) -> tuple[torch.Tensor, ChunkKV | None]:
        """x (B, N, C) -> (B, N, C); returns this chunk's K/V for the cache when `write`. `window`: this block's
        context for the chunk's passes (`joined`), None to concatenate the context in every pass; `home`: how
        far the chunk is back at the first view (SanaWMConfig.home_radius): at 1 it reads the sink alone
        (`SoftmaxCache.context`), between 0 and 1 the recent chunks' attention weights are scaled by
        (1 - home)^2 (`recent_bias`; squared: less left to fade in the last steps home, where it shows most)."""
        B, N, C = x.shape
        context = cache.context(home >= 1.0)
        sink = cache.sink is not None
        bias = _recent_bias([c.k for c in context], sink, N, home)  # (1, S) or None

        # 1. main branch: qkv -> RMSNorm -> RoPE at absolute positions -> SDPA over [cache, chunk]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = apply_rope(self.split_heads(self.q_norm(q)), rope)
        k = apply_rope(self.split_heads(self.k_norm(k)), rope)
        q, k, v = (self._sdpa_dtype(t) for t in (q, k, self.split_heads(v)))
        k_all = joined(window, "k", [c.k for c in context], k)
        v_all = joined(window, "v", [c.v for c in context], v)
        mask = None if bias is None else bias.to(k_all.dtype)
        main = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask).to(x.dtype)
        main = main.transpose(1, 2).reshape(B, N, C)

        # 2. camera branch: UCPE on q (P^T) and k, v (P^-1), SDPA, back to world space with P
        cam, kc, vc = None, None, None
        if ucpe is not None:
            qc = self.split_heads(self.q_norm_cam(self.q_proj_cam(x)))
            kc = self.split_heads(self.k_norm_cam(self.k_proj_cam(x)))
            vc = self.split_heads(self.v_proj_cam(x))
            qc = self._sdpa_dtype(apply_ucpe(qc, ucpe.P_T, cam_rope))
            kc = self._sdpa_dtype(apply_ucpe(kc, ucpe.P_inv, cam_rope))
            vc = self._sdpa_dtype(apply_ucpe(vc, ucpe.P_inv, cam_rope))
            cam_ks = [c.cam_k for c in context if c.cam_k is not None]  # chunks written with a camera
            kc_all = joined(window, "cam_k", cam_ks, kc)
            vc_all = joined(window, "cam_v", [c.cam_v for c in context if c.cam_v is not None], vc)
            cam_bias = _recent_bias(cam_ks, sink and cache.sink.cam_k is not None, N, home)
            mask = None if cam_bias is None else cam_bias.to(kc_all.dtype)
            out_c = F.scaled_dot_product_attention(qc, kc_all, vc_all, attn_mask=mask).to(x.dtype)
            cam = apply_ucpe(out_c, ucpe.P, cam_rope, inverse_rope=True).transpose(1, 2).reshape(B, N, C)

        out = self.finish(main, cam, x)
        # v (and, without a dtype cast, k) may be views of the whole qkv output: store copies
        return out, (ChunkKV(owned(k), owned(v), owned(kc), owned(vc)) if write else None)


def recent_bias(home: float) -> float:
    """The additive attention bias that scales the recent chunks' weights by (1 - home)^2 (-inf at home >= 1)."""
    return 2.0 * math.log1p(-home) if home < 1.0 else float("-inf")


def _recent_bias(keys: list[torch.Tensor], sink: bool, N: int, home: float) -> torch.Tensor | None:
    """`recent_bias` over [cached keys (B, H, n, D) each, the sink first when `sink`; the chunk's N] as (1, S)
    for 0 < home < 1, or None: nothing to scale."""
    recent = keys[1:] if sink else keys
    if not 0.0 < home < 1.0 or not recent:
        return None
    n_sink = keys[0].shape[2] if sink else 0
    n_recent = sum(k.shape[2] for k in recent)
    bias = torch.zeros(1, n_sink + n_recent + N, device=recent[0].device)
    bias[:, n_sink : n_sink + n_recent] = recent_bias(home)
    return bias
