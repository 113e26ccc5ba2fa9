"""Matrix-Game in the browser, in headless Chromium inside a loopback-only namespace:

    unshare -n sh -c 'ip link set lo up && exec python -m tests.page_matrix_game_harness'

Serves the tiny random Matrix-Game world, opens the player page, clicks into it and holds W then
moves the mouse. Reports whether the page's timewarp stayed off (an action world's frames have no
camera to turn them by), how many frames it showed, and the actions the world was sent. One JSON
object on the last line.
"""

from __future__ import annotations

import asyncio
import json

from worldwalk.stream.webrtc.server import StreamServer

from .builders import matrix_game_config, wait_for
from .serve_harness import in_chromium, open_player, server_config, ww


async def walk(context) -> dict:
    out: dict = {}
    world = matrix_game_config(seed=1)
    async with StreamServer(server_config(world=world)) as server:
        page = await open_player(context, server.url, frames=3, timeout=60)
        vp = page.viewport_size
        await page.mouse.click(vp["width"] / 2, vp["height"] / 2)  # closes the help, focuses the page
        await wait_for(lambda: ww(page, "ww.timewarp.poses > 3"), 30, "pose messages")
        session = next(iter(server.sessions.values())).session
        sent: set[str] = set()
        await page.keyboard.down("w")
        for _ in range(60):  # the actions of the chunks planned while W is held
            await asyncio.sleep(0.05)
            sent.add(session.world.actions_sent)
        await page.keyboard.up("w")
        out["sent"] = sorted(s for s in sent if s)
        out["timewarp_on"] = await ww(page, "ww.timewarp.on")
        out["timewarp_active"] = await ww(page, "ww.timewarp.active")
        out["frames"] = await ww(page, "ww.frames.length")
    return out


async def main() -> dict:
    return await in_chromium(walk, 120)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
