"""The browser bench's walk: a real headless Chromium plays `worldwalk serve` over loopback.

    unshare -n sh -c 'ip link set lo up && exec python -m worldwalk.stream.browser_bench walk'

(`worldwalk bench --suite browser` runs it so, through stream/loopback_netns.py.) A `StreamServer` on
127.0.0.1 (reference world, 256x144 at 20 fps, a frame-number barcode in the pixels) serves one page
driven with playwright: at least 60 frames, then W held for a second. The result, one JSON object keyed
by scenario, goes to stdout on the last line: frames, poses, and the frame and key latencies the bench
reports. The browser tests (tests/serve_harness.py) run the same walk and more scenarios on the same
page driver (`open_player`, `ww`, `wait_for`, `run_scenarios`). Needs playwright and Chromium.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.webrtc.peer import PeerConfig
from worldwalk.stream.webrtc.server import ServeConfig, StreamServer
from worldwalk.stream.webrtc.video_track import FanoutConfig

from .loopback_netns import launch_chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

WIDTH, HEIGHT, FPS = 256, 144, 20.0
WALL_MINUS_MONO = time.time() - time.monotonic()  # server monotonic -> wall clock (ms below)


def server_config(**overrides: Any) -> ServeConfig:
    """The walk's server: 127.0.0.1 on any free port, peers offering only loopback candidates, each frame's
    index stamped into its pixels (FanoutConfig.barcode) so the page can tell frames apart."""
    kw: dict[str, Any] = dict(host="127.0.0.1", port=0,
                              world=WorldConfig(name="reference", width=WIDTH, height=HEIGHT, fps=FPS),
                              peer=PeerConfig(candidate_addresses=["127.0.0.1"]), fanout=FanoutConfig(barcode=True),
                              session=SessionConfig(), idle_timeout=60.0)
    kw.update(overrides)
    return ServeConfig(**kw)


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """The first truthy value of `pred()` (a plain or an async function), polled every `interval`
    seconds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


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


def player_of(server: StreamServer, session_id: str):
    return server.sessions[session_id].player



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


async def run_scenarios(scenarios: dict[str, Callable[[Any], Awaitable[dict]]], names: list[str]) -> dict:
    """Run the scenarios `names` one after another in one headless Chromium (launch_chromium: inside a
    loopback-only namespace); {name: result}, a scenario that raises giving {"error": traceback}."""
    from playwright.async_api import async_playwright

    results: dict[str, Any] = {}
    async with async_playwright() as p:
        context, profile = await launch_chromium(p)
        try:
            for name in names:
                t0 = time.monotonic()
                try:
                    results[name] = await asyncio.wait_for(scenarios[name](context), timeout=120)
                except Exception:
                    results[name] = {"error": traceback.format_exc()}
                results[name]["wall_s"] = round(time.monotonic() - t0, 2)
                for page in context.pages:
                    await page.close()
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)
    return results


SCENARIOS = {"walk": walk}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    print(json.dumps(asyncio.run(run_scenarios(SCENARIOS, names)), default=str))
