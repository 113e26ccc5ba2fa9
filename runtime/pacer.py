"""`FramePacer`: shows frames at the content frame rate, not at the rate chunks arrive.

Chunks arrive in bursts (a whole chunk at once, then nothing while the next one is generated).
The pacer anchors content time (`Frame.pts`) to the wall clock and hands out each frame when it
is due. It holds back `jitter_frames` of slack when it (re)starts so a slightly late chunk does
not stall the picture; when the queue runs dry it re-anchors instead of fast-forwarding later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .chunk import Frame
from .frame_queue import FrameQueue


@dataclass
class PacerConfig:
    # Slack added when (re)anchoring, in frames. 0: a chunk's first frame is shown as soon as it
    # is made (a late chunk shows as a short stall instead of as latency from then on).
    jitter_frames: int = 0


class FramePacer:
    def __init__(
        self,
        queue: FrameQueue,
        fps: float,
        cfg: PacerConfig | None = None,
        on_frame: Callable[[Frame], object] | None = None,
    ) -> None:
        """`on_frame` sees every frame the pacer takes, in order, skipped ones included: the
        recorder hooks in here so a slow display never thins the recording."""
        self.queue = queue
        self.on_frame = on_frame
        self.fps = float(fps)
        self.cfg = cfg or PacerConfig()
        self._anchor: tuple[float, float] | None = None  # (wall time, pts) of the timeline
        self._generation = -1
        self._last_due = float("-inf")
        self.shown = 0
        self.skipped = 0  # frames that were due but superseded before they could be shown

    @property
    def last_due(self) -> float:
        """The wall time the frame `poll` last returned fell due (it is shown at the next poll)."""
        return self._last_due

    def poll(self, now: float) -> Frame | None:
        """The newest frame due at wall time `now`, or None if nothing new is due (non-blocking).

        Frames that fell due together (a display slower than the content rate) are skipped
        but the newest; they are counted in `skipped`.
        """
        shown: Frame | None = None
        while (head := self.queue.peek()) is not None:
            if head.generation != self._generation:
                # reset or rewind: a fresh timeline right away
                self._generation = head.generation
                self._anchor = None
                self._last_due = float("-inf")
            if self._anchor is None:
                start = max(now + self.cfg.jitter_frames / self.fps, self._last_due + 1.0 / self.fps)
                self._anchor = (start, head.pts)
            wall0, pts0 = self._anchor
            due = wall0 + (head.pts - pts0)
            if due > now:
                break
            frame = self.queue.get(timeout=0)
            if frame is None:
                break
            if self.on_frame is not None:
                self.on_frame(frame)
            if shown is not None:
                self.skipped += 1
            shown, self._last_due = frame, due
        if shown is not None:
            self.shown += 1
        if shown is not None and self.queue.peek() is None:
            # ran dry: the next chunk starts a new timeline when it comes
            self._anchor = None
        return shown
