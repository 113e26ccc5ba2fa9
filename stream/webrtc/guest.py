"""What the server keeps for each browser and each player's session.

A `Guest` is one browser at the server: a websocket and its peer connection, as a player, who
steers a session, or a spectator, who watches one. Its data channel brings input in (handed to
`input_channel.py`) and takes stats and poses out; it ends at the first of: websocket closed, peer
failed, idle, no connection in time. A `PlaySession` is a player's running session with what serves
it (its fan-out, its recording, its admission slot) and the guests that see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.server import ServerConnection

from worldwalk.runtime.session import Session
from worldwalk.runtime.world import backends_text

from .admission import SessionSlot
from .input_channel import InputGate, receive
from .peer import PeerConfig, add_video_transceiver, answer_video_codec, gather_with_addresses, new_peer_connection
from .pose_channel import pose_loop
from .signaling import BadSignaling, answer_message, ended_message, read_until_closed, refuse
from .video_track import FrameFanout, SessionVideoTrack

log = logging.getLogger(__name__)


@dataclass
class PlaySession:
    """A player's session and everything the server holds for it."""

    id: str
    session: Session
    fanout: FrameFanout
    recorder: Any = None
    slot: SessionSlot | None = None  # released once the world is closed
    ending: bool = False  # being torn down (still listed until its world is closed)
    player: Guest | None = None
    spectators: set[Guest] = field(default_factory=set)
    last_input: float = field(default_factory=time.monotonic)


@dataclass
class Guest:
    """One browser at the server: a websocket and its peer connection, as a player or a spectator."""

    ws: ServerConnection
    role: str  # "player" | "spectator"
    gate: InputGate
    play: PlaySession | None = None
    pc: RTCPeerConnection | None = None
    track: SessionVideoTrack | None = None
    channel: RTCDataChannel | None = None
    codec: str = ""
    ended: asyncio.Future | None = None  # result: the reason the guest ends
    tasks: list[asyncio.Task] = field(default_factory=list)
    key_log: deque = field(default_factory=lambda: deque(maxlen=256))  # (key, down, monotonic)

    def end(self, reason: str) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(reason)

    __hash__ = object.__hash__
    __eq__ = object.__eq__

    # ---- the data channel --------------------------------------------------------------------

    def open_channel(self, channel: RTCDataChannel, stats_interval: float) -> None:
        """The browser opened its data channel: input comes in on it (input_channel.py), stats every
        `stats_interval` seconds and each frame's pose (for the page's timewarp) go out."""
        if self.channel is not None:  # one input channel per browser
            channel.close()
            return
        play = self.play
        assert play is not None
        self.channel = channel
        channel.on("message", partial(receive, self.gate, reply=self.send, steered=self.steered,
                                      key_log=self.key_log))
        self.tasks.append(asyncio.ensure_future(self._stats_loop(stats_interval)))
        self.tasks.append(asyncio.ensure_future(pose_loop(
            play.fanout, play.session, self.send, lambda: self.gate.last_seq, self.key_log)))

    def steered(self) -> PlaySession | None:
        """What this guest's input steers: its session when a player, else nothing."""
        return self.play if self.role == "player" else None

    def send(self, obj: dict[str, Any]) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            ch.send(json.dumps(obj))

    def stats(self) -> dict[str, Any]:
        """The {"t": "stats"} message: the session's figures, what this guest was sent, its input counters."""
        play = self.play
        out: dict[str, Any] = {"t": "stats", "role": self.role, "codec": self.codec,
                               "server_time": time.time(), "input": self.gate.counters.as_dict()}
        if play is None:
            return out
        s = play.session.stats()
        now = time.monotonic()
        recent = [f for f in play.fanout.history if f.released > now - 1.0]
        latest = play.fanout.latest
        pose = np.asarray(s.pop("pose"), dtype=np.float64)
        out.update({k: v for k, v in s.items() if isinstance(v, (int, float, str, bool, type(None)))})
        out.update({
            "session": play.id,
            "fps": len(recent),
            "frame": latest.index if latest is not None else -1,
            "pose": [round(float(v), 5) for v in pose.reshape(-1)],
            "position": [round(float(v), 4) for v in pose[:3, 3]],
            "spectators": len(play.spectators),
            "sent": self.track.sent if self.track is not None else 0,
            "recording": play.recorder.status if play.recorder is not None else None,
            "backends": backends_text(s.get("backends")),  # "chunk: onnx · decode: eager (onnx failed)"
        })
        return out

    async def _stats_loop(self, interval: float) -> None:
        logged = False
        while True:
            try:
                self.send(self.stats())
            except Exception:  # stats are best effort; say why once, keep the video going
                if not logged:
                    log.exception("sending stats failed (logged once per guest)")
                    logged = True
            await asyncio.sleep(interval)

    # ---- its life ----------------------------------------------------------------------------

    async def connect(self, offer: str, peer: PeerConfig, stats_interval: float) -> None:
        """Answer the browser's offer (its checked SDP): a peer connection with a send-only video track of its session's
        fan-out and the browser's data channel. An offer aiortc cannot use is refused (BadSignaling)."""
        play = self.play
        assert play is not None
        pc = new_peer_connection(peer)
        self.pc = pc
        transceiver = add_video_transceiver(pc, peer)
        self.track = SessionVideoTrack(play.fanout)
        transceiver.sender.replaceTrack(self.track)
        pc.on("datachannel", partial(self.open_channel, stats_interval=stats_interval))
        pc.on("connectionstatechange", self.connection_changed)
        try:  # an offer that passed check_offer can still be one aiortc cannot use
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await pc.createAnswer()
        except Exception as e:  # noqa: BLE001 - its text is the offer's fault, not ours
            bad = BadSignaling("unusable_offer", "the offer could not be applied", f"{type(e).__name__}: {e}"[:200])
            await refuse(self.ws, bad.refusal)
            raise bad from None
        with gather_with_addresses(peer.candidate_addresses):
            await pc.setLocalDescription(answer)
        self.codec = answer_video_codec(pc.localDescription.sdp)
        await self.ws.send(answer_message(pc.localDescription.sdp, play.id, self.role, self.codec))

    def connection_changed(self) -> None:
        """The peer connection's state changed: a failed or closed one ends the guest."""
        if self.pc is not None and self.pc.connectionState in ("failed", "closed"):
            self.end(f"connection_{self.pc.connectionState}")

    async def until_end(self, connect_timeout: float, idle_timeout: float) -> str:
        """Wait for the first of: websocket closed, peer failed, idle (a player), no connection in time."""
        assert self.ended is not None and self.pc is not None
        reader = asyncio.ensure_future(read_until_closed(self.ws))
        self.tasks.append(reader)
        deadline = time.monotonic() + connect_timeout
        while True:
            done, _ = await asyncio.wait({self.ended, reader}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if self.ended.done():
                return self.ended.result()
            if reader in done:
                return "websocket_closed"
            now = time.monotonic()
            if self.pc.connectionState != "connected" and now > deadline:
                return "connect_timeout"
            if self.pc.connectionState == "connected":
                deadline = float("inf")
            play = self.play
            if self.role == "player" and play and now - play.last_input > idle_timeout:
                return "idle"

    async def close(self, reason: str) -> None:
        """Stop its tasks, track and peer connection, leave its session, tell the browser why it ended."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            await self.pc.close()
        if self.play is not None:
            self.play.spectators.discard(self)
            if self.play.player is self:
                self.play.player = None
        # cut the links to the session and the peer: a guest and its session refer to each other,
        # and a closed peer connection is a cycle of aiortc objects; left linked, a closed session
        # (its world above all) would wait for the cyclic garbage collector, which runs rarely
        self.play = self.pc = self.track = self.channel = None
        with contextlib.suppress(Exception):
            await self.ws.send(ended_message(reason))
            await self.ws.close(1000, reason[:100])
