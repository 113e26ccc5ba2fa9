"""Admission: who may open a websocket, and who may have a world built for them.

Two limits, held by one small thread-safe object so that every front end enforces them the
same way (`StreamServer` here, and the Ray Serve cluster mode's gateway, which reuses it):

- connections: at most `max_connections` signaling sockets open at once in total, and at most
  `max_connections_per_client` from one client address. `open_connection(key, client)` says
  whether a new one may proceed (None) or why not; `close_connection(key)` gives the place back.
- session slots: at most `max_sessions` worlds exist at once. `try_acquire()` returns a
  `SessionSlot` or None (busy). The caller acquires the slot *before* any work for the player
  and releases it only when the player's world is really gone (closed), not when the socket
  closes, so worlds being torn down still count and live worlds never exceed `max_sessions`.

    admission = Admission(AdmissionConfig(max_sessions=4))
    if (why := admission.open_connection(conn, addr)) is not None: refuse(503, why)
    slot = admission.try_acquire()          # None: busy
    ... valid offer arrives -> build the world ... world closed -> slot.release()
    admission.close_connection(conn)
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class AdmissionConfig:
    max_sessions: int = 4  # worlds (players) at once, counting those still being torn down
    max_connections: int = 64  # signaling sockets open at once, all clients together
    max_connections_per_client: int = 16  # sockets open at once from one address

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_connections", "max_connections_per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class SessionSlot:
    """One of the `max_sessions` places. `release()` is idempotent and thread-safe."""

    def __init__(self, owner: Admission) -> None:
        self._owner = owner
        self.released = False

    def release(self) -> None:
        self._owner._release(self)


class Admission:
    """The connection and session-slot limits; see the module docstring."""

    def __init__(self, cfg: AdmissionConfig | None = None) -> None:
        self.cfg = cfg or AdmissionConfig()
        self._lock = threading.Lock()
        self._slots = 0
        self._connections: dict[Hashable, str] = {}  # key -> client address
        self.refused_connections = 0

    # -- connections ------------------------------------------------------------------------

    def open_connection(self, key: Hashable, client: str) -> str | None:
        """Register a new signaling socket from `client`; None when admitted, else the reason."""
        with self._lock:
            if key in self._connections:
                return None
            if len(self._connections) >= self.cfg.max_connections:
                self.refused_connections += 1
                return f"the server has its maximum of {self.cfg.max_connections} open connections"
            mine = sum(1 for c in self._connections.values() if c == client)
            if mine >= self.cfg.max_connections_per_client:
                self.refused_connections += 1
                return (f"too many open connections from {client} "
                        f"(at most {self.cfg.max_connections_per_client})")
            self._connections[key] = client
            return None

    def close_connection(self, key: Hashable) -> None:
        with self._lock:
            self._connections.pop(key, None)

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- session slots ----------------------------------------------------------------------

    def try_acquire(self) -> SessionSlot | None:
        """A session slot, or None when all `max_sessions` are held."""
        with self._lock:
            if self._slots >= self.cfg.max_sessions:
                return None
            self._slots += 1
            return SessionSlot(self)

    def _release(self, slot: SessionSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._slots -= 1

    @property
    def slots_held(self) -> int:
        return self._slots

    @property
    def full(self) -> bool:
        return self._slots >= self.cfg.max_sessions
