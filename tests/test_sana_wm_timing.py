"""Chunk stage timings: host clocks on the CPU, CUDA events (no synchronisation until read) on a GPU."""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.sana_wm.timing import Clock, resolve


def test_cpu_stages_are_host_seconds():
    clock = Clock(torch.device("cpu"))
    a = clock.now()
    torch.ones(256, 256) @ torch.ones(256, 256)
    span = clock.between(a, clock.now())
    assert isinstance(span, float) and span >= 0
    assert resolve({"denoise": span, "total": 1.5}) == {"denoise": span, "total": 1.5}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_cuda_stages_are_event_pairs_resolved_later():
    clock = Clock(torch.device("cuda"))
    a = clock.now()
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(10):
        x = x @ x.T / 2048
    timings = {"denoise": clock.between(a, clock.now())}
    assert isinstance(timings["denoise"], tuple)  # nothing synchronised yet
    resolve(timings)
    assert isinstance(timings["denoise"], float) and timings["denoise"] > 0
