"""The page's first click, in headless Chromium inside a loopback-only namespace:

    unshare -n sh -c 'ip link set lo up && exec python -m tests.page_harness'

Opens the player page, and reports what lies under the centre of the picture while the help panel
is up, what a click there does (help closed, pointer lock asked for), what a click on the help
panel itself does, and what GET /favicon.ico returns. The player's world takes a second to build,
announced as a first start's graph build is (runtime/accel/apply.py): the page's status line says how
long so far. One JSON object on the last line.
"""

from __future__ import annotations

import asyncio
import json
import time

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.accel.announce import announce
from worldwalk.runtime.session import Session
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.webrtc.server import ServeConfig, StreamServer

from .builders import wait_for
from .serve_harness import in_chromium, open_player, server_config

COUNT_LOCKS = """() => {
  window.__locks = 0;
  const v = document.getElementById('video');
  const orig = v.requestPointerLock.bind(v);
  v.requestPointerLock = (...a) => { window.__locks++; return orig(...a); };
}"""


# every text the status line shows, in order (installed before the page's own script runs)
WATCH_STATUS = """() => {
  window.__statusTexts = [];
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.getElementById('status-text');
    new MutationObserver(() => window.__statusTexts.push(el.textContent))
      .observe(el, {childList: true, characterData: true, subtree: true});
  });
}"""


def slow_first_build(cfg: ServeConfig, seconds: float = 1.2):
    """The server's own session, after `seconds` of a build announced like a first start's graph build."""

    def make(start: object = None) -> Session:  # a PlayerStart: every one a new walk here
        with announce("accel: building graphs", first_after=0.05, tell_every=0.25):
            time.sleep(seconds)
        return Session(create_world(cfg.world), cfg.session, integrator=PoseIntegrator(cfg.controls, cfg.bindings))

    return make


async def first_click(context) -> dict:
    out: dict = {}
    cfg = server_config()
    await context.add_init_script(script=f"({WATCH_STATUS})()")
    async with StreamServer(cfg, session_factory=slow_first_build(cfg)) as server:
        page = await open_player(context, server.url)
        out["progress"] = await page.evaluate("() => window.worldwalk.progress")
        out["status_texts"] = await page.evaluate("() => window.__statusTexts")
        await page.evaluate(COUNT_LOCKS)
        await wait_for(lambda: page.evaluate("() => !document.getElementById('help').hidden"), 10, "the help panel")
        vp = page.viewport_size
        cx, cy = vp["width"] / 2, vp["height"] / 2
        out["under_centre"] = await page.evaluate(f"() => document.elementFromPoint({cx}, {cy}).id")
        await page.mouse.click(cx, cy)
        await asyncio.sleep(0.3)
        out["help_hidden_after_centre_click"] = await page.evaluate("() => document.getElementById('help').hidden")
        out["locks_after_centre_click"] = await page.evaluate("() => window.__locks")
        await page.evaluate("() => document.exitPointerLock && document.exitPointerLock()")
        await page.click("#help-button")  # the help again; this time click on the panel itself
        box = await page.locator("#help").bounding_box()
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
        await asyncio.sleep(0.3)
        out["help_hidden_after_panel_click"] = await page.evaluate("() => document.getElementById('help').hidden")
        out["locks_after_panel_click"] = await page.evaluate("() => window.__locks")
        out["favicon"] = await page.evaluate("""async () => {
            const r = await fetch('/favicon.ico');
            return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength];
        }""")
        out["icon_link"] = await page.evaluate("() => !!document.querySelector('link[rel=icon]')")
    return out


async def main() -> dict:
    return await in_chromium(first_click, 90)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
