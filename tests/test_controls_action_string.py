"""Tests of the SANA-WM action string: parsing, the poses it produces, and its error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.controls import (
    ActionConfig,
    ActionStringError,
    action_string_to_poses,
    parse_action_string,
    pose_matrix,
    rotation,
    yaw_pitch_roll,
)


def test_parse_expands_tokens_per_frame():
    assert parse_action_string("jw-2,none-1") == ["jw", "jw", ""]
    assert parse_action_string(" W - 2 ，wj-1, NONE-1") == ["w", "w", "jw", ""]  # case, spaces, full-width comma
    assert len(parse_action_string("w-24,jw-12,none-8")) == 44


def test_w_moves_forward_by_the_step_per_frame():
    poses = action_string_to_poses("w-4")
    assert poses.shape == (5, 4, 4) and poses.dtype == np.float64
    np.testing.assert_array_equal(poses[0], np.eye(4))  # the start pose comes first, like diffusers
    np.testing.assert_allclose(poses[-1][:3, 3], [0.0, 0.0, 4 * 0.025], atol=1e-15)
    np.testing.assert_allclose(poses[-1][:3, :3], np.eye(3), atol=1e-15)
    assert action_string_to_poses("w-4", include_start=False).shape == (4, 4, 4)


def test_l_yaws_right_by_the_step_per_frame():
    poses = action_string_to_poses("l-10")
    yaw, pitch, roll = yaw_pitch_roll(poses[-1][:3, :3])
    assert math.degrees(yaw) == pytest.approx(6.0) and pitch == 0.0 and roll == 0.0
    assert poses[-1][0, 2] > 0  # forward swung toward +x: right
    np.testing.assert_array_equal(poses[-1][:3, 3], 0.0)
    _, pitch, _ = yaw_pitch_roll(action_string_to_poses("i-5")[-1][:3, :3])
    assert math.degrees(pitch) == pytest.approx(3.0)  # i looks up (forward toward -y)


def test_combined_tokens_turn_then_move():
    poses = action_string_to_poses("jw-3")
    for f in range(1, 4):
        yaw = math.radians(-0.6 * f)
        np.testing.assert_allclose(poses[f][:3, :3], rotation(yaw, 0.0), atol=1e-12)
    # Each frame moves 0.025 along the forward of that frame, after its turn.
    expected = sum(0.025 * np.array([math.sin(math.radians(-0.6 * f)), 0.0, math.cos(math.radians(-0.6 * f))])
                   for f in range(1, 4))
    np.testing.assert_allclose(poses[-1][:3, 3], expected, atol=1e-12)


def test_matches_diffusers_action_string_to_c2w():
    # Reference values from diffusers 0.42.1 cam_utils.action_string_to_c2w("jw-3,il-2,ks-1,d-2",
    # translation_speed=0.025, rotation_speed_deg=0.6) (float32 there).
    poses = action_string_to_poses("jw-3,il-2,ks-1,d-2")
    assert poses.shape == (9, 4, 4)
    frame4 = [[0.9997806549072266, -0.00021930449292995036, -0.020941272377967834, -0.001570624066516757],
              [0.0, 0.9999451637268066, -0.010471784509718418, 0.0],
              [0.02094241976737976, 0.010469487868249416, 0.999725878238678, 0.07498081028461456],
              [0.0, 0.0, 0.0, 1.0]]
    last = [[0.9999451637268066, -0.00010965826368192211, -0.01047120988368988, 0.04868843033909798],
            [0.0, 0.9999451637268066, -0.010471784509718418, 0.0],
            [0.010471784509718418, 0.01047120988368988, 0.9998903274536133, 0.05050576850771904],
            [0.0, 0.0, 0.0, 1.0]]
    np.testing.assert_allclose(poses[4], frame4, atol=1e-6)
    np.testing.assert_allclose(poses[-1], last, atol=1e-6)


def test_pitch_steps_past_the_limit_are_skipped():
    poses = action_string_to_poses("i-200")
    _, pitch, _ = yaw_pitch_roll(poses[-1][:3, :3])
    assert math.degrees(pitch) == pytest.approx(141 * 0.6)  # 84.6: the 142nd step would pass 85
    cfg = ActionConfig(rotation_speed_deg=1.0, pitch_limit_deg=10.0)
    _, pitch, _ = yaw_pitch_roll(action_string_to_poses("k-50", cfg)[-1][:3, :3])
    assert math.degrees(pitch) == pytest.approx(-10.0)


def test_start_pose_and_speeds():
    start = pose_matrix(rotation(math.radians(90.0), 0.0), (1.0, 2.0, 3.0))
    cfg = ActionConfig(translation_speed=0.5)
    poses = action_string_to_poses("w-2,d-1", cfg, start=start)
    np.testing.assert_array_equal(poses[0], start)
    np.testing.assert_allclose(poses[-1][:3, 3], [2.0, 2.0, 2.5], atol=1e-12)  # facing +x, right is -z


@pytest.mark.parametrize(
    ("text", "bad", "index"),
    [
        ("w-3,x-2", "x-2", 1),
        ("w-0", "w-0", 0),
        ("w-", "w-", 0),
        ("w--1", "w--1", 0),
        ("w-3,-3", "-3", 1),
        ("s-1,w3", "w3", 1),
        ("w-3,,s-1", "", 1),
        ("w-1.5", "w-1.5", 0),
        ("d-1,a-1,nonew-2", "nonew-2", 2),
        ("w-3,", "", 1),
    ],
)
def test_bad_tokens_are_rejected_by_name_and_position(text, bad, index):
    with pytest.raises(ActionStringError) as e:
        parse_action_string(text)
    assert e.value.token == bad and e.value.index == index
    assert f"token {index + 1} {bad!r}" in str(e.value)
    with pytest.raises(ActionStringError):
        action_string_to_poses(text)


def test_error_messages_say_what_to_write():
    with pytest.raises(ActionStringError, match="unknown key 'x'.*w/a/s/d"):
        parse_action_string("w-3,x-2")
    with pytest.raises(ActionStringError, match="character 4"):
        parse_action_string("w-3,x-2")
    with pytest.raises(ActionStringError, match="positive whole number"):
        parse_action_string("w-0")
    with pytest.raises(ActionStringError, match="empty"):
        parse_action_string("  ")
    with pytest.raises(ActionStringError, match="max_frames"):
        parse_action_string("w-5", ActionConfig(max_frames=4))


def test_render_help_lists_every_letter_of_the_action_string():
    """The letters were listed only in the error after a typo; `render --help` names each with its move."""
    import re

    from worldwalk.controls.action_string import ACTION_KEYS
    from worldwalk.runtime.args import ACTION_STRING_HELP

    named = set(re.findall(r"\b([a-z])/([a-z])\b", ACTION_STRING_HELP))
    assert {k for pair in named for k in pair} == set(ACTION_KEYS)
    assert "none" in ACTION_STRING_HELP
