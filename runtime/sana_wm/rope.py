"""3D rotary position embedding at absolute frame positions.

Wan-style RoPE as SANA-WM uses it: the head dimension is split into a time part and two equal
spatial parts (each `2 * (head_dim // 6)` channels), every part rotates interleaved channel pairs by
`position * theta ** (-2i / dim)`. The streaming model indexes frames absolutely: chunk k's frames keep
the positions they would have in the whole video, so cached keys stay valid.

The camera branch reuses a narrower table (head_dim / 2) carved out of the same frequencies
(`camera_slice`), as diffusers and the official code do.
"""

from __future__ import annotations

import torch


def _axis_freqs(dim: int, max_len: int, theta: float) -> torch.Tensor:
    """(max_len, dim // 2) complex64 rotations for one axis."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu")[: dim // 2] / dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device="cpu"), inv)  # never on meta
    return torch.polar(torch.ones_like(angles), angles)


class Rope3D:
    """Holds the per-axis tables; `__call__` builds the (N, head_dim // 2) complex table of a chunk."""

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.max_len = max_len
        hw = 2 * (head_dim // 6)
        t = head_dim - 2 * hw
        self.t_half, self.hw_half = t // 2, hw // 2
        self._tables = [
            _axis_freqs(t, max_len, theta),
            _axis_freqs(hw, max_len, theta),
            _axis_freqs(hw, max_len, theta),
        ]

    def __call__(self, frame_start: int, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(frames * height * width, head_dim // 2) complex64 for frames [frame_start, frame_start + frames)."""
        if frame_start + frames > self.max_len or max(height, width) > self.max_len:
            raise ValueError(
                f"RoPE table covers {self.max_len} positions; frames up to {frame_start + frames} and a "
                f"{height}x{width} grid need more: raise SanaWMConfig.rope_max_seq_len"
            )
        ft, fh, fw = (tab.to(device) for tab in self._tables)
        ft = ft[frame_start : frame_start + frames].view(frames, 1, 1, -1).expand(frames, height, width, -1)
        fh = fh[:height].view(1, height, 1, -1).expand(frames, height, width, -1)
        fw = fw[:width].view(1, 1, width, -1).expand(frames, height, width, -1)
        return torch.cat([ft, fh, fw], dim=-1).reshape(frames * height * width, -1)

    def camera_slice(self, table: torch.Tensor) -> torch.Tensor:
        """The camera branch's (N, head_dim // 4) table: the same T/H/W split at half the head dim."""
        d = self.head_dim // 2
        t_new, hw_new = d // 2 - 2 * (d // 6), d // 6
        t0, h0 = self.t_half, self.t_half + self.hw_half
        return torch.cat([table[:, :t_new], table[:, t0 : t0 + hw_new], table[:, h0 : h0 + hw_new]], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (..., N, D) by table (N, D // 2); computed in fp32.

    The table may also be real, (N, D // 2, 2) = (cos, sin) (`torch.view_as_real` of the complex one):
    the complex-free form ONNX export and TensorRT need (runtime/onnx_export.py); same numbers.
    """
    if not table.is_complex():
        cos, sin = table.float().unbind(-1)  # (N, D // 2) each
        sin = -sin if inverse else sin
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).to(x.dtype)
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    rot = table.conj() if inverse else table
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)
