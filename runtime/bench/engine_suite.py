"""The runtime's benchmark suites: generation, latency and pipeline overhead (the SANA-WM cache
and overlap suites live in sana_wm/bench_model.py).

Each function takes a `BenchContext` and adds figures. Worlds are built through the registry,
so every figure for a world includes everything its `generate_chunk` does (for a model: all
sampler steps, the cache write and the VAE decode).
"""

from __future__ import annotations

import time

import numpy as np

from worldwalk.controls import PoseIntegrator, intrinsics_from_fov
from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.latency import LatencySplit
from worldwalk.runtime.pacer import FramePacer
from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.world import ModelSpec, WorldConfig, WorldModel, available_worlds
from worldwalk.runtime.worlds import create_world

from .bench_command import BenchContext

DEFAULT_WORLDS = ("reference", "bundled")


def _worlds(ctx: BenchContext) -> list[str]:
    names = ctx.cfg.worlds or [n for n in DEFAULT_WORLDS if n in available_worlds()]
    return names[:1] if ctx.quick and not ctx.cfg.worlds else names


def _build(ctx: BenchContext, name: str) -> WorldModel | None:
    try:
        if name == "sana-wm-small":  # SANA-WM's code with small random weights (no download)
            from .model_suite import small_world

            return small_world()
        if name == "matrix-game-small":  # Matrix-Game's code with the tiny random test model (32x48)
            from worldwalk.runtime.matrix_game.world import random_world

            return random_world("tiny")
        return create_world(WorldConfig(name=name, accel=ctx.cfg.accel))
    except Exception as e:
        ctx.skip(f"world {name}", f"{type(e).__name__}: {e}")
        return None


def _walk(spec: ModelSpec, chunks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Poses and intrinsics of `chunks` chunks walking forward while turning slowly."""
    from worldwalk.controls import InputState

    integrator = PoseIntegrator()
    state = InputState(keys=frozenset({"w", "e"}))
    K = intrinsics_from_fov(spec.width, spec.height)  # controls.DEFAULT_FOV_DEG
    out = []
    for k in range(chunks):
        n = spec.chunk_frames(k)
        poses = integrator.plan(state, n, 1.0 / spec.fps)
        out.append((poses, np.broadcast_to(K, (n, 3, 3)).copy()))
    return out


def generation(ctx: BenchContext) -> None:
    """Frames per second with everything a chunk costs, per-chunk time, time to the first frame."""
    for name in _worlds(ctx):
        world = _build(ctx, name)
        if world is None:
            continue
        try:
            spec = world.spec
            chunks = 4 if ctx.quick else 12
            t0 = time.perf_counter()
            world.reset(None, None, 0)
            walk = _walk(spec, chunks + 1)
            first = world.generate_chunk(*walk[0])
            ttff = time.perf_counter() - t0
            times, frames = [], 0
            for poses, K in walk[1:]:
                t = time.perf_counter()
                chunk = world.generate_chunk(poses, K)
                times.append(time.perf_counter() - t)
                frames += len(chunk)
            what = "all sampler steps, cache write, VAE decode" if spec.is_model else "GL render + readback"
            size = f"{spec.width}x{spec.height}"
            ctx.add(f"{name} generated fps ({size})", frames / sum(times), "frames/s", what)
            ctx.add(f"{name} content fps", spec.fps, "frames/s", "the rate a player needs for real time")
            ctx.add_timings(f"{name} chunk time ({spec.frames_per_chunk} frames)", times, what)
            ctx.add(f"{name} time to first frame", 1000 * ttff, "ms", f"reset + first chunk ({len(first)} frames)")
        finally:
            world.close()


def latency(ctx: BenchContext) -> None:
    """Input event -> first frame generated with it, and -> first frame presented, step by step.

    Presentation uses the content-rate pacer polled by a simulated 60 Hz display clock, as the
    window does, so the figure includes queueing and pacing but not the GL upload: "display" is
    the wait from the frame falling due to the display tick that shows it.
    """
    trials = 3 if ctx.quick else 8
    for name in _worlds(ctx):
        world = _build(ctx, name)
        if world is None:
            continue
        gen, shown, splits = _input_latency(world, trials)
        ctx.add(f"{name} key -> frame generated p50", 1000 * np.median(gen), "ms", f"{trials} presses, session thread")
        ctx.add(f"{name} key -> frame presented p50", 1000 * np.median(shown), "ms",
                "incl. queue + content-rate pacing, 60 Hz display clock")
        split = LatencySplit.median(splits)
        if split is not None:
            for step, what in STEPS:
                ctx.add(f"{name} key -> presented: {step} p50", 1000 * getattr(split, step), "ms", what)


STEPS = (
    ("wait", "until the next chunk is planned (its input read)"),
    ("plan", "planning to the model: snapshot, listeners, path"),
    ("generate", "the world makes the chunk, decode excluded"),
    ("decode", "the world's VAE decode (when it reports one)"),
    ("queue", "in the queue, until due at the content rate"),
    ("display", "due -> shown by the 60 Hz display clock"),
)


def _input_latency(world: WorldModel, trials: int) -> tuple[list[float], list[float], list[LatencySplit]]:
    display_dt = 1 / 60
    session = Session(world, SessionConfig()).start()
    pacer = FramePacer(session.frames, world.spec.fps)
    rng = np.random.default_rng(0)
    gen: list[float] = []
    shown: list[float] = []
    splits: list[LatencySplit] = []
    try:
        t_end = time.monotonic() + 1.0  # warm up: let frames flow
        while time.monotonic() < t_end:
            pacer.poll(time.monotonic())
            time.sleep(display_dt)
        for i in range(trials):
            key = "w" if i % 2 == 0 else "s"
            # wait a random phase within a chunk so presses do not align with chunk boundaries
            t_wait = time.monotonic() + rng.uniform(0, world.spec.frames_per_chunk / world.spec.fps)
            while time.monotonic() < t_wait:
                pacer.poll(time.monotonic())
                time.sleep(display_dt)
            t_press = time.monotonic()
            session.inputs.press(key, now=t_press)
            got_gen = got_shown = None
            deadline = t_press + 30
            while got_shown is None and time.monotonic() < deadline:
                now = time.monotonic()
                frame = pacer.poll(now)
                if frame is not None and frame.input_time is not None and frame.input_time >= t_press:
                    got_shown = now - t_press
                    got_gen = frame.created - t_press
                    timing = session.timing(frame)
                    if timing is not None:
                        splits.append(LatencySplit.of(t_press, timing, min(pacer.last_due, now), now))
                time.sleep(display_dt)
            session.inputs.release(key)
            if session.error:
                raise RuntimeError(session.error)
            if got_shown is not None and got_gen is not None:
                gen.append(got_gen)
                shown.append(got_shown)
    finally:
        session.close()
    return gen, shown, splits


class InstantWorld:
    """A world that returns the same chunk at once: the engine's own ceiling."""

    def __init__(self, width: int = 256, height: int = 144, frames_per_chunk: int = 8, fps: float = 16.0) -> None:
        self.spec = ModelSpec(name="instant", fps=fps, frames_per_chunk=frames_per_chunk,
                              first_chunk_frames=frames_per_chunk, width=width, height=height,
                              is_model=False, label="constant chunk")
        self._frames = np.full((frames_per_chunk, height, width, 3), 127, np.uint8)

    def reset(self, first_frame, prompt, seed) -> None:
        pass

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        return Chunk(frames=self._frames, poses=poses, intrinsics=intrinsics, index=0)

    def snapshot(self) -> object:
        return None

    def restore(self, snapshot: object) -> None:
        pass

    def close(self) -> None:
        pass


def pipeline(ctx: BenchContext) -> None:
    """Frames per second the session, queue and pose planning sustain with an instant world."""
    seconds = 1.0 if ctx.quick else 3.0
    session = Session(InstantWorld(), SessionConfig()).start()
    try:
        session.inputs.press("w")
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if session.frames.get(timeout=0.5) is not None:
                count += 1
        elapsed = time.perf_counter() - t0
    finally:
        session.close()
    ctx.add("engine throughput (instant world, 256x144)", count / elapsed, "frames/s",
            "model thread + pose planning + frame queue, no pacing")
