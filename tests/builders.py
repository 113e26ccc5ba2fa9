"""What the serving tests build again and again, built one way: a loopback `ServeConfig` around a
small reference world, and a wait for a condition with a deadline that names what it waited for
(stream/browser_bench.py's, which the browser bench drives its page with)."""

from __future__ import annotations

from typing import Any

from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.browser_bench import wait_for  # noqa: F401 (one wait for the tests and the browser bench)
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
