"""Gamepad mapping as pure functions: raw sticks and triggers in, an ``Intent`` out.

Left stick moves (up = forward, right = strafe right), right stick looks (right = turn right,
up = look up unless inverted), the right trigger rises and the left trigger sinks. Sticks get a
radial dead zone with rescaling, so motion starts from zero at the dead zone's edge instead of
jumping to the dead-zone value, and the full range is still reachable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .input_state import Intent


@dataclass
class GamepadConfig:
    dead_zone: float = 0.15  # radial, fraction of full stick deflection
    trigger_dead_zone: float = 0.05
    look_exponent: float = 1.0  # >1 gives finer aim near the centre of the right stick
    invert_look_y: bool = False

    def __post_init__(self) -> None:
        for name in ("dead_zone", "trigger_dead_zone"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"GamepadConfig.{name} must be in [0, 1), got {v}")
        if self.look_exponent <= 0.0:
            raise ValueError(f"GamepadConfig.look_exponent must be positive, got {self.look_exponent}")


def radial_dead_zone(stick: tuple[float, float], dead_zone: float = 0.15) -> tuple[float, float]:
    """Zero inside radius ``dead_zone``; outside, the magnitude is rescaled linearly from
    [dead_zone, 1] to [0, 1] keeping the direction. Magnitudes above 1 are clipped to 1."""
    x, y = float(stick[0]), float(stick[1])
    m = math.hypot(x, y)
    if m <= dead_zone or m == 0.0:
        return 0.0, 0.0
    scaled = (min(m, 1.0) - dead_zone) / (1.0 - dead_zone)
    return x / m * scaled, y / m * scaled


def axis_dead_zone(value: float, dead_zone: float = 0.05) -> float:
    """A one-axis dead zone for triggers in [0, 1], rescaled the same way."""
    v = min(max(float(value), 0.0), 1.0)
    return 0.0 if v <= dead_zone else (v - dead_zone) / (1.0 - dead_zone)


def gamepad_to_intent(
    left_stick: tuple[float, float],
    right_stick: tuple[float, float],
    left_trigger: float = 0.0,
    right_trigger: float = 0.0,
    cfg: GamepadConfig | None = None,
) -> Intent:
    """Raw gamepad values (sticks x right, y down) -> Intent."""
    cfg = cfg or GamepadConfig()
    mx, my = radial_dead_zone(left_stick, cfg.dead_zone)
    lx, ly = radial_dead_zone(right_stick, cfg.dead_zone)
    if cfg.look_exponent != 1.0:
        m = math.hypot(lx, ly)
        if m > 0.0:
            k = m ** (cfg.look_exponent - 1.0)
            lx, ly = lx * k, ly * k
    look_up = ly if cfg.invert_look_y else -ly  # stick pushed up (y < 0) looks up
    rise = axis_dead_zone(right_trigger, cfg.trigger_dead_zone)
    sink = axis_dead_zone(left_trigger, cfg.trigger_dead_zone)
    return Intent(
        forward=-my,
        right=mx,
        up=rise - sink,
        yaw=lx,
        pitch=look_up,
        fast=False,
    )
