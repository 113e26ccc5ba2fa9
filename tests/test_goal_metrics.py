"""The bundled world's goal metrics on synthetic images whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.controls import rot_y
from worldwalk.runtime.train import goal_metrics as gm


def _grey(h: int, w: int, v: float) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_edge_energy_counts_both_directions_on_grey_levels():
    img = _grey(4, 6, 0)
    img[:, ::2] = 100  # vertical stripes: every horizontal neighbour differs by 100, no vertical one
    assert gm.edge_energy(img) == pytest.approx(100.0)
    img = _grey(4, 6, 0)
    img[::2, :] = 100  # horizontal stripes: the vertical differences only
    assert gm.edge_energy(img) == pytest.approx(100.0)
    check = (np.indices((4, 6)).sum(0) % 2 * 100).astype(np.uint8)
    assert gm.edge_energy(np.repeat(check[..., None], 3, -1)) == pytest.approx(200.0)  # both
    red = np.zeros((4, 6, 3), np.uint8)
    red[:, ::2, 0] = 100  # grey levels: 0.299 of the red
    assert gm.edge_energy(red) == pytest.approx(29.9)
    assert gm.edge_energy(_grey(5, 5, 77)) == 0.0


def test_edge_ratio_of_a_blur_is_below_one_and_of_the_truth_is_one():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    blur = ((truth.astype(np.float64) + np.roll(truth, 1, 1) + np.roll(truth, 1, 2)) / 3).astype(np.uint8)
    assert gm.edge_ratio(truth, truth) == pytest.approx(1.0)
    assert gm.edge_ratio(blur, truth) < 0.75
    assert gm.edge_ratio(np.broadcast_to(truth[0].mean().astype(np.uint8), truth.shape), truth) == 0.0


def test_blue_mask_thresholds():
    px = np.array([[[10, 10, 200],  # blue block
                    [10, 10, 140],  # not above 140
                    [100, 10, 200],  # blue - red 100 > 55, blue - green 190: in
                    [145, 10, 200],  # blue - red = 55: out (more than 55 asked)
                    [10, 145, 200],  # blue - green = 55: out (more than 55 asked)
                    [200, 200, 255]]], np.uint8)  # sky-white: out
    assert gm.blue_mask(px).tolist() == [[True, False, True, False, False, False]]


def _block(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    img = _grey(h, w, 90)
    img[y0:y1, x0:x1] = (20, 40, 220)
    return img


def test_mask_scores_area_and_iou():
    truth = _block(20, 20, 5, 15, 5, 15)  # 100 px
    assert gm.mask_scores(truth, truth) == (1.0, 1.0)
    half = _block(20, 20, 5, 10, 5, 15)  # 50 px, inside the truth
    assert gm.mask_scores(half, truth) == pytest.approx((0.5, 0.5))
    shifted = _block(20, 20, 5, 15, 10, 20)  # 100 px, 50 shared: IoU 50 / 150
    assert gm.mask_scores(shifted, truth) == pytest.approx((1.0, 1 / 3))
    assert gm.mask_scores(_grey(20, 20, 90), truth) == (0.0, 0.0)
    assert gm.mask_scores(truth, _grey(20, 20, 90)) is None  # no block in the truth: no score


def test_ghost_share_counts_blue_only_where_the_truth_has_none():
    truth = _block(10, 10, 0, 5, 0, 10)  # top half blue
    assert gm.ghost_share(truth, truth) == 0.0
    model = _block(10, 10, 0, 10, 0, 10)  # all blue: the bottom half is a ghost
    assert gm.ghost_share(model, truth) == pytest.approx(0.5)
    assert gm.ghost_share(_grey(10, 10, 90), truth) == 0.0


def test_turned_away_by_the_angle_from_the_first_view():
    poses = np.repeat(np.eye(4)[None], 5, 0)
    for i, deg in enumerate((0, 45, 89, 90, 180)):
        poses[i, :3, :3] = rot_y(math.radians(deg))
    assert gm.turned_away(poses, 90.0).tolist() == [False, False, False, True, True]


def test_window_keeps_inside_the_video_and_after_the_first_frame():
    assert gm.window(1.0, 16, 100) == [14, 15, 16, 17, 18]
    assert gm.window(0.0, 16, 100) == [1, 2]
    assert gm.window(6.0, 16, 97) == [94, 95, 96]
