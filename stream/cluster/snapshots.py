"""The snapshot store: where the cluster keeps each walk's latest chunk boundary.

A session host ships every `snapshot_every`-th chunk boundary of each walk it runs (the world's
snapshot, the pose integrator's state, the frame count and the held keys, pickled on the model
thread so later chunks cannot change it) to one detached named actor, `WalkStoreActor`. The store
`ray.put`s it, so the object lives in Ray's object store owned by the store, not by the replica
that made it: when a replica dies its walks' snapshots survive, and the replica that takes a walk
over resumes it there. The store lives on the head node (`get_store`), so losing any other
machine loses none of it. The store also keeps a short record of each walk's chunks (chunk index,
replica, input, poses, frame hashes, chunk time) for `worldwalk cluster status` and for checking
that a moved walk carries on as if nothing happened, and each walk's recording (its video's path,
which the replica that takes the walk over continues).

It is also the cluster's small control plane, which Serve's own calls cannot be (they go to any
replica, not to a chosen one). `WalkStore` is made of one part per thing it holds, each in its file:

    WalkBoundaries  (here)              each walk's latest boundary, chunk records and recording
    WalkHosts       walk_hosts.py       where each walk runs; the walks waiting for their player
    Drains          drains.py           replicas handing their walks off (asked, or Serve stopping them)
    SpectatorMail   spectator_mail.py   a spectator's signaling to and from the replica hosting its walk

A walk whose session ended without the walk ending (its replica died or handed it off) waits for
its player `resume_timeout` seconds (`ClusterConfig.resume_timeout`); not taken up again by then,
it expires: its snapshot, recording entry and spectator mail are freed, as when a player leaves.
Spectator mail nobody takes (its reader left) is dropped after `MAIL_KEPT_S`.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray

from .config import NAMESPACE, STORE_NAME
from .drains import Drains
from .spectator_mail import SpectatorMail
from .walk_hosts import WalkHosts, watch_id

__all__ = ["HEAD_NODE", "MAIL_KEPT_S", "WalkSnapshot", "WalkStore", "WalkStoreActor", "get_store", "watch_id"]

log = logging.getLogger(__name__)


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


MAIL_KEPT_S = 60.0  # a spectator message nobody took within this long is dropped (its reader left)
HEAD_NODE = {"node:__internal_head__": 0.001}  # Ray's own resource of the head node (and of no other)


class WalkBoundaries:
    """Part of the walk store: each walk's newest boundary (in Ray's object store), its chunk records and its
    recording's path, changed under the store's lock. The store provides `_host_state(walk, now)` (`WalkHosts`)."""

    _lock: threading.RLock

    def __init__(self, records_kept: int, walks_kept: int) -> None:
        self._latest: dict[str, tuple[ray.ObjectRef, dict[str, Any]]] = {}
        self._records: dict[str, deque] = {}
        self._ended: deque[str] = deque()
        self._records_kept = records_kept
        self._walks_kept = walks_kept
        self._recordings: dict[str, str] = {}  # walk -> its video's path

    def _put(self, walk: str, data: bytes, meta: dict[str, Any]) -> bool:
        """Keep the walk's newest boundary unless a newer one of the same replica is kept (a drain's);
        False when the walk has ended (a late boundary)."""
        if walk in self._ended:
            return False
        old = self._latest.get(walk, (None, {}))[1]
        if old.get("replica") == meta.get("replica") and old.get("made", 0) > meta.get("made", 0):
            return True  # overtaken by a newer one
        ref = ray.put(data)
        with self._lock:
            if walk not in self._ended:
                self._latest[walk] = (ref, {**meta, "stored": time.time()})
        return True

    def timing(self, walk: str, send_ms: float) -> None:
        """How long the last snapshot took from the replica into the store (status, figures)."""
        entry = self._latest.get(walk)
        if entry is not None:
            entry[1]["send_ms"] = send_ms

    def record(self, walk: str, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._records.setdefault(walk, deque(maxlen=self._records_kept)).extend(records)

    def latest(self, walk: str) -> tuple[bytes, dict[str, Any]] | None:
        entry = self._latest.get(walk)
        if entry is None:
            return None
        ref, meta = entry
        return ray.get(ref), meta

    def records(self, walk: str) -> list[dict[str, Any]]:
        with self._lock:  # the actor's threads append while another reads
            return list(self._records.get(walk, ()))

    def recording(self, walk: str, path: str) -> None:
        self._recordings[walk] = path

    def resume_recording(self, walk: str) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """The walk's video path (None: not recorded) and its chunk records by index (the newest of each:
        input, poses, and an action world's actions)."""
        by_chunk = {int(r["chunk"]): {"input": r["input"], "poses": r["poses"],
                                      **({"actions": r["actions"]} if r.get("actions") else {})}
                    for r in self.records(walk)}
        return self._recordings.get(walk), by_chunk

    def _has_snapshot(self, walk: str) -> bool:
        return walk in self._latest

    def _forget_boundary(self, walk: str) -> None:
        """The walk ended: free its snapshot and recording entry; keep its records a while (status, tests)."""
        with self._lock:
            self._latest.pop(walk, None)
            self._recordings.pop(walk, None)
            if walk not in self._ended:
                self._ended.append(walk)
            while len(self._ended) > self._walks_kept:
                self._records.pop(self._ended.popleft(), None)

    def _walks_status(self, now: float) -> dict[str, dict[str, Any]]:
        """Each recorded walk (by its first 8 characters): live, moved (waiting `resume_s` more seconds for
        its player) or ended, its last chunk and its snapshot's figures."""
        walks = {}
        with self._lock:
            for walk, records in self._records.items():
                last = records[-1] if records else {}
                meta = self._latest.get(walk, (None, {}))[1]
                state, resume_s = self._host_state(walk, now)
                if state is None:
                    state = "ended" if walk in self._ended or walk not in self._latest else "live"
                walks[walk[:8]] = {
                    "replica": last.get("replica"),
                    "chunk": last.get("chunk"),
                    "chunk_ms": last.get("chunk_ms"),
                    "live": state == "live",
                    "state": state,
                    "resume_s": resume_s,
                    "snapshot_bytes": meta.get("bytes"),
                    "snapshot_ms": meta.get("pickle_ms"),
                    "snapshot_send_ms": meta.get("send_ms"),
                }
        return walks


class WalkStore(WalkBoundaries, WalkHosts, Drains, SpectatorMail):
    """The store's state and calls (the actor is `WalkStoreActor`, this class made a Ray actor): its parts
    (see the module doc) and the rules that span them. Ray runs its calls on up to 64 threads at once:
    what they share is changed under `_lock`."""

    def __init__(self, records_kept: int = 256, walks_kept: int = 64, watch_serve: bool = True,
                 resume_timeout: float = 60.0, mail_kept: float = MAIL_KEPT_S) -> None:
        self._lock = threading.RLock()
        self._clock = time.monotonic
        WalkBoundaries.__init__(self, records_kept, walks_kept)
        WalkHosts.__init__(self, resume_timeout)
        Drains.__init__(self)
        SpectatorMail.__init__(self, mail_kept)
        if watch_serve:
            threading.Thread(target=self._tend, name="watch-serve", daemon=True).start()

    def keep(self, walk: str, data: bytes, meta: dict[str, Any]) -> bool:
        """The walk's newest boundary (meta: chunk, replica, bytes, pickle_ms, made). Returns True when
        the replica is to drain: it hands the walk off at this boundary."""
        draining = self.is_draining(meta.get("replica"))
        return self._put(walk, data, meta) and draining

    def end(self, walk: str) -> None:
        """The walk ended for good: free its snapshot; keep its records a while (status, tests)."""
        with self._lock:
            self._forget_boundary(walk)
            self._forget_host(walk)

    def expire(self) -> list[str]:
        """End the walks no session took up within `resume_timeout` of losing theirs (their
        snapshots, recordings and spectator mail freed), and drop spectator mail nobody took within
        `mail_kept` seconds. Returns the walks ended."""
        now = self._clock()
        with self._lock:
            gone = self._expired(now)
            for walk in gone:
                self.end(walk)
                self._drop_walk_mail(walk)
            self._drop_unread_mail(now)
        if gone:
            log.info("%d walk%s not resumed within %g s expired", len(gone), "s" * (len(gone) != 1),
                     self.resume_timeout)
        return gone

    def status(self) -> dict[str, Any]:
        """Walks (live, moved: waiting `resume_s` more seconds for their player, or ended), drains
        (draining: walks still on the replica; drained: all moved or expired), snapshot and mail counts."""
        now = self._clock()
        with self._lock:
            return {"walks": self._walks_status(now), "snapshots": len(self._latest), "moved": len(self._moved),
                    "resume_timeout": self.resume_timeout, "mail": self.mail(), "draining": self._drains_status()}

    def _tend(self) -> None:
        """The store's own thread: walks whose players did not come back within `resume_timeout` expire,
        and Serve stopping a session host drains it."""
        while True:
            time.sleep(min(0.5, self.resume_timeout / 4))
            self.expire()
            self._follow_serve()


WalkStoreActor = ray.remote(num_cpus=0, max_concurrency=64)(WalkStore)


def get_store(records_kept: int = 256, resume_timeout: float = 60.0) -> Any:
    """The cluster's store, made on first use by whoever comes first. Detached: it outlives whoever
    made it. On the head node: it outlives the loss of any other machine, with the snapshots (objects
    it owns, kept on its node) and the spectator mailboxes; the head's loss ends the cluster anyway."""
    return WalkStoreActor.options(
        name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        resources=HEAD_NODE, scheduling_strategy="DEFAULT",  # not in a caller's placement group
    ).remote(records_kept, resume_timeout=resume_timeout)
