"""A session's frames as WebRTC video: one paced fan-out per session, one track per guest.

`FrameFanout` takes frames out of the session's `FrameQueue` through a `FramePacer`, so they
leave at the content frame rate rather than in chunk-sized bursts, and publishes the latest
one to every subscriber: the player's track and any spectators' tracks. A slow guest skips to
the newest frame; it never holds the others back. `SessionVideoTrack.recv()` awaits the next
published frame and stamps `pts`/`time_base` (90 kHz) from the wall time the pacer released it,
which follows the content timeline and stays monotonic across resets and stalls.

Optionally a barcode of the frame number is drawn along the top rows (`stamp_barcode`): the
browser reads it back to report which frame it shows and when, for tests and latency figures.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from worldwalk.runtime.chunk import Frame
from worldwalk.runtime.frame_queue import FrameQueue
from worldwalk.runtime.pacer import FramePacer

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

# Barcode: 32 cells across the top band: 4 guard cells (1010), 24 bits of the frame number
# (most significant first), 4 check bits (the 24 bits folded by XOR into a nibble).
BARCODE_CELLS = 32
BARCODE_INDEX_BITS = 24
BARCODE_GUARD = (1, 0, 1, 0)


def barcode_bits(index: int) -> list[int]:
    value = index % (1 << BARCODE_INDEX_BITS)
    bits = [(value >> (BARCODE_INDEX_BITS - 1 - i)) & 1 for i in range(BARCODE_INDEX_BITS)]
    check = 0
    for i in range(0, BARCODE_INDEX_BITS, 4):
        check ^= (value >> i) & 0xF
    return [*BARCODE_GUARD, *bits, *[(check >> (3 - i)) & 1 for i in range(4)]]


def barcode_band(width: int, height: int) -> tuple[int, int]:
    """(cell width, band height) in pixels for a frame of this size."""
    return max(1, width // BARCODE_CELLS), max(4, height // 18)


def stamp_barcode(image: np.ndarray, index: int) -> np.ndarray:
    """A copy of `image` (H, W, 3) with `index` drawn as black/white cells along the top."""
    out = image.copy()  # (H, W, 3) uint8
    h, w = out.shape[:2]
    cell, band = barcode_band(w, h)
    for i, bit in enumerate(barcode_bits(index)):
        out[:band, i * cell : (i + 1) * cell] = 255 if bit else 0
    return out


def read_barcode(image: np.ndarray) -> int | None:
    """The frame number drawn by `stamp_barcode`, or None if the band does not check out."""
    h, w = image.shape[:2]
    cell, band = barcode_band(w, h)
    y = band // 2
    bits = [int(image[y, i * cell + cell // 2].mean() > 127) for i in range(BARCODE_CELLS)]
    value = 0
    for b in bits[4 : 4 + BARCODE_INDEX_BITS]:
        value = (value << 1) | b
    return value if bits == barcode_bits(value) else None


@dataclass(frozen=True)
class SentFrame:
    """What the fan-out remembers of a published frame (for stats, tests and latency)."""

    index: int
    generation: int
    created: float  # monotonic, Frame.created
    input_time: float | None  # monotonic, Frame.input_time
    released: float  # monotonic, when the pacer let it out
    position: tuple[float, float, float]  # camera position the frame was generated at


@dataclass
class FanoutConfig:
    poll_interval: float = 0.004  # seconds between pacer polls when nothing is due
    barcode: bool = False  # draw the frame number into the pixels
    history: int = 1024  # published frames remembered in `history`


class FrameFanout:
    """Paces one session's frames and publishes the latest to all of its guests."""

    def __init__(self, queue: FrameQueue, fps: float, cfg: FanoutConfig | None = None) -> None:
        self.cfg = cfg or FanoutConfig()
        self.fps = float(fps)
        self._queue = queue
        self._pacer = FramePacer(queue, fps, on_frame=self._to_sink)
        self._cond = asyncio.Condition()
        self._seq = 0  # bumped per published frame
        self._latest: tuple[Frame, np.ndarray, float] | None = None  # frame, pixels, released
        self._closed = False
        self._task: asyncio.Task | None = None
        self.history: deque[SentFrame] = deque(maxlen=self.cfg.history)
        self.published = 0
        # every frame the pacer releases, skipped ones included (e.g. a recorder's write)
        self.on_frame: Callable[[Frame], object] | None = None

    def _to_sink(self, frame: Frame) -> None:
        if self.on_frame is None:
            return
        try:
            self.on_frame(frame)
        except Exception:  # a failing sink must not stop the video
            log.exception("frame sink failed; detaching it")
            self.on_frame = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="frame-fanout")

    async def _run(self) -> None:
        try:
            while not self._closed:
                now = time.monotonic()
                frame = self._pacer.poll(now)
                if frame is None:
                    if self._queue.closed:
                        break
                    await asyncio.sleep(self.cfg.poll_interval)
                    continue
                image = stamp_barcode(frame.image, frame.index) if self.cfg.barcode else frame.image
                position = tuple(float(v) for v in frame.pose[:3, 3])
                self.history.append(SentFrame(frame.index, frame.generation, frame.created,
                                              frame.input_time, now, position))
                async with self._cond:
                    self._latest = (frame, image, now)
                    self._seq += 1
                    self.published += 1
                    self._cond.notify_all()
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self._closed = True
        async with self._cond:
            self._cond.notify_all()

    async def next(self, after_seq: int) -> tuple[int, Frame, np.ndarray, float]:
        """The first frame published after `after_seq`: (seq, frame, pixels, released time)."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or self._seq > after_seq)
            if self._latest is None or self._seq <= after_seq:
                raise MediaStreamError("the session's video ended")
            frame, image, released = self._latest
            return self._seq, frame, image, released

    @property
    def latest(self) -> Frame | None:
        return self._latest[0] if self._latest else None

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._finish()
        self._latest = None
        self._pacer.on_frame = None  # the pacer's hook back to this fan-out: a cycle otherwise
        self.on_frame = None


class SessionVideoTrack(MediaStreamTrack):
    """A video track that sends a session's frames as the fan-out releases them."""

    kind = "video"

    def __init__(self, fanout: FrameFanout) -> None:
        super().__init__()
        self._fanout: FrameFanout | None = fanout
        self._seq = 0
        self._start: float | None = None
        self._last_pts = -1
        self.sent = 0

    def stop(self) -> None:
        super().stop()
        # the peer connection's sender keeps its track until the collector frees the closed peer's
        # cycles; it need not keep the fan-out (and its frames) as well
        self._fanout = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live" or self._fanout is None:
            raise MediaStreamError("track ended")
        self._seq, frame, image, released = await self._fanout.next(self._seq)
        if self._start is None:
            self._start = released
        # the RTP clock follows the wall time of release: the browser's jitter buffer sees
        # true timing, and a stall or a reset never sends the clock backwards
        pts = max(self._last_pts + 1, round((released - self._start) * VIDEO_CLOCK_RATE))
        self._last_pts = pts
        video = av.VideoFrame.from_ndarray(image, format="rgb24")
        video.pts = pts
        video.time_base = VIDEO_TIME_BASE
        self.sent += 1
        return video
