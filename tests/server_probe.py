"""Helpers shared by the serve tests (test_serve_*.py and others): a real server with a tiny reference
world whose live worlds are counted, RSS from /proc/self/status (the aiortc client is tests/webrtc_client.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.session import Session
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.session_memory_bench import rss_mib  # noqa: F401 (the serve tests take it from here)
from worldwalk.stream.webrtc.server import ServeConfig


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


async def first_message(url: str, then: Callable[[Any], Awaitable[None]] | None = None) -> dict:
    async with connect(url) as ws:
        msg = json.loads(await ws.recv())
        if then is not None:
            await then(ws)
        return msg
