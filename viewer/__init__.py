"""worldwalk.viewer: the local window (`worldwalk play`): presenting, timewarp, HUD, controls.

Re-exported here are the parts that need no display: the `Presenter` (works on any moderngl
context, headless EGL included) and the display-side meters. The window itself
(`viewer.window.PlayWindow`, `viewer.hud`) imports pyglet's window module, which opens a
connection to the display on import, so import those modules directly when a display exists.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Loaded on first use: `worldwalk play --help` imports this package and needs neither numpy nor moderngl.
_LAZY = {
    "LatencyMeter": "metrics", "RateMeter": "metrics", "Presenter": "presenter", "PresenterConfig": "presenter",
    "content_rect": "presenter", "timewarp_homography": "presenter",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [
    "LatencyMeter",
    "Presenter",
    "PresenterConfig",
    "RateMeter",
    "content_rect",
    "timewarp_homography",
]
