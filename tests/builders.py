"""What the tests build again and again, built one way: a loopback `ServeConfig` around a small reference
world, a wait for a condition with a deadline that names what it waited for (`wait_for` in asyncio,
`poll_until` in plain threads), and a clock the test moves (`ManualClock`) for the session, the pacer
and the input box. The aiortc client is tests/webrtc_client.py."""

from __future__ import annotations

import asyncio
import inspect
import threading
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


class ManualClock:
    """A clock that moves only when the test sets `t`. Reads from threads other than the one that made
    it (a session's model thread) are counted in `reads` and wake `changed`, so a test can wait until
    that thread has looked at the time it set."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t
        self.reads = 0
        self.changed = threading.Condition()
        self._owner = threading.get_ident()

    def __call__(self) -> float:
        if threading.get_ident() != self._owner:
            with self.changed:
                self.reads += 1
                self.changed.notify_all()
        return self.t

    def settle(self, done: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
        """Wait (real time, the clock standing still) until `done()`; woken by every read of another
        thread and rechecked every 10 ms. TimeoutError naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.changed.wait(0.01)


def poll_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    """`wait_for` for plain threads: the first truthy value of `pred()`, polled every `interval` seconds;
    TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value
