"""The scripted eval paths: each that returns is back at its start pose exactly at `returns` after
going somewhere, and rests there, and the landmark walk closes in on the landmark while keeping it ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.runtime.train.eval_command import _landmark_xz
from worldwalk.runtime.train.scripted import PATHS, scripted_path, start_poses


@pytest.mark.parametrize("name", [n for n in PATHS if n != "toward-landmark"])
def test_returning_paths_leave_and_come_back(name):
    starts, _ = start_poses(2, 9001, (0.0, 20.0))
    for start in starts:
        path = scripted_path(name, start, 109)
        assert path.poses.shape == (109, 4, 4) and np.array_equal(path.poses[0], start)
        assert path.returns is not None and path.returns / 16 <= 10  # back within 10 s at 16 fps
        back = path.poses[path.returns:]  # back at the start, and at rest there for the memory score
        assert len(back) >= 5
        np.testing.assert_allclose(back, np.broadcast_to(start, back.shape), atol=1e-9)
        away = np.abs(path.poses - start).max(axis=(1, 2))
        assert away[path.returns // 2] > 0.5, "the path never left its start"


def test_turn_is_a_full_circle_and_look_goes_up():
    turn = scripted_path("turn-360", np.eye(4), 97)
    forward = turn.poses[:, :3, 2]  # the camera's z axis in the world
    heading = np.unwrap(np.arctan2(forward[:, 0], forward[:, 2]))
    assert math.isclose(abs(heading[96] - heading[0]), 2 * math.pi, rel_tol=1e-6)
    look = scripted_path("look-up-down", np.eye(4), 97)
    assert look.poses[16, 1, 2] < -0.5  # looking up: forward has a large -y (world y points down)
    assert np.allclose(look.poses[:, :3, 3], 0)  # in place


def test_landmark_walk_approaches_the_landmark_ahead():
    lx, lz = _landmark_xz(0)
    assert lz > 0 and abs(math.atan2(lx, lz)) < math.radians(30)
    _, toward = start_poses(3, 9001, (lx, lz))
    for start in toward:
        poses = scripted_path("toward-landmark", start, 97).poses
        dist = np.hypot(poses[:, 0, 3] - lx, poses[:, 2, 3] - lz)
        assert dist[-1] < dist[0] - 8  # about 12 units walked at 2 units/s
        to_lm = np.array([lx - poses[-1, 0, 3], 0, lz - poses[-1, 2, 3]])
        cos = poses[-1, :3, 2] @ to_lm / np.linalg.norm(to_lm)
        assert cos > math.cos(math.radians(30)), "the landmark left the view"
