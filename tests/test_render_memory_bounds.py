"""`render --log` memory from a crafted log. World options are bounded by the world's
own limits (refused before anything is built or allocated, naming the option, the limit and the fix),
and a replay keeps rewind snapshots as a live session does: at most `max_snapshots`, within the memory
budget, so rewinds cannot make it keep one snapshot per chunk."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import ModelSpec, WorldConfig
from worldwalk.runtime.world_options import WorldOptionError
from worldwalk.stream.record.replay import ReplayError, ReplayPlan, ReplayStep, iter_render, open_world

BAD_OPTIONS = {
    # a million 64x64 frames a chunk: 12 GiB of frames
    "reference": [({"frames_per_chunk": 10**6}, ["'frames_per_chunk'", "1024"]),
                  ({"frames_per_chunk": "4"}, ["'frames_per_chunk'", "whole number"]),
                  ({"march_steps": 10**9}, ["'march_steps'", "1024"])],
    "bundled": [({"threads": 10**6}, ["'threads'", "256"])],
    "sana-wm": [({"width": 100_000}, ["'width'", "2048"]), ({"dtype": "load"}, ["'dtype'", "float32"])],
    "matrix-game": [({"dtype": "nn"}, ["'dtype'", "float32"]), ({"mode": "doom"}, ["'mode'", "templerun"]),
                    ({"threads": -1}, ["'threads'", "256"])],
}


@pytest.mark.parametrize("world", list(BAD_OPTIONS))
def test_world_options_beyond_the_worlds_limits_are_refused(world):
    from importlib.metadata import entry_points

    create = next(ep for ep in entry_points(group="worldwalk.worlds") if ep.name == world).load()
    for options, wanted in BAD_OPTIONS[world]:
        with pytest.raises(WorldOptionError) as e:
            create(WorldConfig(name=world, width=64, height=64, checkpoint="/nonexistent", options=options))
        for w in wanted + ["leave it out"]:
            assert w in str(e.value), str(e.value)


def test_a_reference_chunk_is_bounded_in_bytes():
    from worldwalk.runtime.worlds.reference_world import create

    with pytest.raises(WorldOptionError, match=r"frames_per_chunk.*GiB.*set it to 21 or fewer"):
        create(WorldConfig(width=4096, height=4096, options={"frames_per_chunk": 1024}))


def test_a_logs_world_options_are_named_with_its_header_line():
    plan = ReplayPlan(world="reference", width=64, height=64, world_options={"frames_per_chunk": 10**6},
                      source="walk.jsonl", header={"model": "reference"}, steps=[])
    with pytest.raises(ReplayError, match=r"walk.jsonl:1: field 'world_options': reference world option "
                                          r"'frames_per_chunk' is 1000000, beyond its limit of 1 to 1024"):
        open_world(plan)


class SnapshotWorld:
    """A world whose snapshots say they keep 5.3 MB (the bundled model's), counted while alive."""

    def __init__(self) -> None:
        self.spec = ModelSpec("fake", 16.0, 1, 1, 2, 2)
        self.live: weakref.WeakSet = weakref.WeakSet()
        self.most_live = 0
        self.index = 0

    def reset(self, *a) -> None:
        self.index = 0

    def snapshot(self):
        snap = Snap(self.index)
        self.live.add(snap)
        self.most_live = max(self.most_live, len(self.live))
        return snap

    def restore(self, snap) -> None:
        self.index = snap.index

    def generate_chunk(self, poses, intrinsics) -> Chunk:
        self.index += 1
        return Chunk(np.zeros((len(poses), 2, 2, 3), np.uint8), poses, intrinsics, self.index - 1, {})


class Snap:
    def __init__(self, index: int) -> None:
        self.index = index

    def nbytes(self) -> int:
        return 5_300_000


def _rewinding_plan(n: int, back_to: int) -> ReplayPlan:
    """Chunks 0..n-1, then rewinds to n-1, n-2, ..., back_to, each redone once: a log that keeps every
    boundary a rewind target."""
    pose = np.eye(4)[None]
    steps = [ReplayStep("chunk", k, pose) for k in range(n)]
    for k in range(n - 1, back_to - 1, -1):
        steps += [ReplayStep("restore", k), ReplayStep("chunk", k, pose)]
    return ReplayPlan(width=2, height=2, steps=steps, source="crafted.jsonl")


def test_rewinds_keep_at_most_what_a_session_keeps():
    world = SnapshotWorld()
    with pytest.raises(ReplayError, match=r"crafted.jsonl: the log rewinds to chunk 135, further back than a session "
                                          r"keeps \(the last 64 chunk boundaries"):
        for _ in iter_render(_rewinding_plan(200, 1), world):
            pass
    assert world.most_live <= 64 + 1, f"{world.most_live} snapshots of 5.3 MB were alive at once"


def test_rewinds_within_what_a_session_keeps_replay():
    world = SnapshotWorld()
    chunks = [(s.kind, c.index) for s, c in iter_render(_rewinding_plan(100, 40), world)]
    assert chunks[:100] == [("chunk", k) for k in range(100)] and len(chunks) == 160
    assert chunks[100:] == [("chunk", k) for k in range(99, 39, -1)]  # each rewind restored its own boundary
    assert world.most_live <= 64 + 1


def test_the_snapshot_budget_bounds_them_as_in_a_session():
    world = SnapshotWorld()
    small = SessionConfig(snapshot_budget_mb=53.0)  # ten 5.3 MB snapshots
    with pytest.raises(ReplayError, match="rewinds to chunk 89"):
        for _ in iter_render(_rewinding_plan(100, 1), world, small):
            pass
    assert world.most_live <= 10 + 1
