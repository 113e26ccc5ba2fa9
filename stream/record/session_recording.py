"""A served player's recording (`serve --record-dir`): starts with the first frame sent, and a
failure to record never refuses or ends the walk.

`SessionRecording` is attached to a session before it starts (so the log misses no chunk) but
opens no file then: chunk lines and events wait in memory until the fan-out sends the first
frame, and only then are the video and its log created (a player who never got a frame leaves
no files). If the files cannot be made or written (a full disk above all), recording stops,
whatever was opened is closed, empty files are removed, `status` says why ("not recording:
disk full") for the page and stats, and `on_failure` is called once; the session plays on.

    rec = SessionRecording(session, folder, stem, world_cfg=cfg.world, on_failure=note)
    fanout.on_frame = rec.write      # the first call opens the files
    ... session.reset() ...          # logged through the session's event listener
    rec.close()                      # at the session's end (any thread)

A `RecordingPlan` says where the recording goes: new files (the default), or on in the files of a
walk that moved here from another process (the cluster's failover and drain), from the chunk it
resumes at (recording_resume.py): one recording for the whole walk wherever it runs. The record
folder must then be the same folder wherever the walk runs (a shared mount across machines). If the
old files cannot be continued (gone, unreadable), the walk records on in new files and says why in
the log; the walk itself never fails over a recording.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WAITING, RECORDING = "waiting for the first frame", "recording"
DISK_FULL = "not recording: disk full"


@dataclass(frozen=True)
class RecordingPlan:
    """Where a walk's recording goes: new files, or on in `continue_path` from chunk `at_chunk`."""

    continue_path: str | None = None  # the walk's video so far; None: new files
    at_chunk: int = 0  # the chunk boundary the walk resumes at
    records: Mapping[int, dict[str, Any]] = field(default_factory=dict)  # the walk's chunks by index: input, poses
    on_open: Callable[[str], None] | None = None  # told the video's path when new files are opened


def describe_failure(e: BaseException) -> str:
    """A short status for a recording failure: the page shows it as is."""
    code = getattr(e, "errno", None)
    cause = e.__cause__ or e.__context__
    if code is None and cause is not None:
        code = getattr(cause, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
        return DISK_FULL
    if isinstance(e, OSError):
        return "not recording: the record folder cannot be written"
    return "not recording: the recording failed"


class SessionRecording:
    """See the module docstring. Thread-safe: chunks arrive on the model thread, frames on the
    event loop, `close` from a worker thread."""

    def __init__(
        self,
        session: Any,
        folder: str | Path,
        stem: str,
        *,
        world_cfg: Any = None,
        recorder_cfg: Any = None,
        on_failure: Callable[[str, BaseException], None] | None = None,
        plan: RecordingPlan | None = None,
    ) -> None:
        from .recorder import session_header

        self.folder, self.stem = Path(folder), stem
        self.header, self.first_image = session_header(session, world_cfg)
        self.on_failure = on_failure
        self.recorder_cfg = recorder_cfg  # RecorderConfig (the [recorder] table of --config); None: defaults
        self.recorder: Any = None
        self.status = WAITING
        self.path: Path | None = None
        self._pending: list[tuple[str, tuple, dict]] = []  # ("chunk"|"event", args, kwargs) before the start
        self._lock = threading.Lock()
        session.add_listener(self._on_chunk)
        session.add_event_listener(self.log_event)  # resets and rewinds: the session says them
        self.plan = plan or RecordingPlan()
        self.continued_frames: int | None = None  # frames the old files held, when continued
        if self.plan.continue_path is not None:
            self._continue(self.plan)

    def _continue(self, plan: RecordingPlan) -> None:
        """Go on in the walk's old files: they are read back, cut where they agree, and written on."""
        from .recording_resume import ContinuedRecorder, read_recording

        assert plan.continue_path is not None
        try:
            old = read_recording(plan.continue_path, plan.at_chunk, dict(plan.records))
            rec = ContinuedRecorder(plan.continue_path, old).start()
        except Exception as e:  # noqa: BLE001 - a new recording then, never a failed walk
            log.warning("recording %s cannot be continued (%s: %s); the walk records on in a new file",
                        plan.continue_path, type(e).__name__, e)
            return
        with self._lock:
            self.path, self.recorder, self.status = Path(plan.continue_path), rec, RECORDING
            self._pending.clear()
        self.continued_frames = old.frames

    # -- inputs -------------------------------------------------------------------------------

    def _on_chunk(self, chunk: Any, input_state: Any = None, frames: Any = None) -> None:
        self._forward("chunk", (chunk, input_state, frames), {})

    def log_event(self, kind: str, **data: Any) -> None:
        self._forward("event", (kind,), data)

    def _forward(self, what: str, args: tuple, kwargs: dict) -> None:
        with self._lock:
            if self.status == WAITING:
                self._pending.append((what, args, kwargs))
                return
            rec = self.recorder if self.status == RECORDING else None
        if rec is not None:
            try:
                (rec.log_chunk if what == "chunk" else rec.log_event)(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a full disk under the log: stop recording, play on
                self._fail(e)

    def write(self, frame: Any) -> None:
        """The fan-out's sink: the first frame opens the files; then frames go to the video."""
        if self.status == WAITING:
            self._start()
        rec = self.recorder if self.status == RECORDING else None
        if rec is None:
            return
        try:
            rec.write(frame)
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return
        if rec.error is not None:  # the encode thread could not write
            self._fail(rec.error)

    # -- lifecycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        from .recorder import Recorder, next_recording_path

        rec = None
        try:
            self.path = next_recording_path(self.folder, stem=self.stem)
            rec = Recorder(self.path, self.recorder_cfg)
            rec.start(self.header, self.first_image)
        except Exception as e:  # noqa: BLE001
            if rec is not None:
                with contextlib.suppress(Exception):
                    rec.close()
            self._remove_empty()
            with self._lock:
                self._pending.clear()
            self._fail(e)
            return
        failed: BaseException | None = None
        with self._lock:  # the model thread waits while the waiting lines go in first, in order
            for what, args, kwargs in self._pending:
                try:
                    (rec.log_chunk if what == "chunk" else rec.log_event)(*args, **kwargs)
                except Exception as e:  # noqa: BLE001
                    failed = e
                    break
            self._pending.clear()
            self.recorder, self.status = rec, RECORDING
        if failed is not None:
            self._fail(failed)
        elif self.plan.on_open is not None:
            self.plan.on_open(str(self.path))

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self.status not in (WAITING, RECORDING):
                return
            self.status = describe_failure(e)
        if self.on_failure is not None:
            self.on_failure(self.status, e)

    def _remove_empty(self) -> None:
        """Files of a recording that never got going: a 0-byte video or log is no recording."""
        if self.path is None:
            return
        for p in (self.path, self.path.with_suffix(".jsonl"), self.path.with_suffix(".first.npy")):
            with contextlib.suppress(OSError):
                if p.exists() and p.stat().st_size == 0:
                    p.unlink()

    def close(self) -> None:
        """Finalize the files (if any were opened). A failure already reported is not raised again."""
        with self._lock:
            rec, self.recorder = self.recorder, None
            self._pending.clear()
            reported = self.status not in (WAITING, RECORDING)
            if self.status == WAITING:
                self.status = "not recording: no frame was sent"
        if rec is None:
            return
        try:
            rec.close()
        except Exception as e:
            if not reported:
                self._fail(e)
        finally:
            if reported:
                self._remove_empty()
