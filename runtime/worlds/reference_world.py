"""`ReferenceWorld`: a procedural 3D world rendered by a GLSL ray marcher, ground truth for poses.

It implements the `WorldModel` seam so every sink can show it, but it is a renderer, not a model:
`spec.is_model` is False and its label says so. Each frame is the exact view of the world from
the pose asked for, which makes it the training and evaluation target of the bundled model and a
frame source for pipeline tests and benchmarks.

The world (terrain, water, sky, mountains and seeded landmarks) is `shaders/reference_world.glsl`;
this file places the landmarks for a seed, owns the headless EGL context and reads frames back.
All GL work runs on the process's shared GL thread (`shared_gl_thread`), so a world built on one
thread renders from any other (the session's model thread), whatever contexts those threads have
current (a viewer's window, say). Worlds share that one EGL context (a context per world leaked
driver memory at every build) and its compiled program; each world owns only its framebuffer and
vertex array, and sets its own uniforms (size, seed, landmarks) before each draw.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import moderngl
import numpy as np

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.world import ModelSpec, WorldConfig
from worldwalk.runtime.world_options import Integer, WorldOptionError, check_options
from worldwalk.shaders import create_program

from .gl_context import shared_gl_thread

__all__ = ["Landmarks", "ReferenceWorld", "ReferenceWorldConfig", "ReferenceWorldState", "create", "landmarks"]

LABEL = "reference renderer (ground truth, not a model)"
MAX_LANDMARKS = 16  # must match MAX_LANDMARKS in reference_world.glsl
GROUND = -1.5  # the shader's meadow level (scene frame, y up): 1.5 below a camera at the origin
MAX_CHUNK_BYTES = 2**30  # one chunk's frames (F x H x W x 3 bytes): a renderer needs a few, not gigabytes

# The options `create` reads from WorldConfig.options, and their limits (a session log may carry any).
OPTIONS = {
    "frames_per_chunk": Integer(1, 1024, "frames a chunk"),  # 1024: the most a session log's chunk holds
    "march_steps": Integer(8, 1024, "samples a ray"),
    "shadow_steps": Integer(0, 64, "samples a shadow ray"),
}

# Landmark colours (linear RGB), far apart in hue so each place is recognisable.
PALETTE = np.array(
    [
        (0.80, 0.05, 0.04),  # red
        (0.90, 0.30, 0.02),  # orange
        (0.90, 0.70, 0.03),  # yellow
        (0.02, 0.50, 0.60),  # teal
        (0.03, 0.10, 0.80),  # blue
        (0.28, 0.05, 0.65),  # violet
        (0.80, 0.05, 0.35),  # magenta
        (0.85, 0.85, 0.82),  # white
        (0.04, 0.04, 0.05),  # black
    ]
)
PILLAR, BALL, BLOCK = 0, 1, 2


@dataclass
class ReferenceWorldConfig:
    """Frame size and stream shape of the reference world, and the shader's cost knobs."""

    width: int = 256
    height: int = 144
    fps: float = 16.0
    # It renders any frame on its own, so it plans a frame at a time: the freshest input for each
    # frame (the first chunk has as many)
    frames_per_chunk: int = 1
    seed: int = 0
    march_steps: int = 80  # terrain samples per ray: cost versus reach toward the horizon
    shadow_steps: int = 6  # terrain samples per shadow ray (0: landmarks cast the only shadows)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")
        if self.frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {self.frames_per_chunk}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.march_steps < 8 or self.shadow_steps < 0:
            raise ValueError("march_steps must be >= 8 and shadow_steps >= 0")
        nbytes = self.frames_per_chunk * self.width * self.height * 3
        if nbytes > MAX_CHUNK_BYTES:
            most = max(1, MAX_CHUNK_BYTES // (self.width * self.height * 3))
            raise WorldOptionError(
                f"reference world option 'frames_per_chunk' is {self.frames_per_chunk}: a chunk of that many "
                f"{self.width}x{self.height} frames takes {nbytes / 2**30:.1f} GiB, beyond the world's limit of "
                f"{MAX_CHUNK_BYTES / 2**30:g} GiB a chunk; set it to {most} or fewer at this size")


@dataclass(frozen=True)
class ReferenceWorldState:
    """What `snapshot` captures: the renderer has no memory beyond its position in the stream."""

    chunk_index: int
    seed: int


@dataclass(frozen=True)
class Landmarks:
    """The landmarks of one seed's world, sorted by kind as the shader loops over them."""

    shape: np.ndarray  # (N, 4) x, z, size, top (scene frame, y up; a ball's top is its centre)
    color: np.ndarray  # (N, 3) linear RGB
    kind: np.ndarray  # (N,) PILLAR, BALL or BLOCK, non-decreasing


def landmarks(seed: int) -> Landmarks:
    """Landmarks of the world for `seed`.

    Nine stand in a ring of sectors 12 to 70 units from the spawn point, the first straight ahead
    of the identity pose (world +z); a tall striped tower about 95 units out shows the way from
    everywhere. Sizes: pillars of radius 0.6-1.2 rising 5-12 above the meadow, balls of radius
    1.2-2.4 floating, blocks 2.4-5 wide and 1.5-5 tall.
    """
    rng = np.random.default_rng(seed % 2**32)
    n = 9
    kinds = np.tile(rng.permutation([PILLAR, BALL, BLOCK]), 3)
    colors = rng.permutation(len(PALETTE))[:n]
    bearing = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * math.pi / n)  # from +z toward +x
    radius = rng.uniform(12.0, 70.0, n)
    bearing[0], radius[0] = rng.uniform(-0.25, 0.25), rng.uniform(16.0, 24.0)  # seen at the start
    shape = np.zeros((n + 1, 4))
    color = np.zeros((n + 1, 3))
    kind = np.zeros(n + 1, np.int64)
    for i in range(n):
        if kinds[i] == PILLAR:
            size = rng.uniform(0.6, 1.2)
            top = GROUND + rng.uniform(5.0, 12.0)
        elif kinds[i] == BALL:
            size = rng.uniform(1.2, 2.4)
            top = GROUND + size + rng.uniform(0.4, 3.0)  # it floats
        else:
            size = rng.uniform(1.2, 2.5)
            top = GROUND + rng.uniform(1.5, 5.0)
        shape[i] = (radius[i] * math.sin(bearing[i]), radius[i] * math.cos(bearing[i]), size, top)
        color[i], kind[i] = PALETTE[colors[i]], kinds[i]
    tower = rng.uniform(0, 2 * math.pi)
    shape[n] = (95.0 * math.sin(tower), 95.0 * math.cos(tower), 2.5, GROUND + 45.0)
    color[n], kind[n] = PALETTE[0], PILLAR
    order = np.argsort(kind, kind="stable")
    return Landmarks(shape=shape[order], color=color[order], kind=kind[order])


def _check_poses(poses: Any, batched: bool) -> np.ndarray:
    expected = "(F, 4, 4)" if batched else "(4, 4)"
    what = "poses" if batched else "pose"
    a = np.asarray(poses, dtype=np.float64)
    if a.ndim != (3 if batched else 2) or a.shape[-2:] != (4, 4) or (batched and a.shape[0] == 0):
        raise ValueError(
            f"{what} must be camera-to-world matrices of shape {expected}, got shape {a.shape}"
            + ("; for one pose call render(pose, K)" if batched and a.shape == (4, 4) else "")
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{what} {expected} contains NaN or infinite values")
    rot = a[..., :3, :3]
    err = np.abs(np.swapaxes(rot, -1, -2) @ rot - np.eye(3)).max()
    if err > 1e-3:
        raise ValueError(
            f"{what} {expected}: the upper-left 3x3 must be a rotation (orthonormal), off by {err:.3g}"
        )
    return a


def _check_intrinsics(K: Any, batched: bool, count: int | None = None) -> np.ndarray:
    expected = "(F, 3, 3)" if batched else "(3, 3)"
    what = "intrinsics" if batched else "K"
    a = np.asarray(K, dtype=np.float64)
    if a.ndim != (3 if batched else 2) or a.shape[-2:] != (3, 3):
        raise ValueError(f"{what} must be pixel intrinsics of shape {expected}, got shape {a.shape}")
    if count is not None and a.shape[0] != count:
        raise ValueError(f"intrinsics {a.shape} must have one matrix per pose: ({count}, 3, 3)")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} {expected} contains NaN or infinite values")
    if (a[..., 0, 0] <= 0).any() or (a[..., 1, 1] <= 0).any():
        raise ValueError(f"{what} {expected}: focal lengths fx = K[0,0] and fy = K[1,1] must be positive")
    return a


class ReferenceWorld:
    """The procedural world as a `WorldModel`: renders exactly the poses it is given."""

    def __init__(self, cfg: ReferenceWorldConfig | None = None) -> None:
        self.cfg = cfg = cfg or ReferenceWorldConfig()
        self._gl = shared_gl_thread()
        self._closed = False
        self._uniforms: dict[str, Any] = {}  # this world's values, set before each draw
        try:
            self.renderer: str = self._gl.call(self._build)
        except BaseException:
            self._gl.call(self._release)
            raise
        software = any(name in self.renderer.lower() for name in ("llvmpipe", "softpipe", "swrast"))
        self.spec = ModelSpec(
            name="reference",
            fps=cfg.fps,
            frames_per_chunk=cfg.frames_per_chunk,
            first_chunk_frames=cfg.frames_per_chunk,
            width=cfg.width,
            height=cfg.height,
            device="cpu" if software else "gpu",
            dtype="uint8",
            is_model=False,
            label=LABEL,
        )
        self._chunk_index = 0
        self.seed = cfg.seed
        self._set_seed(cfg.seed)

    # -- WorldModel -----------------------------------------------------------------------------

    def reset(self, first_frame: np.ndarray | None = None, prompt: str | None = None, seed: int = 0) -> None:
        """Start a new stream in the world of `seed` (a renderer ignores the frame and prompt)."""
        self._set_seed(seed)
        self._chunk_index = 0

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        """Render poses (F, 4, 4) with intrinsics (F, 3, 3); any F >= 1 is accepted."""
        start = time.perf_counter()
        poses = _check_poses(poses, batched=True)
        intrinsics = _check_intrinsics(intrinsics, batched=True, count=len(poses))
        frames = self._render_checked(poses, intrinsics)  # (F, H, W, 3)
        chunk = Chunk(
            frames=frames,
            poses=poses.copy(),
            intrinsics=intrinsics.copy(),
            index=self._chunk_index,
            timings={"render": time.perf_counter() - start},
        )
        self._chunk_index += 1
        return chunk

    def snapshot(self) -> ReferenceWorldState:
        return ReferenceWorldState(chunk_index=self._chunk_index, seed=self.seed)

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, ReferenceWorldState):
            raise TypeError(f"restore() takes a ReferenceWorld snapshot, got {type(snapshot).__name__}")
        if snapshot.seed != self.seed:
            self._set_seed(snapshot.seed)
        self._chunk_index = snapshot.chunk_index

    def close(self) -> None:
        """Release this world's GL objects (the shared context stays); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self._gl.closed:
            self._gl.call(self._release)

    def __enter__(self) -> ReferenceWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering ------------------------------------------------------------------------------

    def render(self, pose: np.ndarray, K: np.ndarray) -> np.ndarray:
        """The view from camera-to-world `pose` (4, 4) with pixel intrinsics `K` (3, 3).

        Returns (H, W, 3) uint8 RGB, top row first, at the configured size. K's principal point
        uses OpenCV's convention (pixel centres at integers); its skew is ignored.
        """
        pose = _check_poses(pose, batched=False)
        K = _check_intrinsics(K, batched=False)
        return self._render_checked(pose[None], K[None])[0]

    def render_many(self, poses: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Views for poses (F, 4, 4) with intrinsics (F, 3, 3) -> (F, H, W, 3) uint8."""
        poses = _check_poses(poses, batched=True)
        K = _check_intrinsics(K, batched=True, count=len(poses))
        return self._render_checked(poses, K)

    def _render_checked(self, poses: np.ndarray, K: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("this ReferenceWorld is closed; create a new one")
        return self._gl.call(self._draw, poses, K)

    def _set_seed(self, seed: int) -> None:
        seed = int(seed)
        if self._closed:
            raise RuntimeError("this ReferenceWorld is closed; create a new one")
        self._uniforms.update(_world_uniforms(seed))  # uploaded with the next draw
        self.seed = seed

    # -- on the GL thread -----------------------------------------------------------------------

    def _build(self) -> str:
        ctx, cfg = self._gl.ctx, self.cfg
        key = ("reference_world", cfg.march_steps, cfg.shadow_steps)
        program = self._gl.cache.get(key)
        if program is None:  # compiled once per shader variant, for every world of the process
            defines = {"MARCH_STEPS": cfg.march_steps, "SHADOW_STEPS": cfg.shadow_steps}
            program = self._gl.cache[key] = create_program(ctx, "reference_world", defines)
        self._program = program
        self._vao = ctx.vertex_array(program, [])
        self._fbo = ctx.simple_framebuffer((cfg.width, cfg.height), components=4)
        self._uniforms["u_resolution"] = (cfg.width, cfg.height)
        return str(ctx.info["GL_RENDERER"])

    def _release(self) -> None:
        fbo = getattr(self, "_fbo", None)
        # a framebuffer's release leaves its attachments alive (~17 KB of driver memory a world)
        attachments = [*fbo.color_attachments, fbo.depth_attachment] if fbo is not None else []
        for obj in [getattr(self, "_vao", None), fbo, *attachments]:
            if obj is not None:  # the program is the context's, shared by every world
                obj.release()
        self._vao = self._fbo = None

    def _draw(self, poses: np.ndarray, K: np.ndarray) -> np.ndarray:
        h, w = self.cfg.height, self.cfg.width
        out = np.empty((len(poses), h, w, 3), np.uint8)  # (F, H, W, 3)
        program, fbo = self._program, self._fbo
        for name, value in self._uniforms.items():  # the shared program holds the last world's values
            if isinstance(value, np.ndarray):
                program[name].write(value)
            else:
                program[name].value = value
        fbo.use()
        for i, (pose, k) in enumerate(zip(poses, K, strict=True)):
            # GLSL reads a mat3 column by column: hand it the transpose of numpy's rows.
            program["u_rotation"].write(np.ascontiguousarray(pose[:3, :3].T, np.float32))
            program["u_position"].value = tuple(pose[:3, 3])
            program["u_intrinsics"].value = (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
            self._vao.render(moderngl.TRIANGLES, vertices=3)
            data = fbo.read(components=3, alignment=1)
            out[i] = np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1]  # GL rows come bottom-up
        return out


def _world_uniforms(seed: int) -> dict[str, Any]:
    """The shader's uniforms that describe the world of `seed` (its landmarks)."""
    marks = landmarks(seed)
    shape = np.zeros((MAX_LANDMARKS, 4), np.float32)
    color = np.zeros((MAX_LANDMARKS, 3), np.float32)
    shape[: len(marks.kind)], color[: len(marks.kind)] = marks.shape, marks.color
    return {
        "u_seed": seed % 2**32,
        "u_pillars": int(np.sum(marks.kind == PILLAR)),
        "u_balls": int(np.sum(marks.kind <= BALL)),
        "u_landmarks": len(marks.kind),
        "u_landmark_shape": shape,
        "u_landmark_color": color,
    }


def create(cfg: WorldConfig) -> ReferenceWorld:
    """Entry point of the `reference` world: WorldConfig (+ options such as frames_per_chunk)."""
    options = check_options("reference", cfg.options, OPTIONS)
    return ReferenceWorld(
        ReferenceWorldConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, seed=cfg.seed, **options)
    )
