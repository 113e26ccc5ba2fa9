"""The tiny random Matrix-Game world steered through a real Session: keys and mouse recorded by the
input box (on an injected clock) reach the model as upstream's per-frame actions, in the frames
they happened in."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from worldwalk.controls import InputBox
from worldwalk.runtime.matrix_game.steering import MOUSE_UNITS_PER_PX
from worldwalk.runtime.matrix_game.world import random_world
from worldwalk.runtime.session import Session, SessionConfig

from .builders import ManualClock, matrix_game_config, poll_until, reference_config


@pytest.fixture
def walk():
    world = random_world("tiny")
    assert world.spec.steering == "actions"
    gate, asked = threading.Semaphore(0), threading.Semaphore(0)
    paths: list = []
    sent: list[tuple[np.ndarray, np.ndarray]] = []  # what the rollout was given, per chunk
    use_input, generate, step = world.use_input, world.generate_chunk, world.rollout.step

    def spy_input(path):
        paths.append(path)
        use_input(path)

    def gated(poses, intrinsics):
        asked.release()
        assert gate.acquire(timeout=30), "the test never let the chunk through"
        return generate(poses, intrinsics)

    def spy_step(keyboard, mouse=None):
        sent.append((keyboard[0].numpy().copy(), mouse[0].numpy().copy()))
        return step(keyboard, mouse)

    world.use_input, world.generate_chunk, world.rollout.step = spy_input, gated, spy_step
    clock = ManualClock()
    box = InputBox(clock=clock)
    session = Session(world, SessionConfig(just_in_time=False, queue_capacity=4096), inputs=box).start()
    assert asked.acquire(timeout=30)  # chunk 0 planned at t = 0

    def plan_at(t: float) -> None:
        clock.t = t
        gate.release()
        assert asked.acquire(timeout=60), session.error

    yield box, plan_at, paths, sent
    gate.release(100)
    session.close()


def test_a_w_tap_reaches_the_model_in_the_frames_it_was_held(walk):
    box, plan_at, paths, sent = walk
    # chunk 0 (planned at 0) depicts (0, 0.32]; chunk 1, planned at 0.80, the 0.48 s before that
    t_down = 0.45  # a 0.05 s tap, with a mouse motion at the same moment
    box.press("w", now=t_down)
    box.release("w", now=t_down + 0.05)
    box.add_mouse(30.0, -10.0, now=t_down)
    plan_at(0.80)
    plan_at(1.28)  # chunk 1's block has run once chunk 2 is asked for
    assert len(sent) == 2 and len(paths) == 3
    # chunk 0: the first image and 8 frames, nothing pressed
    assert sent[0][0].shape == (9, 4) and not sent[0][0].any() and not sent[0][1].any()
    edges = paths[1].edges
    assert edges[0] < t_down and edges[-1] > t_down + 0.05
    touched = [i for i in range(len(edges) - 1) if edges[i] < t_down + 0.05 and edges[i + 1] >= t_down]
    keyboard, mouse = sent[1]
    assert keyboard.shape == (12, 4) and len(touched) in (2, 3)
    assert np.flatnonzero(keyboard[:, 0]).tolist() == touched  # W, in exactly the frames the tap touched
    assert not keyboard[:, 1:].any()
    # [pitch, yaw]: 10 px up and 30 px right, all of it, in the frame it happened in
    np.testing.assert_allclose(mouse.sum(axis=0), [10 * MOUSE_UNITS_PER_PX, 30 * MOUSE_UNITS_PER_PX], atol=1e-6)
    i = int(np.searchsorted(edges, t_down) - 1)
    assert np.flatnonzero(mouse[:, 1]).tolist() == [i]


@pytest.mark.slow
def test_the_latency_bench_splits_matrix_games_key_to_presented_time():
    from worldwalk.runtime.bench import engine_suite
    from worldwalk.runtime.bench.context import BenchConfig, BenchContext

    ctx = BenchContext(BenchConfig(quick=True, worlds=["matrix-game-small"], accel="none"))
    ctx.suite = "latency"
    engine_suite.latency(ctx)
    figures = {f.name.strip(): f.value for f in ctx.figures}
    assert not ctx.skipped, ctx.skipped
    for step, _ in engine_suite.STEPS:
        assert f"matrix-game-small key -> presented: {step} p50" in figures, figures
    assert figures["matrix-game-small key -> presented: decode p50"] > 0  # the world reports its decode


def test_the_page_is_told_not_to_turn_an_action_worlds_frames():
    """The page's timewarp turns frames by the camera the player holds; an action world has none, so its
    pose messages say `warp: false` (a camera world's do not)."""
    from types import SimpleNamespace

    from worldwalk.runtime.worlds import create_world
    from worldwalk.stream.webrtc.pose_channel import pose_message

    for world, warp in ((random_world("tiny"), False), (create_world(reference_config(width=64,
                                                                                 height=32)), None)):
        session = Session(world, SessionConfig())
        try:
            frame = SimpleNamespace(pose=np.eye(4), index=0, image=np.zeros((32, 64, 3), np.uint8),
                                    intrinsics=session.intrinsics)
            assert pose_message(frame, session, 0).get("warp") is warp
        finally:
            session.close()
            world.close()


def test_a_recorded_walk_replays_bit_identically_with_its_actions(tmp_path):
    """The log keeps the actions each chunk was steered by (keys, mouse, a rewind between them); a render
    of the log gives the raw frames the live session made, bit for bit."""
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.stream.record.recorder import attach_recorder
    from worldwalk.stream.record.replay import plan_from_log, render_frames
    from worldwalk.stream.record.session_log import read_log

    world = random_world("tiny")
    session = Session(world, SessionConfig(seed=3))
    wc = WorldConfig(name="matrix-game", width=world.spec.width, height=world.spec.height, seed=3)
    rec = attach_recorder(session, tmp_path / "walk.mp4", world_cfg=wc, consume=True)
    live: list[np.ndarray] = []
    take = rec.write
    rec.write = lambda frame: (live.append(frame.image.copy()), take(frame))[1]

    def chunks(k: int) -> None:
        target = session.stats()["chunks"] + k
        poll_until(lambda: session.stats()["chunks"] >= target or session.error, 120, f"{k} more chunks")
        assert session.error is None, session.error

    try:
        session.start()
        session.inputs.press("w")
        chunks(2)
        session.inputs.add_mouse(40.0, -10.0)
        chunks(2)
        assert session.rewind() is not None
        session.inputs.release("w")
        chunks(2)
    finally:
        session.close()
        rec.close()
    log = read_log(tmp_path / "walk.jsonl")
    steered = [c for c in log.chunks if np.asarray(c["actions"]["keyboard"]).any()]
    assert steered and all("mouse" in c["actions"] for c in log.chunks)
    replay = render_frames(plan_from_log(tmp_path / "walk.jsonl"), world=random_world("tiny"))
    assert np.array_equal(np.stack(live), replay)


def test_bad_actions_in_a_log_are_named():
    from worldwalk.stream.record.log_schema import SchemaError, check_line

    line = {"type": "chunk", "index": 0, "poses": [np.eye(4).tolist()] * 2}
    assert check_line({**line, "actions": {"keyboard": [[1, 0], [0, 0]], "mouse": [[0.1, 0], [0, 0]]}}, False)
    for actions, field in (({"keyboard": [[1, 0]]}, "actions.keyboard"),  # one row for two frames
                           ({"mouse": [[0, 0], [0, 0]]}, "actions.keyboard"),  # no keyboard
                           ({"keyboard": [[1, 0], [0, float("nan")]]}, "actions.keyboard"),
                           ({"keyboard": [[0] * 2] * 2, "joystick": [[0], [0]]}, "actions.joystick")):
        with pytest.raises(SchemaError) as e:
            check_line({**line, "actions": actions}, False)
        assert e.value.field == field, (actions, str(e.value))


def test_sessions_share_one_matrix_game_model_and_make_their_own_frames():
    """serve's pool (runtime/worlds/world_pool.py) builds Matrix-Game once: forks share the DiT, VAE and CLIP
    weights (one copy) and each makes exactly the frames a world of its own makes."""
    from worldwalk.runtime.worlds.world_pool import WorldPool

    def play(world, keys: list[int]) -> np.ndarray:
        world.reset(None, None, 7)
        out = []
        for k in range(2):
            n = world.spec.chunk_frames(k)
            kb = np.zeros((n, world.cfg.keyboard_dim), np.float32)
            kb[:, keys] = 1.0
            world.set_actions(kb, np.full((n, 2), 0.05, np.float32))
            out.append(world.generate_chunk(np.repeat(np.eye(4)[None], n, 0), np.repeat(np.eye(3)[None], n, 0)).frames)
        return np.concatenate(out)

    pool = WorldPool(matrix_game_config(seed=7))
    a, b = pool.session_world(), pool.session_world()
    assert pool.builds == 1 and pool.forks == 2
    assert a.rollout.dit is b.rollout.dit and a.clip is b.clip and a.rollout.vae is b.rollout.vae
    alone = random_world("tiny")  # random_init's weights are seeded 0, whatever the session's seed
    assert np.array_equal(play(a, [0]), play(alone, [0]))
    assert np.array_equal(play(b, [1, 2]), play(alone, [1, 2]))


def test_a_snapshot_pickles_and_goes_on_in_another_world():
    """What the cluster sends to its store at a chunk boundary: pickled, restored into another process's
    world (here: another world object), the walk goes on with the same frames. The restored world takes
    the snapshot's image condition: its reset before the restore never runs the VAE encoder (a failover's
    first frame would otherwise wait for it)."""
    import pickle

    def chunk(world, k: int) -> np.ndarray:
        n = world.spec.chunk_frames(k)
        kb = np.zeros((n, world.cfg.keyboard_dim), np.float32)
        kb[:, 0] = 1.0
        world.set_actions(kb, np.full((n, 2), 0.1, np.float32))
        return world.generate_chunk(np.repeat(np.eye(4)[None], n, 0), np.repeat(np.eye(3)[None], n, 0)).frames

    a = random_world("tiny")
    a.reset(None, None, 5)
    chunk(a, 0)
    blob = pickle.dumps(a.snapshot())
    expected = chunk(a, 1)
    b = random_world("tiny")
    encodes = []
    encode_chunk = b.rollout.vae.encode_chunk
    b.rollout.vae.encode_chunk = lambda *args, **kw: encodes.append(1) or encode_chunk(*args, **kw)
    b.reset(None, None, 9)  # another walk's state, replaced by the restore
    b.restore(pickle.loads(blob))
    assert np.array_equal(chunk(b, 1), expected)
    assert encodes == [], f"the restored world ran the encoder {len(encodes)} times"
    b.reset(None, None, 9)  # a walk of its own encodes its first image (at its first block or snapshot)
    chunk(b, 0)
    assert len(encodes) > 1


def _steered_chunk(world, k: int, key: int) -> np.ndarray:
    n = world.spec.chunk_frames(k)
    kb = np.zeros((n, world.cfg.keyboard_dim), np.float32)
    kb[:, key] = 1.0
    world.set_actions(kb, np.full((n, 2), 0.05 * (key + 1), np.float32))
    return world.generate_chunk(np.repeat(np.eye(4)[None], n, 0), np.repeat(np.eye(3)[None], n, 0)).frames


def test_a_snapshot_lives_in_host_memory_and_restores_the_uninterrupted_walk():
    """A boundary kept mid-session is a copy in host memory, carved from one arena of the pool (pinned on
    CUDA; unpinned here, the same path), its bytes the plan's; the walk it was taken from goes on writing its
    caches in place, and restoring it (twice) gives exactly the frames of the walk never interrupted."""
    import torch

    from worldwalk.runtime.matrix_game.clip import ClipVisionConfig
    from worldwalk.runtime.matrix_game.memory import memory_plan
    from worldwalk.runtime.matrix_game.snapshots import owned_tensors
    from worldwalk.runtime.snapshot_memory import PinnedArenas

    straight = random_world("tiny")
    straight.reset(None, None, 4)
    expected = [_steered_chunk(straight, k, k % 4) for k in range(3)]
    at_boundary = [t.clone() for t in owned_tensors(straight.rollout.live_state())]
    expected += [_steered_chunk(straight, k, k % 4) for k in range(3, 5)]

    pool = PinnedArenas(budget=64 << 20, pin=False, spare=False)
    world = random_world("tiny")
    world.snapshot_arenas = pool
    world = world.fork()  # a session's world takes its store's arenas from the model's world
    world.reset(None, None, 4)
    for k in range(3):
        _steered_chunk(world, k, k % 4)
    snap = world.snapshot()
    plan = memory_plan(world.cfg, torch.float32, torch.float32, clip_cfg=ClipVisionConfig.tiny())
    assert snap.nbytes() == plan["snapshot.pinned"] == pool.stats()["lent"]
    owned, live = owned_tensors(snap.state), owned_tensors(world.rollout.live_state())
    assert sum(t.numel() * t.element_size() for t in owned) == plan["snapshot"]
    arena = snap.leases[0].arena
    lo, hi = arena.data_ptr(), arena.data_ptr() + arena.numel()
    assert all(t.device.type == "cpu" and lo <= t.data_ptr() < hi for t in owned)  # carved from its arena
    assert not {t.untyped_storage().data_ptr() for t in owned} & {t.untyped_storage().data_ptr() for t in live}

    _steered_chunk(world, 3, 2)  # another walk from the boundary: the live caches are written in place
    for _ in range(2):
        world.restore(snap)
        now = owned_tensors(world.rollout.live_state())
        assert len(now) == len(at_boundary) and all(map(torch.equal, now, at_boundary))
        assert np.array_equal(_steered_chunk(world, 3, 3), expected[3])
        assert np.array_equal(_steered_chunk(world, 4, 0), expected[4])
    import pickle

    sent = pickle.loads(pickle.dumps(snap))  # the cluster's failover copy: its own compact tensors, no arena
    assert sent.leases == [] and all(t.untyped_storage().nbytes() == t.numel() * t.element_size()
                                     for t in owned_tensors(sent.state))
    del snap
    assert pool.stats()["lent"] == 0  # the arena went back to the pool


def test_the_world_pool_makes_the_snapshot_arenas_before_the_first_session(monkeypatch):
    """serve's pool builds Matrix-Game once and, on CUDA, pins the arenas its sessions' snapshots take then
    (`prepare_snapshots`): a session's boundaries reuse them and make none while its chunks run."""
    from worldwalk.runtime.snapshot_memory import PinnedArenas
    from worldwalk.runtime.worlds import world_pool

    pool = PinnedArenas(budget=64 << 20, pin=False, spare=False)  # unpinned here: the same path
    monkeypatch.setattr(world_pool, "create_world", lambda cfg: random_world("tiny", snapshot_arenas=pool))
    models = world_pool.WorldPool(matrix_game_config())
    world = models.session_world()
    made = pool.allocations
    assert made > 0 and pool.stats()["lent"] == 0  # made while building, all back in the pool
    assert not hasattr(models._model.rollout, "cache")  # the warm-up walk's caches went with it
    world.reset(None, None, 3)
    kept = None
    for k in range(6):
        kept = world.snapshot()
        assert kept.leases  # carved from the pool's arenas
        _steered_chunk(world, k, k % 4)
    assert pool.allocations == made
    del kept
    models.close()
