"""Two options of the world stage's loss (train_world.world_loss).

`--world-lead`: the trained chunks are met after a walk of the model's own. The lead's chunks are sampled
by the model from the player's first image, their true latents are never read, and the loss is the
trained chunks' only; `train_world` draws a lead per step up to `TrainWorldConfig.lead` and builds the
window to hold it.

`--world-motion-weight`: the loss weighted up where the true latents change from the frame before; a
window that does not change is weighted evenly (the plain loss).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from worldwalk.runtime.sana_wm.camera import CameraInputs
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.sampler import FlowSampler, SamplerConfig
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.train import train_world as train_world_module
from worldwalk.runtime.train.train_device import TrainDevice
from worldwalk.runtime.train.train_world import TrainWorldConfig, _cameras, motion_weights, train_world, world_loss
from worldwalk.runtime.worlds.bundled_vae import FrameVAEConfig
from worldwalk.runtime.worlds.bundled_world import BundledConfig, empty_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHUNKS = 3  # the first (with the image latent) and two reading the cache


def _cfg() -> BundledConfig:
    """32x32 video, 4x4 latents of 8 channels, a tiny transformer, one latent frame a chunk, a 2-step sampler."""
    vae = FrameVAEConfig(width=32, height=32, latent_channels=8, channels=(8, 16))
    t = SanaWMConfig.tiny(in_channels=8, chunk_plucker_channels=6 * vae.temporal_stride, caption_tokens=1,
                          chunk_latent_frames=1)
    return BundledConfig(vae=vae, transformer=t, sampler=SamplerConfig(timesteps=(1000, 500, 0)))


def _data(cfg: BundledConfig, n: int = 2) -> dict[str, np.ndarray]:
    """Encoded windows of CHUNKS chunks, the camera walking forward."""
    g = np.random.default_rng(0)
    frames = 1 + cfg.stride * cfg.chunk_latents * CHUNKS
    h, w = cfg.vae.latent_hw
    poses = np.tile(np.eye(4), (n, frames, 1, 1))
    poses[:, :, 2, 3] = -0.1 * np.arange(frames)
    f = 16 / math.tan(math.radians(35.0))
    intr = np.tile(np.array([[f, 0, 16], [0, f, 16], [0, 0, 1]]), (n, frames, 1, 1))
    z = g.standard_normal((n, cfg.transformer.in_channels, 1 + cfg.chunk_latents * CHUNKS, h, w))
    return {"latents": z.astype(np.float32), "poses": poses, "intrinsics": intr}


@pytest.fixture
def batch():
    cfg, data = _cfg(), _data(_cfg())
    torch.manual_seed(0)
    model = SanaWMStreamingTransformer(cfg.transformer).train()
    with torch.no_grad():  # the zero-initialised output and camera projections made live: every input counts
        for p in model.parameters():
            if torch.count_nonzero(p) == 0 and p.dim() > 1:
                p.normal_(0, 0.02)
    rng = np.random.default_rng(1)
    cams = [_cameras(data["poses"][i], data["intrinsics"][i], CHUNKS, cfg, TrainWorldConfig(augment=0.0), rng)
            for i in range(2)]
    cams = [CameraInputs(torch.cat([c[k].conditions for c in cams]), torch.cat([c[k].plucker for c in cams]))
            for k in range(CHUNKS)]
    sigmas = torch.tensor([[0.9, 0.5], [0.7, 0.3], [0.5, 0.6]])  # (chunks, B)
    text, mask = empty_text(cfg, 2)
    return cfg, model, torch.from_numpy(data["latents"]), cams, sigmas, text, mask


def _loss(batch, z: torch.Tensor, lead: int, motion_weight: float = 0.0) -> torch.Tensor:
    cfg, model, _, cams, sigmas, text, mask = batch
    torch.manual_seed(5)  # the same noise for the lead's samples and the trained chunks' every call
    return world_loss(model, FlowSampler(cfg.sampler), z, cams, sigmas, text, mask, cfg.chunk_latents,
                      TrainDevice(), lead=lead, motion_weight=motion_weight)


def test_the_lead_is_the_models_own_walk_from_the_first_image(batch):
    cfg, model, z = batch[:3]
    L = cfg.chunk_latents
    lead = CHUNKS - 1  # chunks 0 and 1 walked by the model, chunk 2 trained
    base = _loss(batch, z, lead)
    assert torch.isfinite(base) and torch.equal(base, _loss(batch, z, lead))  # seeded: the same walk

    # the lead never reads the truth of its chunks (not as context, not as a target) ...
    other = z.clone()
    other[:, :, 1 : 1 + L * lead] += 3.0 * torch.randn_like(other[:, :, 1 : 1 + L * lead])
    assert torch.equal(_loss(batch, other, lead), base)
    # ... where the teacher-forced cache does (so the check above can fail)
    assert not torch.allclose(_loss(batch, other, 0), _loss(batch, z, 0))
    # it walks from the player's first image, and the trained chunk's truth is the target
    moved = z.clone()
    moved[:, :, :1] += 1.0
    assert not torch.allclose(_loss(batch, moved, lead), base)
    target = z.clone()
    target[:, :, 1 + L * lead :] += 1.0
    assert not torch.allclose(_loss(batch, target, lead), base)

    # gradients reach the weights through the trained chunk alone
    model.zero_grad(set_to_none=True)
    base = _loss(batch, z, lead)
    base.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_train_world_draws_a_lead_each_step_within_the_window(tmp_path, monkeypatch):
    cfg, data = _cfg(), _data(_cfg())
    seen: list[tuple[int, int, int]] = []

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003
        call = inspect.signature(world_loss).bind(*args, **kwargs).arguments
        seen.append((call["lead"], len(call["cams"]), call["z"].shape[2]))
        return world_loss(*args, **kwargs)

    monkeypatch.setattr(train_world_module, "world_loss", recorded)
    tcfg = TrainWorldConfig(steps=8, batch=2, chunks=0, lead=CHUNKS - 1, warmup=1, ckpt_every=100)
    train_world(tcfg, data, tmp_path / "work", tmp_path / "world.safetensors", cfg, progress=False)
    assert len(seen) == 8
    for lead, chunks, frames in seen:
        assert 0 <= lead <= CHUNKS - 1 and chunks == lead + 1  # the lead's chunks, then the one trained
        assert frames == 1 + cfg.chunk_latents * chunks  # the batch holds just those chunks
    assert len({lead for lead, _, _ in seen}) > 1, f"every step drew the same lead: {seen}"


def test_motion_weights_single_out_what_changes():
    z = torch.zeros(2, 8, 4, 3, 5)  # (B, C, T, h, w): nothing changes but one pixel of sample 0 in frame 2
    z[0, :, 2:, 1, 3] = 2.0
    z[1] = torch.arange(4.0).view(1, 4, 1, 1)  # sample 1: every pixel changes alike
    w = motion_weights(z, 1, 4, a=3.0)
    assert w.shape == (2, 1, 3, 3, 5)
    n = 3 * 3 * 5  # the sample's pixels over its frames: the one that changed holds all of the change
    assert w[0, 0, 1, 1, 3] == pytest.approx(1 + 3.0 * n)
    w[0, 0, 1, 1, 3] = 1.0
    assert torch.equal(w[0], torch.ones_like(w[0]))  # the rest (and the frame after the change) weigh 1
    assert torch.allclose(w[1], torch.full_like(w[1], 4.0))  # even change: even weights, 1 + a


def test_the_motion_weight_is_the_plain_loss_on_a_still_window_and_not_on_a_moving_one(batch):
    z = batch[2]
    still = z[:, :, :1].expand_as(z).contiguous()  # every latent frame the first
    assert torch.allclose(_loss(batch, still, 0, motion_weight=3.0), _loss(batch, still, 0), rtol=1e-6)
    assert not torch.allclose(_loss(batch, z, 0, motion_weight=3.0), _loss(batch, z, 0), rtol=1e-3)
