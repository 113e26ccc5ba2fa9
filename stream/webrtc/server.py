"""`StreamServer`: browsers walk through their own world over WebRTC.

One `websockets` server serves the page (see `signaling.py`) and carries signaling on `/ws`.
Each browser at the server is a `Guest` (guest.py). One that connects as a player gets its own
`Session` (its own world and model thread, built from a `PlayerStart` by `PlayerSessions`, sessions.py),
a `FrameFanout` pacing that session's frames at the content rate, a `SessionVideoTrack`, and a
data channel for input and stats. Spectators (`/ws?watch=<session id>`) get another track on
the same fan-out; their input is ignored. A player's websocket is the session's lifeline: when
the tab closes (or the peer connection fails, or it idles too long), the session, its model
thread, its tracks and its peer connection are freed. `close()` ends every one of them.

Admission comes before any work (`admission.py`, `connections.py`): every TCP connection counts against a total
and a per-address limit from accept; one over them is answered HTTP 503 at once and closed, except
that over the total a newcomer takes the place of a socket that has sent no request for a second.
A socket that has not sent a complete request within `request_timeout` is closed. A player holds a
session slot (at most `max_sessions`, `max_sessions_per_client` for one address) from its first
message on, its world is built only once a valid offer (`offer.py`) has arrived, and the slot
comes back only when that world is closed. At start the open-file limit is raised to its hard
limit and the connection limit kept below what it leaves; a failing accept is logged once a
minute, without a traceback. Clients get short codes and fixed messages;
bad input is logged once per kind and minute, without a traceback. A recording (`--record-dir`,
`session_recording.py`) opens its files with the first frame sent and never fails a walk.

Signaling, JSON over the websocket, one offer/answer per connection: every message the page hears
is made in `signaling.py`, which describes them (the cluster's gateway speaks the same).

The data channel (opened by the browser) carries the input messages of `input_channel.py` and
brings back {"t": "stats", ...} every `stats_interval` seconds and {"t": "pong", ...} (guest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from worldwalk.runtime.heap import release_free_heap
from worldwalk.runtime.progress import Progress
from worldwalk.runtime.world import load_world_code
from worldwalk.runtime.worlds.world_pool import WorldPool

from .admission import ACCEPT_BURST, Admission
from .config import ServeConfig
from .connections import Accepting
from .guest import Guest
from .input_channel import InputGate
from .offer import MAX_SIGNALING_BYTES
from .peer import apply_bitrate, install_candidate_hook
from .sessions import PlayerSessions, PlayerStart, SessionFactory
from .signaling import (
    SERVER_ERROR,
    SHUTTING_DOWN,
    AccessConfig,
    BadSignaling,
    config_message,
    load_web_files,
    no_slot,
    no_such_session,
    progress_message,
    query_param,
    receive_offer,
    refuse,
    route_request,
    spectators_full,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimitedLog:
    """One log line per kind per `interval` seconds (with how many were not logged), never a
    traceback: for bad client input (the client's fault, not the server's) and for recordings
    that stop (a full disk is said once, not once per frame or player)."""

    def __init__(self, what: str, interval: float = 60.0) -> None:
        self.what = what
        self.interval = interval
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def note(self, kind: str, detail: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._last[kind] = now
        quiet = self._quiet.pop(kind, 0)
        more = f" ({quiet} more since the last such line)" if quiet else ""
        log.warning("%s (%s): %s%s", self.what, kind, detail, more)


class BusyError(Exception):
    """A player was turned away: every session slot is in use."""


class SignalingError(Exception):
    """The browser broke the signaling protocol; it has been told and the socket closed."""


def page_url(cfg: ServeConfig, port: int) -> str:
    """The URL a player opens: a wildcard bind is reached on loopback, an IPv6 host in brackets, and
    the token appended when one is required."""
    host = cfg.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}/"
    return url + f"?token={cfg.token}" if cfg.require_token else url


class StreamServer:
    """The `worldwalk serve` server. `await start()`, then `await close()` (or `async with`)."""

    def __init__(self, cfg: ServeConfig | None = None, session_factory: SessionFactory | None = None) -> None:
        """`session_factory(start)` makes each player's `Session` from its `PlayerStart` (sessions.py);
        default: a session of the server's world (`PlayerSessions.default_session`)."""
        self.cfg = cfg or ServeConfig()
        self.access = AccessConfig.of(self.cfg)
        self.guests: set[Guest] = set()
        self.busy_refusals = 0
        self.admission = Admission(self.cfg.admission_config())
        # one model for every session (runtime/worlds/world_pool.py)
        self.worlds = WorldPool(self.cfg.world, batch=self.cfg.batch_sessions)
        self.recording_failures = RateLimitedLog("recording stopped")
        # players' sessions, built from a PlayerStart by `session_factory` (default: the server's world)
        self.players = PlayerSessions(self.cfg, self.worlds, session_factory, self.recording_failures.note)
        self.sessions = self.players.running  # by session id: every player's session, until its world is closed
        self.bad_input = RateLimitedLog("bad client input")
        self.accept_failures = RateLimitedLog("accepting a connection failed")
        self.accepting = Accepting(self.admission, self.accept_failures.note)  # connections counted from accept
        self._files: dict[str, bytes] = {}
        self._server: Server | None = None
        self._closing = False

    # ---- lifecycle ----------------------------------------------------------------------------

    def prepare(self) -> StreamServer:
        """Everything `start()` does but listen: for hosts whose websockets arrive another way
        (the cluster's session hosts, through `handle`)."""
        self._files = load_web_files()
        apply_bitrate(self.cfg.peer.max_bitrate)
        install_candidate_hook()
        try:  # the world's imports happen here, not inside the first session's build
            load_world_code(self.cfg.world)
        except Exception as e:  # noqa: BLE001 - the first session's build reports it properly
            log.debug("the world's code did not import: %s: %s", type(e).__name__, e)
        return self

    async def handle(self, ws: Any, start: PlayerStart | None = None) -> None:
        """Run one guest's whole life on a websocket accepted elsewhere: an object with the
        `ServerConnection` calls used here (`request.path`, `send`, `recv`, `close`, `async for`).
        A player's walk begins as `start` says (sessions.py; default: a new walk, new recording)."""
        await self._handle(ws, start)

    async def start(self) -> StreamServer:
        self.prepare()
        self.accepting.limit_to_fds()
        self.accepting.watch(asyncio.get_running_loop())
        self._server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            create_connection=self.accepting.connection,
            backlog=ACCEPT_BURST,  # the accepts one wake-up takes: the open-file budget leaves room for them
            max_size=MAX_SIGNALING_BYTES,
            open_timeout=self.cfg.request_timeout,  # from accept to the handshake's end
            ping_interval=10,
            ping_timeout=20,
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return page_url(self.cfg, self.port)

    async def close(self) -> None:
        """Close every peer connection and session, then the listening socket."""
        self._closing = True
        for guest in list(self.guests):
            guest.end("shutdown")
            if guest.pc is None:  # still signaling: nothing to wait for
                with contextlib.suppress(Exception):
                    await guest.ws.close(1001, "shutdown")
        if self._server is not None:
            self._server.close(close_connections=False)
            deadline = time.monotonic() + 10.0
            while self.guests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        for play in list(self.sessions.values()):  # a session whose handler did not finish
            await self.players.end(play)
        self.accepting.unwatch(asyncio.get_running_loop())
        self.worlds.close()

    async def __aenter__(self) -> StreamServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def status(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "slots_held": self.admission.slots_held,
            "connections": self.admission.connections,
            "guests": len(self.guests),
            "max_sessions": self.cfg.max_sessions,
            "busy_refusals": self.busy_refusals,
            "refused_connections": self.admission.refused_connections,
            "evicted_idle_connections": self.admission.evicted_connections,
            "opened": self.players.opened,
            "closed": self.players.closed,
        }

    # ---- HTTP ---------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.admission.request_received(connection)  # no longer idle: its place is its own
        # a full server still serves the page: it connects, hears "busy" and says so clearly
        return route_request(self.access, self._files, connection, request)

    # ---- one websocket ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection, start: PlayerStart | None = None) -> None:
        watch = query_param(ws.request.path, "watch") if ws.request else None
        guest = Guest(ws=ws, role="spectator" if watch else "player", gate=InputGate(self.cfg.input))
        guest.ended = asyncio.get_running_loop().create_future()
        self.guests.add(guest)
        reason = "closed"
        try:
            if self._closing:
                await refuse(ws, SHUTTING_DOWN)
                return
            if watch:
                reason = await self._run_spectator(guest, watch)
            else:
                reason = await self._run_player(guest, start or PlayerStart())
        except BusyError:
            reason = "busy"
        except SignalingError:
            reason = "bad_request"
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
            reason = "offer_timeout"
        except ConnectionClosed:
            reason = "websocket_closed"
        except Exception:  # a real server fault: its traceback is logged, the client gets a fixed text
            log.exception("guest failed")
            reason = "error"
            with contextlib.suppress(Exception):
                await ws.send(SERVER_ERROR.text)
        finally:
            had_world = guest.role == "player" and guest.play is not None
            await guest.close(reason)
            if had_world:  # its world, peer and frames are freed by now: give the heap back
                await asyncio.get_running_loop().run_in_executor(None, release_free_heap)
            self.guests.discard(guest)

    async def _signaling(self, step: Awaitable[T]) -> T:
        """One signaling step (signaling.py, guest.py); a browser that broke the protocol has been told
        and its socket closed: logged here, one line per kind and minute, and the guest ends."""
        try:
            return await step
        except BadSignaling as e:
            self.bad_input.note(e.kind, e.detail)
            raise SignalingError(e.reason) from None

    async def _run_player(self, guest: Guest, start: PlayerStart) -> str:
        ws = guest.ws
        client = _client_address(ws)
        slot = self.admission.try_acquire(client)  # before any work for this player
        if slot is None:
            self.busy_refusals += 1
            full = self.admission.full or client is None
            await refuse(ws, no_slot(self.cfg, server_full=full))
            raise BusyError
        try:
            await ws.send(config_message(self.cfg, guest.role))
            offer = await self._signaling(receive_offer(ws, self.cfg.offer, self.cfg.connect_timeout))
        except BaseException:
            slot.release()
            raise
        # only now, with the slot held and a valid offer in hand, is the world built; a first start
        # that builds graphs tells the page how long it has taken so far
        progress = partial(_tell_progress, ws, asyncio.get_running_loop())
        play = await self.players.open(slot, start, progress)  # the slot is the session's now
        play.player = guest
        guest.play = play
        play.fanout.start()
        try:
            await self._signaling(guest.connect(offer, self.cfg.peer, self.cfg.stats_interval))
            return await guest.until_end(self.cfg.connect_timeout, self.cfg.idle_timeout)
        finally:
            await self.players.end(play)

    async def _run_spectator(self, guest: Guest, session_id: str) -> str:
        ws = guest.ws
        play = self.sessions.get(session_id)
        if play is None or play.ending:
            await refuse(ws, no_such_session(session_id))
            return "no_such_session"
        if len(play.spectators) >= self.cfg.max_spectators:
            await refuse(ws, spectators_full(session_id))
            return "busy"
        play.spectators.add(guest)
        guest.play = play
        await ws.send(config_message(self.cfg, guest.role))
        offer = await self._signaling(receive_offer(ws, self.cfg.offer, self.cfg.connect_timeout))
        if guest.ended is not None and guest.ended.done():  # the session ended meanwhile
            return guest.ended.result()
        await self._signaling(guest.connect(offer, self.cfg.peer, self.cfg.stats_interval))
        return await guest.until_end(self.cfg.connect_timeout, self.cfg.idle_timeout)


def _client_address(ws: Any) -> str | None:
    """The client's IP address, for the per-address session cap; None when not known (a websocket
    relayed from elsewhere, as on the cluster's session hosts)."""
    client = getattr(ws, "client", None)  # AdmittedConnection
    return client if isinstance(client, str) and client != "?" else None


def _tell_progress(ws: ServerConnection, loop: asyncio.AbstractEventLoop, p: Progress) -> None:
    """From the build's progress thread: queue the message on the event loop (a closed socket drops it)."""

    async def send() -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(progress_message(p))

    if not loop.is_closed():
        asyncio.run_coroutine_threadsafe(send(), loop)
