"""The SANA-WM memory plan (runtime/bench/memory_plan.py), planned on `meta`, against a small model run for real.

Tolerances: weights and the per-session state (cache + VAE decode state) and a rewind snapshot's bytes
must equal the planned bytes exactly (both are shapes x dtype of the same code's tensors); the activation
peaks tracked on real CPU tensors must be within 5% of the meta plan's.
"""

from __future__ import annotations

import json
from concurrent.futures import Future

import numpy as np
import pytest
import torch

from worldwalk.runtime.bench.memory_plan import (
    MemoryPlan,
    _storages,
    parse_bytes,
    plan_memory,
    run_plan,
)
from worldwalk.runtime.device_memory import GiB, LiveBytes

from .builders import WORLD_H as H
from .builders import WORLD_W as W
from .builders import tiny_sana_wm_configs, tiny_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _configs():
    return tiny_sana_wm_configs(softmax_bf16=True, vae_width=16)


def test_live_bytes_counts_new_storages_until_freed():
    x0 = torch.ones(1000)  # made before: not counted
    with LiveBytes() as live:
        a = x0 * 2  # 4000
        b = a + 1  # 8000
        v = b.view(10, 100).t()  # a view: no new bytes
        del a  # 4000
        c = v.sum(1)  # 400 more: 4400
        d = torch.empty(3000)  # 12000 more: 16400, the peak
        del d
        e = b * c.repeat(10)  # 4000 (repeat) + 4000: 12400; the repeat is freed after
    assert live.peak == 4000 + 400 + 12000
    assert live.current() == 4000 + 400 + 4000  # b, c, e
    assert e.shape == (1000,)


def test_parse_sizes():
    assert parse_bytes("80GB") == 80 * 10**9
    assert parse_bytes("80GiB") == 80 * GiB
    assert parse_bytes("24000MiB") == 24000 * 2**20
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")


def test_info_size_is_width_by_height_as_everywhere(capsys):
    """`info --size` reads WIDTHxHEIGHT as play, serve and render do (it read HEIGHTxWIDTH)."""
    from worldwalk.runtime.cli.main import main

    assert main(["info", "--world", "sana-wm", "--random-init", "small", "--size", "256x144", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["width"], d["height"]) == (256, 144)


def _held(obj) -> int:
    return sum(_storages(obj).values())


def test_plan_equals_a_small_world_run_for_real():
    model_cfg, vae_cfg = _configs()
    plan = plan_memory(model_cfg, vae_cfg, W, H, torch.float32, device="meta")
    world = tiny_world(softmax_bf16=True, vae_width=16)
    modules = (world.transformer, world.vae.vae)
    weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
    assert plan.weights == weights

    f = (W / 2) / np.tan(np.radians(35.0))
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    world.reset(None, None, seed=1)
    snaps = []
    for k in range(model_cfg.kv_window + 2):
        n = world.spec.chunk_frames(k)
        poses = np.tile(np.eye(4), (n, 1, 1))
        poses[:, 2, 3] = 0.05 * np.arange(n)
        world.generate_chunk(poses, np.tile(K, (n, 1, 1)))
        s = world.snapshot()
        snaps.append((s.rollout.cache, s.decode.result()[1] if isinstance(s.decode, Future) else s.decode))
    cache, decode = snaps[-1]
    p = plan.session_bytes
    planned_cache = sum(v for k, v in p.items() if k.startswith(("gdn_", "ffn_", "softmax_")))
    assert _held(cache) == planned_cache
    assert _held(decode) == p["vae_decode_state"]
    # what a kept chunk boundary adds: storages of the older state that the newer one does not share
    both = {**_storages(snaps[-2][0]), **_storages(snaps[-2][1]), **_storages(cache), **_storages(decode)}
    assert sum(both.values()) - _held(cache) - _held(decode) == plan.snapshot_bytes
    world.close()

    real = plan_memory(model_cfg, vae_cfg, W, H, torch.float32, device="cpu")  # the same code on real tensors
    for name, planned in plan.peak_bytes.items():
        assert real.peak_bytes[name] == pytest.approx(planned, rel=0.05), name
    assert real.session_bytes == plan.session_bytes


def test_sessions_fit_arithmetic():
    plan = MemoryPlan(1280, 704, "bfloat16", 1, 1, {"transformer": 5 * GiB, "vae": 2 * GiB},
                      {"cache": GiB}, GiB // 2, {"denoise_first_chunk": GiB, "denoise_steady": GiB,
                                                "cache_write": 2 * GiB, "vae_encode_first_image": 0,
                                                "vae_decode": 3 * GiB})
    gpu = 80 * GiB
    free = gpu - plan.reserve(gpu) - 7 * GiB - 5 * GiB
    assert plan.sessions_fit(gpu, 0) == free // GiB
    assert plan.sessions_fit(gpu, 2) == free // (2 * GiB)
    assert plan.sessions_fit(10 * GiB, 0) == 0


def test_info_command_prints_a_plan(capsys):
    from worldwalk.runtime.cli.main import main

    assert main(["info", "--world", "sana-wm", "--random-init", "small", "--size", "256x144", "--gpu-memory",
                 "24GB", "--snapshots", "2"]) == 0
    out = capsys.readouterr().out
    for part in ("weights", "gdn_state", "softmax_sink_kv", "softmax_window_camera_kv", "vae_decode_state",
                 "activation peak of one chunk", "sessions that fit"):
        assert part in out
    assert main(["info", "--world", "sana-wm", "--size", "256x144"]) == 2  # neither --checkpoint nor --random-init
    assert "exactly one of" in capsys.readouterr().err
    assert main(["info", "--world", "sana-wm", "--random-init", "small", "--size", "250x144"]) == 2
    assert "multiple of" in capsys.readouterr().err


@pytest.mark.slow
def test_info_plans_the_full_size_model(capsys):
    class Args:
        world, checkpoint, random_init, size, gpu_memory, dtype, snapshots, json = (
            "sana-wm", None, "full", (1280, 704), "80GB", "bfloat16", 0, True)

    assert run_plan(Args()) == 0
    d = json.loads(capsys.readouterr().out)
    assert 2.5e9 < d["transformer_params"] < 2.8e9  # the released stage-1 with its camera branch
    assert d["weight_bytes"]["transformer"] == pytest.approx(2 * d["transformer_params"], abs=1024)  # bf16
    assert 1.0e9 < d["vae_params"] < 1.5e9  # LTX-2's video VAE
    assert d["sessions_fit"] >= 1


@pytest.mark.slow
def test_bench_full_refuses_on_a_cpu_with_the_memory_it_needs(capsys):
    """`bench --random-init full` names the memory it needs from the plan above (`full_size_plan`, planned
    once per process: this test sits in this file so that it runs on the worker that planned it)."""
    from worldwalk.runtime.cli.main import main

    assert main(["bench", "--world", "sana-wm", "--random-init", "full"]) == 2
    err = capsys.readouterr().err
    assert "GiB of GPU memory" in err and "weights" in err and "no CUDA device" in err and "small" in err
