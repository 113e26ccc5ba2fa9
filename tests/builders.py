"""What the serving tests build again and again, built one way: a loopback `ServeConfig` around a
small reference world, and a wait for a condition with a deadline that names what it waited for."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.webrtc.peer import PeerConfig
from worldwalk.stream.webrtc.server import ServeConfig
from worldwalk.stream.webrtc.video_track import FanoutConfig

TINY_REFERENCE = WorldConfig(name="reference", width=64, height=32, fps=20.0)


def serve_config(world: WorldConfig = TINY_REFERENCE, *, barcode: bool = False, **overrides: Any) -> ServeConfig:
    """A server on 127.0.0.1 (any free port) whose peers offer only loopback candidates; `barcode`
    stamps each frame's index into its pixels (FanoutConfig) so clients can tell frames apart."""
    cfg: dict[str, Any] = dict(host="127.0.0.1", port=0, world=world,
                               peer=PeerConfig(candidate_addresses=["127.0.0.1"]))
    if barcode:
        cfg["fanout"] = FanoutConfig(barcode=True)
    cfg.update(overrides)
    return ServeConfig(**cfg)


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
