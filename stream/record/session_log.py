"""The session log: `<name>.jsonl` beside a recording, from which `worldwalk render` replays it.

One JSON object per line, written line-buffered and flushed per line so a killed process leaves
every finished line on disk:

    {"type": "header", "format": "worldwalk-session", "format_version": 1,
     "worldwalk_version": "0.1.0", "world": "reference", "model": "reference", "label": "...",
     "checkpoint": null, "checkpoint_hash": null, "seed": 0, "width": 256, "height": 144,
     "fps": 16.0, "frames_per_chunk": 4, "first_chunk_frames": 4, "device": "cpu",
     "dtype": "float32", "intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
     "prompt": null, "first_image": null, "first_image_hash": null,
     "world_options": {}, "settings": {...}, "video": "out.mp4", "created": "2025-...Z"}
    {"type": "chunk", "index": 0, "t": 0.41, "input": {"keys": ["w"], "mouse_dx": 0.0, ...},
     "poses": [[[r00, r01, r02, tx], ...], ...], "timings": {"total": 0.02}}
    {"type": "event", "kind": "reset", "t": 3.2}
    ...
    {"type": "end", "t": 9.7, "chunks": 40, "frames_written": 160, "frames_dropped": 0}

Poses are camera-to-world 4x4 float64; Python's JSON writes floats with `repr`, which reads back
to the same float64, so a replay feeds the world exactly the poses the live session did. A
chunk line carries `intrinsics` only when they differ from the header's. The `end` line is
missing when the process was killed; readers accept that, and a torn last line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldwalk.runtime.safe_files import open_regular

from .log_schema import MAX_LINE_BYTES, MAX_LINES, SchemaError, check_line

FORMAT = "worldwalk-session"
FORMAT_VERSION = 1

# Checkpoints at most this big are hashed in full; bigger ones are fingerprinted (see below).
FULL_HASH_LIMIT = 256 * 2**20
_SAMPLE = 2**20


class SessionLogError(ValueError):
    """A session log that cannot be read: names the file, the line and the fix."""


def worldwalk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("worldwalk")
    except PackageNotFoundError:
        return "unknown"


def image_hash(image: np.ndarray) -> str:
    """sha256 of an image's shape, dtype and bytes."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def checkpoint_hash(path: str | os.PathLike | None) -> str | None:
    """A hash of a checkpoint file or folder (file names and contents, in sorted order).

    Up to FULL_HASH_LIMIT bytes in total it is the sha256 of everything ("sha256:..."). Bigger
    checkpoints (multi-GB SANA-WM folders) would take many seconds to hash at every start, so
    they get a fingerprint of each file's name, size, first and last MiB ("sampled-sha256:...").
    """
    if path is None:
        return None
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"checkpoint {root} does not exist; pass an existing file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    full = total <= FULL_HASH_LIMIT
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(root) if p != root else p.name}\0{size}\0".encode())
        with open_regular(p) as f:  # the files were regular a moment ago: never a FIFO swapped in since
            if full or size <= 2 * _SAMPLE:
                for block in iter(lambda f=f: f.read(2**20), b""):
                    h.update(block)
            else:
                h.update(f.read(_SAMPLE))
                f.seek(size - _SAMPLE)
                h.update(f.read(_SAMPLE))
    return ("sha256:" if full else "sampled-sha256:") + h.hexdigest()


def _jsonable(v: Any) -> Any:
    """Settings and input states as plain JSON values (dataclasses, paths, arrays, sets)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (frozenset, set)):
        return sorted(_jsonable(x) for x in v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def input_state_to_dict(state: Any) -> dict | None:
    """An `InputState` (or a dict, or None) as a JSON object; key names sorted."""
    if state is None:
        return None
    return _jsonable(state)


@dataclass
class SessionHeader:
    """What the header line records. `settings` is free-form (session, integrator, sink configs)."""

    world: str  # registered world name (the `worldwalk.worlds` entry point)
    model: str  # ModelSpec.name
    fps: float
    width: int
    height: int
    frames_per_chunk: int
    first_chunk_frames: int
    seed: int
    intrinsics: np.ndarray  # (3, 3)
    label: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: str | None = None
    checkpoint_hash: str | None = None
    prompt: str | None = None
    first_image: str | None = None  # file name of the first image (.npy) beside the log
    first_image_hash: str | None = None
    world_options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    video: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {
            "type": "header",
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "worldwalk_version": worldwalk_version(),
        }
        d.update({k: _jsonable(v) for k, v in dataclasses.asdict(self).items()})
        d["intrinsics"] = np.asarray(self.intrinsics, dtype=np.float64).tolist()
        d["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return d


def header_from_world(
    world: Any,
    world_name: str,
    seed: int,
    intrinsics: np.ndarray,
    *,
    checkpoint: str | os.PathLike | None = None,
    prompt: str | None = None,
    first_image: np.ndarray | None = None,
    world_options: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[SessionHeader, np.ndarray | None]:
    """A header from a world (anything with a `spec: ModelSpec`). Returns it with the first image,
    which the writer saves beside the log so a replay can feed the world the same one."""
    spec = world.spec
    header = SessionHeader(
        world=world_name,
        model=spec.name,
        label=spec.label,
        fps=float(spec.fps),
        width=int(spec.width),
        height=int(spec.height),
        frames_per_chunk=int(spec.frames_per_chunk),
        first_chunk_frames=int(spec.first_chunk_frames),
        device=str(spec.device),
        dtype=str(spec.dtype),
        seed=int(seed),
        intrinsics=np.asarray(intrinsics, dtype=np.float64).reshape(3, 3),
        checkpoint=os.fspath(checkpoint) if checkpoint is not None else None,
        checkpoint_hash=checkpoint_hash(checkpoint),
        prompt=prompt,
        first_image_hash=image_hash(first_image) if first_image is not None else None,
        world_options=dict(world_options or {}),
        settings=dict(settings or {}),
    )
    return header, first_image


class SessionLogWriter:
    """Writes a session log. Thread-safe: chunks arrive on the model thread, the end on close."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", buffering=1, encoding="utf-8")  # line-buffered
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._intrinsics: np.ndarray | None = None
        self.chunks = 0

    def _line(self, obj: Mapping[str, Any]) -> None:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(text + "\n")
                self._file.flush()
            except OSError:  # a full disk: the log ends here, its file is closed, the caller is told
                with contextlib.suppress(OSError):
                    self._file.close()
                raise

    def write_header(self, header: SessionHeader, first_image: np.ndarray | None = None) -> None:
        if first_image is not None:
            name = self.path.with_suffix(".first.npy")
            np.save(name, np.ascontiguousarray(first_image))
            header.first_image = name.name
            header.first_image_hash = image_hash(first_image)
        self._intrinsics = np.asarray(header.intrinsics, dtype=np.float64).reshape(3, 3)
        self._line(header.to_json())

    def write_chunk(self, chunk: Any, input_state: Any = None, **extra: Any) -> None:
        """One chunk: its index, the input state it was made with, its poses and timings."""
        poses = np.asarray(chunk.poses, dtype=np.float64)  # (F, 4, 4)
        line: dict[str, Any] = {
            "type": "chunk",
            "index": int(chunk.index),
            "t": round(time.monotonic() - self._t0, 6),
            "input": input_state_to_dict(input_state),
            "poses": poses.tolist(),
            "timings": {k: float(v) for k, v in dict(chunk.timings).items()},
        }
        k = np.asarray(chunk.intrinsics, dtype=np.float64)  # (F, 3, 3)
        if self._intrinsics is None or not np.array_equal(k, np.broadcast_to(self._intrinsics, k.shape)):
            line["intrinsics"] = k.tolist()
        actions = getattr(chunk, "actions", None)
        if actions:  # an action world's per-frame actions: the replay steers it with these
            line["actions"] = {k: np.asarray(v, np.float64).tolist() for k, v in actions.items() if v is not None}
        line.update({key: _jsonable(v) for key, v in extra.items()})
        self._line(line)
        self.chunks += 1

    def write_copied(self, header: Mapping[str, Any], lines: list[dict[str, Any]]) -> None:
        """Start with another log's header and chunk/event lines as they are (a recording that goes
        on in another process: stream/record/recording_resume.py); later lines follow them, their `t`
        going on from the last one's."""
        self._intrinsics = np.asarray(header["intrinsics"], dtype=np.float64).reshape(3, 3)
        self._line(header)
        for line in lines:
            self._line(line)
        self.chunks += sum(1 for line in lines if line.get("type") == "chunk")
        last_t = max((float(line.get("t") or 0.0) for line in lines), default=0.0)
        self._t0 = time.monotonic() - last_t

    def write_event(self, kind: str, **data: Any) -> None:
        """A session event a replay must follow: "reset" (world.reset, same seed unless `seed`
        given) or "rewind" (`to_chunk`: the next chunk index after restoring)."""
        line = {"type": "event", "kind": kind, "t": round(time.monotonic() - self._t0, 6)}
        line.update({key: _jsonable(v) for key, v in data.items()})
        self._line(line)

    def close(self, **summary: Any) -> None:
        if self._file.closed:
            return
        reclaim_lock(self._lock)
        line = {"type": "end", "t": round(time.monotonic() - self._t0, 6), "chunks": self.chunks}
        line.update({key: _jsonable(v) for key, v in summary.items()})
        try:
            self._line(line)
        finally:
            with self._lock, contextlib.suppress(OSError):
                self._file.close()  # closed even when the disk is full


def reclaim_lock(lock: Any, seconds: float = 2.0) -> None:
    """Free a lock orphaned by Ctrl-C, so closing a recording never hangs.

    A KeyboardInterrupt that lands between a lock's acquire and the `with` block that would release it
    (CPython checks signals between the two) leaves the lock held by nobody. Our writers hold their
    locks for microseconds: a lock still held after `seconds` is such an orphan and is released.
    """
    lock.acquire(timeout=seconds)  # ours now, or an orphan that nobody would release
    try:
        lock.release()
    except RuntimeError:  # its holder released it after all
        pass


@dataclass
class SessionLog:
    """A log as read back: the header, then chunk and event lines in order, and the end line."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]]  # "chunk" and "event" lines, in file order
    end: dict[str, Any] | None  # None when the recording was cut off (killed)
    truncated: bool = False  # the last line was torn (process killed mid-write)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == "chunk"]


def read_log(path: str | os.PathLike) -> SessionLog:
    """Read a session log line by line, each line checked against the schema (log_schema.py).

    Raises SessionLogError naming the file, the line and the field. Lines are capped at
    MAX_LINE_BYTES and their count at MAX_LINES, so memory stays bounded whatever the file holds.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"session log {p} does not exist; pass the .jsonl written beside a recording")
    if p.suffix in (".mp4", ".webm", ".mkv"):
        raise SessionLogError(f"{p} is a video; pass its session log instead: {p.with_suffix('.jsonl')}")
    if not p.is_file():
        raise SessionLogError(f"{p} is not a file; pass the .jsonl written beside a recording")
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    end = None
    truncated = False
    with open_regular(p) as f:
        n = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            n += 1
            if n > MAX_LINES:
                raise SessionLogError(f"{p}:{n}: the log has more than {MAX_LINES} lines")
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise SessionLogError(f"{p}:{n}: the line is longer than {MAX_LINE_BYTES} bytes; "
                                      "this is not a worldwalk session log line")
            if not raw.strip():
                continue
            last = not raw.endswith(b"\n") or not f.peek(1)
            try:
                obj = json.loads(raw)
            except RecursionError:
                raise SessionLogError(f"{p}:{n}: the JSON is nested too deep for a session log line") from None
            except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
                if last and n > 1:  # torn last line: the process was killed mid-write
                    truncated = True
                    break
                if n == 1:
                    raise SessionLogError(f"{p}:1: not a worldwalk session log (its first line is not JSON)") from None
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
                raise SessionLogError(f"{p}:{n}: not JSON ({msg}); is this a worldwalk session log?") from None
            if n == 1 and not (isinstance(obj, dict) and obj.get("type") == "header" and obj.get("format") == FORMAT):
                raise SessionLogError(f"{p}:1: not a worldwalk session log (its first line is no '{FORMAT}' header)")
            if n == 1 and obj.get("format_version") != FORMAT_VERSION:
                raise SessionLogError(
                    f"{p}: log format version {obj.get('format_version')!r:.40}, this worldwalk reads "
                    f"version {FORMAT_VERSION}; render it with the worldwalk that wrote it "
                    f"({str(obj.get('worldwalk_version'))[:40]})"
                )
            try:
                kind = check_line(obj, first=header is None)
            except SchemaError as e:
                raise SessionLogError(f"{p}:{n}: {e}") from None
            if kind == "header":
                header = obj
            elif kind == "end":
                end = obj
            else:
                records.append(obj)
    if header is None:
        raise SessionLogError(f"{p} is empty; it is not a worldwalk session log")
    return SessionLog(path=p, header=header, records=records, end=end, truncated=truncated)
