"""`worldwalk train --device/--precision`: bf16 autocast training on a tiny config, on the CPU.

The CPU runs the same code the GPU does (torch's CPU autocast supports bf16): a few world-stage and VAE
steps on a fixed batch give finite fp32 losses that fall, the weights, gradients and optimiser stay fp32
while the forwards run in bf16, the model's fp32 islands stay fp32 under autocast, a checkpoint holds
fp32 CPU tensors and resumes (in bf16 or fp32), and `--device cuda` without a GPU is a clear error. The
test marked `cuda` runs the stages on a GPU and resumes its checkpoint on the CPU and back.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from worldwalk.runtime.cli.main import main
from worldwalk.runtime.sana_wm.camera import CameraInputs, apply_ucpe, ucpe_transforms
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.gdn import delta_scan
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.train.state_file import load_state
from worldwalk.runtime.train.train_device import NoCudaError, TrainDevice, resolve_device
from worldwalk.runtime.train.train_vae import (
    DecoderTuneConfig,
    TrainVAEConfig,
    export_vae,
    finetune_decoder,
    train_vae,
    vae_loss,
)
from worldwalk.runtime.train.train_world import (
    TrainWorldConfig,
    _cameras,
    encode_windows,
    sample_windows,
    train_world,
    world_loss,
)
from worldwalk.runtime.train.walks import ClipCache
from worldwalk.runtime.worlds.bundled_vae import FrameVAE, FrameVAEConfig, FrameVAEStream
from worldwalk.runtime.worlds.bundled_world import BundledConfig, empty_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BF16_CPU = TrainDevice(torch.device("cpu"), "bf16")
CUDA_TESTS_DEVICE = os.environ.get("WORLDWALK_CUDA_TESTS_DEVICE", "cuda")  # as in test_cuda.py
STEPS = 5  # optimiser steps on the fixed batch
CHUNKS = 2  # chunks per world sample: the first (with the image latent) and one reading the cache


def _cfg() -> BundledConfig:
    """32x32 video, 4x4 latents of 8 channels, a 4-block width-64 transformer (3 GDN + 1 softmax)."""
    vae = FrameVAEConfig(width=32, height=32, latent_channels=8, channels=(8, 16))
    t = SanaWMConfig.tiny(in_channels=8, chunk_plucker_channels=6 * vae.temporal_stride, caption_tokens=1)
    return BundledConfig(vae=vae, transformer=t)


def _data(cfg: BundledConfig, n: int = 2) -> dict[str, np.ndarray]:
    """Encoded windows as `encode_windows` writes them: 3 chunks of latents, poses walking forward."""
    g = np.random.default_rng(0)
    T = 1 + 3 * cfg.chunk_latents
    frames = 1 + cfg.stride * cfg.chunk_latents * 3
    h, w = cfg.vae.latent_hw
    poses = np.tile(np.eye(4), (n, frames, 1, 1))
    poses[:, :, 2, 3] = -0.1 * np.arange(frames)
    return {"latents": g.standard_normal((n, cfg.transformer.in_channels, T, h, w)).astype(np.float32),
            "poses": poses, "intrinsics": _intrinsics(n, frames)}


def _intrinsics(n: int, frames: int) -> np.ndarray:
    """(n, frames, 3, 3) pixel intrinsics of a 70-degree camera at 32x32."""
    f = 16 / math.tan(math.radians(35.0))
    return np.tile(np.array([[f, 0, 16], [0, f, 16], [0, 0, 1]]), (n, frames, 1, 1))


def _world_batch(cfg: BundledConfig, dev: TrainDevice) -> tuple:
    data = _data(cfg)
    tcfg = TrainWorldConfig(augment=0.0)
    rng = np.random.default_rng(1)
    cams = [_cameras(data["poses"][i], data["intrinsics"][i], CHUNKS, cfg, tcfg, rng) for i in range(2)]
    cams = [CameraInputs(dev.put(torch.cat([c[k].conditions for c in cams])),
                         dev.put(torch.cat([c[k].plucker for c in cams]))) for k in range(CHUNKS)]
    sigmas = dev.put(torch.tensor([[0.9, 0.5], [0.7, 0.3]]))  # (chunks, B)
    text, mask = (dev.put(x) for x in empty_text(cfg, 2))
    return dev.put(torch.from_numpy(data["latents"])), cams, sigmas, text, mask


def _world_loss(model: SanaWMStreamingTransformer, batch: tuple, dev: TrainDevice, rollout: bool) -> torch.Tensor:
    cfg = _cfg()
    torch.manual_seed(5)  # the same eps every step: a fixed objective
    z, cams, sigmas, text, mask = batch
    return world_loss(model, FlowSampler(cfg.sampler), z, cams, sigmas, text, mask, cfg.chunk_latents, dev, rollout)


def _world_steps(dev: TrainDevice, rollout: bool = False, steps: int = STEPS
                 ) -> tuple[list[float], SanaWMStreamingTransformer]:
    """`steps` AdamW steps of the world loss on one fixed batch (same noise every step)."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = SanaWMStreamingTransformer(cfg.transformer).to(dev.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    batch = _world_batch(cfg, dev)
    if dev.bf16:  # bf16 is fp32 rounded: the first loss is the fp32 loss of the same weights within 2%
        ref = _world_loss(model, batch, TrainDevice(dev.device, "fp32"), rollout).item()
    out_dtypes = []
    hook = model.final_layer.register_forward_hook(lambda m, i, o: out_dtypes.append(o.dtype))
    losses = []
    for _ in range(steps):
        loss = _world_loss(model, batch, dev, rollout)
        assert loss.dtype == torch.float32 and loss.device.type == dev.device.type
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    hook.remove()
    if dev.bf16:
        assert losses[0] == pytest.approx(ref, rel=0.02), f"bf16 loss {losses[0]:.4f}, fp32 loss {ref:.4f}"
    want = torch.bfloat16 if dev.bf16 else torch.float32
    assert out_dtypes and all(d == want for d in out_dtypes), f"the forwards ran in {set(out_dtypes)}, not {want}"
    assert all(p.dtype == torch.float32 for p in model.parameters()), "master weights stay fp32"
    assert all(v.dtype == torch.float32 for st in opt.state.values() for k, v in st.items() if k != "step")
    return losses, model


def _assert_falls(losses: list[float]) -> None:
    print("losses:", ", ".join(f"{x:.4f}" for x in losses))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.9 * losses[0], f"loss did not fall on a fixed batch: {losses}"


def _islands() -> dict[str, torch.Tensor]:
    """The GDN delta-rule scan and the UCPE transforms on fixed fp32 inputs."""
    g = torch.Generator().manual_seed(0)
    B, H, T, D, S = 1, 2, 3, 8, 5
    q, k, v = (torch.rand(B, H, T, D, S, generator=g) for _ in range(3))
    beta, decay = torch.rand(B, H, T, 1, S, generator=g), torch.rand(B, H, T, 1, 1, generator=g)
    num, den, state, z = delta_scan(q, k, v, beta, decay, None, q, k, None)
    pose = torch.eye(4).flatten() + 0.3 * torch.rand(16, generator=g)
    cond = torch.cat([pose, torch.tensor([4.0, 4.0, 2.0, 2.0])]).view(1, 1, 20)
    P = ucpe_transforms(cond, (4, 4), (1, 1)).P  # (1, 16, 4, 4)
    x = torch.rand(B, H, 16, 16, generator=g)
    return {"numerator": num, "denominator": den, "state": state, "norm state": z, "ucpe P": P,
            "ucpe applied": apply_ucpe(x, P, None)}


def test_fp32_islands_stay_fp32_under_autocast():
    """The GDN delta-rule state and the UCPE transforms compute in fp32 even inside bf16 autocast (autocast
    would otherwise run their matmuls in bf16; torch.cross in the UCPE transforms even fails on the mix):
    the same numbers bit for bit as without autocast."""
    ref = _islands()
    with BF16_CPU.autocast():
        got = _islands()
    for name, a in ref.items():
        b = got[name]
        assert b.dtype == torch.float32, f"{name} is {b.dtype} under autocast"
        assert torch.equal(a, b), f"{name} differs under autocast by {(a - b).abs().max().item():.2e}"


def test_world_steps_in_bf16_on_a_fixed_batch():
    losses, _ = _world_steps(BF16_CPU)
    _assert_falls(losses)


def test_world_steps_in_bf16_with_the_cache_from_own_samples():
    """The rollout path (the sampler under autocast, noise from the device's generator) runs and learns."""
    losses, _ = _world_steps(BF16_CPU, rollout=True, steps=4)
    _assert_falls(losses)


def _clips(tmp_path, cfg: BundledConfig, n: int = 2, frames: int = 13) -> ClipCache:
    """A real clip cache on disk: smooth moving colour gradients at the tiny size."""
    v = cfg.vae
    yy, xx = np.mgrid[0 : v.height, 0 : v.width] / max(v.height, v.width)
    out = np.empty((n, frames, v.height, v.width, 3), np.uint8)
    for i in range(n):
        for f in range(frames):
            ph = 0.3 * f + i
            out[i, f] = 127.5 + 120 * np.stack([np.sin(3 * xx + ph), np.cos(2 * yy - ph), np.sin(2 * (xx + yy))], -1)
    folder = tmp_path / "clips"
    folder.mkdir()
    np.save(folder / "frames.npy", out)
    np.save(folder / "poses.npy", np.tile(np.eye(4), (n, frames, 1, 1)))
    np.save(folder / "intrinsics.npy", _intrinsics(n, frames))
    return ClipCache(folder)


def test_vae_steps_in_bf16_on_a_fixed_batch(tmp_path):
    cfg = _cfg()
    frames = _clips(tmp_path, cfg).load()[0]
    x = torch.from_numpy(np.array(frames[:, :5])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (2, 3, 5, H, W)
    torch.manual_seed(0)
    vae = FrameVAE(cfg.vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    vcfg = TrainVAEConfig(batch=2, frames=5, crop=(32, 32))
    seen = []
    hook = vae.decoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = []
    for _ in range(STEPS):
        loss, y = vae_loss(vae, BF16_CPU.put(x), vcfg, BF16_CPU)
        assert loss.dtype == y.dtype == torch.float32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen), f"the decoder ran in {set(seen)}"
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    _assert_falls(losses)


def test_world_and_vae_checkpoints_resume_across_precisions(tmp_path):
    """train_world / train_vae in bf16 write fp32 CPU checkpoints that resume, in bf16 and in fp32."""
    cfg, data = _cfg(), _data(_cfg())
    work, out = tmp_path / "work", tmp_path / "world.safetensors"
    tcfg = TrainWorldConfig(steps=2, batch=2, chunks=1, warmup=1, ckpt_every=100)
    train_world(tcfg, data, work, out, cfg, progress=False, dev=BF16_CPU)
    tensors, meta = load_state(work / "world_ckpt.safetensors", "world")
    assert meta["step"] == 2 and meta["device"] == "cpu bf16"
    floats = [v for k, v in tensors.items() if k.startswith(("model.", "opt.")) and v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)  # the master weights, not a bf16 copy
    assert all(v.dtype == torch.float32 for v in load_file(str(out)).values() if v.is_floating_point())
    for steps, dev in ((3, BF16_CPU), (4, TrainDevice())):  # resume in bf16, then in fp32
        train_world(TrainWorldConfig(steps=steps, batch=2, chunks=1, warmup=1, ckpt_every=100), data, work, out, cfg,
                    progress=False, dev=dev)
        tensors, meta = load_state(work / "world_ckpt.safetensors", "world")
        assert meta["step"] == steps and meta["device"] == str(dev)
        assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
    SanaWMStreamingTransformer(cfg.transformer).load_state_dict(load_file(str(out)))  # the export loads

    clips = _clips(tmp_path, cfg)
    vcfg = TrainVAEConfig(steps=2, batch=1, frames=5, crop=(32, 32), warmup=1)
    train_vae(vcfg, clips, work, tmp_path / "vae.safetensors", vcfg=cfg.vae, progress=False, dev=BF16_CPU)
    vcfg.steps = 3
    train_vae(vcfg, clips, work, tmp_path / "vae.safetensors", vcfg=cfg.vae, progress=False, dev=BF16_CPU)
    tensors, meta = load_state(work / "vae_ckpt.safetensors", "vae")
    assert meta["step"] == 3 and meta["device"] == "cpu bf16"
    assert all(v.dtype == torch.float32 for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())
    vae = FrameVAE(cfg.vae)
    vae.load_state_dict(load_file(str(tmp_path / "vae.safetensors")))
    assert torch.isfinite(vae.latents_std).all() and (vae.latents_std > 0).all()


def test_encode_samples_and_decoder_stages_in_bf16(tmp_path):
    """The other stages that run a model: encode (fp32 always), the world model's own samples, the decoder."""
    cfg = _cfg()
    window = 1 + cfg.stride * cfg.chunk_latents * 3
    clips = _clips(tmp_path, cfg, n=1, frames=window)
    torch.manual_seed(0)
    vae = FrameVAE(cfg.vae).eval()
    data = encode_windows(FrameVAEStream(vae), clips, window, window, progress=False, dev=BF16_CPU)
    assert data["latents"].dtype == np.float32 and data["latents"].shape == (1, 8, 10, 4, 4)
    fp32 = encode_windows(FrameVAEStream(vae), clips, window, window, progress=False, dev=TrainDevice())
    assert np.array_equal(data["latents"], fp32["latents"]), "the data set is encoded in fp32 whatever the precision"
    model = SanaWMStreamingTransformer(cfg.transformer)
    frames, poses, intr = clips.load()
    samples = sample_windows(model, FrameVAEStream(vae), frames, poses, intr, cfg, 1, 0, progress=False,
                             dev=BF16_CPU)
    (_, _, z), = samples
    assert z.dtype == torch.float32 and z.device.type == "cpu" and z.shape == (1, 8, 10, 4, 4)
    assert torch.isfinite(z).all()
    export_vae(vae, tmp_path / "vae.safetensors", cfg.vae)
    dcfg = DecoderTuneConfig(steps=2, batch=1, frames=5, sample_share=0.5)
    finetune_decoder(dcfg, clips, tmp_path / "vae.safetensors", tmp_path / "work", tmp_path / "tuned.safetensors",
                     progress=False, samples=samples, dev=BF16_CPU)
    tensors, meta = load_state(tmp_path / "work" / "decoder_ckpt.safetensors", "decoder")
    assert meta["step"] == 2 and meta["device"] == "cpu bf16"
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "tuned.safetensors")).values())


def test_the_decoders_samples_drift_as_long_whatever_the_chunk(tmp_path):
    """The world's own latents for the decoder stage span the clip (up to `window_frames` video frames),
    not a fixed number of chunks: with one-latent chunks they go as far in time as with three."""
    import dataclasses

    cfg = _cfg()
    short = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, chunk_latent_frames=1))
    clips = _clips(tmp_path, cfg, n=1, frames=1 + cfg.stride * 6)  # six latent frames after the first
    frames, poses, intr = clips.load()
    torch.manual_seed(0)
    vae = FrameVAEStream(FrameVAE(cfg.vae).eval())
    for c, want in ((cfg, 1 + 3 * (6 // 3)), (short, 1 + 6)):
        model = SanaWMStreamingTransformer(c.transformer)
        (_, s, z), = sample_windows(model, vae, frames, poses, intr, c, 1, 0, progress=False)
        assert z.shape[2] == want and s == 0, (c.chunk_latents, z.shape)
    (_, _, z), = sample_windows(model, vae, frames, poses, intr, short, 1, 0, progress=False,
                                window_frames=1 + 2 * cfg.stride)
    assert z.shape[2] == 3


def test_device_choice_and_no_cuda_error(tmp_path, capsys):
    assert resolve_device("cpu") == TrainDevice(torch.device("cpu"), "fp32")  # fp32 by default on the CPU
    assert resolve_device("cpu", "bf16").bf16
    with pytest.raises(ValueError, match="precision 'fp16'"):
        resolve_device("cpu", "fp16")
    if torch.cuda.is_available():
        assert resolve_device("auto").device.type == "cuda"
        return
    assert resolve_device("auto") == TrainDevice(torch.device("cpu"), "fp32")
    with pytest.raises(NoCudaError, match="no CUDA device: use --device cpu"):
        resolve_device("cuda")
    work = tmp_path / "work"
    assert main(["train", "--device", "cuda", "--stage", "vae", "--work", str(work)]) == 2
    assert "no CUDA device: use --device cpu" in capsys.readouterr().err
    assert not work.exists(), "nothing is done before the device is known"


@pytest.mark.cuda
@pytest.mark.skipif(CUDA_TESTS_DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                    reason="needs an NVIDIA GPU and CUDA torch")
def test_cuda_bf16_steps_and_a_checkpoint_that_moves_between_devices(tmp_path):
    """WORLDWALK_CUDA_TESTS_DEVICE=cpu runs it on the CPU in bf16 (a dry run of its logic)."""
    gpu = resolve_device(CUDA_TESTS_DEVICE, "bf16")
    if gpu.cuda:
        assert resolve_device(CUDA_TESTS_DEVICE).bf16, "bf16 is the default on a GPU"
    losses, model = _world_steps(gpu)
    _assert_falls(losses)
    assert next(model.parameters()).device.type == gpu.device.type
    cfg, data = _cfg(), _data(_cfg())
    work, out = tmp_path / "work", tmp_path / "world.safetensors"
    for steps, dev in ((2, gpu), (3, TrainDevice()), (4, gpu)):  # the GPU, then the CPU in fp32, the GPU again
        train_world(TrainWorldConfig(steps=steps, batch=2, warmup=1, ckpt_every=100), data, work, out, cfg,
                    progress=False, dev=dev)
        tensors, meta = load_state(work / "world_ckpt.safetensors", "world")
        assert meta["step"] == steps and meta["device"] == str(dev)  # each run carried on the last
    clips = _clips(tmp_path, cfg)
    vcfg = TrainVAEConfig(steps=2, batch=1, frames=5, crop=(32, 32), warmup=1)
    train_vae(vcfg, clips, work, tmp_path / "vae.safetensors", vcfg=cfg.vae, progress=False, dev=gpu)
    vcfg.steps = 3
    train_vae(vcfg, clips, work, tmp_path / "vae.safetensors", vcfg=cfg.vae, progress=False, dev=TrainDevice())
    assert load_state(work / "vae_ckpt.safetensors", "vae")[1]["step"] == 3
