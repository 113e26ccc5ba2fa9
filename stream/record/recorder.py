"""The recorder sink: frames the player sees -> a video file, on its own encode thread.

    session (model thread) --log_chunk--> PendingLines --> <name>.jsonl   (one line per chunk, flushed per line)
    presenting sink        --write------> bounded queue --> encode thread (PyAV) --> <name>.mp4

A `Recorder` is its two halves: the video (`VideoEncoding`, video_encoding.py: the queue, the
container, the encode thread, timestamps, crash safety) and the session log (`PendingLines`,
pending_lines.py: each chunk's line waits for its frames, so the log and the video agree frame for
frame).

`write(frame)` only puts the frame in a queue and returns; the encode thread converts, encodes
and muxes. The queue is generous (`max_queue_mb`, a few seconds of video at any size) so a
recording loses nothing while the encoder catches up with a burst. If the encoder falls behind
for longer than that, the newest frame is dropped rather than stalling the player (or, with
`block_when_full`, as `worldwalk render` uses, `write` waits); drops are counted, and the
video shows the previous frame for longer because each frame keeps its own timestamp.

`close()` (also on KeyboardInterrupt through `with`, or at interpreter exit) drains the queue,
flushes the encoder and finalizes the file.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .pending_lines import PendingLines
from .session_log import SessionHeader, SessionLogWriter, reclaim_lock
from .video_encoding import STOP, VideoEncoding, codec_for

log = logging.getLogger(__name__)


class RecorderError(RuntimeError):
    pass


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


class Recorder(VideoEncoding):
    """Records frames to a video file and chunks to the session log beside it.

    `start(header)` opens both; `write(frame)` from the presenting sink (any thread, never
    blocks unless `block_when_full`); `log_chunk(chunk, input_state)` from the session listener;
    `close()` finalizes. Usable as a context manager.
    """

    def __init__(self, path: str | os.PathLike, cfg: RecorderConfig | None = None) -> None:
        self.cfg = cfg or RecorderConfig()
        self.path = Path(path)
        self.format, self.encoder = codec_for(self.path, self.cfg.codec)
        self.log_path = self.path.with_suffix(".jsonl") if self.cfg.write_log else None
        self.frames_written = 0
        self.frames_dropped = 0
        self.encode_cpu_s = 0.0
        self.error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._log: SessionLogWriter | None = None
        self._lines: PendingLines | None = None  # the log's lines waiting for their frames
        self._closed = False
        self._started = False
        self._lock = threading.Lock()

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
            self._lines = PendingLines(self._log)
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
        self._queue.put(STOP)  # blocks only while the queue is full: the encoder is draining it
        self._thread.join(timeout)
        self.frames_dropped += self._queue.qsize()  # written while closing: never encoded
        if self._log is not None:
            if self._lines is not None:
                self._lines.flush()
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
        if self._lines is not None and self._lines.waiting():
            try:
                self._lines.presented(frame, accepted)
            except Exception as e:  # the log cannot be written (a full disk): the recording stops, the walk goes on
                log.error("recorder: writing the log %s failed: %s", self.log_path, e)
                self.error = self.error or e
        return accepted

    def log_chunk(self, chunk: Any, input_state: Any = None, frames: Any = None, **extra: Any) -> None:
        """The session listener `(chunk, input_state, frames)`: one log line for the chunk (called on
        the model thread). With the session's `frames`, the line waits until the sink has presented
        them (see pending_lines); without (render), it is written at once. `extra` adds fields to
        the line (render writes `keep` for a padded last chunk)."""
        if self._lines is None or self._closed:
            return
        self._lines.chunk(chunk, input_state, frames, extra)

    def log_event(self, kind: str, **data: Any) -> None:
        """A session event for the replay: "reset" or "rewind" (to_chunk=k), kept in order with the chunks."""
        if self._lines is None or self._closed:
            return
        self._lines.event(kind, data)

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
