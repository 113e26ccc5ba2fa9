"""Browser scenarios for `worldwalk serve`, run inside a loopback-only network namespace.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.serve_harness walk busy ...'

Each scenario starts a `StreamServer` on 127.0.0.1 (reference world, small frames, a frame-number
barcode in the pixels) and drives headless Chromium pages against it with playwright; the walk and the
page driver are the browser bench's (stream/browser_bench.py). The
results, one JSON object keyed by scenario, go to stdout on the last line; tests/test_serve_browser
asserts on them. A scenario that raises reports {"error": traceback} and the others still run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import shutil
import string
import sys
import threading
import time
import traceback

import numpy as np
from playwright.async_api import async_playwright

from worldwalk.runtime.session import SessionConfig
from worldwalk.stream.browser_bench import (  # the walk and the page driver the browser bench uses too
    open_player,
    player_of,
    run_scenarios,
    server_config,
    wait_for,
    walk,
    ww,
)
from worldwalk.stream.loopback_netns import launch_chromium
from worldwalk.stream.webrtc.peer import PeerConfig
from worldwalk.stream.webrtc.server import StreamServer


async def in_chromium(scenario, timeout: float) -> dict:
    """Run `scenario(context)` in a fresh headless Chromium (its own profile, removed after); its result,
    or {"error": traceback} (a harness prints one JSON object whatever happens)."""


    async with async_playwright() as p:
        context, profile = await launch_chromium(p)
        try:
            return await asyncio.wait_for(scenario(context), timeout)
        except Exception:
            return {"error": traceback.format_exc()}
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def py_threads_excluding_executor() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def settle(server: StreamServer, timeout: float = 15.0) -> None:
    await wait_for(lambda: _true(not server.sessions and not server.guests), timeout,
                   "the server to free every session")


async def _true(v: bool) -> bool:
    return v


# ---- scenarios ------------------------------------------------------------------------------------


async def two_and_busy(context) -> dict:
    """Two players have independent sessions, a spectator watches one, a third player is busy."""
    async with StreamServer(server_config(max_sessions=2)) as server:
        a = await open_player(context, server.url, frames=10)
        b = await open_player(context, server.url, frames=10)
        sid_a, sid_b = await ww(a, "ww.session"), await ww(b, "ww.session")
        # a spectator of A: same frames, its keys ignored
        spec = await open_player(context, server.url + f"?watch={sid_a}", frames=5)
        spec_role = await ww(spec, "ww.role")
        pa0 = server.sessions[sid_a].session.stats()["pose"][:3, 3].copy()
        pb0 = server.sessions[sid_b].session.stats()["pose"][:3, 3].copy()
        await spec.keyboard.down("w")
        await asyncio.sleep(0.6)
        await spec.keyboard.up("w")
        await spec.evaluate("() => window.worldwalk.send(JSON.stringify({t: 'key', key: 'w', down: true}))")
        await asyncio.sleep(0.6)
        pa_spec = server.sessions[sid_a].session.stats()["pose"][:3, 3].copy()
        spectator_ignored = next(v.gate.counters.ignored for v in server.guests if v.role == "spectator")
        # only A walks
        await a.bring_to_front()
        await a.keyboard.down("w")
        await asyncio.sleep(1.0)
        await a.keyboard.up("w")
        await asyncio.sleep(0.3)
        pa1 = server.sessions[sid_a].session.stats()["pose"][:3, 3].copy()
        pb1 = server.sessions[sid_b].session.stats()["pose"][:3, 3].copy()
        spec_frames = await ww(spec, "ww.frames.slice(-20).map(f => f.index)")
        a_frames = await ww(a, "ww.frames.slice(-20).map(f => f.index)")
        # a third player is told the server is busy, on the page, and gets no session
        c = await context.new_page()
        await c.goto(server.url)
        busy_state = await wait_for(lambda: ww(c, "ww.state !== 'connecting' && ww.state"), 15,
                                    "the third page to hear back")
        busy_text = await c.inner_text("#status-text")
        sessions_during_busy = len(server.sessions)
        # B leaves; the third page's Reconnect button now gets a session
        await b.close()
        await wait_for(lambda: _true(len(server.sessions) == 1), 10, "B's session to end")
        await c.click("#reconnect")
        await wait_for(lambda: ww(c, "ww.state === 'connected' && ww.framesShown > 0"), 30,
                       "the third page to connect after B left")
        sid_c = await ww(c, "ww.session")
        for p in (a, c, spec):
            await p.close()
        await settle(server)
        status = server.status()
    return {
        "sessions": [sid_a, sid_b],
        "spectator_role": spec_role,
        "spectator_moved_a": float(np.linalg.norm(pa_spec - pa0)),
        "spectator_ignored": spectator_ignored,
        "a_moved": float(np.linalg.norm(pa1 - pa0)),
        "b_moved": float(np.linalg.norm(pb1 - pb0)),
        "spectator_frames": spec_frames,
        "a_frames": a_frames,
        "busy_state": busy_state,
        "busy_text": busy_text,
        "sessions_during_busy": sessions_during_busy,
        "third_after_b_left": sid_c,
        "status": status,
    }


async def cycles(context, n: int = 20) -> dict:
    """n connect/disconnect cycles: threads and memory come back to their baseline."""
    async with StreamServer(server_config(max_sessions=1)) as server:

        async def one() -> None:
            page = await open_player(context, server.url, frames=3)
            await page.close()
            await settle(server)

        for _ in range(3):  # warm-up: imports, codec libraries, the executor's threads, GL drivers
            await one()
        gc.collect()
        await asyncio.sleep(0.5)
        base = {"rss_kib": rss_kib(), "os_threads": os_threads(), "named": py_threads_excluding_executor()}
        t0 = time.monotonic()
        trace = []
        for _ in range(n):
            await one()
            trace.append(rss_kib() // 1024)
        elapsed = time.monotonic() - t0
        gc.collect()
        await asyncio.sleep(0.5)
        after = {"rss_kib": rss_kib(), "os_threads": os_threads(), "named": py_threads_excluding_executor()}
        status = server.status()
    return {"n": n, "seconds": elapsed, "baseline": base, "after": after, "status": status,
            "rss_mib_per_cycle": trace}


def junk_messages(n: int, seed: int = 0) -> list[str]:
    """Malformed, oversized and random data-channel messages; none of them valid."""
    rng = random.Random(seed)
    printable = string.printable
    fixed = [
        "", "null", "[]", "42", '"w"', "{", "{}", '{"t": "key"}', '{"t": "warp", "x": 1}',
        '{"t": "key", "key": "w", "down": "yes"}', '{"t": "key", "key": "KeyW", "down": true}',
        '{"t": "key", "key": "w", "down": true, "extra": 1}', '{"t": "mouse", "dx": 1e309, "dy": 0}',
        '{"t": "mouse", "dx": NaN, "dy": 0}', '{"t": "mouse", "dx": 1e9, "dy": 0}',
        '{"t": "mouse", "dx": true, "dy": 0}', '{"t": "pad", "ls": [2, 0], "rs": [0, 0], "lt": 0, "rt": 0}',
        '{"t": "pad", "ls": [0], "rs": [0, 0], "lt": 0, "rt": 0}', '{"t": "cmd", "cmd": "shutdown"}',
        '{"t": "ping", "id": -1}', '{"t": "ping", "id": 1.5}', "[" * 5000 + "]" * 5000,
        '{"t": "key", "key": "' + "w" * 5000 + '", "down": true}', "x" * 70000, "\u00e9" * 3000,
    ]
    out = []
    for i in range(n):
        r = i % 4
        if r == 0:
            out.append(fixed[(i // 4) % len(fixed)])
        elif r == 1:
            out.append("".join(rng.choice(printable) for _ in range(rng.randint(1, 300))))
        elif r == 2:
            out.append(json.dumps({"t": rng.choice(["key", "mouse", "pad", "cmd", "ping", "zz"]),
                                   rng.choice("abcxyz"): rng.random(), "key": rng.randint(0, 9)}))
        else:
            out.append("{" + "".join(rng.choice('{}[]":,0123abc') for _ in range(rng.randint(5, 4500))))
    return out


async def malformed(context, n: int = 1000) -> dict:
    """n bad messages on the data channel: all dropped and counted, the video keeps flowing."""
    async with StreamServer(server_config()) as server:
        page = await open_player(context, server.url, frames=10)
        sid = await ww(page, "ww.session")
        guest = player_of(server, sid)
        # the page's own opening pings (eight in two seconds) go before the flood, not into it
        await wait_for(lambda: ww(page, "ww.pongs >= 8"), 10, "the page's opening pings")
        shown0 = await ww(page, "ww.framesShown")
        junk = junk_messages(n - 3)  # and 3 binary ones below
        sent = await page.evaluate(
            "(msgs) => msgs.map(m => window.worldwalk.send(m)).filter(Boolean).length", junk)
        binary = await page.evaluate("() => [1, 100, 5000].map(n => window.worldwalk.sendBinary(n))"
                                     ".filter(Boolean).length")
        total = sent + binary
        await wait_for(lambda: _true(guest.gate.counters.dropped >= total), 15,
                       f"{total} drops to be counted")
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        shown1 = await ww(page, "ww.framesShown")
        after_flood = (shown1 - shown0)
        stats = await wait_for(
            lambda: ww(page, f"ww.lastStats && ww.lastStats.input.dropped >= {total} && ww.lastStats"), 5,
            "the stats channel to report the drops")
        # still steerable after the flood (the rate limiter has refilled by now)
        pose0 = server.sessions[sid].session.stats()["pose"][:3, 3].copy()
        await page.keyboard.down("w")
        await asyncio.sleep(0.8)
        await page.keyboard.up("w")
        await asyncio.sleep(0.2)
        pose1 = server.sessions[sid].session.stats()["pose"][:3, 3].copy()
        result = {
            "sent": total,
            "binary": binary,
            "server_counters": guest.gate.counters.as_dict(),
            "stats_dropped": stats["input"]["dropped"],
            "frames_shown_during_1_5s_after": after_flood,
            "seconds": time.monotonic() - t0,
            "session_error": server.sessions[sid].session.error,
            "moved_after": float(np.linalg.norm(pose1 - pose0)),
        }
        await page.close()
        await settle(server)
    return result


async def token(context) -> dict:
    """A server configured as if public: no or a wrong token is refused at signaling."""
    cfg = server_config(require_token=True, token="s3cret-token")
    async with StreamServer(cfg) as server:
        base = server.url.split("?")[0]
        out = {}
        for label, url in (("missing", base), ("wrong", base + "?token=nope")):
            page = await context.new_page()
            await page.goto(url)
            state = await wait_for(lambda p=page: ww(p, "ww.state !== 'connecting' && ww.state"), 10,
                                   f"the {label}-token page to be refused")
            out[label] = {"state": state, "text": await page.inner_text("#status-text"),
                          "sessions": len(server.sessions)}
            await page.close()
        page = await open_player(context, server.url, frames=3)
        first = await ww(page, "ww.session")
        out["right"] = {"state": await ww(page, "ww.state"), "sessions": len(server.sessions)}
        # the toolbar's Reconnect: a fresh session replaces the old one, which is freed
        await page.click("#reconnect-button")
        await wait_for(lambda: ww(page, f"ww.state === 'connected' && ww.session && ww.session !== '{first}'"),
                       30, "the page to reconnect")
        await wait_for(lambda: _true(len(server.sessions) == 1), 10, "the old session to be freed")
        out["reconnect"] = {"new_session": await ww(page, "ww.session") != first,
                            "sessions": list(server.sessions) != [first] and len(server.sessions)}
        await page.close()
        await settle(server)
    return out


async def walk_small_queue(context) -> dict:
    return await walk(context, session=SessionConfig(queue_capacity=4))


async def walk_vp8(context) -> dict:
    return await walk(context, peer=PeerConfig(candidate_addresses=["127.0.0.1"], codecs=("video/VP8",)))


FAKE_GAMEPAD = """
(() => {
  // a standard-mapping gamepad whose left stick is pushed forward while window.padForward is set
  const button = (v) => ({pressed: v > 0.5, touched: v > 0, value: v});
  navigator.getGamepads = () => [{
    id: 'fake pad', index: 0, connected: true, mapping: 'standard', timestamp: performance.now(),
    axes: [0, window.padForward ? -1 : 0, 0, 0],
    buttons: Array.from({length: 17}, () => button(0)),
  }];
})();
"""


async def gamepad(context) -> dict:
    """The Gamepad API path: a (scripted) stick pushed forward walks the camera forward."""
    async with StreamServer(server_config()) as server:
        page = await context.new_page()
        await page.add_init_script(FAKE_GAMEPAD)
        await page.goto(server.url)
        await wait_for(lambda: ww(page, "ww.state === 'connected' && ww.framesShown > 3"), 30, "connect")
        sid = await ww(page, "ww.session")
        pose0 = server.sessions[sid].session.stats()["pose"][:3, 3].copy()
        await page.evaluate("() => { window.padForward = true; }")
        await asyncio.sleep(1.0)
        await page.evaluate("() => { window.padForward = false; }")
        await asyncio.sleep(0.5)
        pose1 = server.sessions[sid].session.stats()["pose"][:3, 3].copy()
        counters = player_of(server, sid).gate.counters.as_dict()
        await page.close()
        await settle(server)
    return {"step": (pose1 - pose0).tolist(), "input": counters}


SCENARIOS = {"gamepad": gamepad,
             "walk": walk, "walk_small_queue": walk_small_queue, "walk_vp8": walk_vp8, "two_and_busy": two_and_busy,
             "cycles": cycles, "malformed": malformed, "token": token}


if __name__ == "__main__":
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    res = asyncio.run(run_scenarios(SCENARIOS, names))
    print(json.dumps(res, default=str))
