"""The session log's lines waiting for the video: a recording's log agrees with its video frame for frame.

A chunk's log line waits until its frames reach the video: when the sink moves on to a later chunk
(or a later session generation, after a reset or a rewind) or the recording closes, the line is
written with `keep` = the frames of it the video holds when that is not all of them. Chunks of which
the player saw nothing at the end of a walk (the one the model made ahead when the player quit or
rewound) are left out of the log: the replay never needs them, and a replay of the log renders the
same frames the video holds. Events (reset, rewind) keep their place among the chunks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .session_log import SessionLogWriter


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


class PendingLines:
    """The lines of one session log, in order, until the video holds their frames. Any thread."""

    def __init__(self, log: SessionLogWriter) -> None:
        self._log = log
        self._pending: list[_Pending] = []  # log lines in order, waiting for their frames
        self._lock = threading.Lock()

    def waiting(self) -> bool:
        """Whether a line waits (a cheap look, without the lock: the sink asks for every frame)."""
        return bool(self._pending)

    def chunk(self, chunk: Any, input_state: Any, frames: Any, extra: dict[str, Any]) -> None:
        """A chunk's line: it waits for the sink to present the session's `frames`; without them
        (render), it is written at once, after the lines before it."""
        with self._lock:
            if not frames:
                self._settle(len(self._pending))
                self._log.write_chunk(chunk, input_state, **extra)
                return
            generation = int(getattr(frames[0], "generation", 0))
            self._pending.append(_Pending(chunk, input_state, extra, generation, len(frames)))

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """A session event: written as soon as no chunk line waits before it."""
        with self._lock:
            self._pending.append(_Pending(extra={"kind": kind, **data}))
            if all(p.chunk is None for p in self._pending):
                self._settle(len(self._pending))

    def presented(self, frame: Any, accepted: bool) -> None:
        """The sink presented `frame` (`accepted`: the video took it): count it against its chunk's line;
        lines the sink has moved past are written."""
        generation, index = getattr(frame, "generation", None), getattr(frame, "chunk_index", None)
        with self._lock:
            for i, p in enumerate(self._pending):
                if p.chunk is not None and p.generation == generation and p.chunk.index == index:
                    p.offered += 1
                    p.written += int(accepted)
                    self._settle(i + 1 if p.offered >= p.size else i)
                    return

    def flush(self) -> None:
        """The recording closes: every waiting line is written (or left out, see the module doc)."""
        with self._lock:
            self._settle(len(self._pending))

    def _settle(self, n: int) -> None:
        """Write the first `n` pending lines (under `_lock`). A chunk line carries `keep` when the video
        holds only some of its frames; chunks of a generation after whose last presented frame nothing of
        theirs was presented are dropped (the model made them ahead; the player never saw them)."""
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
            elif i <= seen.get(p.generation, -1) or self._later_presented(p):
                extra = dict(p.extra or {})
                if p.written < p.size:
                    extra["keep"] = p.written
                self._log.write_chunk(p.chunk, p.input_state, **extra)

    def _later_presented(self, p: _Pending) -> bool:
        """Whether a later line of `p`'s generation is still pending with a presented frame (then `p` is not at
        the end of it)."""
        return any(q.chunk is not None and q.generation == p.generation and q.offered for q in self._pending)
