"""From the player's devices to Matrix-Game's per-frame actions (one table per mode, shown in the help).

A chunk's input timeline is read per output frame (`InputTimeline.frame_inputs`): which keys were
down at any moment of the frame, the mouse motion in it, the mean stick deflection. Each frame
becomes one raw action row, in upstream's action spaces:

- universal: keyboard [W, S, A, D] multi-hot; mouse [pitch, yaw] (+ = up / right).
- gta_drive: keyboard [W, S]; mouse [0, yaw] (the pitch is always 0; A/D steer).
- templerun: keyboard one-hot [nomove, jump, slide, turn_left, turn_right, left_side, right_side];
  no mouse.

A key held during any part of a frame counts for that frame, so a tap shorter than a frame is never
lost. Look keys, arrows and the right stick give upstream's interactive value `CAM_VALUE` (0.1 a
raw frame, what its own demo sends for a held look key; the stick scaled by its deflection). The
mouse gives `MOUSE_UNITS_PER_PX` a pixel, at most `MOUSE_MAX_PER_FRAME` a frame: the rest is
carried to the next frames (across chunks too), so the look values sent add up to exactly the
motion made. The left stick past half deflection presses W/S/A/D.

Upstream gives no angle for a unit of yaw or pitch, so the window does not timewarp these frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldwalk.controls.gamepad import radial_dead_zone
from worldwalk.controls.timeline import FrameInput, InputTimeline

CAM_VALUE = 0.1  # upstream's interactive look value per raw frame
MOUSE_UNITS_PER_PX = 0.01  # 10 px moved within a frame (250 px/s) = one interactive look step
MOUSE_MAX_PER_FRAME = 3 * CAM_VALUE  # faster motion is spread over the following frames
STICK_PRESS = 0.5  # left-stick deflection that presses a movement key
STICK_DEAD_ZONE = 0.15

# mode -> keyboard action names, in upstream's order, each with the keys that press it
KEYBOARD: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "universal": (("forward", ("w",)), ("back", ("s",)), ("left", ("a",)), ("right", ("d",))),
    "gta_drive": (("forward", ("w", "up")), ("back", ("s", "down"))),
    "templerun": (
        ("nomove", ()), ("jump", ("w", "up", "space")), ("slide", ("s", "down", "c")),
        ("turn_left", ("q", "left")), ("turn_right", ("e", "right")), ("left_side", ("a",)),
        ("right_side", ("d",)),
    ),
}
# mode -> look direction -> keys giving CAM_VALUE on that axis (templerun has no mouse)
LOOK: dict[str, dict[str, tuple[str, ...]]] = {
    "universal": {"up": ("up",), "down": ("down",), "left": ("left", "q"), "right": ("right", "e")},
    "gta_drive": {"left": ("a", "left", "q"), "right": ("d", "right", "e")},
    "templerun": {},
}
# left-stick direction -> the movement action it presses (universal, gta_drive)
_STICK_ACTIONS = {"forward": (1, -1), "back": (1, 1), "left": (0, -1), "right": (0, 1)}


def help_lines(mode: str) -> list[str]:
    """The key map of `mode`, one line per action, for the window's help."""
    lines = [f"Matrix-Game {mode}:"]
    for action, keys in KEYBOARD[mode]:
        if keys:
            lines.append(f"  {action}: {' / '.join(k.upper() for k in keys)}")
    look = LOOK[mode]
    if look:
        dirs = "  ".join(f"{d} {'/'.join(k.upper() for k in ks)}" for d, ks in look.items())
        lines.append(f"  look: mouse, right stick, {dirs}")
    return lines


class ActionMapper:
    """Per-frame inputs -> (keyboard (n, K), mouse (n, 2) or None) for one mode. Keeps the mouse
    motion not yet sent (`carry`, in action units [pitch, yaw]) from one chunk to the next."""

    def __init__(self, mode: str) -> None:
        if mode not in KEYBOARD:
            raise ValueError(f"unknown Matrix-Game mode {mode!r}")
        self.mode = mode
        self.keys = KEYBOARD[mode]
        self.look = LOOK[mode]
        self.mouse = mode != "templerun"
        self.carry = np.zeros(2)

    def reset(self) -> None:
        self.carry = np.zeros(2)

    def _pressed(self, f: FrameInput) -> set[str]:
        """Keys down during the frame, with the left stick's movement keys added."""
        keys = set(f.keys)
        if self.mode != "templerun":
            lx, ly = radial_dead_zone(f.left_stick, STICK_DEAD_ZONE)
            names = dict(self.keys)
            for action, (axis, sign) in _STICK_ACTIONS.items():
                if action in names and sign * (lx, ly)[axis] > STICK_PRESS:
                    keys.update(names[action][:1])
        return keys

    def keyboard_row(self, f: FrameInput, new: set[str]) -> np.ndarray:
        """One frame's keyboard vector. Multi-hot, or one-hot for TempleRun: a key pressed within
        the frame beats one held from before; among equals the first in upstream's order wins."""
        keys = self._pressed(f)
        row = np.zeros(len(self.keys), np.float32)
        hits = [i for i, (_, ks) in enumerate(self.keys) if keys.intersection(ks)]
        if self.mode != "templerun":
            row[hits] = 1.0
            return row
        fresh = [i for i in hits if new.intersection(self.keys[i][1])]
        row[(fresh or hits or [0])[0]] = 1.0
        return row

    def look_row(self, f: FrameInput) -> np.ndarray:
        """One frame's [pitch, yaw] from keys and the right stick (the mouse is added separately)."""
        keys = f.keys
        pitch = CAM_VALUE * (bool(keys.intersection(self.look.get("up", ()))) -
                             bool(keys.intersection(self.look.get("down", ()))))
        yaw = CAM_VALUE * (bool(keys.intersection(self.look.get("right", ()))) -
                           bool(keys.intersection(self.look.get("left", ()))))
        rx, ry = radial_dead_zone(f.right_stick, STICK_DEAD_ZONE)
        yaw += CAM_VALUE * rx
        if "up" in self.look:  # modes with pitch
            pitch -= CAM_VALUE * ry
        return np.array([pitch, yaw])

    def actions(self, frames: Sequence[FrameInput], timeline: InputTimeline | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows for `frames`. With `timeline`, mouse motion in it but outside every frame (before the
        first edge) is sent with the first frame, so a chunk sends all its timeline's motion."""
        n = len(frames)
        keyboard = np.zeros((n, len(self.keys)), np.float32)
        mouse = np.zeros((n, 2), np.float32) if self.mouse else None
        px = np.array([[f.mouse_dx, f.mouse_dy] for f in frames], np.float64).reshape(n, 2)
        if timeline is not None and timeline.mouse and n:
            total = np.array([sum(m[1] for m in timeline.mouse), sum(m[2] for m in timeline.mouse)])
            px[0] += total - px.sum(axis=0)
        for i, f in enumerate(frames):
            before = timeline.state_at(f.t0).keys if timeline is not None else frozenset()
            keyboard[i] = self.keyboard_row(f, set(f.keys) - set(before))
            if mouse is None:
                continue
            want = self.carry + MOUSE_UNITS_PER_PX * np.array([-px[i, 1], px[i, 0]])  # +dy is down
            if "up" not in self.look:
                want[0] = 0.0
            sent = np.clip(want, -MOUSE_MAX_PER_FRAME, MOUSE_MAX_PER_FRAME)
            self.carry = want - sent
            mouse[i] = sent + self.look_row(f)
        return keyboard, mouse

    def describe(self, keyboard: np.ndarray, mouse: np.ndarray | None) -> str:
        """A short line for the HUD: the keyboard actions of the last row and the look summed."""
        if not len(keyboard):
            return ""
        names = [a for (a, _), v in zip(self.keys, keyboard[-1], strict=True) if v > 0]
        text = "+".join(names) or "-"
        if mouse is not None:
            p, y = mouse.sum(axis=0)
            text += f"  pitch {p:+.2f} yaw {y:+.2f}"
        return text
