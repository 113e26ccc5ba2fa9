"""Loading Matrix-Game 2.0 from the official folder layout, and the world behind the seam.

The folder is faked with tiny random weights in the official layout and key names (`model.` prefix,
`Wan2.1_VAE.pth` with encoder and decoder, the CLIP `.pth` with `visual.*` and text keys).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.goldens import matrix_game_tiny as tiny
from worldwalk.runtime.matrix_game import CausalDiT, MatrixGameConfig, WanVAE
from worldwalk.runtime.matrix_game.checkpoint import CLIP_FILE, MODEL_FILES, VAE_FILE, CheckpointError, load
from worldwalk.runtime.matrix_game.clip import ClipVision, ClipVisionConfig
from worldwalk.runtime.matrix_game.world import MatrixGameWorld, create, random_world
from worldwalk.runtime.world import WorldConfig


def write_model(folder: Path, mode: str) -> dict[str, torch.Tensor]:
    cfg = MatrixGameConfig.tiny(mode)
    dit = CausalDiT(cfg)
    tiny.fill_weights(dit)
    state = {f"model.{k}": v.contiguous() for k, v in dit.state_dict().items()}
    path = folder / MODEL_FILES[mode]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    upstream_cfg = {**tiny.DIT, "local_attn_size": cfg.local_attn_size, "_class_name": "CausalWanModel"}
    upstream_cfg["action_config"] = {**tiny.DIT["action_config"], "keyboard_dim_in": cfg.keyboard_dim}
    (path.parent / "config.json").write_text(json.dumps(upstream_cfg))
    return state


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("Matrix-Game-2.0")
    for mode in ("universal", "gta_drive", "templerun"):
        write_model(root, mode)
    vae = WanVAE(dim=tiny.VAE_DIM)
    tiny.fill_weights(vae)
    torch.save(vae.state_dict(), root / VAE_FILE)
    clip = ClipVision(ClipVisionConfig.tiny())
    tiny.fill_weights(clip)
    clip_state = {f"visual.{k}": v for k, v in clip.state_dict().items()}
    clip_state["textual.token_embedding.weight"] = torch.zeros(3, 2)  # the text tower is not read
    torch.save(clip_state, root / CLIP_FILE)
    return root


def test_modes_are_told_apart_by_the_keyboard_width(folder: Path) -> None:
    got = {}
    for mode in ("universal", "gta_drive", "templerun"):
        loaded = load(folder / MODEL_FILES[mode], clip_cfg=ClipVisionConfig.tiny(), base=MatrixGameConfig.tiny())
        got[mode] = (loaded.cfg.mode, loaded.cfg.keyboard_dim, loaded.cfg.mouse, loaded.cfg.local_attn_size,
                     len(loaded.cfg.denoising_steps))
    assert got == {"universal": ("universal", 4, True, 6, 3), "gta_drive": ("gta_drive", 2, True, 4, 3),
                   "templerun": ("templerun", 7, False, 6, 4)}
    # the whole folder: universal unless --mode picks another; a --mode the weights contradict is refused
    assert load(folder, clip_cfg=ClipVisionConfig.tiny()).cfg.mode == "universal"
    assert load(folder, mode="templerun", clip_cfg=ClipVisionConfig.tiny()).cfg.mode == "templerun"
    with pytest.raises(CheckpointError, match="does not match"):
        load(folder / MODEL_FILES["gta_drive"], mode="universal", clip_cfg=ClipVisionConfig.tiny())


def test_loaded_weights_are_the_files_and_run(folder: Path) -> None:
    loaded = load(folder, clip_cfg=ClipVisionConfig.tiny())
    ref = CausalDiT(loaded.cfg)
    tiny.fill_weights(ref)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.dit.state_dict()[k], v), k
    assert not any(p.is_meta for p in loaded.dit.parameters())
    assert not any(b.is_meta for m in (loaded.vae, loaded.clip) for b in m.buffers())
    assert loaded.files["model"].name == "base_distill.safetensors"


@pytest.mark.parametrize("missing", [VAE_FILE, CLIP_FILE, MODEL_FILES["universal"]])
def test_a_missing_file_is_named_with_where_it_comes_from(folder: Path, tmp_path: Path, missing: str) -> None:
    import shutil

    copy = tmp_path / "incomplete"
    shutil.copytree(folder, copy)
    for mode in ("gta_drive", "templerun"):
        shutil.rmtree(copy / MODEL_FILES[mode].split("/")[0])
    (copy / missing).unlink()
    with pytest.raises(CheckpointError) as e:
        load(copy, clip_cfg=ClipVisionConfig.tiny())
    assert Path(missing).name in str(e.value) and "Skywork/Matrix-Game-2.0" in str(e.value)


def test_world_plays_snapshots_and_restores() -> None:
    world = random_world("tiny")
    assert isinstance(world, MatrixGameWorld)
    assert (world.spec.first_chunk_frames, world.spec.frames_per_chunk, world.spec.fps) == (9, 12, 25.0)
    image = (np.random.default_rng(0).random((20, 40, 3)) * 255).astype(np.uint8)
    world.reset(image, None, seed=3)
    eye = np.repeat(np.eye(4)[None], 12, 0)
    k = np.repeat(np.eye(3)[None], 12, 0)
    first = world.generate_chunk(eye[:9], k[:9])
    assert first.frames.shape == (9, world.spec.height, world.spec.width, 3)
    snap = world.snapshot()
    world.set_actions(np.tile([1, 0, 0, 0], (12, 1)), np.full((12, 2), 0.1))
    a = world.generate_chunk(eye, k)
    world.restore(snap)
    world.set_actions(np.tile([1, 0, 0, 0], (12, 1)), np.full((12, 2), 0.1))
    b = world.generate_chunk(eye, k)
    assert np.array_equal(a.frames, b.frames)  # same caches, same noise: the same chunk again
    world.restore(snap)
    c = world.generate_chunk(eye, k)  # no keys held: a different chunk
    assert not np.array_equal(a.frames, c.frames)


def test_create_needs_a_checkpoint_or_random_init() -> None:
    with pytest.raises(ValueError, match="--checkpoint DIR"):
        create(WorldConfig(name="matrix-game"))
    assert create(WorldConfig(name="matrix-game", options={"random_init": "tiny", "mode": "gta_drive"})).cfg.mode \
        == "gta_drive"


@pytest.mark.slow
def test_a_session_streams_the_world() -> None:
    """The engine's Session drives the tiny world like any other: 9 frames, then 12 a chunk."""
    import time

    from worldwalk.runtime.session import Session

    world = random_world("tiny")
    frames, deadline = [], time.monotonic() + 120
    with Session(world).start() as session:
        while len(frames) < 21 and time.monotonic() < deadline:
            f = session.frames.get(timeout=0.1)
            if f is not None:
                frames.append(f)
        assert len(frames) == 21, session.error
    assert [f.chunk_index for f in frames] == [0] * 9 + [1] * 12
    assert frames[0].image.shape == (world.spec.height, world.spec.width, 3)


@pytest.mark.slow
def test_bench_random_init_small_and_the_full_size_refusal(monkeypatch) -> None:
    from worldwalk.runtime.bench.context import BenchConfig, BenchContext
    from worldwalk.runtime.matrix_game import bench

    ctx = BenchContext(BenchConfig(quick=True, worlds=["matrix-game"], accel="none"))
    ctx.suite = "matrix-game random small"
    bench.random_init_figures(ctx, "small", chunks=1)
    names = [f.name.strip() for f in ctx.figures]
    for want in ("chunk time p50", "denoise_1 p50", "denoise_3 p50", "cache_write (t=0) p50", "vae_decode p50",
                 "real-time factor", "time to first frame", "peak memory"):
        assert want in names, names
    monkeypatch.setattr(bench, "_available_bytes", lambda device: 2**30)
    with pytest.raises(bench.NotEnoughMemory, match="needs about"):
        bench.check_memory("full", "cpu", torch.float32)
