"""The bundled model's VAE: diffusers' `AutoencoderKLLTX2Video` in a small, fast configuration.

Same class as SANA-WM's LTX-2 VAE, so the streaming code that wraps it needs no special case;
only the sizes differ:

- 160x96 video at 16 fps <-> latents of 16 channels, 6x10 tokens, stride 16 in space and 4 in
  time (SANA-WM: 128 channels, stride 32 and 8). A latent frame is 4 video frames = 0.25 s, so a
  chunk of 3 latent frames is 0.75 s of video and the player's input reaches the screen a chunk
  sooner than with stride 8. Clips have 4k + 1 frames: the first frame has a latent of its own.
- Channels (16, 32, 64), one resnet layer per block, patch size 2: 1.2M parameters; decoding a
  12-frame chunk costs about 2 GFLOP.
- The decoder pads with zeros (not reflect): cheaper, and trained that way from scratch.

`fast_conv3d` swaps every `nn.Conv3d` for a subclass that calls oneDNN directly: PyTorch's CPU
heuristic sends the small 3D convolutions of this VAE to its slow reference kernel
(`slow_conv3d`), which is 2-3x slower. The parameters and state dict are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BundledVAEConfig", "FastConv3d", "build_vae", "fast_conv3d"]


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


def build_vae(cfg: BundledVAEConfig | None = None) -> nn.Module:
    """A randomly initialised bundled VAE (load weights with `load_state_dict`)."""
    from diffusers import AutoencoderKLLTX2Video

    cfg = cfg or BundledVAEConfig()
    return fast_conv3d(AutoencoderKLLTX2Video(**cfg.to_diffusers()))
