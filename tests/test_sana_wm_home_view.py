"""The home view (`SanaWMConfig.home_radius`): a chunk whose camera ends back at the session's first view reads
only the sink in its softmax blocks, and on the way in the recent chunks fade out; they stay cached, and every
chunk away from home reads as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.builders import STRIDE, WORLD_H, WORLD_W, tiny_cameras, tiny_sana_wm_configs, tiny_transformer
from worldwalk.runtime.sana_wm.cache import SoftmaxCache
from worldwalk.runtime.sana_wm.camera import build_camera_inputs, home_weight
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.train.eval_command import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pose(x: float = 0.0, z: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    P = np.eye(4)
    P[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    P[0, 3], P[2, 3] = x, z
    return P


def test_home_is_near_the_first_frames_position_and_view():
    assert home_weight(_pose(), 0.1, 20.0) == 1.0
    assert home_weight(_pose(0.05, 0.05, 15.0), 0.1, 20.0) == 1.0
    assert home_weight(_pose(0.0, 0.12), 0.1, 20.0) == 0.0  # too far
    assert home_weight(_pose(yaw_deg=25.0), 0.1, 20.0) == 0.0  # turned away
    assert home_weight(_pose(yaw_deg=180.0), 0.1, 20.0, 3.0) == 0.0
    # with a fade: linear from the radius and the angle out to (1 + fade) times them, the product of the two
    assert home_weight(_pose(0.0, 0.25), 0.1, 20.0, 3.0) == pytest.approx(0.5)
    assert home_weight(_pose(yaw_deg=50.0), 0.1, 20.0, 3.0) == pytest.approx(0.5)
    assert home_weight(_pose(0.0, 0.25, 50.0), 0.1, 20.0, 3.0) == pytest.approx(0.25)
    assert home_weight(_pose(0.0, 0.4), 0.1, 20.0, 3.0) == 0.0
    # the camera inputs are marked by the pose of their last latent frame, and only when asked
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    poses = {f: _pose(z=0.02 * abs(f - 6)) for f in range(13)}  # out to 0.12, back at frame 12
    Ks = dict.fromkeys(poses, K)
    out = build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4), (0.1, 20.0, 0.0))  # ends at frame 8: 0.04
    assert out.home == 1.0
    assert build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4)).home == 0.0
    poses = {f: _pose(z=0.02 * f) for f in range(13)}
    assert build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4), (0.1, 20.0, 0.0)).home == 0.0  # 0.16
    assert build_camera_inputs(poses, Ks, [1, 2], STRIDE, (48, 64), (3, 4), (0.1, 20.0, 3.0)).home == \
        pytest.approx(0.8)
    assert out.to("cpu", torch.float32).home == 1.0  # kept on the way to the device
    with pytest.raises(ValueError, match="home_radius"):
        SanaWMConfig.tiny(home_radius=-1.0)
    with pytest.raises(ValueError, match="sink"):
        SanaWMConfig.tiny(home_radius=0.1, sink=False)


def _window_3(seed: int):
    """The tiny transformer with a window of 3, its prompt context, and seeded latents (1, C, t, 3, 4) by `t`."""
    tr = tiny_transformer(kv_window=3)
    text = torch.randn(1, tr.cfg.caption_tokens, tr.cfg.caption_channels, generator=torch.Generator().manual_seed(1))
    prompt = tr.prompt_context(text, torch.ones(1, tr.cfg.caption_tokens, dtype=torch.bool))
    gen = torch.Generator().manual_seed(seed)
    return tr, prompt, lambda t: torch.randn(1, tr.cfg.in_channels, t, 3, 4, generator=gen)


@torch.no_grad()
def test_a_chunk_at_home_reads_the_sink_alone_and_the_window_slides_as_before():
    tr, prompt, latents = _window_3(seed=2)
    cams = tiny_cameras(5)
    T = tr.cfg.chunk_latent_frames
    cache = tr.new_cache()
    _, cache = tr(latents(T + 1), torch.zeros(1, T + 1), prompt, None, cams[0], cache, True)
    for cam in cams[1:3]:
        _, cache = tr(latents(T), torch.zeros(1, T), prompt, None, cam, cache, True)
    softmax = [b for b in cache.blocks if isinstance(b, SoftmaxCache)]
    assert softmax and all(len(b.recent) == 2 for b in softmax)  # the sink and the last two chunks

    x, t = latents(T), torch.full((1, T), 500.0)

    def read(h: float, c=cache) -> torch.Tensor:
        return tr(x, t, prompt, None, dataclasses.replace(cams[3], home=h), c, False)[0]

    at_home, away = read(1.0), read(0.0)
    sink_only = dataclasses.replace(cache, blocks=[dataclasses.replace(b, recent=()) if isinstance(b, SoftmaxCache)
                                                   else b for b in cache.blocks])
    torch.testing.assert_close(at_home, read(0.0, sink_only), rtol=0, atol=0)
    assert (at_home - away).abs().max() > 1e-5  # the recent chunks did count away from home (0.0007 here)
    # near home the recent chunks fade: all the way from away to the sink alone, and in between both ways
    torch.testing.assert_close(read(1e-9), away, rtol=0, atol=1e-6)
    torch.testing.assert_close(read(1 - 1e-9), at_home, rtol=0, atol=1e-6)
    half = read(0.5)
    assert (half - away).abs().max() > 1e-5 and (half - at_home).abs().max() > 1e-5
    home = dataclasses.replace(cams[3], home=1.0)

    # the write keeps the window: the chunk at home joins the recent chunks, the oldest slides out
    _, written = tr(x, torch.zeros(1, T), prompt, None, home, cache, True)
    for old, new in zip(cache.blocks, written.blocks, strict=True):
        if isinstance(old, SoftmaxCache):
            assert new.sink is old.sink and len(new.recent) == 2 and new.recent[0] is old.recent[1]


def _walk(world, poses: np.ndarray, K: np.ndarray) -> list[np.ndarray]:
    """The eval's chunk loop (`eval_command.generate`) from a seeded random first frame, its frames split by chunk."""
    first = np.random.default_rng(0).integers(0, 255, (WORLD_H, WORLD_W, 3), np.uint8)
    frames, _ = generate(world, first, poses, K, seed=4)
    n0, n = world.spec.chunk_frames(0), world.spec.chunk_frames(1)
    return np.split(frames, range(n0, len(frames), n))


def test_the_world_reads_the_first_view_only_once_it_is_back_there():
    """The real chunk loop along out-and-back: the same frames as without the home view until the first chunk
    that ends back at the start (or, with a fade, near it), other frames from there on."""
    from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig

    cfg, vae = tiny_sana_wm_configs()
    cfg = dataclasses.replace(cfg, kv_window=3)
    worlds = [SanaWM.random_init(dataclasses.replace(cfg, home_radius=r, home_fade=f), vae,
                                 SanaWMRunConfig(width=WORLD_W, height=WORLD_H), seed=0)
              for r, f in ((0.0, 0.0), (0.3, 0.0), (0.3, 4.0))]
    n0, n = worlds[0].spec.chunk_frames(0), worlds[0].spec.chunk_frames(1)
    frames = n0 + 5 * n  # out for two chunks, back for two, one still at the start
    z = np.concatenate([np.zeros(n0), np.arange(1, 2 * n + 1), np.arange(2 * n - 1, -1, -1), np.zeros(n)])[:frames]
    poses = np.stack([_pose(z=0.1 * d) for d in z])  # chunks 1 to 5 end 1.2, 2.4, 1.2, 0 and 0 away
    K = np.broadcast_to(np.array([[40.0, 0, WORLD_W / 2], [0, 40.0, WORLD_H / 2], [0, 0, 1]]), (frames, 3, 3))
    off, on, faded = (_walk(w, poses, K) for w in worlds)
    assert len(off) == len(on) == len(faded) == 6
    # the first chunk read otherwise: at home (chunk 4), or with the fade out to 1.5 already chunk 3 (at 1.2)
    for got, first in ((on, 4), (faded, 3)):
        for k in range(first):
            np.testing.assert_array_equal(got[k], off[k])
        for k in range(first, 6):
            assert np.abs(got[k].astype(int) - off[k].astype(int)).max() > 0, k
    assert np.abs(faded[3].astype(int) - on[3].astype(int)).max() > 0


@torch.no_grad()
def test_the_fade_holds_for_a_cache_written_without_a_camera():
    """The camera branch reads only the chunks written with a camera: its fade is sized by those."""
    tr, prompt, latents = _window_3(seed=3)
    cams = tiny_cameras(3)
    T = tr.cfg.chunk_latent_frames
    _, cache = tr(latents(T + 1), torch.zeros(1, T + 1), prompt, None, None, None, True)  # no camera K/V in the sink
    _, cache = tr(latents(T), torch.zeros(1, T), prompt, None, cams[1], cache, True)
    x, t = latents(T), torch.full((1, T), 500.0)
    outs = [tr(x, t, prompt, None, dataclasses.replace(cams[2], home=h), cache, False)[0] for h in (0.0, 0.5, 1.0)]
    assert all(torch.isfinite(o).all() for o in outs)
    assert (outs[1] - outs[0]).abs().max() > 1e-5 and (outs[1] - outs[2]).abs().max() > 1e-5
