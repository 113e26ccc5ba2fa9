"""One Python WebRTC (aiortc) client for every test that plays against `serve` or the cluster gateway,
made the way the page does it: the server's config over the websocket, an offer (receive-only video and
an `input` data channel, 127.0.0.1 candidates only, no STUN), the answer, then frames and input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from worldwalk.stream.webrtc import peer

WAITING = ("progress", "queued")  # what the server may send between an offer and its answer


def _peer_connection(codec: str | None = None) -> tuple[Any, Any]:
    """A browser-like peer connection and its `input` data channel; `codec` (say "video/VP8") is the
    only video codec it accepts."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction="recvonly")
    if codec:
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == codec])
    return pc, pc.createDataChannel("input")


async def _offer(pc: Any) -> str:
    with peer.gather_with_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def offer_sdp() -> str:
    """A real browser-like offer's SDP from a peer connection closed at once (for tests of the offer's
    checks that need no answer)."""
    pc, _ = _peer_connection()
    try:
        return await _offer(pc)
    finally:
        await pc.close()


class Player:
    """One player (or spectator, with `?watch=` in the query) over aiortc.

    `open()` connects and offers; `frame()` takes the next video frame; `follow()` keeps taking
    frames and signaling messages in the background; `key()`/`command()`/`send()` go over the data
    channel; `close()` (or `async with`) ends it. What came back is kept: `config`, `answer`,
    `signals` (every signaling message after the config), `messages` (the data channel's, parsed),
    `frames` ((monotonic time, width, height) of each frame taken), `ended` (the "moved" or "ended"
    message), `errors` (what the background tasks ended with other than the stream's normal end)."""

    def __init__(self, url: str, codec: str | None = None, on_error: Callable[[str, BaseException], None] | None = None,
                 **connect_options: Any) -> None:
        self.url = url
        self.codec = codec
        self.connect_options = connect_options  # for websockets' connect (max_size, ...)
        self.on_error = on_error
        self.ws: Any = None
        self.pc: Any = None
        self.channel: Any = None
        self.track: Any = None
        self.config: dict | None = None
        self.answer: dict | None = None
        self.signals: list[dict] = []
        self.messages: list[dict] = []
        self.frames: list[tuple[float, int, int]] = []
        self.ended: dict | None = None
        self.errors: list[str] = []
        self.offer_answer_s: float | None = None  # offer sent -> answer received
        self.first_frame_s: float | None = None  # open() called -> first frame taken
        self._opened_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self._listening: asyncio.Task | None = None

    async def __aenter__(self) -> Player:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, query: str = "", timeout: float = 20.0, answer_timeout: float = 60.0) -> dict:
        """Connect and offer. The server's reply to the offer (the answer, or a refusal such as an
        error), after any progress or place-in-line messages; or the first message, if it is not
        the config (busy, an error)."""
        self._opened_at = time.monotonic()
        self.ws = await connect(self.url + query, open_timeout=timeout, **self.connect_options)
        first = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if first["type"] != "config":
            self.signals.append(first)
            return first
        self.config = first
        self.pc, self.channel = _peer_connection(self.codec)
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))
        got_track = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda t: got_track.done() or got_track.set_result(t))
        sdp = await _offer(self.pc)
        t_offer = time.monotonic()
        await self.ws.send(json.dumps({"type": "offer", "sdp": sdp}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), answer_timeout))
            self.signals.append(reply)
            if reply["type"] not in WAITING:
                break
        if reply["type"] != "answer":
            await self.pc.close()
            return reply
        self.offer_answer_s = time.monotonic() - t_offer
        self.answer = reply
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        self.track = await asyncio.wait_for(got_track, timeout)
        return reply

    async def frame(self, timeout: float = 10.0) -> Any:
        """The next video frame (an av.VideoFrame), noted in `frames`."""
        frame = await asyncio.wait_for(self.track.recv(), timeout)
        now = time.monotonic()
        if self.first_frame_s is None:
            self.first_frame_s = now - self._opened_at
        self.frames.append((now, frame.width, frame.height))
        return frame

    async def frames_for(self, seconds: float, timeout: float = 10.0) -> int:
        """Take frames for `seconds`; how many came."""
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.frame(timeout)
            count += 1
        return count

    async def next_signal(self, timeout: float = 10.0) -> dict:
        """The next signaling message (not while following)."""
        message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.signals.append(message)
        return message

    def follow(self) -> None:
        """From now on, take every frame and signaling message in the background."""
        self._listening = asyncio.ensure_future(self._signaling())
        self._tasks += [asyncio.ensure_future(self._frames()), self._listening]

    def stop_listening(self) -> None:
        """Stop taking signaling messages in the background: the caller reads the websocket from here on."""
        if self._listening is not None:
            self._listening.cancel()

    async def _frames(self) -> None:
        try:
            while True:
                await self.frame(timeout=None)  # type: ignore[arg-type]
        except Exception as e:  # the track ends when the session does: anything else is noted
            self._note("video", e)

    async def _signaling(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                self.signals.append(message)
                if message["type"] in ("moved", "ended"):
                    self.ended = message
        except Exception as e:
            self._note("signaling", e)

    def _note(self, where: str, e: BaseException) -> None:
        from aiortc.mediastreams import MediaStreamError
        from websockets.exceptions import ConnectionClosedOK

        if isinstance(e, (MediaStreamError, ConnectionClosedOK, asyncio.CancelledError)):
            return
        self.errors.append(f"{where}: {type(e).__name__}: {e}"[:300])
        if self.on_error is not None:
            self.on_error(where, e)

    async def channel_open(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.channel.readyState != "open":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the data channel did not open in {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def send(self, message: dict | str) -> None:
        """One data-channel message (a dict is sent as JSON, a string as it is), once the channel is open."""
        await self.channel_open()
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def key(self, key: str, down: bool) -> None:
        await self.send({"t": "key", "key": key, "down": down})

    async def command(self, cmd: str) -> None:
        await self.send({"t": "cmd", "cmd": cmd})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
