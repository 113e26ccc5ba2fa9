"""The SANA-WM action string: a scripted camera path such as ``w-24,jw-12,none-8``.

Grammar: comma-separated tokens ``<keys>-<count>``. ``keys`` is ``none`` (hold still) or one or
more of ``w a s d`` (move forward / left / back / right on the horizontal plane) and ``i k j l``
(pitch up / pitch down / yaw left / yaw right); letters in one token act together for ``count``
frames (a positive decimal integer). Case and whitespace are ignored; a full-width comma counts
as a comma. Opposite keys cancel (``ws`` stands still).

Each frame, in this order (the semantics of ``action_string_to_c2w`` in diffusers 0.42.1,
``pipelines/sana_wm/cam_utils.py``, re-implemented here):
1. pitch by +-rotation_speed_deg (i up, k down); a step that would take the accumulated pitch
   outside +-pitch_limit_deg is skipped whole (not clamped part-way);
2. yaw by +-rotation_speed_deg about the world vertical (l right, j left):
   ``R <- Ry(yaw_step) @ R @ Rx(pitch_step)``;
3. move translation_speed along the NEW camera's forward (+z) and right (+x) axes, each projected
   on the horizontal x-z plane and renormalised (w/s forward/back, d/a right/left).

Conventions versus diffusers: diffusers also uses OpenCV camera axes and the same Rx/Ry matrices,
with "i" tilting the forward axis toward -y, so its world y points down as ours does (camera.py).
No axis mapping is needed; the differences are only that we return float64 (diffusers casts to
float32), start from any given pose (diffusers always starts at the identity), default to the
streaming step sizes 0.025 units and 0.6 degrees per frame (diffusers' defaults are 0.05 and 1.2),
and reject a token with no keys (``-3``), which diffusers reads as a hold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .camera import check_pose, rot_x, rot_y, yaw_pitch_roll

MOVE_KEYS = "wasd"
TURN_KEYS = "ijkl"
ACTION_KEYS = frozenset(MOVE_KEYS + TURN_KEYS)
_COUNT = re.compile(r"[0-9]+")


class ActionStringError(ValueError):
    """A malformed action string. ``token`` is the offending token as written, ``index`` its
    0-based position among the tokens and ``offset`` its character offset in the string."""

    def __init__(self, message: str, token: str = "", index: int = -1, offset: int = -1) -> None:
        super().__init__(message)
        self.token, self.index, self.offset = token, index, offset


@dataclass
class ActionConfig:
    translation_speed: float = 0.025  # world units per frame
    rotation_speed_deg: float = 0.6  # degrees per frame
    pitch_limit_deg: float = 85.0
    max_frames: int = 1_000_000  # a guard against typos such as w-24000000


def _tokens(s: str) -> list[tuple[str, str, int, int]]:
    """(cleaned token, token as written, index, character offset) for each comma-separated token."""
    out = []
    offset = 0
    for index, raw in enumerate(s.replace("\uff0c", ",").split(",")):
        out.append(("".join(raw.split()).lower(), raw.strip(), index, offset))
        offset += len(raw) + 1
    return out


def _error(raw: str, index: int, offset: int, problem: str) -> ActionStringError:
    message = f"token {index + 1} {raw!r} (character {offset}): {problem}"
    return ActionStringError(message, raw, index, offset)


def parse_action_string(s: str, cfg: ActionConfig | None = None) -> list[str]:
    """One entry per frame: the sorted keys held in that frame ("" for ``none``).

    ``parse_action_string("jw-2,none-1") == ["jw", "jw", ""]``. Raises ActionStringError.
    """
    cfg = cfg or ActionConfig()
    if not isinstance(s, str) or not s.strip():
        raise ActionStringError(
            "the action string is empty; write tokens like 'w-24,jw-12,none-8' (keys-frames)"
        )
    frames: list[str] = []
    for token, raw, index, offset in _tokens(s):
        keys, dash, count = token.partition("-")
        bad = sorted(set(keys) - ACTION_KEYS) if keys != "none" else []
        problem = ""
        if not token:
            problem = "is empty; remove the extra comma"
        elif not dash:
            problem = "has no '-<frames>'; write it like 'w-24' or 'none-8'"
        elif not _COUNT.fullmatch(count) or int(count) == 0:
            problem = f"frame count {count!r} must be a positive whole number, like 'w-24'"
        elif not keys:
            problem = "names no keys; use 'none-N' to hold still"
        elif bad:
            problem = (f"unknown key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
                       "use w/a/s/d to move, i/k to pitch, j/l to yaw, or 'none'")
        elif len(frames) + int(count) > cfg.max_frames:
            problem = f"makes the path longer than max_frames={cfg.max_frames}"
        if problem:
            raise _error(raw, index, offset, problem)
        held = "" if keys == "none" else "".join(sorted(set(keys)))
        n = int(count)
        frames.extend([held] * n)
    return frames


def action_string_to_poses(
    s: str,
    cfg: ActionConfig | None = None,
    start: np.ndarray | None = None,
    *,
    include_start: bool = True,
) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) float64 for the action string ``s``.

    With ``include_start`` (the default, like diffusers) F = frames + 1 and poses[0] is ``start``
    (identity if None); without it F = frames, the poses after each frame's action.
    """
    cfg = cfg or ActionConfig()
    frames = parse_action_string(s, cfg)
    pose = np.eye(4) if start is None else check_pose(start, "start")
    step = math.radians(cfg.rotation_speed_deg)
    limit = math.radians(cfg.pitch_limit_deg)
    R, t = pose[:3, :3].copy(), pose[:3, 3].copy()
    pitch = yaw_pitch_roll(R)[1]

    out = np.empty((len(frames) + 1, 4, 4))
    out[0] = pose
    for f, held in enumerate(frames, start=1):
        dpitch = step * (("i" in held) - ("k" in held))
        if -limit <= pitch + dpitch <= limit:
            pitch += dpitch
        else:
            dpitch = 0.0
        dyaw = step * (("l" in held) - ("j" in held))
        R = rot_y(dyaw) @ R @ rot_x(dpitch)

        forward, right = R[:, 2].copy(), R[:, 0].copy()
        forward[1] = right[1] = 0.0
        for axis in (forward, right):
            norm = np.linalg.norm(axis)
            if norm > 0.0:
                axis /= norm
        t = t + cfg.translation_speed * (
            (("w" in held) - ("s" in held)) * forward + (("d" in held) - ("a" in held)) * right
        )
        out[f, :3, :3] = R
        out[f, :3, 3] = t
        out[f, 3] = (0.0, 0.0, 0.0, 1.0)
    return out if include_start else out[1:]
