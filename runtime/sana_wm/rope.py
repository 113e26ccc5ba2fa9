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


def _inv_freqs(dim: int, theta: float) -> torch.Tensor:
    """(dim // 2,) fp32 inverse frequencies of one axis."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu")[: dim // 2] / dim))


def _rotations(inv: torch.Tensor, start: int, count: int, device: torch.device) -> torch.Tensor:
    """(count, dim // 2) complex64 rotations of positions [start, start + count), made on `device`."""
    pos = torch.arange(start, start + count, dtype=torch.float32, device=device)
    angles = torch.outer(pos, inv)
    return torch.polar(torch.ones_like(angles), angles)


class Rope3D:
    """`__call__` builds the (N, head_dim // 2) complex table of a chunk, on the chunk's device.

    Frame positions have no end: a chunk's time rotations are computed for its own frames (the same
    fp32 numbers a table row would hold), so a session runs for hours. Past the horizon the model was
    trained on, the positions keep counting (the GDN states and the cached keys were rotated with
    them); what the model makes of distances it never saw is up to the model (README). `max_len` bounds
    the spatial grid only. The spatial tables and the inverse frequencies are kept per device, so a
    forward copies nothing from the host.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.max_len = max_len
        hw = 2 * (head_dim // 6)
        t = head_dim - 2 * hw
        self.t_half, self.hw_half = t // 2, hw // 2
        self._inv = [_inv_freqs(t, theta), _inv_freqs(hw, theta)]  # time, height/width (same frequencies)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (time inv, space table)

    def _device_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        if device not in self._on:
            inv_t = self._inv[0].to(device)
            self._on[device] = (inv_t, _rotations(self._inv[1].to(device), 0, self.max_len, device))
        return self._on[device]

    def __call__(self, frame_start: int, frames: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(frames * height * width, head_dim // 2) complex64 for frames [frame_start, frame_start + frames)."""
        if max(height, width) > self.max_len:
            raise ValueError(
                f"RoPE table covers {self.max_len} rows and columns; a {height}x{width} token grid needs more: "
                "raise SanaWMConfig.rope_max_seq_len"
            )
        if frame_start < 0:
            raise ValueError(f"frame positions start at 0, got {frame_start}")
        inv_t, space = self._device_tables(device)
        ft = _rotations(inv_t, frame_start, frames, device).view(frames, 1, 1, -1).expand(frames, height, width, -1)
        fh = space[:height].view(1, height, 1, -1).expand(frames, height, width, -1)
        fw = space[:width].view(1, 1, width, -1).expand(frames, height, width, -1)
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
    the complex-free form ONNX export and TensorRT need (runtime/accel/onnx_export.py); same numbers.
    """
    if not table.is_complex():
        cos, sin = table.float().unbind(-1)  # (N, D // 2) each
        sin = -sin if inverse else sin
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).to(x.dtype)
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    rot = table.conj() if inverse else table
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)
