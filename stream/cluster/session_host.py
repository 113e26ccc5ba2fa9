"""`SessionHost`: the Ray Serve deployment whose replicas run sessions.

Each replica holds one `StreamServer` that never listens: sessions come to it as one long
streaming call per player (`host`), made by the gateway with the browser's offer. The call runs
the single-process server's whole per-player path (`StreamServer.handle`: the session, its
world and model thread, the aiortc peer, the recorder) on a `RelaySocket`, and yields what the
server would have sent on the websocket back to the gateway. It uses only the server's public
API: how the walk begins here is one `PlayerStart` (webrtc/sessions.py) given to `handle`. The call lasts as long as the
session, so it holds one of the replica's `max_ongoing_requests` slots (= sessions per replica)
for the session's life: Ray Serve places sessions and turns away what does not fit.

Video goes from this replica's node straight to the browser (the peer's own candidates, or the
STUN/TURN servers configured); only signaling passes the gateway.

Each walk's chunk boundaries go to the cluster's walk store (snapshots.py); a call made
with `resume` starts from the walk's latest one instead of the first frame, with the keys held
there, and continues the walk's recording in the same files (a `RecordingPlan`: one recording for
the whole walk wherever it runs, record/session_recording.py).

Drain: when the store answers a boundary with "drain" (`worldwalk cluster drain`, or Serve
stopping this replica), every walk here is handed off: its session stops at its next boundary
(`Session.hand_off`), that boundary is stored, the frames made before it are shown, the recording
is closed, and the call yields {"type": "moved"}: the gateway tells the player, who goes on on
another replica from that boundary, with no frame repeated or skipped. A draining replica takes
no new sessions (a call yields {"type": "draining"} and the gateway asks again).

Spectators: the gateway cannot route a call to a chosen replica, so it leaves a spectator's offer
in the store's mailbox for the replica that hosts the walk; this replica takes it, runs the
spectator on its own server (the same fan-out as the player's) and posts its signaling back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import ray
from ray import serve

from worldwalk.runtime.session import Boundary, Session
from worldwalk.stream.record.session_log import image_hash, input_state_to_dict
from worldwalk.stream.record.session_recording import RecordingPlan
from worldwalk.stream.webrtc.server import StreamServer
from worldwalk.stream.webrtc.sessions import PlayerStart

from .config import ClusterConfig
from .relay import RelaySocket
from .security import bind_replica_grpc_to_node_address
from .snapshots import WalkSnapshot, get_store

log = logging.getLogger(__name__)


def background(coro: Any) -> asyncio.Task:
    """A task that outlives the call that starts it. Ray marks what an async actor's task calls as
    that task's children (through a context variable) and cancels them with it: a task started in
    a fresh context is nobody's child, so a player leaving does not cancel its Ray calls."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


class WalkShipper:
    """Sends one walk's boundaries and chunk records to the store, off the model thread."""

    def __init__(self, walk: str, replica: str, session: Session, store: Any, every: int,
                 pool: ThreadPoolExecutor, hashes: bool = False, on_drain: Any = None) -> None:
        self.walk, self.replica, self.session, self.hashes = walk, replica, session, hashes
        self.store, self.every, self.pool = store, every, pool
        self.on_drain = on_drain  # called (on the pool) when the store says this replica drains
        self._boundaries = 0
        self._lock = threading.Lock()
        self._unsent: tuple[Boundary, list[str]] | None = None  # the newest boundary not sent yet

    def on_boundary(self, b: Boundary) -> None:
        """Model thread: note the boundary; it is pickled and sent on the pool. A boundary's world
        snapshot is a copy the world never touches again (rewind relies on that too), so this
        costs the model thread nothing."""
        self._boundaries += 1
        if (self._boundaries - 1) % self.every:
            return
        keys = sorted(self.session.inputs.peek().keys)
        with self._lock:
            first = self._unsent is None
            self._unsent = (b, keys)  # an older one not sent yet is superseded
        if first:
            self.pool.submit(self._send)

    def _send(self) -> None:
        with self._lock:
            unsent, self._unsent = self._unsent, None
        if unsent is None:
            return
        if self.send_now(*unsent) and self.on_drain is not None:
            self.on_drain()

    def send_now(self, b: Boundary, keys: list[str]) -> bool:
        """Pickle a boundary and store it (any thread but the model's); True when the store says
        this replica is to drain."""
        try:
            t0 = time.perf_counter()
            data = WalkSnapshot(b, keys).to_bytes()
            t1 = time.perf_counter()
            meta = {"chunk": b.chunk_index, "frame": b.frame_index, "replica": self.replica, "pid": os.getpid(),
                    "bytes": len(data), "pickle_ms": 1000 * (t1 - t0), "made": time.time()}
            drain = ray.get(self.store.keep.remote(self.walk, data, meta), timeout=60)
            meta["send_ms"] = 1000 * (time.perf_counter() - t1)
            self.store.timing.remote(self.walk, meta["send_ms"])
        except Exception:
            log.exception("sending walk %s's snapshot to the store failed", self.walk[:8])
            return False
        return bool(drain)

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
        actions = getattr(chunk, "actions", None)
        if actions:  # an action world's (small: a dozen frames of keys and mouse): a continued recording needs them
            record["actions"] = {k: np.asarray(v, np.float64).tolist() for k, v in actions.items() if v is not None}
        self.pool.submit(self.store.record.remote, self.walk, [record])


@dataclass
class HostedWalk:
    """A walk this replica runs (listed from its call's start; `session` is known once it is built)."""

    relay: RelaySocket
    session: Session | None = None
    shipper: WalkShipper | None = None
    moving: bool = False  # being handed off (drain)
    relay_gone: asyncio.Event = field(default_factory=asyncio.Event)  # the hand-off let go of the session
    handoff: dict[str, Any] | None = None  # what the hand-off took (for the gateway, figures)


class SessionHost:
    """A session-host replica (made a deployment in app.py with the cluster's options)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        bind_replica_grpc_to_node_address()  # before Serve opens its port, after this returns
        self.cfg = cfg
        self.server = StreamServer(cfg.serve).prepare()
        self.store = get_store(cfg.records_kept, cfg.resume_timeout)
        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id
        self.actor_name = ctx.replica_id.to_full_id_str()  # ray.get_actor(name, namespace="serve")
        self.node = ray.util.get_node_ip_address()
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="snapshots")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.walks: dict[str, HostedWalk] = {}
        self.draining = False
        self._mailbox: asyncio.Task | None = None
        self._spectators: dict[str, RelaySocket] = {}  # request id -> the spectator's relay

    async def _player_start(self, walk: str, hosted: HostedWalk, resume: bool) -> PlayerStart:
        """How the walk begins here: from its latest boundary when it resumes (with the keys held there,
        its recording continued in the walk's files), else from the first frame; its boundaries and
        chunks are shipped to the store from its first."""
        snap, recording = None, RecordingPlan()
        if resume:
            got = await self.store.latest.remote(walk)
            if got is not None:
                snap = WalkSnapshot.from_bytes(got[0])
        if self.cfg.serve.record_dir:
            path, records = (await self.store.resume_recording.remote(walk)) if snap is not None else (None, {})
            recording = RecordingPlan(continue_path=path, at_chunk=snap.boundary.chunk_index if snap else 0,
                                      records=records, on_open=lambda p: self.store.recording.remote(walk, p))
        return PlayerStart(resume=snap.boundary if snap is not None else None,
                           held_keys=tuple(snap.keys) if snap is not None else (), recording=recording,
                           on_session=partial(self._ship, walk, hosted))

    def _ship(self, walk: str, hosted: HostedWalk, session: Session) -> None:
        """The server's worker thread, with the walk's session before it starts: its boundaries and
        chunk records go to the store; the replica lists it as hosted (on the event loop)."""
        shipper = WalkShipper(walk, self.replica, session, self.store, self.cfg.snapshot_every, self.pool,
                              self.cfg.record_frame_hashes, on_drain=self._drain_soon)
        session.add_boundary_listener(shipper.on_boundary)
        session.add_listener(shipper.on_chunk)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._hosting, walk, hosted, session, shipper)

    def _hosting(self, walk: str, hosted: HostedWalk, session: Session, shipper: WalkShipper) -> None:
        if self.walks.get(walk) is not hosted:  # its call has ended meanwhile
            return
        hosted.session, hosted.shipper = session, shipper
        self.store.hosting.remote(walk, self.replica)
        if self.draining:  # a drain came while it started
            self._drain_now()

    async def host(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """One player's session for its whole life. request: walk, offer (the browser's message),
        path, resume. Yields {"type": "admitted", ...} at once (or {"type": "draining"} when this
        replica takes no new sessions), then {"type": "send", "text": ...} for each signaling
        message, and at the end {"type": "close", "code", "reason"} or {"type": "moved"} (handed off)."""
        walk, t0 = request["walk"], time.perf_counter()
        self._loop = asyncio.get_running_loop()
        if self.draining or await self.store.is_draining.remote(self.replica):
            self.draining = True
            yield {"type": "draining", "replica": self.replica}
            return
        yield {"type": "admitted", "replica": self.replica, "actor": self.actor_name, "node": self.node,
               "pid": os.getpid()}
        if self._mailbox is None or self._mailbox.done():
            self._mailbox = background(self._spectator_mailbox())
        relay = RelaySocket(request.get("path", "/ws"), [json.dumps(request["offer"])])
        hosted = HostedWalk(relay)
        self.walks[walk] = hosted
        task: asyncio.Future | None = None
        try:
            start = await self._player_start(walk, hosted, bool(request.get("resume")))
            task = asyncio.ensure_future(self.server.handle(relay, start))
            while True:
                get = asyncio.ensure_future(relay.outgoing.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if hosted.moving and hosted.relay_gone.is_set():  # handed off
                    get.cancel()
                    await asyncio.shield(task)  # the session and its recording are closed first
                    self._release(walk, hosted)  # now, not when the caller closes this stream (it may not read on)
                    yield {"type": "moved", **(hosted.handoff or {})}
                    return
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
            # the call ended: the player left (the gateway then frees the walk's snapshot), the walk
            # was handed off, or Serve is shutting this replica down (the snapshot stays: the walk moves)
            relay.peer_left()
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), 15.0)
            self._release(walk, hosted)

    def _release(self, walk: str, hosted: HostedWalk) -> None:
        """The walk's session here has ended: it is no longer hosted here, and the store lets its player
        resume it elsewhere (once: the call's end releases it too)."""
        if self.walks.get(walk) is hosted:
            del self.walks[walk]
            if hosted.session is not None:
                self.store.unhost.remote(walk, self.replica)

    # ---- drain -------------------------------------------------------------------------------

    def record_routing_stats(self) -> dict[str, Any]:
        """Serve asks every ROUTING_STATS_PERIOD_S; the gateway's router (routing.py) skips a draining replica."""
        return {"draining": self.draining}

    def _drain_soon(self) -> None:
        """Any thread: the store says this replica drains."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drain_now)

    def _drain_now(self) -> None:
        self.draining = True
        for walk, hosted in list(self.walks.items()):
            if not hosted.moving and hosted.session is not None:
                hosted.moving = True
                background(self._hand_off(walk, hosted))

    async def _hand_off(self, walk: str, hosted: HostedWalk) -> None:
        """Stop the walk at its next boundary, store that boundary, show the frames made before it,
        then end the session here (the call then yields "moved")."""
        t0 = time.perf_counter()
        session, shipper = hosted.session, hosted.shipper
        assert session is not None and shipper is not None
        session.hand_off()
        stopped = await asyncio.to_thread(session.handed_off.wait, 30.0)
        boundary = session.latest_boundary()
        if stopped and boundary is not None:
            keys = sorted(session.inputs.peek().keys)
            await asyncio.to_thread(shipper.send_now, boundary, keys)
        t_stored = time.perf_counter()
        deadline = time.monotonic() + 10.0
        while len(session.frames) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5 / session.spec.fps)  # the fan-out sends the last one
        hosted.handoff = {"chunk": boundary.chunk_index if boundary is not None else None,
                          "store_ms": round(1000 * (t_stored - t0), 1),
                          "handoff_ms": round(1000 * (time.perf_counter() - t0), 1)}
        log.info("walk %s handed off at chunk %s", walk[:8], hosted.handoff["chunk"])
        hosted.relay_gone.set()
        hosted.relay.peer_left()

    # ---- spectators --------------------------------------------------------------------------

    async def _spectator_mailbox(self) -> None:
        """Take spectator requests for this replica's walks from the store, as long as it runs."""
        while True:
            try:
                requests = await self.store.take.remote(self.replica, 2.0)
            except Exception:  # noqa: BLE001 - the store restarting; try again
                await asyncio.sleep(1.0)
                continue
            for req in requests:
                if req.get("cancel"):
                    relay = self._spectators.pop(req["id"], None)
                    if relay is not None:
                        relay.peer_left()
                else:
                    background(self._spectate(req))

    async def _spectate(self, req: dict[str, Any]) -> None:
        """One spectator of a walk here, on this replica's server: its messages go back through the store."""
        rid = req["id"]
        hosted = self.walks.get(req["walk"])
        play = None
        if hosted is not None and hosted.session is not None and not hosted.moving:
            play = next((p for p in self.server.sessions.values() if p.session is hosted.session), None)
        if play is None:
            self.store.reply.remote(rid, [{"type": "gone"}])
            return
        relay = RelaySocket(f"/ws?watch={play.id}", [json.dumps(req["offer"])])
        self._spectators[rid] = relay
        task = asyncio.ensure_future(self.server.handle(relay))
        end: dict[str, Any] = {"type": "close", "code": 1000, "reason": "closed"}
        try:
            while True:
                get = asyncio.ensure_future(relay.outgoing.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                kind, value = get.result()
                if kind == "close":
                    code, reason = value  # type: ignore[misc]
                    end = {"type": "close", "code": code, "reason": reason}
                    break
                self.store.reply.remote(rid, [{"type": "send", "text": value}])
        finally:
            relay.peer_left()
            self._spectators.pop(rid, None)
            self.store.reply.remote(rid, [end])
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 15.0)
