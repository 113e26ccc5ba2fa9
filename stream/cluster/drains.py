"""The walk store's drains: session-host replicas handing their walks off and taking no new ones.

`drain(replica)` (`worldwalk cluster drain`, or Serve stopping the replica: the store's thread
follows Serve's controller for session-host replicas in STOPPING) marks a replica, and the answer
to its next `keep` tells it to hand its walks off at that chunk boundary. A drain ends when the
replica holds no walk (status: "drained"; take it down), and the drain of the last session host
that takes players is refused: it would turn every new player away.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .config import APP_NAME

log = logging.getLogger(__name__)


def _serve_state(state: Any) -> str:
    return str(state).upper().rsplit(".", 1)[-1]


class Drains:
    """Part of the walk store (`snapshots.WalkStore`): the replicas draining, changed under the store's
    lock. The store provides `_walks_on(replica)`, `_host_replicas()` and `_is_waiting(walk)` (`WalkHosts`)."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._draining: dict[str, dict[str, Any]] = {}  # replica -> why ("asked", "serve stopping"), since, walks
        self._serve_warned = False

    def drain(self, replica: str, why: str = "asked") -> dict[str, Any]:
        """Ask a session-host replica to hand its walks off (at each one's next chunk boundary) and
        take no new ones: {"walks": the walks it holds now}. Refused ({"refused": why}) when no other
        session host would take players then: every new player would hear busy."""
        running = self.serve_replicas()
        with self._lock:
            taking = [r for r, state in running.items()
                      if state == "RUNNING" and r != replica and r not in self._draining]
            if replica not in self._draining and not taking:
                return {"refused": f"{replica} is the last session host taking new players: drained, it would "
                                   "leave every new player hearing busy. Add a session host first (more "
                                   "--replicas, or --max-replicas), then drain this one."}
            return {"walks": self._drain(replica, why)}

    def _drain(self, replica: str, why: str) -> list[str]:
        walks = self._walks_on(replica)
        entry = self._draining.setdefault(replica, {"why": why, "since": time.time(), "walks": set()})
        entry["walks"].update(walks)
        return walks

    def _drain_takes(self, walk: str, replica: str) -> None:
        """A walk's session started on `replica`: a draining replica's drain waits for it too."""
        if replica in self._draining:
            self._draining[replica]["walks"].add(walk)

    def is_draining(self, replica: str) -> bool:
        return replica in self._draining

    def serve_replicas(self) -> dict[str, str]:
        """Session-host replica id -> its state, as Serve's controller has it (RUNNING, STOPPING, ...).
        While the app is being deleted Serve lists no deployments: every replica hosting a walk is
        then STOPPING."""
        replicas = self._serve_replicas()
        if replicas is None:
            return {replica: "STOPPING" for replica in self._host_replicas()}
        return replicas

    def _serve_replicas(self) -> dict[str, str] | None:
        """As Serve's controller lists them; None while the app is being deleted (or not there)."""
        from ray.serve.context import _get_global_client

        app = _get_global_client().get_serve_details().get("applications", {}).get(APP_NAME)
        if app is None or str(app.get("status", "")).upper().endswith("DELETING"):
            return None
        host = app.get("deployments", {}).get("SessionHost")
        replicas = host["replicas"] if host is not None else []  # none yet: the app is deploying
        return {r["replica_id"]: _serve_state(r["state"]) for r in replicas}

    def _follow_serve(self) -> None:
        """Serve stopping a session host (scale-down, a new version, shutdown) drains it: Serve then
        waits `graceful_shutdown_timeout_s` for its sessions, and they move at their next boundary.
        A drained replica Serve no longer lists (taken down) is forgotten."""
        if not self._host_replicas() and not self._draining:
            return
        try:
            replicas = self._serve_replicas()
            with self._lock:
                for replica, state in (replicas or {}).items():
                    if state == "STOPPING":
                        self._drain(replica, "serve stopping")
                if replicas:  # deploying (none listed) or deleting (None): nothing is gone yet
                    for replica in [r for r in self._draining if r not in replicas]:
                        del self._draining[replica]
                elif replicas is None:
                    for replica in self._host_replicas():
                        self._drain(replica, "serve stopping")
        except Exception as e:  # noqa: BLE001 - drains asked for by name still work
            if not self._serve_warned:
                log.warning("cannot watch Serve's replicas for drains (%s: %s)", type(e).__name__, e)
                self._serve_warned = True

    def _drains_status(self) -> dict[str, dict[str, Any]]:
        """Replica -> its drain (draining: walks still on the replica; drained: all moved or expired)."""
        with self._lock:
            out = {}
            for replica, d in self._draining.items():
                here = len(self._walks_on(replica))
                waiting = sum(map(self._is_waiting, d["walks"]))
                out[replica] = {"why": d["why"], "since": d["since"], "state": "draining" if here else "drained",
                                "walks_here": here, "walks_waiting": waiting,
                                "walks_gone": len(d["walks"]) - here - waiting}
            return out
