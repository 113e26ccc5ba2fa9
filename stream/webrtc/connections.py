"""What happens at accept: every TCP connection counts against the admission's limits from its first
byte (`AdmittedConnection`, websockets' connection factory), the connection limit is kept below what
the open-file limit leaves, and a failing accept (out of descriptors or memory) is said once a minute,
without a traceback, by the event loop's exception handler while the server listens."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection

from .admission import Admission, connections_within_fds, open_fds, raise_fd_limit

log = logging.getLogger(__name__)


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


class Accepting:
    """The listening side's guard: `connection` is websockets' connection factory, `limit_to_fds` runs
    before listening, `watch`/`unwatch` put the loop's exception handler in place and back."""

    def __init__(self, admission: Admission, note_failure: Callable[[str, str], None]) -> None:
        self.admission = admission
        self.note_failure = note_failure  # (kind, detail): a rate-limited log line
        self.fd_limit = 0
        self._loop_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """websockets' connection factory: every TCP connection counts against the limits."""
        return AdmittedConnection(self.admission, *args, **kwargs)

    def limit_to_fds(self) -> None:
        """Raise the open-file limit to its hard limit; keep the connection limit below what is left."""
        self.fd_limit = raise_fd_limit()
        limits = self.admission.cfg
        allowed = connections_within_fds(limits.max_connections, self.fd_limit, open_fds(), limits.max_sessions)
        if allowed < limits.max_connections:
            log.warning("the open-file limit is %d: at most %d connections at once (not %d)",
                        self.fd_limit, allowed, limits.max_connections)
            limits.max_connections = allowed
            limits.max_connections_per_client = min(limits.max_connections_per_client, allowed)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._loop_handler)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A failing accept is said once a minute, without a traceback; asyncio retries the accept by
        itself. Anything else goes to the loop's usual handler."""
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            kind = errno.errorcode.get(getattr(exc, "errno", None) or 0, "error")
            self.note_failure(kind, f"{exc}; the server waits a second and accepts again")
            return
        if self._loop_handler is not None:
            self._loop_handler(loop, context)
        else:
            loop.default_exception_handler(context)
