"""What a browser may say on the input data channel, checked before it touches a session.

Every message is one JSON object of at most `max_bytes`, validated by hand against a small
schema (below), and let through a token-bucket rate limit. A message that fails any check is
dropped and counted by reason; nothing a browser sends can raise into the session.

Messages (field `t` selects the kind; `ts`, the sender's clock in ms, and `n`, the sender's
message number, are allowed on all; the gate remembers the last `n` it let through, which the
pose messages send back so the page knows which of its inputs a pose includes):

    {"t": "key", "key": "w", "down": true}          key NAMES as controls.InputState uses them
    {"t": "mouse", "dx": 3.0, "dy": -1.5}           pixels under pointer lock, +dx right, +dy down
    {"t": "pad", "ls": [x, y], "rs": [x, y], "lt": 0.0, "rt": 0.0}   Gamepad API, [-1, 1] / [0, 1]
    {"t": "blur"}                                   focus lost: release everything
    {"t": "cmd", "cmd": "reset" | "pause" | "resume" | "rewind"}
    {"t": "ping", "id": 7}                          answered with {"t": "pong", "id": 7, ...}

`receive` takes each message from the channel to its end: the gate, then a pong, or the player's
input carried out on its session (`apply_input`), or, for a spectator, a count of what was ignored.
"""

from __future__ import annotations

import json
import logging
import math
import string
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

# Key names a browser may press: letters, digits and the named keys of controls.InputState.
NAMED_KEYS = frozenset(
    {
        "shift", "ctrl", "alt", "space", "tab", "enter", "escape", "backspace",
        "left", "right", "up", "down", "pageup", "pagedown", "home", "end",
    }
)  # fmt: skip
KEY_NAMES = NAMED_KEYS | frozenset(string.ascii_lowercase) | frozenset(string.digits)
COMMANDS = frozenset({"reset", "pause", "resume", "rewind"})
MAX_MOUSE_DELTA = 10_000.0  # pixels in one message; more is not a mouse


@dataclass
class InputChannelConfig:
    max_bytes: int = 4096  # a message longer than this is dropped unread
    rate: float = 250.0  # messages per second, sustained (mouse and pad are sent once a frame)
    burst: float = 500.0  # messages allowed at once


@dataclass(frozen=True)
class InputMessage:
    """One validated message: `kind` plus its checked fields."""

    kind: str  # key | mouse | pad | blur | cmd | ping
    key: str = ""
    down: bool = False
    dx: float = 0.0
    dy: float = 0.0
    left_stick: tuple[float, float] = (0.0, 0.0)
    right_stick: tuple[float, float] = (0.0, 0.0)
    left_trigger: float = 0.0
    right_trigger: float = 0.0
    command: str = ""
    ping_id: int = 0
    seq: int = -1  # the sender's message number `n`, -1 when not sent


class InvalidMessage(ValueError):
    """A message that does not fit the schema; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# kind -> (required fields, optional fields); "t" and "ts" are always allowed
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "key": (frozenset({"key", "down"}), frozenset()),
    "mouse": (frozenset({"dx", "dy"}), frozenset()),
    "pad": (frozenset({"ls", "rs", "lt", "rt"}), frozenset()),
    "blur": (frozenset(), frozenset()),
    "cmd": (frozenset({"cmd"}), frozenset()),
    "ping": (frozenset({"id"}), frozenset()),
}


def _number(obj: dict[str, Any], name: str, lo: float, hi: float) -> float:
    v = obj[name]
    # bool is an int in Python; a browser sending true for a number is malformed
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidMessage("bad_type", f"{name} must be a number")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InvalidMessage("out_of_range", f"{name}={v} outside [{lo}, {hi}]")
    return v


def _stick(obj: dict[str, Any], name: str) -> tuple[float, float]:
    v = obj[name]
    if not isinstance(v, list) or len(v) != 2:
        raise InvalidMessage("bad_type", f"{name} must be [x, y]")
    pair = {"x": v[0], "y": v[1]}
    return (_number(pair, "x", -1.0, 1.0), _number(pair, "y", -1.0, 1.0))


def parse_message(raw: str | bytes, max_bytes: int = 4096) -> InputMessage:
    """Validate one data-channel message; raises `InvalidMessage` naming what is wrong."""
    msg, seq = _parse(raw, max_bytes)
    return msg if seq < 0 else replace(msg, seq=seq)


def _parse(raw: str | bytes, max_bytes: int) -> tuple[InputMessage, int]:
    if isinstance(raw, bytes):
        raise InvalidMessage("binary", "messages are JSON text")
    if not isinstance(raw, str):
        raise InvalidMessage("bad_type", "messages are JSON text")
    # len(str) <= bytes <= 4 * len(str): skip encoding what is surely too long
    if len(raw) > max_bytes or len(raw.encode("utf-8", "replace")) > max_bytes:
        raise InvalidMessage("oversized", f"more than {max_bytes} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidMessage("not_json", str(e)[:80]) from None
    if not isinstance(obj, dict):
        raise InvalidMessage("not_object", "a message is a JSON object")
    kind = obj.get("t")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise InvalidMessage("unknown_kind", f"t={str(kind)[:20]!r}")
    required, optional = _FIELDS[kind]
    keys = set(obj)
    missing = required - keys
    if missing:
        raise InvalidMessage("missing_field", ", ".join(sorted(missing)))
    extra = keys - required - optional - {"t", "ts", "n"}
    if extra:
        raise InvalidMessage("unknown_field", ", ".join(sorted(extra))[:80])
    if "ts" in obj:
        _number(obj, "ts", 0.0, 1e15)
    seq = -1
    if "n" in obj:
        n = obj["n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**53:
            raise InvalidMessage("bad_type", "n must be a non-negative integer")
        seq = n

    if kind == "key":
        key, down = obj["key"], obj["down"]
        if not isinstance(key, str) or key not in KEY_NAMES:
            raise InvalidMessage("unknown_key", str(key)[:20])
        if not isinstance(down, bool):
            raise InvalidMessage("bad_type", "down must be true or false")
        return InputMessage("key", key=key, down=down), seq
    if kind == "mouse":
        dx = _number(obj, "dx", -MAX_MOUSE_DELTA, MAX_MOUSE_DELTA)
        dy = _number(obj, "dy", -MAX_MOUSE_DELTA, MAX_MOUSE_DELTA)
        return InputMessage("mouse", dx=dx, dy=dy), seq
    if kind == "pad":
        return InputMessage(
            "pad",
            left_stick=_stick(obj, "ls"),
            right_stick=_stick(obj, "rs"),
            left_trigger=_number(obj, "lt", 0.0, 1.0),
            right_trigger=_number(obj, "rt", 0.0, 1.0),
        ), seq
    if kind == "cmd":
        cmd = obj["cmd"]
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            raise InvalidMessage("unknown_command", str(cmd)[:20])
        return InputMessage("cmd", command=cmd), seq
    if kind == "ping":
        pid = obj["id"]
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 2**53:
            raise InvalidMessage("bad_type", "id must be a non-negative integer")
        return InputMessage("ping", ping_id=pid), seq
    return InputMessage("blur"), seq


class RateLimiter:
    """Token bucket: `rate` messages a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class InputCounters:
    accepted: int = 0
    dropped: int = 0
    ignored: int = 0  # valid but not acted on (a spectator's input)
    reasons: Counter = field(default_factory=Counter)  # why messages were dropped

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "dropped": self.dropped,
            "ignored": self.ignored,
            "reasons": dict(self.reasons),
        }


class InputGate:
    """The per-connection checkpoint: size, schema, rate. `admit` never raises."""

    def __init__(self, cfg: InputChannelConfig | None = None, clock=time.monotonic) -> None:
        self.cfg = cfg or InputChannelConfig()
        self.counters = InputCounters()
        self.last_seq = -1  # the newest message number `n` let through
        self._limiter = RateLimiter(self.cfg.rate, self.cfg.burst, clock)

    def admit(self, raw: object) -> InputMessage | None:
        """The validated message, or None when it was dropped (and counted)."""
        if not self._limiter.allow():
            return self._drop("rate_limited")
        try:
            msg = parse_message(raw, self.cfg.max_bytes)  # type: ignore[arg-type]
        except InvalidMessage as e:
            return self._drop(e.reason)
        except Exception:  # noqa: BLE001 - whatever a browser sends must not reach the session
            return self._drop("invalid")
        self.counters.accepted += 1
        if msg.seq > self.last_seq:
            self.last_seq = msg.seq
        return msg

    def _drop(self, reason: str) -> None:
        self.counters.dropped += 1
        self.counters.reasons[reason] += 1
        return None


def receive(gate: InputGate, raw: object, *, reply: Callable[[dict[str, Any]], None],
            steered: Callable[[], Any], key_log: deque | None = None) -> None:
    """One data-channel message, start to end; nothing in it may raise. It passes `gate`; a ping is
    answered on `reply`; anything else steers what `steered()` gives (a player's `PlaySession`: its
    `session` and `last_input`), or is counted as ignored when that is None (a spectator's input, or
    a session already gone)."""
    msg = gate.admit(raw)
    if msg is None:
        return
    try:
        if msg.kind == "ping":
            reply({"t": "pong", "id": msg.ping_id, "server_time": time.time()})
        elif (play := steered()) is None:
            gate.counters.ignored += 1
        else:
            apply_input(play, msg, time.monotonic(), key_log)
    except Exception:  # noqa: BLE001
        log.exception("input message could not be applied")
        gate.counters.reasons["apply_failed"] += 1


def apply_input(play: Any, msg: InputMessage, now: float, key_log: deque | None = None) -> None:
    """A player's message carried out on `play.session`: keys, mouse and pad into its input box,
    commands on the session (a recording hears of resets and rewinds through the session's events).
    `play.last_input` (the idle timer) becomes `now`; a key goes into `key_log` (the pose channel's)."""
    play.last_input = now
    session, inputs = play.session, play.session.inputs
    if msg.kind == "key":
        (inputs.press if msg.down else inputs.release)(msg.key, now)
        if key_log is not None:
            key_log.append((msg.key, msg.down, now))
    elif msg.kind == "mouse":
        inputs.add_mouse(msg.dx, msg.dy, now)
    elif msg.kind == "pad":
        inputs.set_gamepad(msg.left_stick, msg.right_stick, msg.left_trigger, msg.right_trigger, now)
    elif msg.kind == "blur":
        inputs.clear(now)
    elif msg.command == "reset":
        session.reset()
    elif msg.command == "rewind":
        session.rewind()
    elif msg.command in ("pause", "resume"):
        session.set_paused(msg.command == "pause")
