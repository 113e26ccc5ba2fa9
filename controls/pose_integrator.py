"""``PoseIntegrator``: the player's intent integrated over time into camera-to-world poses.

Motion model (camera convention in camera.py; world y points down):
- Held keys and sticks set a target velocity: forward/back along the camera's +z projected on the
  horizontal x-z plane (so pitch never makes you fly), strafe along the horizontal right, rise
  and sink along world -y / +y. Yaw and pitch turn at constant rates while turn keys or the right
  stick are held. Pitch is clamped to +-pitch_limit.
- The world-frame velocity eases toward the target: dv/dt = (target(t) - v) / accel_time. The
  target turns with the yaw at a constant rate within a tick, and the ODE is solved in closed
  form (complex exponentials on the x-z plane), so a tick of dt lands on exactly the same pose
  and velocity as any slicing of dt into smaller ticks with the same input.
- Mouse motion is an impulse: it turns the camera at the start of the tick that first sees it.

Mouse delta consumption: an ``InputState`` carries mouse pixels accumulated since the last
``InputBox.take()``, tagged with the accumulation's ``mouse_epoch``. The integrator remembers how
much of the current epoch it has already applied and applies only the difference. So the same
state given to many ticks turns the camera once, a growing ``peek()`` state turns it by the growth,
and a ``take()`` state (a new epoch) is applied in full. Hand-made states all share epoch 0: to
apply the same delta twice, give the second state another ``mouse_epoch``.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field, fields

import numpy as np

from .bindings import Bindings
from .camera import check_pose, pose_matrix, rotation, yaw_pitch_roll
from .gamepad import GamepadConfig, gamepad_to_intent
from .input_state import InputState, Intent
from .timeline import InputTimeline


@dataclass
class IntegratorConfig:
    move_speed: float = 1.0  # units/s on the horizontal plane
    fast_multiplier: float = 3.0  # while the "fast" action is held (moves and rises)
    turn_speed: float = 90.0  # deg/s for the turn and look keys
    mouse_sensitivity: float = 0.15  # deg/pixel
    invert_mouse_y: bool = False
    stick_look_speed: float = 120.0  # deg/s at full right-stick deflection
    vertical_speed: float = 1.0  # units/s
    pitch_limit: float = 85.0  # deg, |pitch| <= pitch_limit
    accel_time: float = 0.12  # s, time constant of the velocity ease (0: instant)
    gamepad: GamepadConfig = field(default_factory=GamepadConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gamepad, dict):  # a [controls.gamepad] TOML table
            names = [f.name for f in fields(GamepadConfig)]
            unknown = sorted(set(self.gamepad) - set(names))
            if unknown:
                raise ValueError(f"IntegratorConfig.gamepad: unknown key(s) {unknown}; valid keys: {names}")
            self.gamepad = GamepadConfig(**self.gamepad)
        for name in ("move_speed", "fast_multiplier", "turn_speed", "mouse_sensitivity",
                     "stick_look_speed", "vertical_speed", "accel_time"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"IntegratorConfig.{name} must be finite and >= 0, got {v}")
        if not 0.0 < self.pitch_limit <= 90.0:
            raise ValueError(
                f"IntegratorConfig.pitch_limit must be in (0, 90] degrees, got {self.pitch_limit}"
            )


@dataclass(frozen=True)
class IntegratorState:
    """Everything the integrator integrates: enough to rewind it exactly.

    position: (3,) camera centre in world units. yaw, pitch, roll: radians (camera.py).
    velocity: (3,) world-frame velocity in units/s.
    """

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _phi(z: complex, T: float) -> complex:
    """(exp(z T) - 1) / z, equal to T at z = 0 and accurate for small |z T|."""
    zT = z * T
    if abs(zT) < 1e-5:
        return T * (1.0 + zT / 2.0 + zT * zT / 6.0)
    return (cmath.exp(zT) - 1.0) / z


def _clip_pitch(pitch: float, delta: float, limit: float) -> float:
    """pitch + delta clamped to [-limit, limit], never pushed further out if it already is."""
    return min(max(pitch + delta, min(-limit, pitch)), max(limit, pitch))


class PoseIntegrator:
    """Turns ``InputState``s into camera-to-world poses; see the module docstring."""

    def __init__(
        self,
        cfg: IntegratorConfig | None = None,
        bindings: Bindings | None = None,
        pose: np.ndarray | None = None,
    ) -> None:
        self.cfg = cfg or IntegratorConfig()
        self.bindings = bindings or Bindings()
        self._mouse_epoch: int | None = None
        self._mouse_applied = (0.0, 0.0)  # pixels of the current epoch already applied
        self.reset(pose)

    # -- state --------------------------------------------------------------------------------

    def reset(self, pose: np.ndarray | None = None) -> None:
        """Move to ``pose`` (identity if None) at rest. Mouse motion already applied stays applied."""
        if pose is None:
            self._pos = np.zeros(3)
            self._yaw = self._pitch = self._roll = 0.0
        else:
            pose = check_pose(pose)
            self._pos = pose[:3, 3].copy()
            self._yaw, self._pitch, self._roll = yaw_pitch_roll(pose[:3, :3])
        self._vel = np.zeros(3)

    def clone(self) -> PoseIntegrator:
        """An integrator with the same config, bindings, state and mouse bookkeeping."""
        other = PoseIntegrator.__new__(PoseIntegrator)
        other.cfg, other.bindings = self.cfg, self.bindings
        other._mouse_epoch, other._mouse_applied = self._mouse_epoch, self._mouse_applied
        other._pos, other._vel = self._pos.copy(), self._vel.copy()
        other._yaw, other._pitch, other._roll = self._yaw, self._pitch, self._roll
        return other

    def get_state(self) -> IntegratorState:
        p, v = self._pos, self._vel
        return IntegratorState(
            position=(float(p[0]), float(p[1]), float(p[2])),
            yaw=self._yaw,
            pitch=self._pitch,
            roll=self._roll,
            velocity=(float(v[0]), float(v[1]), float(v[2])),
        )

    def set_state(self, state: IntegratorState) -> None:
        self._pos = np.array(state.position, dtype=np.float64).reshape(3)
        self._vel = np.array(state.velocity, dtype=np.float64).reshape(3)
        self._yaw, self._pitch, self._roll = float(state.yaw), float(state.pitch), float(state.roll)

    @property
    def pose(self) -> np.ndarray:
        """The current camera-to-world pose (4, 4) float64."""
        return pose_matrix(rotation(self._yaw, self._pitch, self._roll), self._pos)

    @property
    def velocity(self) -> np.ndarray:
        """The current world-frame velocity (3,) in units/s."""
        return self._vel.copy()

    # -- mouse ----------------------------------------------------------------------------------

    def _pending_mouse(self, state: InputState) -> tuple[float, float]:
        """Pixels of ``state``'s mouse delta not applied yet."""
        if state.mouse_epoch != self._mouse_epoch:
            return state.mouse_dx, state.mouse_dy
        return state.mouse_dx - self._mouse_applied[0], state.mouse_dy - self._mouse_applied[1]

    def _mark_mouse_applied(self, state: InputState) -> None:
        self._mouse_epoch = state.mouse_epoch
        self._mouse_applied = (state.mouse_dx, state.mouse_dy)

    def mouse_look(self, dx: float, dy: float) -> tuple[float, float]:
        """(yaw, pitch) increments in radians for a mouse motion: right turns right, up looks up."""
        return self._mouse_angles(dx, dy)

    def _mouse_angles(self, dx: float, dy: float) -> tuple[float, float]:
        k = math.radians(self.cfg.mouse_sensitivity)
        return dx * k, (dy if self.cfg.invert_mouse_y else -dy) * k

    def _turn(self, yaw: float, pitch: float, dyaw: float, dpitch: float) -> tuple[float, float]:
        return (math.remainder(yaw + dyaw, math.tau),
                _clip_pitch(pitch, dpitch, math.radians(self.cfg.pitch_limit)))

    def preview(self, state: InputState) -> np.ndarray:
        """The current pose with ``state``'s not-yet-applied mouse look on top (rotation only, no
        translation, nothing advanced): what the player holds right now, for timewarp."""
        dyaw, dpitch = self._mouse_angles(*self._pending_mouse(state))
        yaw, pitch = self._turn(self._yaw, self._pitch, dyaw, dpitch)
        return pose_matrix(rotation(yaw, pitch, self._roll), self._pos)

    # -- integration ----------------------------------------------------------------------------

    def tick(self, dt: float, state: InputState) -> np.ndarray:
        """Advance by ``dt`` seconds holding ``state``; returns the new pose (4, 4)."""
        dx, dy = self._pending_mouse(state)
        self._mark_mouse_applied(state)
        self._advance(dt, state, dx, dy)
        return self.pose

    def plan(self, state: InputState, n: int, dt: float) -> np.ndarray:
        """Advance ``n`` ticks of ``dt`` holding ``state``, its new mouse motion spread evenly over
        the ticks (1/n applied at the start of each); returns the n poses (n, 4, 4)."""
        if n < 0:
            raise ValueError(f"plan needs n >= 0 ticks, got {n}")
        poses = np.empty((n, 4, 4))
        if n == 0:
            return poses
        dx, dy = self._pending_mouse(state)
        self._mark_mouse_applied(state)
        for i in range(n):
            self._advance(dt, state, dx / n, dy / n)
            poses[i] = self.pose
        return poses

    def follow(self, timeline: InputTimeline, times: np.ndarray | list[float]) -> np.ndarray:
        """Integrate ``timeline`` exactly from its start (this integrator's current state is the
        state at ``timeline.start``) and return the poses at ``times`` (m, 4, 4), ascending and
        >= ``timeline.start``. Held input changes and mouse motions act at their own times; past
        ``timeline.end`` the held input goes on. The integrator ends at ``times[-1]`` (or at
        ``timeline.end`` when no times are given)."""
        ts = np.asarray(times, dtype=np.float64).reshape(-1)
        if ts.size and (np.any(np.diff(ts) < 0) or ts[0] < timeline.start):
            raise ValueError("follow needs ascending times from the timeline's start on")
        stop = float(ts[-1]) if ts.size else timeline.end
        impulses: dict[float, list[float]] = {}
        for t, dx, dy in timeline.mouse:
            acc = impulses.setdefault(max(t, timeline.start), [0.0, 0.0])
            acc[0] += dx
            acc[1] += dy
        cuts = sorted({timeline.start, stop, *impulses, *(float(t) for t in ts),
                       *(h[0] for h in timeline.held if timeline.start < h[0] < stop)})
        poses = np.empty((ts.size, 4, 4))
        j = 0
        t = timeline.start
        for c in cuts:
            if c > stop:
                break
            for a, b, held in timeline.segments(t, c):
                self._advance(b - a, held, 0.0, 0.0)
            t = c
            if c in impulses:  # a mouse motion turns the camera at its time
                self._advance(0.0, timeline.state_at(c), *impulses[c])
            while j < ts.size and ts[j] == c:
                poses[j] = self.pose
                j += 1
        self._mark_mouse_applied(timeline.state)
        return poses

    def _intents(self, state: InputState) -> tuple[Intent, Intent]:
        pad = gamepad_to_intent(state.left_stick, state.right_stick, state.left_trigger,
                                state.right_trigger, self.cfg.gamepad)
        return self.bindings.intent(state.keys), pad

    def _rates(self, keys: Intent, pad: Intent) -> tuple[float, float]:
        cfg = self.cfg
        return (math.radians(keys.yaw * cfg.turn_speed + pad.yaw * cfg.stick_look_speed),
                math.radians(keys.pitch * cfg.turn_speed + pad.pitch * cfg.stick_look_speed))

    def turn_rates(self, state: InputState) -> tuple[float, float]:
        """(yaw, pitch) rates in rad/s that holding ``state`` turns at (keys and right stick)."""
        return self._rates(*self._intents(state))

    def _advance(self, dt: float, state: InputState, mouse_dx: float, mouse_dy: float) -> None:
        if not (math.isfinite(dt) and dt >= 0.0):
            raise ValueError(f"dt must be a finite number of seconds >= 0, got {dt}")
        cfg = self.cfg

        # 1. Mouse: an impulse at the start of the tick.
        myaw, mpitch = self._mouse_angles(mouse_dx, mouse_dy)
        yaw0, self._pitch = self._turn(self._yaw, self._pitch, myaw, mpitch)

        # 2. Intent from keys and sticks; turn rates in rad/s, constant over the tick.
        keys, pad = self._intents(state)
        yaw_rate, pitch_rate = self._rates(keys, pad)
        forward, right = keys.forward + pad.forward, keys.right + pad.right
        norm = math.hypot(forward, right)
        if norm > 1.0:
            forward, right = forward / norm, right / norm
        up = max(-1.0, min(1.0, keys.up + pad.up))
        speed_scale = cfg.fast_multiplier if keys.fast or pad.fast else 1.0

        # 3. Horizontal motion on the x-z plane as complex numbers z + i x: a heading yaw is
        #    exp(i yaw) (forward) and i exp(i yaw) (right), so turning is a multiplication.
        a = cmath.exp(1j * yaw0) * complex(forward, right) * cfg.move_speed * speed_scale
        v0 = complex(self._vel[2], self._vel[0])
        w = 1j * yaw_rate
        b = -up * cfg.vertical_speed * speed_scale  # target world-y velocity (up is -y)
        vy0 = float(self._vel[1])
        if cfg.accel_time > 0.0:
            k = 1.0 / cfg.accel_time
            decay = math.exp(-k * dt)
            ease = -math.expm1(-k * dt) / k  # integral of exp(-k t) over the tick
            # v(t) = e^{-kt} v0 + a k (e^{wt} - e^{-kt}) / (k + w)
            gain = a * k / (k + w)
            v1 = decay * v0 + gain * (cmath.exp(w * dt) - decay)
            dh = v0 * ease + gain * (_phi(w, dt) - ease)
            vy1 = b + (vy0 - b) * decay
            dvy = b * dt + (vy0 - b) * ease
        else:
            v1 = a * cmath.exp(w * dt)
            dh = a * _phi(w, dt)
            vy1, dvy = b, b * dt

        self._pos = self._pos + np.array([dh.imag, dvy, dh.real])
        self._vel = np.array([v1.imag, vy1, v1.real])
        self._yaw, self._pitch = self._turn(yaw0, self._pitch, yaw_rate * dt, pitch_rate * dt)
