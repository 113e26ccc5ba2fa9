"""ReferenceWorld on a headless EGL context: determinism, motion, turns, threads, errors, the seam."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.world import WorldConfig, WorldModel
from worldwalk.runtime.worlds.reference_world import (
    LABEL,
    ReferenceWorld,
    ReferenceWorldConfig,
    ReferenceWorldState,
    create,
    landmarks,
)

from .conftest import DEFAULT_FOV_DEG, gl_or_skip

pytestmark = pytest.mark.gl

W, H = 128, 72


def intrinsics(w: int = W, h: int = H, fov_x_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    fx = (w / 2) / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[fx, 0.0, (w - 1) / 2], [0.0, fx, (h - 1) / 2], [0.0, 0.0, 1.0]])


def pose(yaw: float = 0.0, pitch: float = 0.0, position=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world: Ry(yaw) @ Rx(pitch), positive yaw turns right, positive pitch looks up."""
    c, s = math.cos(yaw), math.sin(yaw)
    ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    c, s = math.cos(pitch), math.sin(pitch)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    out = np.eye(4)
    out[:3, :3] = ry @ rx
    out[:3, 3] = position
    return out


def make_world(**cfg) -> ReferenceWorld:
    return gl_or_skip(lambda: ReferenceWorld(ReferenceWorldConfig(**{"width": W, "height": H, **cfg})))


@pytest.fixture(scope="module")
def world():
    w = make_world()
    yield w
    w.close()


@pytest.fixture(autouse=True)
def fresh_seed(world):
    world.reset(None, None, seed=0)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_same_pose_and_seed_give_the_same_image(world):
    K = intrinsics()
    p = pose(0.3, 0.05, (2.0, 0.0, 5.0))
    a = world.render(p, K)
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, world.render(p, K))
    other = make_world()  # a second context renders the very same pixels
    try:
        np.testing.assert_array_equal(a, other.render(p, K))
    finally:
        other.close()


def test_the_seed_changes_the_world_and_reset_brings_it_back(world):
    K, p = intrinsics(), pose()
    a = world.render(p, K)
    world.reset(None, None, seed=1)
    b = world.render(p, K)
    assert mean_abs_diff(a, b) > 5.0
    world.reset(None, None, seed=0)
    np.testing.assert_array_equal(a, world.render(p, K))
    # Landmarks are placed by the seed too, deterministically.
    np.testing.assert_array_equal(landmarks(3).shape, landmarks(3).shape)
    assert not np.allclose(landmarks(3).shape, landmarks(4).shape)


def test_the_picture_is_a_world_not_a_blank(world):
    img = world.render(pose(), intrinsics()).astype(float)
    assert img.std() > 20.0
    top, bottom = img[: H // 6].reshape(-1, 3), img[-H // 6 :].reshape(-1, 3)
    # World y points down: at identity the sky fills the top rows and the ground the bottom.
    assert top.mean() > bottom.mean() + 20.0, "sky at the top is brighter than the ground below"
    assert top[:, 2].mean() > top[:, 0].mean() + 15.0, "the sky is blue"
    assert bottom[:, 1].mean() > bottom[:, 2].mean(), "the ground is green-ish, not sky"


def test_walking_forward_changes_the_view(world):
    K = intrinsics()
    a = world.render(pose(), K)
    b = world.render(pose(position=(0.0, 0.0, 1.0)), K)  # one unit along the camera's +z
    assert mean_abs_diff(a, b) > 2.0
    # The ground near the feet (the bottom rows) moves; the far sky (the top rows) hardly does.
    assert mean_abs_diff(a[-H // 4 :], b[-H // 4 :]) > mean_abs_diff(a[: H // 6], b[: H // 6])


def test_a_full_turn_returns_the_same_image(world):
    K = intrinsics()
    for yaw0, position in ((0.0, (0.0, 0.0, 0.0)), (0.7, (12.0, -0.5, -30.0))):
        a = world.render(pose(yaw0, 0.1, position), K)
        b = world.render(pose(yaw0 + 2 * math.pi, 0.1, position), K)
        close = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) <= 1
        assert close.mean() > 0.995, f"only {close.mean():.4f} of the pixels match after 360 degrees"


def test_turning_right_moves_the_picture_left_by_fx_tan_yaw(world):
    K = intrinsics()
    yaw = 0.1
    a = world.render(pose(), K).astype(float)
    b = world.render(pose(yaw), K).astype(float)
    band = slice(H // 2 - 8, H // 2 + 8)  # rows near the horizon, where a yaw is a near-shift
    shifts = range(-20, 21)
    errors = [np.abs(a[band, 30 + s : W - 30 + s] - b[band, 30 : W - 30]).mean() for s in shifts]
    best = list(shifts)[int(np.argmin(errors))]
    assert abs(best - K[0, 0] * math.tan(yaw)) <= 1.5, (best, K[0, 0] * math.tan(yaw))


def test_inside_the_ground_renders_dark_earth(world):
    img = world.render(pose(position=(0.0, 5.0, 0.0)), intrinsics())  # 5 units DOWN, below ground
    assert np.isfinite(img).all()
    assert img.mean() < 80 and img.std() < 15.0


@pytest.mark.parametrize(
    ("bad", "expected"),
    [(np.eye(3), r"\(4, 4\)"), (np.eye(4)[None], r"\(4, 4\)"), (np.eye(4).ravel(), r"\(4, 4\)")],
)
def test_render_rejects_a_pose_of_the_wrong_shape(world, bad, expected):
    with pytest.raises(ValueError, match=expected):
        world.render(bad, intrinsics())


def test_bad_poses_and_intrinsics_get_clear_errors(world):
    K = intrinsics()
    with pytest.raises(ValueError, match=r"\(F, 4, 4\).*render\(pose, K\)"):
        world.render_many(np.eye(4), K)
    with pytest.raises(ValueError, match=r"\(F, 4, 4\)"):
        world.generate_chunk(np.zeros((2, 3, 4)), np.stack([K, K]))
    nan = pose()
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        world.render(nan, K)
    with pytest.raises(ValueError, match="rotation"):
        world.render(np.diag([2.0, 1.0, 1.0, 1.0]), K)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        world.render(pose(), K[:2])
    with pytest.raises(ValueError, match="one matrix per pose"):
        world.render_many(np.stack([pose(), pose()]), K[None])
    with pytest.raises(ValueError, match="focal"):
        world.render(pose(), np.diag([-1.0, 1.0, 1.0]))


def gl_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("reference-world-gl")}


def test_renders_from_another_thread_than_the_one_that_built_it():
    before = gl_threads()
    w = make_world()  # built on this thread
    K = intrinsics()
    here = w.render(pose(0.2), K)
    results: dict[str, object] = {}

    def model_thread(name: str) -> None:
        try:
            results[name] = w.generate_chunk(np.stack([pose(0.2)] * 2), np.stack([K] * 2)).frames
        except Exception as e:  # reported below, with its message
            results[name] = e

    for name in ("first", "second"):  # a session restarted gets a new model thread
        t = threading.Thread(target=model_thread, args=(name,))
        t.start()
        t.join(timeout=30)
        frames = results[name]
        assert not isinstance(frames, Exception), frames
        np.testing.assert_array_equal(frames[0], here)
    np.testing.assert_array_equal(w.render(pose(0.2), K), here)  # and back on this thread
    w.close()
    assert gl_threads() == before, "close() ends the world's GL thread"


WINDOW_FIRST = """
import sys, threading, numpy as np, pyglet.window
window = pyglet.window.Window(64, 36, visible=False)  # its GLX context is current on this thread
from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig
world = ReferenceWorld(ReferenceWorldConfig(width={W}, height={H}))
K = np.load(sys.argv[1])
frames = [world.render(np.eye(4), K)]
thread = threading.Thread(target=lambda: frames.append(world.render(np.eye(4), K)))
thread.start(); thread.join()
world.close()
window.switch_to()
from pyglet import gl
gl.glClearColor(0, 0, 0, 1); gl.glClear(gl.GL_COLOR_BUFFER_BIT)  # the window's context still works
np.save(sys.argv[2], np.stack(frames))
"""


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb for a window's GLX context")
def test_a_window_context_on_the_calling_thread_does_not_matter(world, tmp_path):
    """pyglet makes a GLX context current; the world still renders (on its own GL thread)."""
    K = intrinsics()
    expected = world.render(np.eye(4), K)
    np.save(tmp_path / "K.npy", K)
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "320x240x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        display = xvfb.stdout.readline().decode().strip()
        env = {**os.environ, "DISPLAY": f":{display}"}
        script = WINDOW_FIRST.replace("{W}", str(W)).replace("{H}", str(H))
        out = tmp_path / "frames.npy"
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "K.npy"), str(out)],
                             env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        frames = np.load(out)
        np.testing.assert_array_equal(frames[0], expected)  # rendered on the window's thread
        np.testing.assert_array_equal(frames[1], expected)  # and on another thread
    finally:
        xvfb.kill()
        xvfb.wait()


def test_it_is_a_world_model_labelled_as_a_renderer(world):
    assert isinstance(world, WorldModel)
    spec = world.spec
    assert (spec.fps, spec.frames_per_chunk, spec.first_chunk_frames) == (16.0, 1, 1)
    assert (spec.width, spec.height) == (W, H)
    assert spec.is_model is False and spec.label == LABEL and "not a model" in spec.label


def test_chunks_count_snapshot_and_restore(world):
    K = np.stack([intrinsics()] * 4)
    poses = np.stack([pose(position=(0.0, 0.0, 0.25 * i)) for i in range(4)])
    first = world.generate_chunk(poses, K)
    assert isinstance(first, Chunk) and first.index == 0 and first.frames.shape == (4, H, W, 3)
    np.testing.assert_array_equal(first.frames[2], world.render(poses[2], K[2]))
    saved = world.snapshot()
    assert saved == ReferenceWorldState(chunk_index=1, seed=0)
    assert world.generate_chunk(poses, K).index == 1
    world.reset(None, "a prompt is ignored", seed=5)
    assert world.generate_chunk(poses, K).index == 0
    world.restore(saved)
    assert world.seed == 0
    again = world.generate_chunk(poses, K)
    assert again.index == 1
    np.testing.assert_array_equal(again.frames, first.frames)
    with pytest.raises(TypeError):
        world.restore({"chunk_index": 0})


def test_factory_reads_world_config_and_rejects_unknown_options():
    w = gl_or_skip(lambda: create(WorldConfig(width=64, height=36, fps=8.0, seed=2, options={"frames_per_chunk": 2})))
    try:
        assert (w.spec.width, w.spec.height, w.spec.fps, w.spec.frames_per_chunk) == (64, 36, 8.0, 2)
        assert w.spec.first_chunk_frames == 2 and w.seed == 2
    finally:
        w.close()
    w.close()  # closing twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        w.render(pose(), intrinsics(64, 36))
    with pytest.raises(ValueError, match="frames_per_chunk"):
        create(WorldConfig(options={"frames_per_chnk": 2}))
