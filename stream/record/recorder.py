"""The recorder sink: frames the player sees -> a video file, on its own encode thread.

    session (model thread) --log_chunk--> <name>.jsonl   (one line per chunk, flushed per line)
    presenting sink        --write------> bounded queue --> encode thread (PyAV) --> <name>.mp4

`write(frame)` only puts the frame in a queue and returns; the encode thread converts, encodes
and muxes. The queue is generous (`max_queue_mb`, a few seconds of video at any size) so a
recording loses nothing while the encoder catches up with a burst. If the encoder falls behind
for longer than that, the newest frame is dropped rather than stalling the player (or, with
`block_when_full`, as `worldwalk render` uses, `write` waits); drops are counted, and the
video shows the previous frame for longer because each frame keeps its own timestamp.

The log and the video agree frame for frame. A chunk's log line waits until its frames reach the
video: when the sink moves on to a later chunk (or a later session generation, after a reset or a
rewind) or the recording closes, the line is written with `keep` = the frames of it the video holds
when that is not all of them. Chunks of which the player saw nothing at the end of a walk (the one
the model made ahead when the player quit or rewound) are left out of the log: the replay never
needs them, and a replay of the log renders the same frames the video holds.

Timestamps: pts = Frame.pts in a time base of 1/fps (or 1001/30000-style rationals for NTSC
rates), relative to the first frame. After a rewind or reset the session's pts can go back; the
recording keeps running forward (the player saw the frames one after another), so a frame whose
pts would not advance is placed one frame after the previous one and later ones follow it.

The encode thread runs at a lower priority (`nice`, Linux threads have their own) so that on a
busy CPU the model thread goes first and the encoder works through the queue in the gaps.

Crash safety: MP4 is written fragmented (`frag_keyframe+empty_moov+default_base_moof`) with a
keyframe every `keyframe_seconds`, and every packet is flushed to the OS (`flush_packets`): a
process killed with SIGKILL leaves a file that plays up to its last complete fragment. WebM
(VP9) clusters are flushed the same way. `close()` (also on KeyboardInterrupt through `with`, or
at interpreter exit) drains the queue, flushes the encoder and finalizes the file.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .session_log import SessionHeader, SessionLogWriter, reclaim_lock

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Pending:
    """A log line waiting for the video: a chunk (until its frames are written) or an event."""

    chunk: Any = None  # None: an event
    input_state: Any = None
    extra: dict[str, Any] | None = None
    generation: int = 0
    size: int = 0  # frames in the chunk
    offered: int = 0  # frames of it the sink presented
    written: int = 0  # of those, frames the video took (not dropped)


class RecorderError(RuntimeError):
    pass


class _WholeWrites:
    """The video file as the muxer writes it: every write puts all its bytes on disk or raises.

    FFmpeg's own file output takes a short write (the disk filled mid-write) for a whole one: when
    the last fragment at close is cut short, the muxer never hears of it and a truncated video
    looked complete. Written through this, the rest of the write fails with ENOSPC and the
    recording says so. Seekable like the file, so the muxers write the same bytes."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close(), after the muxer's own close

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += self._f.write(view[done:])  # after a short write, the next one raises (ENOSPC)
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


@dataclass
class RecorderConfig:
    codec: str = "auto"  # "h264" (libx264 in MP4), "vp9" (libvpx-vp9 in WebM); auto: by suffix
    crf: int | None = None  # quality; None: 20 for H.264, 32 for VP9 (lower is better, bigger)
    preset: str = "ultrafast"  # libx264 speed preset; live: cheapest CPU (render re-encodes finer)
    tune: str | None = "zerolatency"  # libx264: no lookahead, so packets leave as frames arrive
    vp9_cpu_used: int = 8  # libvpx speed (deadline=realtime); 5..8 are realtime settings
    keyframe_seconds: float = 1.0  # GOP length = fragment length: what a SIGKILL can cost
    threads: int = 1  # encoder threads; 0 = auto. One keeps the encoder off the model's cores
    nice: int = 10  # the encode thread's nice value (Linux): under contention the model goes first
    max_queue_mb: float = 256.0  # frames waiting for the encoder, in MiB of RGB
    min_queue_frames: int = 32
    block_when_full: bool = False  # False: drop (and count) frames; True: write() waits
    write_log: bool = True  # the session log <name>.jsonl beside the video


@dataclass
class RecorderStats:
    frames_written: int
    frames_dropped: int
    frames_queued: int
    chunks_logged: int
    encode_cpu_s: float  # CPU time the encode thread spent converting, encoding and muxing
    path: str
    log_path: str | None


def _codec_for(path: Path, codec: str) -> tuple[str, str]:
    """(container format, encoder name) for an output path: .webm -> WebM, .mkv -> Matroska,
    anything else -> MP4."""
    suffix = path.suffix.lower()
    fmt = {".webm": "webm", ".mkv": "matroska"}.get(suffix, "mp4")
    if codec == "auto":
        codec = "vp9" if fmt == "webm" else "h264"
    if codec not in ("h264", "libx264", "vp9", "libvpx-vp9"):
        raise ValueError(f"unknown recorder codec {codec!r}; use 'h264' (MP4) or 'vp9' (WebM)")
    encoder = "libx264" if codec in ("h264", "libx264") else "libvpx-vp9"
    if fmt == "webm" and encoder == "libx264":
        raise ValueError(f"{path}: WebM cannot hold H.264; name the file .mp4, or record VP9 (codec 'vp9')")
    return fmt, encoder


def next_recording_path(directory: str | os.PathLike, stem: str = "session", suffix: str = ".mp4") -> Path:
    """A fresh file name in `directory` for `serve --record-dir` (one recording per session):
    DIR/session-20250101-120000.mp4, with -2, -3, ... if taken."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = d / f"{base}{suffix}", 1
    while path.exists() or path.with_suffix(".jsonl").exists():
        n += 1
        path = d / f"{base}-{n}{suffix}"
    path.touch()  # claim it, so a session starting in the same second gets the next name
    return path


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class Recorder:
    """Records frames to a video file and chunks to the session log beside it.

    `start(header)` opens both; `write(frame)` from the presenting sink (any thread, never
    blocks unless `block_when_full`); `log_chunk(chunk, input_state)` from the session listener;
    `close()` finalizes. Usable as a context manager.
    """

    def __init__(self, path: str | os.PathLike, cfg: RecorderConfig | None = None) -> None:
        self.cfg = cfg or RecorderConfig()
        self.path = Path(path)
        self.format, self.encoder = _codec_for(self.path, self.cfg.codec)
        self.log_path = self.path.with_suffix(".jsonl") if self.cfg.write_log else None
        self.frames_written = 0
        self.frames_dropped = 0
        self.encode_cpu_s = 0.0
        self.error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._log: SessionLogWriter | None = None
        self._closed = False
        self._started = False
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []  # log lines in order, waiting for their frames
        self._pending_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(
        self, header: SessionHeader | dict[str, Any], first_image: np.ndarray | None = None
    ) -> Recorder:
        """Open the video and the log. `header`: a SessionHeader (see session_log), or a dict
        with at least fps, width and height (then no log header is written from it)."""
        if self._started:
            raise RecorderError("Recorder.start() called twice; make one Recorder per recording")
        h = header if isinstance(header, dict) else {
            "fps": header.fps, "width": header.width, "height": header.height
        }
        self.fps = float(h["fps"])
        self.width, self.height = int(h["width"]), int(h["height"])
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"recording needs an even frame size for yuv420p, got {self.width}x{self.height}; "
                "choose an even width and height"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue = self._frame_queue()
        self._open_container()  # in the caller's thread: a bad path or codec fails here, loudly
        if not isinstance(header, SessionHeader):
            self.log_path = None  # a bare dict says too little for a replayable log
        if self.log_path is not None:
            assert isinstance(header, SessionHeader)
            self._log = SessionLogWriter(self.log_path)
            header.video = self.path.name
            header.settings = {**header.settings, "recorder": self.cfg}
            self._log.write_header(header, first_image)
        self._thread = threading.Thread(target=self._encode_loop, name="recorder-encode", daemon=True)
        self._started = True
        self._thread.start()
        _open_recorders.add(self)
        return self

    def close(self, timeout: float | None = None) -> RecorderStats:
        """Drain the queue, flush the encoder, finalize the file and the log. Idempotent."""
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return self.stats()
            self._closed = True
        assert self._queue is not None and self._thread is not None
        reclaim_lock(self._queue.mutex)  # a Ctrl-C inside write() may have left it held
        self._queue.put(_STOP)  # blocks only while the queue is full: the encoder is draining it
        self._thread.join(timeout)
        self.frames_dropped += self._queue.qsize()  # written while closing: never encoded
        if self._log is not None:
            with self._pending_lock:
                self._settle(len(self._pending))
            self._log.close(frames_written=self.frames_written, frames_dropped=self.frames_dropped)
        _open_recorders.discard(self)
        if self.error is not None:
            raise RecorderError(f"recording to {self.path} failed: {self.error}") from self.error
        return self.stats()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hot path --------------------------------------------------------------------------

    def write(self, frame: Any) -> bool:
        """Queue a frame (a runtime.chunk.Frame) for encoding. Never blocks (unless
        `block_when_full`); returns False when the frame was dropped. The frame's image must not
        be changed afterwards (frames are immutable by convention; nothing is copied here)."""
        if self._closed or not self._started or self.error is not None:
            self.frames_dropped += 1
            return False
        assert self._queue is not None
        try:
            self._queue.put(frame, block=self.cfg.block_when_full)
            accepted = True
        except queue.Full:
            self.frames_dropped += 1
            if self.frames_dropped == 1 or self.frames_dropped % 100 == 0:
                log.warning("recorder: encoder behind, %d frame(s) dropped so far", self.frames_dropped)
            accepted = False
        if self._pending:
            try:
                self._count(frame, accepted)
            except Exception as e:  # the log cannot be written (a full disk): the recording stops, the walk goes on
                log.error("recorder: writing the log %s failed: %s", self.log_path, e)
                self.error = self.error or e
        return accepted

    def log_chunk(self, chunk: Any, input_state: Any = None, frames: Any = None, **extra: Any) -> None:
        """The session listener `(chunk, input_state, frames)`: one log line for the chunk (called on
        the model thread). With the session's `frames`, the line waits until the sink has presented
        them (see the module doc); without (render), it is written at once. `extra` adds fields to
        the line (render writes `keep` for a padded last chunk)."""
        if self._log is None or self._closed:
            return
        if not frames:
            with self._pending_lock:
                self._settle(len(self._pending))
                self._log.write_chunk(chunk, input_state, **extra)
            return
        entry = _Pending(chunk, input_state, extra, int(getattr(frames[0], "generation", 0)), len(frames))
        with self._pending_lock:
            self._pending.append(entry)

    def log_event(self, kind: str, **data: Any) -> None:
        """A session event for the replay: "reset" or "rewind" (to_chunk=k), kept in order with the chunks."""
        if self._log is None or self._closed:
            return
        with self._pending_lock:
            self._pending.append(_Pending(extra={"kind": kind, **data}))
            if all(p.chunk is None for p in self._pending):
                self._settle(len(self._pending))

    def _count(self, frame: Any, accepted: bool) -> None:
        """The sink presented `frame`: count it against its chunk's line; lines the sink has moved past are written."""
        generation, index = getattr(frame, "generation", None), getattr(frame, "chunk_index", None)
        with self._pending_lock:
            for i, p in enumerate(self._pending):
                if p.chunk is not None and p.generation == generation and p.chunk.index == index:
                    p.offered += 1
                    p.written += int(accepted)
                    self._settle(i + 1 if p.offered >= p.size else i)
                    return

    def _settle(self, n: int) -> None:
        """Write the first `n` pending lines (under `_pending_lock`). A chunk line carries `keep` when the
        video holds only some of its frames; chunks of a generation after whose last presented frame
        nothing of theirs was presented are dropped (the model made them ahead; the player never saw them)."""
        head, self._pending = self._pending[:n], self._pending[n:]
        seen: dict[int, int] = {}  # generation -> position of its last chunk with a presented frame
        for i, p in enumerate(head):
            if p.chunk is not None and p.offered:
                seen[p.generation] = i
        for i, p in enumerate(head):
            if p.chunk is None:
                assert p.extra is not None
                data = dict(p.extra)
                self._log.write_event(data.pop("kind"), **data)
            elif i <= seen.get(p.generation, -1) or self._pending_has(p):
                extra = dict(p.extra or {})
                if p.written < p.size:
                    extra["keep"] = p.written
                self._log.write_chunk(p.chunk, p.input_state, **extra)

    def _pending_has(self, p: _Pending) -> bool:
        """Whether a later line of `p`'s generation is still pending (then `p` is not at the end of it)."""
        return any(q.chunk is not None and q.generation == p.generation and q.offered for q in self._pending)

    def stats(self) -> RecorderStats:
        return RecorderStats(
            frames_written=self.frames_written,
            frames_dropped=self.frames_dropped,
            frames_queued=self._queue.qsize() if self._queue is not None else 0,
            chunks_logged=self._log.chunks if self._log is not None else 0,
            encode_cpu_s=self.encode_cpu_s,
            path=str(self.path),
            log_path=str(self.log_path) if self.log_path else None,
        )

    # -- encode thread ---------------------------------------------------------------------

    def _frame_queue(self) -> queue.Queue:
        """The encoder's queue of frames: at least min_queue_frames, else as many as fit in max_queue_mb."""
        frame_bytes = self.width * self.height * 3
        return queue.Queue(maxsize=max(self.cfg.min_queue_frames, int(self.cfg.max_queue_mb * 2**20 // frame_bytes)))

    def _open_container(self) -> None:
        import av

        cfg = self.cfg
        options = {"flush_packets": "1"}
        if self.format == "mp4":
            options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        self._file = _WholeWrites(self.path)
        try:
            self._container = av.open(self._file, "w", format=self.format, options=options)
        except BaseException:
            self._file.close()
            raise
        rate = _rate(self.fps)
        if self.encoder == "libx264":
            opts = {"crf": str(20 if cfg.crf is None else cfg.crf), "preset": cfg.preset}
            if cfg.tune:
                opts["tune"] = cfg.tune
        else:
            opts = {
                "crf": str(32 if cfg.crf is None else cfg.crf),
                "b": "0",
                "deadline": "realtime",
                "cpu-used": str(cfg.vp9_cpu_used),
                "lag-in-frames": "0",
                "row-mt": "1",
            }
        stream = self._container.add_stream(self.encoder, rate=rate, options=opts)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        self._time_base = 1 / rate
        stream.codec_context.time_base = self._time_base
        stream.codec_context.gop_size = max(1, round(cfg.keyframe_seconds * self.fps))
        stream.codec_context.thread_count = cfg.threads
        self._stream = stream
        self._pts0: float | None = None
        self._last_pts = -1

    def _pts(self, frame: Any) -> int:
        """Frame.pts (s) -> stream ticks, relative to the first frame, strictly increasing."""
        t = float(getattr(frame, "pts", self.frames_written / self.fps))
        if self._pts0 is None:
            self._pts0 = t
        pts = round((t - self._pts0) / self._time_base)
        if pts <= self._last_pts:  # rewind/reset: continue one frame after the previous
            pts = self._last_pts + max(1, round(1 / (self.fps * self._time_base)))
            self._pts0 = t - pts * float(self._time_base)
        self._last_pts = pts
        return pts

    def _encode(self, frame: Any) -> None:
        import av

        image = getattr(frame, "image", frame)  # (H, W, 3) uint8 RGB
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if (vf.width, vf.height) != (self.width, self.height):
            vf = vf.reformat(width=self.width, height=self.height)
        vf.pts = self._pts(frame)
        vf.time_base = self._time_base
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def _encode_loop(self) -> None:
        assert self._queue is not None
        if self.cfg.nice and hasattr(os, "setpriority"):
            # Linux nice is per thread: only this thread (and the encoder threads it starts) yields
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.cfg.nice)
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if self.error is None:
                    try:
                        t0 = time.thread_time()
                        self._encode(item)
                        self.encode_cpu_s += time.thread_time() - t0
                    except Exception as e:  # keep draining so writers and close() never hang
                        self.error = e
                        log.error("recorder: encoding to %s failed: %s", self.path, e)
        finally:
            try:
                if self.error is None:
                    for packet in self._stream.encode(None):
                        self._container.mux(packet)
            except Exception as e:
                self.error = self.error or e
            finally:
                try:  # the file is closed even when its trailer cannot be written (a full disk)
                    self._container.close()
                except Exception as e:
                    self.error = self.error or e
                finally:
                    self._file.close()


# Recorders still open at interpreter exit are finalized (an uncaught exception, sys.exit).
_open_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _close_open_recorders() -> None:
    for r in list(_open_recorders):
        try:
            r.close(timeout=30)
        except Exception as e:
            log.error("recorder: closing %s at exit failed: %s", r.path, e)


# -- wiring into a session ------------------------------------------------------------------


def attach_recorder(
    session: Any,
    path: str | os.PathLike,
    cfg: RecorderConfig | None = None,
    *,
    world_cfg: Any = None,
    header: SessionHeader | None = None,
    first_image: np.ndarray | None = None,
    consume: bool = False,
) -> Recorder:
    """Start a Recorder for a session: registers the chunk and event listeners (the log) and returns it.

    Frames: the presenting sink (window, WebRTC track) calls `recorder.write(frame)` for each
    new frame it presents, once per content frame, so the video is exactly what the player saw.
    With `consume=True` (headless: no window), a pump thread takes frames from
    `session.frames` itself and writes them all; do not combine that with another consumer.
    Call `recorder.close()` when the session ends (Ctrl-C included: put it in a `finally`).
    Pass `world_cfg` (the WorldConfig the world was made from) so the log names the registered
    world, its checkpoint and options; attach before `session.start()` so no chunk is missed.
    """
    if header is None:
        header, first_image = session_header(session, world_cfg)
    rec = Recorder(path, cfg).start(header, first_image)
    session.add_listener(rec.log_chunk)
    session.add_event_listener(rec.log_event)  # resets and rewinds, in order with the chunks
    if consume:
        threading.Thread(target=_pump, args=(session, rec), name="recorder-pump", daemon=True).start()
    return rec


def session_header(session: Any, world_cfg: Any = None) -> tuple[SessionHeader, np.ndarray | None]:
    """The log header for a Session: its world (name, checkpoint and options from `world_cfg`,
    the WorldConfig it was created with, else `world.cfg`), seed, prompt, first image,
    intrinsics and the session/integrator settings."""
    from .session_log import header_from_world

    world = session.world
    cfg = getattr(session, "cfg", None)
    world_cfg = world_cfg or getattr(world, "cfg", None)
    seed = getattr(cfg, "seed", None)
    if seed is None:
        seed = getattr(world_cfg, "seed", 0)
    intrinsics = getattr(session, "intrinsics", None)
    if intrinsics is None:
        from worldwalk.controls.camera import intrinsics_from_fov

        intrinsics = intrinsics_from_fov(world.spec.width, world.spec.height)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.ndim == 3:
        intrinsics = intrinsics[0]
    name = getattr(world_cfg, "name", None) or world.spec.name
    settings: dict[str, Any] = {}
    if cfg is not None:
        settings["session"] = cfg
    integrator = getattr(session, "integrator", None)
    if integrator is not None and hasattr(integrator, "cfg"):
        settings["integrator"] = integrator.cfg
    # the chunk-step backend asked for (a replay asks for the same to get the same frames: auto is
    # fixed per device) and what it resolved to here
    settings["accel"] = getattr(world_cfg, "accel", "none")
    settings["accel_used"] = getattr(world, "accel", "none")
    return header_from_world(
        world,
        name,
        int(seed),
        intrinsics,
        checkpoint=getattr(world_cfg, "checkpoint", None),
        prompt=getattr(cfg, "prompt", None),
        first_image=getattr(session, "first_frame", None),
        world_options=getattr(world_cfg, "options", None),
        settings=settings,
    )


def _pump(session: Any, rec: Recorder) -> None:
    """Headless: take every frame from the session's queue and record it."""
    frames = session.frames
    while not rec._closed and not frames.closed:
        frame = frames.get(timeout=0.1)  # None on timeout or when the queue closes
        if frame is not None:
            rec.write(frame)
