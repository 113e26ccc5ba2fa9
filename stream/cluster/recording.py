"""`WalkRecording`: a cluster walk's recording (`serve --cluster --record-dir`), one recording for
the whole walk wherever it runs.

A walk's first replica records as `serve --record-dir` does (`SessionRecording`: the files open
with the first frame sent) and tells the snapshot store the video's path. When the walk moves
(failover or drain), the replica that takes it over continues those files (recording_resume.py)
from the boundary it resumes at, instead of starting new ones. The record folder must be the same
folder on every session-host node (a shared mount on a multi-machine cluster). If the old files
cannot be continued (gone, unreadable), the walk records on in new files and says why in the log;
the walk itself never fails over a recording.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldwalk.stream.record.recording_resume import ContinuedRecorder, read_recording
from worldwalk.stream.record.session_recording import RECORDING, SessionRecording

log = logging.getLogger(__name__)


class WalkRecording(SessionRecording):
    def __init__(self, session: Any, folder: str | Path, stem: str, *, world_cfg: Any = None,
                 recorder_cfg: Any = None, on_failure: Callable[[str, BaseException], None] | None = None,
                 on_open: Callable[[str], None] | None = None,
                 resume: tuple[str, int, dict[int, dict[str, Any]]] | None = None) -> None:
        """resume: (the walk's video path, the chunk it resumes at, its chunk records by index)."""
        super().__init__(session, folder, stem, world_cfg=world_cfg, recorder_cfg=recorder_cfg,
                         on_failure=on_failure)
        self.on_open = on_open
        self.continued_frames: int | None = None  # frames the old files held, when continued
        if resume is None:
            return
        path, chunk, records = resume
        try:
            old = read_recording(path, chunk, records)
            rec = ContinuedRecorder(path, old).start()
        except Exception as e:  # noqa: BLE001 - a new recording then, never a failed walk
            log.warning("recording %s cannot be continued (%s: %s); the walk records on in a new file",
                        path, type(e).__name__, e)
            return
        with self._lock:
            self.path, self.recorder, self.status = Path(path), rec, RECORDING
            self._pending.clear()
        self.continued_frames = old.frames

    def _start(self) -> None:
        super()._start()
        if self.status == RECORDING and self.path is not None and self.on_open is not None:
            self.on_open(str(self.path))
