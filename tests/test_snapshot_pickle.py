"""A SANA-WM snapshot pickles (the cluster's failover store ships it): one taken mid-pipeline, while the
previous chunk's decode is still running, waits for it, drops what pickle cannot carry (the decode's
future, CUDA events, pinned-arena leases) and restores elsewhere bit for bit."""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import Future

import numpy as np
import pytest
import torch

from worldwalk.controls import intrinsics_from_fov

from .builders import WORLD_H, WORLD_W, tiny_world


def _inputs(world, k: int):
    n = world.spec.chunk_frames(k)
    poses = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
    poses[:, 0, 3] = 0.04 * np.arange(k * 13, k * 13 + n)
    return poses, np.broadcast_to(intrinsics_from_fov(WORLD_W, WORLD_H), (n, 3, 3)).copy()


def _mid_pipeline_snapshot(world):
    """Chunk 0 submitted, its decode held back on the decoder thread while the snapshot is taken."""
    world.reset(None, None, 7)
    hold = threading.Event()
    world._decoder.submit(hold.wait, 60)  # the decoder is busy: chunk 0's decode waits behind this
    pending = world.submit(*_inputs(world, 0))
    snap = world.snapshot()
    assert isinstance(snap.decode, Future) and not snap.decode.done()
    return snap, pending, hold


def test_a_snapshot_taken_mid_pipeline_pickles_and_restores(one_torch_thread):
    world = tiny_world()
    snap, pending, hold = _mid_pipeline_snapshot(world)
    pickling = threading.Timer(0.2, hold.set)  # the decode runs while pickle waits for it
    pickling.start()
    data = pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)
    pending.result()
    want = [world.generate_chunk(*_inputs(world, k)).frames for k in (1, 2)]
    world.close()

    other = tiny_world()  # another process would build the same model: here, another world on the same weights
    back = pickle.loads(data)
    assert back.cache_event is None and back.leases == [] and not isinstance(back.decode, Future)
    other.reset(None, None, 99)
    other.restore(back)
    got = [other.generate_chunk(*_inputs(other, k)).frames for k in (1, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    other.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_a_cuda_snapshot_pickles_without_its_events():
    world = tiny_world(device="cuda")
    snap, pending, hold = _mid_pipeline_snapshot(world)
    assert snap.cache_event is not None
    hold.set()
    pending.result()
    data = pickle.dumps(snap)  # its decode may still be a future here, or already copied to the host
    want = world.generate_chunk(*_inputs(world, 1)).frames
    back = pickle.loads(data)
    assert all(t.device.type == "cpu" for t in back.decode.tails.values())
    world.restore(back)
    assert np.array_equal(world.generate_chunk(*_inputs(world, 1)).frames, want)
    world.close()
    torch.cuda.synchronize()
