"""`worldwalk train --stage distill` on a tiny teacher: the training rollout is the session's own chunk loop,
the phases run and resume from their checkpoints, and the student loads as a world with 4-frame chunks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.train.state_file import load_state
from worldwalk.runtime.train.train_device import TrainDevice
from worldwalk.runtime.train.train_distill import (
    DistillConfig,
    Windows,
    distill,
    kept_world,
    student_config,
    student_rollout,
)
from worldwalk.runtime.train.train_vae import export_vae
from worldwalk.runtime.train.train_world import export_world
from worldwalk.runtime.train.walks import ClipCache, WalkConfig, random_walk, retrace
from worldwalk.runtime.worlds.bundled_vae import FrameVAE, FrameVAEConfig, FrameVAEStream
from worldwalk.runtime.worlds.bundled_world import (
    START_FILE,
    VAE_FILE,
    WORLD_FILE,
    BundledConfig,
    BundledWorld,
    empty_text,
    load_weights,
)


def _tiny(folder, seed: int = 0, start: bool = True, chunk_latents: int = 3, retrace_at: int = 0) -> BundledConfig:
    """A tiny teacher (weights and VAE) and 3 random clips of 37 frames in `folder` (with `retrace_at`, each
    goes back along its path after that many frames)."""
    torch.manual_seed(seed)
    vcfg = FrameVAEConfig(channels=(8, 16))
    tcfg = SanaWMConfig.small(in_channels=16, num_layers=2, hidden_size=32, num_attention_heads=1,
                              linear_head_dim=32, caption_channels=8, caption_tokens=1, chunk_plucker_channels=24,
                              chunk_plucker_post_attn_blocks=2, mlp_ratio=2.0, rope_max_seq_len=512,
                              softmax_bf16=False, chunk_latent_frames=chunk_latents)
    cfg = BundledConfig(vae=vcfg, transformer=tcfg)
    model = SanaWMStreamingTransformer(tcfg)
    with torch.no_grad():
        for p in model.parameters():  # the zero-initialised output and camera projections would hide the cache
            p.add_(torch.randn_like(p) * 0.02)
    export_world(model, folder / WORLD_FILE, cfg)
    export_vae(FrameVAE(vcfg), folder / VAE_FILE, vcfg)
    rng = np.random.default_rng(seed)
    clips = folder / "clips"
    clips.mkdir(parents=True)
    np.save(clips / "frames.npy", rng.integers(0, 256, (3, 37, 96, 160, 3), dtype=np.uint8))
    wc = WalkConfig()
    walks = [random_walk(37, s, wc) for s in range(3)]
    np.save(clips / "poses.npy", np.stack([retrace(w, retrace_at) if retrace_at else w for w in walks]))
    np.save(clips / "intrinsics.npy", np.broadcast_to(wc.intrinsics(), (3, 37, 3, 3)).copy())
    if start:
        np.save(folder / START_FILE, rng.integers(0, 256, (96, 160, 3), dtype=np.uint8))
    return cfg


def test_the_training_rollout_is_the_sessions_chunk_loop(tmp_path, one_torch_thread):
    cfg = _tiny(tmp_path)
    scfg = student_config(cfg, DistillConfig())
    assert scfg.chunk_latents == 1 and scfg.sampler.timesteps == (1000, 500, 0)
    _, vae, teacher = load_weights(tmp_path)
    student = SanaWMStreamingTransformer(scfg.transformer)
    student.load_state_dict(teacher.state_dict())
    student.eval()
    dev = TrainDevice()
    data = Windows(ClipCache(tmp_path / "clips"), FrameVAEStream(vae), 37, 12, dev)
    image, cams = data.latents(1), data.cameras(1, 9, scfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        z = student_rollout(student, FlowSampler(scfg.sampler), image, cams, 10, gen, dev, grad=False)
    stream = LatentRollout(student, FlowSampler(scfg.sampler))
    stream.reset(*empty_text(scfg), seed=7)
    ref = [stream.step(cams[k], (1, 16, 1, 12, 20), image if k == 0 else None) for k in range(9)]
    ref = torch.cat(ref, 2)
    assert z.shape == ref.shape == (1, 16, 10, 12, 20)
    torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(z[:, :, 2], z[:, :, 1])  # chunks differ: the loop went on


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_distill_phases_run_resume_and_ship_a_world_with_4_frame_chunks(tmp_path, one_torch_thread):
    _tiny(tmp_path, start=False)  # a work folder without a start frame: the export takes the shipped one
    dcfg = DistillConfig(teacher_steps=4, ode_windows=2, ode_steps=2, dmd_steps=3, fake_ratio=1)
    folder = distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    assert load_state(tmp_path / "distill_ode_data.safetensors", "distill-ode-data")[1]["windows"].__len__() == 2
    assert load_state(tmp_path / "distill_ode_ckpt.safetensors", "distill-ode")[1]["step"] == 2
    tensors, meta = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")
    assert meta["step"] == 3 and "opt_fake.0.exp_avg" in tensors and not any(k.startswith("critic.") for k in tensors)
    world = BundledWorld(folder)
    assert world.spec.frames_per_chunk == 4 and world.spec.first_chunk_frames == 5
    assert world.rollout.sampler.cfg.timesteps == (1000, 500, 0)
    K = np.broadcast_to(np.eye(3), (5, 3, 3)).copy()
    K[:, 0, 0] = K[:, 1, 1] = 100.0
    assert world.generate_chunk(np.broadcast_to(np.eye(4), (5, 4, 4)).copy(), K).frames.shape == (5, 96, 160, 3)
    before = {k: v.clone() for k, v in tensors.items() if k.startswith("student.")}

    # resume: a larger budget carries on from the dmd checkpoint, here with the critic switched on; the ode
    # phases are not run again (their data need not be kept: the resumable state is the dmd checkpoint, the
    # teacher and the clips)
    (tmp_path / "distill_ode_data.safetensors").unlink()
    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 4, "gan_weight": 0.1}), ClipCache(tmp_path / "clips"),
            tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    tensors, meta = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")
    assert meta["step"] == 4 and any(k.startswith("critic.") for k in tensors) and "opt_critic.0.exp_avg" in tensors
    assert load_state(tmp_path / "distill_ode_ckpt.safetensors", "distill-ode")[1]["step"] == 2
    assert any(not torch.equal(before[k], tensors[k]) for k in before), "the student did not move"
    assert not (tmp_path / "distill_ode_data.safetensors").exists()


def test_a_teacher_in_the_students_chunks_skips_the_ode_phases_and_trains_on_longer_windows(
        tmp_path, one_torch_thread, monkeypatch):
    """With the teacher already in 1-latent chunks, `--ode-windows 0 --ode-steps 0` starts the dmd phase from
    the teacher's own weights, and `--distill-window` sets how many of its chunks a rollout walks."""
    import worldwalk.runtime.train.train_distill as td

    _tiny(tmp_path, chunk_latents=1)
    teacher = load_weights(tmp_path)[2].state_dict()
    dcfg = DistillConfig(window_chunks=5, ode_windows=0, ode_steps=0, dmd_steps=0)
    folder = distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    student = load_weights(folder)[2].state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in teacher)  # no ODE step moved it
    assert not (tmp_path / "distill_ode_data.safetensors").exists()

    shapes = []
    real_rollout = td.student_rollout

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003
        z = real_rollout(*args, **kwargs)
        shapes.append(tuple(z.shape))
        return z

    monkeypatch.setattr(td, "student_rollout", recording)
    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 2, "fake_ratio": 1}), ClipCache(tmp_path / "clips"),
            tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    assert shapes == [(1, 16, 6, 12, 20)] * 2  # the first image and 5 chunks of one latent frame
    student = load_weights(folder)[2].state_dict()
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher), "the dmd phase did not move the student"


def test_the_student_s_average_is_exported_and_resumed(tmp_path, one_torch_thread):
    """`--distill-ema`: the export is the student's weights' moving average, kept in the checkpoint."""
    _tiny(tmp_path, chunk_latents=1)
    teacher = load_weights(tmp_path)[2].state_dict()
    dcfg = DistillConfig(window_chunks=2, ode_windows=0, ode_steps=0, dmd_steps=2, fake_ratio=1, ema=0.5,
                         lr=1e-3)  # steps large enough that an average restarted from the teacher shows
    folder = distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    tensors, _ = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")
    exported = load_weights(folder)[2].state_dict()
    w = 1 - min(0.5, 2 / 11)  # one student update: the average's decay is still ramping up
    moved = [k for k in teacher if not torch.equal(tensors[f"student.{k}"], teacher[k])]
    assert moved, "the dmd phase did not move the student"
    for k in moved:
        torch.testing.assert_close(exported[k], teacher[k] + w * (tensors[f"student.{k}"] - teacher[k]))
        torch.testing.assert_close(tensors[f"student_avg.{k}"], exported[k])

    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 4}), ClipCache(tmp_path / "clips"), tmp_path,
            tmp_path / WORLD_FILE, log=lambda m: None)
    after, _ = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")
    w = 1 - min(0.5, 3 / 12)  # the second update, from the average the checkpoint kept
    for k in moved:
        torch.testing.assert_close(after[f"student_avg.{k}"], tensors[f"student_avg.{k}"] +
                                   w * (after[f"student.{k}"] - tensors[f"student_avg.{k}"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("option", "logged"), [("regress_weight", "regress"), ("rollout_weight", "rollout"),
                                                ("return_weight", "return")])
def test_an_anchor_to_the_truth_changes_the_student_s_update(tmp_path, one_torch_thread, option, logged):
    """`--distill-regress` (the flow-matching loss on the true latents), `--distill-rollout` (the student's
    rollout against them) and `--distill-return` (the same where the walk is back at its first view, on
    clips that retrace their path): each is logged and moves the student: the same run at two weights of it
    (the same random draws) ends elsewhere."""
    students, logs = [], {0.0: [], 1.0: [], 3.0: []}
    for weight in logs:
        work = tmp_path / f"w{weight:g}"
        work.mkdir()
        _tiny(work, chunk_latents=1, retrace_at=8 if option == "return_weight" else 0)
        dcfg = DistillConfig(window_chunks=4, ode_windows=0, ode_steps=0, dmd_steps=10, fake_ratio=1,
                             **{option: weight})
        folder = distill(dcfg, ClipCache(work / "clips"), work, work / WORLD_FILE, log=logs[weight].append)
        students.append(load_weights(folder)[2].state_dict())
    assert any(not torch.equal(students[1][k], students[2][k]) for k in students[1])
    assert any(f" {logged} " in m for m in logs[1.0]) and not any(f" {logged} " in m for m in logs[0.0])


def test_a_window_s_return_latents_are_those_back_at_its_first_view():
    """`Windows.returns`: a walk 8 frames straight out and back along the line is back at frame 16 (and at 32);
    within 0.2 units are frames 15-17 and 31-32, which latents 4, 5 and 8 hold (latent k: frames 4k - 3 to 4k).
    The frames near the start before it left do not count."""
    out = np.repeat(np.eye(4)[None], 33, axis=0)
    out[:, 2, 3] = -0.125 * np.minimum(np.arange(33) % 16, 16 - np.arange(33) % 16)  # 0.125 units a frame
    frames = np.zeros((1, 33, 2, 2, 3), dtype=np.uint8)
    intr = np.broadcast_to(np.eye(3), (1, 33, 3, 3))

    class Clips:
        def load(self):  # noqa: ANN202
            return frames, out[None], intr

    class Vae:
        temporal_stride = 4

    win = Windows(Clips(), Vae(), window=33, hop=33, dev=None)
    assert win.returns(0, 9, 4).nonzero()[0].tolist() == [4, 5, 8]
    out[9:, 0, 3] = 1.0  # comes back a unit to the side: never at its first view
    assert not win.returns(0, 9, 4).any()


def test_the_distill_window_is_the_one_the_student_plays_with(tmp_path, one_torch_thread):
    """`--distill-kv-window 3`: the student is exported with that window, and its rollouts and scores see it:
    the same run at the teacher's window (2) ends elsewhere."""
    students = []
    for window in (0, 3):
        work = tmp_path / f"w{window}"
        work.mkdir()
        _tiny(work, chunk_latents=1)
        dcfg = DistillConfig(window_chunks=4, ode_windows=0, ode_steps=0, dmd_steps=4, fake_ratio=1,
                             kv_window=window)
        folder = distill(dcfg, ClipCache(work / "clips"), work, work / WORLD_FILE, log=lambda m: None)
        students.append(load_weights(folder)[2])
    assert [m.cfg.kv_window for m in students] == [2, 3]
    assert any(not torch.equal(a, b) for a, b in zip(students[0].state_dict().values(),
                                                        students[1].state_dict().values(), strict=True))


def test_a_grown_student_starts_as_its_start_and_trains_its_new_blocks(tmp_path, one_torch_thread):
    """`--distill-student FILE --distill-grow 1`: the student is the given world with one block appended. At
    first it rolls out exactly what that world does (the new block is the identity); the dmd phase then moves
    the new block, faster than the old ones (`--distill-grow-lr`). A file that is not a world is refused."""
    teacher_dir, start_dir = tmp_path / "teacher", tmp_path / "start"
    teacher_dir.mkdir()
    start_dir.mkdir()
    _tiny(teacher_dir, chunk_latents=1)
    scfg = _tiny(start_dir, seed=1, chunk_latents=1)  # the student's start: another world of the same shape
    start = load_weights(start_dir)[2]
    dcfg = DistillConfig(window_chunks=3, ode_windows=0, ode_steps=0, dmd_steps=0, fake_ratio=1,
                         student_init=str(start_dir / WORLD_FILE), grow_blocks=1)
    folder = distill(dcfg, ClipCache(teacher_dir / "clips"), teacher_dir, teacher_dir / WORLD_FILE,
                     log=lambda m: None)
    grown = load_weights(folder)[2]
    assert grown.cfg.num_layers == 3
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in start.state_dict().items())

    dev = TrainDevice()
    data = Windows(ClipCache(teacher_dir / "clips"), FrameVAEStream(load_weights(start_dir)[1]), 37, 12, dev)
    image, cams = data.latents(2), data.cameras(2, 3, scfg)
    with torch.no_grad():
        z = [student_rollout(m.eval(), FlowSampler(student_config(scfg, dcfg).sampler), image, cams, 4,
                             torch.Generator().manual_seed(3), dev, grad=False) for m in (start, grown)]
    torch.testing.assert_close(z[1], z[0], rtol=0, atol=1e-6)

    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 4, "lr": 1e-4}), ClipCache(teacher_dir / "clips"),
            teacher_dir, teacher_dir / WORLD_FILE, log=lambda m: None)
    trained = load_weights(folder)[2].state_dict()
    new = trained["blocks.2.attn.proj.weight"]
    old = trained["blocks.1.attn.proj.weight"] - start.state_dict()["blocks.1.attn.proj.weight"]
    assert new.abs().max() > 5 * old.abs().max() > 0, "the new block did not learn at its own rate"
    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 5, "grow_lr": 30.0}), ClipCache(teacher_dir / "clips"),
            teacher_dir, teacher_dir / WORLD_FILE, log=lambda m: None)  # resumed: the rate asked now holds
    groups = load_state(teacher_dir / "distill_dmd_ckpt.safetensors", "distill-dmd")[1]["opt"]["student"]
    assert [g["scale"] for g in groups["param_groups"]] == [1.0, 30.0]

    from worldwalk.runtime.cli.main import main

    argv = ["train", "--work", str(teacher_dir), "--stage", "distill", "--no-resume", "--ode-windows", "0",
            "--ode-steps", "0", "--dmd-steps", "0", "--distill-window", "2", "--threads", "1", "--distill-student"]
    with pytest.raises(SystemExit, match="holds no transformer blocks"):
        main([*argv, str(start_dir / VAE_FILE)])
    with pytest.raises(SystemExit, match="does not exist"):
        main([*argv, str(start_dir / "nothing.safetensors")])


def test_ship_distilled_ships_the_student(tmp_path, one_torch_thread):
    from tests.conftest import gl_or_skip
    from worldwalk.runtime.cli.main import main

    _tiny(tmp_path, chunk_latents=1)
    out = tmp_path / "out"
    argv = ["train", "--work", str(tmp_path), "--stage", "ship", "--ship-distilled", "--out", str(out)]
    with pytest.raises(SystemExit, match="--stage distill"):
        main(argv)  # no student yet: the error says what to run
    dcfg = DistillConfig(window_chunks=2, ode_windows=0, ode_steps=0, dmd_steps=2, fake_ratio=1)
    folder = distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    assert gl_or_skip(lambda: main(argv)) == 0  # the ship stage renders the start frame
    assert (out / WORLD_FILE).read_bytes() == (folder / WORLD_FILE).read_bytes()
    assert (out / WORLD_FILE).read_bytes() != (tmp_path / WORLD_FILE).read_bytes()
    assert BundledWorld(out).spec.frames_per_chunk == 4


def test_ship_step_ships_a_kept_student(tmp_path, one_torch_thread):
    from tests.conftest import gl_or_skip
    from worldwalk.runtime.cli.main import main

    _tiny(tmp_path, chunk_latents=1)
    out = tmp_path / "out"
    argv = ["train", "--work", str(tmp_path), "--stage", "ship", "--ship-distilled", "--out", str(out), "--ship-step"]
    with pytest.raises(SystemExit, match="--distill-keep"):
        main([*argv, "2"])  # nothing kept yet: the error says how to keep
    dcfg = DistillConfig(window_chunks=2, ode_windows=0, ode_steps=0, dmd_steps=4, fake_ratio=1, keep_every=2)
    folder = distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, log=lambda m: None)
    assert sorted(f.name for f in (folder / "steps").iterdir()) == ["world_000002.safetensors",
                                                                    "world_000004.safetensors"]
    last, kept = load_file(folder / WORLD_FILE), load_file(kept_world(tmp_path, 4))
    assert all(torch.equal(last[k], kept[k]) for k in last)  # the last kept is the last export
    with pytest.raises(SystemExit, match="the kept steps are 2, 4"):
        main([*argv, "3"])
    assert gl_or_skip(lambda: main([*argv, "2"])) == 0
    assert (out / WORLD_FILE).read_bytes() == kept_world(tmp_path, 2).read_bytes()
    assert (out / WORLD_FILE).read_bytes() != (folder / WORLD_FILE).read_bytes()  # a student update lies between

    # --ship-kv-window: the same weights, softmax blocks seeing the first chunk and the last 2 (trained with 1)
    with pytest.raises(SystemExit):
        main([*argv, "2", "--ship-kv-window", "0"])
    assert gl_or_skip(lambda: main([*argv, "2", "--ship-kv-window", "3"])) == 0
    shipped, kept = load_file(out / WORLD_FILE), load_file(kept_world(tmp_path, 2))
    assert shipped.keys() == kept.keys() and all(torch.equal(shipped[k], kept[k]) for k in kept)
    assert load_weights(tmp_path)[2].cfg.kv_window == 2 and load_weights(out)[2].cfg.kv_window == 3

    # --ship-home-view: the same weights again, a chunk back at the first view reading only the first chunk
    for bad in ("0.1,20", "-1,20,3", "0.1,0,3", "0.1,20,-1", "a,b,c"):
        with pytest.raises(SystemExit):
            main([*argv, "2", "--ship-home-view", bad])
    assert gl_or_skip(lambda: main([*argv, "2", "--ship-kv-window", "3", "--ship-home-view", "0.1,20,3"])) == 0
    shipped = load_file(out / WORLD_FILE)
    assert shipped.keys() == kept.keys() and all(torch.equal(shipped[k], kept[k]) for k in kept)
    cfg = load_weights(out)[2].cfg
    assert (cfg.kv_window, cfg.home_radius, cfg.home_angle_deg, cfg.home_fade) == (3, 0.1, 20.0, 3.0)
    assert load_weights(tmp_path)[2].cfg.home_radius == 0.0  # off unless shipped so


CUDA_TESTS_DEVICE = os.environ.get("WORLDWALK_CUDA_TESTS_DEVICE", "cuda")  # as in test_cuda.py


@pytest.mark.cuda
@pytest.mark.skipif(CUDA_TESTS_DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                    reason="needs an NVIDIA GPU and CUDA torch")
def test_distill_on_the_gpu_in_bf16_and_its_checkpoint_resumes_on_the_cpu(tmp_path, one_torch_thread):
    """WORLDWALK_CUDA_TESTS_DEVICE=cpu runs it on the CPU in bf16 (a dry run of its logic)."""
    from worldwalk.runtime.train.train_device import resolve_device

    _tiny(tmp_path)
    gpu = resolve_device(CUDA_TESTS_DEVICE, "bf16")
    dcfg = DistillConfig(teacher_steps=2, ode_windows=1, ode_steps=1, dmd_steps=2, gan_weight=0.1, fake_ratio=1)
    distill(dcfg, ClipCache(tmp_path / "clips"), tmp_path, tmp_path / WORLD_FILE, dev=gpu, log=lambda m: None)
    meta = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")[1]
    assert meta["step"] == 2 and meta["device"] == str(gpu)
    distill(DistillConfig(**{**dcfg.__dict__, "dmd_steps": 3}), ClipCache(tmp_path / "clips"), tmp_path,
            tmp_path / WORLD_FILE, dev=TrainDevice(), log=lambda m: None)
    meta = load_state(tmp_path / "distill_dmd_ckpt.safetensors", "distill-dmd")[1]
    assert meta["step"] == 3 and meta["device"] == "cpu fp32"
    assert BundledWorld(tmp_path / "distill").spec.frames_per_chunk == 4
