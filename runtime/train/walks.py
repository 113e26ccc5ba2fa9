"""Random walks through the reference world: the training and evaluation data of the bundled model.

A walk is what a player might do: hold a random intent (walk forward, strafe, turn, look up or
down, stand still, combinations of these) for a random stretch of time, then pick another. The
intents drive the same `PoseIntegrator` the viewer uses at the content frame rate, so the motion
statistics (speeds, turn rates, easing) are those the model meets in play. A walk that strays
too far from the spawn point is steered back toward it, and pitch drifts back to level, so the
camera stays where the world is interesting.

A share of training clips (`WalkConfig.revisit`) retrace their own path: the camera goes along
a random walk for a few frames, then back along the same poses to the start, and out again (a
triangle wave in time), so the model is taught to bring back what it saw when the camera returns,
as a player walking out and back, strafing and returning or looking up and down again does.

Another share (`WalkConfig.approach`) walk straight at a landmark, as a player walks at the thing
in view: a start 8 to 30 units from one of the ring's landmarks, facing it, "w" held until a few
units short of it. Random walks almost never do this (in 3 of 320 clips of 3 s the eval's blue mask
grew twofold; walking at the block ahead of the spawn point for 6 s grows it fivefold), so without
these the model is hardly ever shown how a thing grows as the camera nears it. Starts within `approach_avoid` of
the eval's landmark starts are drawn again, so those walks stay held out.

`WalkConfig` fixes the frame size, rate and field of view; `random_walk` makes poses; `approach_walk`
walks at a landmark; `retrace` folds them back on themselves; `render_clips` renders clips (frames, poses, intrinsics);
`ClipCache` keeps a pre-rendered set in `.npy` files so training reads frames instead of
re-rendering them.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldwalk.controls import (
    DEFAULT_FOV_DEG,
    InputState,
    IntegratorConfig,
    PoseIntegrator,
    intrinsics_from_fov,
    rot_y,
    yaw_pitch_roll,
)
from worldwalk.runtime.safe_files import UnsafeFileError, printable, replaced

__all__ = ["WalkConfig", "Clip", "random_walk", "approach_walk", "retrace", "render_clips", "ClipCache", "INTENTS"]

# Intents as held key sets (default bindings) and their sampling weights: mostly walking and
# turning, as a player does; standing still and looking around are rarer.
INTENTS: tuple[tuple[frozenset[str], float], ...] = (
    (frozenset({"w"}), 3.0),
    (frozenset({"w", "left"}), 1.2),
    (frozenset({"w", "right"}), 1.2),
    (frozenset({"left"}), 1.0),
    (frozenset({"right"}), 1.0),
    (frozenset({"a"}), 0.6),
    (frozenset({"d"}), 0.6),
    (frozenset({"s"}), 0.5),
    (frozenset({"w", "a"}), 0.4),
    (frozenset({"w", "d"}), 0.4),
    (frozenset({"w", "shift"}), 0.6),
    (frozenset({"up"}), 0.25),
    (frozenset({"down"}), 0.25),
    (frozenset(), 0.8),
)


@dataclass
class WalkConfig:
    width: int = 160
    height: int = 96
    fps: float = 16.0
    fov_x: float = DEFAULT_FOV_DEG  # degrees
    world_seed: int = 0  # the reference world the bundled model is trained on
    min_hold: float = 0.4  # s, shortest time an intent is held
    max_hold: float = 2.5  # s, longest
    home_radius: float = 45.0  # beyond this distance from the spawn point, steer back
    max_pitch: float = 25.0  # degrees; beyond it the walk looks back toward level
    turn_speed: float = 60.0  # deg/s of the turn keys during walks (IntegratorConfig.turn_speed)
    move_speed: float = 2.0  # units/s (IntegratorConfig.move_speed)
    revisit: float = 0.0  # share of rendered clips that retrace their path (training data; eval walks: 0)
    revisit_frames: tuple[int, int] = (6, 18)  # frames out before turning back, drawn uniformly
    approach: float = 0.0  # share of rendered clips that walk straight at a landmark (training data)
    approach_distance: tuple[float, float] = (8.0, 30.0)  # units from the landmark at the start
    approach_avoid: tuple[tuple[float, float], ...] = ()  # (x, z): no approach starts within 4 units
    approach_turn: float = 0.0  # share of the approach clips that turn away from the landmark part-way

    def intrinsics(self) -> np.ndarray:
        return intrinsics_from_fov(self.width, self.height, self.fov_x)

    def integrator(self) -> IntegratorConfig:
        return IntegratorConfig(move_speed=self.move_speed, turn_speed=self.turn_speed)


@dataclass
class Clip:
    frames: np.ndarray  # (F, H, W, 3) uint8
    poses: np.ndarray  # (F, 4, 4) float64 camera-to-world
    intrinsics: np.ndarray  # (F, 3, 3)


def _pick_intent(rng: np.random.Generator, pose: np.ndarray, cfg: WalkConfig) -> frozenset[str]:
    yaw, pitch, _ = yaw_pitch_roll(pose[:3, :3])
    if abs(math.degrees(pitch)) > cfg.max_pitch:
        return frozenset({"down"} if pitch > 0 else {"up"})
    pos = pose[:3, 3]
    dist = math.hypot(pos[0], pos[2])
    if dist > cfg.home_radius:
        home = math.atan2(-pos[0], -pos[2])  # heading (from +z toward +x) that points at the origin
        err = math.remainder(home - yaw, math.tau)
        if abs(err) > 0.5:
            return frozenset({"w", "right" if err > 0 else "left"})
    weights = np.array([w for _, w in INTENTS])
    return INTENTS[int(rng.choice(len(INTENTS), p=weights / weights.sum()))][0]


def random_walk(n_frames: int, seed: int, cfg: WalkConfig | None = None, start: np.ndarray | None = None
                ) -> np.ndarray:
    """Camera-to-world poses (n_frames, 4, 4) of a random walk; frame 0 is the start pose.

    Without `start`, the walk begins at a random place within 25 units of the spawn point, facing
    a random heading, after a short random run-up so it may already be moving.
    """
    cfg = cfg or WalkConfig()
    rng = np.random.default_rng(seed)
    integ = PoseIntegrator(cfg.integrator())
    if start is None:
        r, a, heading = 25.0 * math.sqrt(rng.uniform()), rng.uniform(0, math.tau), rng.uniform(0, math.tau)
        c, s = math.cos(heading), math.sin(heading)
        start = np.eye(4)
        start[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        start[[0, 2], 3] = r * math.sin(a), r * math.cos(a)
    integ.reset(start)
    dt = 1.0 / cfg.fps
    runup = int(rng.integers(0, int(cfg.fps)))
    poses = np.empty((n_frames, 4, 4))
    keys: frozenset[str] = frozenset()
    left = 0
    for i in range(-runup, n_frames):
        if left <= 0:
            keys = _pick_intent(rng, integ.pose, cfg)
            left = int(rng.uniform(cfg.min_hold, cfg.max_hold) * cfg.fps)
        if i >= 0:
            poses[i] = integ.pose
        integ.tick(dt, InputState(keys=keys))
        left -= 1
    return poses


def approach_walk(n_frames: int, seed: int, cfg: WalkConfig | None = None) -> np.ndarray:
    """Camera-to-world poses (n_frames, 4, 4) walking straight at one of the ring's landmarks (module doc).

    The start stands within `home_radius` of the spawn point, 4 units or more from every
    `approach_avoid` point, facing the landmark to within 8 degrees; the camera stops 3 units short of
    the landmark's side. A share `approach_turn` of them turn away (left or right, in place) after
    30 to 60 % of the clip, so the landmark is also seen leaving the view."""
    from worldwalk.runtime.worlds.reference_world import landmarks

    cfg = cfg or WalkConfig()
    rng = np.random.default_rng(seed)
    shape = landmarks(cfg.world_seed).shape
    ring = shape[np.hypot(shape[:, 0], shape[:, 1]) < 80.0]  # the far tower is not walked to
    for _ in range(1000):
        x, z, size, _top = ring[int(rng.integers(len(ring)))]
        d, bearing = rng.uniform(*cfg.approach_distance), rng.uniform(0, math.tau)
        px, pz = x + d * math.sin(bearing), z + d * math.cos(bearing)
        if math.hypot(px, pz) <= cfg.home_radius and all(
                math.hypot(px - ax, pz - az) >= 4.0 for ax, az in cfg.approach_avoid):
            break
    else:
        raise ValueError("approach_walk: no start outside approach_avoid within home_radius; widen them")
    start = np.eye(4)
    start[:3, :3] = rot_y(math.atan2(x - px, z - pz) + math.radians(rng.uniform(-8.0, 8.0)))
    start[0, 3], start[2, 3] = px, pz
    turn_rng = np.random.default_rng((seed, 31))  # its own draws: clips that do not turn are as before
    turn_at, turn = n_frames, frozenset({"left" if turn_rng.uniform() < 0.5 else "right"})
    if turn_rng.uniform() < cfg.approach_turn:
        turn_at = int(turn_rng.uniform(0.3, 0.6) * n_frames)
    integ = PoseIntegrator(cfg.integrator())
    integ.reset(start)
    poses = np.empty((n_frames, 4, 4))
    for i in range(n_frames):
        poses[i] = integ.pose
        near = math.hypot(integ.pose[0, 3] - x, integ.pose[2, 3] - z) < size + 3.0
        keys = turn if i >= turn_at else frozenset() if near else frozenset({"w"})
        integ.tick(1.0 / cfg.fps, InputState(keys=keys))
    return poses


def retrace(poses: np.ndarray, turn: int) -> np.ndarray:
    """Poses (F, 4, 4) that follow `poses` for `turn` frames, come back along them to frame 0, and repeat."""
    if turn < 1:
        raise ValueError(f"retrace needs turn >= 1, got {turn}")
    m = np.arange(len(poses)) % (2 * turn)
    return poses[np.where(m <= turn, m, 2 * turn - m)].copy()


def render_clips(n_clips: int, n_frames: int, seed: int, cfg: WalkConfig | None = None,
                 world: object | None = None) -> Iterator[Clip]:
    """Render `n_clips` random walks of `n_frames` each from the reference world (seeded)."""
    from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

    cfg = cfg or WalkConfig()
    own = world is None
    if own:
        world = ReferenceWorld(ReferenceWorldConfig(width=cfg.width, height=cfg.height, fps=cfg.fps,
                                                    seed=cfg.world_seed))
    K = np.broadcast_to(cfg.intrinsics(), (n_frames, 3, 3)).copy()
    try:
        for c in range(n_clips):
            approach = cfg.approach > 0 and np.random.default_rng((seed, c, 29)).uniform() < cfg.approach
            poses = (approach_walk if approach else random_walk)(n_frames, seed * 1_000_003 + c, cfg)
            if cfg.revisit > 0:
                rng = np.random.default_rng((seed, c, 17))
                if rng.uniform() < cfg.revisit:
                    poses = retrace(poses, int(rng.integers(cfg.revisit_frames[0], cfg.revisit_frames[1] + 1)))
            frames = world.render_many(poses, K)  # type: ignore[union-attr]
            yield Clip(frames=frames, poses=poses, intrinsics=K.copy())
    finally:
        if own:
            world.close()  # type: ignore[union-attr]


class ClipCache:
    """A pre-rendered set of clips in a folder: frames.npy (N, F, H, W, 3) uint8, poses.npy
    (N, F, 4, 4), intrinsics.npy (N, F, 3, 3). Built once, then memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def exists(self) -> bool:
        return all((self.folder / f"{n}.npy").exists() for n in ("frames", "poses", "intrinsics"))

    def build(self, n_clips: int, n_frames: int, seed: int, cfg: WalkConfig | None = None,
              progress: bool = True) -> None:
        cfg = cfg or WalkConfig()
        self.folder.mkdir(parents=True, exist_ok=True)
        # a fresh name nobody could have planted a link at (the folder may be shared); moved in place at the end
        fd, name = tempfile.mkstemp(dir=self.folder, prefix=".frames.npy.", suffix=".part")
        os.close(fd)
        tmp = Path(name)
        frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(n_clips, n_frames, cfg.height, cfg.width, 3))
        poses = np.empty((n_clips, n_frames, 4, 4))
        intr = np.empty((n_clips, n_frames, 3, 3))
        it = render_clips(n_clips, n_frames, seed, cfg)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=n_clips, desc=f"render {self.folder.name}", unit="clip")
        for i, clip in enumerate(it):
            frames[i], poses[i], intr[i] = clip.frames, clip.poses, clip.intrinsics
        frames.flush()
        del frames
        for kind, a in (("poses", poses), ("intrinsics", intr)):
            with replaced(self.folder / f"{kind}.npy") as f:
                np.save(f, a)
        if (self.folder / "frames.npy").is_symlink():
            tmp.unlink()
            raise UnsafeFileError(f"{printable(self.folder / 'frames.npy')} is a symbolic link; remove it")
        tmp.replace(self.folder / "frames.npy")

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frames memmap (N, F, H, W, 3) uint8, poses (N, F, 4, 4), intrinsics (N, F, 3, 3))."""
        if not self.exists():
            raise FileNotFoundError(f"no clip cache in {self.folder}; build it first (worldwalk train --stage data)")
        from .state_file import restoring, work_file

        files = [work_file(self.folder / f"{n}.npy") for n in ("frames", "poses", "intrinsics")]
        with restoring(self.folder):
            return np.load(files[0], mmap_mode="r"), np.load(files[1]), np.load(files[2])
