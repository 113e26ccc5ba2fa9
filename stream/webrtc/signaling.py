"""The page protocol of `worldwalk serve` and of the cluster's gateway: one module for both.

Both servers take from here everything the page hears: its files and their headers, the gate in
front of the websocket, and the JSON messages on it. Neither builds a message of its own, so the
page (`web/client.js`) meets one protocol wherever it runs.

HTTP. One `websockets` server (serve; the gateway: FastAPI) answers plain GETs for the page (`/`,
`/client.js`, `/style.css`, `/favicon.ico`; `page_answer`, with the headers `security_headers`
makes) and decides whether a websocket upgrade on `/ws` may proceed (`check_websocket`):

- the Host header must name this server: on a loopback bind only loopback names are accepted,
  which shuts out DNS-rebinding pages that resolve their own name to 127.0.0.1;
- the Origin header, when a browser sends one, must be this server's own origin (or one listed
  in `allowed_origins`), so another site's page cannot open a session in your name;
- when a token is required (any non-loopback bind), `?token=` must match, compared in
  constant time. A refused upgrade gets 401/403 and never reaches the session code.

serve answers only GET and HEAD (anything else: 405 with `Allow`; HEAD: the headers GET would
send, no body; `route_request`); a request that repeats a header that must appear once (Host, Origin, the
websocket handshake's own) is malformed: 400, and nothing is logged beyond a debug line.

The websocket: JSON, one offer/answer per connection (aiortc does not trickle ICE, so the
browser sends its offer once gathering is complete):

    server -> {"type": "config", "role": "player"|"spectator", "iceServers": [...], ...}
                                        (the gateway's adds "cluster": true)
           or {"type": "busy", "code": "busy", "message": ...}     then the socket closes (1013)
           or {"type": "error", "code": ..., "message": ...}       then the socket closes (a refusal: 1008)
    client -> {"type": "offer", "sdp": "..."}      checked by `receive_offer` (offer.py's bounds);
                                        a bad one, or none within `connect_timeout`: an error
    server -> {"type": "queued", "ahead": n, "message": ...}      cluster: waiting for a free slot
    server -> {"type": "progress", "stage": "accel-build", "seconds": s, "done": bool, "message": ...}
                                        every second while a first start builds the world's graphs
    server -> {"type": "answer", "sdp": "...", "session": "<id>", "role": ..., "codec": "H264"|"VP8"}
                                        (the gateway adds walk, replica, node and its timings)
    server -> {"type": "moved", "walk": ..., "message": ...}      cluster: reconnect with ?resume=<walk>
    server -> {"type": "ended", "reason": "idle"|"shutdown"|"session_closed"|...}   at the end

After its offer the browser is read only for the socket closing (`read_until_closed`). The
exchanges here run on any socket with `send(text)`, `recv()` and `close(code, reason)` that
raises websockets' `ConnectionClosed` once closed: serve's connection, the session hosts'
relay, and the gateway's wrapper of its FastAPI websocket.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .offer import BadOffer, OfferLimits, check_offer
from .peer import is_loopback_host

if TYPE_CHECKING:
    from collections.abc import Mapping

    from worldwalk.runtime.progress import Progress

    from .input_channel import InputChannelConfig
    from .peer import PeerConfig
    from .video_track import FanoutConfig

WS_PATH = "/ws"
METHODS = ("GET", "HEAD")
SINGLE_HEADERS = ("Host", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version")
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("favicon.ico", "image/x-icon"),
}


class ServeSettings(Protocol):
    """What the protocol reads of a server's settings: serve's `ServeConfig` (the gateway's is its
    cluster's `serve`)."""

    host: str
    token: str | None
    require_token: bool | None
    allowed_origins: list[str]
    peer: PeerConfig
    fanout: FanoutConfig
    input: InputChannelConfig
    stats_interval: float
    idle_timeout: float
    max_sessions: int | None  # set by the time a server runs
    max_sessions_per_client: int


def load_web_files() -> dict[str, bytes]:
    """The page's files from the package data folder `stream/webrtc/web/`, read once at start."""
    web = resources.files("worldwalk.stream.webrtc") / "web"
    return {name: (web / name).read_bytes() for name, _ in set(PAGES.values())}


# ---- who may open the page and its websocket -----------------------------------------------------

@dataclass
class AccessConfig:
    token: str | None = None
    require_token: bool = False
    loopback_only: bool = True  # the bind address is loopback: accept only loopback Host names
    allowed_origins: list[str] = field(default_factory=list)  # besides the page's own origin
    allow_missing_origin: bool = True  # non-browser clients (tests, tools) send no Origin

    @classmethod
    def of(cls, cfg: ServeSettings) -> AccessConfig:
        """What a server with `cfg` lets in (its token, its bind address, the origins it trusts)."""
        return cls(token=cfg.token, require_token=bool(cfg.require_token), loopback_only=is_loopback_host(cfg.host),
                   allowed_origins=list(cfg.allowed_origins))


_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'example.org' -> 'example.org'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessDenied(Exception):
    def __init__(self, status: http.HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_host(cfg: AccessConfig, headers: Headers | Mapping[str, str]) -> None:
    host = headers.get("Host")
    if not host:
        raise AccessDenied(http.HTTPStatus.BAD_REQUEST, "the request has no Host header")
    if cfg.loopback_only and not is_loopback_host(_host_name(host)):
        raise AccessDenied(
            http.HTTPStatus.FORBIDDEN,
            f"this server listens on loopback only; open it as http://127.0.0.1 or "
            f"http://localhost, not via {host!r}",
        )


def check_origin(cfg: AccessConfig, headers: Headers | Mapping[str, str]) -> None:
    origin = headers.get("Origin")
    if origin is None:
        if cfg.allow_missing_origin:
            return
        raise AccessDenied(http.HTTPStatus.FORBIDDEN, "the websocket request has no Origin header")
    own = "http://" + headers.get("Host", "").lower(), "https://" + headers.get("Host", "").lower()
    if origin.lower() in own or origin in cfg.allowed_origins:
        return
    raise AccessDenied(
        http.HTTPStatus.FORBIDDEN,
        f"origin {origin!r} may not open sessions here; add it with --allow-origin if you trust it",
    )


def check_token(cfg: AccessConfig, path: str) -> None:
    if not cfg.require_token:
        return
    given = parse_qs(urlsplit(path).query).get("token", [""])[0]
    if not given:
        raise AccessDenied(http.HTTPStatus.UNAUTHORIZED, "a token is required: open the URL the server printed")
    if cfg.token is None or not hmac.compare_digest(given.encode(), cfg.token.encode()):
        raise AccessDenied(http.HTTPStatus.FORBIDDEN, "wrong token: open the URL the server printed")


def check_websocket(cfg: AccessConfig, headers: Headers | Mapping[str, str], path: str) -> None:
    """May this websocket upgrade (`path`: its path and query) proceed? AccessDenied if not."""
    check_host(cfg, headers)
    check_origin(cfg, headers)
    check_token(cfg, path)


def query_param(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0] if values else None


# ---- the page over HTTP --------------------------------------------------------------------------

def security_headers(host: str) -> dict[str, str]:
    """The headers every page file goes out with, from serve and from the gateway alike. `host`
    (the request's Host header) names the websocket the page may connect to."""
    host = host if _SAFE_HOST.fullmatch(host) else ""  # it goes into a header below
    return {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the page URL may carry the token
        "Content-Security-Policy": f"default-src 'self'; connect-src 'self' ws://{host} wss://{host}; "
                                   "img-src 'self' data:",
    }


def plain_text(text: str) -> str:
    """A refusal's text as the HTTP body says it: one line."""
    return text if text.endswith("\n") else text + "\n"


def page_answer(files: dict[str, bytes], path: str, host: str) -> tuple[http.HTTPStatus, dict[str, str], bytes]:
    """A GET of `path` (the Host already checked): (status, headers, body), a page file or a 404."""
    if path not in PAGES:
        body = plain_text(f"nothing at {path}").encode()
        return http.HTTPStatus.NOT_FOUND, {"Content-Type": "text/plain; charset=utf-8",
                                           "Content-Length": str(len(body))}, body
    name, content_type = PAGES[path]
    body = files[name]
    return http.HTTPStatus.OK, {"Content-Type": content_type, "Content-Length": str(len(body)),
                                **security_headers(host)}, body


def http_response(connection: ServerConnection, status: http.HTTPStatus, headers: dict[str, str],
                  body: bytes) -> Response:
    response = connection.respond(status, "")
    del response.headers["Content-Type"], response.headers["Content-Length"]
    for name, value in headers.items():
        response.headers[name] = value
    response.body = body
    return response


def text_response(connection: ServerConnection, status: http.HTTPStatus, text: str) -> Response:
    return connection.respond(status, plain_text(text))


def check_request(request: Request) -> None:
    """The method is GET or HEAD and no header that must be single is repeated."""
    if request.method not in METHODS:
        raise AccessDenied(http.HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD are served here")
    for name in SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            raise AccessDenied(http.HTTPStatus.BAD_REQUEST, f"malformed request: more than one {name} header")


def route_request(
    cfg: AccessConfig, files: dict[str, bytes], connection: ServerConnection, request: Request
) -> Response | None:
    """serve's `process_request`: a Response for page GETs and refusals, None to upgrade /ws."""
    try:
        response = _route(cfg, files, connection, request)
    except AccessDenied as e:
        response = text_response(connection, e.status, e.reason)
    except (MultipleValuesError, ValueError):  # anything malformed that slipped past check_request
        response = text_response(connection, http.HTTPStatus.BAD_REQUEST, "malformed request")
    if response is None:
        return None
    if response.status_code == http.HTTPStatus.METHOD_NOT_ALLOWED:
        response.headers["Allow"] = ", ".join(METHODS)
    if request.method == "HEAD":
        response.body = b""  # its headers (Content-Length included) are what GET would send
    return response


def _route(
    cfg: AccessConfig, files: dict[str, bytes], connection: ServerConnection, request: Request
) -> Response | None:
    path = urlsplit(request.path).path
    check_request(request)
    if path == WS_PATH and request.method != "GET":
        raise AccessDenied(http.HTTPStatus.METHOD_NOT_ALLOWED, "a websocket opens with GET")
    try:
        if path == WS_PATH:
            check_websocket(cfg, request.headers, request.path)
            return None
        check_host(cfg, request.headers)
    except AccessDenied as e:
        return text_response(connection, e.status, e.reason)
    return http_response(connection, *page_answer(files, path, request.headers.get("Host", "")))


# ---- the websocket: what the page hears ----------------------------------------------------------

SERVER_ERROR_MESSAGE = "the server could not run your session; try again later"


@dataclass(frozen=True)
class Refusal:
    """A message that ends signaling: the page shows `message`; the socket then closes with
    1013 (try again later) after a busy, 1008 (policy) after an error, its reason `code`."""

    kind: str  # "busy" | "error"
    code: str
    message: str

    @property
    def text(self) -> str:
        return json.dumps({"type": self.kind, "code": self.code, "message": self.message})

    @property
    def close_code(self) -> int:
        return 1013 if self.kind == "busy" else 1008


SHUTTING_DOWN = Refusal("error", "shutting_down", "the server is shutting down")
SERVER_ERROR = Refusal("error", "server_error", SERVER_ERROR_MESSAGE)
OFFER_TIMEOUT = Refusal("error", "offer_timeout", "no offer came in time")
WALK_RUNNING = Refusal("error", "walk_running", "this walk is running in another tab")
ALL_DRAINING = Refusal("busy", "busy", "every session host is draining; try again in a little while")


def _sessions(n: int) -> str:
    return f"{n} session{'s' if n != 1 else ''}"


def busy(max_sessions: int) -> Refusal:
    """Every session slot of the server is in use."""
    return Refusal("busy", "busy", f"worldwalk is busy: all {_sessions(max_sessions)} are in use. "
                                   "Try again in a little while.")


def client_busy(per_client: int) -> Refusal:
    """The slots one address may hold are in use."""
    return Refusal("busy", "busy", f"worldwalk allows {_sessions(per_client)} at once from one address, and yours "
                                   "are in use. Close one (another tab?) and try again.")


def no_slot(cfg: ServeSettings, server_full: bool) -> Refusal:
    """A player turned away before any work: every session slot is in use (`server_full`), or
    every one its address may hold."""
    assert cfg.max_sessions is not None  # ServeConfig sets it
    return busy(cfg.max_sessions) if server_full else client_busy(cfg.max_sessions_per_client)


def hosts_full(per_replica: int) -> Refusal:
    """Cluster: no session host had a free slot in time."""
    return Refusal("busy", "busy", f"worldwalk is busy: every session host is full ({_sessions(per_replica)} each). "
                                   "Try again in a little while.")


def no_such_session(session_id: str) -> Refusal:
    return Refusal("error", "no_such_session", f"no session {session_id[:40]!r} is running")


def spectators_full(session_id: str) -> Refusal:
    return Refusal("busy", "busy", f"session {session_id} has its maximum of spectators")


def bad_request(reason: str) -> Refusal:
    """A signaling message refused; `reason` is a fixed text (never an exception's)."""
    return Refusal("error", "bad_request", f"bad signaling message: {reason}")


def config_message(cfg: ServeSettings, role: str, cluster: bool = False) -> str:
    """The first message: what the page needs to make its offer and to pace its input and stats."""
    msg: dict[str, Any] = {
        "type": "config",
        "role": role,
        "iceServers": [s.to_browser() for s in cfg.peer.ice_servers],
        "barcode": cfg.fanout.barcode,
        "maxMessageBytes": cfg.input.max_bytes,
        "statsInterval": cfg.stats_interval,
        "idleTimeout": cfg.idle_timeout,
    }
    if cluster:
        msg["cluster"] = True
    return json.dumps(msg)


def progress_message(p: Progress) -> str:
    """What the page is told while its world is prepared: figures and a fixed text (no paths)."""
    s = round(p.seconds)
    if p.stage == "accel-build":
        text = (f"Accelerated graphs ready after {s} s; starting…" if p.done
                else f"Building the model's accelerated graphs (first start on this server): {s} s so far…")
    else:
        text = f"Preparing the world: {s} s so far…"
    return json.dumps({"type": "progress", "stage": p.stage, "seconds": round(p.seconds, 1), "done": p.done,
                       "message": text})


def answer_message(sdp: str, session: str, role: str, codec: str) -> str:
    return json.dumps({"type": "answer", "sdp": sdp, "session": session, "role": role, "codec": codec})


def ended_message(reason: str) -> str:
    return json.dumps({"type": "ended", "reason": reason})


def queued_message(ahead: int) -> str:
    """Cluster: the player waits in line for a free slot, `ahead` others before it."""
    return json.dumps({"type": "queued", "ahead": ahead, "message": f"waiting for a free GPU ({ahead} ahead)"})


def moved_message(message: str, walk: str | None = None, drain: dict | None = None) -> str:
    """Cluster: the walk goes on elsewhere; the page reconnects (with ?resume=<walk> when given)."""
    msg: dict[str, Any] = {"type": "moved"}
    if walk is not None:
        msg["walk"] = walk
    if drain is not None:
        msg["drain"] = drain
    msg["message"] = message
    return json.dumps(msg)


def offer_request(sdp: str) -> dict[str, str]:
    """Cluster: a checked offer as the gateway hands it to a session host, whose server reads it
    as the browser sent it."""
    return {"type": "offer", "sdp": sdp}


def relayed(text: str, **answer: Any) -> tuple[dict[str, Any], str | None]:
    """Cluster: a message a session host's server sent for the page, as the gateway passes it on:
    (the message, the text to send or None). The host's config is dropped (the page has had the
    gateway's); an answer gains the fields `answer` gives (walk, replica, ...)."""
    msg = json.loads(text)
    if msg.get("type") == "config":
        return msg, None
    if msg.get("type") == "answer" and answer:
        msg.update(answer)
        text = json.dumps(msg)
    return msg, text


# ---- the websocket: exchanges --------------------------------------------------------------------

class PageSocket(Protocol):
    """The socket calls used here; each raises `ConnectionClosed` once the socket is closed."""

    async def send(self, message: str) -> None: ...
    async def recv(self) -> str | bytes: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class BadSignaling(Exception):
    """The browser broke the protocol; `refusal` says so in a fixed text, `detail` is for the log."""

    def __init__(self, kind: str, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.kind = kind  # for the log, one line per kind: "not_json", "bad_offer", ...
        self.reason = reason
        self.detail = detail or reason
        self.refusal = bad_request(reason)


def parse_offer(raw: str | bytes, limits: OfferLimits) -> str:
    """The SDP of the browser's offer message, checked (offer.py) before anything acts on it."""
    try:
        msg = json.loads(raw)
        if not (isinstance(msg, dict) and msg.get("type") == "offer"):
            raise BadOffer("expected {type: offer, sdp}")
        return check_offer(msg.get("sdp"), limits)
    except BadOffer as e:
        raise BadSignaling("bad_offer", e.reason) from None
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise BadSignaling("not_json", "the message is not valid JSON") from None


async def refuse(ws: PageSocket, refusal: Refusal) -> None:
    """Say `refusal` and close the socket (a socket already closed hears nothing)."""
    try:
        await ws.send(refusal.text)
        await ws.close(refusal.close_code, refusal.code)
    except ConnectionClosed:
        pass


async def receive_offer(ws: PageSocket, limits: OfferLimits, timeout: float) -> str:
    """The offer's SDP, checked. A bad message is refused (the page is told, the socket closed)
    and raises BadSignaling; none within `timeout` seconds is refused too and raises TimeoutError."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout=timeout)
    except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
        await refuse(ws, OFFER_TIMEOUT)
        raise
    try:
        return parse_offer(raw, limits)
    except BadSignaling as e:
        await refuse(ws, e.refusal)
        raise


async def read_until_closed(ws: PageSocket) -> None:
    """After the offer: read (and ignore) what the browser sends, until the socket closes."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
