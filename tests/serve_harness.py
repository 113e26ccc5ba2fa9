"""Browser scenarios for `worldwalk serve`, run inside a loopback-only network namespace.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.serve_harness walk busy ...'

Each scenario starts a `StreamServer` on 127.0.0.1 (reference world, small frames, a frame-number
barcode in the pixels) and drives headless Chromium pages against it with playwright. The
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
import statistics
import string
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
from playwright.async_api import Page, async_playwright

from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.webrtc.peer import PeerConfig
from worldwalk.stream.webrtc.server import ServeConfig, StreamServer

from . import builders
from .builders import wait_for  # noqa: F401 (the page harnesses take it from here)
from .loopback_netns import launch_chromium

WIDTH, HEIGHT, FPS = 256, 144, 20.0
WALL_MINUS_MONO = time.time() - time.monotonic()  # server monotonic -> wall clock (ms below)


def server_config(**overrides: Any) -> ServeConfig:
    kw: dict[str, Any] = dict(world=WorldConfig(name="reference", width=WIDTH, height=HEIGHT, fps=FPS),
                              session=SessionConfig(), idle_timeout=60.0)
    kw.update(overrides)
    return builders.serve_config(barcode=True, **kw)


async def ww(page: Page, expr: str) -> Any:
    return await page.evaluate(f"() => {{ const ww = window.worldwalk; return {expr}; }}")


async def open_player(context, url: str, frames: int = 1, timeout: float = 30.0) -> Page:
    page = await context.new_page()
    await page.goto(url)
    await wait_for(lambda: ww(page, "ww.state === 'connected' && ww.framesShown"), timeout,
                   f"{url} to connect and show a frame")
    if frames > 1:
        await wait_for(lambda: ww(page, f"ww.frames.length >= {frames}"), timeout, f"{frames} frames")
    return page


async def in_chromium(scenario, timeout: float) -> dict:
    """Run `scenario(context)` in a fresh headless Chromium (its own profile, removed after); its result,
    or {"error": traceback} (a harness prints one JSON object whatever happens)."""
    import shutil
    import traceback

    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context, profile = await launch_chromium(p)
        try:
            return await asyncio.wait_for(scenario(context), timeout)
        except Exception:
            return {"error": traceback.format_exc()}
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


def player_of(server: StreamServer, session_id: str):
    return server.sessions[session_id].player


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


async def walk(context, **overrides: Any) -> dict:
    """One browser: >= 60 frames of the configured size; hold W for a second; latency figures."""
    async with StreamServer(server_config(**overrides)) as server:
        page = await open_player(context, server.url, frames=60)
        shown = await ww(page, "ww.frames.slice()")
        sizes = sorted({(f["width"], f["height"]) for f in shown})
        video_size = await ww(page, "[document.getElementById('video').videoWidth, "
                                    "document.getElementById('video').videoHeight]")
        sid = await ww(page, "ww.session")
        play = server.sessions[sid]
        pose_before = play.session.stats()["pose"].copy()
        stats_before = await ww(page, "ww.lastStats")
        index_before = shown[-1]["index"]
        img_before = await grab(page)

        await page.keyboard.down("w")
        await asyncio.sleep(1.0)
        await page.keyboard.up("w")
        await asyncio.sleep(1.2)  # the chunks made while W was held reach the browser

        pose_after = play.session.stats()["pose"].copy()
        stats_after = await ww(page, "ww.lastStats")
        shown = await ww(page, "ww.frames.slice()")
        img_after = await grab(page)
        key_events = await ww(page, "ww.keyEvents.slice()")
        codec = await ww(page, "ww.codec")
        history = {f.index: f for f in play.fanout.history}
        key_log = list(player_of(server, sid).key_log)

        # positions of the frames the browser showed (barcode -> the server's frame record)
        shown_positions = [(f["index"], history[f["index"]].position) for f in shown if f["index"] in history]
        last_before = next((p for i, p in reversed(shown_positions) if i <= index_before), None)
        last_shown = shown_positions[-1][1] if shown_positions else None

        # latency: frame created on the server -> the browser's video frame callback
        lat_frame = [f["wall"] - 1000 * (history[f["index"]].created + WALL_MINUS_MONO)
                     for f in shown if f["index"] in history]
        lat_transport = [f["wall"] - 1000 * (history[f["index"]].released + WALL_MINUS_MONO)
                         for f in shown if f["index"] in history]
        lat_received = [f["received"] - 1000 * (history[f["index"]].released + WALL_MINUS_MONO)
                        for f in shown if f["index"] in history and f.get("received")]
        # latency: key press in the browser -> first frame generated with it (and shown)
        down = next(e for e in key_events if e["key"] == "w" and e["down"])
        received = next(t for k, d, t in key_log if k == "w" and d)
        first = next((f for f in sorted(history.values(), key=lambda f: f.index)
                      if f.input_time is not None and f.input_time >= received), None)
        shown_first = next((f for f in shown if first is not None and f["index"] >= first.index), None)
        key = {
            "to_server_ms": 1000 * (received + WALL_MINUS_MONO) - down["wall"],
            "to_generated_ms": (1000 * (first.created + WALL_MINUS_MONO) - down["wall"]) if first else None,
            "to_shown_ms": (shown_first["wall"] - down["wall"]) if shown_first else None,
            # the page's own split of the press (ms): in, wait, plan, generate, decode, queue, out, paint
            "split": (await ww(page, "ww.latency.slice()") or [None])[0],
        }
        pcs = [v.pc for v in server.guests]
        clock = await ww(page, "ww.clock")
        rtp = await page.evaluate("() => window.worldwalk.inboundVideo()")
        per_frame = {}
        if rtp and rtp.get("framesDecoded"):
            per_frame = {
                "decode_ms": 1000 * rtp["totalDecodeTime"] / rtp["framesDecoded"],
                "jitter_buffer_ms": 1000 * rtp["jitterBufferDelay"] / max(1, rtp["jitterBufferEmittedCount"]),
                "processing_ms": 1000 * rtp.get("totalProcessingDelay", 0) / rtp["framesDecoded"],
                "frames_dropped": rtp.get("framesDropped"),
                "decoder": rtp.get("decoderImplementation"),
            }
        ended_before = await ww(page, "ww.state")
    # after the server closed: every peer connection closed, the page told so
    await asyncio.sleep(0.3)
    return {
        "frames": len(shown),
        "sizes": sizes,
        "video_size": video_size,
        "codec": codec,
        "pose_before": np.asarray(pose_before).tolist(),
        "pose_after": np.asarray(pose_after).tolist(),
        "stats_position_before": stats_before["position"],
        "stats_position_after": stats_after["position"],
        "stats_frame_advance": stats_after["frame"] - stats_before["frame"],
        "shown_position_before": list(last_before) if last_before is not None else None,
        "shown_position_after": list(last_shown) if last_shown is not None else None,
        "image_change": img_change(img_before, img_after),
        "latency_frame_ms": summarize(lat_frame),
        "latency_release_to_callback_ms": summarize(lat_transport),
        "latency_release_to_received_ms": summarize(lat_received),
        "latency_key_ms": key,
        "state_before_shutdown": ended_before,
        "browser_clock": clock,
        "browser_receiver": per_frame,
        "pcs_closed_on_shutdown": all(pc is not None and pc.connectionState == "closed" for pc in pcs),
        "page_state_after_shutdown": await ww(page, "ww.state"),
        "page_status_after_shutdown": await page.inner_text("#status-text"),
    }


async def grab(page: Page) -> list[float]:
    """The video's current picture (below the barcode band), as a small grey thumbnail."""
    return await page.evaluate("""() => {
        const v = document.getElementById('video');
        const c = document.createElement('canvas'); c.width = 32; c.height = 16;
        const g = c.getContext('2d');
        g.drawImage(v, 0, 16, v.videoWidth, v.videoHeight - 16, 0, 0, 32, 16);
        const d = g.getImageData(0, 0, 32, 16).data; const out = [];
        for (let i = 0; i < d.length; i += 4) out.push((d[i] + d[i + 1] + d[i + 2]) / 3);
        return out;
    }""")


def img_change(a: list[float], b: list[float]) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def summarize(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values),
            "p90": float(np.percentile(values, 90)), "min": min(values), "max": max(values)}


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


async def main(names: list[str]) -> dict:
    results: dict[str, Any] = {}
    async with async_playwright() as p:
        context, profile = await launch_chromium(p)
        try:
            for name in names:
                t0 = time.monotonic()
                try:
                    results[name] = await asyncio.wait_for(SCENARIOS[name](context), timeout=120)
                except Exception:
                    results[name] = {"error": traceback.format_exc()}
                results[name]["wall_s"] = round(time.monotonic() - t0, 2)
                for page in context.pages:
                    await page.close()
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)
    return results


if __name__ == "__main__":
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    res = asyncio.run(main(names))
    print(json.dumps(res, default=str))
