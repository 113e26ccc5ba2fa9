"""Rotary position embeddings of the Matrix-Game DiT, computed for any position (no table cap).

Self-attention: 3 axes (latent frame, row, column) over the head's complex pairs of adjacent
elements, split [D/2 - 2(D/2 // 3), D/2 // 3, D/2 // 3] ([22, 21, 21] for D = 128), each axis with
frequencies theta^(-2i/d_axis), in float64 as upstream computes them. The frame position is the
absolute latent-frame index, so positions keep counting however long the session runs (upstream
stops at its 1024-frame table).

Action module: one time axis on the first `action_rope_dims[0]` (8) of the 64 head dims, pairs
interleaved, theta 256, in float32 as upstream's table is built; the other dims are left as they are
(upstream's table has cos 1, sin 0 there).
"""

from __future__ import annotations

import torch


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64).div(dim))  # (dim/2,)
    return torch.outer(positions.to(torch.float64), inv)  # (N, dim/2)


def video_rope(head_dim: int, first_frame: int, frames: int, rows: int, cols: int, theta: float,
               device: torch.device | str) -> torch.Tensor:
    """Complex rotations (frames*rows*cols, 1, head_dim/2) for tokens in (frame, row, col) order."""
    c = head_dim // 2
    d_frame = head_dim - 4 * (head_dim // 6)
    d_side = 2 * (head_dim // 6)
    assert d_frame // 2 + d_side == c
    f = torch.polar(*_unit(_axis_angles(torch.arange(first_frame, first_frame + frames), d_frame, theta)))
    h = torch.polar(*_unit(_axis_angles(torch.arange(rows), d_side, theta)))
    w = torch.polar(*_unit(_axis_angles(torch.arange(cols), d_side, theta)))
    rot = torch.cat(
        [
            f.view(frames, 1, 1, -1).expand(frames, rows, cols, -1),
            h.view(1, rows, 1, -1).expand(frames, rows, cols, -1),
            w.view(1, 1, cols, -1).expand(frames, rows, cols, -1),
        ],
        dim=-1,
    )
    return rot.reshape(frames * rows * cols, 1, c).to(device)


def _unit(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones_like(angles), angles


def apply_video_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x (B, L, H, D) rotated by `rot` (L, 1, D/2) in float64, returned in x's dtype."""
    b, L, h, d = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).reshape(b, L, h, d // 2, 2))
    return torch.view_as_real(xc * rot).flatten(3).type_as(x)


def action_rope(dims: int, theta: float, first_frame: int, frames: int,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (frames, dims) for the rotated part of an action head, pairs interleaved, float32."""
    inv = 1.0 / (theta ** (torch.arange(0, dims, 2)[: dims // 2].float() / dims))
    angles = torch.outer(torch.arange(first_frame, first_frame + frames, dtype=torch.float32), inv)
    return (angles.cos().repeat_interleave(2, dim=1).to(device), angles.sin().repeat_interleave(2, dim=1).to(device))


def apply_action_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, T, H, D): its first cos.shape[-1] dims rotated per frame T; the rest unchanged."""
    r = cos.shape[-1]
    head = x[..., :r].float()
    pairs = head.reshape(*head.shape[:-1], -1, 2)
    rotated_half = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = (head * c + rotated_half * s).type_as(x)
    return torch.cat([out, x[..., r:]], dim=-1)
