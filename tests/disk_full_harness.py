"""A full disk under `serve --record-dir`, for real: run inside a private mount namespace where
two tiny tmpfs are mounted (see tests/test_serve_disk_full.py):

    unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs A && mount -t tmpfs -o size=48k tmpfs B &&
                      exec python -m tests.disk_full_harness A B C'

A is filled up before the server starts; B fills up while a session records into it; C is an
ordinary folder. Players are real aiortc peers on 127.0.0.1. Prints one JSON object (last line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from websockets.asyncio.client import connect

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config, wait_for
from .webrtc_client import Player


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fill(folder: Path) -> None:
    """Write until the file system says ENOSPC."""
    with open(folder / "filler", "wb", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == 28, e


def files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != "filler"}


async def play(url: str, seconds: float) -> dict:
    """One player: connect, take frames for `seconds`, return what it saw (stats, frames, errors)."""
    out: dict = {"frames": 0, "recording": []}
    async with Player(url) as player:
        answer = await player.open(timeout=10)
        if answer["type"] != "answer":
            out["error"] = answer
            return out
        out["frames"] = await player.frames_for(seconds)
    for state in (m.get("recording") for m in player.messages if m.get("t") == "stats"):
        if not out["recording"] or out["recording"][-1] != state:
            out["recording"].append(state)
    return out


async def main(full: Path, filling: Path, plain: Path) -> dict:
    handler = Records()
    logging.getLogger("worldwalk").addHandler(handler)
    logging.getLogger("worldwalk").setLevel(logging.INFO)
    fill(full)
    result: dict = {}
    for name, folder, seconds in (("full", full, 2.0), ("filling", filling, 6.0), ("plain", plain, 1.5)):
        cfg = serve_config(max_sessions=2, record_dir=str(folder), stats_interval=0.1)
        async with StreamServer(cfg) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"

            def idle() -> bool:
                slots = getattr(getattr(server, "admission", None), "slots_held", 0)
                return not server.sessions and not server.guests and not slots

            await play(url, 0.5)  # warm-up: codecs, GL, executor threads
            await wait_for(idle, 20, "the warm-up session to end")
            for p in list(folder.iterdir()):  # the warm-up's own files
                if p.name != "filler":
                    p.unlink()
            base = fds()
            for _ in range(3):  # sockets that never send an offer
                async with connect(url) as ws:
                    await ws.recv()
            await wait_for(idle, 10, "the offer-less sockets to be freed")
            no_offer_files = files(folder)
            players = [await play(url, seconds) for _ in range(2 if name == "full" else 1)]
            await wait_for(idle, 20, "every session to end")
            result[name] = {"players": players, "no_offer_files": no_offer_files, "files": files(folder),
                            "fds_before": base, "fds_after": fds()}
    records = [r for r in handler.records if r.levelno >= logging.WARNING]
    result["log"] = [f"{r.name}: {r.getMessage()[:200]}" for r in records]
    result["tracebacks"] = [f"{r.name}: {r.getMessage()[:200]}" for r in records if r.exc_info]
    return result


if __name__ == "__main__":
    full, filling, plain = map(Path, sys.argv[1:4])
    print(json.dumps(asyncio.run(asyncio.wait_for(main(full, filling, plain), 120)), default=str))
