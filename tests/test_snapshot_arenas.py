"""Snapshot memory (runtime/snapshot_memory.py, SANA-WM's layout in runtime/sana_wm/snapshots.py): a
snapshot's tensors are carved from one arena of a pool shared by the process's sessions; arenas are
reused, their bytes (rounded to 2 MiB) are what a snapshot counts, and the pool never passes its budget.
On CUDA the arenas are pinned; here the same copying path runs into unpinned ones (`copies=True`)."""

from __future__ import annotations

import gc
import threading
from collections import deque

import numpy as np
import pytest
import torch

from worldwalk.controls import intrinsics_from_fov
from worldwalk.runtime.sana_wm.memory import tensors_in
from worldwalk.runtime.sana_wm.snapshots import SnapshotStore
from worldwalk.runtime.snapshot_memory import ARENA_GRANULE, PinnedArenas, arena_size

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
    for t in tensors_in(snap.rollout.cache):  # every host tensor lives in the snapshot's arenas (or the sink's)
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


def _settled(pool: PinnedArenas) -> None:
    for _ in range(1000):  # the helper thread's spares
        with pool._lock:
            if not pool._making:
                return
        threading.Event().wait(0.01)
    raise AssertionError("the pool's helper thread never finished")


def test_the_first_snapshots_after_a_build_take_arenas_made_beforehand(one_torch_thread, monkeypatch):
    """The world pool makes the snapshot arenas while it builds the model (a throwaway session keeps its chunk
    boundaries as a Session does), so a session's snapshots of every size (the sink, the cache as the window
    fills and once full, the decode state), the first of the process included, take arenas made beforehand:
    none is made on the session's thread (or its decoder's) while its chunks run. (A session that keeps more
    boundaries takes the spares the pool's helper thread makes ahead.)"""
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import world_pool

    pool = PinnedArenas(budget=64 * ARENA_GRANULE, pin=False)

    def build(cfg):
        world = tiny_world()
        world.snapshot_arenas, world.snapshot_copies = pool, True  # what the forks' stores take (CUDA-like)
        _copying(world, pool)
        return world

    monkeypatch.setattr(world_pool, "create_world", build)
    models = world_pool.WorldPool(WorldConfig(name="sana-wm"))
    session = models.session_world()
    _settled(pool)
    made = len(pool.made_on)
    assert made > 0 and pool.lent == 0  # made while building, all free again

    session.reset(None, None, 3)
    kept: deque = deque(maxlen=1)  # the last boundary (two live while the next is taken)
    leases = 0
    for k in range(4):  # the window fills (chunks 1, 2) and stays full
        kept.append(session.snapshot())
        _chunk(session, k)
        session._settle()
        leases += len(kept[-1].leases)
    assert leases > 0  # the session's snapshots live in the pool's arenas
    assert all(name == "pinned-arena" for name in pool.made_on[made:]), pool.made_on[made:]  # spares only
    session.close()
    models.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_a_cuda_world_pins_its_snapshot_arenas_before_its_first_session(monkeypatch):
    """On CUDA the world pool's build pins the arenas (SanaWM.prepare_snapshots); the session's snapshots then
    live in pinned arenas made beforehand."""
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import world_pool

    pool = PinnedArenas(budget=64 * ARENA_GRANULE)

    def build(cfg):
        world = tiny_world(device="cuda")
        world.snapshot_arenas = pool
        world._snapshots = SnapshotStore(world.device, arenas=pool)
        return world

    monkeypatch.setattr(world_pool, "create_world", build)
    models = world_pool.WorldPool(WorldConfig(name="sana-wm", device="cuda"))
    session = models.session_world()
    _settled(pool)
    made = len(pool.made_on)
    assert made > 0
    session.reset(None, None, 3)
    kept: deque = deque(maxlen=1)
    for k in range(4):
        kept.append(session.snapshot())
        _chunk(session, k)
        session._settle()
    assert all(lease.arena.is_pinned() for lease in kept[-1].leases) and kept[-1].leases
    assert all(name == "pinned-arena" for name in pool.made_on[made:]), pool.made_on[made:]
    session.close()
    models.close()
