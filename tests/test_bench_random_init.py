"""`worldwalk bench --world sana-wm --random-init`: the CPU path (small) end to end, quick. That `full`
refuses here is tested in test_memory_plan.py, beside the full-size plan it reads (planned once per process)."""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.bench.bench_command import BenchConfig, BenchContext
from worldwalk.runtime.bench.full_size import (
    PassTimer,
    RandomInitBench,
    measure,
    random_init_figures,
    random_world,
)
from worldwalk.runtime.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (64, 48)  # 4x3 tokens a latent frame: the CPU check is about the path, not the speed


def test_small_random_init_reports_every_pass():
    ctx = BenchContext(BenchConfig(quick=True))
    random_init_figures(ctx, RandomInitBench(kind="small", chunks=2, accel="none", size=SIZE))
    names = {f.name: f for f in ctx.figures}
    assert not ctx.skipped and not ctx.failed
    for part in ("chunk time", "  denoise_1", "  denoise_2", "  denoise_3", "  denoise_4", "  cache_write",
                 "  vae_decode"):
        assert names[f"[none] {part} p50"].value > 0
    assert names["[none] real-time factor, one chunk at a time"].value > 0
    assert names["[none] real-time factor, pipelined"].value > 0
    assert names["[none] time to first frame"].value > 0
    assert "[none] peak GPU memory" not in names  # no GPU here


def test_pass_timer_splits_the_chunk_and_comes_off():
    world = random_world("small", torch.device("cpu"), torch.float32, size=SIZE)
    r = measure(world, 2)
    for total, passes in zip(r["chunk"], r["passes"], strict=True):
        assert sorted(passes) == ["cache_write", "denoise_1", "denoise_2", "denoise_3", "denoise_4", "vae_decode"]
        model = sum(v for k, v in passes.items() if k != "vae_decode")
        assert 0 < model <= total  # the model thread's passes run one after another inside the chunk
    assert world.rollout.backend is None and "decode_chunk" not in world.vae.__dict__
    timer = PassTimer(world)
    timer.remove()
    assert world.rollout.backend is None
    world.close()


def test_bad_random_init_requests_are_named(capsys):
    assert main(["bench", "--world", "bundled", "--random-init", "small"]) == 2
    assert "--random-init builds SANA-WM" in capsys.readouterr().err
