"""`SanaWMVAE`: the LTX-2 video VAE (diffusers' `AutoencoderKLLTX2Video`) driven chunk by chunk.

Encoding: the first image becomes one normalised latent frame, (z - mean) * scaling_factor / std.

Decoding: diffusers' decoder only decodes a whole clip at once (its causal convs pad each call with
copies of the call's first frame), so chunks decoded separately would show a seam. `decode_chunk`
walks the same decoder modules with a carried `DecodeState`: every causal temporal conv keeps the
last (kernel - 1) frames of its input from the previous chunk and uses them as left padding, and
the temporal upsamplers drop their leading (stride - 1) frames only on the first chunk. Everything
else in the decoder (per-pixel RMS norms, 1x1 shortcuts, spatial padding) is frame-local. So decoding
latents chunk by chunk equals one causal decode of the whole clip (tests: within 1e-5).

Strides come from the module structure (diffusers' `temporal_compression_ratio` assumes every scaling
block is temporal), so a small VAE with a temporal stride of 4, 2 or 1 works the same way. Decoders
with timestep conditioning or noise injection are not supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # diffusers takes seconds to import: only a world with the LTX-2 VAE pays for it
    from diffusers import AutoencoderKLLTX2Video
    from diffusers.models.autoencoders.autoencoder_kl_ltx2 import (
        LTX2VideoCausalConv3d,
        LTX2VideoResnetBlock3d,
        LTX2VideoUpsampler3d,
    )


@dataclass
class DecodeState:
    """What a causal decode carries from one chunk to the next."""

    # conv's place among the decoder's modules -> its last (k - 1) input frames; a place, not the module's id,
    # so a state restores on another copy of the model (an unpickled snapshot, in another process)
    tails: dict[int, torch.Tensor] = field(default_factory=dict)
    started: bool = False  # a chunk was decoded: upsamplers keep every frame from now on

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tails.values())


class VAEModule:
    """What every VAE behind `SanaWM`'s VAE interface shares: the wrapped module in `self.vae`, whose
    parameters say where it runs and in what dtype."""

    vae: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype


class SanaWMVAE(VAEModule):
    def __init__(self, vae: AutoencoderKLLTX2Video) -> None:
        from diffusers.models.autoencoders.autoencoder_kl_ltx2 import LTX2VideoUpsampler3d

        self.vae = vae.eval()
        dec = vae.decoder
        if dec.time_embedder is not None or any(
            getattr(m, "per_channel_scale1", None) is not None for m in dec.modules()
        ):
            raise ValueError("SanaWMVAE supports LTX-2 decoders without timestep conditioning or noise injection")
        ups = [u for u in dec.modules() if isinstance(u, LTX2VideoUpsampler3d)]
        self.temporal_stride = dec.patch_size_t * math.prod(u.stride[0] for u in ups)
        self.spatial_stride = dec.patch_size * math.prod(u.stride[1] for u in ups)
        self.latent_channels = vae.config.latent_channels
        self._places = {id(m): i for i, m in enumerate(dec.modules())}

    def frames_for(self, latent_frames: int, first: bool) -> int:
        """Video frames a chunk of latent frames decodes to."""
        return 1 + (latent_frames - 1) * self.temporal_stride if first else latent_frames * self.temporal_stride

    # ---- normalisation ----
    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        return mean, std, float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 at the model's output size -> normalised latent (1, C, 1, h, w)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float() / 127.5 - 1.0
        z = self.vae.encode(x[None, :, None].to(self.dtype), causal=True).latent_dist.mode()
        mean, std, sf = self._stats(z)
        return (z - mean) * sf / std

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device, self.dtype)
        mean, std, sf = self._stats(z)
        return z * std / sf + mean

    # ---- decoding ----
    @torch.no_grad()
    def decode_full(self, z: torch.Tensor) -> torch.Tensor:
        """One causal decode of a whole clip with diffusers: (B, C, T, h, w) -> (B, 3, F, H, W) in [-1, 1]."""
        return self.vae.decode(self._denormalise(z), causal=True).sample

    @torch.no_grad()
    def decode_chunk(self, z: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """Decode the next latent frames of a clip; returns frames in [-1, 1] and the state for the next chunk."""
        new = DecodeState(dict(state.tails), state.started)
        dec = self.vae.decoder
        x = self._conv(dec.conv_in, self._denormalise(z), new)
        for r in dec.mid_block.resnets:
            x = self._resnet(r, x, new)
        for up in dec.up_blocks:
            if up.conv_in is not None:
                x = self._resnet(up.conv_in, x, new)
            for u in up.upsamplers or []:
                x = self._upsample(u, x, new, state.started)
            for r in up.resnets:
                x = self._resnet(r, x, new)
        x = self._conv(dec.conv_out, dec.conv_act(dec.norm_out(x)), new)
        p, pt = dec.patch_size, dec.patch_size_t
        B, _, T, h, w = x.shape
        x = (
            x.reshape(B, -1, pt, p, p, T, h, w)
            .permute(0, 1, 5, 2, 6, 4, 7, 3)
            .flatten(6, 7)
            .flatten(4, 5)
            .flatten(2, 3)
        )
        new.started = True
        return x, new

    def _conv(self, conv: LTX2VideoCausalConv3d, x: torch.Tensor, st: DecodeState) -> torch.Tensor:
        k = conv.kernel_size[0]
        if k == 1:
            return conv.conv(x)
        place = self._places.get(id(conv))
        if place is None:  # the decoder's modules were replaced (a copy, a reload): number them again
            self._places = {id(m): i for i, m in enumerate(self.vae.decoder.modules())}
            place = self._places[id(conv)]
        prev = st.tails.get(place)
        pad = x[:, :, :1].repeat(1, 1, k - 1, 1, 1) if prev is None else prev
        full = torch.cat([pad, x], 2)
        # a copy: a slice would keep the whole padded input alive as long as the state (and every snapshot)
        st.tails[place] = full[:, :, -(k - 1) :].clone(memory_format=torch.contiguous_format)
        return conv.conv(full)

    def _resnet(self, r: LTX2VideoResnetBlock3d, x: torch.Tensor, st: DecodeState) -> torch.Tensor:
        h = self._conv(r.conv1, r.nonlinearity(r.norm1(x)), st)
        h = self._conv(r.conv2, r.dropout(r.nonlinearity(r.norm2(h))), st)
        if r.norm3 is not None:
            x = r.norm3(x.movedim(1, -1)).movedim(-1, 1)
        if r.conv_shortcut is not None:
            x = r.conv_shortcut(x)
        return h + x

    def _upsample(self, u: LTX2VideoUpsampler3d, x: torch.Tensor, st: DecodeState, started: bool) -> torch.Tensor:
        B, _, T, H, W = x.shape
        s0, s1, s2 = u.stride
        drop = 0 if started else s0 - 1  # only the clip's first frame is not upsampled in time

        def depth_to_space(t: torch.Tensor) -> torch.Tensor:
            t = t.reshape(B, -1, s0, s1, s2, T, H, W)
            return t.permute(0, 1, 5, 2, 6, 3, 7, 4).flatten(6, 7).flatten(4, 5).flatten(2, 3)

        out = depth_to_space(self._conv(u.conv, x, st))[:, :, drop:]
        if u.residual:
            res = depth_to_space(x).repeat(1, (s0 * s1 * s2) // u.upscale_factor, 1, 1, 1)[:, :, drop:]
            out = out + res
        return out


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8. On CUDA the copy lands in pinned memory (a DMA
    transfer, not a staged pageable one) and waits for the current stream only."""
    x = ((frames[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
    if x.device.type != "cuda":
        return x.cpu().numpy()
    out = torch.empty(x.shape, dtype=torch.uint8, pin_memory=True)
    out.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return out.numpy()


def small_vae_config(temporal_stride: int = 4, latent_channels: int = 8, width: int = 16) -> dict:
    """A small LTX-2 VAE (about 1.2M parameters at width 16): 16x spatial, temporal stride 1, 2, 4 or 8."""
    if temporal_stride not in (1, 2, 4, 8):
        raise ValueError(f"temporal_stride must be 1, 2, 4 or 8, got {temporal_stride}")
    n_t = int(math.log2(temporal_stride))
    down = ["spatial"] * (3 - n_t) + ["spatiotemporal"] * n_t
    return dict(
        latent_channels=latent_channels,
        block_out_channels=(width, 2 * width, 4 * width),
        decoder_block_out_channels=(width, 2 * width, 4 * width),
        down_block_types=("LTX2VideoDownBlock3D",) * 3,
        layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False,) * 4,
        downsample_type=tuple(down),
        upsample_type=tuple(reversed(down)),
        upsample_residual=(True,) * 3,
        upsample_factor=(2, 2, 2),
        patch_size=2,
        spatial_compression_ratio=16,
        temporal_compression_ratio=temporal_stride,
    )
