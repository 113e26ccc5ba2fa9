"""a closed session gives its memory back at once. With the cyclic garbage
collector off (with torch loaded it runs rarely in a real server), everything a closed session held
(the world above all, its `Session`, the server's records of it, its viewers, the fan-out) is freed
by reference counting alone as soon as the session ends, spectators included; over real bundled
sessions one after another the server's RSS stays flat."""

from __future__ import annotations

import asyncio
import gc
import statistics
import weakref

import pytest

from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.session_memory_bench import play_once, sessions_rss, until_freed
from worldwalk.stream.webrtc.server import StreamServer

from .builders import TINY_REFERENCE, serve_config


def run(coro, timeout: float = 300):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _refs(server: StreamServer, sid: str) -> dict[str, weakref.ref]:
    """Weak references to what the server holds for a live session."""
    play = server.sessions[sid]
    held = {"world": play.session.world, "session": play.session, "play": play, "fanout": play.fanout,
            "player": play.player}
    held.update({f"spectator {i}": v for i, v in enumerate(play.spectators)})
    held.update({f"{name} track": v.track for name, v in list(held.items()) if name.startswith(("player", "spect"))})
    return {name: weakref.ref(obj) for name, obj in held.items()}


def _alive(refs: dict[str, weakref.ref]) -> list[str]:
    return [name for name, ref in refs.items() if ref() is not None]


@pytest.mark.gl  # reference worlds (EGL)
def test_a_closed_session_is_freed_without_the_collector():
    async def go():
        cfg = serve_config(world=TINY_REFERENCE)
        left: list[list[str]] = []
        async with StreamServer(cfg) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            refs: dict[str, weakref.ref] = {}

            async def watched(sid: str) -> None:  # a spectator joins and watches while the player is there
                connected = asyncio.Event()

                async def watching(_: str) -> None:
                    connected.set()
                    await asyncio.sleep(30)

                spectator = asyncio.ensure_future(play_once(f"{url}?watch={sid}", frames=2, during=watching))
                await asyncio.wait([spectator, asyncio.ensure_future(connected.wait())], timeout=60,
                                   return_when=asyncio.FIRST_COMPLETED)
                assert connected.is_set(), spectator.exception() if spectator.done() else "no spectator"
                refs.update(_refs(server, sid))
                assert "spectator 0 track" in refs, sorted(refs)
                spectator.cancel()

            async def plain(sid: str) -> None:
                refs.update(_refs(server, sid))

            await play_once(url, frames=3)  # warm-up: codecs, executor threads, first imports
            await until_freed(server)
            gc.collect()
            gc.disable()
            try:
                for during in (plain, watched, plain):
                    refs.clear()
                    await play_once(url, frames=3, during=during)
                    await until_freed(server)
                    left.append(_alive(refs))
            finally:
                gc.enable()
        return left

    left = run(go())
    assert left == [[], [], []], f"still alive after close, the collector off: {left}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bundled_sessions_one_after_another_keep_rss_flat():
    """Real sessions of the default world: each world is gone the moment its session is, and RSS
    stays within 100 MB of the first (it grew by about 190 MB a session). `worldwalk bench --suite
    session-memory` runs 30."""
    n = 6
    worlds: list[weakref.ref] = []
    alive: list[int] = []

    async def during(server: StreamServer, sid: str) -> None:
        worlds.append(weakref.ref(server.sessions[sid].session.world))

    def after() -> None:  # the session has just been freed; the collector is still off
        if worlds[-1]() is not None:
            alive.append(len(worlds) - 1)

    cfg = serve_config(world=WorldConfig(name="bundled", accel="auto"))
    rss = run(sessions_rss(cfg, n, frames=3, during=during, after=after))
    print("RSS after each session (MiB):", [round(r) for r in rss])
    assert not alive, f"the worlds of sessions {alive} outlived their sessions (collector off)"
    grew = statistics.median(rss[1:]) - rss[0]  # single readings swing by tens of MiB
    assert grew < 100, f"RSS grew {grew:.0f} MiB (median) over {n} sessions: {rss}"
