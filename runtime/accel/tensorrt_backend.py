"""NVIDIA paths: TensorRT engines built from the exported ONNX steps, and CUDA graphs under plain PyTorch.

TensorRT: `build_engine(onnx_path, device)` parses the same ONNX file the ONNX Runtime path runs
(onnx_export.py: same inputs, same flat cache layout) and serialises an engine next to it, cached per
GPU (name and compute capability), TensorRT version and precision. Precision (`WORLDWALK_TRT_PRECISION`):
- `strong` (default): a strongly typed network, every tensor in the dtype the export gave it: a bfloat16
  world gives a bf16 engine that keeps fp32 wherever the model does (RMSNorm statistics, the GDN scan and
  its recurrent states, UCPE camera math), exactly as the eager model;
- `auto`: a weakly typed network with fp16, bf16 (sm 8.0+) and fp8 (sm 8.9+) kernels allowed where
  TensorRT finds them faster. Not the default: fp16 overflows RMSNorm's x**2 past |x| = 256 and flushes
  the GDN normaliser's 1e-8 epsilon to 0 (0/0 = NaN for an all-zero query), and the fp32 casts become
  hints only, so recurrent states drift across chunks;
- `fp32`: no reduced precision.
The `tensorrt` package is imported lazily and never needed elsewhere; it does not come from PyPI alone
(`pip install tensorrt` pulls NVIDIA's wheels from pypi.nvidia.com; or use an NGC PyTorch container).

CUDA graphs: `CudaGraphStep(module, inputs)` captures one fixed-shape step (onnx_export.ChunkStep or
DecodeStep) on static buffers and replays it: inputs are copied in (an input already there, the same
unchanged tensor as the last call's, is not copied again), outputs cloned out, so the typed
cache never aliases a buffer the next replay overwrites. Each step captures on a stream of its own with
thread-local capture errors, so the decoder thread's work on its stream does not invalidate a capture
on the model thread (and builds take turns anyway: apply.py's build lock).

Every CUDA call is guarded: on a machine without CUDA these classes refuse with a message instead of
crashing at import.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from pathlib import Path

import torch
import torch.nn as nn


def _cuda_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def tensorrt_available(device: torch.device | str = "cuda") -> tuple[bool, str]:
    device = torch.device(device)
    if not _cuda_ok(device):
        return False, "TensorRT needs an NVIDIA GPU and a CUDA build of torch (run the world with device cuda)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, (
            "the tensorrt Python package is not installed: pip install tensorrt (NVIDIA's wheels, from "
            "pypi.nvidia.com) or use an NGC PyTorch container; see the README"
        )
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False, "onnx is needed to export the graphs TensorRT builds from: pip install 'worldwalk[onnx]'"
    return True, ""


def _precision() -> str:
    p = os.environ.get("WORLDWALK_TRT_PRECISION", "strong").strip().lower() or "strong"
    if p not in ("auto", "fp32", "strong"):
        raise ValueError(f"WORLDWALK_TRT_PRECISION must be auto, fp32 or strong, got {p!r}")
    return p


def engine_path(onnx_path: Path, device: torch.device, precision: str) -> Path:
    """Engine file for this ONNX file on this GPU, TensorRT version and precision."""
    return onnx_path.with_name(f"{onnx_path.stem}-{_gpu_tag(device)}-{precision}.engine")


def build_engine(onnx_path: Path, device: torch.device | str) -> Path:
    """Build (or reuse) a serialised TensorRT engine for `onnx_path`."""
    import tensorrt as trt

    device = torch.device(device)
    ok, why = tensorrt_available(device)
    if not ok:
        raise RuntimeError(why)
    precision = _precision()
    out = engine_path(Path(onnx_path), device, precision)
    if out.exists():
        return out
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if precision == "strong":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if precision in ("strong", "fp32") and hasattr(trt.BuilderFlag, "TF32"):
        # TensorRT sets TF32 by default: the fp32 islands (GDN scan and states, norms, UCPE) would run in TF32
        config.clear_flag(trt.BuilderFlag.TF32)
    timing = timing_cache_path(Path(onnx_path), device)
    cache = config.create_timing_cache(timing.read_bytes() if timing.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if precision == "auto":
        major, minor = torch.cuda.get_device_capability(device)
        config.set_flag(trt.BuilderFlag.FP16)
        if (major, minor) >= (8, 0) and hasattr(trt.BuilderFlag, "BF16"):
            config.set_flag(trt.BuilderFlag.BF16)
        if (major, minor) >= (8, 9) and hasattr(trt.BuilderFlag, "FP8"):
            config.set_flag(trt.BuilderFlag.FP8)
    from .announce import announce

    with announce(f"TensorRT: building an engine from {Path(onnx_path).parent.name} (tens of minutes cold at full "
                  f"size; the timing cache {timing.name} makes later builds faster)", first_after=5.0, every=30.0):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    _write(timing, bytes(config.get_timing_cache().serialize()))
    _write(out, bytes(serialized))
    return out


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f"{path.suffix}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _gpu_tag(device: torch.device) -> str:
    import tensorrt as trt

    idx = device.index if device.index is not None else torch.cuda.current_device()
    name = re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name(idx)).strip("_")
    major, minor = torch.cuda.get_device_capability(idx)
    return f"{name}-sm{major}{minor}-trt{trt.__version__}"


def timing_cache_path(onnx_path: Path, device: torch.device) -> Path:
    """One TensorRT timing cache per GPU and TensorRT version, beside the exports (shared by every engine)."""
    return onnx_path.parent.parent / f"timing-{_gpu_tag(torch.device(device))}.cache"


def engines_on_disk(folder: Path, device: torch.device | str) -> list[Path]:
    """Chunk-step engines built for this GPU and TensorRT version under `folder` (the exports' folder)."""
    try:
        tag = _gpu_tag(torch.device(device))
    except Exception:  # no tensorrt, no CUDA
        return []
    return sorted(Path(folder).glob(f"chunk-*/*-{tag}-*.engine"))


def _torch_dtype(trt_dtype) -> torch.dtype:
    import tensorrt as trt

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, td in (("bfloat16", torch.bfloat16), ("int64", torch.int64), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = td
    return table[trt_dtype]


class TrtStep:
    """A TensorRT engine with a torch-module-like call on CUDA tensors (`names`: the exported input order)."""

    def __init__(self, engine_file: Path, names: list[str]) -> None:
        import tensorrt as trt

        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
        self.context = self.engine.create_execution_context()
        self.names = list(names)
        io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in io if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        # one execution context (one activation memory): sessions sharing the engine take turns, on the host
        # (binding) and on the GPU (a call on another stream waits for the last call's end)
        self.lock = threading.Lock()
        self._done = torch.cuda.Event()
        self._last: torch.cuda.Stream | None = None

    def __call__(self, *inputs: torch.Tensor):
        with self.lock:
            return self._run(inputs)

    def _run(self, inputs: tuple[torch.Tensor, ...]):
        given = dict(zip(self.names, inputs, strict=True))
        keep = []
        for n in self.inputs:  # inputs the graph dropped as unused are simply not bound
            t = given[n].to(_torch_dtype(self.engine.get_tensor_dtype(n))).contiguous()
            keep.append(t)
            self.context.set_tensor_address(n, t.data_ptr())
        outs = []
        dev = inputs[0].device
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            t = torch.empty(shape, dtype=_torch_dtype(self.engine.get_tensor_dtype(n)), device=dev)
            outs.append(t)
            self.context.set_tensor_address(n, t.data_ptr())
        stream = torch.cuda.current_stream(dev)
        if self._last is not None and self._last != stream:
            stream.wait_event(self._done)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self._done.record(stream)
        self._last = stream
        return outs[0] if len(outs) == 1 else tuple(outs)


class CudaGraphStep:
    """A fixed-shape step captured once as a CUDA graph and replayed per call."""

    def __init__(self, module: nn.Module, inputs: list[torch.Tensor], warmup: int = 2) -> None:
        dev = inputs[0].device
        if not _cuda_ok(dev):
            raise RuntimeError("CUDA graphs need CUDA tensors on an NVIDIA GPU")
        self.static_in = [t.detach().clone() for t in inputs]
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):  # lazy inits (cuBLAS handles, workspaces) must not happen inside capture
                module(*self.static_in)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
            self.static_out = module(*self.static_in)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.lock = threading.Lock()  # sessions sharing the graph take turns with its static buffers
        self._done = torch.cuda.Event()  # the last call's clones are queued before this
        self._last: torch.cuda.Stream | None = None
        # what each static input holds: (the tensor copied in, its version then); the same unchanged tensor is
        # not copied again (about 1.1 GB a call at full size, 5 calls a chunk)
        self._loaded: list[tuple | None] = [None] * len(self.static_in)

    def _holds(self, i: int, src: torch.Tensor) -> bool:
        held = self._loaded[i]
        return held is not None and held[0]() is src and held[1] == src._version

    def __call__(self, *inputs: torch.Tensor):
        # copy in, replay, clone out on the caller's stream, under the lock: the next caller's copy-in is queued
        # after this one's clones on its own stream, so it waits for them (below) before overwriting the buffers
        with self.lock:
            stream = torch.cuda.current_stream(self.static_in[0].device)
            if self._last is not None and self._last != stream:
                stream.wait_event(self._done)
            for i, (dst, src) in enumerate(zip(self.static_in, inputs, strict=True)):
                if not self._holds(i, src):  # a chunk's cache, prompt and camera stay for its passes: copied once
                    dst.copy_(src)
                    self._loaded[i] = (weakref.ref(src), src._version)
            self.graph.replay()
            out = self.static_out
            out = tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()
            self._done.record(stream)
            self._last = stream
            return out
