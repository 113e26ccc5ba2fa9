"""The walk store's map of where each walk runs, and of the walks waiting for their player.

A session host says `hosting` when a walk's session starts on it and `unhost` when it ends there
without the walk ending (its replica died or handed it off). Such a walk waits for its player
`resume_timeout` seconds (`claim` when the player comes back gives it the timeout again); not taken
up again by then, it expires (`_expired`, which the store acts on). A spectator link names a walk
by its `watch_id`, which `where` turns into the replica hosting it now.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable


def watch_id(walk: str) -> str:
    """A walk's spectator id: stable across moves, and no way back to the walk (its resume token)."""
    return hashlib.sha256(b"watch:" + walk.encode()).hexdigest()[:12]


class WalkHosts:
    """Part of the walk store (`snapshots.WalkStore`): where walks run, changed under the store's lock.
    The store provides `_has_snapshot(walk)`, `end(walk)` and `_drain_takes(walk, replica)` (`Drains`)."""

    _lock: threading.RLock
    _clock: Callable[[], float]

    def __init__(self, resume_timeout: float) -> None:
        self.resume_timeout = resume_timeout
        self._hosts: dict[str, str] = {}  # walk -> the replica whose session runs it
        self._moved: dict[str, float] = {}  # walk -> when it lost its session (clock): its player may resume it
        self._watches: dict[str, str] = {}  # watch id (the spectator link's) -> walk, until the walk ends

    def hosting(self, walk: str, replica: str) -> None:
        with self._lock:
            self._hosts[walk] = replica
            self._moved.pop(walk, None)
            self._watches[watch_id(walk)] = walk
            self._drain_takes(walk, replica)

    def unhost(self, walk: str, replica: str | None = None) -> None:
        """The walk's session ended on `replica` (None: wherever it was; its replica died). Its player
        may resume it for `resume_timeout` seconds; then it expires."""
        with self._lock:
            if walk in self._hosts and replica in (None, self._hosts[walk]):
                del self._hosts[walk]
                if self._has_snapshot(walk):
                    self._moved[walk] = self._clock()
                else:  # lost before its first snapshot: nothing to resume
                    self.end(walk)

    def claim(self, walk: str) -> bool:
        """A player comes back for its walk (the gateway, before it asks a session host to resume
        it): True when there is something to resume; the walk then has `resume_timeout` again for a
        session host to take it up."""
        with self._lock:
            if not self._has_snapshot(walk):
                return False
            if walk in self._moved:
                self._moved[walk] = self._clock()
            return True

    def where(self, watch: str) -> tuple[str, str | None] | None:
        """(walk, replica hosting it now, or None while it moves) for a spectator link; None: no such walk."""
        walk = self._watches.get(watch)
        if walk is None:
            return None
        return walk, self._hosts.get(walk)

    def _expired(self, now: float) -> list[str]:
        """The walks no session took up within `resume_timeout` of losing theirs."""
        with self._lock:
            return [w for w, t in self._moved.items() if now - t >= self.resume_timeout and w not in self._hosts]

    def _forget_host(self, walk: str) -> None:
        with self._lock:
            self._hosts.pop(walk, None)
            self._moved.pop(walk, None)
            self._watches.pop(watch_id(walk), None)

    def _walks_on(self, replica: str) -> list[str]:
        return [w for w, r in self._hosts.items() if r == replica]

    def _host_replicas(self) -> set[str]:
        """The replicas hosting a walk now."""
        return set(self._hosts.values())

    def _is_waiting(self, walk: str) -> bool:
        """Whether the walk lost its session and waits for its player."""
        return walk in self._moved

    def _host_state(self, walk: str, now: float) -> tuple[str | None, float | None]:
        """("live" | "moved" | None: neither, its seconds left to resume while moved)."""
        if walk in self._hosts:
            return "live", None
        if walk in self._moved:
            return "moved", round(max(0.0, self.resume_timeout - (now - self._moved[walk])), 1)
        return None, None
