"""A player whose world builds its accelerated graphs on a first start hears how long it has taken so far
(the console already did): {type: "progress"} signaling messages before the answer, from the same
`announce` that logs the build (runtime/accel/apply.py), and nothing when the start is quick. Real
server, real websocket and a real aiortc offer on 127.0.0.1; the page's side is in tests/page_harness.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from websockets.asyncio.client import connect

from worldwalk.runtime.accel.announce import announce
from worldwalk.runtime.session import Session
from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config
from .timed_world import TimedWorld
from .webrtc_client import offer_sdp


def building_session(seconds: float):
    """A session factory whose world takes `seconds` to build, announced as a graph build is."""

    def make(start: object = None) -> Session:  # a PlayerStart: every one a new walk here
        with announce("accel: building graphs", first_after=0.05 if seconds else 2.0, tell_every=0.2):
            time.sleep(seconds)
        return Session(TimedWorld(chunk_seconds=0.01, width=64, height=32, fps=30.0))

    return make


async def signals_until_answer(build_seconds: float) -> list[dict]:
    cfg = serve_config(WorldConfig())  # the sessions are building_session's
    async with StreamServer(cfg, session_factory=building_session(build_seconds)) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            assert json.loads(await ws.recv())["type"] == "config"
            await ws.send(json.dumps({"type": "offer", "sdp": await offer_sdp()}))
            got = []
            while not got or got[-1]["type"] == "progress":
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return got


def test_a_slow_first_build_tells_the_player_how_long_so_far(caplog):
    caplog.set_level(logging.INFO, logger="worldwalk.runtime.accel.apply")
    got = asyncio.run(asyncio.wait_for(signals_until_answer(1.0), 30))
    progress, answer = got[:-1], got[-1]
    assert answer["type"] == "answer", got
    assert len(progress) >= 4, got  # every 0.2 s from 0.05 s on, for a 1 s build
    assert all(m["stage"] == "accel-build" for m in progress)
    assert [m["done"] for m in progress] == [False] * (len(progress) - 1) + [True]
    seconds = [m["seconds"] for m in progress]
    assert seconds == sorted(seconds) and 0.9 <= seconds[-1] < 3, seconds
    assert progress[0]["message"].startswith("Building the model's accelerated graphs"), progress[0]
    assert progress[-1]["message"].startswith("Accelerated graphs ready after 1 s"), progress[-1]
    assert not any("/" in m["message"] for m in progress)  # no server paths reach the page
    assert any("graphs ready in" in r.getMessage() for r in caplog.records)  # the console still says it


def test_a_quick_start_sends_no_progress():
    got = asyncio.run(asyncio.wait_for(signals_until_answer(0.0), 30))
    assert [m["type"] for m in got] == ["answer"], got
