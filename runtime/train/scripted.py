"""Scripted camera paths for `worldwalk eval`: what players walk on purpose, beside the random walks.

Each path is built with the viewer's `PoseIntegrator` (same speeds and easing as play) and, where
it comes back, retraced along its own poses, so the camera is back at the start pose exactly at
`returns` (a frame index) and stays there (a player who walked back stops to look), and the true
frames from there on are the first frame again:

  out-and-back        walk forward 3 s, then back along the same line (at the start at 6 s)
  strafe-right-left   strafe right 2 s, then left back (at the start at 4 s)
  turn-360            turn right at 60 deg/s in place, a full turn in 6 s (at the start at 6 s)
  look-up-down        look up 1 s, then back down (at the start at 2 s)
  toward-landmark     face the landmark that stands ahead of the spawn point and walk at it 6 s

`start_poses` gives the starts: the spawn point (identity; its view holds the first landmark),
then random ones from the random walks' start distribution. The landmark path always starts at
a pose facing landmark 0 (the spawn point for the first start, then 10 units to either side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldwalk.controls import InputState, PoseIntegrator, rot_y

from .walks import WalkConfig, random_walk

__all__ = ["GHOST_SIDES", "LANDMARK_STARTS", "PATHS", "ScriptedPath", "facing_landmark", "landmark_ahead",
           "landmark_starts", "scripted_path", "start_poses"]

PATHS = ("out-and-back", "strafe-right-left", "turn-360", "look-up-down", "toward-landmark")
LANDMARK_STARTS = 3  # the eval's landmark goals walk at the block from this many starts
GHOST_SIDES = (8.0, -8.0, 12.0, -12.0, 14.0, -14.0)  # more starts the eval turns from (units across the line of
# sight, facing the block; beside the landmark starts at 0 and 10, which approach clips keep 4 units away from)


@dataclass
class ScriptedPath:
    name: str
    poses: np.ndarray  # (F, 4, 4) camera-to-world
    returns: int | None  # first frame back at poses[0] (exactly), or None


def _hold(start: np.ndarray, keys: set[str], n: int, cfg: WalkConfig) -> np.ndarray:
    """Poses (n, 4, 4) from `start` with `keys` held, at the walks' frame rate and speeds."""
    integ = PoseIntegrator(cfg.integrator())
    integ.reset(start)
    out = np.empty((n, 4, 4))
    for i in range(n):
        out[i] = integ.pose
        integ.tick(1.0 / cfg.fps, InputState(keys=frozenset(keys)))
    return out


def scripted_path(name: str, start: np.ndarray, n_frames: int, cfg: WalkConfig | None = None) -> ScriptedPath:
    """Path `name` (one of PATHS) of `n_frames` poses from `start` (4, 4)."""
    cfg = cfg or WalkConfig()
    fps = int(round(cfg.fps))
    if name == "out-and-back":
        return ScriptedPath(name, _retraced(start, {"w"}, 3 * fps, n_frames, cfg), 6 * fps)
    if name == "strafe-right-left":
        return ScriptedPath(name, _retraced(start, {"d"}, 2 * fps, n_frames, cfg), 4 * fps)
    if name == "look-up-down":
        return ScriptedPath(name, _retraced(start, {"up"}, fps, n_frames, cfg), 2 * fps)
    if name == "turn-360":
        period = 6 * fps  # 60 deg/s, the turn keys' speed
        poses = np.repeat(start[None], n_frames, axis=0)
        for i in range(min(n_frames, period)):  # then still, facing the start's way again
            poses[i, :3, :3] = rot_y(2 * math.pi * i / period) @ start[:3, :3]
        return ScriptedPath(name, poses, period)
    if name == "toward-landmark":
        return ScriptedPath(name, _hold(start, {"w"}, n_frames, cfg), None)
    raise ValueError(f"unknown scripted path {name!r}; known: {', '.join(PATHS)}")


def _retraced(start: np.ndarray, keys: set[str], turn: int, n_frames: int, cfg: WalkConfig) -> np.ndarray:
    """Out for `turn` frames with `keys` held, back along the same poses, then still at the start."""
    out = _hold(start, keys, turn + 1, cfg)
    m = np.minimum(np.arange(n_frames), 2 * turn)
    return out[np.where(m <= turn, m, 2 * turn - m)].copy()


def start_poses(n: int, seed: int, landmark_xz: tuple[float, float], cfg: WalkConfig | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(starts for the paths, starts facing the landmark at `landmark_xz`), `n` of each.

    The first start is the spawn point (identity) for both lists."""
    cfg = cfg or WalkConfig()
    starts = [np.eye(4)] + [random_walk(1, seed * 7919 + j, cfg)[0] for j in range(1, n)]
    toward = [facing_landmark((0.0, 10.0, -10.0)[j % 3] * (1 + j // 3), landmark_xz) for j in range(n)]
    return starts, toward


def facing_landmark(side: float, landmark_xz: tuple[float, float]) -> np.ndarray:
    """The pose `side` units across the spawn point's line of sight to the landmark (positive: to the right of
    it looking from the spawn point), facing the landmark."""
    lx, lz = landmark_xz
    dist = math.hypot(lx, lz)
    px, pz = (side * lz / dist, -side * lx / dist) if dist > 0 else (side, 0.0)
    pose = np.eye(4)
    pose[:3, :3] = rot_y(math.atan2(lx - px, lz - pz))
    pose[0, 3], pose[2, 3] = px, pz
    return pose


def landmark_ahead(world_seed: int) -> tuple[float, float]:
    """Where the landmark ahead of the spawn point stands (world x, z): the nearest one within 30 deg of +z."""
    from worldwalk.runtime.worlds.reference_world import landmarks

    shape = landmarks(world_seed).shape
    ahead = [(float(np.hypot(x, z)), x, z) for x, z in shape[:, :2]
             if z > 0 and abs(math.atan2(x, z)) < math.radians(30) and np.hypot(x, z) < 40]
    _, x, z = min(ahead)
    return float(x), float(z)


def landmark_starts(cfg: WalkConfig | None = None) -> tuple[tuple[float, float], ...]:
    """(x, z) of the eval's landmark starts: what training's approach walks keep away from (walks.py)."""
    cfg = cfg or WalkConfig()
    _, toward = start_poses(LANDMARK_STARTS, 0, landmark_ahead(cfg.world_seed), cfg)
    return tuple((float(p[0, 3]), float(p[2, 3])) for p in toward)
