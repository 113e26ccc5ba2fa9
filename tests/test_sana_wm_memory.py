"""Streaming state holds no more memory than it reports: caches, decode states and rewind snapshots.

A cached slice that is a view keeps its whole activation alive (a 1-frame tail of a 4-frame tensor holds
all 4), so these tests count storages (`held_bytes`), not tensor sizes (`nbytes()`), on small configs
through the eager path, the accelerated (flat) path and the world's snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldwalk.runtime.accel import apply as accel
from worldwalk.runtime.sana_wm import SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.memory import held_bytes, measure_session_state, reported_bytes
from worldwalk.runtime.sana_wm.model import SanaWM
from worldwalk.runtime.sana_wm.vae import SanaWMVAE

from .builders import kept_within_budget, tiny_sana_wm_configs, tiny_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _walk(world: SanaWM, chunks: int, snaps: list) -> None:
    """Reset and generate `chunks` chunks walking forward, keeping a snapshot at every chunk boundary."""
    spec = world.spec
    f = (spec.width / 2) / np.tan(np.radians(35.0))
    K = np.array([[f, 0, spec.width / 2], [0, f, spec.height / 2], [0, 0, 1.0]])
    world.reset(None, None, seed=0)
    done = 0
    for k in range(chunks):
        n = spec.chunk_frames(k)
        poses = np.tile(np.eye(4), (n, 1, 1))
        poses[:, 2, 3] = 0.05 * (done + np.arange(n))
        done += n
        snaps.append(world.snapshot())
        world.generate_chunk(poses, np.tile(K, (n, 1, 1)))


def test_held_counts_the_storage_behind_a_view():
    x = torch.zeros(4, 100)
    assert reported_bytes(x[3:]) == 400 and held_bytes(x[3:]) == 1600
    assert held_bytes(x[3:].clone()) == 400
    assert held_bytes([x[:1], x[1:2]]) == 1600  # two views of one storage count it once


def test_eager_state_holds_what_it_reports():
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    cfg, vae_cfg = tiny_sana_wm_configs()
    tr = SanaWMStreamingTransformer(cfg)
    vae = SanaWMVAE(AutoencoderKLLTX2Video(**vae_cfg))
    st = measure_session_state(tr.eval(), vae, 48, 64, chunks=3)
    print(st)
    assert st.cache_reported > 0 and st.decode_reported > 0 and st.snapshot_reported > 0
    assert st.cache_held <= st.cache_reported, "the transformer cache keeps views of whole activations"
    assert st.decode_held <= st.decode_reported, "the VAE decode state keeps views of whole conv inputs"
    assert st.snapshot_held <= st.snapshot_reported, "a rewind snapshot keeps more than its tensors"


@pytest.mark.parametrize("choice", ["none", "flat"])
def test_world_state_and_snapshots_hold_what_they_report(choice):
    """Through the world: the pipelined decode (snapshots hold its future), and the flat fixed-shape
    step every accelerated backend runs (its cache comes back as one padded tensor per entry)."""
    world = tiny_world()
    accel.apply_accel(world, choice)
    snaps: list = []
    _walk(world, 4, snaps)
    world._settle()
    live = (world.rollout.cache, world._decode_start)
    assert held_bytes(world.rollout.cache) <= reported_bytes(world.rollout.cache)
    assert held_bytes(world._decode_start) <= reported_bytes(world._decode_start)
    for s in snaps:
        extra_held = held_bytes(s, live) - held_bytes(live)
        extra_reported = reported_bytes(s, live) - reported_bytes(live)
        assert extra_held <= extra_reported
    assert np.isfinite(world.cache_nbytes())


def test_session_keeps_as_many_snapshots_as_its_memory_budget_holds():


    world = tiny_world()
    snaps: list = []
    _walk(world, 3, snaps)
    per = snaps[-1].nbytes()  # a steady-state boundary: cache after chunk 1 + its decode state
    assert per > 0
    kept, budget = kept_within_budget(world, 2.5 * per)
    assert 2 <= len(kept) <= 3, len(kept)  # not one per chunk: the budget bounds them
    assert sum(b.world.nbytes() for b in kept) <= budget
