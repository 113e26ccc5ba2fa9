"""`SanaWMStreamingTransformer`: the SANA-WM stage-1 DiT, one chunk per forward, with its cache.

State-dict compatible with diffusers' `SanaWMTransformer3DModel` (and, through the key mapping in
checkpoint.py, with the official `sana_dit/model.pt`). Per block: per-frame adaLN-zero modulation ->
self-attention (GDN or softmax, each with a UCPE camera branch) -> Plücker residual -> cross-attention
to the prompt -> GLUMBConvTemp FFN. A forward on a first chunk with an empty cache equals diffusers'
bidirectional forward on that chunk (see gdn.py / attention.py for the two documented differences).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SoftmaxAttention
from .cache import PromptContext, SoftmaxCache, StreamingCache, owned
from .camera import CameraInputs, UcpeTransforms, ucpe_transforms
from .config import SanaWMConfig
from .ffn import GLUMBConvTemp
from .gdn import GDNAttention
from .layers import RMSNorm, qk_norm
from .rope import Rope3D


class TimestepEmbedder(nn.Module):
    """Sinusoidal features (cos first, 256 channels) -> MLP; keys `linear_1` / `linear_2`."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], -1).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class _Mlp(nn.Module):
    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.y_proj = _Mlp(cin, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y)


class PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(cin, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, T, H, W) -> (B, N, D)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = qk_norm(dim, norm, 1e-6)
        self.k_norm = qk_norm(dim, norm, 1e-6)

    def prompt_kv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (B, L, C) embedded prompt -> k, v (B, heads, L, D): constant for a session (PromptContext)."""
        B, L, C = y.shape
        k, v = self.kv_linear(y).view(B, L, 2, C).unbind(2)  # views of one (B, L, 2C) tensor
        k, v = self.k_norm(k).contiguous(), v.contiguous()  # each its own: kept for the session, neither pins both
        return tuple(t.view(B, L, self.heads, C // self.heads).transpose(1, 2) for t in (k, v))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) queries, kv the prompt's `prompt_kv`, mask (B, L) bool."""
        B, N, C = x.shape
        k, v = kv
        q = self.q_norm(self.q_linear(x)).view(B, N, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(B, N, C).type_as(q))


class Block(nn.Module):
    def __init__(self, cfg: SanaWMConfig, index: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.softmax = cfg.is_softmax(index)
        if cfg.has_plucker(index):
            self.plucker_proj = nn.Linear(d, d)
            nn.init.zeros_(self.plucker_proj.weight)
            nn.init.zeros_(self.plucker_proj.bias)
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        if self.softmax:
            self.attn = SoftmaxAttention(d, cfg.num_heads, cfg.qk_norm, cfg.softmax_bf16)
        else:
            self.attn = GDNAttention(d, cfg.num_heads, cfg.qk_norm, cfg.conv_kernel_size)
        self.cross_attn = CrossAttention(d, cfg.num_attention_heads, cfg.cross_norm)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = GLUMBConvTemp(d, int(d * cfg.mlp_ratio), cfg.t_kernel_size)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(self, x, prompt_kv, mask, t0, grid, rope, ucpe, cam_rope, plucker, cache, write, window=None,
                home=0.0):
        """`plucker`: this block's `plucker_proj` of the chunk's embedded Plücker rays (B, N, C), made once for
        the chunk's passes (ChunkInputs), or None; `window`: the softmax block's per-chunk context (attention.py);
        `home`: how far the chunk is back at the first view (CameraInputs.home), read by a softmax block."""
        B, N, C = x.shape
        T = grid[0]
        mod = (self.scale_shift_table[None, None] + t0.reshape(B, T, 6, C)).chunk(6, dim=2)  # each (B, T, 1, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod

        h = (self.norm1(x).view(B, T, -1, C) * (1 + scale_msa) + shift_msa).view(B, N, C)
        if self.softmax:
            h, written = self.attn(h, T, rope, ucpe, cam_rope, cache, write, window, home)
        else:
            h, written = self.attn(h, T, rope, ucpe, cam_rope, cache, write)
        x = x + (gate_msa * h.view(B, T, -1, C)).view(B, N, C)
        if plucker is not None:
            x = x + plucker
        x = x + self.cross_attn(x, prompt_kv, mask)

        h = (self.norm2(x).view(B, T, -1, C) * (1 + scale_mlp) + shift_mlp).view(B, N, C)
        h, ffn_tail = self.mlp(h, grid, cache.ffn_tail)
        x = x + (gate_mlp * h.view(B, T, -1, C)).view(B, N, C)

        if not write:
            return x, None
        ffn_tail = owned(ffn_tail)  # a slice of the FFN activation otherwise
        if self.softmax:
            sink, recent = cache.pushed(written, self._window, self._sink)
            return x, SoftmaxCache(sink, recent, ffn_tail)
        return x, replace(written, ffn_tail=ffn_tail)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, math.prod(patch) * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, T: int) -> torch.Tensor:
        B, N, C = x.shape
        shift, scale = (self.scale_shift_table[None, None] + t.reshape(B, T, 1, C)).chunk(2, dim=2)
        return self.linear((self.norm_final(x).view(B, T, -1, C) * (1 + scale) + shift).view(B, N, C))


@dataclass
class ChunkInputs:
    """What every pass of one chunk (its denoising passes and its cache write) reads the same: made at the
    chunk's first pass and held, per thread, until the chunk is written (`LatentRollout.commit`), never across
    chunks. The memory plan counts what it holds in the passes' activations (runtime/bench/memory_plan.py).

    rope (N, D/2) complex; ucpe, cam_rope: the camera branch's transforms (None without a camera);
    pluckers: per block, `plucker_proj` of the embedded Plücker rays (B, N, C), None for a block without one;
    windows: per softmax block, its attention context (the cached K/V read, with room for the chunk's own,
    `attention.joined`), for the cache `reading` (a pass reading another cache starts them afresh)."""

    rope: torch.Tensor
    ucpe: UcpeTransforms | None
    cam_rope: torch.Tensor | None
    pluckers: tuple[torch.Tensor | None, ...]
    windows: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    reading: StreamingCache | None = None

    def windows_of(self, cache: StreamingCache) -> dict[int, dict[str, torch.Tensor]]:
        if self.reading is not cache:
            self.windows, self.reading = {}, cache
        return self.windows


class SanaWMStreamingTransformer(nn.Module):
    def __init__(self, cfg: SanaWMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.hidden_size, cfg.patch_size
        self.t_embedder = TimestepEmbedder(d)
        if cfg.y_norm:
            self.attention_y_norm = RMSNorm(d, eps=1e-5)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.x_embedder = PatchEmbed(cfg.in_channels, d, p)
        self.y_embedder = CaptionEmbedder(cfg.caption_channels, d)
        self.plucker_embedder = PatchEmbed(cfg.chunk_plucker_channels, d, p)
        nn.init.zeros_(self.plucker_embedder.proj.weight)
        nn.init.zeros_(self.plucker_embedder.proj.bias)
        # Loaded for checkpoint compatibility; unused, as in the official model with post-attention Plücker input.
        self.raymap_embedder = PatchEmbed(3, d, p)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        for b in self.blocks:
            b._window, b._sink = cfg.kv_window, cfg.sink
        self.final_layer = FinalLayer(d, p, cfg.in_channels)
        self.rope = Rope3D(cfg.linear_head_dim, cfg.rope_max_seq_len, cfg.rope_theta)
        self.memo_chunk_inputs = True  # keep a chunk's ChunkInputs across its passes (_chunk_inputs)
        # per thread (one session's model thread each): sessions sharing this module keep their own chunk's inputs
        self._chunk_memos: dict[int, tuple] = {}

    def _chunk_inputs(
        self, camera: CameraInputs | None, frame: int, T: int, h: int, w: int, device: torch.device
    ) -> ChunkInputs:
        """RoPE, UCPE transforms, camera RoPE and every block's projected Plücker embedding of a chunk at frame
        `frame`.

        They depend on the chunk's position and camera only, so the chunk's denoising passes (one camera
        object) compute them once: the last result of each thread is kept while no gradient is recorded, until
        the chunk is written (LatentRollout.commit drops it)."""
        key = (frame, T, h, w, device, self.dtype)
        memo = self._chunk_memo
        hit = memo is not None and memo[0] is camera and memo[1] == key
        if hit and self.memo_chunk_inputs and not torch.is_grad_enabled():
            return memo[2]
        p = self.cfg.patch_size
        rope = self.rope(frame, T, h, w, device)
        ucpe = cam_rope = None
        pluckers: tuple[torch.Tensor | None, ...] = (None,) * len(self.blocks)
        if camera is not None:
            ucpe = ucpe_transforms(camera.conditions.to(device), (h, w), (p[1], p[2]))
            cam_rope = self.rope.camera_slice(rope)
            plucker = self.plucker_embedder(camera.plucker.to(device, self.dtype))  # (B, N, C)
            # each block adds its own projection of the same rays: one Linear per block per chunk, not per pass
            pluckers = tuple(b.plucker_proj(plucker) if hasattr(b, "plucker_proj") else None for b in self.blocks)
            del plucker  # only the projections are read again
        out = ChunkInputs(rope, ucpe, cam_rope, pluckers)
        self._chunk_memo = None if (torch.is_grad_enabled() or not self.memo_chunk_inputs) else (camera, key, out)
        return out

    @property
    def _chunk_memo(self) -> tuple | None:
        return self._chunk_memos.get(threading.get_ident())

    @_chunk_memo.setter
    def _chunk_memo(self, memo: tuple | None) -> None:
        me = threading.get_ident()
        if memo is None:
            self._chunk_memos.pop(me, None)
            return
        if me not in self._chunk_memos and len(self._chunk_memos) >= 64:  # threads that never wrote their chunk
            oldest = list(self._chunk_memos)[:1]  # one C call: safe while other threads add theirs
            if oldest:
                self._chunk_memos.pop(oldest[0], None)
        self._chunk_memos[me] = memo

    def prompt_context(self, text: torch.Tensor, text_mask: torch.Tensor) -> PromptContext:
        """The prompt as the blocks' cross-attentions read it (text (B, L, caption_channels), text_mask (B, L)):
        compute it once per prompt and pass it as `text` to every forward of the session."""
        y = self.y_embedder(text.to(self.dtype))
        if self.cfg.y_norm:
            y = self.attention_y_norm(y)
        return PromptContext(text_mask.bool(), tuple(b.cross_attn.prompt_kv(y) for b in self.blocks))

    def new_cache(self) -> StreamingCache:
        return StreamingCache.empty([b.softmax for b in self.blocks])

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor | PromptContext,
        text_mask: torch.Tensor | None,
        camera: CameraInputs | None,
        cache: StreamingCache | None = None,
        write: bool = False,
    ) -> tuple[torch.Tensor, StreamingCache | None]:
        """Velocity for one chunk.

        latents (B, C, T, H, W); timesteps (B, T) per latent frame (truncated to integers, as the official
        model does); text (B, L, caption_channels) with text_mask (B, L), or the prompt's `prompt_context`
        (made once a session; text_mask then None); camera for these T frames.
        The chunk sits at absolute frame `cache.frames`; with `write` the returned cache includes it.
        """
        cfg = self.cfg
        cache = cache if cache is not None else self.new_cache()
        B, _, T, H, W = latents.shape
        p = cfg.patch_size
        h, w = H // p[1], W // p[2]
        grid = (T, h, w)
        dtype = self.dtype

        x = self.x_embedder(latents.to(dtype))  # (B, N, D)
        t_emb = self.t_embedder(timesteps.long().float().flatten())  # (B*T, D)
        t0 = self.t_block(t_emb).view(B, T, -1)
        t_emb = t_emb.view(B, T, -1)
        prompt = text if isinstance(text, PromptContext) else self.prompt_context(text, text_mask)

        chunk = self._chunk_inputs(camera, cache.frames, T, h, w, latents.device)
        windows = chunk.windows_of(cache) if self._chunk_memo is not None and self._chunk_memo[2] is chunk else None
        home = camera.home if camera is not None else 0.0  # softmax blocks read less than the window near 1

        new_blocks = []
        for i, (block, bc, kv) in enumerate(zip(self.blocks, cache.blocks, prompt.kv, strict=True)):
            window = None if windows is None or not block.softmax else windows.setdefault(i, {})
            x, written = block(x, kv, prompt.mask, t0, grid, chunk.rope, chunk.ucpe, chunk.cam_rope,
                               chunk.pluckers[i], bc, write, window, home)
            new_blocks.append(written)

        x = self.final_layer(x, t_emb, T)
        out = x.view(B, T, h, w, p[1], p[2], cfg.in_channels).permute(0, 6, 1, 2, 4, 3, 5)
        out = out.reshape(B, cfg.in_channels, T, H, W)
        if not write:
            return out, None
        return out, StreamingCache(new_blocks, cache.frames + T, cache.chunks + 1)
