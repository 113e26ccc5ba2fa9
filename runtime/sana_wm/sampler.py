"""The distilled few-step flow sampler of SANA-WM (4 steps, no guidance).

Flow matching with velocity prediction: x_sigma = (1 - sigma) x0 + sigma * noise, the model predicts
v = noise - x0, so x0 = x_sigma - sigma * v. The distilled student runs on a fixed sigma list,
`timesteps / 1000` with timesteps [1000, 960, 889, 727, 0] by default, taken verbatim (no shift). The
model sees integer timesteps (float32 sigma * 1000, truncated), as the official code feeds them.

Between steps (`renoise=True`, the default): x0 = x - sigma v, then x = (1 - sigma') x0 + sigma' eps with
fresh noise eps from the session generator. `renoise=False` takes the deterministic Euler step
x += (sigma' - sigma) v instead, which is what the official streaming script's scheduler does; both
land on x0 at the last step. Frames given as a clean prefix (the first image latent) are held at t = 0
and restored after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B,C,T,H,W), t (B,T)) -> v


@dataclass
class SamplerConfig:
    timesteps: tuple[int, ...] = (1000, 960, 889, 727, 0)
    renoise: bool = True

    def __post_init__(self) -> None:
        ts = list(self.timesteps)
        if len(ts) < 2 or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
            raise ValueError(f"timesteps must decrease strictly and end with 0, got {ts}")


class FlowSampler:
    def __init__(self, cfg: SamplerConfig | None = None) -> None:
        self.cfg = cfg or SamplerConfig()
        self.sigmas = [float(np.float32(t) / np.float32(1000.0)) for t in self.cfg.timesteps]

    @staticmethod
    def model_timestep(sigma: float) -> float:
        return float(int(np.float32(sigma) * np.float32(1000.0)))

    def noise(self, shape: tuple[int, ...], generator: torch.Generator, device, dtype) -> torch.Tensor:
        """Gaussian noise from the session's generator, drawn on the generator's device (the model's, on a
        GPU: no host copy) in fp32, then cast to the model's dtype."""
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device).to(device, dtype)

    def denoise(
        self,
        velocity: Velocity,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        clean_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate latents (B, C, T, H, W) for one chunk; a clean prefix (B, C, P, H, W) is prepended.

        Returns the prefix and the generated frames together, (B, C, P + T, H, W).
        """
        B = shape[0]
        P = 0 if clean_prefix is None else clean_prefix.shape[2]
        # the state between steps stays fp32 (x0 = x - sigma v would round to bf16 at every step); only the
        # model's input is cast to its dtype
        f32 = torch.float32
        x = self.noise(shape, generator, device, f32) * self.sigmas[0]
        if clean_prefix is not None:
            prefix = clean_prefix.to(device, dtype).to(f32)  # the model's own latent, as it would read it
            x = torch.cat([prefix, x], 2)
        frames = x.shape[2]
        for i, sigma in enumerate(self.sigmas[:-1]):
            nxt = self.sigmas[i + 1]
            t = torch.full((B, frames), self.model_timestep(sigma), device=device)
            t[:, :P] = 0.0
            v = velocity(x.to(dtype), t).to(f32)
            if nxt == 0.0:
                x = x - sigma * v
            elif self.cfg.renoise:
                x0 = x - sigma * v
                x = (1.0 - nxt) * x0 + nxt * self.noise(tuple(x.shape), generator, device, f32)
            else:
                x = x + (nxt - sigma) * v
            if clean_prefix is not None:
                x[:, :, :P] = prefix
        return x.to(dtype)
