"""Snapshot memory (runtime/sana_wm/snapshots.py): a snapshot's tensors are carved from one arena of a pool
shared by the process's sessions; arenas are reused, their bytes (rounded to 2 MiB) are what a snapshot
counts, and the pool never passes its budget. On CUDA the arenas are pinned; here the same copying path
runs into unpinned ones (`copies=True`)."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from worldwalk.controls import intrinsics_from_fov
from worldwalk.runtime.sana_wm.memory import tensors_in
from worldwalk.runtime.sana_wm.snapshots import ARENA_GRANULE, PinnedArenas, SnapshotStore, arena_size

from .builders import WORLD_H, WORLD_W, tiny_world


def _chunk(world, k: int):
    n = world.spec.chunk_frames(k)
    poses = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
    poses[:, 2, 3] = -0.05 * np.arange(k * 13, k * 13 + n)
    K = np.broadcast_to(intrinsics_from_fov(WORLD_W, WORLD_H), (n, 3, 3)).copy()
    return world.generate_chunk(poses, K).frames


def _copying(world, arenas: PinnedArenas) -> None:
    world._snapshots = SnapshotStore(world.device, arenas=arenas, copies=True)


def test_arena_sizes_round_to_two_mib():
    assert arena_size(1) == ARENA_GRANULE
    assert arena_size(int(1.207 * 2**30)) - int(1.207 * 2**30) < ARENA_GRANULE  # not 2 GiB (a power of two)


def test_snapshots_live_in_reused_arenas_and_restore_bit_exactly(one_torch_thread):
    pool = PinnedArenas(budget=64 * ARENA_GRANULE, pin=False)
    world = tiny_world()
    _copying(world, pool)
    world.reset(None, None, 5)
    _chunk(world, 0)
    snap = world.snapshot()
    arenas = {lease.arena.untyped_storage().data_ptr() for lease in snap.leases}
    for t in tensors_in(snap.stream.cache):  # every host tensor lives in the snapshot's arenas (or the sink's)
        assert t.untyped_storage().data_ptr() in arenas | {snap.sink_lease.arena.untyped_storage().data_ptr()}
    assert snap.nbytes() == sum(lease.arena.numel() for lease in snap.leases)  # the rounded bytes it holds
    a = [_chunk(world, 1), _chunk(world, 2)]
    world.restore(snap)
    b = [_chunk(world, 1), _chunk(world, 2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    # arenas go back when their snapshot goes, and the next snapshots reuse them
    made = pool.allocations
    for _ in range(4):
        del snap
        gc.collect()
        snap = world.snapshot()
        _chunk(world, 3)
    assert snap.leases
    assert pool.allocations <= made + 2  # a decode state of another size at most, not one arena per snapshot
    world.close()


def test_the_pool_budget_bounds_all_sessions(one_torch_thread):
    """Two sessions share a pool that holds 3 arenas: past it, snapshots go to pageable memory (still exact)."""
    pool = PinnedArenas(budget=3 * ARENA_GRANULE, pin=False)
    worlds = [tiny_world(), tiny_world()]
    kept = []
    for w in worlds:
        _copying(w, pool)
        w.reset(None, None, 1)
        _chunk(w, 0)
        kept.append(w.snapshot())
        _chunk(w, 1)
        kept.append(w.snapshot())
    assert pool.allocated <= pool.budget
    assert pool.refused > 0
    ref = _chunk(worlds[1], 2)
    worlds[1].restore(kept[-1])
    assert np.array_equal(_chunk(worlds[1], 2), ref)
    for w in worlds:
        w.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_pinned_arenas_on_cuda():
    pool = PinnedArenas(budget=8 * ARENA_GRANULE)
    lease = pool.take(3 << 20)
    assert lease is not None and lease.arena.is_pinned()
    t = torch.arange(1000, device="cuda", dtype=torch.float32)
    h = lease.carve(t)
    h.copy_(t, non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(h, t.cpu())


def test_a_spare_arena_is_made_off_the_model_thread():
    pool = PinnedArenas(budget=8 * ARENA_GRANULE, pin=False)
    first = pool.take(ARENA_GRANULE)
    for _ in range(500):  # the helper thread makes the spare
        if pool._free.get(ARENA_GRANULE):
            break
        threading.Event().wait(0.01)
    second = pool.take(ARENA_GRANULE)  # the spare: nothing made here
    assert first is not None and second is not None
    assert pool.made_on[0] == threading.current_thread().name
    assert pool.made_on[1] == "pinned-arena"
    assert pool.allocated <= pool.budget
