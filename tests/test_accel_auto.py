"""`--accel auto` on a GPU and TensorRT's build settings, without a GPU (the CUDA and TensorRT calls stand in):
auto takes CUDA graphs until a chunk-step engine is on disk; with TensorRT the VAE decoder runs on CUDA graphs;
a strongly typed or fp32 engine is built without TF32, and the timing cache is kept beside the engines."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from worldwalk.runtime.accel import apply as accel
from worldwalk.runtime.accel import tensorrt_backend as trtb


def _gpu(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel, "_cuda", lambda device: True)
    monkeypatch.setattr(accel, "check", lambda choice, device: (True, ""))
    monkeypatch.setattr(trtb, "_gpu_tag", lambda device: "H100-sm90-trt10.9")
    monkeypatch.setenv("WORLDWALK_ONNX_DIR", str(tmp_path))


def test_auto_uses_cuda_graphs_until_an_engine_is_on_disk(monkeypatch, tmp_path):
    _gpu(monkeypatch, tmp_path)
    folder = accel.export_dir(tmp_path)
    assert accel.resolve("auto", "cpu", tmp_path) == "cudagraph"
    (folder / "vae-decode-abc").mkdir(parents=True)
    (folder / "vae-decode-abc" / "model-H100-sm90-trt10.9-strong.engine").write_bytes(b"x")
    assert accel.resolve("auto", "cpu", tmp_path) == "cudagraph"  # a decoder engine is not the chunk step's
    (folder / "chunk-write-full-abc").mkdir()
    (folder / "chunk-write-full-abc" / "model-H100-sm90-trt10.9-strong.engine").write_bytes(b"x")
    assert accel.resolve("auto", "cpu", tmp_path) == "tensorrt"
    assert accel.resolve("tensorrt", "cpu", tmp_path) == "tensorrt"  # asked for: built, however long it takes


def test_with_tensorrt_the_decoder_runs_on_cuda_graphs(monkeypatch, tmp_path):
    from .builders import tiny_world

    monkeypatch.setattr(accel, "resolve", lambda choice, device, cache_dir=None: "tensorrt")
    world = tiny_world()
    assert accel.apply_accel(world, "tensorrt", tmp_path) == "tensorrt"
    assert world.rollout.backend.backend == "tensorrt" and world.rollout.backend.shared
    assert world.vae.backend == "cudagraph"
    assert accel.backends(world) == {"chunk": "tensorrt", "decode": "cudagraph"}
    accel.apply_accel(world, "none")
    world.close()


class _FakeTrt(types.ModuleType):
    """The calls build_engine makes, recorded."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.9"
        self.cleared: list[str] = []
        self.cache_given: list[bytes] = []
        trt = self

        class Flag:
            TF32, FP16, BF16, FP8 = "TF32", "FP16", "BF16", "FP8"

        class Creation:
            STRONGLY_TYPED = 0

        class Config:
            def clear_flag(self, flag):
                trt.cleared.append(flag)

            def set_flag(self, flag):
                pass

            def create_timing_cache(self, data):
                trt.cache_given.append(bytes(data))
                return types.SimpleNamespace(serialize=lambda: b"timings")

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return object()

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                return b"engine"

        class Parser:
            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                return True

        self.BuilderFlag, self.NetworkDefinitionCreationFlag = Flag, Creation
        self.Builder, self.OnnxParser = Builder, Parser
        self.Logger = type("Logger", (), {"WARNING": 0, "__init__": lambda self, level: None})


def test_engines_are_built_without_tf32_and_keep_a_timing_cache(monkeypatch, tmp_path):
    fake = _FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trtb, "tensorrt_available", lambda device: (True, ""))
    monkeypatch.setattr(trtb, "_gpu_tag", lambda device: "H100-sm90-trt10.9")
    onnx = tmp_path / "chunk-write-full-abc" / "model.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(b"onnx")
    for precision in ("strong", "fp32"):
        monkeypatch.setenv("WORLDWALK_TRT_PRECISION", precision)
        out = trtb.build_engine(onnx, torch.device("cpu"))
        assert out.read_bytes() == b"engine" and "TF32" in fake.cleared
        fake.cleared.clear()
    assert (tmp_path / "timing-H100-sm90-trt10.9.cache").read_bytes() == b"timings"
    assert fake.cache_given == [b"", b"timings"]  # the second build starts from the first one's timings
