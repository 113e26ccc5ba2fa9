"""What the server keeps for each browser and each player's session.

A `Viewer` is one websocket and its peer connection: a player, who steers a session, or a spectator,
who watches one. A `PlaySession` is a player's running session with what serves it (its fan-out,
its recording, its admission slot) and the viewers that see it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from websockets.asyncio.server import ServerConnection

from worldwalk.runtime.session import Session

from .admission import SessionSlot
from .input_channel import InputGate
from .video_track import FrameFanout, SessionVideoTrack


@dataclass
class PlaySession:
    """A player's session and everything the server holds for it."""

    id: str
    session: Session
    fanout: FrameFanout
    recorder: Any = None
    slot: SessionSlot | None = None  # released once the world is closed
    ending: bool = False  # being torn down (still listed until its world is closed)
    player: Viewer | None = None
    spectators: set[Viewer] = field(default_factory=set)
    last_input: float = field(default_factory=time.monotonic)


@dataclass
class Viewer:
    """One websocket + peer connection: a player or a spectator."""

    ws: ServerConnection
    role: str  # "player" | "spectator"
    gate: InputGate
    play: PlaySession | None = None
    pc: RTCPeerConnection | None = None
    track: SessionVideoTrack | None = None
    channel: RTCDataChannel | None = None
    codec: str = ""
    ended: asyncio.Future | None = None  # result: the reason the viewer ends
    tasks: list[asyncio.Task] = field(default_factory=list)
    key_log: deque = field(default_factory=lambda: deque(maxlen=256))  # (key, down, monotonic)

    def end(self, reason: str) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(reason)

    __hash__ = object.__hash__
    __eq__ = object.__eq__

