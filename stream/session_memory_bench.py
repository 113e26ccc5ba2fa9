"""What a server keeps after its sessions close: its RSS over real WebRTC sessions one after another.

    python -m worldwalk.stream.session_memory_bench [--sessions 30] [--world bundled]

A `StreamServer` on 127.0.0.1 and an aiortc client in one process. Each session connects, receives
a few video frames and leaves; the next starts once the server has freed the last. The cyclic
garbage collector is off for the whole run (with torch loaded it runs rarely in a real server), so
anything a closed session leaves for it shows up as growth: a closed session must be freed by
reference counting alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .webrtc.peer import PeerConfig, gather_with_addresses

LOOPBACK = ["127.0.0.1"]


def rss_mib() -> float:
    """This process's resident memory, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def play_once(url: str, frames: int = 3, during: Callable[[str], Awaitable[None]] | None = None,
                    timeout: float = 120.0) -> str:
    """One browser-like WebRTC client (127.0.0.1 candidates only, no STUN): connect, offer, receive
    `frames` video frames, await `during(session id)`, leave. Returns the session id."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from websockets.asyncio.client import connect

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        async with connect(url) as ws:
            config = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if config.get("type") != "config":
                raise RuntimeError(f"the server did not take the client: {config}")
            pc.addTransceiver("video", direction="recvonly")
            pc.createDataChannel("input")
            got_track: asyncio.Future = asyncio.get_running_loop().create_future()
            pc.on("track", lambda track: got_track.done() or got_track.set_result(track))
            with gather_with_addresses(LOOPBACK):
                await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            while (answer := json.loads(await asyncio.wait_for(ws.recv(), timeout)))["type"] == "progress":
                pass
            if answer.get("type") != "answer":
                raise RuntimeError(f"no answer: {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            track = await asyncio.wait_for(got_track, timeout)
            for _ in range(frames):
                await asyncio.wait_for(track.recv(), timeout)
            if during is not None:
                await during(answer["session"])
            return answer["session"]
    finally:
        await pc.close()


async def until_freed(server: Any, timeout: float = 60.0) -> None:
    """Wait until the server holds no session and no guest."""
    deadline = time.monotonic() + timeout
    while server.sessions or server.guests or server.admission.slots_held:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server still held {len(server.sessions)} session(s) after {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def sessions_rss(cfg: Any, sessions: int, frames: int = 3,
                       during: Callable[[Any, str], Awaitable[None]] | None = None,
                       after: Callable[[], None] | None = None) -> list[float]:
    """RSS (MiB) after each of `sessions` sessions one after another, the collector off throughout.
    `during(server, session id)` runs while each session is live, `after()` once it has been freed."""
    from .webrtc.server import StreamServer

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        async with StreamServer(cfg) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            hook = None if during is None else (lambda sid: during(server, sid))
            out = []
            for _ in range(sessions):
                await play_once(url, frames, hook)
                await until_freed(server)
                out.append(rss_mib())
                if after is not None:
                    after()
            return out
    finally:
        if was_enabled:
            gc.enable()


def bench_config(world: str) -> Any:
    from worldwalk.runtime.world import WorldConfig

    from .webrtc.server import ServeConfig

    kw: dict[str, Any] = {"width": 64, "height": 32, "fps": 20.0} if world == "reference" else {"accel": "auto"}
    return ServeConfig(port=0, world=WorldConfig(name=world, **kw), peer=PeerConfig(candidate_addresses=LOOPBACK))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--world", default="bundled")
    args = p.parse_args()
    t0 = time.monotonic()
    rss = asyncio.run(sessions_rss(bench_config(args.world), args.sessions))
    for i, r in enumerate(rss, 1):
        print(f"after session {i:3d}: RSS {r:7.1f} MiB ({r - rss[0]:+.1f})")
    print(f"{args.sessions} sessions in {time.monotonic() - t0:.0f} s; the last {rss[-1] - rss[0]:+.1f} MiB "
          f"from the first, at most {max(rss) - rss[0]:+.1f}")


if __name__ == "__main__":
    main()
