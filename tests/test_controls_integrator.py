"""Tests of PoseIntegrator: directions, clamping, easing, slicing invariance, mouse consumption."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldwalk.controls import (
    InputBox,
    InputState,
    IntegratorConfig,
    PoseIntegrator,
    pose_matrix,
    rotation,
    yaw_pitch_roll,
)

YAW, PITCH = math.radians(30.0), math.radians(40.0)


def held(*keys: str, **kw) -> InputState:
    return InputState(keys=frozenset(keys), **kw)


def start_pose(yaw: float = YAW, pitch: float = PITCH) -> np.ndarray:
    return pose_matrix(rotation(yaw, pitch), (1.0, -0.5, 2.0))


def horizontal(v: np.ndarray) -> np.ndarray:
    h = np.array([v[0], 0.0, v[2]])
    return h / np.linalg.norm(h)


@pytest.mark.parametrize("pitch_deg", [0.0, 40.0, -60.0])
def test_forward_moves_along_own_z_projected_on_the_horizontal_plane(pitch_deg):
    pose = start_pose(pitch=math.radians(pitch_deg))
    integ = PoseIntegrator(IntegratorConfig(accel_time=0.0, move_speed=2.0), pose=pose)
    out = integ.tick(0.5, held("w"))
    step = out[:3, 3] - pose[:3, 3]
    np.testing.assert_allclose(step, 1.0 * horizontal(pose[:3, 2]), atol=1e-12)  # 2 units/s * 0.5 s
    np.testing.assert_allclose(out[:3, :3], pose[:3, :3], atol=1e-12)  # no turning
    assert step[1] == 0.0  # looking up or down never makes you fly


def test_forward_with_easing_stays_on_the_line_and_back_strafe_go_their_ways():
    pose = start_pose()
    integ = PoseIntegrator(IntegratorConfig(accel_time=0.2), pose=pose)
    step = integ.tick(0.1, held("w"))[:3, 3] - pose[:3, 3]
    np.testing.assert_allclose(step / np.linalg.norm(step), horizontal(pose[:3, 2]), atol=1e-12)
    assert np.linalg.norm(step) < 0.1  # still accelerating: less than full speed * dt
    for key, axis, sign in (("s", 2, -1.0), ("d", 0, 1.0), ("a", 0, -1.0)):
        integ = PoseIntegrator(IntegratorConfig(accel_time=0.0), pose=pose)
        step = integ.tick(1.0, held(key))[:3, 3] - pose[:3, 3]
        np.testing.assert_allclose(step, sign * horizontal(pose[:3, axis]), atol=1e-12)


def test_space_rises_and_c_sinks_along_world_y():
    integ = PoseIntegrator(IntegratorConfig(accel_time=0.0, vertical_speed=1.5))
    assert integ.tick(1.0, held("space"))[1, 3] == pytest.approx(-1.5)  # up is -y
    assert integ.tick(2.0, held("c"))[1, 3] == pytest.approx(1.5)


def test_shift_is_faster():
    cfg = IntegratorConfig(accel_time=0.0, fast_multiplier=3.0)
    assert PoseIntegrator(cfg).tick(1.0, held("w", "shift"))[2, 3] == pytest.approx(3.0)


def test_mouse_right_turns_right_and_mouse_up_looks_up():
    integ = PoseIntegrator(IntegratorConfig(mouse_sensitivity=0.15))
    pose = integ.tick(0.0, InputState(mouse_dx=100.0))
    yaw, pitch, _ = yaw_pitch_roll(pose[:3, :3])
    assert math.degrees(yaw) == pytest.approx(15.0) and pitch == 0.0
    assert pose[0, 2] > 0.0  # forward swung toward +x: right

    integ = PoseIntegrator()
    pose = integ.tick(0.0, InputState(mouse_dy=-100.0))  # dy < 0: mouse moved up
    yaw, pitch, _ = yaw_pitch_roll(pose[:3, :3])
    assert math.degrees(pitch) == pytest.approx(15.0) and yaw == 0.0
    assert pose[1, 2] < 0.0  # forward tilted toward -y: up


def test_turn_and_look_keys():
    cfg = IntegratorConfig(turn_speed=90.0)
    integ = PoseIntegrator(cfg)
    yaw, _, _ = yaw_pitch_roll(integ.tick(0.5, held("right"))[:3, :3])
    assert math.degrees(yaw) == pytest.approx(45.0)
    yaw, _, _ = yaw_pitch_roll(integ.tick(1.0, held("q"))[:3, :3])
    assert math.degrees(yaw) == pytest.approx(-45.0)
    _, pitch, _ = yaw_pitch_roll(integ.tick(0.25, held("up"))[:3, :3])
    assert math.degrees(pitch) == pytest.approx(22.5)


def test_pitch_is_clamped():
    cfg = IntegratorConfig(pitch_limit=85.0)
    integ = PoseIntegrator(cfg)
    _, pitch, _ = yaw_pitch_roll(integ.tick(0.0, InputState(mouse_dy=-10_000.0))[:3, :3])
    assert math.degrees(pitch) == pytest.approx(85.0)
    _, pitch, _ = yaw_pitch_roll(integ.tick(10.0, held("down"))[:3, :3])
    assert math.degrees(pitch) == pytest.approx(-85.0)
    _, pitch, _ = yaw_pitch_roll(integ.tick(1.0, InputState(right_stick=(0.0, -1.0)))[:3, :3])
    assert math.degrees(pitch) == pytest.approx(35.0)  # 120 deg/s stick look from -85
    assert math.degrees(integ.get_state().pitch) <= 85.0


def test_eased_acceleration_time_constant():
    integ = PoseIntegrator(IntegratorConfig(accel_time=0.25, move_speed=2.0))
    integ.tick(0.25, held("w"))
    assert integ.velocity[2] == pytest.approx(2.0 * (1.0 - math.exp(-1.0)))
    integ.tick(5.0, held("w"))
    assert integ.velocity[2] == pytest.approx(2.0)
    integ.tick(0.25, held())  # released: eases back toward rest, still coasting
    assert integ.velocity[2] == pytest.approx(2.0 * math.exp(-1.0))


BUSY = held("w", "d", "e", "up", "space", "shift", left_stick=(0.3, -0.5), right_stick=(0.4, 0.2),
            mouse_dx=37.0, mouse_dy=-12.0)


@pytest.mark.parametrize("state", [held("w"), held("w", "e"), BUSY], ids=["w", "w+turn", "busy"])
def test_two_ticks_of_half_dt_equal_one_tick_of_dt(state):
    cfg = IntegratorConfig(accel_time=0.3)
    pose = start_pose(pitch=math.radians(70.0))  # the look key hits the pitch clamp within the tick

    def run(slices: list[float]) -> tuple[np.ndarray, np.ndarray]:
        integ = PoseIntegrator(cfg, pose=pose)
        integ.tick(0.2, held("a", "c"))  # start from a moving, non-rest velocity
        for dt in slices:
            integ.tick(dt, state)
        return integ.pose, integ.velocity

    one_pose, one_vel = run([0.4])
    two_pose, two_vel = run([0.2, 0.2])
    many_pose, many_vel = run([0.05, 0.1, 0.0, 0.13, 0.12])
    np.testing.assert_allclose(two_pose, one_pose, rtol=0, atol=1e-9)
    np.testing.assert_allclose(two_vel, one_vel, rtol=0, atol=1e-9)
    np.testing.assert_allclose(many_pose, one_pose, rtol=0, atol=1e-9)
    np.testing.assert_allclose(many_vel, one_vel, rtol=0, atol=1e-9)
    assert np.linalg.norm(one_vel) > 0.1  # the ease is active: something is moving


def test_mouse_delta_is_applied_once_per_accumulation():
    integ = PoseIntegrator()
    s = InputState(mouse_dx=100.0)
    integ.tick(0.1, s)
    integ.tick(0.1, s)  # same accumulation, nothing new
    assert math.degrees(integ.get_state().yaw) == pytest.approx(15.0)

    box = InputBox()
    integ = PoseIntegrator()
    box.add_mouse(20.0, 0.0)
    integ.tick(0.1, box.peek())
    box.add_mouse(20.0, 0.0)
    integ.tick(0.1, box.peek())  # a growing peek applies the growth only
    assert math.degrees(integ.get_state().yaw) == pytest.approx(6.0)
    integ.tick(0.1, box.take())  # taking returns the same totals: nothing new
    assert math.degrees(integ.get_state().yaw) == pytest.approx(6.0)
    box.add_mouse(20.0, 0.0)
    integ.tick(0.1, box.take())  # a new accumulation is applied in full
    assert math.degrees(integ.get_state().yaw) == pytest.approx(9.0)


def test_plan_spreads_the_mouse_delta_evenly():
    integ = PoseIntegrator()
    poses = integ.plan(held("w", mouse_dx=80.0), 4, 1 / 16)
    assert poses.shape == (4, 4, 4)
    yaws = [math.degrees(yaw_pitch_roll(p[:3, :3])[0]) for p in poses]
    np.testing.assert_allclose(yaws, [3.0, 6.0, 9.0, 12.0], atol=1e-12)
    np.testing.assert_array_equal(poses[-1], integ.pose)
    assert poses[-1][2, 3] > poses[0][2, 3] > 0.0
    again = integ.plan(held(mouse_dx=80.0), 2, 1 / 16)  # same accumulation: no more turning
    assert math.degrees(yaw_pitch_roll(again[-1][:3, :3])[0]) == pytest.approx(12.0)


def test_preview_applies_pending_mouse_look_only():
    integ = PoseIntegrator(pose=start_pose())
    before = integ.pose
    box = InputBox()
    box.press("w")
    box.add_mouse(100.0, -100.0)
    view = integ.preview(box.peek())
    np.testing.assert_array_equal(integ.pose, before)  # nothing advanced
    np.testing.assert_array_equal(view[:3, 3], before[:3, 3])  # no translation
    yaw, pitch, _ = yaw_pitch_roll(view[:3, :3])
    assert math.degrees(yaw) == pytest.approx(45.0) and math.degrees(pitch) == pytest.approx(55.0)
    integ.tick(0.1, box.peek())
    np.testing.assert_allclose(integ.preview(box.peek())[:3, :3], integ.pose[:3, :3])  # nothing pending


def test_get_state_and_set_state_rewind_exactly():
    integ = PoseIntegrator(IntegratorConfig(accel_time=0.2))
    integ.tick(0.3, held("w", "e"))
    saved = integ.get_state()
    first = integ.plan(held("d", "up"), 5, 0.05)
    integ.tick(1.0, held("s"))
    integ.set_state(saved)
    np.testing.assert_array_equal(integ.plan(held("d", "up"), 5, 0.05), first)
    integ.reset()
    np.testing.assert_array_equal(integ.pose, np.eye(4))
    assert integ.get_state().velocity == (0.0, 0.0, 0.0)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="dt"):
        PoseIntegrator().tick(-0.1, held())
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        PoseIntegrator(pose=np.eye(3))
    with pytest.raises(ValueError, match="move_speed"):
        IntegratorConfig(move_speed=-1.0)


def test_gamepad_config_from_a_toml_table_and_the_sticks_drive_the_camera():
    cfg = IntegratorConfig(accel_time=0.0, gamepad={"dead_zone": 0.2})
    assert cfg.gamepad.dead_zone == 0.2
    with pytest.raises(ValueError, match="dead_zon"):
        IntegratorConfig(gamepad={"dead_zon": 0.2})
    integ = PoseIntegrator(cfg)
    assert integ.tick(1.0, InputState(left_stick=(0.0, -1.0)))[2, 3] == pytest.approx(1.0)  # stick up: forward
    assert integ.tick(1.0, InputState(left_stick=(0.1, -0.1)))[2, 3] == pytest.approx(1.0)  # dead zone
    yaw = yaw_pitch_roll(integ.tick(0.5, InputState(right_stick=(1.0, 0.0)))[:3, :3])[0]
    assert math.degrees(yaw) == pytest.approx(60.0)  # 120 deg/s at full deflection
