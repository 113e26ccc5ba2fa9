"""Checks that need an NVIDIA GPU (marker `cuda`; `worldwalk bench --gpu-check` runs them all).

- bf16 SANA-WM on the device: the decode overlap on two CUDA streams (ordered by an event) gives the
  frames of one chunk at a time, bit for bit; snapshot/restore is exact; the frames are the CPU fp32
  frames up to bf16 rounding (a device or dtype mistake shows as a crash or a different picture).
- The memory plan (runtime/bench/memory_plan.py) against the CUDA allocator on a small model: weights
  within 1% + 1 MiB, a session's state within 10% + 2 MiB (measured after the cuBLAS workspaces exist),
  the chunk peak within 30% + 48 MiB (cuDNN's workspaces). The full-size comparison is `bench --gpu-check`'s.
`WORLDWALK_CUDA_TESTS_DEVICE=cpu` runs the device-independent ones on the CPU (a dry run of their logic).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig

from .builders import STRIDE, tiny_world
from .builders import WORLD_H as H
from .builders import WORLD_W as W

DEVICE = os.environ.get("WORLDWALK_CUDA_TESTS_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs an NVIDIA GPU and CUDA torch"),
]


def _world(device: str, dtype: str, kind: str = "tiny", softmax_bf16: bool = True) -> SanaWM:
    if kind == "tiny":
        return tiny_world(softmax_bf16, vae_width=16, device=device, dtype=dtype)
    from worldwalk.runtime.bench.model_suite import small_configs

    cfg, vae = small_configs(STRIDE)
    return SanaWM.random_init(cfg, vae, SanaWMRunConfig(width=W, height=H, device=device, dtype=dtype), seed=0)


def _inputs(world: SanaWM, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = world.spec.chunk_frames(k)
    start = 0 if k == 0 else world.spec.first_chunk_frames + (k - 1) * world.spec.frames_per_chunk
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.05 * (start + np.arange(n))
    poses[:, 0, 3] = 0.02 * np.sin(0.3 * (start + np.arange(n)))
    f = (W / 2) / np.tan(np.radians(35.0))
    return poses, np.tile(np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]), (n, 1, 1))


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)


def _frames(world: SanaWM, chunks: int, pipelined: bool) -> list[np.ndarray]:
    world.reset(_image(), None, seed=3)
    if not pipelined:
        return [world.generate_chunk(*_inputs(world, k)).frames for k in range(chunks)]
    pending = [world.submit(*_inputs(world, k)) for k in range(chunks)]  # decodes overlap the next denoise
    return [p.result().frames for p in pending]


def test_bf16_on_the_device_overlap_snapshot_and_cpu_agreement():
    world = _world(DEVICE, "bfloat16")
    if ON_GPU:
        assert world._decode_stream is not None and world._model_stream is not None  # two streams in play
    seq = _frames(world, 4, pipelined=False)
    piped = _frames(world, 4, pipelined=True)
    for a, b in zip(seq, piped, strict=True):
        assert np.array_equal(a, b)
    snap = world.snapshot()
    a = world.generate_chunk(*_inputs(world, 4)).frames
    world.restore(snap)
    assert np.array_equal(a, world.generate_chunk(*_inputs(world, 4)).frames)
    world.close()
    cpu = _world("cpu", "float32")
    ref = _frames(cpu, 4, pipelined=False)
    cpu.close()
    diff = np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(seq, ref, strict=True)])
    print(f"{DEVICE} bf16 vs cpu fp32 frames: mean abs difference {diff:.2f} levels")
    assert diff < 6.0


def test_fp32_on_the_device_equals_the_cpu(monkeypatch):
    # true fp32 on both sides: matmuls and cuDNN convolutions without TF32 (cuDNN allows it by default), and the
    # softmax attention in fp32 (tiny() runs it in bf16, on different CPU and CUDA kernels)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    world = _world(DEVICE, "float32", softmax_bf16=False)
    got = _frames(world, 3, pipelined=True)
    world.close()
    cpu = _world("cpu", "float32", softmax_bf16=False)
    ref = _frames(cpu, 3, pipelined=False)
    cpu.close()
    for a, b in zip(got, ref, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


@pytest.mark.skipif(not ON_GPU, reason="measures the CUDA allocator")
def test_memory_plan_matches_the_allocator():
    from worldwalk.runtime.bench.gpu_paths import warm_workspaces
    from worldwalk.runtime.bench.memory_plan import plan_memory
    from worldwalk.runtime.bench.model_suite import small_configs

    dev = torch.device(DEVICE)
    cfg, vae = small_configs(STRIDE)
    plan = plan_memory(cfg, vae, W, H, torch.bfloat16)
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(dev)
    world = _world(DEVICE, "bfloat16", kind="small")
    weights = torch.cuda.memory_allocated(dev) - base
    assert weights == pytest.approx(plan.weights, rel=0.01, abs=2**20)
    # cuBLAS takes a 32 MiB workspace per (thread, stream) through the allocator on first use: made now, so that
    # the session's state is measured from here (at this size the workspaces outweigh the state)
    warm_workspaces(world)
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    world.reset(None, None, seed=0)
    for k in range(cfg.kv_window + 2):
        world.generate_chunk(*_inputs(world, k))
    world.cache_nbytes()  # settles the decode
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    steady = torch.cuda.memory_allocated(dev) - base
    world.generate_chunk(*_inputs(world, cfg.kv_window + 2))
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - base - steady
    world.close()
    print(f"state {steady} B (plan {plan.per_session}), chunk peak {peak} B (plan {plan.chunk_peak})")
    assert steady == pytest.approx(plan.per_session, rel=0.10, abs=2 * 2**20)
    assert peak == pytest.approx(plan.chunk_peak, rel=0.30, abs=48 * 2**20)  # + cuDNN's per-call workspaces
