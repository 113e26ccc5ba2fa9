"""Matrix-Game 2.0's three modes (shapes, cache windows, sampler steps) and sessions of any length."""

from __future__ import annotations

import pytest
import torch

from tests.builders import tiny_matrix_game_models
from tests.goldens import matrix_game_tiny as tiny
from worldwalk.runtime.matrix_game import CausalDiT, FlowSchedule, MatrixGameConfig, Rollout, WanVAE, WindowKV
from worldwalk.runtime.matrix_game.rollout import ImageCondition
from worldwalk.runtime.matrix_game.rope import action_rope, video_rope
from worldwalk.runtime.matrix_game.timing import random_condition


def test_full_size_parameter_counts_match_upstream() -> None:
    """Upstream's distilled models: universal and GTA 1.619 B parameters, TempleRun 1.509 B."""
    expected = {"universal": 1.619, "gta_drive": 1.619, "templerun": 1.509}
    for mode, billions in expected.items():
        with torch.device("meta"):
            dit = CausalDiT(MatrixGameConfig.for_mode(mode))
        assert round(sum(p.numel() for p in dit.parameters()) / 1e9, 3) == billions, mode
    assert MatrixGameConfig().frame_tokens == 880


def test_warped_steps() -> None:
    uni = FlowSchedule.create(MatrixGameConfig()).warped_steps((1000, 666, 333))
    assert torch.allclose(uni, torch.tensor([1000.0, 908.8427, 713.9794]), atol=1e-3)
    temple = MatrixGameConfig.for_mode("templerun")
    steps = FlowSchedule.create(temple).warped_steps(temple.denoising_steps)
    assert torch.allclose(steps, torch.tensor([1000.0, 937.5, 833.3333, 625.0]), atol=1e-3)


@pytest.mark.parametrize("mode", ["gta_drive", "templerun"])
def test_modes_run_with_their_windows_steps_and_action_spaces(mode: str) -> None:
    cfg = MatrixGameConfig.tiny(mode)
    dit, vae = tiny_matrix_game_models(cfg)
    assert dit.blocks[0].action_model.keyboard_embed[0].in_features == {"gta_drive": 2, "templerun": 7}[mode]
    assert hasattr(dit.blocks[0].action_model, "mouse_mlp") == (mode == "gta_drive")
    roll = Rollout(cfg, dit, vae)
    calls: list[int] = []
    roll.observer = lambda c: calls.append(c["first_frame"])
    g = torch.Generator().manual_seed(0)
    roll.reset(torch.randn(1, 5, cfg.clip_dim, generator=g), condition=random_condition(cfg, g))  # no encoder run
    frames = []
    for _ in range(3):
        n = roll.raw_frames_needed()
        kb = torch.zeros(1, n, cfg.keyboard_dim)
        kb[..., 0] = 1
        ms = torch.full((1, n, 2), 0.1) if cfg.mouse else None
        frames.append(roll.step(kb, ms).video.shape[1])
    assert frames == [9, 12, 12]
    steps = len(cfg.denoising_steps)
    assert steps == {"gta_drive": 3, "templerun": 4}[mode]
    assert calls == [0] * (steps + 1) + [3] * (steps + 1) + [6] * (steps + 1)
    window = {"gta_drive": 4, "templerun": 6}[mode]
    layer = roll.cache.layers[0]
    assert layer.self_kv.capacity == window * cfg.frame_tokens
    assert layer.keyboard_kv.capacity == window
    assert (layer.mouse_kv is not None) == cfg.mouse
    # after 9 latent frames the window holds the newest `window` frames (GTA: 4, so one evicted a block)
    assert layer.self_kv.global_end == 9 * cfg.frame_tokens
    assert layer.self_kv.local_end == min(9, window) * cfg.frame_tokens


def test_window_evicts_once_per_block_and_keeps_absolute_positions() -> None:
    kv = WindowKV.empty((1, 6, 1, 1), torch.float32, "cpu")
    for block in range(4):
        for step in range(4):  # 3 denoising steps + the t=0 pass write the same slot
            new = torch.full((1, 3, 1, 1), float(10 * block + step))
            k, _ = kv.write(new, new, 3 * block)
        assert kv.global_end == 3 * block + 3
    assert k[0, :, 0, 0].tolist() == [23.0] * 3 + [33.0] * 3  # the last two blocks' t=0 writes


def test_positions_keep_counting_past_upstream_tables() -> None:
    """Upstream's RoPE tables end at latent frame 1024 (self-attention) and 7500 (actions); ours do not."""
    first = 5000
    rot = video_rope(128, first, 3, 2, 2, 10000.0, "cpu")  # (3*2*2, 1, 64)
    inv = 1.0 / torch.pow(10000.0, torch.arange(0, 44, 2, dtype=torch.float64) / 44)
    expect = torch.polar(torch.ones(22, dtype=torch.float64), (first + 2) * inv)
    assert torch.equal(rot[2 * 2 * 2, 0, :22], expect)  # frame 5002, row 0, col 0
    cos, _ = action_rope(8, 256.0, 9000, 3, "cpu")
    assert cos.shape == (3, 8)
    assert torch.allclose(cos[0, :2].double(), torch.cos(torch.tensor(9000.0, dtype=torch.float64)).repeat(2),
                          atol=1e-3)


def test_image_condition_covers_any_length() -> None:
    cfg = MatrixGameConfig.tiny()
    vae = WanVAE(dim=cfg.vae_dim).eval()
    tiny.fill_weights(vae)
    with torch.no_grad():
        cond = ImageCondition(vae, torch.rand(1, 3, cfg.height, cfg.width) * 2 - 1)
    far = cond.block(10_000, 3)
    assert far.shape == (1, 20, 3, cfg.latent_height, cfg.latent_width)
    assert far[:, :4].abs().sum() == 0  # the mask marks latent 0 only
    assert torch.equal(far[:, 4:, 0:1], cond.latents[-1])


def test_a_session_runs_past_upstreams_1024_frame_table() -> None:
    """Two blocks, then the session is moved 3600 latent frames on (caches, positions and the raw action
    timeline alike, as if that much had been played) and keeps going: positions are computed, not
    looked up in a 1024-frame table, and old raw actions are dropped as windows move on."""
    cfg = MatrixGameConfig.tiny()
    dit, vae = tiny_matrix_game_models(cfg)
    roll = Rollout(cfg, dit, vae)
    g = torch.Generator().manual_seed(0)
    roll.reset(torch.randn(1, 5, cfg.clip_dim, generator=g), condition=random_condition(cfg, g))
    starts: list[int] = []
    roll.observer = lambda c: starts.append(c["first_frame"])

    def block():
        n = roll.raw_frames_needed()
        return roll.step(torch.ones(1, n, cfg.keyboard_dim), torch.full((1, n, 2), 0.1))

    block(), block()
    jump = 3600
    roll.first_frame += jump
    roll.raw_start += cfg.vae_time_ratio * jump
    for layer in roll.cache.layers:
        layer.self_kv.global_end += jump * cfg.frame_tokens
        for kv in (layer.mouse_kv, layer.keyboard_kv):
            if kv is not None:
                kv.global_end += jump
    for _ in range(2):
        out = block()
        assert torch.isfinite(out.latents).all() and out.video.shape[1] == 12
    assert starts[-1] == 3 * 3 + jump
    assert roll.keyboard.shape[1] <= cfg.raw_window  # only what the next windows read is kept


def test_memory_plan_at_full_size() -> None:
    """Computed on the meta device. Upstream's figures: self-attention KV 928 MiB in bf16 (30 blocks x 6
    frames x 880 tokens), cross-attention 45 MiB, mouse 619 MiB for 30 blocks (we keep the 15 that use
    it), and the decoder's 32-slot time cache of demo_utils/constant.py (2.0 GiB in fp32)."""
    from worldwalk.runtime.matrix_game.memory import memory_plan

    plan = memory_plan(MatrixGameConfig())
    assert plan["cache.self_attention"] == 30 * 2 * 6 * 880 * 1536 * 2
    assert plan["cache.cross_attention"] == 30 * 2 * 257 * 1536 * 2
    assert plan["cache.mouse"] == 15 * 2 * 880 * 6 * 1024 * 2
    a = 44 * 80  # upstream's slot layout, in fp16
    upstream_vae_cache = 16 * 2 * a + 11 * 384 * 2 * a + 192 * 2 * 4 * a + 6 * 384 * 2 * 4 * a \
        + 6 * 192 * 2 * 16 * a + 7 * 96 * 2 * 64 * a
    assert plan["cache.vae_decoder"] == upstream_vae_cache * 2
    assert 3.23e9 < plan["weights.dit"] < 3.25e9  # 1.619 B parameters in bf16
    assert memory_plan(MatrixGameConfig.for_mode("gta_drive"))["cache.self_attention"] == 30 * 2 * 4 * 880 * 1536 * 2


def test_info_prints_the_plan(capsys) -> None:
    from types import SimpleNamespace

    from worldwalk.runtime.bench.memory_plan import run_plan

    args = SimpleNamespace(world="matrix-game", checkpoint=None, random_init="full", size="352x640",
                           gpu_memory="24GB", dtype="bfloat16", snapshots=None, json=False)
    assert run_plan(args) == 0
    out = capsys.readouterr().out
    assert "cache.self_attention" in out and "928.1 MiB" in out and "sessions in 24 GB" in out
