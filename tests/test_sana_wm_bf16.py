"""SANA-WM in bfloat16 on the CPU: the GPU's precision, so a dtype or device mistake shows here first.

The world runs as the CUDA path runs it (`SanaWMRunConfig(dtype="bfloat16")`: bf16 weights and
activations, GDN scans and RoPE in fp32 inside, softmax K/V in bf16). Tolerances, stated per check:
- streaming equals recompute: the cached stream and the whole-history recompute stream, both bf16,
  agree within BF16_STREAM_TOL (max abs error / max abs value of the chunk's latents); in fp32 the
  same pair agrees within 1e-4 (test_sana_wm_model / test_sana_wm_stream);
- bf16 against fp32 (same weights): chunk latents within BF16_VS_FP32_TOL relative, so bf16 is
  rounding, not a different computation;
- snapshot/restore and the decode overlap: bit-identical frames, as in fp32;
- the VAE: a chunked bf16 decode equals the one-shot bf16 decode within VAE_BF16_TOL (abs, on [-1, 1]),
  and the bf16 decode equals the fp32 decode within VAE_BF16_VS_FP32_TOL.
Configs are tiny: bf16 matmuls are several times slower than fp32 on this CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLLTX2Video

from worldwalk.runtime.sana_wm import SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.model import SanaWM
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.vae import DecodeState, SanaWMVAE, small_vae_config

from .builders import CHUNK, STRIDE, tiny_world
from .builders import LATENT_H as H
from .builders import LATENT_W as W
from .builders import tiny_cameras as _cameras
from .builders import tiny_transformer as _model

BF16_STREAM_TOL = 1e-3  # measured: 0 (the same bf16 ops in the same order)
BF16_VS_FP32_TOL = 2e-2  # measured: about 5e-3 on every chunk
VAE_BF16_TOL = 1e-3  # measured: 0
VAE_BF16_VS_FP32_TOL = 5e-2  # measured: about 2e-2 (bf16 keeps 8 bits of mantissa)
CHUNKS = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stream_chunks(m: SanaWMStreamingTransformer, use_cache: bool, chunks: int = CHUNKS) -> list[torch.Tensor]:
    dtype = m.dtype
    cams = _cameras(chunks)
    text = torch.randn(1, 6, m.cfg.caption_channels, generator=torch.Generator().manual_seed(3)).to(dtype)
    prefix = torch.randn(1, m.cfg.in_channels, 1, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    stream = LatentRollout(m, FlowSampler(), use_cache=use_cache)
    stream.reset(text, torch.ones(1, 6), seed=7)
    shape = (1, m.cfg.in_channels, CHUNK, H, W)
    out = [stream.step(cams[c], shape, prefix if c == 0 else None) for c in range(chunks)]
    for z in out:
        assert z.dtype == dtype and torch.isfinite(z).all()
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()


def test_bf16_stream_equals_recompute_and_is_fp32_rounded():
    m32 = _model()
    ref32 = _stream_chunks(m32, use_cache=True)
    m16 = _model().to(torch.bfloat16)
    assert m16.dtype == torch.bfloat16
    cached = _stream_chunks(m16, use_cache=True)
    recompute = _stream_chunks(m16, use_cache=False)
    errs = [_rel(c, r) for c, r in zip(cached, recompute, strict=True)]
    vs32 = [_rel(c, r) for c, r in zip(cached, ref32, strict=True)]
    print("bf16 cached vs bf16 recompute, per chunk:", ", ".join(f"{e:.1e}" for e in errs))
    print("bf16 cached vs fp32 cached, per chunk:", ", ".join(f"{e:.1e}" for e in vs32))
    assert max(errs) < BF16_STREAM_TOL
    assert max(vs32) < BF16_VS_FP32_TOL


def _world(dtype: str = "bfloat16") -> SanaWM:
    return tiny_world(softmax_bf16=True, vae_width=16, dtype=dtype)


def _inputs(world: SanaWM, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = world.spec.chunk_frames(k)
    start = 0 if k == 0 else world.spec.first_chunk_frames + (k - 1) * world.spec.frames_per_chunk
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.05 * (start + np.arange(n))
    f = 32 / np.tan(np.radians(35.0))
    return poses, np.tile(np.array([[f, 0, 32], [0, f, 24], [0, 0, 1]]), (n, 1, 1))


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)


def test_bf16_world_snapshot_restore_and_decode_overlap_are_exact():
    seq = _world()
    assert seq.transformer.dtype == torch.bfloat16 and seq.vae.dtype == torch.bfloat16
    seq.reset(_image(), None, seed=4)
    expected = [seq.generate_chunk(*_inputs(seq, k)).frames for k in range(3)]
    # snapshot/restore: the chunk after a restore is bit-identical
    snap = seq.snapshot()
    a = seq.generate_chunk(*_inputs(seq, 3)).frames
    seq.restore(snap)
    assert np.array_equal(a, seq.generate_chunk(*_inputs(seq, 3)).frames)
    # the decode of chunk k overlapping the denoise of chunk k+1 changes nothing
    pipe = _world()
    pipe.reset(_image(), None, seed=4)
    pending = [pipe.submit(*_inputs(pipe, k)) for k in range(3)]
    for e, p in zip(expected, pending, strict=True):
        assert np.array_equal(e, p.result().frames)
    # and bf16 frames are fp32 frames, rounded: same picture within a few levels on average
    f32 = _world("float32")
    f32.reset(_image(), None, seed=4)
    frames32 = [f32.generate_chunk(*_inputs(f32, k)).frames for k in range(3)]
    diff = np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(expected, frames32, strict=True)])
    print(f"bf16 vs fp32 world frames: mean abs difference {diff:.2f} levels of 255")
    assert diff < 6.0
    for w in (seq, pipe, f32):
        w.close()


def test_bf16_vae_chunked_decode_equals_one_shot_and_fp32():
    torch.manual_seed(0)
    module = AutoencoderKLLTX2Video(**small_vae_config(STRIDE))
    z = torch.randn(1, 8, 1 + 3 * 3, 3, 4)
    ref32 = SanaWMVAE(module).decode_full(z)
    vae = SanaWMVAE(module.to(torch.bfloat16))
    whole = vae.decode_full(z)
    assert whole.dtype == torch.bfloat16
    state, parts = DecodeState(), []
    for a, b in [(0, 4), (4, 7), (7, 10)]:
        out, state = vae.decode_chunk(z[:, :, a:b], state)
        assert out.dtype == torch.bfloat16
        parts.append(out)
    chunked = torch.cat(parts, 2).float()
    err = (chunked - whole.float()).abs().max().item()
    err32 = (chunked - ref32).abs().max().item()
    print(f"bf16 VAE: chunked vs one-shot {err:.1e} (tol {VAE_BF16_TOL}), vs fp32 {err32:.1e} "
          f"(tol {VAE_BF16_VS_FP32_TOL})")
    assert err <= VAE_BF16_TOL
    assert err32 <= VAE_BF16_VS_FP32_TOL
