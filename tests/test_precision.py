"""What stays fp32 in a bf16 SANA-WM: the GDN decay's A_log and dt_bias (A = exp(A_log) in bf16 is off by up to
0.8%, shifting every frame's decay) and the sampler's state between steps (only the model's input is cast)."""

from __future__ import annotations

import torch

from worldwalk.runtime.sana_wm.layers import SelfAttentionParams
from worldwalk.runtime.sana_wm.sampler import FlowSampler, SamplerConfig

from .builders import tiny_transformer


def _gates(tr) -> list[torch.Tensor]:
    return [getattr(m, n) for m in tr.modules() if isinstance(m, SelfAttentionParams) for n in ("A_log", "dt_bias")]


def test_a_bf16_model_keeps_its_decay_parameters_in_fp32():
    tr = tiny_transformer()
    before = [p.detach().clone() for p in _gates(tr)]
    tr = tr.to(torch.bfloat16)
    assert tr.x_embedder.proj.weight.dtype == torch.bfloat16  # the model is bf16...
    for p, b in zip(_gates(tr), before, strict=True):
        assert p.dtype == torch.float32 and torch.equal(p, b)  # ...its decay parameters are not, and lost nothing
    assert isinstance(_gates(tr)[0], torch.nn.Parameter)
    tr.half()
    assert all(p.dtype == torch.float32 for p in _gates(tr))
    meta = tiny_transformer().to("meta").to(torch.bfloat16).to_empty(device="cpu")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in _gates(meta))


def test_the_sampler_keeps_its_state_in_fp32():
    """A bf16 model's velocities through the sampler: the latents are those of an fp64 sampler whose model sees
    and answers in bf16 alike, rounded to bf16 once at the end (not at every step)."""
    shape = (1, 4, 3, 5, 6)
    target = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def velocity(x, t):  # the exact flow velocity towards `target`, as the model's dtype returns it
        sigma = t[0, -1].item() / 1000.0
        return ((x.double() - target) / sigma).to(x.dtype) if sigma > 0 else torch.zeros_like(x)

    for renoise in (False, True):
        sampler = FlowSampler(SamplerConfig(timesteps=(1000, 960, 889, 727, 0), renoise=renoise))
        as_bf16 = lambda x, t: velocity(x.to(torch.bfloat16), t).double()  # noqa: E731
        ref = sampler.denoise(as_bf16, shape, torch.Generator().manual_seed(1), "cpu", torch.float64)
        got = sampler.denoise(velocity, shape, torch.Generator().manual_seed(1), "cpu", torch.bfloat16)
        assert got.dtype == torch.bfloat16
        err = (got.double() - ref).abs().max().item()
        ulp = (ref.abs().max().item() * 2**-8)  # one bf16 rounding of the result
        assert err <= ulp, (renoise, err, ulp)
