"""Acceleration backends against eager PyTorch.

Tolerances (fp32 on the CPU):
- ONNX chunk step over 5 chunks with the cache carried through the graph: velocity and every flat cache
  tensor within 1e-4 relative to the tensor's max magnitude (seen: about 1e-6);
- ONNX VAE decoder step over 5 chunks with the conv tails carried: within 1e-4 (seen: about 1e-6);
- whole worlds (4-step sampler with re-noising + cache write + decode), frames within 2/255 per pixel.
torch.compile: by default only the VAE decoder step is compiled here (inductor's cold C++ build costs
about 30 s for it on 2 cores); the whole tiny world under torch.compile (three graphs, about 3 minutes cold)
runs with WORLDWALK_SLOW_TESTS=1, and the bench measures the bundled-size model.
TensorRT and CUDA graphs run only where CUDA (and the tensorrt package) exist.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from worldwalk.runtime.accel import apply as accel
from worldwalk.runtime.accel.apply import AcceleratedStep, AcceleratedVAE, AccelUnavailable, apply_accel, engine
from worldwalk.runtime.accel.onnx_export import CacheLayout
from worldwalk.runtime.bench import accel_suite
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.vae import DecodeState, SanaWMVAE, small_vae_config

from .builders import CHUNK
from .builders import LATENT_H as H
from .builders import LATENT_W as W
from .builders import tiny_cameras as _cameras
from .builders import tiny_transformer as _transformer
from .builders import tiny_world as _tiny_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHUNKS = 5
CUDA = torch.cuda.is_available()
SLOW = os.environ.get("WORLDWALK_SLOW_TESTS", "") not in ("", "0")


def _has_ort() -> bool:
    ok, _ = accel.check("onnx", "cpu")
    return ok


needs_ort = pytest.mark.skipif(not _has_ort(), reason="needs onnx and onnxruntime: pip install 'worldwalk[onnx]'")


def _has_trt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> float:
    """Max abs difference relative to the reference's max magnitude."""
    err = (a.float() - b.float()).abs().max().item() / max(b.float().abs().max().item(), 1e-6)
    assert err < rtol, f"relative error {err:.2e} >= {rtol:.0e}"
    return err


def _run_stream(tr, backend, chunks, home: dict[int, float] | None = None):
    """`home`: chunk -> its camera's `home` (SanaWMConfig.home_radius), 0 for the chunks not named."""
    dev = next(tr.parameters()).device  # the prompt, its mask and the image where the model is (a CUDA model too)
    stream = LatentRollout(tr, FlowSampler())
    stream.backend = backend
    text = torch.randn(1, tr.cfg.caption_tokens, tr.cfg.caption_channels, generator=torch.Generator().manual_seed(1))
    stream.reset(text.to(dev), torch.ones(1, tr.cfg.caption_tokens, dtype=torch.bool, device=dev), seed=3)
    image = torch.randn(1, tr.cfg.in_channels, 1, H, W, generator=torch.Generator().manual_seed(2)).to(dev)
    cams = [dataclasses.replace(c, home=(home or {}).get(k, 0.0)) for k, c in enumerate(_cameras(chunks))]
    out = [stream.step(cam, (1, tr.cfg.in_channels, CHUNK, H, W), image if k == 0 else None)
           for k, cam in enumerate(cams)]
    return out, stream.cache


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("kv_window", [2, 3, 4])
def test_onnx_chunk_step_matches_eager_over_five_chunks(tmp_path, kv_window):
    tr = _transformer(kv_window=kv_window)
    ref, ref_cache = _run_stream(tr, None, CHUNKS)
    step = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path)
    got, cache = _run_stream(tr, step, CHUNKS)
    assert step.counts == {"eager": 5, "accel": 5 * (CHUNKS - 1)}  # chunk 0 eager, the rest through ONNX
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref, strict=True):
        _close(a, b, 1e-4)
    # the carried cache itself, flattened (softmax window padded + masked) on both sides
    frames = CHUNK * (CHUNKS - 1) + CHUNK + 1
    assert cache.frames == ref_cache.frames == frames and cache.chunks == ref_cache.chunks == CHUNKS
    lay = next(iter(step._layouts.values()))
    (fa, ma), (fb, mb) = lay.flatten(cache), lay.flatten(ref_cache)
    assert torch.equal(ma, mb) and (ma == 0).all()  # window full after 5 chunks
    for name, a, b in zip(lay.names, fa, fb, strict=True):
        assert a.shape == b.shape, name
        _close(a, b, 1e-4)
    # one graph for every chunk >= 1, its reads and its write (the weights once, in one session)
    assert len(list(tmp_path.glob("chunk-*/model.onnx"))) == 1
    # exported files are reused: a second backend on the same weights exports nothing
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    again, _ = _run_stream(tr, AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path), 2)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    _close(again[1], ref[1], 1e-4)


@needs_ort
@pytest.mark.slow
def test_chunks_near_and_at_the_first_view_match_eager_through_the_mask(tmp_path):
    """A chunk near home (its recent chunks faded) and one at home (the sink alone) read the window through
    the CPU graph's mask as the eager attention does; with full windows only (a GPU's graphs, unmasked) they
    run eagerly instead."""
    tr = _transformer(kv_window=3)
    home = {2: 0.5, 3: 1.0}
    ref, _ = _run_stream(tr, None, CHUNKS, home)
    away, _ = _run_stream(tr, None, CHUNKS)
    for k in home:
        assert (away[k] - ref[k]).abs().max() > 1e-5  # the chunk did read otherwise near home
    for full_only, eager in ((False, (0,)), (True, (0, 1, 2, 3))):
        step = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path / str(full_only))
        step.full_window_only = full_only
        got, _ = _run_stream(tr, step, CHUNKS, home)
        assert step.counts == {"eager": 5 * len(eager), "accel": 5 * (CHUNKS - len(eager))}, full_only
        for a, b in zip(got, ref, strict=True):
            _close(a, b, 1e-4)


def test_cache_layout_masks_unfilled_window():
    tr = _transformer(kv_window=3)
    _, cache = _run_stream(tr, None, 2)  # sink + one recent chunk of two slots
    lay = CacheLayout.from_cache(cache, tr, CHUNK * H * W)
    flat, mask = lay.flatten(cache)
    n0, nc = (1 + CHUNK) * H * W, CHUNK * H * W
    assert lay.n_max == n0 + 2 * nc and mask.shape == (lay.n_max,)
    assert (mask[:n0] == 0).all() and torch.isinf(mask[n0 : n0 + nc]).all() and (mask[n0 + nc :] == 0).all()
    # near the first view the filled recent slots carry the home view's fade, at it they are masked out
    for home, bias in ((0.5, 2 * math.log(0.5)), (1.0, float("-inf"))):
        _, near = lay.flatten(cache, home)
        assert (near[:n0] == 0).all() and torch.isinf(near[n0 : n0 + nc]).all()
        assert torch.equal(near[n0 + nc :], torch.full((nc,), bias)), home
    back = lay.unflatten(flat, cache, 0)  # same flat tensors -> same typed cache (one more chunk counted)
    for b0, b1 in zip(cache.blocks, back.blocks, strict=True):
        if hasattr(b0, "recent"):
            assert len(b1.recent) == 2  # the write path appends; here the unflatten sees a full window
        else:
            assert torch.equal(b0.state, b1.state)


def _vae() -> SanaWMVAE:
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    return SanaWMVAE(AutoencoderKLLTX2Video(**small_vae_config(temporal_stride=4, latent_channels=8, width=8)))


@needs_ort
def test_onnx_vae_decoder_matches_eager_over_five_chunks(tmp_path):
    vae = _vae()
    acc = AcceleratedVAE(vae, engine("onnx", torch.device("cpu")), tmp_path)
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(1, 8, 1 + CHUNK if k == 0 else CHUNK, 4, 4, generator=g) for k in range(CHUNKS)]
    sa, sb = DecodeState(), DecodeState()
    for z in zs:
        a, sa = acc.decode_chunk(z, sa)
        b, sb = vae.decode_chunk(z, sb)
        assert a.shape == b.shape
        _close(a, b, 1e-4)
        assert list(sa.tails) == list(sb.tails)
        for k in sb.tails:
            _close(sa.tails[k], sb.tails[k], 1e-4)
    assert acc.counts == {"eager": 1, "accel": CHUNKS - 1}
    assert acc.temporal_stride == vae.temporal_stride  # everything else passes through


def _frames(world, chunks: int = 4) -> list[np.ndarray]:
    frames, _ = accel_suite.walk_chunks(world, chunks)
    return frames


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def bench_reference():
    world, label = accel_suite.bench_world()
    return _frames(world, 3), label


@pytest.fixture(scope="module")
def shared_exports(tmp_path_factory):
    """One export folder for the bundled-size tests: auto reuses what onnx exported (the disk cache)."""
    return tmp_path_factory.mktemp("onnx")


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("choice", ["onnx", "auto"])  # flat: the modules onnx exports, checked on the tiny world
def test_bundled_size_world_frames_match_eager(bench_reference, choice, shared_exports):
    ref, label = bench_reference
    world, _ = accel_suite.bench_world()
    assert apply_accel(world, choice, shared_exports) == (accel.CPU_DEFAULT if choice == "auto" else choice)
    got = _frames(world, 3)  # chunk 0 eager, chunk 1 builds the graphs, chunk 2 runs on what chunk 1 left
    s = accel.summary(world)
    passes = len(world.rollout.sampler.sigmas)  # the sampler's steps and the cache write, per chunk
    assert s["step"]["accel"] == passes * 2 and s["vae"]["accel"] == 2 and not s["step"]["failed"]
    assert _max_diff(got, ref) <= 2, label


@needs_ort
def test_onnx_refuses_bf16_softmax_and_auto_falls_back(tmp_path):
    world = _tiny_world(softmax_bf16=True)
    apply_accel(world, "onnx", tmp_path)
    with pytest.raises(AccelUnavailable, match="bf16"):
        accel_suite.walk_chunks(world, 2)
    apply_accel(world, "auto", tmp_path)
    accel_suite.walk_chunks(world, 2)
    assert "bf16" in accel.summary(world)["step"]["failed"]  # ran on, eagerly


def _compile_ok() -> None:
    ok, why = accel.check("compile", "cpu")
    if not ok:
        pytest.skip(why)


@pytest.mark.slow
def test_compile_vae_decoder_keeps_state_across_chunks(tmp_path):
    """The known torch.compile pitfall (a compiled causal decoder blanking later chunks) cannot happen: the
    compiled decoder step takes and returns its conv tails."""
    _compile_ok()
    vae = _vae()
    acc = AcceleratedVAE(vae, engine("compile", torch.device("cpu")), tmp_path)
    g = torch.Generator().manual_seed(0)
    sa, sb = DecodeState(), DecodeState()
    for k in range(4):
        z = torch.randn(1, 8, 1 + CHUNK if k == 0 else CHUNK, 4, 4, generator=g)
        (a, sa), (b, sb) = acc.decode_chunk(z, sa), vae.decode_chunk(z, sb)
        _close(a, b, 1e-4)
        assert a.float().std() > 0.01  # not blank
    assert acc.counts == {"eager": 1, "accel": 3}


@pytest.mark.skipif(not SLOW, reason="compiles 3 graphs (about 3 min cold on 2 cores): set WORLDWALK_SLOW_TESTS=1")
def test_compile_tiny_world_frames_match_eager(tmp_path):
    _compile_ok()
    ref = _frames(_tiny_world(), 3)
    world = _tiny_world()
    assert apply_accel(world, "compile", tmp_path) == "compile"
    got = _frames(world, 3)
    s = accel.summary(world)
    assert s["step"]["accel"] == 10 and s["vae"]["accel"] == 2
    assert _max_diff(got, ref) <= 2


@needs_ort
def test_choices_and_messages():
    assert accel.resolve("none", "cpu") == "none"
    assert accel.resolve("auto", "cpu") == accel.CPU_DEFAULT  # onnx and onnxruntime are installed here
    if not CUDA:
        with pytest.raises(AccelUnavailable, match="tensorrt|TensorRT"):
            accel.resolve("tensorrt", "cpu")
        with pytest.raises(AccelUnavailable, match="CUDA"):
            accel.resolve("cudagraph", "cpu")
    with pytest.raises(ValueError, match="unknown --accel"):
        accel.resolve("fast", "cpu")

    class NoStream:  # e.g. the reference world: nothing to accelerate
        pass

    assert apply_accel(NoStream(), "auto") == "none"
    world = _tiny_world()
    assert apply_accel(world, "flat") == "flat"
    assert isinstance(world.vae, AcceleratedVAE) and world.rollout.backend is not None
    accel.warm_up(world)
    assert accel.summary(world)["step"]["accel"] == 5  # chunk 1 ran through the fixed-shape step
    assert apply_accel(world, "none") == "none"  # undo
    assert isinstance(world.vae, SanaWMVAE) and world.rollout.backend is None


def test_snapshot_restore_through_backend(tmp_path):
    world = _tiny_world()
    apply_accel(world, "flat", tmp_path)
    accel_suite.walk_chunks(world, 2)
    snap = world.snapshot()
    spec = world.spec
    from worldwalk.controls import intrinsics_from_fov

    K = np.broadcast_to(intrinsics_from_fov(spec.width, spec.height), (spec.frames_per_chunk, 3, 3)).copy()
    poses = np.broadcast_to(np.eye(4), (spec.frames_per_chunk, 4, 4)).copy()
    a = world.generate_chunk(poses, K).frames
    world.restore(snap)
    b = world.generate_chunk(poses, K).frames
    assert np.array_equal(a, b)


def test_the_eager_reference_runs_where_the_model_is():
    """The CUDA graph and TensorRT tests compare against `_run_stream(tr, None, ...)` on a CUDA model: its
    prompt and image must be made on the model's device (seen here on `meta`, which mixes with the CPU no
    better than CUDA does)."""
    tr = _transformer().to("meta")
    out, cache = _run_stream(tr, None, 1)
    assert out[0].device.type == "meta" and cache.chunks == 1


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="CUDA graphs need an NVIDIA GPU and a CUDA build of torch")
def test_cudagraph_step_matches_eager():
    tr = _transformer().cuda()
    ref, _ = _run_stream(tr, None, 3)
    got, _ = _run_stream(tr, AcceleratedStep(tr, engine("cudagraph", torch.device("cuda")), accel.export_dir()), 3)
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref, strict=True):
        _close(a, b, 1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not (CUDA and _has_trt()), reason="TensorRT needs an NVIDIA GPU and the tensorrt package")
def test_tensorrt_step_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDWALK_TRT_PRECISION", "fp32")
    tr = _transformer().cuda()
    ref, _ = _run_stream(tr, None, 3)
    got, _ = _run_stream(tr, AcceleratedStep(tr, engine("tensorrt", torch.device("cuda")), tmp_path), 3)
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref, strict=True):
        _close(a, b, 1e-3)
    assert list(tmp_path.glob("*.engine"))
