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


def compiled(module: nn.Module, mode: str | None = None):
    """`module` compiled for fixed shapes; call it like the module (under torch.no_grad)."""
    from .onnx_export import plain_convs

    fn = torch.compile(module, dynamic=False, mode=mode)

    def run(*inputs: torch.Tensor):
        # dynamo cannot trace bundled_vae.FastConv3d's direct oneDNN call; inductor picks its own conv kernels
        with torch.no_grad(), plain_convs(module):
            return fn(*inputs)

    return run
