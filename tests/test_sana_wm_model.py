"""SanaWM world: chunk sizes, snapshot/restore bit-identity, cache vs recompute, FOV checks, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldwalk.runtime.sana_wm import FieldOfViewError
from worldwalk.runtime.sana_wm.checkpoint import CheckpointError, from_pretrained, save_diffusers, save_official
from worldwalk.runtime.sana_wm.model import SanaWM
from worldwalk.runtime.world import WorldConfig, WorldModel

from .builders import STRIDE
from .builders import WORLD_H as H
from .builders import WORLD_W as W
from .builders import tiny_world as _world
from .conftest import DEFAULT_FOV_DEG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _K(fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    f = (W / 2) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])


def _chunk_inputs(world: SanaWM, k: int, fov: float = DEFAULT_FOV_DEG) -> tuple[np.ndarray, np.ndarray]:
    n = world.spec.chunk_frames(k)
    start = 0 if k == 0 else world.spec.first_chunk_frames + (k - 1) * world.spec.frames_per_chunk
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.05 * (start + np.arange(n))
    poses[:, 0, 3] = 0.02 * np.sin(0.3 * (start + np.arange(n)))
    return poses, np.tile(_K(fov), (n, 1, 1))


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)


def test_chunks_snapshot_restore_bit_identical():
    w = _world()
    assert isinstance(w, WorldModel)
    assert (w.spec.first_chunk_frames, w.spec.frames_per_chunk) == (1 + 3 * STRIDE, 3 * STRIDE)
    w.reset(_image(), None, seed=5)
    for k in range(4):
        c = w.generate_chunk(*_chunk_inputs(w, k))
        assert c.frames.shape == (w.spec.chunk_frames(k), H, W, 3) and c.index == k
        assert {"denoise", "cache_write", "decode"} <= set(c.timings)
    snap = w.snapshot()
    a = w.generate_chunk(*_chunk_inputs(w, 4))
    w.restore(snap)
    b = w.generate_chunk(*_chunk_inputs(w, 4))
    assert a.index == b.index == 4
    assert np.array_equal(a.frames, b.frames)
    print("chunk timings (s):", {k: round(v, 4) for k, v in b.timings.items()}, "state bytes:", w.cache_nbytes())


def test_recompute_mode_matches_cache_mode():
    frames = []
    for use_cache in (True, False):
        w = _world(use_cache=use_cache)
        w.reset(_image(), None, seed=1)
        frames.append([w.generate_chunk(*_chunk_inputs(w, k)).frames for k in range(3)])
    for x, y in zip(*frames, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


@pytest.mark.parametrize("fov", [20.0, 125.0])
def test_field_of_view_outside_25_120_is_rejected(fov):
    w = _world()
    w.reset(None, None, seed=0)
    with pytest.raises(FieldOfViewError, match="25-120"):
        w.generate_chunk(*_chunk_inputs(w, 0, fov=fov))


def _probe(model) -> torch.Tensor:
    from worldwalk.runtime.sana_wm.camera import CameraInputs

    g = torch.Generator().manual_seed(0)
    c = model.cfg
    x = torch.randn(1, c.in_channels, 2, 3, 4, generator=g)
    cam = CameraInputs(
        torch.eye(4).reshape(1, 1, 16).repeat(1, 2, 1).float(), torch.zeros(1, c.chunk_plucker_channels, 2, 3, 4)
    )
    cam.conditions = torch.cat([cam.conditions, torch.tensor([[[4.0, 4.0, 2.0, 1.5]] * 2])], -1)
    with torch.no_grad():
        return model(
            x, torch.tensor([[500.0, 500.0]]), torch.randn(1, 3, c.caption_channels, generator=g), torch.ones(1, 3), cam
        )[0]


def test_official_and_diffusers_layouts_load_identically(tmp_path):
    w = _world(softmax_bf16=True)  # the checkpoints' own setting (diffusers' config does not carry it)
    null = torch.randn(w.transformer.cfg.caption_tokens, w.transformer.cfg.caption_channels)
    save_official(tmp_path / "official", w.transformer, w.vae, null)
    save_diffusers(tmp_path / "diffusers", w.transformer, w.vae)
    a = from_pretrained(tmp_path / "official", progress=False)
    b = from_pretrained(tmp_path / "diffusers", progress=False)
    assert (a.layout, b.layout) == ("official", "diffusers")
    assert torch.equal(a.null_caption, null) and b.null_caption is None
    want = _probe(w.transformer)
    assert torch.equal(_probe(a.transformer), want) and torch.equal(_probe(b.transformer), want)
    keys = torch.load(tmp_path / "official/sana_dit/model.pt", weights_only=True)["state_dict"]
    assert "t_embedder.mlp.0.weight" in keys and "t_embedder.linear_1.weight" not in keys


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    w = _world()
    with pytest.raises(CheckpointError, match="no SANA-WM checkpoint"):
        from_pretrained(tmp_path / "nothing", progress=False)
    save_official(tmp_path / "cut", w.transformer, w.vae)
    pt = tmp_path / "cut/sana_dit/model.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        from_pretrained(tmp_path / "cut", progress=False)
    save_official(tmp_path / "bad", w.transformer, w.vae)
    pt = tmp_path / "bad/sana_dit/model.pt"
    state = torch.load(pt, weights_only=True)["state_dict"]
    state["blocks.1.attn.qkv.weight"] = state["blocks.1.attn.qkv.weight"][:, :-1].clone()
    del state["final_layer.linear.bias"]
    torch.save({"state_dict": state}, pt)
    with pytest.raises(CheckpointError, match=r"final_layer\.linear\.bias[\s\S]*blocks\.1\.attn\.qkv\.weight"):
        from_pretrained(tmp_path / "bad", progress=False)
    save_official(tmp_path / "novae", w.transformer, w.vae)
    import shutil

    shutil.rmtree(tmp_path / "novae/ltx2_causal_vae")
    with pytest.raises(CheckpointError, match="no VAE folder"):
        from_pretrained(tmp_path / "novae", progress=False)


def test_world_factory_needs_a_checkpoint():
    from worldwalk.runtime.sana_wm.world import create

    with pytest.raises(ValueError, match="--checkpoint"):
        create(WorldConfig(name="sana-wm"))


def test_pipelined_submit_equals_sequential_and_snapshots_mid_decode():
    """Submitting chunk k+1 before taking chunk k (its decode overlapping the next denoise) gives
    the same frames as one chunk at a time; a snapshot taken while a decode runs restores exactly."""
    seq = _world()
    seq.reset(_image(), None, seed=4)
    expected = [seq.generate_chunk(*_chunk_inputs(seq, k)).frames for k in range(5)]

    pipe = _world()
    pipe.reset(_image(), None, seed=4)
    pending, snap = [], None
    for k in range(5):
        if k == 3:
            snap = pipe.snapshot()  # chunk 2's decode may still be running
        pending.append(pipe.submit(*_chunk_inputs(pipe, k)))
    for e, p in zip(expected, pending, strict=True):
        assert np.array_equal(e, p.result().frames)
    pipe.restore(snap)
    assert np.array_equal(pipe.generate_chunk(*_chunk_inputs(pipe, 3)).frames, expected[3])
    pipe.close()
    seq.close()


def _session_frames(pipeline: bool, count: int, rewind_after: int | None = None):
    """The first `count` frames a session shows (of its latest generation, after a rewind)."""
    import time

    from worldwalk.runtime.session import Session, SessionConfig

    session = Session(_world(), SessionConfig(seed=2, pipeline=pipeline, queue_capacity=200, just_in_time=False))
    session.inputs.press("w")  # held from the start: every chunk sees the same input
    frames = []
    with session.start():
        deadline = time.monotonic() + 120
        while len([f for f in frames if f.generation == session.generation]) < count:
            assert time.monotonic() < deadline and session.error is None, session.error
            f = session.frames.get(timeout=0.1)
            if f is not None:
                frames.append(f)
            if rewind_after is not None and len(frames) == rewind_after:
                rewind_after = None
                assert session.rewind() is not None
    return [f for f in frames if f.generation == session.generation][:count]


def test_a_pipelined_session_shows_the_same_frames():
    n = 1 + 3 * STRIDE + 2 * 3 * STRIDE  # chunks 0..2
    plain = _session_frames(False, n)
    piped = _session_frames(True, n)
    assert [f.index for f in piped] == list(range(n))
    for a, b in zip(plain, piped, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.pose, b.pose)
    # rewinding while a chunk is in the pipeline comes back to the same frames
    after = _session_frames(True, 3 * STRIDE, rewind_after=1 + 3 * STRIDE + 3 * STRIDE)
    k = after[0].chunk_index
    first = 0 if k == 0 else 1 + 3 * STRIDE * k
    assert np.array_equal(after[0].image, plain[first].image) and np.array_equal(after[0].pose, plain[first].pose)
