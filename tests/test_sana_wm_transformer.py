"""SANA-WM streaming transformer: parity with diffusers, full-config layout, streaming cache behaviour."""

from __future__ import annotations

import diffusers.models.transformers.transformer_sana_wm as diffusers_sana_wm
import numpy as np
import pytest
import torch
from diffusers import SanaWMTransformer3DModel

from worldwalk.runtime.sana_wm import SanaWMConfig, SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.camera import CameraInputs, build_camera_inputs

H, W = 4, 6  # latent token grid of the tests


pytestmark = pytest.mark.usefixtures("one_torch_thread")


STRIDE = 8


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _trajectory(frames: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    poses, Ks = {}, {}
    for f in range(frames):
        P = np.eye(4)
        P[:3, :3] = _rot_y(0.03 * f)
        P[:3, 3] = [0.02 * f, 0.01 * np.sin(f), 0.05 * f]
        poses[f] = P
        Ks[f] = np.array([[60.0, 0, 48], [0, 60.0, 32], [0, 0, 1]])
    return poses, Ks


def _camera(latents: list[int], poses, Ks) -> CameraInputs:
    return build_camera_inputs(poses, Ks, latents, STRIDE, (H * 16, W * 16), (H, W))


def _randomised(cfg: SanaWMConfig, seed: int = 0) -> SanaWMTransformer3DModel:
    """A diffusers model with every parameter random (zero-initialised branches switched on)."""
    torch.manual_seed(seed)
    ref = SanaWMTransformer3DModel(**cfg.to_diffusers()).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.abs().sum() == 0 or ("norm" in name and name.endswith("weight")):
                p.normal_(0.0, 0.2 if p.ndim < 2 else p.shape[-1] ** -0.5)
    return ref


def _text(cfg: SanaWMConfig, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, length)
    mask[:, length - 2 :] = 0
    return torch.randn(1, length, cfg.caption_channels, generator=g), mask


def test_first_chunk_matches_diffusers(monkeypatch):
    cfg = SanaWMConfig.tiny()
    ref = _randomised(cfg)
    ours = SanaWMStreamingTransformer(cfg).eval()
    ours.load_state_dict(ref.state_dict())
    poses, Ks = _trajectory(1 + 3 * STRIDE)
    cam = _camera([0, 1, 2, 3], poses, Ks)
    x = torch.randn(1, cfg.in_channels, 4, H, W, generator=torch.Generator().manual_seed(2))
    ts = torch.tensor([[0.0, 889.99, 889.99, 889.99]])  # fractional on purpose: both truncate to integers
    text, mask = _text(cfg)
    # The official streaming model does not rescale the UCPE camera branch to its pre-UCPE RMS (see gdn.py).
    monkeypatch.setattr(diffusers_sana_wm, "_downscale_to_reference_rms", lambda ref_, tr, eps=1e-6: tr)
    with torch.no_grad():
        want = ref(
            x,
            ts[:, None],
            text[:, None],
            encoder_attention_mask=mask,
            camera_conditions=cam.conditions,
            chunk_plucker=cam.plucker,
        ).sample
        got, _ = ours(x, ts, text, mask, cam)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    print(f"max |ours - diffusers| / max |diffusers| = {rel:.2e}")
    assert rel <= 1e-4


def test_full_config_layout_on_meta_device():
    cfg = SanaWMConfig()
    with torch.device("meta"):
        ours = SanaWMStreamingTransformer(cfg)
        ref = SanaWMTransformer3DModel()
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k != "pos_embed"}
    assert a == b
    n = sum(p.numel() for p in ours.parameters())
    print(f"full SANA-WM config: {n / 1e9:.3f}B parameters, {len(a)} state-dict entries")
    assert 2.4e9 < n < 2.8e9
