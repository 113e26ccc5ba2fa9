"""ONNX Runtime sessions (CPU execution provider) for the exported chunk and decoder steps.

`OrtStep(path)` is called like the torch module it was exported from: torch tensors in (CPU), torch
tensors out. Inputs and outputs cross as numpy views (no copies). Threads follow torch's setting
(`torch.get_num_threads()`, which worldwalk sets per world) so both runtimes share the same cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def onnxruntime_available() -> tuple[bool, str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False, "onnxruntime is not installed: pip install 'worldwalk[onnx]' (onnx and onnxruntime)"
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False, "onnx is not installed (needed to export the graphs): pip install 'worldwalk[onnx]'"
    return True, ""


class OrtStep:
    """An ONNX Runtime CPU session with a torch-module-like call."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) < len(self.input_names):
            raise ValueError(f"{self.path.name} takes {len(self.input_names)} inputs, got {len(inputs)}")
        # constant-folded inputs (unused by the graph) are dropped by the exporter: feed only the graph's names
        feed = {n: _numpy(t) for n, t in zip(self._names_for(len(inputs)), inputs, strict=True) if n in self._used}
        outs = self.session.run(self.output_names, feed)
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors

    def bind_names(self, names: list[str]) -> None:
        """The full input name list the step was exported with (the graph may have dropped unused ones)."""
        self._all = list(names)

    @property
    def _used(self) -> set[str]:
        return set(self.input_names)

    def _names_for(self, n: int) -> list[str]:
        names = getattr(self, "_all", None)
        if names is None or len(names) != n:
            raise ValueError(f"{self.path.name}: call bind_names() with the {n} exported input names first")
        return names


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().numpy()
