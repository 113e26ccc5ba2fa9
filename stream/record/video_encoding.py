"""A recorder's encode side: frames from its queue -> converted, encoded and muxed into the video file.

The encode thread runs at a lower priority (`nice`, Linux threads have their own) so that on a
busy CPU the model thread goes first and the encoder works through the queue in the gaps.

Timestamps: pts = Frame.pts in a time base of 1/fps (or 1001/30000-style rationals for NTSC
rates), relative to the first frame. After a rewind or reset the session's pts can go back; the
recording keeps running forward (the player saw the frames one after another), so a frame whose
pts would not advance is placed one frame after the previous one and later ones follow it.

Crash safety: MP4 is written fragmented (`frag_keyframe+empty_moov+default_base_moof`) with a
keyframe every `keyframe_seconds`, and every packet is flushed to the OS (`flush_packets`): a
process killed with SIGKILL leaves a file that plays up to its last complete fragment. WebM
(VP9) clusters are flushed the same way. The file is written through `_WholeWrites`, so a full
disk fails the recording instead of leaving a truncated video that looks complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STOP = object()  # put in the queue: the encode thread finishes the file and ends


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


def codec_for(path: Path, codec: str) -> tuple[str, str]:
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


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoEncoding:
    """The video half of a `Recorder` (its other half, the session log, is `PendingLines`): the frame
    queue, the container and the encode thread. Uses the recorder's `cfg` (RecorderConfig), `path`,
    `format`, `encoder`, `fps`, `width`, `height`, and counts into its `frames_written`, `encode_cpu_s`
    and `error`."""

    cfg: Any
    path: Path
    format: str
    encoder: str
    fps: float
    width: int
    height: int
    frames_written: int
    encode_cpu_s: float
    error: BaseException | None
    _queue: queue.Queue | None

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
                if item is STOP:
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
