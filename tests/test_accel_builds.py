"""Building accelerated graphs: one at a time across threads, runners keyed on every input shape,
exported graphs the ONNX checker accepts, and the backend each step runs on stated, never silent."""

from __future__ import annotations

import threading

import pytest
import torch

from worldwalk.runtime.accel import apply as accel
from worldwalk.runtime.accel.apply import AcceleratedStep, AcceleratedVAE, engine
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.vae import DecodeState

from .builders import CHUNK
from .builders import LATENT_H as H
from .builders import LATENT_W as W
from .builders import tiny_cameras as _cameras
from .builders import tiny_transformer as _transformer
from .test_accel import _vae, needs_ort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stream_after(tr, chunks: int, backend=None, tokens: int | None = None) -> LatentRollout:
    """A stream that has written `chunks` chunks (eagerly), ready for the next."""
    stream = LatentRollout(tr, FlowSampler())
    stream.backend = backend
    L = tokens or tr.cfg.caption_tokens
    text = torch.randn(1, L, tr.cfg.caption_channels, generator=torch.Generator().manual_seed(1))
    stream.reset(text, torch.ones(1, L, dtype=torch.bool), seed=3)
    image = torch.randn(1, tr.cfg.in_channels, 1, H, W, generator=torch.Generator().manual_seed(2))
    for k, cam in enumerate(_cameras(chunks)):
        stream.step(cam, (1, tr.cfg.in_channels, CHUNK, H, W), image if k == 0 else None)
    return stream


@needs_ort
def test_chunk_step_and_decoder_step_build_from_two_threads(tmp_path):
    """The model thread builds the chunk step while the decoder thread builds the decoder step (a
    pipelined warm-up): torch.onnx.export from two threads at once fails with `GLOBALS.in_onnx_export
    must be False` unless the builds take turns."""
    tr = _transformer()
    stream = _stream_after(tr, 1)
    cam = _cameras(2)[1]
    step = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path / "a")
    vae = AcceleratedVAE(_vae(), engine("onnx", torch.device("cpu")), tmp_path / "b")
    g = torch.Generator().manual_seed(0)
    _, state = vae.inner.decode_chunk(torch.randn(1, 8, 1 + CHUNK, 4, 4, generator=g), DecodeState())
    z = torch.randn(1, 8, CHUNK, 4, 4, generator=g)
    latents = torch.randn(1, tr.cfg.in_channels, CHUNK, H, W, generator=g)
    t = torch.zeros(1, CHUNK)
    errors: list[BaseException] = []
    inside, release = threading.Event(), threading.Event()

    def hold_export(module, args):  # holds the chunk step's export half-way, so the other build overlaps it
        if torch.onnx.is_in_onnx_export() and threading.current_thread() is model_thread:
            inside.set()
            release.wait(60)

    def build(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    hook = tr.final_layer.register_forward_pre_hook(hold_export)
    model_thread = threading.Thread(target=build, args=(
        lambda: step(latents, t, stream.text, stream.mask, cam.to("cpu", tr.dtype), stream.cache, True),))
    decode_thread = threading.Thread(target=build, args=(lambda: vae.decode_chunk(z, state),))
    model_thread.start()
    assert inside.wait(120), errors  # the chunk step's export is under way ...
    decode_thread.start()  # ... when the decoder thread builds its step
    decode_thread.join(5)
    release.set()
    model_thread.join()
    decode_thread.join()
    hook.remove()
    assert not errors, f"{type(errors[0]).__name__}: {errors[0]}"
    assert step.counts["accel"] == 1 and vae.counts["accel"] == 1


@needs_ort
def test_a_prompt_of_another_length_gets_its_own_graph(tmp_path):
    """Runners are keyed on every input's shape: after a reset with a prompt of another token count the
    step builds new graphs instead of feeding the old fixed-shape ones (ONNX Runtime rejects that; a
    CUDA graph would copy into the wrong shape, TensorRT read out of bounds)."""
    tr = _transformer()
    step = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path)
    for tokens in (tr.cfg.caption_tokens, tr.cfg.caption_tokens - 3):
        got = _stream_after(tr, 2, step, tokens)
        ref = _stream_after(tr, 2, None, tokens)
        for a, b in zip(got.cache.blocks, ref.cache.blocks, strict=True):
            if hasattr(a, "state"):
                assert torch.allclose(a.state, b.state, rtol=1e-4, atol=1e-5)
    assert step.counts["accel"] == 2 * 5 and len(step._runners) == 2  # one graph (reads and write) per prompt length


def _export_only(paths: list):
    """A maker that exports each graph (the real export) and runs the module eagerly."""

    def make(kind, module, inputs, names, export):
        paths.append(export())
        return module

    return make


def test_bf16_exports_pass_the_onnx_checker(tmp_path):
    """A bf16 world exports graphs the ONNX checker accepts (opset 17 has no bf16 Conv or Einsum)."""
    onnx = pytest.importorskip("onnx")
    paths: list = []
    tr = _transformer().to(torch.bfloat16)
    stream = _stream_after(tr, 2, AcceleratedStep(tr, _export_only(paths), tmp_path))
    assert stream.cache.chunks == 2
    vae = _vae()
    vae.vae.to(torch.bfloat16)
    acc = AcceleratedVAE(vae, _export_only(paths), tmp_path)
    g = torch.Generator().manual_seed(0)
    state = DecodeState()
    for k in range(2):
        _, state = acc.decode_chunk(torch.randn(1, 8, CHUNK + (k == 0), 4, 4, generator=g).bfloat16(), state)
    assert len(paths) == 2  # the chunk step (its reads and its write), the decoder
    for p in paths:
        model = onnx.load(str(p))
        assert any(t.data_type == onnx.TensorProto.BFLOAT16 for t in model.graph.initializer), p
        onnx.checker.check_model(model, full_check=True)


def test_tensorrt_defaults_to_a_strongly_typed_network(monkeypatch):
    """A weakly typed fp16 engine overflows RMSNorm and zeroes the GDN epsilon: strong typing is the default."""
    from worldwalk.runtime.accel.tensorrt_backend import _precision

    monkeypatch.delenv("WORLDWALK_TRT_PRECISION", raising=False)
    assert _precision() == "strong"
    monkeypatch.setenv("WORLDWALK_TRT_PRECISION", "fp16")
    with pytest.raises(ValueError, match="strong"):
        _precision()


def test_summary_names_the_backend_each_part_runs_on(caplog):
    import logging

    from .builders import tiny_world
    from .test_sana_wm_memory import _walk

    world = tiny_world()
    with caplog.at_level(logging.INFO, logger="worldwalk.runtime.accel.apply"):
        assert accel.apply_accel(world, "flat") == "flat"
        _walk(world, 2, [])
    s = accel.summary(world)
    assert s["step"]["backend"] == "flat" and s["vae"]["backend"] == "flat"
    assert s["step"]["accel"] == 5 and s["vae"]["accel"] == 1
    assert "chunk-write graph runs on flat" in caplog.text and "vae-decode graph runs on flat" in caplog.text


def test_on_a_gpu_chunks_before_a_full_window_run_eagerly(tmp_path):
    """A GPU builds no masked graph: chunk 0 and chunk 1 (window not full, kv_window 2) run eagerly, every later
    chunk through one unmasked graph per shape; the latents are those of the masked graphs the CPU runs."""
    tr = _transformer()
    cams = _cameras(4)

    image = torch.randn(1, tr.cfg.in_channels, 1, H, W, generator=torch.Generator().manual_seed(2))

    def run(full_window_only):
        step = AcceleratedStep(tr, engine("flat", torch.device("cpu")), tmp_path)
        step.full_window_only = full_window_only
        stream = _stream_after(tr, 0, backend=step)
        out = [stream.step(cam, (1, tr.cfg.in_channels, CHUNK, H, W), image if k == 0 else None)
               for k, cam in enumerate(cams)]
        return step, out

    gpu, got = run(True)
    assert gpu.counts == {"eager": 10, "accel": 10}  # chunks 0 and 1 eager (5 passes each), 2 and 3 accelerated
    assert all(not key[1] for key in gpu._runners)  # no masked runner
    cpu, want = run(False)
    assert cpu.counts == {"eager": 5, "accel": 15} and all(key[1] for key in cpu._runners)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_full_window_runs_the_same_without_the_mask(tmp_path):
    """On a GPU the chunk step drops the SDPA mask once the window is full (flash attention can run):
    the unmasked step gives what the masked one gives (its mask is all zeros then)."""
    from worldwalk.runtime.accel.onnx_export import ChunkStep

    tr = _transformer()
    stream = _stream_after(tr, 3)  # chunks 0-2 written: sink + a full window of one recent chunk
    step = AcceleratedStep(tr, engine("flat", torch.device("cpu")), tmp_path)
    cam = _cameras(4)[3].to("cpu", tr.dtype)
    latents = torch.randn(1, tr.cfg.in_channels, CHUNK, H, W, generator=torch.Generator().manual_seed(5))
    fixed, flat, lay = step._prepare(latents, torch.full((1, CHUNK), 500.0), stream.text, stream.mask, cam,
                                     stream.cache)
    assert accel._window_full(stream.cache, lay.keep) and (fixed[-1] == 0).all()
    inputs = [latents, torch.full((1, CHUNK), 500.0), *fixed[2:], *flat]
    with torch.no_grad():
        masked = ChunkStep(tr, lay, True, masked=True)(*inputs)
        plain = ChunkStep(tr, lay, True, masked=False)(*inputs)
    for a, b in zip(plain, masked, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@needs_ort
def test_reads_and_write_share_one_graph(tmp_path):
    """The denoising passes run the write graph and keep its velocity: one exported graph and one ONNX Runtime
    session hold the weights (TensorRT would embed them twice with a read and a write engine); the latents and
    the cache are those of separate read and write graphs (the same velocity sums, to fp32 rounding)."""
    tr = _transformer()
    shared = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path / "one")
    apart = AcceleratedStep(tr, engine("onnx", torch.device("cpu")), tmp_path / "two", shared=False)
    got, want = _stream_after(tr, 3, shared), _stream_after(tr, 3, apart)
    assert shared.counts["accel"] == apart.counts["accel"] == 2 * 5
    assert len(shared._runners) == 1 and len(list((tmp_path / "one").glob("chunk-*/model.onnx"))) == 1
    assert len(apart._runners) == 2
    for a, b in zip(got.cache.blocks, want.cache.blocks, strict=True):
        if hasattr(a, "state"):
            assert torch.allclose(a.state, b.state, rtol=1e-5, atol=1e-6)
            assert torch.allclose(a.ffn_tail, b.ffn_tail, rtol=1e-5, atol=1e-6)
        else:
            assert torch.allclose(a.recent[-1].k, b.recent[-1].k, rtol=1e-5, atol=1e-6)
