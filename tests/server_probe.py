"""Helpers shared by the serve tests (test_serve_*.py and others): a real server with a tiny reference
world whose live worlds are counted, a real aiortc offer, RSS from /proc/self/status."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.session import Session
from worldwalk.runtime.world import create_world
from worldwalk.stream.session_memory_bench import rss_mib  # noqa: F401 (the serve tests take it from here)
from worldwalk.stream.webrtc import peer
from worldwalk.stream.webrtc.server import ServeConfig

from .builders import TINY_REFERENCE, serve_config, wait_for  # noqa: F401 (the serve tests take them from here)

TINY = TINY_REFERENCE


class OpenWorlds:
    """A session factory that builds the server's real world and counts worlds built and not
    yet closed (live world objects), with the highest count ever seen."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self.open = 0
        self.max_open = 0
        self.built = 0

    def __call__(self, start: object = None) -> Session:  # a PlayerStart: every one a new walk here
        world = create_world(self.cfg.world)
        with self._lock:
            self.open += 1
            self.built += 1
            self.max_open = max(self.max_open, self.open)
        close = world.close
        closed = [False]

        def counted_close() -> None:
            close()
            with self._lock:
                if not closed[0]:
                    closed[0] = True
                    self.open -= 1

        world.close = counted_close  # type: ignore[method-assign]
        return Session(world, self.cfg.session, integrator=PoseIntegrator(self.cfg.controls, self.cfg.bindings))


async def recv_answer(ws) -> dict:
    """The server's reply to an offer: an answer or an error, after any {type: progress} messages that a
    slow first start (a graph build) sends while the client waits."""
    while True:
        message = json.loads(await ws.recv())
        if message.get("type") != "progress":
            return message


async def make_offer(**kw: Any) -> str:
    """A real browser-like offer (recvonly video + a data channel) from aiortc, 127.0.0.1 only."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("input")
    with peer.gather_with_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def first_message(url: str, then: Callable[[Any], Awaitable[None]] | None = None) -> dict:
    async with connect(url) as ws:
        msg = json.loads(await ws.recv())
        if then is not None:
            await then(ws)
        return msg
