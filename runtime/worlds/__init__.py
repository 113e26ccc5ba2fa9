"""The worlds: the reference world (a GLSL shader on a headless GL context) and the bundled model, and
`create_world`, which builds any registered world and runs its steps on the `--accel` backend asked for.

Building sits here, above runtime/accel, because accel knows the steps it runs (SANA-WM's chunk step and
VAE decode) while the worlds that export them know nothing of accel: the builder applies the backend.
"""

from __future__ import annotations

import logging
from typing import Any

from worldwalk.runtime.world import Accelerable, UnknownWorldError, WorldConfig, WorldModel, available_worlds

log = logging.getLogger(__name__)


def create_world(cfg: WorldConfig) -> WorldModel:
    worlds = available_worlds()
    if cfg.name not in worlds:
        names = ", ".join(sorted(worlds)) or "none"
        raise UnknownWorldError(
            f"unknown world {cfg.name!r}; registered worlds: {names}. "
            "Reinstall the package (pip install -e .) if one you expect is missing."
        )
    factory = worlds[cfg.name].load()
    world = factory(cfg)
    if cfg.accel != "none":
        try:
            if isinstance(world, Accelerable):
                chosen = accelerate(world, cfg.accel)  # builds the graphs now, not as a stall in play
            else:
                if cfg.accel != "auto":
                    log.warning("--accel %s: %s has no chunk step to accelerate; running it as is",
                                cfg.accel, type(world).__name__)
                chosen = "none"
        except BaseException:
            world.close()
            raise
        world.accel = chosen  # what ran: session logs record it
    return world


def accelerate(world: Any, choice: str) -> str:
    """Run `world`'s chunk step and VAE decode through backend `choice` (runtime/accel) and build its
    graphs now; returns the backend chosen. The world is left mid-session: reset it before use."""
    from worldwalk.runtime.accel.apply import apply_accel, warm_up

    chosen = apply_accel(world, choice)
    if chosen != "none":
        warm_up(world)
    return chosen


__all__ = ["accelerate", "create_world"]
