"""`worldwalk train` and `worldwalk eval` end to end on a tiny budget: every stage runs from scratch,
a stage resumes where its checkpoint stopped, the shipped folder loads as a world that generates, and
eval scores it against the reference world."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from worldwalk.controls import action_string_to_poses, intrinsics_from_fov
from worldwalk.runtime.cli.main import main
from worldwalk.runtime.train.state_file import load_state
from worldwalk.runtime.worlds.bundled_world import START_FILE, VAE_FILE, WORLD_FILE, BundledWorld


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 130 s on an idle 2-core machine; far more on a shared one
def test_train_every_stage_resume_and_eval(tmp_path, one_torch_thread, capsys):
    work, out = tmp_path / "work", tmp_path / "ship"
    budget = ["--work", str(work), "--out", str(out), "--clips", "2", "--vae-steps", "2", "--world-steps", "1",
              "--rollout-steps", "1", "--decoder-steps", "3", "--decoder-samples", "1", "--threads", "1",
              "--timesteps", "1000,800,400,0", "--world-chunks", "3", "--revisit-frames", "4,8",
              "--clip-frames", "61"]
    assert main(["train", *budget]) == 0
    assert np.load(work / "latents.npz")["latents"].shape[2] == 1 + 3 * 4  # windows of the image and 4 chunks
    for name in ("clips/frames.npy", "latents.npz", "vae_ckpt.safetensors", "world_ckpt.safetensors",
                 "rollout_ckpt.safetensors", "decoder_samples.safetensors", "decoder_ckpt.safetensors"):
        assert (work / name).is_file(), f"stage output {name} missing"
    assert not list(work.glob("*.pt")), "training state is never pickled"
    assert sorted(p.name for p in out.iterdir()) == sorted([START_FILE, VAE_FILE, WORLD_FILE])
    assert load_state(work / "world_ckpt.safetensors", "world")[1]["step"] == 1
    tensors, meta = load_state(work / "decoder_samples.safetensors", "decoder-samples")  # the model's own latents
    # ... along the whole 61-frame clip: the image latent and 5 chunks of 3
    assert len(meta["windows"]) == 1 and tensors["sample.0"].shape == (1, 16, 16, 12, 20)

    # resume: a larger step budget carries on from the checkpoint instead of starting again, with
    # the newer options (context noise, rollouts) on
    first = load_state(work / "world_ckpt.safetensors", "world")[1]
    assert main(["train", *budget, "--stage", "world", "--world-steps", "2", "--context-noise", "0.1",
                 "--world-rollout", "0.5"]) == 0
    resumed = load_state(work / "world_ckpt.safetensors", "world")[1]
    assert resumed["step"] == 2 and resumed["seconds"] > first["seconds"]
    assert resumed["opt"]["param_groups"][0]["lr"] > 0

    world = BundledWorld(out)
    assert world.rollout.sampler.cfg.timesteps == (1000, 800, 400, 0)  # trained for these steps: ships with them
    poses = action_string_to_poses("w-13")[:13]
    K = np.broadcast_to(intrinsics_from_fov(160, 96, 70.0), (13, 3, 3)).copy()
    chunk = world.generate_chunk(poses, K)
    assert chunk.frames.shape == (13, 96, 160, 3)

    saved = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(out), "--walks", "1", "--seconds", "1.5", "--save", str(saved),
                 "--paths", "out-and-back", "--starts", "1", "--timesteps", "1000,960,889,727,0"]) == 0
    result = json.loads((saved / "eval.json").read_text())
    assert result["timesteps"] == [1000, 960, 889, 727, 0]  # scored with the sampler asked for
    table = result["table"]
    back = result["scripted"]["out-and-back"]  # its own row, with the memory score at the return (6 s)
    assert back["return seconds"] == 6.0 and 0 < back["return model"]["psnr"] < 60
    assert back["return vae ceiling"]["psnr"] > back["return model"]["psnr"] - 30
    assert {"1s model", "1s frozen first frame", "5s model", "5s frozen first frame"} <= set(back)
    assert (saved / "strip_out-and-back.png").is_file()
    assert set(table) == {"model", "still camera", "frozen first frame", "vae ceiling"}
    assert 0 < table["model"]["1s"]["psnr"] < 60 and -1 <= table["model"]["1s"]["ssim"] <= 1
    assert (saved / "strip.png").is_file()
    assert "held-out walks" in capsys.readouterr().out

    # short chunks: the world stage carries on at one latent frame a chunk (4 video frames) and ships it
    assert main(["train", *budget, "--stage", "world", "--world-steps", "3", "--chunk-latents", "1",
                 "--timesteps", "1000,500,0", "--world-rollout", "1", "--world-ema", "0.5"]) == 0
    # with --world-ema the stage exports the moving average it checkpoints, not the last weights
    tensors, _ = load_state(work / "world_ckpt.safetensors", "world")
    exported = load_file(str(work / WORLD_FILE))
    name = "blocks.0.mlp.inverted_conv.conv.weight"
    assert torch.equal(exported[name], tensors[f"ema.{name}"])
    assert not torch.equal(exported[name], tensors[f"model.{name}"])
    assert main(["train", *budget, "--stage", "ship"]) == 0
    world = BundledWorld(out)
    assert world.rollout.sampler.cfg.timesteps == (1000, 500, 0)
    assert [world.spec.chunk_frames(k) for k in range(3)] == [5, 4, 4]
    poses = action_string_to_poses("w-13")[:13]
    frames = [world.generate_chunk(poses[i:j], K[i:j]).frames for i, j in ((0, 5), (5, 9), (9, 13))]
    assert [f.shape[0] for f in frames] == [5, 4, 4]

    # the encode stage reads a VAE by the config stored with it: the shipped one has the decoder stage's wider decoder
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(work / "clips", again / "clips")
    shutil.copy(out / VAE_FILE, again / VAE_FILE)
    assert main(["train", *budget, "--work", str(again), "--stage", "encode", "--chunk-latents", "1"]) == 0
    assert np.load(again / "latents.npz")["latents"].shape[2] == 1 + 4  # the image and 4 one-latent chunks


def test_timesteps_that_do_not_fall_to_zero_are_refused(capsys):
    for command in ("train", "eval"):
        with pytest.raises(SystemExit) as e:
            main([command, "--timesteps", "1000,333,667,0"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--timesteps" in err and "falling strictly to 0" in err and "1000,667,333,0" in err


def test_a_training_window_longer_than_the_clips_is_refused_before_any_work(tmp_path, capsys):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as e:
        main(["train", "--work", str(work), "--stage", "data", "--world-chunks", "7"])  # 97 frames > 49
    assert "--clip-frames 97" in str(e.value) and not (work / "clips").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "--revisit-frames", "9,3"])
    assert e.value.code == 2 and "LO,HI" in capsys.readouterr().err
