"""Replay: a session log, an action string or a camera path -> a plan -> the world's frames.

A `ReplayPlan` says which world to build (name, checkpoint, seed, size, intrinsics, first image,
prompt) and which chunks to ask it for. From a session log the chunks are the session's own,
with its resets and rewinds: chunk k following chunk j >= k means the session went back (index
0: reset; otherwise a rewind to the boundary before chunk k, which the replay restores from a
snapshot it took there). A free camera path (an action string, a .npy or a .json file) is cut
into chunks of the world's size at render time; the last chunk is padded by holding the final
pose and its extra frames are not kept.

    plan = plan_from_log("walk.jsonl")            # checks version, world, checkpoint
    frames = render_frames(plan)                  # (N, H, W, 3) uint8, the raw frames
    render_to_file(plan, "walk-again.mp4")        # video + its own log, progress bar with ETA

With the same world, checkpoint, seed and device a log replays to the same raw frames as the
live session generated (bit-identical on the CPU for the reference world).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from worldwalk.runtime.safe_files import UnsafeFileError, check_inside, printable
from worldwalk.runtime.session import _snapshot_bytes

from .log_schema import MAX_PIXELS, MAX_SIDE
from .session_log import SessionLogError, checkpoint_hash, header_from_world, image_hash, read_log, worldwalk_version


class ReplayError(ValueError):
    """A plan that cannot be replayed as asked: names the mismatch and the fix."""


class LogMismatchError(ReplayError):
    """The log was made by another world, model, checkpoint or worldwalk version (`--force`)."""


@dataclass
class ReplayStep:
    kind: Literal["reset", "restore", "chunk"]
    chunk_index: int
    poses: np.ndarray | None = None  # (F, 4, 4) camera-to-world, for "chunk"
    intrinsics: np.ndarray | None = None  # (F, 3, 3); None: the plan's intrinsics
    keep: int | None = None  # frames of the chunk that belong to the output (None: all)
    input: dict[str, Any] | None = None  # the input state the session made the chunk with
    actions: dict[str, np.ndarray] | None = None  # an action world's per-frame actions ("keyboard", "mouse")


@dataclass
class ReplayPlan:
    world: str = "reference"  # registered world name
    seed: int = 0
    width: int = 256
    height: int = 144
    fps: float = 16.0
    intrinsics: np.ndarray | None = None  # (3, 3) at width x height; None: controls.DEFAULT_FOV_DEG
    checkpoint: str | None = None
    device: str = "cpu"
    accel: str = "none"  # the chunk-step backend (runtime/accel/); a log's own by default
    prompt: str | None = None
    first_image: np.ndarray | None = None  # (H, W, 3) uint8
    world_options: dict[str, Any] = field(default_factory=dict)
    steps: list[ReplayStep] | None = None  # from a log: the session's chunks
    poses: np.ndarray | None = None  # (N, 4, 4) a free camera path, chunked at render time
    source: str = ""  # what the plan came from, for logs and messages
    header: dict[str, Any] | None = None  # the source log's header
    force: bool = False  # render a log on a world that differs from the one that recorded it

    def world_config(self) -> Any:
        from worldwalk.runtime.world import WorldConfig

        return WorldConfig(
            name=self.world, width=self.width, height=self.height, fps=self.fps, seed=self.seed,
            checkpoint=self.checkpoint, device=self.device, accel=self.accel, options=dict(self.world_options),
        )

    def camera(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """(3, 3) pixel intrinsics for frames of width x height (default: the plan's size). A world that
        keeps its own size (the bundled one) gets the plan's field of view at that size, as `play` gives it."""
        width, height = width or self.width, height or self.height
        if self.intrinsics is None:
            from worldwalk.controls.camera import intrinsics_from_fov

            return intrinsics_from_fov(width, height)
        K = np.asarray(self.intrinsics, dtype=np.float64)
        if (width, height) == (self.width, self.height):
            return K
        return np.diag([width / self.width, height / self.height, 1.0]) @ K  # same field of view

    def chunked(self, spec: Any) -> list[ReplayStep]:
        """The steps for a world with this ModelSpec."""
        path = self.poses
        if self.steps is not None:
            bad = [s for s in self.steps if s.kind == "chunk" and len(s.poses) != spec.chunk_frames(s.chunk_index)]
            if not bad:
                return self.steps
            if not self.force:
                s = bad[0]
                raise LogMismatchError(
                    f"{self.source}: chunk {s.chunk_index} has {len(s.poses)} poses but world "
                    f"{spec.name!r} makes {spec.chunk_frames(s.chunk_index)}-frame chunks there; "
                    "render with the world that recorded it, or --force to re-cut its camera path"
                )
            # another world cuts chunks differently: replay the final walk's camera path
            path = np.concatenate([s.poses[: s.keep] for s in _live_chunks(self.steps)])
        assert path is not None
        steps, start, k = [], 0, 0
        while start < len(path):
            n = spec.chunk_frames(k)
            poses = path[start:start + n]
            keep = len(poses)
            if keep < n:  # hold the final pose; those frames are rendered, not kept
                poses = np.concatenate([poses, np.repeat(poses[-1:], n - keep, axis=0)])
            steps.append(ReplayStep("chunk", k, poses, keep=keep if keep < n else None))
            start += n
            k += 1
        return steps


# -- plans ----------------------------------------------------------------------------------


def check_poses(poses: Any, source: str) -> np.ndarray:
    """A camera path as (F, 4, 4) float64, or a ReplayError saying what is wrong with it."""
    try:
        a = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReplayError(f"{source}: camera path is not a numeric array; expected shape (F, 4, 4)") from None
    if a.ndim != 3 or a.shape[1:] != (4, 4) or a.shape[0] < 1:
        raise ReplayError(
            f"{source}: camera path has shape {a.shape}; expected (F, 4, 4) camera-to-world "
            "matrices (F >= 1): a .npy of shape (F, 4, 4) or a JSON list of 4x4 lists"
        )
    if not np.all(np.isfinite(a)):
        bad = int(np.argwhere(~np.isfinite(a).all(axis=(1, 2)))[0, 0])
        raise ReplayError(f"{source}: pose {bad} contains NaN or infinity")
    bottom = np.abs(a[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    if (bottom > 1e-6).any():
        bad = int(np.argmax(bottom > 1e-6))
        raise ReplayError(f"{source}: pose {bad} is not a rigid 4x4 (its last row must be 0 0 0 1)")
    return a


def load_camera_path(path: str | os.PathLike) -> np.ndarray:
    """Read a camera path: .npy of shape (F, 4, 4), or JSON: a list of 4x4 lists (or an object
    with such a list under "poses")."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"camera path {p} does not exist; pass a .npy (F, 4, 4) or a .json list of 4x4")
    if p.suffix.lower() == ".npy":
        try:
            data = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise ReplayError(f"{p}: not a plain .npy array ({e}); save it with np.save(path, poses)") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReplayError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict):
            if "poses" not in data:
                raise ReplayError(f"{p}: a JSON object needs a 'poses' list of 4x4 matrices")
            data = data["poses"]
    else:
        raise ReplayError(f"{p}: unknown camera path type {p.suffix!r}; use .npy (F, 4, 4) or .json")
    return check_poses(data, str(p))


def plan_from_poses(poses: Any, source: str = "camera path", **kw: Any) -> ReplayPlan:
    """A plan for a free camera path (F, 4, 4); `kw` sets ReplayPlan fields (world, seed, ...)."""
    return ReplayPlan(poses=check_poses(poses, source), source=source, **kw)


def plan_from_path(path: str | os.PathLike, **kw: Any) -> ReplayPlan:
    return plan_from_poses(load_camera_path(path), str(path), **kw)


def plan_from_actions(actions: str, **kw: Any) -> ReplayPlan:
    """A plan for a SANA-WM action string ("w-24,jw-12"); the first pose is the start (identity).
    A bad token raises controls' ActionStringError naming it."""
    from worldwalk.controls.action_string import action_string_to_poses

    return plan_from_poses(action_string_to_poses(actions), f"actions {actions!r}", **kw)


def plan_from_log(
    path: str | os.PathLike,
    *,
    world: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int | None = None,
    size: tuple[int, int] | None = None,
    device: str | None = None,
    accel: str | None = None,
    force: bool = False,
) -> ReplayPlan:
    """Read a session log into a plan, checking it against this worldwalk and the world asked
    for (`world`, `checkpoint`: None = the log's own). A mismatch raises LogMismatchError
    naming it, unless `force`. `seed`/`size` override the log's (the frames will differ)."""
    log = read_log(path)
    h = log.header
    src = str(log.path)
    problems = []
    ours = worldwalk_version()
    if h.get("worldwalk_version") != ours:
        problems.append(f"it was written by worldwalk {h.get('worldwalk_version')}, this is worldwalk {ours}")
    if world is not None and world != h["world"]:
        problems.append(f"it was recorded with world {h['world']!r} (model {h.get('model')!r}), not {world!r}")
    # the command line's checkpoint is the user's choice; the log's must stay in the log's folder
    ckpt = os.fspath(checkpoint) if checkpoint is not None else _inside_log_folder(log, "checkpoint", 1)
    if ckpt is not None:
        if not Path(ckpt).exists():
            raise ReplayError(
                f"{printable(src)}: checkpoint {printable(ckpt)} does not exist; pass --checkpoint DIR with the "
                f"checkpoint the session used (hash {printable(h.get('checkpoint_hash'))})"
            )
        if checkpoint is None:  # the log's own: nothing in it may lead out of the log's folder, or hang a read
            try:
                check_inside(ckpt, log.path.parent, "the log's checkpoint")
            except UnsafeFileError as e:
                raise ReplayError(f"{printable(src)}:1: field 'checkpoint': {e}") from None
        want = h.get("checkpoint_hash")
        got = checkpoint_hash(ckpt)
        if want is not None and got != want:
            problems.append(f"checkpoint {ckpt} hashes to {got}, the log's checkpoint to {want}")
        elif want is None and checkpoint is not None:
            problems.append(f"it was recorded without a checkpoint, not with {ckpt}")
    if problems and not force:
        raise LogMismatchError(
            f"{src} does not match: " + "; ".join(problems)
            + ". Render with the matching world/checkpoint, or pass --force to render anyway "
            "(the frames may differ)."
        )

    first_image = None
    if h.get("first_image"):
        img_path = Path(_inside_log_folder(log, "first_image", 1))
        if not img_path.is_file():
            raise ReplayError(f"{src}: its first image {img_path} is missing; keep it beside the log")
        first_image = _load_first_image(img_path, src)
        if h.get("first_image_hash") and image_hash(first_image) != h["first_image_hash"] and not force:
            raise LogMismatchError(f"{img_path} is not the first image the session used (hash differs); "
                                   "restore the original or pass --force")

    K = np.asarray(h["intrinsics"], dtype=np.float64)
    width, height = int(h["width"]), int(h["height"])
    scale = np.eye(3)
    if size is not None and tuple(size) != (width, height):
        scale = np.diag([size[0] / width, size[1] / height, 1.0])  # same field of view at the new size
        K = scale @ K
        width, height = size
    steps = _steps_from_records(log.records, src, scale)
    log_accel = (h.get("settings") or {}).get("accel", "none")
    if not isinstance(log_accel, str) or len(log_accel) > 32:
        raise ReplayError(f"{src}:1: field 'settings.accel': expected a backend name, got {str(log_accel)[:40]!r}")
    plan = ReplayPlan(
        world=world or h["world"], seed=int(h["seed"]) if seed is None else seed,
        width=width, height=height, fps=float(h["fps"]), intrinsics=K, checkpoint=ckpt,
        device=device or h.get("device", "cpu"), prompt=h.get("prompt"), first_image=first_image,
        accel=accel or log_accel,
        world_options=_log_world_options(log, world or h["world"]), steps=steps, source=src, header=h,
        force=force,
    )
    return plan


def _log_world_options(log: Any, world: str) -> dict[str, Any]:
    """The header's world options, with the paths among them (those the world names as `FilePath`, such
    as sana-wm's prompt_file) resolved inside the log's folder, as its checkpoint is."""
    import importlib

    from worldwalk.runtime.world import available_worlds
    from worldwalk.runtime.world_options import FilePath

    options = dict(log.header.get("world_options") or {})
    entry = available_worlds().get(world)
    try:
        rules = getattr(importlib.import_module(entry.module), "OPTIONS", {}) if entry is not None else {}
    except ImportError:  # the world cannot be built either: creating it says why
        rules = {}
    for name, rule in rules.items():
        if isinstance(rule, FilePath) and isinstance(options.get(name), str) and options[name]:
            field_name = f"world_options.{name}"
            options[name] = _inside_log_folder(log, field_name, 1, options[name])
            if not Path(options[name]).exists():
                continue  # the world says what is missing
            try:
                check_inside(options[name], log.path.parent, f"the log's {name}")
            except UnsafeFileError as e:
                raise ReplayError(f"{printable(log.path)}:1: field '{field_name}': {e}") from None
    return options


def _inside_log_folder(log: Any, field_name: str, line: int, value: Any = None) -> str | None:
    """The header's path `field_name` (or `value`, when given) resolved against the log's folder; a path
    that leaves the folder (absolute, `..`, a symlink out) is refused: a log may come from anyone, and
    must not make us read (or hash, or copy beside the output) files it names elsewhere."""
    value = log.header.get(field_name) if value is None else value
    if value is None:
        return None
    folder = log.path.parent.resolve()
    try:
        target = (folder / value).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13), a name too long
        raise ReplayError(f"{printable(log.path)}:{line}: field '{field_name}': {printable(repr(value)[:200])} "
                          f"cannot be followed ({printable(e)})") from None
    if not target.is_relative_to(folder):
        hint = ("pass --checkpoint DIR to use a checkpoint from elsewhere" if field_name == "checkpoint"
                else "keep the file beside the log and name it there")
        raise ReplayError(f"{printable(log.path)}:{line}: field '{field_name}': {str(value)[:200]!r} is outside "
                          f"the log's folder {printable(folder)}; {hint}")
    return str(target)


def _load_first_image(path: Path, src: str) -> np.ndarray:
    """The log's first image: a plain (height, width, 3) uint8 .npy, its shape read before its data."""
    try:
        image = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ReplayError(f"{src}: its first image {path} is not a plain .npy array ({e})") from None
    ok = (image.ndim == 3 and image.shape[2] == 3 and image.dtype.kind in "uif"
          and 0 < image.shape[0] <= MAX_SIDE and 0 < image.shape[1] <= MAX_SIDE
          and image.shape[0] * image.shape[1] <= MAX_PIXELS)
    if not ok:
        raise ReplayError(f"{src}: its first image {path} is {image.dtype} {image.shape}; expected an RGB "
                          f"image (H, W, 3) of at most {MAX_SIDE} pixels a side")
    return np.array(image)


def _live_chunks(steps: list[ReplayStep]) -> list[ReplayStep]:
    """The chunks of the final walk: those no later reset or rewind went back over."""
    out: list[ReplayStep] = []
    for s in steps:
        if s.kind == "reset":
            out = []
        elif s.kind == "restore":
            out = [c for c in out if c.chunk_index < s.chunk_index]
        else:
            out.append(s)
    return out


def _steps_from_records(records: list[dict[str, Any]], src: str, scale: np.ndarray) -> list[ReplayStep]:
    """Chunk lines -> steps; `scale` (3, 3) maps the log's pixel intrinsics to the render size."""
    steps: list[ReplayStep] = []
    done: set[int] = set()  # chunk indices made since the last reset (rewind targets)
    prev = -1
    for r in records:
        if r["type"] != "chunk":
            continue  # events are informational: chunk indices say what happened
        k = int(r["index"])
        if prev < 0 and k != 0:
            raise ReplayError(f"{src}: the log starts at chunk {k}, not 0; the recorder was attached "
                              "after the session started, so it cannot be replayed")
        if prev >= 0 and k != prev + 1:
            if k == 0:
                steps.append(ReplayStep("reset", 0))
                done.clear()
            elif k in done:
                steps.append(ReplayStep("restore", k))
                done = {i for i in done if i < k}
            else:
                raise ReplayError(f"{src}: chunk {k} follows chunk {prev}; chunks in between are "
                                  "missing, so the log cannot be replayed")
        poses = check_poses(r["poses"], f"{src}: chunk {k}")
        n = len(poses)
        Ks = np.asarray(r["intrinsics"], dtype=np.float64) if "intrinsics" in r else None
        if Ks is not None:
            if Ks.shape != (n, 3, 3):
                raise ReplayError(f"{src}: chunk {k} intrinsics have shape {Ks.shape}, expected ({n}, 3, 3)")
            Ks = scale @ Ks
        keep = r.get("keep")
        actions = {name: np.asarray(v, np.float32) for name, v in (r.get("actions") or {}).items()} or None
        steps.append(ReplayStep("chunk", k, poses, Ks, keep=int(keep) if keep is not None else None,
                                input=r.get("input"), actions=actions))
        done.add(k)
        prev = k
    if not any(s.kind == "chunk" for s in steps):
        raise ReplayError(f"{src}: the log has no chunks to replay")
    return steps


# -- rendering ------------------------------------------------------------------------------


def open_world(plan: ReplayPlan) -> Any:
    """Build the plan's world (its entry point) and check it is the model the log names."""
    from worldwalk.runtime.world_options import WorldOptionError
    from worldwalk.runtime.worlds import create_world

    try:
        world = create_world(plan.world_config())
    except WorldOptionError as e:
        if plan.header is None:
            raise
        raise ReplayError(f"{plan.source}:1: field 'world_options': {e} (in the log's header)") from None
    h = plan.header
    if h is not None and not plan.force and world.spec.name != h.get("model"):
        world.close()
        raise LogMismatchError(
            f"{plan.source} was recorded with model {h.get('model')!r}, world {plan.world!r} now builds "
            f"{world.spec.name!r}; render with the matching checkpoint or pass --force"
        )
    return world


class KeptBoundaries:
    """The chunk boundaries a live session still holds for rewind, kept as `Session` keeps them: at most
    `SessionConfig.max_snapshots`, the oldest dropped while their snapshots outgrow its memory budget, those
    after a rewind's target dropped by the rewind. A session's log only rewinds to a boundary it held, so a
    replay that keeps boundaries the same way has every snapshot a real log needs, and a crafted log cannot
    make it keep more (SANA-WM's are 1.6 GB each at 704x1280; the bundled model's about 5 MB).

    Every boundary is counted with its snapshot's size; only those a later rewind goes back to (`targets`)
    keep their snapshot."""

    def __init__(self, targets: set[int], max_snapshots: int, budget_bytes: float) -> None:
        self.targets = targets
        self.max_snapshots = max(1, max_snapshots)
        self.budget = budget_bytes
        self._order: deque[tuple[int, int]] = deque()  # (chunk index, snapshot bytes), oldest first
        self.snapshots: dict[int, object] = {}

    def push(self, chunk_index: int, snapshot: object) -> None:
        """The boundary before chunk `chunk_index` (its snapshot taken there)."""
        self._order.append((chunk_index, _snapshot_bytes(snapshot)))
        if chunk_index in self.targets:
            self.snapshots[chunk_index] = snapshot
        while len(self._order) > self.max_snapshots:
            self._drop_oldest()
        total = sum(b for _, b in self._order)
        while len(self._order) > 1 and total > self.budget:
            total -= self._drop_oldest()

    def pop_to(self, chunk_index: int) -> object | None:
        """A rewind to the boundary before `chunk_index`: its snapshot, or None when a session would no
        longer hold it. The boundaries after it go, and it too (it is pushed again when its chunk is redone)."""
        while self._order and self._order[-1][0] > chunk_index:
            self.snapshots.pop(self._order.pop()[0], None)
        if not self._order or self._order[-1][0] != chunk_index:
            return None
        self._order.pop()
        return self.snapshots.pop(chunk_index, None)

    def clear(self) -> None:
        self._order.clear()
        self.snapshots.clear()

    def __len__(self) -> int:
        return len(self.snapshots)

    def _drop_oldest(self) -> int:
        k, nbytes = self._order.popleft()
        self.snapshots.pop(k, None)
        return nbytes


def iter_render(plan: ReplayPlan, world: Any, session: Any = None) -> Iterator[tuple[ReplayStep, Any]]:
    """Run the plan on a world; yields (step, Chunk) per generated chunk, in order. Rewind snapshots are
    kept as a session with config `session` (default: `SessionConfig()`) keeps them."""
    from worldwalk.runtime.session import SessionConfig

    steps = plan.chunked(world.spec)
    targets = {s.chunk_index for s in steps if s.kind == "restore"}
    K = plan.camera(world.spec.width, world.spec.height)
    cfg = session or SessionConfig()
    kept = KeptBoundaries(targets, cfg.max_snapshots, cfg.snapshot_budget_mb * 1e6)
    world.reset(plan.first_image, plan.prompt, plan.seed)
    for step in steps:
        if step.kind == "reset":
            world.reset(plan.first_image, plan.prompt, plan.seed)
            kept.clear()
        elif step.kind == "restore":
            snapshot = kept.pop_to(step.chunk_index)
            if snapshot is None:
                raise ReplayError(
                    f"{plan.source}: the log rewinds to chunk {step.chunk_index}, further back than a session keeps "
                    f"(the last {cfg.max_snapshots} chunk boundaries, within {cfg.snapshot_budget_mb:g} MB of "
                    "snapshots); it was not written by a worldwalk session, so it cannot be replayed")
            world.restore(snapshot)
        else:
            if targets:  # a session snapshots every boundary: the budget counts them all
                kept.push(step.chunk_index, world.snapshot())
            if step.actions is not None:  # an action world: steered by what the session gave it
                if not hasattr(world, "set_actions"):
                    raise ReplayError(f"{plan.source}: chunk {step.chunk_index} carries keyboard/mouse actions, "
                                      f"but world {world.spec.name!r} is steered by a camera path")
                world.set_actions(step.actions["keyboard"], step.actions.get("mouse"))
            Ks = step.intrinsics if step.intrinsics is not None else np.broadcast_to(K, (len(step.poses), 3, 3))
            yield step, world.generate_chunk(step.poses, np.ascontiguousarray(Ks))


def plan_frames(plan: ReplayPlan, spec: Any) -> int:
    """How many frames rendering the plan produces."""
    return sum(
        len(s.poses) if s.keep is None else s.keep for s in plan.chunked(spec) if s.kind == "chunk"
    )


def render_frames(plan: ReplayPlan, world: Any = None) -> np.ndarray:
    """All raw frames of the plan, (N, H, W, 3) uint8, in generation order (no codec)."""
    own = world is None
    world = open_world(plan) if own else world
    try:
        out = [chunk.frames[: step.keep] for step, chunk in iter_render(plan, world)]
    finally:
        if own:
            world.close()
    return np.concatenate(out)


@dataclass
class RenderResult:
    path: str
    log_path: str | None
    frames: int
    frames_dropped: int
    seconds: float
    size: tuple[int, int]  # (width, height) of the frames the world made
    content_fps: float

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def render_to_file(
    plan: ReplayPlan,
    out: str | os.PathLike,
    rec_cfg: Any = None,
    *,
    world: Any = None,
    progress: bool = True,
) -> RenderResult:
    """Render the plan to a video plus its own session log (replayable in turn)."""
    from tqdm import tqdm

    from worldwalk.runtime.chunk import Frame

    from .recorder import Recorder, RecorderConfig

    rec_cfg = rec_cfg or RecorderConfig(preset="medium", tune=None, threads=0)
    rec_cfg.block_when_full = True  # offline: never drop, wait for the encoder
    own = world is None
    world = open_world(plan) if own else world
    t0 = time.perf_counter()
    try:
        total = plan_frames(plan, world.spec)
        header, first = header_from_world(
            world, plan.world, plan.seed, plan.camera(world.spec.width, world.spec.height), checkpoint=plan.checkpoint,
            prompt=plan.prompt, first_image=plan.first_image, world_options=plan.world_options,
            settings={"render": {"source": plan.source}},
        )
        rec = Recorder(out, rec_cfg).start(header, first)
        try:
            with tqdm(total=total, unit="frame", desc="render", disable=not progress, dynamic_ncols=True) as bar:
                index = 0
                for step, chunk in iter_render(plan, world):
                    if step.chunk_index == 0:
                        index = 0  # a reset starts the timeline again, as in the live session
                    keep = len(chunk) if step.keep is None else step.keep
                    rec.log_chunk(chunk, step.input, **({"keep": keep} if step.keep is not None else {}))
                    now = time.monotonic()
                    for i in range(keep):
                        rec.write(Frame(
                            image=chunk.frames[i], pose=chunk.poses[i], intrinsics=chunk.intrinsics[i],
                            index=index, pts=index / world.spec.fps, chunk_index=step.chunk_index,
                            generation=0, created=now,
                        ))
                        index += 1
                    bar.update(keep)
        finally:
            stats = rec.close()
    finally:
        if own:
            world.close()
    return RenderResult(str(out), stats.log_path, stats.frames_written, stats.frames_dropped,
                        time.perf_counter() - t0, (world.spec.width, world.spec.height), world.spec.fps)


__all__ = [
    "LogMismatchError",
    "ReplayError",
    "ReplayPlan",
    "ReplayStep",
    "SessionLogError",
    "check_poses",
    "iter_render",
    "load_camera_path",
    "open_world",
    "plan_from_actions",
    "plan_from_log",
    "plan_from_path",
    "plan_from_poses",
    "render_frames",
    "render_to_file",
]
