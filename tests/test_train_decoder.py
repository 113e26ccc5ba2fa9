"""The decoder stage's detail options: a wider decoder beside the frozen encoder, a patch critic and an
edge-energy loss that measures what the eval measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from worldwalk.runtime.train import goal_metrics as gm
from worldwalk.runtime.train.state_file import load_state
from worldwalk.runtime.train.train_vae import (
    DecoderTuneConfig,
    _decoder_loss,
    _detail_loss,
    _profile_loss,
    _repad_decoder,
    edge_energy_t,
    export_vae,
    finetune_decoder,
    tile_edge_energy_t,
)
from worldwalk.runtime.train.walks import ClipCache
from worldwalk.runtime.worlds.bundled_vae import (
    PADDING_MODES,
    FrameVAE,
    FrameVAEConfig,
    build_vae,
    vae_config_from_dict,
)


def test_the_training_edge_energy_is_the_evals():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 12, 20, 3), dtype=np.uint8)
    frames[1] = 128  # flat
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 127.5 - 1
    got = edge_energy_t(x).numpy()
    np.testing.assert_allclose(got, [gm.edge_energy(f) for f in frames], rtol=1e-9, atol=1e-9)
    assert got[1] == 0 and got[0] > 50


def test_the_tiled_detail_loss_wants_edges_where_the_truth_has_them():
    """Edges drawn in the wrong half (a band across a clear sky) make up for the missing ones over the
    whole frame, not per tile; one tile over the frame is the whole-frame energy."""
    rng = np.random.default_rng(4)
    truth = torch.zeros(1, 3, 1, 32, 32, dtype=torch.float64)
    truth[..., :, :16] = torch.from_numpy(rng.uniform(-1, 1, (32, 16)))  # detail on the left only
    moved = torch.zeros_like(truth)
    moved[..., :, 16:] = truth[..., :, :16]  # the same detail on the right
    assert _detail_loss(moved, truth) < 0.01 * _detail_loss(moved, truth, tile=8)
    assert _detail_loss(truth, truth, tile=8) == 0
    frames = truth[:, :, 0]
    g = (frames * torch.tensor([0.299, 0.587, 0.114], dtype=frames.dtype).view(1, 3, 1, 1)).sum(1)[0] * 127.5
    by_hand = ((g[1:, :-1] - g[:-1, :-1]).abs() + (g[:-1, 1:] - g[:-1, :-1]).abs()).mean()
    one = tile_edge_energy_t(frames, 64)
    assert one.shape == (1, 1, 1) and torch.isclose(one[0, 0, 0], by_hand)
    assert tile_edge_energy_t(frames, 8).shape == (1, 4, 4)


def test_the_profile_loss_sees_a_band_that_noise_of_the_same_size_is_not():
    """A dark band across the frame and errors scattered over every pixel with the same per-pixel L1: the
    profile loss is the band's, a small part of it for the noise."""
    rng = np.random.default_rng(5)
    truth = torch.zeros(1, 3, 1, 96, 160, dtype=torch.float64)
    band, noise = truth.clone(), truth.clone()
    band[..., 2:4, :] -= 0.2
    noise += torch.from_numpy(rng.choice([-0.2, 0.2], truth.shape) * 2 / 96)  # each pixel off a little
    assert abs(F.l1_loss(band, truth) - F.l1_loss(noise, truth)) < 0.2 * F.l1_loss(band, truth)
    assert _profile_loss(band, truth) > 5 * _profile_loss(noise, truth)
    assert _profile_loss(truth, truth) == 0


def _tiny_vae_and_clips(tmp_path) -> tuple[FrameVAE, ClipCache]:
    torch.manual_seed(0)
    vcfg = FrameVAEConfig(channels=(8, 16))
    vae = FrameVAE(vcfg)
    vae.latents_std.fill_(2.0)
    export_vae(vae, tmp_path / "vae.safetensors", vcfg)
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    np.save(clips / "frames.npy", rng.integers(0, 256, (2, 13, 96, 160, 3), dtype=np.uint8))
    np.save(clips / "poses.npy", np.broadcast_to(np.eye(4), (2, 13, 4, 4)).copy())
    np.save(clips / "intrinsics.npy", np.broadcast_to(np.eye(3), (2, 13, 3, 3)).copy())
    return vae, ClipCache(clips)


def test_the_critic_stops_at_its_step(tmp_path, one_torch_thread, monkeypatch):
    """`adv_stop` (`--decoder-adv-steps`): the critic judges the steps before it and none after."""
    from worldwalk.runtime.train import train_vae

    _, clips = _tiny_vae_and_clips(tmp_path)
    calls = []
    forward = train_vae.PatchCritic.forward
    monkeypatch.setattr(train_vae.PatchCritic, "forward", lambda self, x: calls.append(1) or forward(self, x))

    def critic_calls(stop: int | None, work: str) -> int:
        calls.clear()
        cfg = DecoderTuneConfig(steps=4, frames=5, batch=1, adv_weight=0.1, adv_start=0, adv_stop=stop)
        finetune_decoder(cfg, clips, tmp_path / "vae.safetensors", tmp_path / work, tmp_path / work / "out",
                         progress=False)
        return len(calls)

    whole, half = critic_calls(None, "a"), critic_calls(2, "b")
    assert half > 0 and 2 * half == whole, (half, whole)


def test_a_wider_decoder_with_a_critic_trains_beside_the_frozen_encoder_and_resumes(tmp_path, one_torch_thread):
    vae, clips_cache = _tiny_vae_and_clips(tmp_path)
    clips = clips_cache.folder
    cfg = DecoderTuneConfig(steps=2, frames=5, batch=1, adv_weight=0.1, adv_start=0, detail_weight=1.0,
                            decoder_channels=(16, 24))
    out = tmp_path / "tuned.safetensors"
    finetune_decoder(cfg, ClipCache(clips), tmp_path / "vae.safetensors", tmp_path, out, progress=False)
    with safe_open(str(out), "pt") as f:
        tuned_cfg = vae_config_from_dict(__import__("json").loads(f.metadata()["config"]))
    assert tuned_cfg.decoder_channels == (16, 24) and tuned_cfg.channels == (8, 16)
    tuned = build_vae(tuned_cfg)
    tuned.load_state_dict(load_file(str(out)))
    for k, v in vae.encoder.state_dict().items():  # the latents, and the world model trained on them, stay
        assert torch.equal(tuned.encoder.state_dict()[k], v), k
    assert torch.equal(tuned.latents_std, vae.latents_std)
    assert tuned.decoder[0].out_channels == 24
    x = torch.zeros(1, 3, 5, 96, 160)
    assert tuned.decode(tuned.encode(x)).shape == (1, 3, 5, 96, 160)
    assert load_state(tmp_path / "decoder_critic_ckpt.safetensors", "decoder-critic")[1]["step"] == 2

    finetune_decoder(DecoderTuneConfig(**{**cfg.__dict__, "steps": 3}), ClipCache(clips), tmp_path / "vae.safetensors",
                     tmp_path, out, progress=False)
    assert load_state(tmp_path / "decoder_ckpt.safetensors", "decoder")[1]["step"] == 3
    assert load_state(tmp_path / "decoder_critic_ckpt.safetensors", "decoder-critic")[1]["step"] == 3


def test_vae_files_without_decoder_widths_read_as_before():
    cfg = FrameVAEConfig()
    d = cfg.to_dict()
    assert "decoder_channels" not in d and vae_config_from_dict(d) == cfg
    wide = FrameVAEConfig(decoder_channels=(64, 160))
    assert vae_config_from_dict(wide.to_dict()) == wide
    edge = FrameVAEConfig(decoder_padding="replicate")
    assert "decoder_padding" not in d and vae_config_from_dict(edge.to_dict()) == edge


def _spread_over_cells(video: torch.Tensor) -> float:
    """How much a decoded frame (B, 3, F, H, W) varies between its 2x2 cells (one pixel shuffle's worth)."""
    cells = video.unfold(3, 2, 2).unfold(4, 2, 2)  # (B, 3, F, H/2, W/2, 2, 2)
    return (cells - cells[:, :, :, :1, :1]).abs().max().item()


def test_a_replicate_padded_decoder_draws_no_border_of_its_own():
    """A latent the same everywhere decodes to the same 2x2 cell everywhere when the decoder replicates the
    frame's edge; padded with zeros, the same weights draw a border (the band the sky's top rows showed)."""
    torch.manual_seed(1)
    zeros = FrameVAE(FrameVAEConfig(channels=(8, 16)))
    for p in zeros.decoder.parameters():  # no layer left near zero, so the border shows if it is there
        p.data += 0.1 * torch.randn_like(p)
    edge = _repad_decoder(zeros, "replicate")
    assert edge.cfg.decoder_padding == "replicate"
    for k, v in zeros.state_dict().items():
        assert torch.equal(edge.state_dict()[k], v), k
    z = torch.randn(1, 16, 1, 1, 1).expand(1, 16, 2, 12, 20)
    with torch.no_grad():
        flat, bordered = edge.decode(z), zeros.decode(z)
    assert _spread_over_cells(flat) < 1e-5
    assert _spread_over_cells(bordered) > 1e-2


def test_the_decoder_stage_repads_and_keeps_the_padding_in_the_file(tmp_path, one_torch_thread):
    _, clips = _tiny_vae_and_clips(tmp_path)
    out = tmp_path / "tuned.safetensors"
    cfg = DecoderTuneConfig(steps=1, frames=5, batch=1, decoder_padding="replicate")
    finetune_decoder(cfg, clips, tmp_path / "vae.safetensors", tmp_path / "w", out, progress=False)
    with safe_open(str(out), "pt") as f:
        tuned_cfg = vae_config_from_dict(__import__("json").loads(f.metadata()["config"]))
    assert tuned_cfg.decoder_padding == "replicate" and tuned_cfg.dec_channels == (8, 16)
    assert build_vae(tuned_cfg).decoder[0].padding_mode == "replicate"


def test_past_the_paired_frames_only_the_frames_statistics_are_matched():
    """On the world's own latents past `paired_frames` the truth is where the model has drifted from: a true
    frame mirrored there (the same edge energy, other pixels) changes nothing; over every frame it does."""
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 5, 24, 40)))
    y = x + 0.05 * torch.from_numpy(rng.standard_normal(x.shape))  # a decode close to the truth
    mirrored = x.clone()
    mirrored[:, :, 2:] = x[:, :, 2:].flip(-1)
    cfg = DecoderTuneConfig(detail_weight=2.0)
    assert _detail_loss(y, mirrored) == pytest.approx(_detail_loss(y, x).item(), rel=1e-12)
    assert _decoder_loss(y, mirrored, cfg, paired=2) == pytest.approx(_decoder_loss(y, x, cfg, paired=2).item(),
                                                                       rel=1e-12)
    assert _decoder_loss(y, mirrored, cfg) > 5 * _decoder_loss(y, x, cfg)
    assert _decoder_loss(y, x, cfg, paired=5) == _decoder_loss(y, x, cfg)


def test_the_train_command_offers_the_paddings_the_decoder_builds():
    """`train --decoder-padding` lists its choices without importing torch; they are the decoder's own."""
    from worldwalk.runtime.cli.main import build_parser

    parser = build_parser("train")
    train = parser._subparsers._group_actions[0].choices["train"]
    (action,) = [a for a in train._actions if a.dest == "decoder_padding"]
    assert tuple(action.choices) == PADDING_MODES
