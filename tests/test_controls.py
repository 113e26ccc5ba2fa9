"""Tests of controls' camera helpers, InputState/InputBox, bindings and the gamepad mapping."""

from __future__ import annotations

import math
import sys
import threading

import numpy as np
import pytest

from worldwalk.controls import (
    Bindings,
    BindingsError,
    GamepadConfig,
    InputBox,
    InputState,
    axis_dead_zone,
    fov_degrees,
    gamepad_to_intent,
    intrinsics_from_fov,
    key_name,
    pose_matrix,
    radial_dead_zone,
    rotation,
    yaw_pitch_roll,
)

# -- camera ---------------------------------------------------------------------------------------


def test_rotation_convention():
    z = np.array([0.0, 0.0, 1.0])
    # Positive yaw turns right: forward +z swings toward +x.
    np.testing.assert_allclose(rotation(math.pi / 2, 0.0) @ z, [1.0, 0.0, 0.0], atol=1e-12)
    # Positive pitch looks up: forward tilts toward -y (world y points down).
    np.testing.assert_allclose(rotation(0.0, math.pi / 2) @ z, [0.0, -1.0, 0.0], atol=1e-12)
    # Positive roll swings the camera's x axis toward +y.
    np.testing.assert_allclose(rotation(0.0, 0.0, math.pi / 2) @ [1.0, 0, 0], [0.0, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("ypr", [(0.3, -0.4, 0.2), (-2.9, 1.2, -1.0), (3.0, 0.0, 0.0), (0.0, 0.0, 0.0)])
def test_yaw_pitch_roll_inverts_rotation(ypr):
    np.testing.assert_allclose(yaw_pitch_roll(rotation(*ypr)), ypr, atol=1e-12)


def test_yaw_pitch_roll_at_gimbal_lock_rebuilds_the_rotation():
    R = rotation(0.7, math.pi / 2, 0.3)
    np.testing.assert_allclose(rotation(*yaw_pitch_roll(R)), R, atol=1e-9)


def test_intrinsics_and_fov_round_trip():
    K = intrinsics_from_fov(256, 144, 70.0)
    assert K.shape == (3, 3) and K[0, 2] == 128.0 and K[1, 2] == 72.0 and K[0, 0] == K[1, 1]
    fov_x, fov_y = fov_degrees(K, 256, 144)
    assert fov_x == pytest.approx(70.0)
    assert fov_y == pytest.approx(2 * math.degrees(math.atan(math.tan(math.radians(35)) * 144 / 256)))
    with pytest.raises(ValueError, match="fov_x_deg"):
        intrinsics_from_fov(256, 144, 180.0)


def test_pose_matrix_shapes():
    pose = pose_matrix(rotation(0.1, 0.2), (1.0, 2.0, 3.0))
    assert pose.shape == (4, 4) and pose.dtype == np.float64
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        pose_matrix(np.eye(3), (1.0, 2.0))


# -- InputState / InputBox ------------------------------------------------------------------------


def test_key_names_are_normalised():
    assert key_name("W") == "w"
    assert key_name("ArrowLeft") == "left"
    assert key_name("LSHIFT") == "shift"
    assert key_name(" ") == "space"
    assert key_name("KeyD") == "d"


def test_input_box_press_release_and_clear():
    box = InputBox()
    box.press("W", now=1.0)
    box.press("ArrowLeft", now=2.0)
    box.set_gamepad((0.5, 2.0), (0.0, -0.3), 0.2, 1.5, now=3.0)
    s = box.peek()
    assert s.keys == {"w", "left"} and s.timestamp == 3.0
    assert s.left_stick == (0.5, 1.0) and s.right_trigger == 1.0  # clamped to the valid ranges
    box.release("w")
    assert box.peek().keys == {"left"}
    box.add_mouse(5.0, 1.0)
    epoch = box.peek().mouse_epoch
    box.clear()
    s = box.peek()
    assert s.keys == frozenset() and s.left_stick == (0.0, 0.0) and s.mouse_dx == 0.0
    assert s.mouse_epoch != epoch


def test_input_box_take_zeroes_the_mouse_delta():
    box = InputBox()
    box.press("w")
    box.add_mouse(3.0, -2.0)
    box.add_mouse(1.5, 0.5)
    peeked = box.peek()
    assert (peeked.mouse_dx, peeked.mouse_dy) == (4.5, -1.5)
    assert box.peek() == peeked  # peek does not consume
    taken = box.take()
    assert (taken.mouse_dx, taken.mouse_dy) == (4.5, -1.5)
    after = box.peek()
    assert (after.mouse_dx, after.mouse_dy) == (0.0, 0.0)
    assert after.keys == {"w"}  # held keys survive a take
    assert after.mouse_epoch != taken.mouse_epoch  # a new accumulation starts
    assert InputBox().peek().mouse_epoch not in (0, after.mouse_epoch)  # epochs are unique per process


def test_input_box_is_thread_safe():
    box = InputBox()
    writers, events = 4, 3000
    taken: list[InputState] = []
    done = threading.Event()

    def write(i: int) -> None:
        for n in range(events):
            box.add_mouse(1.0, -2.0)
            box.press(f"k{i}_{n % 7}")
            box.release(f"k{i}_{n % 7}")

    def take() -> None:
        while not done.is_set():
            taken.append(box.take())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    taker = threading.Thread(target=take)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often so that races show up
    try:
        taker.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        taker.join()
    finally:
        sys.setswitchinterval(interval)
    taken.append(box.take())
    assert sum(s.mouse_dx for s in taken) == writers * events  # nothing lost, nothing twice
    assert sum(s.mouse_dy for s in taken) == -2.0 * writers * events
    assert box.peek().keys == frozenset()
    assert len({s.mouse_epoch for s in taken}) == len(taken)


# -- bindings ------------------------------------------------------------------------------------


def test_default_bindings():
    b = Bindings()
    assert b.actions({"w", "shift"}) == {"forward", "fast"}
    assert b.actions({"left"}) == {"turn_left"} and b.actions({"q"}) == {"turn_left"}
    assert b.actions({"right", "e"}) == {"turn_right"}
    assert b.actions({"up"}) == {"look_up"} and b.actions({"down"}) == {"look_down"}
    assert b.actions({"space"}) == {"up"} and b.actions({"c"}) == {"down"}
    assert b.actions({"a", "d"}) == {"left", "right"}
    i = b.intent({"w", "d"})
    assert math.hypot(i.forward, i.right) == pytest.approx(1.0)  # diagonals are not faster
    assert b.intent({"w", "s"}).forward == 0.0


def test_bindings_toml_override(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[bindings]\nforward = ["i", "Up"]\nfast = "ctrl"\nlook_up = []\n')
    b = Bindings.load(path)
    assert b.forward == ("i", "up") and b.fast == ("ctrl",) and b.look_up == ()
    assert b.back == ("s",)  # unlisted actions keep their defaults
    assert b.actions({"up"}) == {"forward"}
    bare = tmp_path / "bare.toml"
    bare.write_text('turn_left = "z"\n')
    assert Bindings.load(bare).turn_left == ("z",)
    assert Bindings.from_mapping(b.to_mapping()) == b


def test_bindings_reject_unknown_action(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[bindings]\njump = "space"\n')
    with pytest.raises(BindingsError, match="jump") as e:
        Bindings.load(path)
    assert "forward" in str(e.value) and "turn_left" in str(e.value)  # the valid names are listed
    path.write_text("[bindings]\nforward = 3\n")
    with pytest.raises(BindingsError, match="forward"):
        Bindings.load(path)


# -- gamepad -------------------------------------------------------------------------------------


def test_radial_dead_zone_rescales():
    assert radial_dead_zone((0.1, -0.1), 0.15) == (0.0, 0.0)
    assert radial_dead_zone((0.15, 0.0), 0.15) == (0.0, 0.0)
    x, y = radial_dead_zone((0.0, -1.0), 0.15)
    assert (x, y) == pytest.approx((0.0, -1.0))
    x, y = radial_dead_zone((0.575 * 0.6, 0.575 * 0.8), 0.15)  # magnitude 0.575 -> 0.5
    assert math.hypot(x, y) == pytest.approx(0.5) and x / y == pytest.approx(0.75)
    assert math.hypot(*radial_dead_zone((1.0, 1.0), 0.15)) == pytest.approx(1.0)  # clipped to 1
    assert axis_dead_zone(0.03) == 0.0 and axis_dead_zone(1.0) == 1.0


def test_gamepad_to_intent():
    i = gamepad_to_intent((0.0, -1.0), (1.0, 0.0), 0.0, 1.0)
    assert i.forward == pytest.approx(1.0) and i.right == 0.0  # left stick up: forward
    assert i.yaw == pytest.approx(1.0)  # right stick right: turn right
    assert i.up == pytest.approx(1.0)  # right trigger rises
    assert gamepad_to_intent((0.0, 0.0), (0.0, -1.0)).pitch == pytest.approx(1.0)  # stick up looks up
    assert gamepad_to_intent((0.0, 0.0), (0.0, -1.0), cfg=GamepadConfig(invert_look_y=True)).pitch == -1.0
    assert gamepad_to_intent((0.1, 0.1), (-0.1, 0.0), 0.0, 0.0).forward == 0.0  # inside the dead zone
    assert gamepad_to_intent((0, 0), (0, 0), 1.0, 0.0).up == pytest.approx(-1.0)
