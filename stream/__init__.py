"""worldwalk.stream: what leaves the process: WebRTC, the recorder, replay and `render`.

Names are imported lazily (PyAV, aiortc and the world registry load only when used), so
`import worldwalk.stream` stays cheap for the commands that need none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Recorder": "recorder",
    "RecorderConfig": "recorder",
    "RecorderError": "recorder",
    "attach_recorder": "recorder",
    "SessionLogWriter": "session_log",
    "SessionHeader": "session_log",
    "read_log": "session_log",
    "ReplayPlan": "replay",
    "ReplayError": "replay",
    "LogMismatchError": "replay",
    "plan_from_log": "replay",
    "plan_from_actions": "replay",
    "plan_from_path": "replay",
    "render_frames": "replay",
    "render_to_file": "replay",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
