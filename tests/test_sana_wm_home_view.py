"""The home view (`SanaWMConfig.home_radius`): a chunk whose camera ends back at the session's first view reads
only the sink in its softmax blocks; the recent chunks stay cached, and every other chunk reads as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.builders import STRIDE, WORLD_H, WORLD_W, tiny_cameras, tiny_sana_wm_configs, tiny_transformer
from worldwalk.runtime.sana_wm.cache import SoftmaxCache
from worldwalk.runtime.sana_wm.camera import build_camera_inputs, is_home
from worldwalk.runtime.sana_wm.config import SanaWMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pose(x: float = 0.0, z: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    P = np.eye(4)
    P[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    P[0, 3], P[2, 3] = x, z
    return P


def test_home_is_near_the_first_frames_position_and_view():
    assert is_home(_pose(), 0.1, 20.0)
    assert is_home(_pose(0.05, 0.05, 15.0), 0.1, 20.0)
    assert not is_home(_pose(0.0, 0.12), 0.1, 20.0)  # too far
    assert not is_home(_pose(yaw_deg=25.0), 0.1, 20.0)  # turned away
    assert not is_home(_pose(yaw_deg=180.0), 0.1, 20.0)
    # the camera inputs are marked by the pose of their last latent frame, and only when asked
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    poses = {f: _pose(z=0.02 * abs(f - 6)) for f in range(13)}  # out to 0.12, back at frame 12
    Ks = dict.fromkeys(poses, K)
    out = build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4), (0.1, 20.0))  # ends at frame 8: 0.04
    assert out.at_home
    assert not build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4)).at_home
    poses = {f: _pose(z=0.02 * f) for f in range(13)}
    assert not build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4), (0.1, 20.0)).at_home  # 0.16
    assert out.to("cpu", torch.float32).at_home  # kept on the way to the device
    with pytest.raises(ValueError, match="home_radius"):
        SanaWMConfig.tiny(home_radius=-1.0)
    with pytest.raises(ValueError, match="sink"):
        SanaWMConfig.tiny(home_radius=0.1, sink=False)


@torch.no_grad()
def test_a_chunk_at_home_reads_the_sink_alone_and_the_window_slides_as_before():
    tr = tiny_transformer(kv_window=3)
    cams = tiny_cameras(5)
    T = tr.cfg.chunk_latent_frames
    text = torch.randn(1, tr.cfg.caption_tokens, tr.cfg.caption_channels, generator=torch.Generator().manual_seed(1))
    prompt = tr.prompt_context(text, torch.ones(1, tr.cfg.caption_tokens, dtype=torch.bool))
    gen = torch.Generator().manual_seed(2)

    def latents(t: int) -> torch.Tensor:
        return torch.randn(1, tr.cfg.in_channels, t, 3, 4, generator=gen)

    cache = tr.new_cache()
    _, cache = tr(latents(T + 1), torch.zeros(1, T + 1), prompt, None, cams[0], cache, True)
    for cam in cams[1:3]:
        _, cache = tr(latents(T), torch.zeros(1, T), prompt, None, cam, cache, True)
    softmax = [b for b in cache.blocks if isinstance(b, SoftmaxCache)]
    assert softmax and all(len(b.recent) == 2 for b in softmax)  # the sink and the last two chunks

    x, t = latents(T), torch.full((1, T), 500.0)
    home = dataclasses.replace(cams[3], at_home=True)
    at_home, _ = tr(x, t, prompt, None, home, cache, False)
    away, _ = tr(x, t, prompt, None, cams[3], cache, False)
    sink_only = dataclasses.replace(cache, blocks=[dataclasses.replace(b, recent=()) if isinstance(b, SoftmaxCache)
                                                   else b for b in cache.blocks])
    alone, _ = tr(x, t, prompt, None, cams[3], sink_only, False)
    torch.testing.assert_close(at_home, alone, rtol=0, atol=0)
    assert (at_home - away).abs().max() > 1e-5  # the recent chunks did count away from home (0.0007 here)

    # the write keeps the window: the chunk at home joins the recent chunks, the oldest slides out
    _, written = tr(x, torch.zeros(1, T), prompt, None, home, cache, True)
    for old, new in zip(cache.blocks, written.blocks, strict=True):
        if isinstance(old, SoftmaxCache):
            assert new.sink is old.sink and len(new.recent) == 2 and new.recent[0] is old.recent[1]


def _walk(world, poses: np.ndarray, K: np.ndarray) -> list[np.ndarray]:
    world.reset(np.random.default_rng(0).integers(0, 255, (WORLD_H, WORLD_W, 3), np.uint8), None, seed=4)
    out, i, k = [], 0, 0
    while i + world.spec.chunk_frames(k) <= len(poses):
        n = world.spec.chunk_frames(k)
        out.append(world.generate_chunk(poses[i : i + n], K[i : i + n]).frames)
        i, k = i + n, k + 1
    return out


def test_the_world_reads_the_first_view_only_once_it_is_back_there():
    """The real chunk loop along out-and-back: the same frames as without the home view until the first chunk
    that ends back at the start, other frames from there on."""
    from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig

    cfg, vae = tiny_sana_wm_configs()
    cfg = dataclasses.replace(cfg, kv_window=3)
    worlds = [SanaWM.random_init(dataclasses.replace(cfg, home_radius=r), vae,
                                 SanaWMRunConfig(width=WORLD_W, height=WORLD_H), seed=0) for r in (0.0, 0.5)]
    n0, n = worlds[0].spec.chunk_frames(0), worlds[0].spec.chunk_frames(1)
    frames = n0 + 5 * n  # out for two chunks, back for two, one still at the start
    z = np.concatenate([np.zeros(n0), np.arange(1, 2 * n + 1), np.arange(2 * n - 1, -1, -1), np.zeros(n)])[:frames]
    poses = np.stack([_pose(z=0.1 * d) for d in z])
    K = np.broadcast_to(np.array([[40.0, 0, WORLD_W / 2], [0, 40.0, WORLD_H / 2], [0, 0, 1]]), (frames, 3, 3))
    off, on = (_walk(w, poses, K) for w in worlds)
    assert len(off) == len(on) == 6
    first_home = 4  # chunk 4 ends at the start; chunk 3 ends 0.1 * n away
    for k in range(first_home):
        np.testing.assert_array_equal(on[k], off[k])
    for k in range(first_home, 6):
        assert np.abs(on[k].astype(int) - off[k].astype(int)).max() > 0, k
