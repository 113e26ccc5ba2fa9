"""`RelaySocket`: a session host's end of a browser websocket that the gateway holds.

The single-process server runs a guest's whole life on a `websockets` connection. In the
cluster the browser's websocket ends at the gateway, which relays the signaling messages to a
session host over one long streaming call. On the host, this object stands in for the
connection, with the calls `StreamServer.handle` makes on it: what the server sends goes into
`outgoing` (the streaming call yields it to the gateway); what the browser sent (its offer,
given when the call was made) comes out of `recv`; `peer_left()` says the browser (or the
gateway) is gone, which ends `recv` and `async for` as a closed websocket would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed


@dataclass
class RelayRequest:
    path: str  # the websocket's path and query (/ws, /ws?watch=...), as the server reads it
    headers: dict[str, str] = field(default_factory=dict)


class RelaySocket:
    def __init__(self, path: str, incoming: list[str]) -> None:
        self.request = RelayRequest(path)
        self.outgoing: asyncio.Queue[tuple[str, object]] = asyncio.Queue()  # ("send", text) | ("close", (code, reason))
        self._incoming: asyncio.Queue[str] = asyncio.Queue()
        for msg in incoming:
            self._incoming.put_nowait(msg)
        self._gone = asyncio.Event()
        self._closed = False

    async def send(self, message: str) -> None:
        if self._closed or self._gone.is_set():
            raise ConnectionClosed(None, None)
        self.outgoing.put_nowait(("send", message))

    async def recv(self) -> str:
        if not self._incoming.empty():
            return self._incoming.get_nowait()
        if self._gone.is_set() or self._closed:
            raise ConnectionClosed(None, None)
        get = asyncio.ensure_future(self._incoming.get())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not get.done():
                get.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            if get.done() and not get.cancelled():
                return get.result()
        raise ConnectionClosed(None, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closed:
            self._closed = True
            self.outgoing.put_nowait(("close", (code, reason)))

    def peer_left(self) -> None:
        self._gone.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosed:
                return
