"""The Wan 2.1 VAE as Matrix-Game streams it: the encoder for the first image's condition and the
causal decoder that turns each block's 3 latents into frames as they come.

Both are stacks of causal 3D convolutions (temporal kernel 3, left-padded) that run one time chunk
at a time and carry `TimeCache`: for every causal conv, in call order, the last 2 time steps of its
input (fewer at the very start). The decoder decodes one latent frame per call; its two temporal
upsamplers skip their time conv on the very first latent (so latent 0 -> 1 frame, every later latent
-> 4): the first block gives 9 frames, every later block 12. The encoder reads 1 frame, then 4 at a
time, and its two temporal downsamplers keep only their last input step.

Latents are normalised per channel with Wan's 16 means and standard deviations. Parameter names are
those of `Wan2.1_VAE.pth` (`encoder.*`, `conv1.*`, `decoder.*`, `conv2.*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
HISTORY = 2  # time steps a causal conv keeps (temporal kernel 3)
_FIRST = "first"  # a temporal upsampler that has seen only the first latent


@dataclass
class TimeCache:
    """Per causal conv, in call order: its last input steps (B, C, <=2, H, W), or None before any."""

    slots: list = field(default_factory=list)
    cursor: int = 0

    def begin(self) -> TimeCache:
        self.cursor = 0
        return self

    def peek(self):
        return self.slots[self.cursor] if self.cursor < len(self.slots) else None

    def put(self, value) -> None:
        if self.cursor < len(self.slots):
            self.slots[self.cursor] = value
        else:
            self.slots.append(value)
        self.cursor += 1

    def clone(self) -> TimeCache:
        return TimeCache([s.clone() if isinstance(s, torch.Tensor) else s for s in self.slots], 0)

    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.slots if isinstance(s, torch.Tensor))


class CausalConv3d(nn.Conv3d):
    """Conv3d padded on the past side only in time (2 x the temporal padding), symmetric in space."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding  # type: ignore[misc]
        self._pad = (pw, pw, ph, ph, 2 * pt, 0)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        pad = list(self._pad)
        if history is not None and pad[4] > 0:
            x = torch.cat([history, x], dim=2)
            pad[4] -= history.shape[2]
        return super().forward(F.pad(x, pad))


def _conv_with_history(conv: CausalConv3d, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
    prev = cache.peek()
    tail = x[:, :, -HISTORY:]
    if tail.shape[2] < HISTORY and prev is not None:
        tail = torch.cat([prev[:, :, -1:], tail], dim=2)
    out = conv(x, prev)
    cache.put(tail.clone())
    return out


class RMSNorm(nn.Module):
    """x / ||x|| over channels * sqrt(C) * gamma."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = _conv_with_history(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: TimeCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        q, k, v = self.to_qkv(y).reshape(b * t, 1, 3 * c, h * w).permute(0, 1, 3, 2).contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        y = self.proj(y).reshape(b, t, c, h, w).transpose(1, 2)
        return x + y


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    y = module(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class Resample(nn.Module):
    """2x spatial up/down-sampling, with a causal 2x temporal up/down-sampling in the '3d' modes."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            state = cache.peek()
            if state is None:  # the very first latent: no temporal upsampling
                cache.put(_FIRST)
            else:
                b, c, t, h, w = x.shape
                tail = x[:, :, -HISTORY:]
                if tail.shape[2] < HISTORY:
                    before = torch.zeros_like(tail) if isinstance(state, str) else state[:, :, -1:]
                    tail = torch.cat([before, tail], dim=2)
                x = self.time_conv(x, None if isinstance(state, str) else state)  # (B, 2C, T, H, W)
                cache.put(tail.clone())
                x = torch.stack([x[:, :c], x[:, c:]], dim=3).reshape(b, c, 2 * t, h, w)  # interleave in time
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            prev = cache.peek()
            if prev is None:  # the first chunk (the image alone) is kept as it is
                cache.put(x.clone())
            else:
                last = x[:, :, -1:].clone()
                x = self.time_conv(torch.cat([prev[:, :, -1:], x], dim=2))
                cache.put(last)
        return x


def _run(layers: nn.Sequential, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer, CausalConv3d):
            x = _conv_with_history(layer, x, cache)
        elif isinstance(layer, (ResidualBlock, Resample, AttentionBlock)):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: tuple[int, ...], res_blocks: int) -> None:
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        temporal = [False, True, True]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        down: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(res_blocks):
                down.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(dim_mult) - 1:
                down.append(Resample(cout, "downsample3d" if temporal[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*down)
        self.middle = nn.Sequential(ResidualBlock(cout, cout), AttentionBlock(cout), ResidualBlock(cout, cout))
        self.head = nn.Sequential(RMSNorm(cout, images=False), nn.SiLU(), CausalConv3d(cout, z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        x = _conv_with_history(self.conv1, x, cache)
        return _run(self.head, _run(self.middle, _run(self.downsamples, x, cache), cache), cache)


class Decoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult: tuple[int, ...], res_blocks: int) -> None:
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
        temporal = [True, True, False]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        up: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                cin //= 2  # the previous upsampler halved the channels
            for _ in range(res_blocks + 1):
                up.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(dim_mult) - 1:
                up.append(Resample(cout, "upsample3d" if temporal[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*up)
        self.head = nn.Sequential(RMSNorm(cout, images=False), nn.SiLU(), CausalConv3d(cout, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        x = _conv_with_history(self.conv1, x, cache)
        return _run(self.head, _run(self.upsamples, _run(self.middle, x, cache), cache), cache)


class WanVAE(nn.Module):
    """Encoder + streaming decoder, state-dict compatible with `Wan2.1_VAE.pth`."""

    def __init__(self, dim: int = 96, z_dim: int = 16, dim_mult: tuple[int, ...] = (1, 2, 4, 4),
                 res_blocks: int = 2, encoder: bool = True, decoder: bool = True) -> None:
        super().__init__()
        self.z_dim = z_dim
        if encoder:
            self.encoder = Encoder3d(dim, 2 * z_dim, dim_mult, res_blocks)
            self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)
        if decoder:
            self.conv2 = CausalConv3d(z_dim, z_dim, 1)
            self.decoder = Decoder3d(dim, z_dim, dim_mult, res_blocks)
        self.register_buffer("mean", torch.tensor(LATENT_MEAN), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(LATENT_STD), persistent=False)

    def reset_statistics(self, device: torch.device | str) -> None:
        """Sets the latent statistics (not in the checkpoint) after building on the meta device."""
        self.mean = torch.tensor(LATENT_MEAN, device="cpu").to(device)
        self.inv_std = (1.0 / torch.tensor(LATENT_STD, device="cpu")).to(device)

    def _stat(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(like.dtype).view(1, self.z_dim, 1, 1, 1)

    # --- encoder ---
    def encode_chunk(self, frames: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        """frames (B, 3, T, H, W) in [-1, 1], T = 1 for the first chunk then 4 -> normalised latents
        (B, 16, 1, H/8, W/8) (the mean; the log-variance half is dropped)."""
        out = self.conv1(self.encoder(frames, cache.begin()))
        mu = out[:, : self.z_dim]
        return (mu - self._stat(self.mean, mu)) * self._stat(self.inv_std, mu)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, 1 + 4n, H, W) -> (B, 16, 1 + n, H/8, W/8), chunk by chunk."""
        cache = TimeCache()
        chunks = [video[:, :, :1]] + [video[:, :, 1 + 4 * i : 5 + 4 * i] for i in range((video.shape[2] - 1) // 4)]
        return torch.cat([self.encode_chunk(c, cache) for c in chunks], dim=2)

    # --- streaming decoder ---
    def decode_block(self, z: torch.Tensor, cache: TimeCache) -> torch.Tensor:
        """z (B, F, 16, h, w) normalised latents of the next F latent frames -> video (B, T, 3, 8h, 8w) in
        [-1, 1], T = 1 + 4(F-1) for the session's first block, 4F after it."""
        z = z.permute(0, 2, 1, 3, 4)  # (B, 16, F, h, w)
        z = z / self._stat(self.inv_std, z) + self._stat(self.mean, z)
        x = self.conv2(z)
        frames = [self.decoder(x[:, :, i : i + 1], cache.begin()) for i in range(x.shape[2])]
        return torch.cat(frames, dim=2).float().clamp_(-1, 1).permute(0, 2, 1, 3, 4)
