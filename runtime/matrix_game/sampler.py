"""The few-step flow-matching sampler of Matrix-Game 2.0 (upstream's `FlowMatchScheduler` as the
distilled pipeline uses it: shift 5, sigma_min 0, one extra step, 1000 training timesteps).

sigma(s) = shift * s / (1 + (shift - 1) s) over s = linspace(1, 0, 1001)[:-1]; timestep = 1000 sigma.
The distilled step list [1000, 666, 333] is "warped" through that table (index 1000 - step), giving
timesteps [1000, 908.84, 713.98]. A step turns the flow prediction into x0 with the sigma of the
nearest table timestep (in float64); between steps the next input is (1 - sigma') x0 + sigma' n with
FRESH Gaussian noise n. After the last step, one more DiT pass at t = 0 on x0 writes the caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import MatrixGameConfig


@dataclass
class FlowSchedule:
    sigmas: torch.Tensor  # (1000,) float32, descending from 1
    timesteps: torch.Tensor  # (1000,) float32 = sigmas * 1000

    @classmethod
    def create(cls, cfg: MatrixGameConfig) -> FlowSchedule:
        n = cfg.train_timesteps
        s = torch.linspace(1.0, 0.0, n + 1)[:-1]
        sigmas = cfg.timestep_shift * s / (1 + (cfg.timestep_shift - 1) * s)
        return cls(sigmas, sigmas * n)

    def warped_steps(self, steps: tuple[int, ...]) -> torch.Tensor:
        table = torch.cat([self.timesteps, torch.zeros(1)])
        return table[len(self.timesteps) - torch.tensor(steps, dtype=torch.long)]

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma of the table timestep nearest to each t (float32)."""
        idx = torch.argmin((self.timesteps[None, :] - t.flatten().cpu()[:, None]).abs(), dim=1)
        return self.sigmas[idx]

    def to_x0(self, flow: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = x - sigma_t * flow in float64, per latent frame; flow, x (B, C, F, h, w), t (B, F)."""
        sigma = self.sigma_at(t).double().to(x.device).view(t.shape[0], 1, t.shape[1], 1, 1)
        return (x.double() - sigma * flow.double()).to(flow.dtype)

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(1 - sigma_t) x0 + sigma_t noise, per latent frame."""
        sigma = self.sigma_at(t).to(x0.device, x0.dtype).view(t.shape[0], 1, t.shape[1], 1, 1)
        return ((1 - sigma) * x0 + sigma * noise).type_as(noise)
