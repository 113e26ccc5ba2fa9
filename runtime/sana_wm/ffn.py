"""`GLUMBConvTemp`: SANA-WM's feed-forward block, with a temporal tail cache.

Per frame: 1x1 conv to 2 x hidden (SiLU), 3x3 depthwise conv, GLU (value * SiLU(gate)), 1x1 conv back.
Then a residual temporal conv (kernel `t_kernel_size`, zero padded) over frames. Streaming: the
temporal conv's left context is the last `t_kernel_size // 2` frames of the previous chunk (cached at
its clean pass); on the right it sees zeros at the chunk end, as the official streaming FFN. The zeros
are padded explicitly and the conv runs unpadded, so it computes the chunk's T frames only (padding the
context inside the conv would compute T + P frames and drop P).
Parameter names match diffusers' `GLUMBConvTemp`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Conv(nn.Module):
    """A Conv2d held as `.conv` (the checkpoint's naming) with an optional SiLU."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = True, act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.silu(x) if self.act else x


class GLUMBConvTemp(nn.Module):
    def __init__(self, dim: int, hidden: int, t_kernel: int = 3) -> None:
        super().__init__()
        self.inverted_conv = _Conv(dim, hidden * 2, 1, act=True)
        self.depth_conv = _Conv(hidden * 2, hidden * 2, 3, groups=hidden * 2)
        self.point_conv = _Conv(hidden, dim, 1, bias=False)
        self.t_conv = nn.Conv2d(dim, dim, (t_kernel, 1), bias=False)  # padded explicitly in forward
        self.pad = t_kernel // 2

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int, int], tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, C) -> (y (B, N, C), new tail (B, C, P, S))."""
        B, N, C = x.shape
        T, h, w = grid
        y = x.reshape(B * T, h, w, C).permute(0, 3, 1, 2)
        y = self.depth_conv(self.inverted_conv(y))
        value, gate = y.chunk(2, dim=1)
        y = self.point_conv(value * F.silu(gate))
        y = y.view(B, T, C, h * w).permute(0, 2, 1, 3)  # (B, C, T, S)
        P = self.pad
        if P == 0:
            return (y + self.t_conv(y)).permute(0, 2, 3, 1).reshape(B, N, C), None
        if tail is None:  # session start: zeros on both sides (F.pad keeps y's memory layout, so the sums too)
            ctx = F.pad(y, (0, 0, P, P))  # (B, C, P + T + P, S)
        else:
            ctx = torch.cat([tail.to(y.dtype), y, y.new_zeros(B, C, P, h * w)], 2)
        out = y + self.t_conv(ctx)  # (B, C, T, S)
        new_tail = ctx[:, :, T : T + P]  # the last P frames of [left, y]; a view: the writer copies it (cache.owned)
        return out.permute(0, 2, 3, 1).reshape(B, N, C), new_tail
