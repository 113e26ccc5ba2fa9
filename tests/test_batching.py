"""Sessions batched on one model (runtime/batching.py): exactly the frames each makes alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from worldwalk.runtime.batching import ForwardBatcher, layout, stack, take
from worldwalk.runtime.bench.batch_suite import bundled_worlds, run_sessions, walk

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_two_batched_sessions_make_the_frames_they_make_alone():
    worlds = bundled_worlds(2)
    _, alone, _ = run_sessions(worlds, 3, "serial")  # each session by itself
    _, together, batches = run_sessions(worlds, 3, "batched", window=2.0)
    passes = 3 * len(worlds[0].rollout.sampler.cfg.timesteps)  # 3 chunks: each step's pass and the cache write
    assert batches.get(2, 0) >= passes - 2  # the passes really went through as batches of two
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b) == 3
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)
    assert not np.array_equal(together[0][2], together[1][2])  # two different sessions
    for w in worlds:
        w.close()


def test_batcher_refuses_a_world_on_other_weights():
    a, b = bundled_worlds(1) + bundled_worlds(1)
    batcher = ForwardBatcher(a.rollout.transformer)
    with pytest.raises(ValueError, match="batcher's transformer"):
        batcher.attach(b)
    batcher.share_weights(b)  # the same bundled weights: re-pointed
    batcher.attach(b)
    assert b.rollout.backend is batcher
    batcher.detach(b)
    assert b.rollout.backend is None
    batcher.close()
    for w in (a, b):
        w.close()


def test_a_host_joins_worlds_and_closing_one_leaves_the_batch():
    a, b = bundled_worlds(1) + bundled_worlds(1)
    batcher = ForwardBatcher(a.rollout.transformer)
    for w in (a, b):
        assert batcher.join(w) is w and w.rollout.backend is batcher
    assert b.transformer is a.transformer  # one copy of the weights
    b.close()
    assert b.rollout.backend is None and batcher._members == 1
    a.close()
    assert batcher._members == 0
    batcher.close()


def test_stack_and_take_round_trip_a_cache():
    (w,) = bundled_worlds(1)
    w.reset(None, None, seed=1)
    w.generate_chunk(*walk(w, 0, 1))
    cache = w.rollout.cache
    both = stack([cache, cache])
    back = take(both, 1, copy=True)
    assert layout(back) == layout(cache) and layout(both) != layout(cache)
    for a, b in zip(back.blocks, cache.blocks, strict=True):
        for name, x in vars(a).items():
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, getattr(b, name))
                assert x.untyped_storage().nbytes() == x.numel() * x.element_size()  # owns only its row
    w.close()


def test_sessions_out_of_step_run_apart_and_stay_exact():
    worlds = bundled_worlds(2)
    _, alone, _ = run_sessions(worlds[:1], 2, "serial")
    # session 1 runs chunks 2-3 while session 0 runs 0-1: no pass of the two can share a forward (other
    # positions), and none waits the window out
    worlds[1].reset(None, None, seed=2)
    for k in range(2):
        worlds[1].generate_chunk(*walk(worlds[1], k, 2))
    batcher = ForwardBatcher(worlds[0].rollout.transformer, window=30.0)
    for w in worlds:
        batcher.attach(w)
    def ahead():
        for k in range(2, 4):
            worlds[1].generate_chunk(*walk(worlds[1], k, 2))
        batcher.detach(worlds[1])  # an idle member would make the other wait out the window

    thread = threading.Thread(target=ahead)
    thread.start()
    worlds[0].reset(None, None, seed=1)
    out = [worlds[0].generate_chunk(*walk(worlds[0], k, 1)).frames for k in range(2)]
    batcher.detach(worlds[0])
    thread.join()
    assert batcher.timeouts == 0  # the 30 s window was never waited out: calls ran once both sessions waited
    assert set(batcher.batches) == {1}
    for x, y in zip(alone[0], out, strict=True):
        assert np.array_equal(x, y)
    batcher.close()
    for w in worlds:
        w.close()
