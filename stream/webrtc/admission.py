"""Admission: who may open a websocket, and who may have a world built for them.

Two limits, held by one small thread-safe object so that every front end enforces them the
same way (`StreamServer` here, and the Ray Serve cluster mode's gateway, which reuses it):

- connections: at most `max_connections` signaling sockets open at once in total, and at most
  `max_connections_per_client` from one client address, counted from accept.
  `open_connection(key, client)` says whether a new one may proceed (None) or why not;
  `close_connection(key)` gives the place back. A socket is *idle* until `request_received(key)`
  (its HTTP request is complete). When every place is taken and `evict` is given, a newcomer takes
  the place of the oldest socket that has been idle for `evict_idle_after` seconds (`evict` is told
  to close it): a browser sends its request at once, so sockets held open without one cannot keep
  players out.
- session slots: at most `max_sessions` worlds exist at once, at most `max_sessions_per_client`
  for one client address. `try_acquire(client)` returns a `SessionSlot` or None (busy). The
  caller acquires the slot *before* any work for the player and releases it only when the
  player's world is really gone (closed), not when the socket closes, so worlds being torn down
  still count and live worlds never exceed `max_sessions`.

    admission = Admission(AdmissionConfig(max_sessions=4))
    if (why := admission.open_connection(conn, addr, evict=close)) is not None: refuse(503, why)
    admission.request_received(conn)        # its request is complete
    slot = admission.try_acquire(addr)      # None: busy
    ... valid offer arrives -> build the world ... world closed -> slot.release()
    admission.close_connection(conn)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from worldwalk.runtime.world import CPU_SESSIONS, WorldConfig

log = logging.getLogger(__name__)


def default_max_sessions(cfg: WorldConfig) -> int:
    """`serve --max-sessions` when not given: on a GPU what the world's own memory plan fits beside one
    shared model (its weights, the graphs or engines of `cfg.accel`, a chunk's activations; pinned snapshot
    memory within the process's budget: runtime/bench/memory_plan.py:planned_sessions, SANA-WM's plan or
    Matrix-Game's); on the CPU, 4."""
    if not cfg.device.startswith("cuda"):
        return CPU_SESSIONS  # no torch import for this: the reference world never needs torch
    from worldwalk.runtime.bench.memory_plan import planned_sessions

    n, why = planned_sessions(cfg)
    log.info("serve: at most %d sessions (%s)", n, why)
    return n


@dataclass
class AdmissionConfig:
    max_sessions: int = 4  # worlds (players) at once, counting those still being torn down
    max_connections: int = 64  # signaling sockets open at once, all clients together
    max_connections_per_client: int = 16  # sockets open at once from one address
    max_sessions_per_client: int = 2  # worlds at once for one address
    evict_idle_after: float = 1.0  # seconds: a socket idle this long may give its place to a newcomer

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_connections", "max_connections_per_client", "max_sessions_per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class SessionSlot:
    """One of the `max_sessions` places. `release()` is idempotent and thread-safe."""

    def __init__(self, owner: Admission, client: str | None) -> None:
        self._owner = owner
        self.client = client
        self.released = False

    def release(self) -> None:
        self._owner._release(self)


class Admission:
    """The connection and session-slot limits; see the module docstring."""

    def __init__(self, cfg: AdmissionConfig | None = None) -> None:
        self.cfg = cfg or AdmissionConfig()
        self._lock = threading.Lock()
        self._slots = 0
        self._client_slots: dict[str, int] = {}
        self._connections: dict[Hashable, str] = {}  # key -> client address
        self._idle: dict[Hashable, float] = {}  # key -> accepted at (monotonic), oldest first
        self.refused_connections = 0
        self.evicted_connections = 0

    # -- connections ------------------------------------------------------------------------

    def open_connection(self, key: Hashable, client: str,
                        evict: Callable[[Hashable], object] | None = None) -> str | None:
        """Register a new signaling socket from `client`; None when admitted, else the reason. Over
        the total, with `evict`, the oldest idle socket gives its place (`evict(its key)` closes it)."""
        victim = None
        with self._lock:
            if key in self._connections:
                return None
            mine = sum(1 for c in self._connections.values() if c == client)
            if mine >= self.cfg.max_connections_per_client:
                self.refused_connections += 1
                return (f"too many open connections from {client} "
                        f"(at most {self.cfg.max_connections_per_client})")
            if len(self._connections) >= self.cfg.max_connections:
                victim = self._oldest_idle() if evict is not None else None
                if victim is None:
                    self.refused_connections += 1
                    return f"the server has its maximum of {self.cfg.max_connections} open connections"
                self._connections.pop(victim, None)
                self._idle.pop(victim, None)
                self.evicted_connections += 1
            self._connections[key] = client
            self._idle[key] = time.monotonic()
        if victim is not None:  # only ever chosen when `evict` was given
            evict(victim)
        return None

    def _oldest_idle(self) -> Hashable | None:
        oldest = next(iter(self._idle.items()), None)  # insertion order: oldest first
        return oldest[0] if oldest and time.monotonic() - oldest[1] >= self.cfg.evict_idle_after else None

    def request_received(self, key: Hashable) -> None:
        """The socket's request is complete: it is no longer idle (nor evictable)."""
        with self._lock:
            self._idle.pop(key, None)

    def close_connection(self, key: Hashable) -> None:
        with self._lock:
            self._connections.pop(key, None)
            self._idle.pop(key, None)

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- session slots ----------------------------------------------------------------------

    def try_acquire(self, client: str | None = None) -> SessionSlot | None:
        """A session slot, or None when all `max_sessions` are held, or `max_sessions_per_client`
        by `client` (None: not known, only the total applies)."""
        with self._lock:
            if self._slots >= self.cfg.max_sessions:
                return None
            if client is not None:
                if self._client_slots.get(client, 0) >= self.cfg.max_sessions_per_client:
                    return None
                self._client_slots[client] = self._client_slots.get(client, 0) + 1
            self._slots += 1
            return SessionSlot(self, client)

    def _release(self, slot: SessionSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._slots -= 1
            if slot.client is not None:
                left = self._client_slots.get(slot.client, 1) - 1
                if left > 0:
                    self._client_slots[slot.client] = left
                else:
                    self._client_slots.pop(slot.client, None)

    @property
    def slots_held(self) -> int:
        return self._slots

    @property
    def full(self) -> bool:
        return self._slots >= self.cfg.max_sessions


# -- file descriptors ---------------------------------------------------------------------------

FDS_PER_SESSION = 16  # a session's peer (ICE sockets, DTLS), recording files, a world's device files
FDS_SPARE = 64  # what the process opens besides (libraries, logs, pipes, executor wake-ups)
ACCEPT_BURST = 32  # the listen backlog: asyncio accepts up to this many sockets at one wake-up, before
# any is counted, so those over the limit hold a file each until they are answered 503 and closed


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the (new) soft limit. Systems
    often start processes at 1024, which a server with many sockets reaches."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. a cap the kernel puts below the hard limit
            pass
    return soft


def open_fds() -> int:
    """Descriptors this process has open now (Linux: /proc/self/fd; elsewhere 0)."""
    try:
        import os

        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connections_within_fds(wanted: int, fd_limit: int, in_use: int, max_sessions: int) -> int:
    """How many sockets may be open at once so that, with `max_sessions` sessions, the files open
    now and a burst of accepts at the limit, the process stays below `fd_limit` (at least 1)."""
    room = fd_limit - in_use - FDS_SPARE - ACCEPT_BURST - FDS_PER_SESSION * max_sessions
    return max(1, min(wanted, room))
