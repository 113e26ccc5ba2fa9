"""SANA-WM VAE wrapper: chunked causal decode equals one-shot causal decode; strides; image encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLLTX2Video

from worldwalk.runtime.sana_wm.vae import DecodeState, SanaWMVAE, small_vae_config, to_uint8

TOL = 1e-5  # max abs difference on the [-1, 1] output


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("stride", [4, 1])
def test_chunked_decode_equals_one_shot(stride):
    torch.manual_seed(0)
    vae = SanaWMVAE(AutoencoderKLLTX2Video(**small_vae_config(stride)))
    assert (vae.temporal_stride, vae.spatial_stride) == (stride, 16)
    z = torch.randn(1, 8, 1 + 3 * 3, 3, 4)  # first chunk: 1 + 3 latents, then two chunks of 3
    whole = vae.decode_full(z)
    state, parts = DecodeState(), []
    for a, b in [(0, 4), (4, 7), (7, 10)]:
        out, state = vae.decode_chunk(z[:, :, a:b], state)
        assert out.shape[2] == vae.frames_for(b - a, first=a == 0)
        parts.append(out)
    chunked = torch.cat(parts, 2)
    assert chunked.shape == whole.shape == (1, 3, 1 + 9 * stride, 48, 64)
    err = (chunked - whole).abs().max().item()
    print(f"stride {stride}: chunked vs one-shot causal decode, max abs diff {err:.1e} (tolerance {TOL})")
    assert err <= TOL
    # without the carried state the second chunk would differ: the state matters
    fresh, _ = vae.decode_chunk(z[:, :, 4:7], DecodeState(started=True))
    assert (fresh - parts[1]).abs().max() > 1e-3


def test_encode_image_and_uint8():
    torch.manual_seed(0)
    vae = SanaWMVAE(AutoencoderKLLTX2Video(**small_vae_config(4)))
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    z = vae.encode_image(img)
    assert z.shape == (1, 8, 1, 3, 4)
    frames = to_uint8(vae.decode_chunk(z, DecodeState())[0])
    assert frames.shape == (1, 48, 64, 3) and frames.dtype == np.uint8
