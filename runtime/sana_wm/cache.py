"""`StreamingCache`: what one chunk leaves behind for the next, per transformer block.

Layout (B = batch, H = self-attention heads, D = head dim, C = H * D = width, S = tokens per latent
frame, K = short-conv kernel, P = FFN temporal kernel // 2, N_c = tokens of a cached chunk):

GDN block (`GDNCache`), constant size however long the session:
    state       (B, H, D, D) fp32  main numerator state: decayed delta-rule sum of v k_rot^T
    norm_state  (B, H, D, 1) fp32  main normaliser state over the un-rotated keys
    cam_state   (B, H, D, D) fp32  camera-branch (UCPE) numerator state
    k_tail      (B, S, K-1, C)     last K-1 frames of the main K short-conv input
    cam_k_tail  (B, S, K-1, C)     the same for the camera branch's K
    ffn_tail    (B, C, P, S)       last P frames entering the FFN's temporal conv

Softmax block (`SoftmaxCache`), bounded by the window:
    sink        ChunkKV of chunk 0 (when `SanaWMConfig.sink`), kept for the whole session
    recent      ChunkKV of the last `kv_window - 1` chunks (`kv_window` without a sink)
    ffn_tail    as above
    ChunkKV = post-RoPE k, v (B, H, N_c, D) and post-UCPE camera k, v, in bf16 when
    `SanaWMConfig.softmax_bf16` (as the official code stores them), else in the model dtype.

Per session (`PromptContext`, built once per prompt by `SanaWMStreamingTransformer.prompt_context`):
    mask        (B, L) bool           which prompt tokens are real
    kv          per block: k, v (B, heads, L, D) the cross-attention keys (after k_norm) and values
                of the embedded prompt (y_embedder, then attention_y_norm), constant until the prompt changes

Only the clean (t = 0) pass after a chunk's last denoising step writes; the denoising passes
read. Every stored tensor is its own compact copy (`owned`), never a view into an activation, so the
cache holds the bytes it reports (tests/test_sana_wm_memory.py). Writes replace tensors and lists
instead of modifying them, so `snapshot()` can share tensors safely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


def owned(t: torch.Tensor | None) -> torch.Tensor | None:
    """A compact copy of `t` for keeping across chunks: a slice or `chunk` of an activation is a view that
    keeps the whole activation alive (memory.held_bytes), so everything the cache stores goes through this."""
    return None if t is None else t.clone(memory_format=torch.contiguous_format)


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class GDNCache:
    state: torch.Tensor | None = None
    norm_state: torch.Tensor | None = None
    cam_state: torch.Tensor | None = None
    k_tail: torch.Tensor | None = None
    cam_k_tail: torch.Tensor | None = None
    ffn_tail: torch.Tensor | None = None

    def nbytes(self) -> int:
        return _nbytes(self.state, self.norm_state, self.cam_state, self.k_tail, self.cam_k_tail, self.ffn_tail)


@dataclass(frozen=True)
class ChunkKV:
    k: torch.Tensor  # (B, H, N_c, D) post-RoPE
    v: torch.Tensor
    cam_k: torch.Tensor | None  # (B, H, N_c, D) post-UCPE; None without camera inputs
    cam_v: torch.Tensor | None

    def nbytes(self) -> int:
        return _nbytes(self.k, self.v, self.cam_k, self.cam_v)


@dataclass
class SoftmaxCache:
    sink: ChunkKV | None = None
    recent: tuple[ChunkKV, ...] = ()
    ffn_tail: torch.Tensor | None = None

    def context(self, home: bool = False) -> list[ChunkKV]:
        """Cached chunks a new chunk attends to, oldest first; the sink alone for a chunk back at the first view
        (`home`, SanaWMConfig.home_radius). The recent chunks stay cached either way."""
        if home and self.sink is not None:
            return [self.sink]
        return ([self.sink] if self.sink is not None else []) + list(self.recent)

    def pushed(self, kv: ChunkKV, window: int, sink: bool) -> tuple[ChunkKV | None, tuple[ChunkKV, ...]]:
        """(sink, recent) after appending one chunk: chunk 0 becomes the sink, the rest slide."""
        if sink and self.sink is None:
            return kv, self.recent
        keep = window - 1 if sink else window
        recent = (*self.recent, kv)
        return self.sink, recent[max(0, len(recent) - keep) :] if keep > 0 else ()

    def nbytes(self) -> int:
        return sum(kv.nbytes() for kv in self.context()) + _nbytes(self.ffn_tail)


@dataclass(frozen=True)
class PromptContext:
    """The prompt as every block's cross-attention reads it: the same for every forward of a session, so
    computed once when the prompt is set (`LatentRollout.reset`) instead of in every forward."""

    mask: torch.Tensor  # (B, L) bool
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per block: (k, v), each (B, heads, L, D)

    def nbytes(self) -> int:
        return _nbytes(self.mask, *(t for kv in self.kv for t in kv))


BlockCache = GDNCache | SoftmaxCache


@dataclass
class StreamingCache:
    blocks: list[BlockCache]
    frames: int = 0  # latent frames written so far = absolute position of the next chunk's first frame
    chunks: int = 0  # chunks written so far

    @staticmethod
    def empty(softmax_blocks: list[bool]) -> StreamingCache:
        return StreamingCache([SoftmaxCache() if s else GDNCache() for s in softmax_blocks])

    def nbytes(self) -> int:
        """Bytes held by the cache tensors."""
        return sum(b.nbytes() for b in self.blocks)

    def snapshot(self) -> StreamingCache:
        """A structural copy sharing tensors (never modified in place)."""
        return StreamingCache([replace(b) for b in self.blocks], self.frames, self.chunks)
