"""Each published frame's camera rotation, sent to the page for its timewarp.

One small message per frame on the data channel, as the fan-out publishes the frame:

    {"t": "pose", "i": 120, "f": [yaw, pitch, roll], "h": [yaw, pitch, roll], "w": [yaw/s, pitch/s],
     "n": 57, "k": [fx/W, fy/H, cx/W, cy/H], "m": [rad/px x, rad/px y], "pl": pitch limit}

`f`: the rotation the frame was generated at (radians, controls/camera.py's convention). `h`: the
rotation the player held when the message was sent (every input the server had, integrated to then:
`Session.held_pose`), `w`: the turn rate of the input held then (keys, right stick), `n`: the number
of the newest input message the server had applied (the page numbers what it sends), `k`: the
frame's intrinsics as fractions of its size, `m`: radians of yaw and pitch per pixel of mouse
motion, `pl`: the pitch limit (radians) the page clamps its view to. A frame that answers a key
press also carries "lat", the server's part of that key's latency in ms (wait, plan, generate,
decode, queue: `runtime.latency.LatencySplit`), and "rt", when it was released on the server's wall
clock. A world steered by actions (Matrix-Game: `ModelSpec.steering`) adds `"warp": false`: the page
shows its video unturned.

The page turns the frame on screen from `f` to `h` plus what it has sent since `n` plus `w`
times the time since the message came: the view answers the player at once, and the frames
catch up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from worldwalk.controls import yaw_pitch_roll
from worldwalk.runtime.latency import LatencySplit

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
    per_px = integrator.mouse_look(1.0, 1.0)  # (yaw, pitch) radians per pixel right, per pixel down
    msg: dict[str, Any] = {
        "t": "pose",
        "i": int(frame.index),
        "f": [_r(v) for v in f],
        "h": [_r(v) for v in h],
        "w": [_r(v) for v in w],
        "n": int(input_seq),
        "k": [_r(K[0, 0] / W), _r(K[1, 1] / H), _r(K[0, 2] / W), _r(K[1, 2] / H)],
        "m": [_r(per_px[0]), _r(per_px[1])],
        "pl": _r(math.radians(integrator.cfg.pitch_limit)),
    }
    if getattr(session.spec, "steering", "camera") == "actions":
        msg["warp"] = False  # an action world's frames have no camera to turn them by: shown as they come
    return msg


class KeyLatency:
    """The server's part of key -> presented, step by step: for the first frame published after
    each key press whose chunk was planned with it (`Frame.input_time` >= the press)."""

    def __init__(self, key_log: Any) -> None:
        self.key_log = key_log  # (key, down, monotonic arrival) of the guest's key messages
        self._seen = 0.0  # arrival of the newest press looked at
        self.pending: float | None = None

    def on_frame(self, frame: Any, session: Any, released: float) -> dict[str, float] | None:
        """The split (ms) completed by `frame`, released by the fan-out at `released`, if any."""
        for _, down, t in list(self.key_log):
            if down and t > self._seen:
                self._seen = t
                if self.pending is None:
                    self.pending = t
        if self.pending is None or frame.input_time is None or frame.input_time < self.pending:
            return None
        press, self.pending = self.pending, None
        timing = session.timing(frame)
        if timing is None:
            return None
        s = LatencySplit.of(press, timing, released, released)
        return {"wait": 1000 * s.wait, "plan": 1000 * s.plan, "generate": 1000 * s.generate,
                "decode": 1000 * s.decode, "queue": 1000 * s.queue}


async def pose_loop(fanout: Any, session: Any, send: Callable[[dict[str, Any]], None],
                    input_seq: Callable[[], int], key_log: Any = ()) -> None:
    """Send the pose of every frame `fanout` publishes until its video ends; a frame that answers
    a key press also carries the server's part of that latency ("lat", ms) and its release time
    on the server's wall clock ("rt", s) so the page can add its own part."""
    from aiortc.mediastreams import MediaStreamError

    seq = 0
    logged = False
    latency = KeyLatency(key_log)
    while True:
        try:
            seq, frame, _, released = await fanout.next(seq)
        except MediaStreamError:
            return
        try:
            msg = pose_message(frame, session, input_seq())
            split = latency.on_frame(frame, session, released)
            if split is not None:
                msg["lat"] = {k: round(v, 2) for k, v in split.items()}
                msg["rt"] = time.time() - (time.monotonic() - released)
            send(msg)
        except Exception:  # poses are best effort: the video goes on without the timewarp
            if not logged:
                log.exception("sending a frame's pose failed (logged once per guest)")
                logged = True
