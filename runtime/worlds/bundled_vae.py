"""The bundled model's VAE: our own small frame-group autoencoder (shipped), and the small LTX-2 config.

What ships, `FrameVAE`: 160x96 video at 16 fps <-> latents of 16 channels on a 12x20 grid, stride 8
in space and 4 in time, in the LTX-2 layout (B, C, T, h, w): a clip of 1 + 4k frames has 1 + k
latent frames, the first coding the first image alone. Each latent frame codes its 4 video frames
stacked on channels with 2D convolutions (GroupNorm, SiLU; channels 48, 128; 1.75M parameters),
so chunks decode independently and a chunked decode equals a whole-clip decode exactly.

Why stride 8 and not SANA-WM's 32 (or the 16 shipped before): at 16x with 16 channels (192x
compression, LTX-2's ratio) the reconstruction itself was too blurred to beat a frozen first frame
on SSIM one second into a walk (ceiling 0.70 against the frozen frame's 0.66-0.76); 8x is 48x
compression, at four times the transformer's tokens (240 a latent frame).

Why not LTX-2: diffusers' `AutoencoderKLLTX2Video` with a small config (channels 16, 32, 64, one
layer per block, patch 2, same strides; `BundledVAEConfig`) decodes fast enough (2 GFLOP a chunk,
with `fast_conv3d`), but in our CPU budget (15-20 minutes) it did not learn to pass the image
through its latent: after 800 steps on whole frames two different images decoded to frames that
differ by 0.009 (of 2), and 1800 steps on crops gave one blurred landscape for every input. The
frame-group VAE reached 22-25 dB after 300 steps. A temporal stride of 4 (SANA-WM: 8) halves the
input latency: a chunk of 1 latent frame (the shipped world's) is 0.25 s of video.

`fast_conv3d` swaps every `nn.Conv3d` for a subclass that calls oneDNN directly: PyTorch's CPU
heuristic sends small 3D convolutions to its slow reference kernel (`slow_conv3d`), 2-3x slower.
The parameters and state dict are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldwalk.runtime.sana_wm.vae import DecodeState, VAEModule

__all__ = ["BundledVAEConfig", "FastConv3d", "FrameVAE", "FrameVAEConfig", "FrameVAEStream", "build_vae",
           "fast_conv3d", "vae_config_from_dict"]


@dataclass
class BundledVAEConfig:
    width: int = 160
    height: int = 96
    latent_channels: int = 16
    channels: tuple[int, ...] = (16, 32, 64)
    patch_size: int = 2
    temporal_stride: int = 4  # two spatiotemporal down blocks

    @property
    def spatial_stride(self) -> int:
        return self.patch_size * 2 ** len(self.channels)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.spatial_stride, self.width // self.spatial_stride

    def to_diffusers(self) -> dict:
        n = len(self.channels)
        if self.temporal_stride != 2 ** (n - 1):
            raise ValueError(f"temporal_stride must be 2**(len(channels)-1) = {2 ** (n - 1)} for this layout")
        if self.width % self.spatial_stride or self.height % self.spatial_stride:
            raise ValueError(f"frame size {self.width}x{self.height} must be a multiple of {self.spatial_stride}")
        return dict(
            in_channels=3,
            out_channels=3,
            latent_channels=self.latent_channels,
            block_out_channels=tuple(self.channels),
            down_block_types=("LTX2VideoDownBlock3D",) * n,
            decoder_block_out_channels=tuple(self.channels),
            layers_per_block=(1,) * (n + 1),
            decoder_layers_per_block=(1,) * (n + 1),
            spatio_temporal_scaling=(True,) * n,
            decoder_spatio_temporal_scaling=(True,) * n,
            decoder_inject_noise=(False,) * (n + 1),
            downsample_type=("spatial",) + ("spatiotemporal",) * (n - 1),
            upsample_type=("spatiotemporal",) * (n - 1) + ("spatial",),
            upsample_residual=(True,) * n,
            upsample_factor=(2,) * n,
            patch_size=self.patch_size,
            patch_size_t=1,
            decoder_spatial_padding_mode="zeros",
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class FastConv3d(nn.Conv3d):
    """`nn.Conv3d` that always takes oneDNN on the CPU in fp32 (same parameters, same results)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if input.device.type != "cpu" or input.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
            return super()._conv_forward(input, weight, bias)
        padding = list(self.padding)
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = [0, 0, 0]
        return torch.ops.aten.mkldnn_convolution(
            input.contiguous(), weight, bias, padding, list(self.stride), list(self.dilation), self.groups
        )


def fast_conv3d(module: nn.Module) -> nn.Module:
    """Make every plain `nn.Conv3d` inside `module` a `FastConv3d`, in place; returns `module`."""
    for m in module.modules():
        if type(m) is nn.Conv3d:
            m.__class__ = FastConv3d
    return module


def build_vae(cfg: BundledVAEConfig | FrameVAEConfig | None = None) -> nn.Module:
    """A randomly initialised bundled VAE (load weights with `load_state_dict`)."""
    cfg = cfg or FrameVAEConfig()
    if isinstance(cfg, FrameVAEConfig):
        return FrameVAE(cfg)
    from diffusers import AutoencoderKLLTX2Video

    return fast_conv3d(AutoencoderKLLTX2Video(**cfg.to_diffusers()))


def vae_config_from_dict(d: dict) -> BundledVAEConfig | FrameVAEConfig:
    """The config stored in a VAE weight file's metadata (`to_dict`)."""
    d = dict(d)
    d["channels"] = tuple(d["channels"])
    if d.get("decoder_channels") is not None:
        d["decoder_channels"] = tuple(d["decoder_channels"])
    if d.pop("kind", "ltx2") == "frame":
        return FrameVAEConfig(**d)
    return BundledVAEConfig(**d)


def encode_mean(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Raw latents (posterior mean) of video x (B, 3, 1 + s k, H, W) in [-1, 1], for either VAE."""
    if isinstance(vae, FrameVAE):
        return vae.encode(x)
    return vae.encode(x, causal=True).latent_dist.mode()


def decode_raw(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Video (B, 3, F, H, W) from raw latents, for either VAE."""
    if isinstance(vae, FrameVAE):
        return vae.decode(z)
    return vae.decode(z, causal=True).sample


# ---------------------------------------------------------------------------------------------
# Our own small VAE: what the bundled model ships.
# ---------------------------------------------------------------------------------------------


@dataclass
class FrameVAEConfig:
    """A latent frame is a group of `temporal_stride` video frames stacked on channels and coded by
    2D convolutions; the first latent frame codes the first image alone (repeated), so a clip of
    1 + 4k frames has 1 + k latent frames, as with LTX-2."""

    width: int = 160
    height: int = 96
    latent_channels: int = 16
    channels: tuple[int, ...] = (48, 128)  # at 1/2 and 1/4 of the frame (then 1/8)
    temporal_stride: int = 4
    decoder_channels: tuple[int, ...] | None = None  # the decoder's own widths (None: `channels`); a wider
    # decoder draws more detail from the same latents (train --decoder-channels)
    decoder_padding: str = "zeros"  # how the decoder's convolutions see past the frame's edge: "replicate"
    # gives the border no value of its own to draw (zeros made a cheap dark band across the sky's top rows)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.channels) + 1)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.spatial_stride, self.width // self.spatial_stride

    @property
    def dec_channels(self) -> tuple[int, ...]:
        return tuple(self.decoder_channels or self.channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if self.decoder_channels is None:
            d.pop("decoder_channels")  # files from before the field read the same
        else:
            d["decoder_channels"] = list(self.decoder_channels)
        if self.decoder_padding == "zeros":
            d.pop("decoder_padding")
        d["kind"] = "frame"
        return d


def _conv3x3(c_in: int, c_out: int, padding_mode: str = "zeros", stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=padding_mode)


class _Res(nn.Module):
    def __init__(self, c: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c), _conv3x3(c, c, padding_mode)
        self.n2, self.c2 = nn.GroupNorm(8, c), _conv3x3(c, c, padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.silu(self.n2(self.c1(F.silu(self.n1(x))))))


PADDING_MODES = ("zeros", "replicate", "reflect")


class FrameVAE(nn.Module):
    """Deterministic autoencoder (posterior mean only) with the LTX-2 latent layout (B, C, T, h, w)."""

    def __init__(self, cfg: FrameVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FrameVAEConfig()
        s, ch = cfg.temporal_stride, list(cfg.channels)
        enc: list[nn.Module] = [nn.PixelUnshuffle(2), _conv3x3(3 * s * 4, ch[0])]
        for i, c in enumerate(ch):
            nxt = ch[i + 1] if i + 1 < len(ch) else ch[-1]
            enc += [_Res(c), _conv3x3(c, nxt, stride=2)]
        enc += [_Res(ch[-1]), nn.GroupNorm(8, ch[-1]), nn.SiLU(), _conv3x3(ch[-1], cfg.latent_channels)]
        self.encoder = nn.Sequential(*enc)
        if len(cfg.dec_channels) != len(ch):
            raise ValueError(f"decoder_channels {cfg.dec_channels} must have as many levels as channels {ch}")
        if cfg.decoder_padding not in PADDING_MODES:
            raise ValueError(f"decoder_padding {cfg.decoder_padding!r} is not one of {PADDING_MODES}")
        ch, pad = list(cfg.dec_channels), cfg.decoder_padding
        dec: list[nn.Module] = [_conv3x3(cfg.latent_channels, ch[-1], pad), _Res(ch[-1], pad)]
        for i in reversed(range(len(ch))):
            prev = ch[i + 1] if i + 1 < len(ch) else ch[-1]
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(prev, ch[i], pad), _Res(ch[i], pad)]
        dec += [nn.GroupNorm(8, ch[0]), nn.SiLU(), _conv3x3(ch[0], 3 * s * 4, pad), nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latents_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latents_std", torch.ones(cfg.latent_channels))

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + s k, H, W) -> (B * (1 + k), 3 s, H, W): the first frame repeated s times, then groups."""
        B, C, Fr, H, W = x.shape
        s = self.cfg.temporal_stride
        if (Fr - 1) % s:
            raise ValueError(f"clips must have 1 + {s} k frames, got {Fr}")
        x = torch.cat([x[:, :, :1].expand(B, C, s, H, W), x[:, :, 1:]], 2)  # (B, C, s (1 + k), H, W)
        T = x.shape[2] // s
        return x.view(B, C, T, s, H, W).permute(0, 2, 3, 1, 4, 5).reshape(B * T, s * C, H, W)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + s k, H, W) in [-1, 1] -> raw latents (B, C, 1 + k, h, w)."""
        B = x.shape[0]
        z = self.encoder(self._groups(x))  # (B T, C, h, w)
        return z.view(B, -1, *z.shape[1:]).transpose(1, 2)

    def decode(self, z: torch.Tensor, first: bool = True) -> torch.Tensor:
        """Raw latents (B, C, T, h, w) -> video (B, 3, F, H, W); with `first`, latent 0 is the first image
        (1 frame), so F = 1 + s (T - 1); otherwise F = s T."""
        B, C, T, h, w = z.shape
        s = self.cfg.temporal_stride
        y = self.decoder(z.transpose(1, 2).reshape(B * T, C, h, w))  # (B T, s 3, H, W)
        y = y.view(B, T, s, 3, *y.shape[-2:]).permute(0, 3, 1, 2, 4, 5).reshape(B, 3, T * s, *y.shape[-2:])
        return y[:, :, s - 1 :] if first else y


class FrameVAEStream(VAEModule):
    """`FrameVAE` behind the VAE interface `SanaWM` drives (that of `sana_wm.vae.SanaWMVAE`): normalised
    latents in, chunks of frames out, with a carried `DecodeState`. Latent frames decode independently,
    so chunked decoding equals a whole-clip decode exactly; the state carries no tails, only whether
    the first image was decoded."""

    def __init__(self, vae: FrameVAE) -> None:
        self.vae = vae.eval()
        self.temporal_stride = vae.cfg.temporal_stride
        self.spatial_stride = vae.cfg.spatial_stride
        self.latent_channels = vae.cfg.latent_channels

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        return mean, std, 1.0

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + s k, H, W) in [-1, 1] -> normalised latents (B, C, 1 + k, h, w)."""
        z = self.vae.encode(frames)
        mean, std, _ = self._stats(z)
        return (z - mean) / std

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:  # noqa: ANN001
        """(H, W, 3) uint8 -> normalised latent (1, C, 1, h, w)."""
        x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
        return self.encode_video(x[None, :, None])

    @torch.no_grad()
    def decode_full(self, z: torch.Tensor) -> torch.Tensor:
        mean, std, _ = self._stats(z)
        return self.vae.decode(z * std + mean, first=True)

    @torch.no_grad()
    def decode_chunk(self, z: torch.Tensor, state: DecodeState | None) -> tuple[torch.Tensor, DecodeState]:
        """Normalised latents (1, C, T, h, w) -> frames (1, 3, F, H, W) in [-1, 1] and the state after them."""
        mean, std, _ = self._stats(z)
        started = state is not None and state.started
        return self.vae.decode(z * std + mean, first=not started), DecodeState(started=True)
