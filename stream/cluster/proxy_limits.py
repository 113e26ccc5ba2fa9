"""`SignalingMessageBound`: an ASGI middleware for Ray Serve's HTTP proxy that closes a
websocket at its first message over what signaling needs.

Serve's proxy reads every websocket message whole (uvicorn's limit: 16 MiB) and queues it, with no
bound on the queue, until the replica asks for it; Serve has no setting for a smaller message size.
This middleware runs in the proxy through
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=worldwalk.stream.cluster.proxy_limits:middlewares
(app.start sets it for the Serve controller and a local Ray; for `serve deploy`, set it on the
head's `ray start`): the first message over MAX_SIGNALING_BYTES is dropped, the browser's connection
is closed (1009, "message too big"), the proxy hears a disconnect (so it reads nothing more from
that connection) and the gateway hears that the browser left. The proxy still reads that one message
whole, up to 16 MiB, before this sees it. Cheap to import: the proxy imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from worldwalk.stream.webrtc.offer import MAX_SIGNALING_BYTES

TOO_BIG = 1009  # RFC 6455: message too big

Message = MutableMapping[str, Any]


def message_size(message: Message) -> int:
    text, data = message.get("text"), message.get("bytes")
    return len(text) if text is not None else len(data or b"")


class SignalingMessageBound:
    """Pure ASGI middleware; HTTP requests pass untouched."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = MAX_SIGNALING_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.closed_connections = 0

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        closed = False

        async def bounded_receive() -> Message:
            nonlocal closed
            if closed:
                return {"type": "websocket.disconnect", "code": TOO_BIG}
            message = await receive()
            if message["type"] == "websocket.receive" and message_size(message) > self.max_bytes:
                closed = True
                self.closed_connections += 1
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": TOO_BIG, "reason": "message too big"})
                return {"type": "websocket.disconnect", "code": TOO_BIG}
            return message

        async def guarded_send(message: Message) -> None:
            if not closed:  # closed here: nothing more goes out on it
                await send(message)

        await self.app(scope, bounded_receive, guarded_send)


def middlewares() -> list[Any]:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH's callback."""
    from starlette.middleware import Middleware

    return [Middleware(SignalingMessageBound)]
