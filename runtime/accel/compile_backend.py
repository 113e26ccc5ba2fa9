"""torch.compile for the fixed-shape chunk and decoder steps (onnx_export.ChunkStep / DecodeStep).

The steps are pure functions of their tensors (the cache and the VAE's conv tails go in and come out),
so a compiled graph never holds state across chunks: the known failure of compiling a causal decoder
that keeps its state in Python (later chunks come out blank) cannot happen here. Shapes are fixed
(`dynamic=False`), so each step compiles once. On the CPU inductor writes C++ and needs a compiler
(`c++`/`gcc` on PATH); the first chunk that uses a step pays the compile (tens of seconds on 2 cores).
"""

from __future__ import annotations

import shutil

import torch
import torch.nn as nn


def compile_available(device: torch.device) -> tuple[bool, str]:
    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile: install torch >= 2.0"
    if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("gcc")):
        return False, "torch.compile on the CPU needs a C++ compiler: install gcc/g++ (e.g. apt-get install g++)"
    return True, ""


# Compiled runners per process (chunk read/write, full window or not, prompt lengths, the decoder; sessions of
# other sizes): each is a new module on the same `forward` code, which dynamo counts against one recompile
# limit (8 by default), past which it silently runs eager. Raised, and a hit raises instead (AcceleratedStep
# reports it, or under `auto` falls back to eager with a warning).
RECOMPILE_LIMIT = 64
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # modes that replay CUDA graphs from a shared pool


def allow_runners(limit: int = RECOMPILE_LIMIT) -> None:
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, limit)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * limit)
    dynamo.fail_on_recompile_limit_hit = True


def compiled(module: nn.Module, mode: str | None = None):
    """`module` compiled for fixed shapes; call it like the module (under torch.no_grad)."""
    from .onnx_export import plain_convs

    allow_runners()
    fn = torch.compile(module, dynamic=False, mode=mode)
    # a CUDA-graph mode returns tensors in the graph's pool that its next replay overwrites: the carried cache
    # and the decoder's tails must be copies
    own = mode in CUDAGRAPH_MODES

    def run(*inputs: torch.Tensor):
        # dynamo cannot trace bundled_vae.FastConv3d's direct oneDNN call; inductor picks its own conv kernels
        with torch.no_grad(), plain_convs(module):
            out = fn(*inputs)
        if own:
            out = tuple(t.clone() for t in out) if isinstance(out, tuple | list) else out.clone()
        return out

    return run
