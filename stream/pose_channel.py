"""Each published frame's camera rotation, sent to the page for its timewarp.

One small message per frame on the data channel, as the fan-out publishes the frame:

    {"t": "pose", "i": 120, "f": [yaw, pitch, roll], "h": [yaw, pitch, roll], "w": [yaw/s, pitch/s],
     "n": 57, "k": [fx/W, fy/H, cx/W, cy/H], "m": [rad/px x, rad/px y]}

`f`: the rotation the frame was generated at (radians, controls/camera.py's convention). `h`:
the rotation the player held when the message was sent (every input the server had, integrated
to then: `Session.held_pose`), `w`: the turn rate of the input held then (keys, right stick),
`n`: the number of the newest input message the server had applied (the page numbers what it
sends), `k`: the frame's intrinsics as fractions of its size, `m`: radians of yaw and pitch per
pixel of mouse motion. The page turns the frame on screen from `f` to `h` plus what it has sent
since `n` plus `w` times the time since the message came: the view answers the player at once,
and the frames catch up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from worldwalk.controls import yaw_pitch_roll

log = logging.getLogger(__name__)


def _r(v: float) -> float:
    return round(float(v), 6)


def pose_message(frame: Any, session: Any, input_seq: int) -> dict[str, Any]:
    """The pose message of `frame` (a runtime.chunk.Frame) from `session`, now."""
    f = yaw_pitch_roll(np.asarray(frame.pose)[:3, :3])
    held = session.held_pose()
    h = yaw_pitch_roll(held[:3, :3])
    integrator = session.integrator
    w = integrator.turn_rates(session.inputs.peek())
    H, W = frame.image.shape[:2]
    K = np.asarray(frame.intrinsics, dtype=np.float64)
    cfg = integrator.cfg
    per_px = math.radians(cfg.mouse_sensitivity)
    return {
        "t": "pose",
        "i": int(frame.index),
        "f": [_r(v) for v in f],
        "h": [_r(v) for v in h],
        "w": [_r(v) for v in w],
        "n": int(input_seq),
        "k": [_r(K[0, 0] / W), _r(K[1, 1] / H), _r(K[0, 2] / W), _r(K[1, 2] / H)],
        "m": [_r(per_px), _r(per_px if cfg.invert_mouse_y else -per_px)],
    }


async def pose_loop(fanout: Any, session: Any, send: Callable[[dict[str, Any]], None],
                    input_seq: Callable[[], int]) -> None:
    """Send the pose of every frame `fanout` publishes until its video ends."""
    from aiortc.mediastreams import MediaStreamError

    seq = 0
    logged = False
    while True:
        try:
            seq, frame, _, _ = await fanout.next(seq)
        except MediaStreamError:
            return
        try:
            send(pose_message(frame, session, input_seq()))
        except Exception:  # poses are best effort: the video goes on without the timewarp
            if not logged:
                log.exception("sending a frame's pose failed (logged once per viewer)")
                logged = True
