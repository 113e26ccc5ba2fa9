"""Sessions on one model (runtime/worlds/world_pool.py, `SanaWM.fork`): N sessions over one shared bundled model
give exactly the frames each gives alone, and the N of them hold one copy of the weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from worldwalk.controls import action_string_to_poses, intrinsics_from_fov
from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.worlds.bundled_world import BundledWorld
from worldwalk.runtime.worlds.world_pool import WorldPool

CHUNKS = 3
WALKS = ("w-40", "dl-20,w-20", "a-10,s-30")


def _walk(actions: str, spec) -> tuple[list[np.ndarray], list[np.ndarray]]:  # noqa: ANN001
    """Poses and intrinsics of the first CHUNKS chunks of a walk, as long as `spec`'s chunks."""
    poses = action_string_to_poses(actions)
    K = intrinsics_from_fov(160, 96)
    out, start = [], 0
    for k in range(CHUNKS):
        n = spec.chunk_frames(k)
        out.append(poses[start : start + n])
        start += n
    return out, [np.broadcast_to(K, (len(p), 3, 3)).copy() for p in out]


def _play(world, actions: str, seed: int, barrier: threading.Barrier | None = None) -> list[np.ndarray]:
    poses, Ks = _walk(actions, world.spec)
    world.reset(None, None, seed)
    frames = []
    for p, K in zip(poses, Ks, strict=True):
        if barrier is not None:
            barrier.wait(timeout=60)  # the sessions' chunks run on the shared model at the same time
        frames.append(world.generate_chunk(p, K).frames)
    return frames


def _weight_storages(worlds) -> set[int]:
    """The distinct storages holding the parameters and buffers of the worlds' transformers and VAEs."""
    seen = set()
    for w in worlds:
        for module in (w.transformer, w.vae.vae):
            for t in [*module.parameters(), *module.buffers()]:
                seen.add(t.untyped_storage().data_ptr())
    return seen


@pytest.fixture(scope="module")
def alone() -> list[list[np.ndarray]]:
    """Each walk on a world of its own (its own copy of the weights), one after another."""
    torch.set_num_threads(1)
    out = []
    for i, actions in enumerate(WALKS):
        world = BundledWorld()
        out.append(_play(world, actions, seed=10 + i))
        world.close()
    return out


def test_sessions_on_one_shared_model_give_their_frames_alone(alone) -> None:
    pool = WorldPool(WorldConfig(name="bundled"))
    worlds = [pool.session_world() for _ in WALKS]
    assert pool.builds == 1 and pool.forks == len(WALKS)
    # one copy of the weights for all of them: the storages of N sessions are those of one
    one = _weight_storages([pool.shared])
    assert _weight_storages(worlds) == one
    assert all(w.transformer is worlds[0].transformer and w.vae is worlds[0].vae for w in worlds)
    assert all(w._encoders is pool.shared._encoders for w in worlds)  # one text encoder, made once, for all
    # ...and each its own cache, noise and decoder
    assert len({id(w.rollout) for w in worlds}) == len(WALKS)
    assert len({id(w.rollout.generator) for w in worlds}) == len(WALKS)

    barrier = threading.Barrier(len(WALKS))
    results: list = [None] * len(WALKS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = _play(worlds[i], WALKS[i], 10 + i, barrier)
        except BaseException as e:  # reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(WALKS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i, frames in enumerate(results):
        for k, (got, want) in enumerate(zip(frames, alone[i], strict=True)):
            assert np.array_equal(got, want), f"session {i} chunk {k} differs from the same walk alone"
    assert not worlds[0].transformer._chunk_memos  # each chunk's inputs were dropped once it was written
    # the walks differ from one another: the sessions did not share a cache
    assert not np.array_equal(results[0][-1], results[2][-1])

    # a closed session frees its own state only: the next one still runs on the shared model
    worlds[0].close()
    again = pool.session_world()
    assert np.array_equal(_play(again, WALKS[1], 11)[-1], alone[1][-1])
    for w in [*worlds[1:], again]:
        w.close()
    pool.close()


def test_a_snapshot_moves_between_sessions_of_one_model(alone) -> None:
    """Sessions of one model are interchangeable: a snapshot taken in one restores in another."""
    pool = WorldPool(WorldConfig(name="bundled"))
    a, b = pool.session_world(), pool.session_world()
    poses, Ks = _walk(WALKS[0], a.spec)
    a.reset(None, None, 10)
    a.generate_chunk(poses[0], Ks[0])
    snap = a.snapshot()
    b.reset(None, None, 99)
    b.restore(snap)
    assert np.array_equal(b.generate_chunk(poses[1], Ks[1]).frames, alone[0][1])
    a.close()
    b.close()
    pool.close()


def test_batched_sessions_on_the_shared_model_give_their_frames_alone(alone) -> None:
    """`serve --batch-sessions`: the pool's sessions also share forwards (runtime/batching.py)."""
    pool = WorldPool(WorldConfig(name="bundled"), batch=True)
    pool.session_world().close()  # built and closed: it left the batch
    worlds = [pool.session_world() for _ in WALKS[:2]]
    pool.batcher.window = 2.0  # the sessions run in step: every pass waits for the other
    results: list = [None, None]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _play(worlds[i], WALKS[i], 10 + i)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    passes = CHUNKS * len(worlds[0].rollout.sampler.cfg.timesteps)  # each step's pass and the cache write
    assert pool.batcher.batches.get(2, 0) >= passes - 2  # the passes went through as batches of two
    for i in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(results[i], alone[i], strict=True)), i
    for w in worlds:
        w.close()
    pool.close()
