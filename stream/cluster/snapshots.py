"""The snapshot store: where the cluster keeps each walk's latest chunk boundary.

A session host ships every `snapshot_every`-th chunk boundary of each walk it runs (the world's
snapshot, the pose integrator's state, the frame count and the held keys, pickled on the model
thread so later chunks cannot change it) to one detached named actor, `SnapshotStore`. The store
`ray.put`s it, so the object lives in Ray's object store owned by the store, not by the replica
that made it: when a replica dies its walks' snapshots survive, and the replica that takes a walk
over resumes it there. The store also keeps a short record of each walk's chunks (chunk index,
replica, input, poses, frame hashes, chunk time) for `worldwalk cluster status` and for checking
that a moved walk carries on as if nothing happened, and each walk's recording (its video's path,
which the replica that takes the walk over continues).

It is also the cluster's small control plane, which Serve's own calls cannot be (they go to any
replica, not to a chosen one):
- drains: `drain(replica)` (`worldwalk cluster drain`, or Serve stopping the replica: a thread
  here watches Serve's controller for session-host replicas in STOPPING) marks a replica, and the
  answer to its next `keep` tells it to hand its walks off at that chunk boundary;
- spectators: the gateway `post`s a spectator's offer for the replica that hosts the walk (`where`),
  the replica `take`s it, runs the spectator on its own server and `reply`s its signaling.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import ray

from .config import APP_NAME, NAMESPACE, STORE_NAME

log = logging.getLogger(__name__)


def watch_id(walk: str) -> str:
    """A walk's spectator id: stable across moves, and no way back to the walk (its resume token)."""
    return hashlib.sha256(b"watch:" + walk.encode()).hexdigest()[:12]


@dataclass
class WalkSnapshot:
    """What a session host needs to carry a walk on: a `Boundary` and the keys held at it."""

    boundary: Any  # worldwalk.runtime.session.Boundary
    keys: list[str]

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> WalkSnapshot:
        snap = pickle.loads(data)
        if not isinstance(snap, WalkSnapshot):
            raise TypeError(f"not a walk snapshot: {type(snap).__name__}")
        return snap


@ray.remote(num_cpus=0, max_concurrency=64)  # threads: the spectator mailboxes wait in them
class SnapshotStore:
    def __init__(self, records_kept: int = 256, walks_kept: int = 64, watch_serve: bool = True) -> None:
        self._latest: dict[str, tuple[ray.ObjectRef, dict[str, Any]]] = {}
        self._records: dict[str, deque] = {}
        self._ended: deque[str] = deque()
        self._records_kept = records_kept
        self._walks_kept = walks_kept
        self._recordings: dict[str, str] = {}  # walk -> its video's path
        self._draining: dict[str, str] = {}  # replica -> why ("asked", "serve stopping")
        self._hosts: dict[str, str] = {}  # walk -> the replica whose session runs it
        self._watches: dict[str, str] = {}  # watch id (the spectator link's) -> walk, until the walk ends
        self._mail = threading.Condition()
        self._inbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # replica -> spectator requests
        self._outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # request id -> messages back
        if watch_serve:
            threading.Thread(target=self._watch_serve, name="watch-serve", daemon=True).start()

    def keep(self, walk: str, data: bytes, meta: dict[str, Any]) -> bool:
        """The walk's newest boundary (meta: chunk, replica, bytes, pickle_ms, made). Returns True when
        the replica is to drain: it hands the walk off at this boundary."""
        if walk in self._ended:  # a late one from a walk that has ended
            return False
        old = self._latest.get(walk, (None, {}))[1]
        if old.get("replica") == meta.get("replica") and old.get("made", 0) > meta.get("made", 0):
            return meta.get("replica") in self._draining  # overtaken by a newer one (a drain's)
        self._latest[walk] = (ray.put(data), {**meta, "stored": time.time()})
        return meta.get("replica") in self._draining

    # ---- drains ------------------------------------------------------------------------------

    def drain(self, replica: str, why: str = "asked") -> list[str]:
        """Ask a session-host replica to hand its walks off (at each one's next chunk boundary) and
        take no new ones. Returns the walks it holds now."""
        self._draining.setdefault(replica, why)
        return [w for w, r in self._hosts.items() if r == replica]

    def is_draining(self, replica: str) -> bool:
        return replica in self._draining

    def serve_replicas(self) -> dict[str, str]:
        """Session-host replica id -> its state, as Serve's controller has it (RUNNING, STOPPING, ...).
        While the app is being deleted Serve lists no deployments: every replica hosting a walk is
        then STOPPING."""
        from ray.serve.context import _get_global_client

        app = _get_global_client().get_serve_details().get("applications", {}).get(APP_NAME)
        if app is None or str(app.get("status", "")).upper().endswith("DELETING"):
            return {replica: "STOPPING" for replica in self._hosts.values()}
        host = app.get("deployments", {}).get("SessionHost")
        replicas = host["replicas"] if host is not None else []  # none yet: the app is deploying
        return {r["replica_id"]: str(r["state"]).upper().rsplit(".", 1)[-1] for r in replicas}

    def _watch_serve(self) -> None:
        """Serve stopping a session host (scale-down, a new version, shutdown) drains it: Serve then
        waits `graceful_shutdown_timeout_s` for its sessions, and they move at their next boundary."""
        warned = False
        while True:
            time.sleep(0.5)
            if not self._hosts:
                continue
            try:
                for replica, state in self.serve_replicas().items():
                    if state == "STOPPING":
                        self._draining.setdefault(replica, "serve stopping")
            except Exception as e:  # noqa: BLE001 - drains asked for by name still work
                if not warned:
                    log.warning("cannot watch Serve's replicas for drains (%s: %s)", type(e).__name__, e)
                    warned = True

    # ---- where walks run (spectators) and their recordings -------------------------------------

    def hosting(self, walk: str, replica: str) -> None:
        self._hosts[walk] = replica
        self._watches[watch_id(walk)] = walk

    def unhost(self, walk: str, replica: str | None = None) -> None:
        """The walk's session ended on `replica` (None: wherever it was; its replica died)."""
        if walk in self._hosts and replica in (None, self._hosts[walk]):
            del self._hosts[walk]

    def where(self, watch: str) -> tuple[str, str | None] | None:
        """(walk, replica hosting it now, or None while it moves) for a spectator link; None: no such walk."""
        walk = self._watches.get(watch)
        if walk is None:
            return None
        return walk, self._hosts.get(walk)

    def recording(self, walk: str, path: str) -> None:
        self._recordings[walk] = path

    def resume_recording(self, walk: str) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """The walk's video path (None: not recorded) and its chunk records by index (the newest of each)."""
        by_chunk = {int(r["chunk"]): {"input": r["input"], "poses": r["poses"]} for r in self._records.get(walk, ())}
        return self._recordings.get(walk), by_chunk

    # ---- spectator mailboxes -----------------------------------------------------------------

    def post(self, replica: str, request: dict[str, Any]) -> None:
        with self._mail:
            self._inbox[replica].append(request)
            self._mail.notify_all()

    def take(self, replica: str, timeout: float = 2.0) -> list[dict[str, Any]]:
        """A replica's spectator requests (offers, cancels); waits up to `timeout` for one."""
        with self._mail:
            self._mail.wait_for(lambda: self._inbox.get(replica), timeout)
            return self._inbox.pop(replica, [])

    def reply(self, request: str, messages: list[dict[str, Any]]) -> None:
        with self._mail:
            self._outbox[request].extend(messages)
            self._mail.notify_all()

    def replies(self, request: str, timeout: float = 1.0) -> list[dict[str, Any]]:
        with self._mail:
            self._mail.wait_for(lambda: self._outbox.get(request), timeout)
            return self._outbox.pop(request, [])

    def timing(self, walk: str, send_ms: float) -> None:
        """How long the last snapshot took from the replica into the store (status, figures)."""
        entry = self._latest.get(walk)
        if entry is not None:
            entry[1]["send_ms"] = send_ms

    def record(self, walk: str, records: list[dict[str, Any]]) -> None:
        self._records.setdefault(walk, deque(maxlen=self._records_kept)).extend(records)

    def latest(self, walk: str) -> tuple[bytes, dict[str, Any]] | None:
        entry = self._latest.get(walk)
        if entry is None:
            return None
        ref, meta = entry
        return ray.get(ref), meta

    def records(self, walk: str) -> list[dict[str, Any]]:
        return list(self._records.get(walk, ()))

    def end(self, walk: str) -> None:
        """The walk ended for good: free its snapshot; keep its records a while (status, tests)."""
        self._latest.pop(walk, None)
        self._recordings.pop(walk, None)
        self._hosts.pop(walk, None)
        self._watches.pop(watch_id(walk), None)
        self._ended.append(walk)
        while len(self._ended) > self._walks_kept:
            self._records.pop(self._ended.popleft(), None)

    def status(self) -> dict[str, Any]:
        walks = {}
        for walk, records in self._records.items():
            last = records[-1] if records else {}
            meta = self._latest.get(walk, (None, {}))[1]
            walks[walk[:8]] = {
                "replica": last.get("replica"),
                "chunk": last.get("chunk"),
                "chunk_ms": last.get("chunk_ms"),
                "live": walk in self._latest,
                "snapshot_bytes": meta.get("bytes"),
                "snapshot_ms": meta.get("pickle_ms"),
                "snapshot_send_ms": meta.get("send_ms"),
            }
        return {"walks": walks, "snapshots": len(self._latest), "draining": dict(self._draining)}


def get_store(records_kept: int = 256) -> Any:
    """The cluster's store, made on first use (detached: it outlives whoever made it)."""
    return SnapshotStore.options(
        name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(records_kept)
