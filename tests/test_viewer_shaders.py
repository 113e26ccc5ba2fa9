"""The present program on a headless EGL context: exact 1:1, letterboxed upscale, timewarp."""

from __future__ import annotations

import math

import numpy as np
import pytest

moderngl = pytest.importorskip("moderngl")

from worldwalk.viewer.presenter import (  # noqa: E402
    Presenter,
    PresenterConfig,
    content_rect,
    timewarp_homography,
)

from .builders import reference_config  # noqa: E402
from .conftest import gl_or_skip  # noqa: E402

pytestmark = pytest.mark.gl


@pytest.fixture(scope="module")
def ctx():
    ctx = gl_or_skip(lambda: moderngl.create_standalone_context(backend="egl"))
    yield ctx
    ctx.release()


def render(ctx, image: np.ndarray, size: tuple[int, int], warp=None, **cfg) -> np.ndarray:
    """Present `image` into a (W, H) = size framebuffer; returns (H, W, 3) uint8, top row first."""
    presenter = Presenter(ctx, PresenterConfig(**cfg))
    fbo = ctx.simple_framebuffer(size, components=4)
    try:
        presenter.upload(image)
        presenter.draw(fbo, warp=warp)
        data = fbo.read(components=3, alignment=1)
    finally:
        fbo.release()
        presenter.release()
    return np.frombuffer(data, np.uint8).reshape(size[1], size[0], 3)[::-1]  # GL rows are bottom-up


def yaw_pose(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # Ry: positive yaw turns right
    return pose


def intrinsics(w: int, h: int, fx: float) -> np.ndarray:
    return np.array([[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


@pytest.mark.parametrize("filter", ["bicubic", "bilinear", "nearest"])
def test_one_to_one_is_exact(ctx, filter):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 61, 3), dtype=np.uint8)  # odd sizes: row alignment
    out = render(ctx, image, (61, 37), filter=filter)
    np.testing.assert_array_equal(out, image)


def test_identity_timewarp_is_identity(ctx):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    pose = yaw_pose(0.3) @ np.diag([1.0, 1, 1, 1])
    pose[:3, 3] = (1.0, -2.0, 3.0)
    H = timewarp_homography(intrinsics(64, 48, 50.0), pose, pose)
    np.testing.assert_allclose(H, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(render(ctx, image, (64, 48), warp=H), image)


def checkerboard(w: int, h: int, square: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    white = ((xx // square + yy // square) % 2 == 0)[..., None]
    return np.where(white, np.uint8(230), np.uint8(40)).repeat(3, axis=2).astype(np.uint8)


@pytest.mark.parametrize(
    ("target", "rect"), [((200, 200), (0, 50, 200, 100)), ((300, 100), (50, 0, 200, 100))]
)
def test_upscale_letterboxes_and_keeps_aspect(ctx, target, rect):
    image = checkerboard(32, 16, 4)
    assert content_rect((32, 16), target) == rect
    out = render(ctx, image, target)
    x, y_gl, w, h = rect
    top = target[1] - (y_gl + h)  # the rectangle's top row in image (top-first) rows
    bars = np.ones(out.shape[:2], bool)
    bars[top : top + h, x : x + w] = False
    assert (out[bars] == 0).all(), "letterbox bars must be black"
    picture = out[top : top + h, x : x + w, 0].astype(int)
    assert picture.min() > 0, "the picture fills its whole rectangle"
    # Square centres keep their colours: square (i, j) spans source [4i, 4i+4), scale 6.25.
    scale = w / 32
    for i in range(8):
        for j in range(4):
            cx, cy = int((4 * i + 2) * scale), int((4 * j + 2) * scale)
            expected = 230 if (i + j) % 2 == 0 else 40
            assert abs(picture[cy, cx] - expected) <= 2, (i, j, picture[cy, cx])


def test_upscale_square_edges_land_where_expected(ctx):
    image = checkerboard(32, 16, 4)
    out = render(ctx, image, (200, 100), filter="bicubic")
    row = out[12, :, 0].astype(int)  # inside the first row of squares
    # An edge between squares lies at source x = 4k, i.e. output x = 4k * 6.25: the 50% crossing
    # of the bicubic profile must fall within half an output pixel of it.
    for k in range(1, 8):
        edge = 4 * k * 6.25
        lo, hi = int(edge) - 4, int(edge) + 4
        seg = row[lo:hi]
        crossing = np.nonzero(np.diff(np.sign(seg - 135)))[0]
        assert len(crossing) == 1, (k, seg)
        i = crossing[0]
        # sub-pixel crossing between pixel centres lo+i+0.5 and lo+i+1.5
        frac = (135 - seg[i]) / (seg[i + 1] - seg[i])
        x = lo + i + 0.5 + frac
        assert abs(x - edge) <= 0.5, (k, x, edge)
    nearest = render(ctx, image, (200, 100), filter="nearest")[12, :, 0]
    expected = np.where(((np.arange(200) + 0.5) / 6.25 // 4) % 2 == 0, 230, 40)
    np.testing.assert_array_equal(nearest, expected)


def test_known_yaw_shifts_the_centre_by_fx_tan_yaw(ctx):
    w, h, fx, yaw = 128, 64, 80.0, 0.12
    K = intrinsics(w, h, fx)
    # Red encodes the source column (a ramp Catmull-Rom reproduces exactly), green the row.
    xx, yy = np.meshgrid(np.arange(w), np.arange(h))
    image = np.stack([xx * 2, yy * 4, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    frame_pose = yaw_pose(0.0)
    held_pose = yaw_pose(yaw)  # the player has since turned right
    out = render(ctx, image, (w, h), warp=timewarp_homography(K, frame_pose, held_pose))
    shift = fx * math.tan(yaw)  # 9.65 px: turning right moves the picture left
    cy, cx = h // 2, w // 2
    seen_x = out[cy, cx, 0] / 2.0
    assert abs(seen_x - (cx + shift)) <= 1.0, (seen_x, cx + shift)
    assert abs(out[cy, cx, 1] / 4.0 - cy) <= 1.0  # a yaw keeps the centre row
    # Turning left shifts the other way.
    out_left = render(ctx, image, (w, h), warp=timewarp_homography(K, frame_pose, yaw_pose(-yaw)))
    assert abs(out_left[cy, cx, 0] / 2.0 - (cx - shift)) <= 1.0


def test_uncovered_edges_show_the_edge_not_garbage(ctx):
    w, h = 64, 36
    K = intrinsics(w, h, 40.0)
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (200, 120, 60)
    out = render(ctx, image, (w, h), warp=timewarp_homography(K, yaw_pose(0.0), yaw_pose(0.5)))
    # A uniform frame turned far enough to uncover a third of the view stays uniform.
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1


@pytest.mark.parametrize(("yaw_deg", "pitch_deg"), [(6.0, 0.0), (-4.0, 3.0)])
def test_timewarp_matches_the_world_rendered_at_the_held_pose(ctx, yaw_deg, pitch_deg):
    """End to end with our camera convention: reprojecting the reference world's frame rendered
    at the start pose to a turned pose looks like the world rendered at that turned pose."""
    from worldwalk.controls import intrinsics_from_fov, pose_matrix, rotation
    from worldwalk.runtime.worlds import create_world

    try:
        world = create_world(reference_config(width=256, height=144))
    except Exception as e:
        pytest.skip(f"reference world unavailable: {e}")
    try:
        world.reset(None, None, 0)
        K = intrinsics_from_fov(256, 144)
        start = pose_matrix(rotation(0.0, 0.0), np.zeros(3))
        held = pose_matrix(rotation(math.radians(yaw_deg), math.radians(pitch_deg)), np.zeros(3))
        n = max(2, world.spec.chunk_frames(0))  # it renders any number of frames
        poses = np.stack([start] * (n - 1) + [held])  # (n, 4, 4): the last frame at the held pose
        chunk = world.generate_chunk(poses, np.broadcast_to(K, (n, 3, 3)).copy())
    finally:
        world.close()
    frame, truth = chunk.frames[0], chunk.frames[-1]
    warped = render(ctx, frame, (256, 144), warp=timewarp_homography(K, start, held))
    inner = (slice(30, 114), slice(40, 216))  # away from the uncovered edges
    err = np.abs(warped[inner].astype(int) - truth[inner].astype(int)).mean()
    unwarped = np.abs(frame[inner].astype(int) - truth[inner].astype(int)).mean()
    assert err < 0.35 * unwarped, f"timewarp error {err:.1f} vs {unwarped:.1f} without it"
    assert err < 6.0, err
