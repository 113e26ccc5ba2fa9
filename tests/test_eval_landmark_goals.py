"""The eval's landmark goals on the shipped weights and the reference world's renders: the eval reports them with
the ghost count from more starts (eval_command.ghosts_from), where a world that keeps its first frame ghosts in
every frame turned away."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import gl_or_skip
from worldwalk.runtime.train.eval_command import ghosts_from
from worldwalk.runtime.train.scripted import facing_landmark, landmark_ahead
from worldwalk.runtime.train.walks import WalkConfig
from worldwalk.runtime.worlds.bundled_world import BundledWorld
from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

pytestmark = pytest.mark.gl

SIDES = (8.0, -12.0)
N = 1 + 4 * 25  # 6.25 s at 16 fps: the turn is whole


class _Chunk:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.timings = frames, {}


class FrozenWorld:
    """The eval's frozen-first-frame row as a world: every chunk repeats the first image."""

    def __init__(self, spec) -> None:  # noqa: ANN001
        self.spec = spec

    def reset(self, first: np.ndarray, prompt, seed: int) -> None:  # noqa: ANN001
        self.first = first

    def generate_chunk(self, poses: np.ndarray, K: np.ndarray) -> _Chunk:
        return _Chunk(np.broadcast_to(self.first, (len(poses), *self.first.shape)).copy())


def test_facing_landmark_stands_across_the_line_of_sight_and_faces_it():
    lx, lz = landmark_ahead(0)
    for side in (-14.0, 0.0, 8.0):
        pose = facing_landmark(side, (lx, lz))
        x, z = pose[0, 3], pose[2, 3]
        assert np.hypot(x, z) == pytest.approx(abs(side)) and x * lx + z * lz == pytest.approx(0, abs=1e-9)
        to = np.array([lx - x, 0.0, lz - z])
        assert pose[:3, 2] @ to / np.linalg.norm(to) == pytest.approx(1.0)


def test_a_frozen_world_ghosts_in_every_frame_turned_away_and_the_shipped_one_is_counted(one_torch_thread):
    world = BundledWorld(threads=1)
    spec = world.spec
    cfg = WalkConfig(width=spec.width, height=spec.height, fps=spec.fps)
    ref = gl_or_skip(lambda: ReferenceWorld(ReferenceWorldConfig(width=spec.width, height=spec.height,
                                                                 seed=cfg.world_seed)))
    try:
        frozen, turned = ghosts_from(FrozenWorld(spec), ref, SIDES, N, cfg)
        shipped, turned_again = ghosts_from(world, ref, SIDES, N, cfg)
    finally:
        ref.close()
        world.close()
    assert turned == turned_again == 2 * 49  # 3 s of the 6.25 s turn are 90 degrees or more away
    assert frozen == turned  # the block stays in the frozen view, where the truth has none
    assert 0 <= shipped < turned // 2


@pytest.mark.slow
def test_the_eval_reports_the_landmark_goals_and_the_ghost_from_more_starts(tmp_path, one_torch_thread, capsys):
    from worldwalk.runtime.cli.main import main

    assert gl_or_skip(lambda: main(["eval", "--walks", "1", "--seconds", "1.5", "--paths", "toward-landmark",
                                    "--starts", "1", "--threads", "1", "--save", str(tmp_path)])) == 0
    landmark = json.loads((tmp_path / "eval.json").read_text())["landmark"]
    assert set(landmark["area"]) == set(landmark["iou"]) == {"2s", "4s", "6s"}
    assert 0 <= landmark["ghost frames"]["model"] <= 1 and landmark["ghost frames"]["frozen first frame"] == 1.0
    more = landmark["ghost frames, more starts"]
    assert more["frames"] == 6 * 49 and 0 <= more["ghosted"] < more["frames"] // 2
    assert f"frames with a ghost {more['ghosted']} of 294" in capsys.readouterr().out
