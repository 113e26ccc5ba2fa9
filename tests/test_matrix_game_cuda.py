"""Matrix-Game 2.0 on an NVIDIA GPU (marker `cuda`; `worldwalk bench --gpu-check` runs them).

- fp32 on the device (TF32 off) replays upstream's goldens within 1e-4, like the CPU;
- bf16 on the device: a tiny world streams, and snapshot/restore gives the same chunk bit for bit.
`WORLDWALK_CUDA_TESTS_DEVICE=cpu` runs them on the CPU (a dry run of their logic).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests import test_matrix_game_parity as parity
from tests.builders import tiny_matrix_game_models
from worldwalk.runtime.matrix_game import ImageCondition, MatrixGameConfig
from worldwalk.runtime.matrix_game.world import random_world

DEVICE = os.environ.get("WORLDWALK_CUDA_TESTS_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs an NVIDIA GPU and CUDA torch"),
]


def test_fp32_on_the_device_replays_upstream() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with np.load(parity.GOLDENS) as d:
        gold = {k: d[k] for k in d.files}
    cfg = MatrixGameConfig.tiny()
    dit, vae = tiny_matrix_game_models(cfg)
    dit, vae = dit.to(DEVICE), vae.to(DEVICE)
    with torch.no_grad():
        condition = ImageCondition(vae, torch.as_tensor(gold["in/image"])[:, :, 0].to(DEVICE))
    worst = parity.call_errors(gold, parity.replay(gold, cfg, dit, vae, condition, DEVICE), cfg)
    bad = {k: v for k, v in worst.items() if v > parity.TOL}
    assert not bad, bad


def test_bf16_world_streams_and_restores_exactly() -> None:
    world = random_world("tiny", device=DEVICE, dtype=torch.bfloat16)
    world.reset(None, None, seed=1)
    eye, k = np.repeat(np.eye(4)[None], 12, 0), np.repeat(np.eye(3)[None], 12, 0)
    first = world.generate_chunk(eye[:9], k[:9])
    assert first.frames.shape[0] == 9 and first.frames.std() > 0
    snap = world.snapshot()
    a = world.generate_chunk(eye, k)
    world.restore(snap)
    b = world.generate_chunk(eye, k)
    assert np.array_equal(a.frames, b.frames)


def test_snapshots_go_to_pinned_host_memory_and_come_back() -> None:
    """On the GPU a kept boundary is copied on a side stream into a pinned arena of the process's pool: the
    device keeps none of it, and a restore copies it back for the same chunk bit for bit."""
    from worldwalk.runtime.matrix_game.snapshots import owned_tensors
    from worldwalk.runtime.snapshot_memory import arena_size, carved_bytes

    world = random_world("tiny", device=DEVICE, dtype=torch.bfloat16)
    world.reset(None, None, seed=2)
    eye, k = np.repeat(np.eye(4)[None], 12, 0), np.repeat(np.eye(3)[None], 12, 0)
    for n in (9, 12, 12):
        world.generate_chunk(eye[:n], k[:n])
    on_device = torch.cuda.memory_allocated() if ON_GPU else 0
    snap = world.snapshot()
    owned = owned_tensors(snap.state)
    assert all(t.device.type == "cpu" for t in owned)
    copied = sum(t.numel() * t.element_size() for t in owned)
    assert snap.nbytes() == (arena_size(carved_bytes(owned)) if ON_GPU else copied)  # the CPU: pageable copies
    if ON_GPU:
        assert all(t.is_pinned() for t in owned) and snap.leases  # an arena of the process's pinned pool
        assert torch.cuda.memory_allocated() - on_device < 2**20  # nothing of it stays on the device
    a = world.generate_chunk(eye, k)
    world.restore(snap)
    assert all(t.device.type == torch.device(DEVICE).type for t in owned_tensors(world.rollout.live_state()))
    b = world.generate_chunk(eye, k)
    assert np.array_equal(a.frames, b.frames)
