"""worldwalk.viewer: the local window (`worldwalk play`): presenting, timewarp, HUD, controls.

Re-exported here are the parts that need no display: the `Presenter` (works on any moderngl
context, headless EGL included) and the display-side meters. The window itself
(`viewer.window.PlayWindow`, `viewer.hud`) imports pyglet's window module, which opens a
connection to the display on import, so import those modules directly when a display exists.
"""

from .metrics import LatencyMeter, RateMeter
from .presenter import Presenter, PresenterConfig, content_rect, timewarp_homography

__all__ = [
    "LatencyMeter",
    "Presenter",
    "PresenterConfig",
    "RateMeter",
    "content_rect",
    "timewarp_homography",
]
