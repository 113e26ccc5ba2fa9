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
replica, not to a chosen one):
- drains: `drain(replica)` (`worldwalk cluster drain`, or Serve stopping the replica: a thread
  here watches Serve's controller for session-host replicas in STOPPING) marks a replica, and the
  answer to its next `keep` tells it to hand its walks off at that chunk boundary;
- spectators: the gateway `post`s a spectator's offer for the replica that hosts the walk (`where`),
  the replica `take`s it, runs the spectator on its own server and `reply`s its signaling.

A walk whose session ended without the walk ending (its replica died or handed it off) waits for
its player `resume_timeout` seconds (`ClusterConfig.resume_timeout`); not taken up again by then,
it expires: its snapshot, recording entry and spectator mail are freed, as when a player leaves.
Spectator mail nobody takes (its reader left) is dropped after `MAIL_KEPT_S`. A drain ends when
the replica holds no walk (status: "drained"; take it down), and the drain of the last session
host that takes players is refused: it would turn every new player away.
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


MAIL_KEPT_S = 60.0  # a spectator message nobody took within this long is dropped (its reader left)
HEAD_NODE = {"node:__internal_head__": 0.001}  # Ray's own resource of the head node (and of no other)


def _serve_state(state: Any) -> str:
    return str(state).upper().rsplit(".", 1)[-1]


class WalkStore:
    """The store's state and calls (the actor is `WalkStoreActor`, this class made a Ray actor). Ray
    runs its calls on up to 64 threads at once: what they share is changed under `_lock`."""

    def __init__(self, records_kept: int = 256, walks_kept: int = 64, watch_serve: bool = True,
                 resume_timeout: float = 60.0, mail_kept: float = MAIL_KEPT_S) -> None:
        self._lock = threading.RLock()
        self._clock = time.monotonic
        self._latest: dict[str, tuple[ray.ObjectRef, dict[str, Any]]] = {}
        self._records: dict[str, deque] = {}
        self._ended: deque[str] = deque()
        self._records_kept = records_kept
        self._walks_kept = walks_kept
        self.resume_timeout = resume_timeout
        self._mail_kept = mail_kept
        self._recordings: dict[str, str] = {}  # walk -> its video's path
        self._draining: dict[str, dict[str, Any]] = {}  # replica -> why ("asked", "serve stopping"), since, walks
        self._hosts: dict[str, str] = {}  # walk -> the replica whose session runs it
        self._moved: dict[str, float] = {}  # walk -> when it lost its session (clock): its player may resume it
        self._watches: dict[str, str] = {}  # watch id (the spectator link's) -> walk, until the walk ends
        self._mail = threading.Condition(self._lock)
        self._inbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # replica -> spectator requests
        self._outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # request id -> messages back
        self._mail_walk: dict[str, str] = {}  # request id -> its walk
        self._mail_touched: dict[str, float] = {}  # "in:replica" / "out:request" -> last written (clock)
        if watch_serve:
            threading.Thread(target=self._watch_serve, name="watch-serve", daemon=True).start()

    def keep(self, walk: str, data: bytes, meta: dict[str, Any]) -> bool:
        """The walk's newest boundary (meta: chunk, replica, bytes, pickle_ms, made). Returns True when
        the replica is to drain: it hands the walk off at this boundary."""
        draining = meta.get("replica") in self._draining
        if walk in self._ended:  # a late one from a walk that has ended
            return False
        old = self._latest.get(walk, (None, {}))[1]
        if old.get("replica") == meta.get("replica") and old.get("made", 0) > meta.get("made", 0):
            return draining  # overtaken by a newer one (a drain's)
        ref = ray.put(data)
        with self._lock:
            if walk not in self._ended:
                self._latest[walk] = (ref, {**meta, "stored": time.time()})
        return draining

    # ---- drains ------------------------------------------------------------------------------

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
        walks = [w for w, r in self._hosts.items() if r == replica]
        entry = self._draining.setdefault(replica, {"why": why, "since": time.time(), "walks": set()})
        entry["walks"].update(walks)
        return walks

    def is_draining(self, replica: str) -> bool:
        return replica in self._draining

    def serve_replicas(self) -> dict[str, str]:
        """Session-host replica id -> its state, as Serve's controller has it (RUNNING, STOPPING, ...).
        While the app is being deleted Serve lists no deployments: every replica hosting a walk is
        then STOPPING."""
        replicas = self._serve_replicas()
        if replicas is None:
            return {replica: "STOPPING" for replica in self._hosts.values()}
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

    def _watch_serve(self) -> None:
        """Serve stopping a session host (scale-down, a new version, shutdown) drains it: Serve then
        waits `graceful_shutdown_timeout_s` for its sessions, and they move at their next boundary.
        A drained replica Serve no longer lists (taken down) is forgotten. Walks whose players did
        not come back within `resume_timeout` expire here too."""
        warned = False
        while True:
            time.sleep(min(0.5, self.resume_timeout / 4))
            self.expire()
            if not self._hosts and not self._draining:
                continue
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
                        for replica in set(self._hosts.values()):
                            self._drain(replica, "serve stopping")
            except Exception as e:  # noqa: BLE001 - drains asked for by name still work
                if not warned:
                    log.warning("cannot watch Serve's replicas for drains (%s: %s)", type(e).__name__, e)
                    warned = True

    # ---- where walks run (spectators), walks waiting for their player, recordings ------------------

    def hosting(self, walk: str, replica: str) -> None:
        with self._lock:
            self._hosts[walk] = replica
            self._moved.pop(walk, None)
            self._watches[watch_id(walk)] = walk
            if replica in self._draining:
                self._draining[replica]["walks"].add(walk)

    def unhost(self, walk: str, replica: str | None = None) -> None:
        """The walk's session ended on `replica` (None: wherever it was; its replica died). Its player
        may resume it for `resume_timeout` seconds; then it expires."""
        with self._lock:
            if walk in self._hosts and replica in (None, self._hosts[walk]):
                del self._hosts[walk]
                if walk in self._latest:
                    self._moved[walk] = self._clock()
                else:  # lost before its first snapshot: nothing to resume
                    self.end(walk)

    def claim(self, walk: str) -> bool:
        """A player comes back for its walk (the gateway, before it asks a session host to resume
        it): True when there is something to resume; the walk then has `resume_timeout` again for a
        session host to take it up."""
        with self._lock:
            if walk not in self._latest:
                return False
            if walk in self._moved:
                self._moved[walk] = self._clock()
            return True

    def expire(self) -> list[str]:
        """End the walks no session took up within `resume_timeout` of losing theirs (their
        snapshots, recordings and spectator mail freed), and drop spectator mail nobody took within
        `mail_kept` seconds. Returns the walks ended."""
        now = self._clock()
        with self._lock:
            gone = [w for w, t in self._moved.items() if now - t >= self.resume_timeout and w not in self._hosts]
            for walk in gone:
                self.end(walk)
                rids = {r for r, w in self._mail_walk.items() if w == walk}
                for replica, requests in list(self._inbox.items()):
                    self._inbox[replica] = [q for q in requests if q.get("id") not in rids]
                for rid in rids:
                    self._drop_mail(f"out:{rid}")
            for key in [k for k, t in self._mail_touched.items() if now - t >= self._mail_kept]:
                self._drop_mail(key)
            for replica in [r for r, requests in self._inbox.items() if not requests]:
                del self._inbox[replica]
        if gone:
            log.info("%d walk%s not resumed within %g s expired", len(gone), "s" * (len(gone) != 1),
                     self.resume_timeout)
        return gone

    def where(self, watch: str) -> tuple[str, str | None] | None:
        """(walk, replica hosting it now, or None while it moves) for a spectator link; None: no such walk."""
        walk = self._watches.get(watch)
        if walk is None:
            return None
        return walk, self._hosts.get(walk)

    def recording(self, walk: str, path: str) -> None:
        self._recordings[walk] = path

    def resume_recording(self, walk: str) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """The walk's video path (None: not recorded) and its chunk records by index (the newest of each:
        input, poses, and an action world's actions)."""
        by_chunk = {int(r["chunk"]): {"input": r["input"], "poses": r["poses"],
                                      **({"actions": r["actions"]} if r.get("actions") else {})}
                    for r in self._records.get(walk, ())}
        return self._recordings.get(walk), by_chunk

    # ---- spectator mailboxes -----------------------------------------------------------------

    def post(self, replica: str, request: dict[str, Any]) -> None:
        with self._mail:
            self._inbox[replica].append(request)
            if "walk" in request:
                self._mail_walk[request["id"]] = request["walk"]
            self._mail_touched[f"in:{replica}"] = self._clock()
            self._mail.notify_all()

    def take(self, replica: str, timeout: float = 2.0) -> list[dict[str, Any]]:
        """A replica's spectator requests (offers, cancels); waits up to `timeout` for one."""
        with self._mail:
            self._mail.wait_for(lambda: self._inbox.get(replica), timeout)
            self._mail_touched.pop(f"in:{replica}", None)
            return self._inbox.pop(replica, [])

    def reply(self, request: str, messages: list[dict[str, Any]]) -> None:
        with self._mail:
            self._outbox[request].extend(messages)
            self._mail_touched[f"out:{request}"] = self._clock()
            self._mail.notify_all()

    def replies(self, request: str, timeout: float = 1.0) -> list[dict[str, Any]]:
        with self._mail:
            self._mail.wait_for(lambda: self._outbox.get(request), timeout)
            self._mail_touched.pop(f"out:{request}", None)
            return self._outbox.pop(request, [])

    def _drop_mail(self, key: str) -> None:
        kind, name = key.split(":", 1)
        self._mail_touched.pop(key, None)
        if kind == "in":
            for request in self._inbox.pop(name, []):
                self._mail_walk.pop(request.get("id", ""), None)
        else:
            self._outbox.pop(name, None)
            self._mail_walk.pop(name, None)

    def mail(self) -> int:
        """Spectator messages waiting in the mailboxes (status, tests)."""
        with self._lock:
            return sum(map(len, self._inbox.values())) + sum(map(len, self._outbox.values()))

    # ---- chunk records -----------------------------------------------------------------------

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
        return list(self._records.get(walk, ()))

    def end(self, walk: str) -> None:
        """The walk ended for good: free its snapshot; keep its records a while (status, tests)."""
        with self._lock:
            self._latest.pop(walk, None)
            self._recordings.pop(walk, None)
            self._hosts.pop(walk, None)
            self._moved.pop(walk, None)
            self._watches.pop(watch_id(walk), None)
            if walk not in self._ended:
                self._ended.append(walk)
            while len(self._ended) > self._walks_kept:
                self._records.pop(self._ended.popleft(), None)

    def status(self) -> dict[str, Any]:
        """Walks (live, moved: waiting `resume_s` more seconds for their player, or ended), drains
        (draining: walks still on the replica; drained: all moved or expired), snapshot and mail counts."""
        now = self._clock()
        with self._lock:
            walks = {}
            for walk, records in self._records.items():
                last = records[-1] if records else {}
                meta = self._latest.get(walk, (None, {}))[1]
                state = "live" if walk in self._hosts else "moved" if walk in self._moved else \
                    "ended" if walk in self._ended or walk not in self._latest else "live"
                walks[walk[:8]] = {
                    "replica": last.get("replica"),
                    "chunk": last.get("chunk"),
                    "chunk_ms": last.get("chunk_ms"),
                    "live": state == "live",
                    "state": state,
                    "resume_s": round(max(0.0, self.resume_timeout - (now - self._moved[walk])), 1)
                    if state == "moved" else None,
                    "snapshot_bytes": meta.get("bytes"),
                    "snapshot_ms": meta.get("pickle_ms"),
                    "snapshot_send_ms": meta.get("send_ms"),
                }
            draining = {}
            for replica, d in self._draining.items():
                here = sum(r == replica for r in self._hosts.values())
                waiting = sum(w in self._moved for w in d["walks"])
                draining[replica] = {"why": d["why"], "since": d["since"], "state": "draining" if here else "drained",
                                     "walks_here": here, "walks_waiting": waiting,
                                     "walks_gone": len(d["walks"]) - here - waiting}
            return {"walks": walks, "snapshots": len(self._latest), "moved": len(self._moved),
                    "resume_timeout": self.resume_timeout, "mail": self.mail(), "draining": draining}


WalkStoreActor = ray.remote(num_cpus=0, max_concurrency=64)(WalkStore)


def get_store(records_kept: int = 256, resume_timeout: float = 60.0) -> Any:
    """The cluster's store, made on first use by whoever comes first. Detached: it outlives whoever
    made it. On the head node: it outlives the loss of any other machine, with the snapshots (objects
    it owns, kept on its node) and the spectator mailboxes; the head's loss ends the cluster anyway."""
    return WalkStoreActor.options(
        name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        resources=HEAD_NODE, scheduling_strategy="DEFAULT",  # not in a caller's placement group
    ).remote(records_kept, resume_timeout=resume_timeout)
