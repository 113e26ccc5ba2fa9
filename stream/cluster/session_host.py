"""`SessionHost`: the Ray Serve deployment whose replicas run sessions.

Each replica holds one `StreamServer` that never listens: sessions come to it as one long
streaming call per player (`host`), made by the gateway with the browser's offer. The call runs
the single-process server's whole per-player path (`StreamServer.handle`: the session, its
world and model thread, the aiortc peer, the recorder) on a `RelaySocket`, and yields what the
server would have sent on the websocket back to the gateway. The call lasts as long as the
session, so it holds one of the replica's `max_ongoing_requests` slots (= sessions per replica)
for the session's life: Ray Serve places sessions and turns away what does not fit.

Video goes from this replica's node straight to the browser (the peer's own candidates, or the
STUN/TURN servers configured); only signaling passes the gateway.

Each walk's chunk boundaries go to the cluster's `SnapshotStore` (snapshots.py); a call made
with `resume` starts from the walk's latest one instead of the first frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray import serve

from worldwalk.controls import PoseIntegrator
from worldwalk.runtime.session import Boundary, Session
from worldwalk.runtime.world import create_world
from worldwalk.stream.server import StreamServer
from worldwalk.stream.session_log import image_hash, input_state_to_dict

from .config import ClusterConfig
from .relay import RelaySocket
from .snapshots import WalkSnapshot, get_store

log = logging.getLogger(__name__)


class WalkShipper:
    """Sends one walk's boundaries and chunk records to the store, off the model thread."""

    def __init__(self, walk: str, replica: str, session: Session, store: Any, every: int,
                 pool: ThreadPoolExecutor, hashes: bool = False) -> None:
        self.walk, self.replica, self.session, self.hashes = walk, replica, session, hashes
        self.store, self.every, self.pool = store, every, pool
        self._boundaries = 0
        self._lock = threading.Lock()
        self._pending: tuple[Boundary, list[str]] | None = None  # the newest boundary not sent yet

    def on_boundary(self, b: Boundary) -> None:
        """Model thread: note the boundary; it is pickled and sent on the pool. A boundary's world
        snapshot is a copy the world never touches again (rewind relies on that too), so this
        costs the model thread nothing."""
        self._boundaries += 1
        if (self._boundaries - 1) % self.every:
            return
        keys = sorted(self.session.inputs.peek().keys)
        with self._lock:
            first = self._pending is None
            self._pending = (b, keys)  # an older one not sent yet is superseded
        if first:
            self.pool.submit(self._send)

    def _send(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        b, keys = pending
        try:
            t0 = time.perf_counter()
            data = WalkSnapshot(b, keys).to_bytes()
            t1 = time.perf_counter()
            meta = {"chunk": b.chunk_index, "frame": b.frame_index, "replica": self.replica, "pid": os.getpid(),
                    "bytes": len(data), "pickle_ms": 1000 * (t1 - t0), "made": time.time()}
            ray.get(self.store.keep.remote(self.walk, data, meta), timeout=60)
            meta["send_ms"] = 1000 * (time.perf_counter() - t1)
            self.store.timing.remote(self.walk, meta["send_ms"])
        except Exception:
            log.exception("sending walk %s's snapshot to the store failed", self.walk[:8])

    def on_chunk(self, chunk: Any, state: Any, frames: list) -> None:
        """Model thread: one record per chunk (small: hashes, not frames)."""
        stats = self.session.stats()
        record = {
            "chunk": frames[0].chunk_index, "frame": frames[0].index, "replica": self.replica,
            "input": input_state_to_dict(state), "poses": [f.pose.tolist() for f in frames],
            "hashes": [image_hash(f.image) for f in frames] if self.hashes else None,
            "chunk_ms": round(stats["chunk_ms"], 2),
            "made": time.time(),
        }
        self.pool.submit(self.store.record.remote, self.walk, [record])


class SessionHost:
    """A session-host replica (made a deployment in app.py with the cluster's options)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.server = StreamServer(cfg.serve, session_factory=self._make_session).prepare()
        self.store = get_store(cfg.records_kept)
        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id
        self.actor_name = ctx.replica_id.to_full_id_str()  # ray.get_actor(name, namespace="serve")
        self.node = ray.util.get_node_ip_address()
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="snapshots")
        self._starting = asyncio.Lock()  # one session starts at a time: the factory reads _pending
        self._pending: tuple[str, WalkSnapshot | None] | None = None
        self._claimed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _make_session(self) -> Session:
        """Runs on a worker thread of the server: the walk's world, from its snapshot if resumed."""
        assert self._pending is not None and self._loop is not None and self._claimed is not None
        walk, snap = self._pending
        self._loop.call_soon_threadsafe(self._claimed.set)
        cfg = self.cfg.serve
        world = create_world(cfg.world)
        integrator = PoseIntegrator(cfg.controls, cfg.bindings)
        session = Session(world, cfg.session, integrator=integrator,
                          resume=snap.boundary if snap is not None else None)
        if snap is not None:
            session.inputs.set_keys(snap.keys)  # the walk goes on with the keys held at the move
        shipper = WalkShipper(walk, self.replica, session, self.store, self.cfg.snapshot_every, self.pool,
                              self.cfg.record_frame_hashes)
        session.add_boundary_listener(shipper.on_boundary)
        session.add_listener(shipper.on_chunk)
        return session

    async def host(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """One player's session for its whole life. request: walk, offer (the browser's message),
        path, resume. Yields {"type": "admitted", ...} at once, then {"type": "send", "text": ...}
        for each signaling message and {"type": "close", "code", "reason"} at the end."""
        walk, t0 = request["walk"], time.perf_counter()
        yield {"type": "admitted", "replica": self.replica, "actor": self.actor_name, "node": self.node,
               "pid": os.getpid()}
        snap = None
        if request.get("resume"):
            got = await self.store.latest.remote(walk)
            if got is not None:
                snap = WalkSnapshot.from_bytes(got[0])
        relay = RelaySocket(request.get("path", "/ws"), [json.dumps(request["offer"])])
        self._loop = asyncio.get_running_loop()
        task: asyncio.Future | None = None
        try:
            async with self._starting:
                self._pending, self._claimed = (walk, snap), asyncio.Event()
                task = asyncio.ensure_future(self.server.handle(relay))
                claimed = asyncio.ensure_future(self._claimed.wait())
                try:
                    await asyncio.wait({task, claimed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    claimed.cancel()
            while True:
                get = asyncio.ensure_future(relay.outgoing.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return
                kind, value = get.result()
                if kind == "close":
                    code, reason = value  # type: ignore[misc]
                    yield {"type": "close", "code": code, "reason": reason}
                    return
                yield {"type": "send", "text": value, "host_ms": round(1000 * (time.perf_counter() - t0), 1)}
        finally:
            # the call ended: the player left (the gateway then frees the walk's snapshot), or Serve
            # is shutting this replica down (the snapshot stays: the walk moves elsewhere)
            relay.peer_left()
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), 15.0)
