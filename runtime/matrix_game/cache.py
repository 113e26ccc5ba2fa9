"""The caches a Matrix-Game rollout carries from block to block, typed, with their layout.

Per DiT block (`LayerCache`), B = batch, S = tokens a latent frame (880), W = `local_attn_size`
frames (6 universal, 4 GTA), H/D = heads/head dim of the self-attention (12x128) and of the action
module (16x64):

    self_kv      WindowKV  k, v (B, W*S, H, D)   post-RoPE keys and values of the last W frames
    mouse_kv     WindowKV  k, v (B*S, W, Ha, Da) per-token temporal history of the mouse branch
                                                  (action blocks of mouse modes only)
    keyboard_kv  WindowKV  k, v (B, W, Ha, Da)   keyboard keys/values, shared by every token
                                                  (action blocks only)

Per session (`CrossKV`): the cross-attention keys and values of the CLIP image tokens, per block,
computed once. Positions are absolute latent-frame indices that keep counting past the window; the
cache stores already-rotated keys, so nothing is re-indexed when old frames leave it.

`WindowKV.write` is upstream's rolling rule: a call whose end lies beyond everything written so far
is a new block (the first denoising step): if it does not fit, the oldest units are dropped (rolled
out) once; a call repeating a block (later steps, the t=0 pass) overwrites that block's slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class WindowKV:
    """A rolling key/value window along dim 1, counted in units (tokens or frames)."""

    k: torch.Tensor
    v: torch.Tensor
    global_end: int = 0  # units written since the session began (absolute end of the newest write)
    local_end: int = 0  # end of the valid part of `k`/`v`
    # CUDA event of a snapshot's copies of k/v still running on a side stream (snapshots.py): the next write
    # waits for it on the GPU, so a layer's copy overlaps the layers before it
    copying: object = field(default=None, repr=False, compare=False)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> WindowKV:
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def write(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores `k`, `v` for units [start, start + n) and returns the window attention reads."""
        if self.copying is not None:
            torch.cuda.current_stream(self.k.device).wait_event(self.copying)
            self.copying = None
        n, end = k.shape[1], start + k.shape[1]
        local_end = self.local_end + end - self.global_end
        if end > self.global_end and self.local_end + n > self.capacity:
            evicted = self.local_end + n - self.capacity
            kept = self.local_end - evicted
            self.k[:, :kept] = self.k[:, evicted : evicted + kept].clone()
            self.v[:, :kept] = self.v[:, evicted : evicted + kept].clone()
            local_end -= evicted
        self.k[:, local_end - n : local_end] = k
        self.v[:, local_end - n : local_end] = v
        self.global_end, self.local_end = end, local_end
        lo = max(0, local_end - self.capacity)
        return self.k[:, lo:local_end], self.v[:, lo:local_end]

    def clone(self) -> WindowKV:
        return WindowKV(self.k.clone(), self.v.clone(), self.global_end, self.local_end)

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


@dataclass
class LayerCache:
    self_kv: WindowKV
    mouse_kv: WindowKV | None = None
    keyboard_kv: WindowKV | None = None

    def clone(self) -> LayerCache:
        return LayerCache(
            self.self_kv.clone(),
            None if self.mouse_kv is None else self.mouse_kv.clone(),
            None if self.keyboard_kv is None else self.keyboard_kv.clone(),
        )

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in (self.self_kv, self.mouse_kv, self.keyboard_kv) if c is not None)


@dataclass
class CrossKV:
    """Cross-attention keys (after their RMS norm) and values of the image tokens, per block: (B, L, H, D)."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))


@dataclass
class DiTCache:
    layers: list[LayerCache]
    cross: CrossKV

    def clone(self) -> DiTCache:
        return DiTCache([c.clone() for c in self.layers], self.cross)  # cross k/v never change in a session

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.layers) + self.cross.nbytes()
