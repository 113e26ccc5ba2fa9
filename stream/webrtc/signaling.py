"""The HTTP side of `worldwalk serve`: the page's files and the gate in front of the websocket.

One `websockets` server does both. Its `process_request` hook answers plain GETs for the page
(`/`, `/client.js`, `/style.css`) and decides whether a websocket upgrade on `/ws` may proceed:

- the Host header must name this server: on a loopback bind only loopback names are accepted,
  which shuts out DNS-rebinding pages that resolve their own name to 127.0.0.1;
- the Origin header, when a browser sends one, must be this server's own origin (or one listed
  in `allowed_origins`), so another site's page cannot open a session in your name;
- when a token is required (any non-loopback bind), `?token=` must match, compared in
  constant time. A refused upgrade gets 401/403 and never reaches the session code.

Only GET and HEAD are served (anything else: 405 with `Allow`; HEAD: the headers GET would
send, no body); a request that repeats a header that must appear once (Host, Origin, the
websocket handshake's own) is malformed: 400, and nothing is logged beyond a debug line.

The JSON messages exchanged on the websocket afterwards are described in `server.py`.
"""

from __future__ import annotations

import hmac
import http
import re
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers, MultipleValuesError
from websockets.http11 import Request, Response

from .peer import is_loopback_host

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


def load_web_files() -> dict[str, bytes]:
    """The page's files from the package data folder `stream/webrtc/web/`, read once at start."""
    web = resources.files("worldwalk.stream.webrtc") / "web"
    return {name: (web / name).read_bytes() for name, _ in set(PAGES.values())}


@dataclass
class AccessConfig:
    token: str | None = None
    require_token: bool = False
    loopback_only: bool = True  # the bind address is loopback: accept only loopback Host names
    allowed_origins: list[str] = field(default_factory=list)  # besides the page's own origin
    allow_missing_origin: bool = True  # non-browser clients (tests, tools) send no Origin


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


def check_host(cfg: AccessConfig, headers: Headers) -> None:
    host = headers.get("Host")
    if not host:
        raise AccessDenied(http.HTTPStatus.BAD_REQUEST, "the request has no Host header")
    if cfg.loopback_only and not is_loopback_host(_host_name(host)):
        raise AccessDenied(
            http.HTTPStatus.FORBIDDEN,
            f"this server listens on loopback only; open it as http://127.0.0.1 or "
            f"http://localhost, not via {host!r}",
        )


def check_origin(cfg: AccessConfig, headers: Headers) -> None:
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


def query_param(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0] if values else None


def file_response(connection: ServerConnection, body: bytes, content_type: str, host: str) -> Response:
    host = host if _SAFE_HOST.fullmatch(host) else ""  # it goes into a header below
    response = connection.respond(http.HTTPStatus.OK, "")
    h = response.headers
    del h["Content-Type"], h["Content-Length"]
    h["Content-Type"] = content_type
    h["Content-Length"] = str(len(body))
    h["Cache-Control"] = "no-store"
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"  # the page URL may carry the token
    h["Content-Security-Policy"] = (
        f"default-src 'self'; connect-src 'self' ws://{host} wss://{host}; img-src 'self' data:"
    )
    response.body = body
    return response


def text_response(connection: ServerConnection, status: http.HTTPStatus, text: str) -> Response:
    return connection.respond(status, text if text.endswith("\n") else text + "\n")


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
    """The `process_request` logic: a Response for page GETs and refusals, None to upgrade /ws."""
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
        check_host(cfg, request.headers)
        if path == WS_PATH:
            check_origin(cfg, request.headers)
            check_token(cfg, request.path)
            return None
    except AccessDenied as e:
        return text_response(connection, e.status, e.reason)
    if path in PAGES:
        name, ctype = PAGES[path]
        return file_response(connection, files[name], ctype, request.headers.get("Host", ""))
    if path == "/favicon.ico":
        return text_response(connection, http.HTTPStatus.NOT_FOUND, "no icon")
    return text_response(connection, http.HTTPStatus.NOT_FOUND, f"nothing at {path}")
