"""worldwalk.stream: what leaves the process, in three rooms: `webrtc` (serving browsers), `record`
(recording and replay) and `cluster` (serving across machines), with the commands at the root
(`serve`, `render`, the cluster's Serve-config app builder, the stream benches and the browser bench's
walk in a loopback-only namespace). The stack runs one way: commands -> cluster -> webrtc -> record ->
runtime and controls.

Names are imported lazily (PyAV, aiortc and the world registry load only when used), so
`import worldwalk.stream` stays cheap for the commands that need none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Recorder": "record.recorder",
    "RecorderConfig": "record.recorder",
    "RecorderError": "record.recorder",
    "attach_recorder": "record.recorder",
    "SessionLogWriter": "record.session_log",
    "SessionHeader": "record.session_log",
    "read_log": "record.session_log",
    "ReplayPlan": "record.replay",
    "ReplayError": "record.replay",
    "LogMismatchError": "record.replay",
    "plan_from_log": "record.replay",
    "plan_from_actions": "record.replay",
    "plan_from_path": "record.replay",
    "render_frames": "record.replay",
    "render_to_file": "record.replay",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
