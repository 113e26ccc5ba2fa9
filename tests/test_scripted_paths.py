"""The scripted eval paths: each that returns is back at its start pose exactly at `returns` after
going somewhere, and rests there, and the landmark walk closes in on the landmark while keeping it ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.runtime.train.scripted import PATHS, landmark_ahead, scripted_path, start_poses


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
    lx, lz = landmark_ahead(0)
    assert lz > 0 and abs(math.atan2(lx, lz)) < math.radians(30)
    _, toward = start_poses(3, 9001, (lx, lz))
    for start in toward:
        poses = scripted_path("toward-landmark", start, 97).poses
        dist = np.hypot(poses[:, 0, 3] - lx, poses[:, 2, 3] - lz)
        assert dist[-1] < dist[0] - 8  # about 12 units walked at 2 units/s
        to_lm = np.array([lx - poses[-1, 0, 3], 0, lz - poses[-1, 2, 3]])
        cos = poses[-1, :3, 2] @ to_lm / np.linalg.norm(to_lm)
        assert cos > math.cos(math.radians(30)), "the landmark left the view"


def test_approach_walks_close_in_on_a_landmark_away_from_the_eval_starts():
    from worldwalk.runtime.train.scripted import landmark_starts
    from worldwalk.runtime.train.walks import WalkConfig, approach_walk, render_clips
    from worldwalk.runtime.worlds.reference_world import landmarks

    held_out = landmark_starts()
    assert len(held_out) == 3 and held_out[0] == (0.0, 0.0)
    cfg = WalkConfig(approach_avoid=held_out)
    ring = landmarks(0).shape
    for seed in range(40):
        poses = approach_walk(97, seed, cfg)
        x, z = poses[0, 0, 3], poses[0, 2, 3]
        assert min(np.hypot(x - ax, z - az) for ax, az in held_out) >= 4.0
        assert np.hypot(x, z) <= cfg.home_radius
        dist = np.hypot(poses[:, 0, 3, None] - ring[:, 0], poses[:, 2, 3, None] - ring[:, 1])  # (F, landmarks)
        fwd = poses[0, :3, 2]
        facing = (fwd[0] * (ring[:, 0] - x) + fwd[2] * (ring[:, 1] - z)) / dist[0]  # cos of each's bearing
        near = (dist[0] >= cfg.approach_distance[0]) & (dist[0] <= cfg.approach_distance[1])
        target = int(np.argmax(np.where(near, facing, -2.0)))  # the landmark it walks at
        # 6 s at 2 units/s walks about 12 units, unless it stopped 3 units short of the landmark's side first
        assert dist[-1, target] < max(dist[0, target] - 8.0, ring[target, 2] + 3.5)
        assert dist[:, target].min() > ring[target, 2] + 2.0, "walked into the landmark"
        ahead = np.array([ring[target, 0] - x, 0, ring[target, 1] - z])
        assert poses[0, :3, 2] @ ahead / np.linalg.norm(ahead) > math.cos(math.radians(8.5))
    # a start drawn where an avoided point stands is drawn again
    first = approach_walk(2, 5, WalkConfig())[0]
    moved = approach_walk(2, 5, WalkConfig(approach_avoid=((first[0, 3], first[2, 3]),)))[0]
    assert np.hypot(moved[0, 3] - first[0, 3], moved[2, 3] - first[2, 3]) >= 4.0
    # with approach_turn, the same walk turns away part-way: its first 30 % unchanged, its end facing elsewhere
    for seed in range(6):
        straight, turned = approach_walk(49, seed, WalkConfig()), approach_walk(49, seed, WalkConfig(approach_turn=1.0))
        np.testing.assert_array_equal(turned[:14], straight[:14])
        assert turned[-1, :3, 2] @ straight[-1, :3, 2] < math.cos(math.radians(45))
    # render_clips walks a share of its clips this way (the frames are not looked at here)
    blank = type("Blank", (), {"render_many": lambda self, poses, K: np.zeros((len(poses), 2, 2, 3), np.uint8)})()
    shared = WalkConfig(approach=0.5, approach_avoid=held_out)
    clips = list(render_clips(12, 5, 3, shared, world=blank))
    approached = [np.array_equal(c.poses, approach_walk(5, 3 * 1_000_003 + i, shared)) for i, c in enumerate(clips)]
    assert 0 < sum(approached) < 12
