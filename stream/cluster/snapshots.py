"""The snapshot store: where the cluster keeps each walk's latest chunk boundary.

A session host ships every `snapshot_every`-th chunk boundary of each walk it runs (the world's
snapshot, the pose integrator's state, the frame count and the held keys, pickled on the model
thread so later chunks cannot change it) to one detached named actor, `SnapshotStore`. The store
`ray.put`s it, so the object lives in Ray's object store owned by the store, not by the replica
that made it: when a replica dies its walks' snapshots survive, and the replica that takes a walk
over resumes it there. The store also keeps a short record of each walk's chunks (chunk index,
replica, input, poses, frame hashes, chunk time) for `worldwalk cluster status` and for checking
that a moved walk carries on as if nothing happened.
"""

from __future__ import annotations

import pickle
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray

from .config import NAMESPACE, STORE_NAME


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


@ray.remote(num_cpus=0, max_concurrency=16)
class SnapshotStore:
    def __init__(self, records_kept: int = 256, walks_kept: int = 64) -> None:
        self._latest: dict[str, tuple[ray.ObjectRef, dict[str, Any]]] = {}
        self._records: dict[str, deque] = {}
        self._ended: deque[str] = deque()
        self._records_kept = records_kept
        self._walks_kept = walks_kept

    def keep(self, walk: str, data: bytes, meta: dict[str, Any]) -> None:
        """The walk's newest boundary (meta: chunk, replica, bytes, pickle_ms, made)."""
        if walk in self._ended:  # a late one from a walk that has ended
            return
        self._latest[walk] = (ray.put(data), {**meta, "stored": time.time()})

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
        return {"walks": walks, "snapshots": len(self._latest)}


def get_store(records_kept: int = 256) -> Any:
    """The cluster's store, made on first use (detached: it outlives whoever made it)."""
    return SnapshotStore.options(
        name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(records_kept)
