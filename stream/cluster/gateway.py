"""`Gateway`: the cluster's ingress deployment (Ray Serve + FastAPI): page, signaling, admission.

It speaks the single-process server's page protocol, all of it from `webrtc/signaling.py`: the
page's files and headers, the gate (Host, Origin and token checks), the config, the offer's checks,
every refusal and message the page hears; nothing here makes a message of its own. With serve's
connection limits (`admission.py`: at most `max_connections` signaling sockets open at once,
`max_connections_per_client` from one address; over them, refused before the websocket opens) it
sends the browser its config, takes its offer and opens one long streaming call to the session
hosts (`SessionHost.host`) for the player's whole session. Ray Serve picks a replica with a
free slot; the call's first item ("admitted") says it got one. No slot within `admission_wait`
seconds: the player hears `busy`. With autoscaling the player waits in line instead, told its
place (`{"type": "queued", "ahead": n}`), while Serve adds replicas; so does a player resuming its
walk, for up to `resume_timeout`. Then the gateway relays the
host's signaling messages (answer, ended) to the browser. Media never passes here: video goes
from the replica's node to the browser.

When the replica of a walk dies, the call fails: the gateway tells the browser
`{"type": "moved", "walk": ...}` and closes; the page reconnects with `?resume=<walk>` and the
walk continues on another replica from its latest snapshot in the store. A draining replica
hands its walks off the same way (the call ends with {"type": "moved"} at a chunk boundary), and
refuses new calls, which the gateway then makes again (Serve picks another replica). A walk id
is a 128-bit random token handed only to its player (in the answer), so no one else can take it
over.

Spectator links (`?watch=<id>`, the id the player's answer carries as `session`, the same
wherever the walk runs): Serve routes a call to any replica, and a spectator must reach the one
that holds the walk, so its offer goes through the store's mailbox to that replica (see
session_host.py), which runs the spectator beside the player and sends its answer back the same
way. When the walk moves, the spectator hears `{"type": "moved"}` and the page reconnects with
the same link, to the walk's new replica.

Every message the browser sends is bounded as `serve` bounds it (MAX_SIGNALING_BYTES, an offer
with room to spare): the first larger one closes the connection, which ends its session. Serve's
HTTP proxy does it before the message comes here (proxy_limits.py, "message too big"); where that
middleware is not in the proxy (a Serve started without it), the gateway does it on reading the
message ("message too big for signaling"), by when the proxy has read and queued, without bound,
all the browser sent (up to uvicorn's 16 MiB a message).

FastAPI reads the route handlers' annotations at run time, so this module does not use
`from __future__ import annotations`.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from ray import serve
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from worldwalk.stream.webrtc.admission import Admission
from worldwalk.stream.webrtc.offer import MAX_SIGNALING_BYTES
from worldwalk.stream.webrtc.server import RateLimitedLog
from worldwalk.stream.webrtc.signaling import (
    ALL_DRAINING,
    WALK_RUNNING,
    AccessConfig,
    AccessDenied,
    BadSignaling,
    check_host,
    check_websocket,
    config_message,
    ended_message,
    hosts_full,
    load_web_files,
    moved_message,
    no_such_session,
    offer_request,
    page_answer,
    plain_text,
    queued_message,
    read_until_closed,
    receive_offer,
    refuse,
    relayed,
)

from .config import ClusterConfig
from .proxy_limits import message_size
from .security import bind_replica_grpc_to_node_address
from .snapshots import get_store, watch_id

log = logging.getLogger(__name__)

api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
REFUSALS = RateLimitedLog("signaling refused")  # one line a minute per kind, however many come
DRAINING_RETRIES = 20
MOVE_WAIT_S = 30.0  # a spectator waits this long for its walk to come up on another replica


class BrowserSocket:
    """The browser's websocket (FastAPI's) as signaling.py's exchanges use a socket: `send`,
    `recv`, `close`, and websockets' ConnectionClosed once it is closed. The first message over
    MAX_SIGNALING_BYTES closes it (1009) before anything reads it, and reads as closed."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send(self, message: str) -> None:
        try:
            await self.ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError) as e:  # RuntimeError: starlette's "already closed"
            raise ConnectionClosed(None, None) from e

    async def recv(self) -> str | bytes:
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError) as e:
            raise ConnectionClosed(None, None) from e
        if msg["type"] == "websocket.disconnect":
            raise ConnectionClosed(None, None)
        if message_size(msg) > MAX_SIGNALING_BYTES:
            REFUSALS.note("too_big", f"a message over {MAX_SIGNALING_BYTES} bytes closed its connection")
            await self.close(1009, "message too big for signaling")
            raise ConnectionClosed(None, None)
        text = msg.get("text")
        return text if text is not None else msg.get("bytes") or b""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason[:120])


@serve.ingress(api)
class Gateway:
    def __init__(self, hosts: Any, cfg: ClusterConfig) -> None:
        bind_replica_grpc_to_node_address()  # before Serve opens its port, after this returns
        self.hosts = hosts  # DeploymentHandle of SessionHost
        self.cfg = cfg
        self.access = AccessConfig.of(cfg.serve)
        self.files = load_web_files()
        self.admission = Admission(cfg.serve.admission_config())  # its connection limits (sessions: the hosts')
        self.store = get_store(cfg.records_kept, cfg.resume_timeout)
        self.line: deque[str] = deque()  # walks waiting for a slot, oldest first
        self.live: set[str] = set()  # walks with a call open from here (one tab per walk)
        self.busy_refusals = 0
        self.draining_refusals = 0  # calls a draining replica answered (the router had not heard yet)

    # ---- the page ----------------------------------------------------------------------------

    @api.get("/{name:path}")
    async def page(self, name: str, request: Request) -> Response:
        try:
            check_host(self.access, request.headers)
        except AccessDenied as e:
            return PlainTextResponse(plain_text(e.reason), status_code=e.status)
        status, headers, body = page_answer(self.files, "/" + name, request.headers.get("host", ""))
        return Response(body, status_code=status, headers=headers)

    # ---- signaling ---------------------------------------------------------------------------

    @api.websocket("/ws")
    async def signaling(self, ws: WebSocket) -> None:
        query = ws.url.query
        try:
            check_websocket(self.access, ws.headers, ws.url.path + ("?" + query if query else ""))
        except AccessDenied as e:
            log.warning("signaling refused: %s", e.reason)
            await ws.close(code=1008, reason=e.reason[:120])  # before accept: HTTP 403
            return
        key = object()
        refusal = self.admission.open_connection(key, ws.client.host if ws.client else "?")
        if refusal is not None:
            REFUSALS.note("connections", refusal)
            await self._deny(ws, refusal + "; try again later")
            return
        try:
            await ws.accept()
            page = BrowserSocket(ws)
            # refused offers (BadSignaling, TimeoutError) have been told so by receive_offer
            with contextlib.suppress(ConnectionClosed, BadSignaling, asyncio.TimeoutError):
                watch = ws.query_params.get("watch")
                if watch:
                    await self._spectate(page, watch)
                    return
                await page.send(config_message(self.cfg.serve, "player", cluster=True))
                offer = await self._receive_offer(page)
                resume = ws.query_params.get("resume")
                if resume in self.live:
                    await refuse(page, WALK_RUNNING)
                    return
                walk = resume if resume and await self.store.claim.remote(resume) else None
                await self._run(page, offer, walk or secrets.token_urlsafe(16), resumed=walk is not None)
        finally:
            self.admission.close_connection(key)

    @staticmethod
    async def _deny(ws: WebSocket, reason: str) -> None:
        """Refuse a websocket before it opens: HTTP 503 where the server can send one, else the
        close before accept (HTTP 403)."""
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            with contextlib.suppress(Exception):
                await ws.send_denial_response(PlainTextResponse(plain_text(reason), status_code=503))
                return
        await ws.close(code=1013, reason=reason[:120])

    async def _receive_offer(self, page: BrowserSocket) -> dict[str, str]:
        """The offer, checked here with the hosts' own bounds, so a host never spends a slot on an
        offer it would refuse: the offer message as the host's server reads it."""
        return offer_request(await receive_offer(page, self.cfg.serve.offer, self.cfg.serve.connect_timeout))

    async def _run(self, page: BrowserSocket, offer: dict[str, str], walk: str, resumed: bool) -> None:
        self.live.add(walk)
        try:
            await self._relay(page, offer, walk, resumed)
        finally:
            self.live.discard(walk)

    async def _relay(self, page: BrowserSocket, offer: dict[str, str], walk: str, resumed: bool) -> None:
        t0 = time.perf_counter()
        calls = self.hosts.options(stream=True)
        for attempts in range(1, DRAINING_RETRIES + 1):
            gen = calls.host.remote({"walk": walk, "offer": offer, "path": "/ws", "resume": resumed})
            admitted = await self._admit(page, gen, walk, resumed)
            if admitted is None:
                return
            if admitted["type"] != "draining":
                admitted["attempts"] = attempts
                break
            self.draining_refusals += 1
            await asyncio.sleep(0.05)  # a replica whose draining the router (routing.py) has not heard of yet
        else:
            await refuse(page, ALL_DRAINING)
            return
        reader = asyncio.ensure_future(read_until_closed(page))
        pump = asyncio.ensure_future(self._pump(page, gen, walk, resumed, t0, admitted))
        try:
            done, _ = await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:  # the browser left: end the call, which ends the session
                gen.cancel()
                self.store.end.remote(walk)
                return
            try:
                code, reason, handoff = pump.result()
                if reason == "moved":  # handed off at a chunk boundary (a drain)
                    await page.send(moved_message("the session host is draining; continuing on another",
                                                  walk=walk, drain=handoff))
                else:
                    self.store.end.remote(walk)  # the session ended (idle, error): nothing to resume
            except Exception as e:  # the replica died (killed, node lost) or was shut down
                if reader.done():  # ... or the browser left while a message was on its way
                    self.store.end.remote(walk)
                    return
                log.warning("the session host of walk %s stopped (%s); the player moves", walk[:8], type(e).__name__)
                self.store.unhost.remote(walk)  # its spectators follow it
                await page.send(moved_message("the session host stopped; continuing on another", walk=walk))
                code, reason = 1012, "moved"
            await page.close(code, reason)
        finally:
            for task in (reader, pump):
                task.cancel()
            gen.cancel()  # a no-op when the call is over; ends the session when this handler failed

    async def _admit(self, page: BrowserSocket, gen: Any, walk: str, resumed: bool = False) -> dict | None:
        """Wait for a replica slot. A new player hears busy after `admission_wait`, or waits in line
        (autoscaling). A player whose walk moved is owed its walk: it waits in line, told its place,
        for up to `resume_timeout` (its walk kept all that time: claimed again each second), since
        just after a session host died the router may take a while to find the free slot another
        has; then it hears busy."""
        first = asyncio.ensure_future(gen.__anext__())
        wait = self.cfg.admission_wait
        try:
            if wait is not None and not resumed:
                done, _ = await asyncio.wait({first}, timeout=wait)
                return first.result() if done else await self._busy(page)
            deadline = time.monotonic() + self.cfg.resume_timeout if wait is not None else None
            self.line.append(walk)
            try:
                while True:
                    done, _ = await asyncio.wait({first}, timeout=1.0)
                    if done:
                        return first.result()
                    if deadline is not None and time.monotonic() >= deadline:
                        return await self._busy(page)
                    if resumed:
                        await self.store.claim.remote(walk)  # its walk waits as long as its player does
                    await page.send(queued_message(self.line.index(walk)))
            finally:
                self.line.remove(walk)
        finally:
            if not first.done():
                first.cancel()
                gen.cancel()

    async def _busy(self, page: BrowserSocket) -> None:
        """No slot in time: the player hears busy (counted), and its socket closes."""
        self.busy_refusals += 1
        await refuse(page, hosts_full(self.cfg.sessions_per_replica))

    async def _pump(self, page: BrowserSocket, gen: Any, walk: str, resumed: bool, t0: float,
                    admitted: dict) -> tuple[int, str, dict | None]:
        """Relay the host's messages to the browser until the host closes; (code, reason, what a
        hand-off took when the host handed the walk off)."""
        async for item in gen:
            if item["type"] == "close":
                return int(item["code"]), str(item["reason"]), None
            if item["type"] == "moved":
                return 1012, "moved", {k: v for k, v in item.items() if k != "type"}
            # the answer gains where the walk runs; signaling_ms: offer in -> answer out here, host_ms:
            # the host's part (session built)
            _, text = relayed(item["text"], walk=walk, resumed=resumed, replica=admitted["replica"],
                              node=admitted["node"],
                              session=watch_id(walk),  # the spectator link's id, the same wherever the walk runs
                              signaling_ms=round(1000 * (time.perf_counter() - t0), 1), host_ms=item.get("host_ms"),
                              attempts=admitted.get("attempts", 1))
            if text is not None:
                await page.send(text)
        return 1000, "closed", None

    # ---- spectators --------------------------------------------------------------------------

    async def _where(self, watch: str, not_on: str | None = None) -> tuple[str, str] | None:
        """(walk, replica) once the walk runs on a replica other than `not_on`; None: no such walk
        (or it did not come up again within MOVE_WAIT_S)."""
        deadline = time.monotonic() + MOVE_WAIT_S
        while time.monotonic() < deadline:
            where = await self.store.where.remote(watch)
            if where is None:
                return None
            if where[1] is not None and where[1] != not_on:
                return where[0], where[1]
            await asyncio.sleep(0.2)
        return None

    async def _spectate(self, page: BrowserSocket, watch: str) -> None:
        """A spectator link: signaling to the replica that holds the walk, through the store's mailbox."""
        if await self.store.where.remote(watch) is None:
            await refuse(page, no_such_session(watch))
            return
        await page.send(config_message(self.cfg.serve, "spectator", cluster=True))
        offer = await self._receive_offer(page)
        where = await self._where(watch)
        if where is None:
            await refuse(page, no_such_session(watch))
            return
        walk, replica = where
        rid = secrets.token_urlsafe(12)
        self.store.post.remote(replica, {"id": rid, "walk": walk, "offer": offer})
        reader = asyncio.ensure_future(read_until_closed(page))
        ended: str | None = None
        try:
            while ended is None:
                replies = asyncio.ensure_future(self.store.replies.remote(rid, 1.0))
                await asyncio.wait({replies, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():  # the spectator left
                    self.store.post.remote(replica, {"id": rid, "cancel": True})
                    return
                messages = replies.result()
                for m in messages:
                    if m["type"] == "send":
                        msg, text = relayed(m["text"], session=watch, replica=replica)
                        if msg.get("type") == "ended":
                            ended = str(msg.get("reason"))
                            break
                        if text is not None:
                            await page.send(text)
                    else:  # "close" (its server is done with it) or "gone" (the walk left that replica)
                        ended = ended or m.get("reason") or m["type"]
                        break
                if not messages and ended is None:  # quiet: is the walk still where we sent the spectator?
                    where = await self.store.where.remote(watch)
                    if where is None or where[1] != replica:
                        ended = "moved"
            # the spectator's session ended: its own peer failed (say so), or the walk moved (follow
            # it) or ended (say so)
            if ended not in ("session_closed", "moved", "gone", "closed", "websocket_closed"):
                await page.send(ended_message(ended))
                await page.close(1000, ended[:100])
            elif await self._where(watch, not_on=replica) is not None:
                await page.send(moved_message("the walk moved to another session host"))
                await page.close(1012, "moved")
            else:
                await page.send(ended_message("session_closed"))
                await page.close(1000, "session_closed")
        finally:
            reader.cancel()
