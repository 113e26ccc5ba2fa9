"""`StreamServer`: browsers walk through their own world over WebRTC.

One `websockets` server serves the page (see `signaling.py`) and carries signaling on `/ws`.
Each browser that connects as a player gets its own `Session` (its own world and model thread),
a `FrameFanout` pacing that session's frames at the content rate, a `SessionVideoTrack`, and a
data channel for input and stats. Spectators (`/ws?watch=<session id>`) get another track on
the same fan-out; their input is ignored. A player's websocket is the session's lifeline: when
the tab closes (or the peer connection fails, or it idles too long), the session, its model
thread, its tracks and its peer connection are freed. `close()` ends every one of them.

Admission comes before any work (`admission.py`): every TCP connection counts against a total
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
brings back {"t": "stats", ...} every `stats_interval` seconds and {"t": "pong", ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from worldwalk.controls import Bindings, IntegratorConfig, PoseIntegrator
from worldwalk.runtime.heap import release_free_heap
from worldwalk.runtime.progress import Progress, listening
from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.world import WorldConfig, backends_text, load_world_code
from worldwalk.runtime.world_pool import WorldPool, default_max_sessions

from ..record.recorder import RecorderConfig
from .admission import (
    Admission,
    AdmissionConfig,
    SessionSlot,
    connections_within_fds,
    open_fds,
    raise_fd_limit,
)
from .input_channel import InputChannelConfig, InputGate, InputMessage
from .offer import MAX_SIGNALING_BYTES, OfferLimits
from .peer import (
    PeerConfig,
    add_video_transceiver,
    apply_bitrate,
    gather_with_addresses,
    install_candidate_hook,
    is_loopback_host,
    new_peer_connection,
)
from .pose_channel import pose_loop
from .signaling import (
    SERVER_ERROR,
    SHUTTING_DOWN,
    AccessConfig,
    BadSignaling,
    Refusal,
    answer_message,
    config_message,
    ended_message,
    load_web_files,
    no_slot,
    no_such_session,
    progress_message,
    query_param,
    read_until_closed,
    receive_offer,
    refuse,
    route_request,
    spectators_full,
)
from .video_track import FanoutConfig, FrameFanout, SessionVideoTrack

log = logging.getLogger(__name__)



@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (see StreamServer.port)
    world: WorldConfig = field(default_factory=WorldConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    controls: IntegratorConfig = field(default_factory=IntegratorConfig)
    bindings: Bindings = field(default_factory=Bindings)
    # players (worlds) at once, counting those being torn down; one more gets "busy". None: on a GPU what the
    # memory plan fits beside the shared model (runtime/world_pool.py:default_max_sessions), 4 on the CPU
    max_sessions: int | None = None
    max_connections: int = 64  # TCP connections open at once, idle ones included; more get HTTP 503
    max_connections_per_client: int = 16  # sockets open at once from one address (a tab: a few)
    max_sessions_per_client: int = 2  # players (worlds) at once from one address
    request_timeout: float = 5.0  # seconds from accept to a complete HTTP request; then the socket is closed
    max_spectators: int = 8  # per session
    batch_sessions: bool = False  # sessions in step share forwards of the one model (eager only; runtime/batching.py)
    idle_timeout: float = 300.0  # seconds without input before a player's session is freed
    connect_timeout: float = 30.0  # seconds from the websocket opening to a connected peer
    token: str | None = None
    require_token: bool | None = None  # None: required exactly when host is not loopback
    allowed_origins: list[str] = field(default_factory=list)
    peer: PeerConfig = field(default_factory=PeerConfig)
    offer: OfferLimits = field(default_factory=OfferLimits)
    input: InputChannelConfig = field(default_factory=InputChannelConfig)
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    stats_interval: float = 0.25  # seconds between stats messages on the data channel
    record_dir: str | None = None  # record each player's session: <dir>/session-<id>-<time>.mp4
    recorder: RecorderConfig = field(default_factory=RecorderConfig)  # how recordings encode ([recorder])

    def __post_init__(self) -> None:
        if self.max_sessions is None:
            self.max_sessions = default_max_sessions(self.world)
        self.admission_config()  # names a bad limit
        if self.require_token is None:
            self.require_token = self.token is not None or not is_loopback_host(self.host)
        if self.require_token and not self.token:
            self.token = secrets.token_urlsafe(16)

    def admission_config(self) -> AdmissionConfig:
        return AdmissionConfig(max_sessions=self.max_sessions, max_connections=self.max_connections,
                               max_connections_per_client=self.max_connections_per_client,
                               max_sessions_per_client=self.max_sessions_per_client)


@dataclass
class PlaySession:
    """A player's session and everything the server holds for it."""

    id: str
    session: Session
    fanout: FrameFanout
    recorder: Any = None
    slot: SessionSlot | None = None  # released once the world is closed
    ending: bool = False  # being torn down (still listed until its world is closed)
    player: Viewer | None = None
    spectators: set[Viewer] = field(default_factory=set)
    last_input: float = field(default_factory=time.monotonic)


@dataclass
class Viewer:
    """One websocket + peer connection: a player or a spectator."""

    ws: ServerConnection
    role: str  # "player" | "spectator"
    gate: InputGate
    play: PlaySession | None = None
    pc: RTCPeerConnection | None = None
    track: SessionVideoTrack | None = None
    channel: RTCDataChannel | None = None
    codec: str = ""
    ended: asyncio.Future | None = None  # result: the reason the viewer ends
    tasks: list[asyncio.Task] = field(default_factory=list)
    key_log: deque = field(default_factory=lambda: deque(maxlen=256))  # (key, down, monotonic)

    def end(self, reason: str) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(reason)

    __hash__ = object.__hash__
    __eq__ = object.__eq__


_REFUSED_TEXT = b"worldwalk has too many open connections; try again in a few seconds.\n"
REFUSED_AT_ACCEPT = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 5\r\n\r\n%s"
                     % (len(_REFUSED_TEXT), _REFUSED_TEXT))


class AdmittedConnection(ServerConnection):
    """A TCP connection counted against the admission's connection limits from accept to close
    (sockets that send no request count too, until `request_timeout` closes them). One over a
    limit is answered 503 and closed at accept: it never becomes a websockets connection."""

    def __init__(self, admission: Admission, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission = admission
        self.refused = False
        self.client = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        if self.admission.open_connection(self, self.client, evict=_evict) is not None:
            self.refused = True
            transport.write(REFUSED_AT_ACCEPT)  # type: ignore[attr-defined]
            transport.close()  # after the 503 is written; nothing is read
            return
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        super().connection_lost(exc)
        self.admission.close_connection(self)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else super().eof_received()


def _evict(connection: Any) -> None:
    """An idle socket gives its place to a newcomer: closed now, without a word."""
    connection.transport.abort()


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


SessionFactory = Callable[[], Session]


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
        self.cfg = cfg or ServeConfig()
        self._session_factory = session_factory or self._default_session
        self.access = AccessConfig(
            token=self.cfg.token,
            require_token=bool(self.cfg.require_token),
            loopback_only=is_loopback_host(self.cfg.host),
            allowed_origins=list(self.cfg.allowed_origins),
        )
        self.sessions: dict[str, PlaySession] = {}
        self.viewers: set[Viewer] = set()
        self.busy_refusals = 0
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.admission = Admission(self.cfg.admission_config())
        # one model for every session (runtime/world_pool.py)
        self.worlds = WorldPool(self.cfg.world, batch=self.cfg.batch_sessions)
        self.bad_input = RateLimitedLog("bad client input")
        self.recording_failures = RateLimitedLog("recording stopped")
        self.accept_failures = RateLimitedLog("accepting a connection failed")
        self.fd_limit = 0
        self._files: dict[str, bytes] = {}
        self._server: Server | None = None
        self._closing = False
        self._prompt_noted = False  # "--prompt is ignored" said once
        self._loop_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

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

    async def handle(self, ws: Any) -> None:
        """Run one viewer's whole life on a websocket accepted elsewhere: an object with the
        `ServerConnection` calls used here (`request.path`, `send`, `recv`, `close`, `async for`)."""
        await self._handle(ws)

    async def start(self) -> StreamServer:
        self.prepare()
        self._limit_connections_to_fds()
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            create_connection=self._new_connection,
            max_size=MAX_SIGNALING_BYTES,
            open_timeout=self.cfg.request_timeout,  # from accept to the handshake's end
            ping_interval=10,
            ping_timeout=20,
        )
        return self

    def _limit_connections_to_fds(self) -> None:
        """Raise the open-file limit to its hard limit; keep the connection limit below what is left."""
        self.fd_limit = raise_fd_limit()
        limits = self.admission.cfg
        allowed = connections_within_fds(limits.max_connections, self.fd_limit, open_fds(), limits.max_sessions)
        if allowed < limits.max_connections:
            log.warning("the open-file limit is %d: at most %d connections at once (not %d)",
                        self.fd_limit, allowed, limits.max_connections)
            limits.max_connections = allowed
            limits.max_connections_per_client = min(limits.max_connections_per_client, allowed)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A failing accept (out of descriptors or memory) is said once a minute, without a traceback;
        asyncio retries the accept by itself. Anything else goes to the loop's usual handler."""
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            kind = errno.errorcode.get(getattr(exc, "errno", None) or 0, "error")
            self.accept_failures.note(kind, f"{exc}; the server waits a second and accepts again")
            return
        if self._loop_handler is not None:
            self._loop_handler(loop, context)
        else:
            loop.default_exception_handler(context)

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
        for viewer in list(self.viewers):
            viewer.end("shutdown")
            if viewer.pc is None:  # still signaling: nothing to wait for
                with contextlib.suppress(Exception):
                    await viewer.ws.close(1001, "shutdown")
        if self._server is not None:
            self._server.close(close_connections=False)
            deadline = time.monotonic() + 10.0
            while self.viewers and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        for play in list(self.sessions.values()):  # a session whose handler did not finish
            await self._end_session(play)
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._loop_handler)
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
            "viewers": len(self.viewers),
            "max_sessions": self.cfg.max_sessions,
            "busy_refusals": self.busy_refusals,
            "refused_connections": self.admission.refused_connections,
            "evicted_idle_connections": self.admission.evicted_connections,
            "opened": self.sessions_opened,
            "closed": self.sessions_closed,
        }

    # ---- HTTP ---------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.admission.request_received(connection)  # no longer idle: its place is its own
        # a full server still serves the page: it connects, hears "busy" and says so clearly
        return route_request(self.access, self._files, connection, request)

    def _new_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """websockets' connection factory: every TCP connection counts against the limits."""
        return AdmittedConnection(self.admission, *args, **kwargs)

    def _client_busy_message(self) -> str:
        return no_slot(self.cfg, server_full=False).message

    def _busy_message(self) -> str:
        return no_slot(self.cfg, server_full=True).message

    # ---- one websocket ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        watch = query_param(ws.request.path, "watch") if ws.request else None
        viewer = Viewer(ws=ws, role="spectator" if watch else "player", gate=InputGate(self.cfg.input))
        viewer.ended = asyncio.get_running_loop().create_future()
        self.viewers.add(viewer)
        reason = "closed"
        try:
            if self._closing:
                await refuse(ws, SHUTTING_DOWN)
                return
            if watch:
                reason = await self._run_spectator(viewer, watch)
            else:
                reason = await self._run_player(viewer)
        except BusyError:
            reason = "busy"
        except SignalingError:
            reason = "bad_request"
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
            reason = "offer_timeout"
        except ConnectionClosed:
            reason = "websocket_closed"
        except Exception:  # a real server fault: its traceback is logged, the client gets a fixed text
            log.exception("viewer failed")
            reason = "error"
            with contextlib.suppress(Exception):
                await ws.send(SERVER_ERROR.text)
        finally:
            had_world = viewer.role == "player" and viewer.play is not None
            await self._close_viewer(viewer, reason)
            if had_world:  # its world, peer and frames are freed by now: give the heap back
                await asyncio.get_running_loop().run_in_executor(None, release_free_heap)
            self.viewers.discard(viewer)

    async def _refuse(self, ws: ServerConnection, kind: str, code: str, message: str) -> None:
        await refuse(ws, Refusal(kind, code, message))

    def _config_message(self, viewer: Viewer) -> str:
        return config_message(self.cfg, viewer.role)

    async def _receive_offer(self, ws: ServerConnection) -> RTCSessionDescription:
        """The browser's offer, checked (size, media, candidates) before anything acts on it; a bad
        one is refused and logged (one line per kind and minute)."""
        try:
            sdp = await receive_offer(ws, self.cfg.offer, self.cfg.connect_timeout)
        except BadSignaling as e:
            self.bad_input.note(e.kind, e.detail)
            raise SignalingError(e.reason) from None
        return RTCSessionDescription(sdp=sdp, type="offer")

    async def _bad_request(self, ws: ServerConnection, kind: str, reason: str, detail: str = "") -> NoReturn:
        """Tell the client `reason` (a fixed text), log one line per kind, end the viewer."""
        bad = BadSignaling(kind, reason, detail)
        self.bad_input.note(kind, bad.detail)
        await refuse(ws, bad.refusal)
        raise SignalingError(reason)

    async def _run_player(self, viewer: Viewer) -> str:
        ws = viewer.ws
        client = _client_address(ws)
        slot = self.admission.try_acquire(client)  # before any work for this player
        if slot is None:
            self.busy_refusals += 1
            full = self.admission.full or client is None
            await self._refuse(ws, "busy", "busy", self._busy_message() if full else self._client_busy_message())
            raise BusyError
        try:
            await ws.send(self._config_message(viewer))
            offer = await self._receive_offer(ws)
            # only now, with the slot held and a valid offer in hand, is the world built; a first start
            # that builds graphs tells the page how long it has taken so far
            loop = asyncio.get_running_loop()
            building = loop.run_in_executor(None, self._build_session, partial(_tell_progress, ws, loop))
            try:
                play = await asyncio.shield(building)  # a cancelled wait must not orphan the session
            except BaseException:
                # the slot stays held until the world that is still loading has been closed
                building.add_done_callback(partial(_close_built_session, slot))
                slot = None
                raise
            play.slot, slot = slot, None
        finally:
            if slot is not None:
                slot.release()
        self.sessions[play.id] = play
        self.sessions_opened += 1
        play.player = viewer
        viewer.play = play
        play.fanout.start()
        try:
            await self._connect(viewer, offer)
            return await self._until_end(viewer)
        finally:
            await self._end_session(play)

    async def _run_spectator(self, viewer: Viewer, session_id: str) -> str:
        ws = viewer.ws
        play = self.sessions.get(session_id)
        if play is None or play.ending:
            await refuse(ws, no_such_session(session_id))
            return "no_such_session"
        if len(play.spectators) >= self.cfg.max_spectators:
            await refuse(ws, spectators_full(session_id))
            return "busy"
        play.spectators.add(viewer)
        viewer.play = play
        await ws.send(self._config_message(viewer))
        offer = await self._receive_offer(ws)
        if viewer.ended is not None and viewer.ended.done():  # the session ended meanwhile
            return viewer.ended.result()
        await self._connect(viewer, offer)
        return await self._until_end(viewer)

    def _build_session(self, progress: Callable[[Progress], None] | None = None) -> PlaySession:
        """Runs on a worker thread: load the world (telling `progress` of a slow graph build), start its
        session (and its recording, whose files open with the first frame sent; a recording that fails
        never fails the session)."""
        with listening(progress):
            session = self._session_factory()
        sid = secrets.token_urlsafe(6)
        recorder = None
        try:
            if self.cfg.record_dir:
                recorder = self._start_recorder(session, sid)
            session.start()
        except BaseException:
            session.close()
            if recorder is not None:
                _close_recorder(recorder)
            raise
        fanout = FrameFanout(session.frames, session.spec.fps, self.cfg.fanout)
        if recorder is not None:
            fanout.on_frame = recorder.write
        return PlaySession(id=sid, session=session, fanout=fanout, recorder=recorder)

    def _recording_failed(self, status: str, error: BaseException) -> None:
        self.recording_failures.note(status, f"{type(error).__name__}: {error}"[:300])

    def _default_session(self) -> Session:
        world = self.worlds.session_world()
        if not self._prompt_noted and (note := world.spec.prompt_ignored(self.cfg.session.prompt)):
            self._prompt_noted = True
            log.warning("serve: %s", note)  # once: every session of this server would say the same
        integrator = PoseIntegrator(self.cfg.controls, self.cfg.bindings)
        return Session(world, self.cfg.session, integrator=integrator)

    def _start_recorder(self, session: Session, sid: str) -> Any:
        """Record what the player sees (frames from the fan-out) and the session log beside it;
        attached before session.start() so the log misses no chunk."""
        from ..record.session_recording import SessionRecording

        assert self.cfg.record_dir is not None
        try:
            return SessionRecording(session, self.cfg.record_dir, f"session-{sid}", world_cfg=self.cfg.world,
                                    recorder_cfg=self.cfg.recorder, on_failure=self._recording_failed)
        except Exception as e:  # noqa: BLE001 - no recording, but the walk goes on
            self._recording_failed("not recording: the recording could not be set up", e)
            return None

    async def _connect(self, viewer: Viewer, offer: RTCSessionDescription) -> None:
        """Answer the browser's offer: a send-only video track and the input channel."""
        play = viewer.play
        assert play is not None
        pc = new_peer_connection(self.cfg.peer)
        viewer.pc = pc
        transceiver = add_video_transceiver(pc, self.cfg.peer)
        viewer.track = SessionVideoTrack(play.fanout)
        transceiver.sender.replaceTrack(viewer.track)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if viewer.channel is not None:  # one input channel per browser
                channel.close()
                return
            viewer.channel = channel
            channel.on("message", partial(self._on_message, viewer))
            viewer.tasks.append(asyncio.ensure_future(self._stats_loop(viewer)))
            # each frame's pose, for the page's timewarp
            viewer.tasks.append(asyncio.ensure_future(pose_loop(
                play.fanout, play.session, partial(self._send, viewer), lambda: viewer.gate.last_seq,
                viewer.key_log)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                viewer.end(f"connection_{pc.connectionState}")

        try:  # an offer that passed check_offer can still be one aiortc cannot use
            await pc.setRemoteDescription(offer)
            answer = await pc.createAnswer()
        except Exception as e:  # noqa: BLE001 - its text is the offer's fault, not ours
            await self._bad_request(viewer.ws, "unusable_offer", "the offer could not be applied",
                                    f"{type(e).__name__}: {e}"[:200])
        with gather_with_addresses(self.cfg.peer.candidate_addresses):
            await pc.setLocalDescription(answer)
        viewer.codec = answer_video_codec(pc.localDescription.sdp)
        await viewer.ws.send(answer_message(pc.localDescription.sdp, play.id, viewer.role, viewer.codec))

    async def _until_end(self, viewer: Viewer) -> str:
        """Wait for the first of: websocket closed, peer failed, idle, no connection in time."""
        assert viewer.ended is not None and viewer.pc is not None
        reader = asyncio.ensure_future(read_until_closed(viewer.ws))
        viewer.tasks.append(reader)
        deadline = time.monotonic() + self.cfg.connect_timeout
        while True:
            done, _ = await asyncio.wait({viewer.ended, reader}, timeout=0.5,
                                         return_when=asyncio.FIRST_COMPLETED)
            if viewer.ended.done():
                return viewer.ended.result()
            if reader in done:
                return "websocket_closed"
            now = time.monotonic()
            if viewer.pc.connectionState != "connected" and now > deadline:
                return "connect_timeout"
            if viewer.pc.connectionState == "connected":
                deadline = float("inf")
            play = viewer.play
            if viewer.role == "player" and play and now - play.last_input > self.cfg.idle_timeout:
                return "idle"

    async def _close_viewer(self, viewer: Viewer, reason: str) -> None:
        for task in viewer.tasks:
            task.cancel()
        for task in viewer.tasks:
            with contextlib.suppress(BaseException):
                await task
        viewer.tasks.clear()
        if viewer.track is not None:
            viewer.track.stop()
        if viewer.pc is not None:
            await viewer.pc.close()
        if viewer.play is not None:
            viewer.play.spectators.discard(viewer)
            if viewer.play.player is viewer:
                viewer.play.player = None
        # cut the links to the session and the peer: a viewer and its session refer to each other,
        # and a closed peer connection is a cycle of aiortc objects; left linked, a closed session
        # (its world above all) would wait for the cyclic garbage collector, which runs rarely
        viewer.play = viewer.pc = viewer.track = viewer.channel = None
        with contextlib.suppress(Exception):
            await viewer.ws.send(ended_message(reason))
            await viewer.ws.close(1000, reason[:100])

    async def _end_session(self, play: PlaySession) -> None:
        """Free a session. It stays in `sessions` (and holds its slot) until its world is closed."""
        if play.ending or play.id not in self.sessions:
            return
        play.ending = True
        for spectator in list(play.spectators):
            spectator.end("session_closed")
        await play.fanout.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, play.session.close)
            if play.recorder is not None:
                await loop.run_in_executor(None, _close_recorder, play.recorder)
        finally:
            self.sessions.pop(play.id, None)
            if play.slot is not None:
                play.slot.release()  # the world is gone: its place may be given again
        self.sessions_closed += 1

    # ---- the data channel ---------------------------------------------------------------------

    def _on_message(self, viewer: Viewer, raw: object) -> None:
        """Every data-channel message comes here; nothing in it may raise."""
        msg = viewer.gate.admit(raw)
        if msg is None:
            return
        try:
            if msg.kind == "ping":
                self._send(viewer, {"t": "pong", "id": msg.ping_id, "server_time": time.time()})
            elif viewer.role != "player" or viewer.play is None:
                viewer.gate.counters.ignored += 1
            else:
                self._apply(viewer, viewer.play, msg)
        except Exception:  # noqa: BLE001
            log.exception("input message could not be applied")
            viewer.gate.counters.reasons["apply_failed"] += 1

    def _apply(self, viewer: Viewer, play: PlaySession, msg: InputMessage) -> None:
        now = time.monotonic()
        play.last_input = now
        session, inputs = play.session, play.session.inputs
        if msg.kind == "key":
            (inputs.press if msg.down else inputs.release)(msg.key, now)
            viewer.key_log.append((msg.key, msg.down, now))
        elif msg.kind == "mouse":
            inputs.add_mouse(msg.dx, msg.dy, now)
        elif msg.kind == "pad":
            inputs.set_gamepad(msg.left_stick, msg.right_stick, msg.left_trigger, msg.right_trigger, now)
        elif msg.kind == "blur":
            inputs.clear(now)
        elif msg.command == "reset":
            session.reset()
            if play.recorder is not None:
                play.recorder.log_event("reset")
        elif msg.command == "rewind":
            target = session.rewind()
            if target is not None and play.recorder is not None:
                play.recorder.log_event("rewind", to_chunk=target)
        elif msg.command in ("pause", "resume"):
            session.set_paused(msg.command == "pause")

    def _send(self, viewer: Viewer, obj: dict[str, Any]) -> None:
        ch = viewer.channel
        if ch is not None and ch.readyState == "open":
            ch.send(json.dumps(obj))

    def stats_for(self, viewer: Viewer) -> dict[str, Any]:
        play = viewer.play
        out: dict[str, Any] = {"t": "stats", "role": viewer.role, "codec": viewer.codec,
                               "server_time": time.time(), "input": viewer.gate.counters.as_dict()}
        if play is None:
            return out
        s = play.session.stats()
        now = time.monotonic()
        recent = [f for f in play.fanout.history if f.released > now - 1.0]
        latest = play.fanout.latest
        pose = np.asarray(s.pop("pose"), dtype=np.float64)
        out.update({k: v for k, v in s.items() if isinstance(v, (int, float, str, bool, type(None)))})
        out.update({
            "session": play.id,
            "fps": len(recent),
            "frame": latest.index if latest is not None else -1,
            "pose": [round(float(v), 5) for v in pose.reshape(-1)],
            "position": [round(float(v), 4) for v in pose[:3, 3]],
            "spectators": len(play.spectators),
            "sent": viewer.track.sent if viewer.track is not None else 0,
            "recording": play.recorder.status if play.recorder is not None else None,
            "backends": backends_text(s.get("backends")),  # "chunk: onnx · decode: eager (onnx failed)"
        })
        return out

    async def _stats_loop(self, viewer: Viewer) -> None:
        logged = False
        while True:
            try:
                self._send(viewer, self.stats_for(viewer))
            except Exception:  # stats are best effort; say why once, keep the video going
                if not logged:
                    log.exception("sending stats failed (logged once per viewer)")
                    logged = True
            await asyncio.sleep(self.cfg.stats_interval)


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


def _close_recorder(recorder: Any) -> None:
    """Finalize a recording; a failure is logged with the file's name, never lost silently."""
    try:
        recorder.close()
    except Exception:
        log.exception("finalizing the recording %s failed", getattr(recorder, "path", "?"))


def _close_built_session(slot: SessionSlot, fut: asyncio.Future) -> None:
    """A session built for a browser that left before it was ready: free it, off the event loop
    (closing waits for the model thread's chunk to end), then give its slot back."""
    if fut.cancelled() or fut.exception() is not None:
        slot.release()
        return
    play: PlaySession = fut.result()

    def close() -> None:
        try:
            play.session.close()
            if play.recorder is not None:
                _close_recorder(play.recorder)
            release_free_heap()
        finally:
            slot.release()

    asyncio.get_running_loop().run_in_executor(None, close)


def answer_video_codec(sdp: str) -> str:
    """The codec the answer sends video with: the first payload type of its video m-line."""
    pt = None
    for line in sdp.splitlines():
        if line.startswith("m=video"):
            fields = line.split()
            pt = fields[3] if len(fields) > 3 else None
        elif pt is not None and line.startswith(f"a=rtpmap:{pt} "):
            return line.split()[1].split("/")[0]
    return ""
