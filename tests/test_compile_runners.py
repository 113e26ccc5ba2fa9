"""torch.compile runners (runtime/accel/compile_backend.py): many runners on one code object stay compiled (the
recompile limit is raised and a hit raises, never a silent fall back to eager), and a CUDA-graph mode's outputs
are copies (its pool is overwritten by the next replay)."""

from __future__ import annotations

import torch
import torch._dynamo.config as dynamo

from worldwalk.runtime.accel import compile_backend


def test_the_recompile_limit_fits_every_runner_and_a_hit_raises(monkeypatch):
    for name in ("recompile_limit", "accumulated_recompile_limit", "fail_on_recompile_limit_hit"):
        monkeypatch.setattr(dynamo, name, getattr(dynamo, name))
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    compile_backend.compiled(torch.nn.Identity())
    assert dynamo.recompile_limit >= compile_backend.RECOMPILE_LIMIT > 8
    assert dynamo.fail_on_recompile_limit_hit


def test_a_cudagraph_mode_returns_copies(monkeypatch):
    pool = torch.zeros(3)

    def replay(*inputs):  # a CUDA-graph replay: its outputs live in one buffer, rewritten by every call
        pool.copy_(inputs[0])
        return pool, pool[:2]

    monkeypatch.setattr(torch, "compile", lambda module, **kw: replay)
    run = compile_backend.compiled(torch.nn.Identity(), mode="reduce-overhead")
    first = run(torch.ones(3))
    run(torch.full((3,), 7.0))
    assert torch.equal(first[0], torch.ones(3)) and torch.equal(first[1], torch.ones(2))  # not overwritten
    plain = compile_backend.compiled(torch.nn.Identity())  # default mode: no graphs, no copies
    assert plain(torch.ones(3))[0] is pool
