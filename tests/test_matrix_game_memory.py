"""The Matrix-Game memory plan's activations (runtime/matrix_game/memory.py), planned on `meta`, against
what CPU's own allocator reports for the tiny model run for real.

The measurement is torch's profiler with `profile_memory=True`: every allocation and free the CPU
allocator makes, in order. Within one top-level op, what the op allocates and frees again before it
returns is the kernel's workspace (on the CPU, the column buffers of the convolutions; a GPU kernel's
differ), reported but not compared; the rest is the tensors the code holds, whose high-water mark the
plan predicts. Bound: 2% (a step adds its few latent-sized tensors; the image condition keeps one small
latent per encoder round, and the plan counts two rounds).
"""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.matrix_game.clip import ClipVisionConfig
from worldwalk.runtime.matrix_game.memory import memory_plan, sessions_fit, sessions_fit_host
from worldwalk.runtime.matrix_game.rollout import ImageCondition
from worldwalk.runtime.matrix_game.world import random_world

from .builders import kept_within_budget

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BOUND = 0.02


def allocator_peak(fn) -> tuple[int, int]:
    """(peak bytes of the tensors allocated while `fn()` runs, largest kernel workspace), from the CPU
    allocator's own events (children in time order within each top-level op)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()

    made: set[int] = set()  # blocks allocated inside; the free of one made before (a cache slot replaced) is not

    def sizes(node) -> list[int]:
        f = node.extra_fields
        own = []
        if getattr(f, "alloc_size", None) is not None:
            if f.alloc_size > 0:
                made.add(f.ptr)
                own = [f.alloc_size]
            elif f.ptr in made:
                made.discard(f.ptr)
                own = [f.alloc_size]
        return own + [s for child in node.children for s in sizes(child)]

    now = peak = workspace = 0
    for op in sorted(prof.profiler.kineto_results.experimental_event_tree(), key=lambda n: n.start_time_ns):
        inside = sizes(op)
        running = high = 0
        for s in inside:
            running += s
            high = max(high, running)
        workspace = max(workspace, high - max(running, 0))
        now += sum(inside)
        peak = max(peak, now)
    return peak, workspace


def test_the_allocator_measure_sees_a_peak() -> None:
    x = torch.ones(1000)

    def run():
        a = x * 2  # 4000
        b = a + 1  # 8000
        del a
        d = torch.empty(3000)  # 4000 + 12000: the peak
        del d, b

    assert allocator_peak(run)[0] == 16000


@torch.no_grad()
def test_planned_activations_match_the_allocator_on_the_tiny_model() -> None:
    world = random_world("tiny")
    cfg, roll = world.cfg, world.rollout
    plan = memory_plan(cfg, torch.float32, torch.float32, clip_cfg=ClipVisionConfig.tiny())
    # a session's start: the image condition (the encoder until it settles) and the CLIP tower
    image = torch.rand(1, 3, cfg.height, cfg.width) * 2 - 1
    start = max(allocator_peak(lambda: ImageCondition(roll.vae, image).encode())[0],
                allocator_peak(lambda: world.clip(image))[0])
    assert start == pytest.approx(plan["activation.reset"], rel=BOUND), (start, plan)
    world.reset(None, None, 0)
    dit, calls = roll.dit, []

    def measured_call(*args, **kwargs):
        out: list = []
        calls.append(allocator_peak(lambda: out.append(dit(*args, **kwargs)))[0])
        return out[0]

    decode_block = roll.vae.decode_block
    decodes: list[int] = []

    def measured_decode(z, cache):
        out: list = []
        decodes.append(allocator_peak(lambda: out.append(decode_block(z, cache)))[0])
        return out[0]

    steps = []
    for k in range(5):  # the window fills in 2 blocks; blocks 3 and 4 are steady (block 3 is measured whole)
        n = roll.raw_frames_needed()
        keyboard, mouse = torch.zeros(1, n, cfg.keyboard_dim), torch.zeros(1, n, cfg.mouse_dim)
        if k == 3:
            steps.append(allocator_peak(lambda kb=keyboard, ms=mouse: roll.step(kb, ms)))
        elif k == 4:
            roll.dit, roll.vae.decode_block = measured_call, measured_decode
            roll.step(keyboard, mouse)
        else:
            roll.step(keyboard, mouse)
    roll.dit = dit
    del roll.vae.decode_block
    step_peak, workspace = steps[0]
    assert len(calls) == len(cfg.denoising_steps) + 1 and len(decodes) == 1
    assert max(calls) == pytest.approx(plan["activation.dit_call"], rel=BOUND), (calls, plan)
    assert decodes[0] == pytest.approx(plan["activation.vae_decode"], rel=BOUND), (decodes, plan)
    # a whole block (its DiT calls, then its decode), and a session's start: its activation peak
    assert max(step_peak, start) == pytest.approx(plan["activation.session"], rel=BOUND), (step_peak, start, plan)
    # and so the session's figure: what it holds (its caches, measured) and that peak
    held = roll.cache.nbytes() + roll.vae_cache.nbytes()
    assert held + max(step_peak, start) == pytest.approx(plan["per_session_with_activations"], rel=BOUND), \
        (held, step_peak, start, plan)
    print(f"tiny: DiT call {max(calls)} B, decode {decodes[0]} B, block {step_peak} B, start {start} B (planned "
          f"{plan['activation.dit_call']}, {plan['activation.vae_decode']}, {plan['activation.reset']}); "
          f"CPU kernel workspace up to {workspace} B")


def test_a_session_keeps_as_many_snapshots_as_its_memory_budget_holds() -> None:
    """A boundary holds copies of the caches (2.2 GiB at full size in bf16, in host memory): its size is
    told, so the session's budget bounds how many it keeps, instead of one per chunk."""


    world = random_world("tiny")
    world.reset(None, None, 0)
    for _ in range(3):
        n = world.rollout.raw_frames_needed()
        world.generate_chunk(torch.eye(4).repeat(n, 1, 1).numpy(), torch.eye(3).repeat(n, 1, 1).numpy())
    per = world.snapshot().nbytes()
    roll = world.rollout
    held = roll.cache.nbytes() - roll.cache.cross.nbytes() + roll.vae_cache.nbytes()
    history = sum(t.numel() * t.element_size() for t in (roll.keyboard, roll.mouse))
    assert per == held + history  # the caches' copies and the action history, in pageable memory here
    plan = memory_plan(world.cfg, torch.float32, torch.float32, clip_cfg=ClipVisionConfig.tiny())
    assert plan["snapshot"] == per  # what the plan counts a kept boundary at
    gpu = 3 * 2**30 + 100 * plan["cache.per_session"]  # beyond the reserve (2 GiB + 5%)
    heavy = {**plan, "snapshot": 1000 * plan["snapshot"], "snapshot.pinned": 1000 * plan["snapshot.pinned"]}
    assert 90 < sessions_fit(heavy, gpu) == sessions_fit(plan, gpu)  # snapshots take no GPU memory
    assert sessions_fit_host(plan, 7 * plan["snapshot.pinned"]) == 3  # 2 each within the pinned budget
    assert sessions_fit_host(plan, 7 * plan["snapshot.pinned"], 3) == 2
    kept, budget = kept_within_budget(world, 2.5 * per)
    assert 2 <= len(kept) <= 3, len(kept)  # not one per chunk: the budget bounds them
    assert sum(b.world.nbytes() for b in kept) <= budget
