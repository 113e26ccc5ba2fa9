"""Matrix-Game's actions from the player's devices: synthetic input timelines read per frame and
mapped to upstream's action spaces (runtime/matrix_game/steering.py). Pure python, no model."""

from __future__ import annotations

import numpy as np
import pytest

from worldwalk.controls.timeline import InputTimeline
from worldwalk.runtime.matrix_game.steering import (
    CAM_VALUE,
    KEYBOARD,
    MOUSE_MAX_PER_FRAME,
    MOUSE_UNITS_PER_PX,
    ActionMapper,
    help_lines,
)

DT = 0.04  # 25 fps


def _edges(t0: float, n: int) -> np.ndarray:
    return t0 + DT * np.arange(n + 1)


def _map(mode: str, events, n: int = 12, start: float = 0.0, mapper: ActionMapper | None = None):
    tl = InputTimeline.from_events(start, start + n * DT, events)
    mapper = mapper or ActionMapper(mode)
    return mapper.actions(tl.frame_inputs(_edges(start, n)), tl)


def test_a_short_tap_shows_in_exactly_the_frames_it_touched():
    # W down 0.05 s from 0.10: frames (0.08, 0.12], (0.12, 0.16] are touched, no other
    kb, _ = _map("universal", [(0.10, "press", "w"), (0.15, "release", "w")])
    assert np.flatnonzero(kb[:, 0]).tolist() == [2, 3]
    assert kb[:, 1:].sum() == 0
    # a tap inside a single frame still counts in that frame
    kb, _ = _map("universal", [(0.165, "press", "d"), (0.175, "release", "d")])
    assert np.flatnonzero(kb[:, 3]).tolist() == [4]


def test_keys_are_multi_hot_and_arrows_look_at_upstreams_value():
    kb, ms = _map("universal", [(0.0, "press", "w"), (0.0, "press", "a"), (0.0, "press", "up"),
                                (0.0, "press", "right")], n=3)
    assert kb.tolist() == [[1, 0, 1, 0]] * 3
    np.testing.assert_allclose(ms, [[CAM_VALUE, CAM_VALUE]] * 3)


def test_mouse_motion_summed_across_chunk_edges_is_the_motion_made():
    rng = np.random.default_rng(0)
    mapper = ActionMapper("universal")
    total = np.zeros(2)
    sent = np.zeros(2)
    for c in range(5):
        start = c * 12 * DT
        # impulses anywhere in the chunk, some right on frame edges, some large (a flick)
        times = np.concatenate([start + rng.uniform(0, 12 * DT, 20), start + DT * np.arange(1, 12, 3)])
        moves = rng.normal(0, 30, (len(times), 2))
        moves[0] = (400.0, -250.0)
        events = sorted(((float(t), "mouse", (float(dx), float(dy))) for t, (dx, dy) in zip(times, moves, strict=True)))
        total += moves.sum(axis=0)
        _, ms = _map("universal", events, start=start, mapper=mapper)
        assert np.abs(ms).max() <= MOUSE_MAX_PER_FRAME + 1e-9
        sent += ms.astype(np.float64).sum(axis=0)
    # [pitch, yaw]: +dy (down) is -pitch, +dx (right) is +yaw; nothing lost but the carry not yet sent
    expect = MOUSE_UNITS_PER_PX * np.array([-total[1], total[0]])
    np.testing.assert_allclose(sent + mapper.carry, expect, atol=1e-4)
    # once the mouse rests, the carry drains into the following frames
    for c in range(5, 40):
        _, ms = _map("universal", [], start=c * 12 * DT, mapper=mapper)
        sent += ms.sum(axis=0)
    np.testing.assert_allclose(sent, expect, atol=1e-4)
    assert np.abs(mapper.carry).max() < 1e-9


def test_mouse_before_the_first_frame_edge_is_sent_with_the_first_frame():
    tl = InputTimeline.from_events(0.0, 0.5, [(0.01, "mouse", (5.0, 0.0)), (0.3, "mouse", (3.0, 0.0))])
    _, ms = ActionMapper("universal").actions(tl.frame_inputs(_edges(0.1, 10)), tl)
    np.testing.assert_allclose(ms[:, 1].sum(), 8 * MOUSE_UNITS_PER_PX)
    assert ms[0, 1] == pytest.approx(5 * MOUSE_UNITS_PER_PX)


def test_sticks_press_movement_keys_and_look():
    kb, ms = _map("universal", [(0.0, "pad", ((0.0, -0.9), (1.0, 0.0), 0.0, 0.0))], n=2)
    assert kb.tolist() == [[1, 0, 0, 0]] * 2
    np.testing.assert_allclose(ms, [[0.0, CAM_VALUE]] * 2)


def test_gta_drives_with_w_s_and_steers_yaw_with_a_d():
    kb, ms = _map("gta_drive", [(0.0, "press", "w"), (0.0, "press", "a"), (0.07, "release", "a"),
                                (0.09, "press", "d"), (0.0, "mouse", (0.0, 50.0))], n=4)
    assert kb.shape == (4, len(KEYBOARD["gta_drive"])) and kb[:, 0].tolist() == [1] * 4
    assert ms[:, 0].tolist() == [0.0] * 4  # no pitch in GTA, the mouse's dy included
    np.testing.assert_allclose(ms[:, 1], [-CAM_VALUE, -CAM_VALUE, CAM_VALUE, CAM_VALUE])


def test_templerun_one_hot_with_fresh_presses_first():
    kb, ms = _map("templerun", [(0.0, "press", "a"), (0.05, "press", "space"), (0.06, "release", "space"),
                                (0.12, "press", "left")], n=5)
    assert ms is None and kb.shape == (5, 7)
    assert (kb.sum(axis=1) == 1).all()
    names = [KEYBOARD["templerun"][i][0] for i in kb.argmax(axis=1)]
    # frame 0: A held -> left_side; frame 1: the jump tap beats A; frame 2: LEFT pressed at 0.12 is
    # fresh in (0.08, 0.12]; then A and LEFT are both held: turn_left comes first in upstream's order
    assert names == ["left_side", "jump", "turn_left", "turn_left", "turn_left"]
    kb, _ = _map("templerun", [], n=2)
    assert kb.argmax(axis=1).tolist() == [0, 0]  # nomove


def test_help_shows_each_modes_keys():
    text = "\n".join(help_lines("templerun"))
    assert "jump: W / UP / SPACE" in text and "right_side: D" in text
    assert "look: mouse" in "\n".join(help_lines("universal"))
