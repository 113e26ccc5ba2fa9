"""The bundled world: shipped weights load and generate on SANA-WM's chunk loop; walks, the fast VAE conv,
snapshot/restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldwalk.controls import action_string_to_poses, intrinsics_from_fov
from worldwalk.runtime.sana_wm.model import SanaWM
from worldwalk.runtime.train.walks import WalkConfig, random_walk
from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.worlds.bundled_vae import FastConv3d, FrameVAEStream, fast_conv3d
from worldwalk.runtime.worlds.bundled_world import (
    WEIGHTS,
    BundledWorld,
    chunk_latent_indices,
    chunk_video_frames,
    create,
)


@pytest.fixture(scope="module")
def world() -> BundledWorld:
    torch.set_num_threads(1)
    return BundledWorld()


def _poses(n: int) -> tuple[np.ndarray, np.ndarray]:
    poses = action_string_to_poses(f"w-{n}")[:n]
    return poses, np.broadcast_to(intrinsics_from_fov(160, 96), (n, 3, 3)).copy()


def test_shipped_weights_generate_a_chunk(world: BundledWorld) -> None:
    sizes = sum(p.stat().st_size for p in WEIGHTS.iterdir() if p.is_file())
    assert sizes < 40e6, f"shipped weights are {sizes / 1e6:.1f} MB, over the 40 MB budget"
    spec = world.spec
    assert (spec.width, spec.height, spec.first_chunk_frames, spec.frames_per_chunk) == (160, 96, 5, 4)
    poses, K = _poses(9)
    world.reset(None, None, seed=0)
    first = world.generate_chunk(poses[:5], K[:5])
    second = world.generate_chunk(poses[5:9], K[5:9])
    assert first.frames.shape == (5, 96, 160, 3) and first.frames.dtype == np.uint8
    assert second.frames.shape == (4, 96, 160, 3) and second.index == 1
    assert first.frames.std() > 5.0, "generated frames are flat"
    # the first frame reconstructs the start image through the VAE: close to it on average
    err = np.abs(first.frames[0].astype(float) - world.first_frame.astype(float)).mean()
    assert err < 40.0
    assert {"denoise", "cache_write", "decode"} <= set(second.timings)


def test_only_sana_wm_takes_a_prompt(world: BundledWorld) -> None:
    from .builders import tiny_world

    assert world.spec.prompt_ignored("a castle") == "--prompt is ignored: the bundled world takes no text prompt"
    assert world.spec.prompt_ignored(None) is None
    assert tiny_world().spec.prompt_ignored("a castle") is None  # SANA-WM reads it (or names what it needs)


def test_snapshot_restore_is_bit_identical(world: BundledWorld) -> None:
    poses, K = _poses(9)
    world.reset(None, None, seed=3)
    world.generate_chunk(poses[:5], K[:5])
    snap = world.snapshot()
    a = world.generate_chunk(poses[5:9], K[5:9]).frames
    world.restore(snap)
    b = world.generate_chunk(poses[5:9], K[5:9]).frames
    np.testing.assert_array_equal(a, b)


def test_it_runs_sana_wm_s_chunk_loop_with_the_decode_overlap(world: BundledWorld) -> None:
    """One chunk driver: the bundled world is a SanaWM, and submitting chunk k+1 before taking chunk k's
    frames (decode of k beside the denoising of k+1) gives the frames one chunk at a time gives."""
    assert isinstance(world, SanaWM) and isinstance(world.vae, FrameVAEStream)
    poses, K = _poses(13)
    spans = ((0, 5), (5, 9), (9, 13))
    world.reset(None, None, seed=4)
    one_at_a_time = [world.generate_chunk(poses[a:b], K[a:b]).frames for a, b in spans]
    world.reset(None, None, seed=4)
    pending = [world.submit(poses[a:b], K[a:b]) for a, b in spans]
    for want, p in zip(one_at_a_time, pending, strict=True):
        np.testing.assert_array_equal(p.result().frames, want)


def test_wrong_chunk_length_names_the_expected_shape(world: BundledWorld) -> None:
    poses, K = _poses(4)
    world.reset(None, None, seed=0)
    with pytest.raises(ValueError, match=r"\(5, 4, 4\)"):
        world.generate_chunk(poses, K)


def test_create_from_world_config_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown bundled world options"):
        create(WorldConfig(name="bundled", options={"speed": 2}))


def test_chunk_layout() -> None:
    assert chunk_latent_indices(0) == [0, 1, 2, 3] and chunk_latent_indices(2) == [7, 8, 9]
    assert chunk_video_frames(0) == list(range(13)) and chunk_video_frames(1) == list(range(13, 25))


def test_random_walk_is_seeded_and_stays_near_home() -> None:
    cfg = WalkConfig()
    a, b = random_walk(200, 7, cfg), random_walk(200, 7, cfg)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_walk(200, 8, cfg))
    R = a[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    assert np.abs(a[:, 1, 3]).max() < 1e-9, "walks stay on the ground plane"
    assert np.hypot(a[:, 0, 3], a[:, 2, 3]).max() < cfg.home_radius + 25.0


def test_fast_conv3d_matches_conv3d() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 8, 3, padding=(0, 1, 1), padding_mode="zeros")
    x = torch.randn(1, 16, 5, 6, 10)
    want = conv(x)
    fast = fast_conv3d(torch.nn.Sequential(conv))[0]
    assert isinstance(fast, FastConv3d)
    torch.testing.assert_close(fast(x), want, atol=1e-5, rtol=1e-5)
