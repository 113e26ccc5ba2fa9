"""admission before work. With `max_sessions=1`, quick connect -> config ->
close cycles (and some that send a real offer and leave at once) never have more than 2 worlds
alive, build no world for a socket that sent no offer, and give the memory back; the number of
websockets one client (and all clients) may hold open is capped."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config, wait_for
from .server_probe import OpenWorlds, rss_mib
from .webrtc_client import offer_sdp

pytestmark = pytest.mark.gl  # the servers here build reference worlds (EGL)


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _cycle(url: str, offer: str | None) -> str:
    async with connect(url) as ws:
        msg = json.loads(await ws.recv())
        if msg["type"] == "config" and offer is not None:
            await ws.send(json.dumps({"type": "offer", "sdp": offer}))
        return msg["type"]


def test_connect_cycles_build_no_world_before_an_offer_and_stay_bounded():
    async def go():
        cfg = serve_config(max_sessions=1)
        worlds = OpenWorlds(cfg)
        async with StreamServer(cfg, session_factory=worlds) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            offer = await offer_sdp()

            def idle() -> bool:
                return not server.sessions and not server.guests and worlds.open == 0

            for _ in range(3):  # warm-up: GL driver, codecs, executor threads
                await _cycle(url, offer)
                await wait_for(idle, 20, "the warm-up session to be freed")
            gc.collect()
            base, built0 = rss_mib(), worlds.built
            kinds: dict[str, int] = {}
            for i in range(200):
                kind = await _cycle(url, offer if i % 20 == 0 else None)  # 10 of them offer and leave
                kinds[kind] = kinds.get(kind, 0) + 1
            await wait_for(idle, 30, "every session to be freed")
            gc.collect()
            await asyncio.sleep(0.2)
            return worlds.max_open, worlds.built - built0, rss_mib() - base, kinds

    max_open, built, grew, kinds = run(go())
    print(f"max worlds alive {max_open}, built {built}, RSS grew {grew:.1f} MiB, replies {kinds}")
    assert max_open <= 2, f"{max_open} worlds were alive at once with max_sessions=1"
    assert built <= 10, f"{built} worlds built for 200 connections of which 10 sent an offer"
    assert grew < 30, f"RSS grew {grew:.1f} MiB over 200 connect cycles"


def test_a_bad_offer_builds_no_world():
    async def go():
        cfg = serve_config(max_sessions=1)
        worlds = OpenWorlds(cfg)
        async with StreamServer(cfg, session_factory=worlds) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url) as ws:
                assert json.loads(await ws.recv())["type"] == "config"
                await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\nthis is no offer\r\n"}))
                err = json.loads(await ws.recv())
            await wait_for(lambda: not server.guests, 10, "the socket to be freed")
            await asyncio.sleep(0.3)  # a build started in the background would have counted by now
            return err, worlds.built

    err, built = run(go())
    assert err["type"] == "error" and err["code"] == "bad_request", err
    assert built == 0, f"a garbage offer built {built} world(s)"


@pytest.mark.parametrize("per_client, total", [(3, 100), (100, 3)])
def test_open_websockets_are_capped(per_client, total):
    async def go():
        cfg = serve_config(max_sessions=10, max_sessions_per_client=10, max_connections_per_client=per_client,
                           max_connections=total)
        worlds = OpenWorlds(cfg)
        async with StreamServer(cfg, session_factory=worlds) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"  # players waiting to send their offer
            held, refused = [], 0
            try:
                for _ in range(8):
                    try:
                        ws = await connect(url)
                        assert json.loads(await ws.recv())["type"] == "config"
                        held.append(ws)
                    except InvalidStatus as e:
                        assert e.response.status_code == 503, e.response.status_code
                        refused += 1
                n = len(held)
            finally:
                for ws in held:
                    await ws.close()
            # raw TCP sockets that never send a request count as well
            idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
            with pytest.raises(InvalidStatus) as e:
                await connect(url)
            assert e.value.response.status_code == 503
            for _, writer in idle:
                writer.close()
            # closed sockets give their places back
            await wait_for(lambda: not server.guests and not server.admission.connections, 10,
                             "the sockets to be freed")
            async with connect(url):
                pass
            return n, refused, worlds.built

    n, refused, built = run(go())
    assert n == 3 and refused == 5 and built == 0
