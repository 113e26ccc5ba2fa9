"""What the memory plans of every world share: the op-by-op activation tracker that runs on meta tensors
(`tracked`), the part of a GPU no session may plan for (`RESERVE_BYTES` + `RESERVE_FRACTION`), the GPU's
size (`gpu_total_memory`), and how many rewind snapshots a session keeps (`kept_snapshots`). The plans
themselves live with their worlds (SANA-WM's in runtime/bench/memory_plan.py, runtime/matrix_game/memory.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

GiB = 2**30
RESERVE_BYTES = 2 * GiB  # CUDA context + cuBLAS/cuDNN workspaces
RESERVE_FRACTION = 0.05  # allocator fragmentation
MIN_SNAPSHOTS = 2  # snapshots a session must be able to keep: the boundary it is at and one to rewind to


class LiveBytes(TorchDispatchMode):
    """High-water mark of the bytes held by tensors created inside the `with` block.

    Every op output whose storage is not one of the op's inputs' (a view or an in-place result) is a
    new allocation; it counts until the storage is freed. Tensors made before the block (weights,
    inputs, the cache read) are not counted. Works on meta tensors, which have storages with sizes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        new = {}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                if s._cdata not in inputs and s._cdata not in self.live:
                    new[s._cdata] = s
        if not new:  # a view or an in-place op: nothing more is held, so the peak cannot move
            return out
        self.current()  # drop what was freed since the last allocation (the scan costs: only here)
        for key, s in new.items():
            self.live[key] = (StorageWeakRef(s), s.nbytes())
            self.now += s.nbytes()
        self.peak = max(self.peak, self.now)
        return out

    def current(self) -> int:
        """Bytes still held by tensors made inside the block (drops the freed ones first)."""
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]
        return self.now


class FusedAttention(TorchFunctionMode):
    """`F.scaled_dot_product_attention` as a fused kernel: the output (and an fp32 log-sum-exp) only."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2]
            lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
            out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
            del lse  # freed when the kernel returns; the high-water mark has seen it
            return out
        return func(*args, **kwargs)


@contextmanager
def tracked():
    """`with tracked() as live:` then `live.peak` is the bytes high-water mark of the block."""
    live = LiveBytes()
    with FusedAttention(), live:
        yield live


def gpu_total_memory(device: torch.device | str) -> int | None:
    """The memory of the GPU `device` names, or None when it is no CUDA device of this machine."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device).total_memory


class NotEnoughMemory(RuntimeError):
    """A full-size run that does not fit on the device; the message names what it would take."""


def kept_snapshots(snapshot_bytes: int, cfg: Any) -> int:
    """How many rewind snapshots a session (its `SessionConfig`) keeps: as many as its memory budget
    holds, at least one."""
    fit = int(cfg.snapshot_budget_mb * 1e6 // max(1, snapshot_bytes))
    return max(1, min(cfg.max_snapshots, fit))
