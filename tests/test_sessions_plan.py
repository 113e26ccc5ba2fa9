"""How many sessions a GPU takes (runtime/bench/memory_plan.py): one shared model against a world each,
graphs and engines counted, pinned snapshot memory bounded; `serve --max-sessions` defaults to it."""

from __future__ import annotations

from worldwalk.runtime.bench import memory_plan
from worldwalk.runtime.bench.memory_plan import GiB, MemoryPlan, planned_sessions
from worldwalk.runtime.snapshot_memory import ARENA_GRANULE
from worldwalk.runtime.world import WorldConfig


def _plan() -> MemoryPlan:
    return MemoryPlan(1280, 704, "bfloat16", 1, 1, {"transformer": 5 * GiB, "vae": 2 * GiB},
                      {"gdn_state": GiB // 2, "vae_decode_state": GiB // 2}, GiB,
                      {"denoise_first_chunk": GiB, "denoise_steady": GiB, "cache_write": 2 * GiB,
                       "vae_encode_first_image": 0, "vae_decode": 3 * GiB})


def test_sharing_the_model_fits_many_more_sessions_and_graphs_are_counted():
    plan, gpu = _plan(), 80 * GiB
    free = gpu - plan.reserve(gpu)
    # a world each: weights + peak + state per session
    assert plan.sessions_fit(gpu, 0, "none", shared=False) == free // (7 * GiB + 5 * GiB + GiB)
    assert plan.sessions_fit(gpu, 0, "none") == (free - 12 * GiB) // GiB
    # CUDA graphs: read (cache + a pass), write (cache in and out + the write pass), decoder (tails in, out + decode)
    graphs = (GiB // 2 + GiB) + (GiB + 2 * GiB) + (GiB + 3 * GiB)
    assert plan.graph_bytes("cudagraph") == graphs
    assert plan.sessions_fit(gpu, 0, "cudagraph") == (free - 12 * GiB - graphs) // GiB
    # the TensorRT chunk-step engine holds its own transformer weights; the decoder is a CUDA graph
    assert plan.graph_bytes("tensorrt") == 5 * GiB + 2 * GiB + (GiB + 3 * GiB)
    for backend in ("none", "cudagraph", "tensorrt"):
        assert plan.sessions_fit(gpu, 0, backend) > 3 * plan.sessions_fit(gpu, 0, backend, shared=False)
    # pinned host memory: 2 snapshots a session, each an arena of its bytes rounded to 2 MiB
    assert plan.pinned_snapshot_bytes() == GiB
    assert plan.sessions_fit_host(10 * GiB) == 5


def test_graphs_count_the_chunk_inputs_as_inputs_not_as_held_activations():
    """The eager peaks hold a chunk's Plücker projections and softmax contexts (made once for its passes); a
    graph takes the projections as static inputs and joins the contexts inside, so its pool is the peak less
    both, and its inputs hold the projections once for the read graph and once for the write graph."""
    plan = _plan()
    plan.peak_bytes.update(held_plucker_projections=GiB // 4, held_softmax_contexts=GiB // 2)
    held = GiB // 4 + GiB // 2
    read = GiB // 2 + GiB // 4 + (GiB - held)
    write = GiB + GiB // 4 + (2 * GiB - held)
    assert plan.graph_bytes("cudagraph") == read + write + (GiB + 3 * GiB)
    assert plan.graph_bytes("tensorrt") == 5 * GiB + (2 * GiB - held) + (GiB + 3 * GiB)


def test_max_sessions_default_is_the_plan(monkeypatch):
    monkeypatch.setattr(memory_plan, "checkpoint_configs", lambda path: memory_plan.full_size_configs())
    monkeypatch.setattr(memory_plan, "plan_memory", lambda *a, **k: _plan())
    world = WorldConfig(name="sana-wm", checkpoint="/nowhere", device="cuda", accel="cudagraph")
    n, why = planned_sessions(world, gpu_bytes=80 * GiB, pinned=1000 * GiB)
    assert n == _plan().sessions_fit(80 * GiB, 0, "cudagraph") and "cudagraph" in why
    n, why = planned_sessions(world, gpu_bytes=80 * GiB, pinned=6 * GiB + ARENA_GRANULE)
    assert n == 3 and "pinned" in why  # the host's pinned budget binds first
    assert planned_sessions(world, gpu_bytes=8 * GiB, pinned=1000 * GiB)[0] == 1  # at least one


def test_serve_defaults_to_four_sessions_on_the_cpu():
    from worldwalk.stream.webrtc.server import ServeConfig

    assert ServeConfig().max_sessions == 4
    assert ServeConfig(max_sessions=2).max_sessions == 2


def test_serve_batch_sessions_flag():
    import argparse

    from worldwalk.stream.serve_command import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert build_config(parser.parse_args(["serve", "--batch-sessions"])).batch_sessions is True
    assert build_config(parser.parse_args(["serve"])).batch_sessions is False


def test_max_sessions_default_on_a_gpu_is_the_matrix_game_plan_when_serving_matrix_game(monkeypatch):
    """`serve --world matrix-game` on a GPU: the default is what Matrix-Game's own plan (meta device, full
    size) fits on the device, bounded by the pinned budget its snapshots take, not SANA-WM's plan."""
    import torch

    from worldwalk.runtime.matrix_game.config import MatrixGameConfig
    from worldwalk.runtime.matrix_game.memory import memory_plan as matrix_game_plan
    from worldwalk.runtime.matrix_game.memory import sessions_fit
    from worldwalk.stream.webrtc.admission import default_max_sessions

    gpu = {"cuda": 24 * 10**9}
    monkeypatch.setattr(memory_plan, "gpu_total_memory", lambda device: gpu[torch.device(device).type])
    monkeypatch.setenv("WORLDWALK_PINNED_BUDGET", "1000GiB")
    world = WorldConfig(name="matrix-game", device="cuda", options={"random_init": "full"})
    plan = matrix_game_plan(MatrixGameConfig.for_mode("universal"))
    assert default_max_sessions(world) == sessions_fit(plan, 24 * 10**9) == 5
    gpu["cuda"] = 80 * 10**9
    assert default_max_sessions(world) == sessions_fit(plan, 80 * 10**9) == 27
    # the pinned budget binds first: 3 sessions' 2 snapshots each
    monkeypatch.setenv("WORLDWALK_PINNED_BUDGET", str(6 * plan["snapshot.pinned"] + ARENA_GRANULE))
    n, why = planned_sessions(world)
    assert n == 3 and "Matrix-Game" in why and "pinned" in why
    assert default_max_sessions(WorldConfig(name="matrix-game", device="cpu")) == 4  # the CPU: no plan
