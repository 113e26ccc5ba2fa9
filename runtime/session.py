"""`Session`: one player's walk through one world, run chunk by chunk on its own model thread.

Each chunk's camera path is planned from the input timeline the player made since the last
plan (`controls.PathPlanner`): every press, release, stick value and mouse motion at its time. A
world that conditions on actions rather than poses may define `use_input(path)`: it gets each
chunk's `PlannedPath` before the chunk is generated, and `path.timeline.frame_inputs(path.edges)`
says which keys were held and how the mouse moved during each planned frame (the first chunk's
first frame, the start pose, has no interval).

The session owns the world, the model thread, the `FrameQueue` and the generation counter.
The UI side (window, browser channel) writes intent into `session.inputs` (an `InputBox`) and
takes frames from `session.frames`; those two objects are the only meeting points. Commands
(reset, rewind) bump the generation at once, so stale frames vanish from the queue immediately,
and are carried out by the model thread, which is the only code that touches the world.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldwalk.controls import (
    DEFAULT_FOV_DEG,
    InputBox,
    InputState,
    IntegratorState,
    PathPlanner,
    PlannedPath,
    PlannerConfig,
    PlannerState,
    PoseIntegrator,
    intrinsics_from_fov,
    pose_matrix,
    rotation,
)

from .chunk import Chunk, Frame
from .frame_queue import FrameQueue, Policy, QueueClosed
from .latency import ChunkTiming
from .world import ModelSpec, WorldModel, step_backends

log = logging.getLogger(__name__)

ChunkListener = Callable[[Chunk, InputState, list[Frame]], None]
# cb(kind, **data): "reset", or "rewind" with to_chunk (the chunk generation resumes at)
EventListener = Callable[..., None]


@dataclass
class SessionConfig:
    seed: int = 0
    prompt: str | None = None
    fov_x_deg: float = DEFAULT_FOV_DEG  # used when no intrinsics are given
    queue_capacity: int = 0  # frames; 0 = the largest chunk plus a few frames of slack
    queue_policy: Policy = "block"  # block: the model waits for the player (back-pressure)
    # Chunk boundaries kept for rewind: as many as fit in the memory budget (a world's snapshot tells
    # its size through `nbytes()`; SANA-WM's live in host memory, about 1.6 GB each at 704x1280), and
    # never more than max_snapshots.
    max_snapshots: int = 64
    rewind_frames: int = 4  # a rewind goes back at least this many frames (whole chunks)
    snapshot_budget_mb: float = 8192.0
    # Plan each chunk as late as possible ("block" policy only): wait until the frames still queued
    # last as long as this world's chunks take to make, as measured over the recent ones (their
    # jit_quantile, times jit_margin, plus jit_slack seconds), so the chunk is planned with the
    # freshest input instead of queueing ahead and adding latency. A chunk slower than that shows
    # as a short stall, not as lasting latency.
    just_in_time: bool = True
    jit_quantile: float = 0.9
    jit_margin: float = 1.15
    jit_slack: float = 0.02
    jit_window: int = 16  # recent chunks measured
    start_paused: bool = False
    # Overlap the VAE decode of chunk k with the denoising of chunk k+1 (worlds with `submit`,
    # i.e. SANA-WM): more chunks per second at the cost of one decode of input latency.
    # None = on for CUDA devices, off on the CPU.
    pipeline: bool | None = None
    # The chunk's camera path from the input timeline (controls/path_planner.py): a chunk planned
    # sooner than its length after the last depicts at least this share of it in content time,
    # and a forecast that did not come true is corrected over catch_up seconds of content.
    min_span: float = 0.75
    catch_up: float = 0.25
    # Input older than this when a chunk is planned (a world much slower than real time) still
    # turns the camera but does not walk it: the walk does not race through minutes of held keys.
    max_replay_s: float = 2.0


def _snapshot_bytes(snapshot: object) -> int:
    """Memory a world's snapshot keeps, when it says (`nbytes()`); 0 for small ones that do not."""
    nbytes = getattr(snapshot, "nbytes", None)
    return int(nbytes()) if callable(nbytes) else 0


@dataclass
class Boundary:
    """Everything needed to resume generation at the start of chunk `chunk_index`: kept for
    rewind, and (`Session.latest_boundary`, `Session(resume=...)`) to carry a walk to another
    process, as the cluster does when a session host dies."""

    chunk_index: int
    world: object
    integrator: IntegratorState
    frame_index: int = 0  # the index the chunk's first frame is stamped with
    planner: PlannerState | None = None  # the path planner there (None: start it at `integrator`)



@dataclass
class _Job:
    """A chunk on its way: what its frames are stamped with once the world returns them."""

    k: int
    n: int
    state: InputState
    generation: int
    path: PlannedPath  # the camera path planned for it, and the input timeline it came from
    t0: float
    planned: float = 0.0  # box clock: input read
    model: float = 0.0  # box clock: world asked
    pending: Any = None  # the world's PendingChunk, pipelined


@dataclass
class SessionStats:
    chunks: int = 0
    frames: int = 0
    chunk_index: int = -1
    last_chunk_s: float = 0.0
    gen_fps: float = 0.0  # frames / seconds spent generating, over the recent chunks
    recent: deque = field(default_factory=lambda: deque(maxlen=8))  # (frames, seconds)
    error: str | None = None


class Session:
    def __init__(
        self,
        world: WorldModel,
        cfg: SessionConfig | None = None,
        integrator: PoseIntegrator | None = None,
        inputs: InputBox | None = None,
        intrinsics: np.ndarray | None = None,
        first_frame: np.ndarray | None = None,
        resume: Boundary | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` is the session's time: frames' `created`, chunk durations, the queue's `last_taken_at`
        and just-in-time planning read it (tests give a clock they set; the default is real time)."""
        self.world = world
        self.clock = clock
        self._resume = resume  # start at this boundary instead of the first frame
        self.cfg = cfg or SessionConfig()
        self.spec: ModelSpec = world.spec
        self.inputs = inputs or InputBox(clock)
        self.integrator = integrator or PoseIntegrator()  # the exact integral of every input read
        self.planner = PathPlanner(self.integrator, PlannerConfig(self.cfg.min_span, self.cfg.catch_up))
        self.first_frame = first_frame
        K = intrinsics if intrinsics is not None else intrinsics_from_fov(
            self.spec.width, self.spec.height, self.cfg.fov_x_deg
        )
        self.intrinsics = np.asarray(K, dtype=np.float64)  # (3, 3)
        if self.intrinsics.shape != (3, 3):
            raise ValueError(f"session intrinsics must be (3, 3), got {self.intrinsics.shape}")
        largest_chunk = max(self.spec.first_chunk_frames, self.spec.frames_per_chunk)
        capacity = self.cfg.queue_capacity or largest_chunk + 4
        self.frames = FrameQueue(capacity, self.cfg.queue_policy, clock)

        self._lock = threading.Lock()  # guards integrator, generation, commands, stats
        self._wake = threading.Condition(self._lock)
        self._generation = 0
        self._commands: deque[tuple[str, int]] = deque()  # (name, rewind target chunk)
        self._paused = self.cfg.start_paused
        self.standing = False  # the model thread waits, paused
        self._stop = False
        self._handing_off = False  # hand_off(): stop at the next boundary, the walk goes on elsewhere
        self.handed_off = threading.Event()  # set when the model thread has stopped there
        self._boundaries: deque[Boundary] = deque(maxlen=max(1, self.cfg.max_snapshots))
        self._start_pose = self.integrator.pose.copy()
        self._chunk_index = 0
        self._frame_index = 0
        pipelined = self.cfg.pipeline if self.cfg.pipeline is not None else self.spec.device.startswith("cuda")
        self._pipelined = bool(pipelined) and hasattr(world, "submit")
        self._carry: _Job | None = None  # pipelined: the submitted chunk whose frames come next
        self._last_finish = 0.0
        self._listeners: list[ChunkListener] = []
        self._boundary_listeners: list[Callable[[Boundary], None]] = []
        self._event_listeners: list[EventListener] = []
        self._stats = SessionStats()
        self._timings: deque[ChunkTiming] = deque(maxlen=64)
        self._chunk_times: deque[float] = deque(maxlen=max(1, self.cfg.jit_window))  # seconds a chunk took
        self._thread: threading.Thread | None = None
        self._closed = False
        self._world_freed = False

    # ---- control, from any thread -------------------------------------------------------------

    def start(self) -> Session:
        if self._thread is not None:
            raise RuntimeError("session already started")
        self._thread = threading.Thread(target=self._run, name=f"model-{self.spec.name}", daemon=True)
        self._thread.start()
        return self

    def latest_boundary(self) -> Boundary | None:
        """The newest chunk boundary kept (the start of the chunk being made or just made), or None."""
        with self._lock:
            return self._boundaries[-1] if self._boundaries else None

    def add_boundary_listener(self, cb: Callable[[Boundary], None]) -> None:
        """`cb(boundary)` runs on the model thread each time a chunk boundary is kept (before the
        chunk is planned): the place to ship snapshots elsewhere. It must be quick."""
        self._boundary_listeners.append(cb)

    def add_listener(self, cb: ChunkListener) -> None:
        """`cb(chunk, input_state, frames)` runs on the model thread after each chunk is queued."""
        self._listeners.append(cb)

    def add_event_listener(self, cb: EventListener) -> None:
        """`cb(kind, **data)` runs each time the walk is reset (`"reset"`) or rewound (`"rewind"`,
        `to_chunk=k`: the chunk generation resumes at), on the thread that asked for it, once the
        command is queued: a recording logs them in order with the chunks. It must be quick."""
        self._event_listeners.append(cb)

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._wake:
            self._paused = paused
            self._wake.notify_all()

    def hand_off(self) -> None:
        """Stop at the next chunk boundary, once its listeners have run (they ship it to wherever
        the walk goes on: the cluster's drain). Frames already queued are still shown; the model
        thread makes nothing after the boundary, and sets `handed_off` when it has stopped."""
        with self._wake:
            self._handing_off = True
            self._wake.notify_all()

    def reset(self) -> None:
        """Back to the first frame; queued frames of the old walk are dropped at once."""
        self._command("reset")
        self._publish("reset")

    def rewind(self) -> int | None:
        """Back to the boundary before the chunk on screen (and further for short chunks, to go
        back `rewind_frames` at least). Returns the chunk generation resumes at, or None when there is
        nothing to rewind to."""
        with self._lock:
            if not self._boundaries:
                return None
            # at least rewind_frames back (one chunk at the least); the oldest boundary kept bounds it
            back = -(-max(1, self.cfg.rewind_frames) // max(1, self.spec.frames_per_chunk))
            target = max(self._shown_chunk() - back, self._boundaries[0].chunk_index)
        self._command("rewind", target)
        self._publish("rewind", to_chunk=target)
        return target

    def _publish(self, kind: str, **data: Any) -> None:
        for cb in list(self._event_listeners):
            try:
                cb(kind, **data)
            except Exception:  # a failing sink (a full disk under the log) must not stop the command
                log.exception("an event listener failed and was detached; the session goes on")
                with contextlib.suppress(ValueError):  # another thread detached it first
                    self._event_listeners.remove(cb)

    def _command(self, name: str, target: int = 0) -> None:
        with self._wake:
            self._generation += 1
            self._commands.append((name, target))
            self._wake.notify_all()
        self.frames.flush(self._generation)

    def held_pose(self, shown: Frame | None = None) -> np.ndarray:
        """The pose the player holds right now, for timewarp: the frame on screen (its position)
        turned to the orientation every input so far puts the player in, mouse look, turn keys
        and sticks alike, integrated up to this moment. The frames carry the same turns later;
        the view shows them now. Without `shown`, at the position the input has reached.
        """
        with self._lock:
            pending = self.inputs.peek_timeline()
            yaw, pitch, roll = self.planner.held_rotation(pending)
            position = self.integrator.pose[:3, 3] if shown is None else shown.pose[:3, 3]
        return pose_matrix(rotation(yaw, pitch, roll), position)

    def timing(self, frame: Frame) -> ChunkTiming | None:
        """When the steps of `frame`'s chunk happened, if the chunk is recent."""
        with self._lock:
            for t in reversed(self._timings):
                if t.chunk_index == frame.chunk_index and t.generation == frame.generation:
                    return t
        return None

    def stats(self) -> dict[str, Any]:
        backends = step_backends(self.world)  # e.g. {"chunk": "onnx", "decode": "eager"}; changes on a fallback
        with self._lock:
            s = self._stats
            pose = self.integrator.pose.copy()
            return {
                "backends": backends,
                "world": self.spec.name,
                "label": self.spec.label,
                "chunks": s.chunks,
                "frames": s.frames,
                "chunk_index": s.chunk_index,
                "chunk_ms": 1000.0 * s.last_chunk_s,
                "gen_fps": s.gen_fps,
                "pose": pose,
                "paused": self._paused,
                "generation": self._generation,
                "queued": len(self.frames),
                "dropped": self.frames.stats.dropped_full,
                "error": s.error,
            }

    @property
    def error(self) -> str | None:
        return self._stats.error

    def close(self, timeout: float = 10.0) -> None:
        """End the model thread and free the world. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self.frames.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("model thread did not stop within %.1f s (a chunk is still running)", timeout)
                return  # the thread frees the world itself when its chunk ends
        self._free_world()

    def _free_world(self) -> None:
        """Close the world exactly once, whichever of close() and the model thread gets here first."""
        with self._lock:
            if self._world_freed:
                return
            self._world_freed = True
            self._boundaries.clear()
        try:
            self.world.close()
        except Exception:
            log.exception("closing world %r failed", self.spec.name)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the model thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._reset_world()
            if self._resume is not None:
                self._resume_world(self._resume)
            while self._next_chunk():
                pass
        except QueueClosed:
            pass
        except Exception as e:  # surfaced to sinks through stats()/error; never a silent hang
            log.exception("model thread failed")
            with self._lock:
                self._stats.error = f"{type(e).__name__}: {e}"
        finally:
            if self._closed and self._thread is not None and threading.current_thread() is self._thread:
                # close() may have timed out waiting for us; free the world here then
                self._free_world()

    def _reset_world(self) -> None:
        self.world.reset(self.first_frame, self.cfg.prompt, self.cfg.seed)
        with self._lock:
            self.integrator.reset(self._start_pose.copy())
            held = self.inputs.take_timeline()  # input before the walk starts moves nothing
            self.planner.restart(held.end, held.final)
            self._boundaries.clear()
            self._chunk_index = 0

    def _restore_planner(self, b: Boundary) -> None:
        """The planner (and the integrator) as at boundary `b`, carried on from now (lock held)."""
        held = self.inputs.take_timeline()  # input made after the boundary belongs to the old walk
        if b.planner is not None:
            self.planner.set_state(b.planner, held.end)
        else:
            self.integrator.set_state(b.integrator)
            self.planner.restart(held.end, held.final)

    def _resume_world(self, b: Boundary) -> None:
        """Continue a walk begun elsewhere: the world, the pose and the frame count of boundary `b`."""
        self.world.restore(b.world)
        with self._lock:
            self._restore_planner(b)
            self._chunk_index = b.chunk_index
            self._frame_index = b.frame_index

    def _trim_boundaries(self) -> None:
        """Drop the oldest boundaries while their snapshots outgrow the memory budget (lock held)."""
        total = sum(_snapshot_bytes(b.world) for b in self._boundaries)
        while len(self._boundaries) > 1 and total > self.cfg.snapshot_budget_mb * 1e6:
            total -= _snapshot_bytes(self._boundaries.popleft().world)

    def _rewind_world(self, target: int) -> None:
        with self._lock:
            while len(self._boundaries) > 1 and self._boundaries[-1].chunk_index > target:
                self._boundaries.pop()
            b = self._boundaries[-1] if self._boundaries else None
            if b is not None:
                self._boundaries.pop()  # the boundary is pushed again when its chunk is redone
                self._restore_planner(b)
                self._chunk_index = b.chunk_index
        if b is not None:
            self.world.restore(b.world)

    def _shown_chunk(self) -> int:
        """The chunk the player is looking at: the last one a sink took, else the oldest queued."""
        seen = self.frames.last_taken
        if seen is not None and seen.generation == self._generation:
            return seen.chunk_index
        head = self.frames.peek()
        return head.chunk_index if head is not None else self._chunk_index - 1

    def _queued_seconds(self) -> float:
        """How long until the frames queued run out: the frames waiting, and what is left of the
        one on screen (a sink that paces takes each frame when it falls due)."""
        dt, now = 1.0 / self.spec.fps, self.clock()
        on_screen = 0.0
        if self.frames.last_taken is not None and self.frames.last_taken.generation == self._generation:
            on_screen = min(dt, max(0.0, self.frames.last_taken_at + dt - now))
        return len(self.frames) * dt + on_screen

    def _wait_until_due(self) -> bool:
        """Hold planning until the queued frames run low. False if a command or stop came meanwhile."""
        if not self.cfg.just_in_time or self.cfg.queue_policy != "block":
            return True
        with self._wake:
            recent = list(self._chunk_times)
            if not recent:
                return True
            made = float(np.quantile(recent, self.cfg.jit_quantile))  # how long this world's chunks take
            lead = made * self.cfg.jit_margin + self.cfg.jit_slack
            while self._queued_seconds() > lead:
                if self._stop or self._commands:
                    return False
                self._wake.wait(0.005)
            return not (self._stop or self._commands)

    def _next_chunk(self) -> bool:
        """Generate one chunk. Returns False when the session stops."""
        # 1. Wait while paused (showing a chunk still in the pipeline first); carry out pending
        #    commands on this thread.
        if self._carry is not None and self._paused and not self._commands:
            job, self._carry = self._carry, None
            return self._finish(job, job.pending.result())
        with self._wake:
            waited = False
            while (self._paused and not self._commands) and not (self._stop or self._handing_off):
                waited = self.standing = True
                self._wake.wait()
            self.standing = False
            if self._stop:
                return False
            commands = list(self._commands)
            self._commands.clear()
            generation = self._generation
            if waited:  # paused: the walk stood still meanwhile (the turns still count)
                self.planner.skip(self.inputs.take_timeline())
        if commands:
            self._carry = None  # a submitted chunk of the old walk: never shown
        for command, target in commands:
            if command == "reset":
                self._reset_world()
                self._frame_index = 0
            elif command == "rewind":
                self._rewind_world(target)

        if not self._wait_until_due():
            return True  # a command arrived while waiting: carry it out first

        # 2. Remember this chunk boundary, so a rewind can come back to it.
        with self._lock:
            k = self._chunk_index
            # pipelined, the chunk still in flight is counted: its frames come before this one's
            first = self._frame_index + (self._carry.n if self._carry is not None else 0)
            boundary = Boundary(k, self.world.snapshot(), self.integrator.get_state(), first,
                                self.planner.get_state())
            self._boundaries.append(boundary)
            self._trim_boundaries()
        for cb in list(self._boundary_listeners):
            try:
                cb(boundary)
            except Exception:  # shipping snapshots is best effort; the walk goes on
                log.exception("a boundary listener failed and was detached; the session goes on")
                self._boundary_listeners.remove(cb)
        if self._handing_off:  # the listeners have shipped this boundary: the walk goes on from it elsewhere
            if self._carry is not None:  # pipelined: the chunk in flight comes before the boundary
                job, self._carry = self._carry, None
                self._finish(job, job.pending.result())
            self.handed_off.set()
            return False

        # 3. Plan the chunk's camera path from what the player did since the last plan (the
        #    input timeline), extrapolating the held input past now.
        n = self.spec.chunk_frames(k)
        dt = 1.0 / self.spec.fps
        with self._lock:
            timeline = self.inputs.take_timeline()
            if timeline.duration > self.cfg.max_replay_s:  # older input turns, but does not walk
                cut = timeline.end - self.cfg.max_replay_s
                self.planner.skip(timeline.until(cut))
                timeline = timeline.since(cut, fold_mouse=False)
            start = self.planner.shown_pose
            # the first frame is the start pose itself (SANA-WM: the first image)
            path = self.planner.plan(timeline, n - 1 if k == 0 else n, dt)
            poses = np.concatenate([start[None], path.poses]) if k == 0 else path.poses  # (n, 4, 4)
        state = timeline.state
        intrinsics = np.broadcast_to(self.intrinsics, (n, 3, 3)).copy()

        # 4. Generate. Pipelined: start this chunk, then finish the previous one, whose VAE
        #    decode ran while this one was denoised.
        with self._lock:
            self._chunk_index = k + 1
        job = _Job(k, n, state, generation, path, self.clock(), timeline.end)
        use_input = getattr(self.world, "use_input", None)
        if callable(use_input):  # an action world reads the chunk's per-frame input from the path
            use_input(path)
        job.model = self.inputs.clock()
        if not self._pipelined:
            return self._finish(job, self.world.generate_chunk(poses, intrinsics))
        job.pending = self.world.submit(poses, intrinsics)
        previous, self._carry = self._carry, job
        if previous is None:
            return not self._stop
        return self._finish(previous, previous.pending.result())

    def _finish(self, job: _Job, chunk: Chunk) -> bool:
        """Steps 5-7 for a generated chunk. Returns False when the session stops."""
        k, n, state, generation = job.k, job.n, job.state, job.generation
        if len(chunk) != n:
            raise RuntimeError(f"world {self.spec.name!r} returned {len(chunk)} frames for a {n}-frame chunk")
        generated = self.inputs.clock()
        now_s = self.clock()
        # pipelined, the time between finished chunks is what a chunk costs (stages overlap)
        elapsed = now_s - max(job.t0, self._last_finish) if self._pipelined else now_s - job.t0
        self._last_finish = now_s

        # 5. A command arrived meanwhile: this chunk belongs to the old walk; drop it (the
        #    command, carried out next, restores the boundaries and the chunk position).
        if generation != self._generation:
            return True

        # 6. Stamp the frames and queue them (blocks while the player is a chunk behind).
        now = self.clock()
        frames = []
        for i in range(n):
            idx = self._frame_index + i
            frames.append(Frame(
                image=chunk.frames[i], pose=chunk.poses[i], intrinsics=chunk.intrinsics[i],
                index=idx, pts=idx / self.spec.fps, chunk_index=k, generation=generation,
                created=now, input_time=state.timestamp if state.timestamp > 0 else None,
            ))
        self._frame_index += n
        with self._lock:
            s = self._stats
            s.chunks += 1
            s.frames += n
            s.chunk_index = k
            s.last_chunk_s = elapsed
            s.recent.append((n, elapsed))
            self._chunk_times.append(elapsed)
            s.gen_fps = sum(f for f, _ in s.recent) / max(1e-9, sum(t for _, t in s.recent))
        for cb in list(self._listeners):
            try:
                cb(chunk, state, frames)
            except Exception:  # a failing sink (say, a full disk under the recorder) must not end the walk
                log.exception("a chunk listener failed and was detached; the session goes on")
                self._listeners.remove(cb)
        # 7. Queue them.
        with self._lock:
            decode = float(chunk.timings.get("decode", 0.0)) if chunk.timings else 0.0
            self._timings.append(ChunkTiming(k, generation, job.planned, job.model, generated, decode,
                                             self.inputs.clock()))
        for frame in frames:
            while not self._stop:
                try:
                    self.frames.put(frame, timeout=0.1)
                    break
                except TimeoutError:
                    continue
        return not self._stop
