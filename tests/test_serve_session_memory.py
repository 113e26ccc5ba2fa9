"""a closed session gives its memory back at once. With the cyclic garbage
collector off (with torch loaded it runs rarely in a real server), everything a closed session held
(the world above all, its `Session`, the server's records of it, its viewers, the fan-out) is freed
by reference counting alone as soon as the session ends, spectators included; over real bundled
sessions one after another the server's RSS stays flat."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import statistics
import threading
import time
import weakref

import pytest

from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.session_memory_bench import play_once, sessions_rss, until_freed
from worldwalk.stream.webrtc.server import StreamServer
from worldwalk.stream.webrtc.sessions import off_loop

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


class _LingeringPool(concurrent.futures.ThreadPoolExecutor):
    """A pool whose thread keeps its work item 0.3 s after the call has returned and the await has woken,
    as a busy machine's pool thread can (the race `off_loop` closes)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        fut: concurrent.futures.Future = concurrent.futures.Future()
        item = [fn, args, kwargs]

        def work() -> None:
            fut.set_result(item[0](*item[1], **item[2]))
            time.sleep(0.3)
            item.clear()

        threading.Thread(target=work, daemon=True).start()
        return fut


def test_a_session_closed_off_the_loop_is_not_kept_by_the_pool_thread():
    class Closable:
        def close(self) -> None:
            pass

    async def go() -> tuple[bool, bool]:
        asyncio.get_running_loop().set_default_executor(_LingeringPool())
        bound, boxed = Closable(), Closable()
        refs = weakref.ref(bound), weakref.ref(boxed)
        await asyncio.get_running_loop().run_in_executor(None, bound.close)  # the pool still holds it
        await off_loop(Closable.close, boxed)
        del bound, boxed
        return refs[0]() is not None, refs[1]() is not None

    kept_bound, kept_boxed = run(go(), timeout=10)
    assert kept_bound, "the lingering pool should keep a bound method's object (the test's premise)"
    assert not kept_boxed, "off_loop's subject outlived the call in the pool thread"


def test_a_session_nobody_claimed_is_gone_before_its_slot_is_given_back():
    """A session built for a browser that left before it was ready (`_close_unclaimed`) is closed off the
    loop, and the pool's thread no longer holds it when the slot is released."""
    from worldwalk.stream.webrtc.sessions import _close_unclaimed

    class Session:
        closed = False

        def close(self) -> None:
            self.closed = True

    class Play:
        def __init__(self) -> None:
            self.session, self.recorder = Session(), None

    class Slot:
        def __init__(self, ref: weakref.ref) -> None:
            self.ref, self.freed, self.play_alive = ref, threading.Event(), None

        def release(self) -> None:
            self.play_alive = self.ref() is not None
            self.freed.set()

    async def go() -> tuple[bool, bool | None]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(_LingeringPool())
        play = Play()
        session, slot = play.session, Slot(weakref.ref(play))
        fut = loop.create_future()
        fut.set_result(play)
        del play
        _close_unclaimed(slot, fut)
        del fut
        assert await asyncio.to_thread(slot.freed.wait, 5)
        return session.closed, slot.play_alive

    closed, alive = run(go(), timeout=10)
    assert closed, "the unclaimed session was not closed"
    assert alive is False, "the pool's thread still held the session when its slot was given back"
