"""Serve's HTTP proxy closes a websocket at its first message over what signaling needs
(stream/cluster/proxy_limits.py, an ASGI middleware; no Ray here: the middleware around a fake
app, as the proxy calls it). tests/test_cluster.py's `limits` checks it in a real proxy."""

from __future__ import annotations

import asyncio

from worldwalk.stream.cluster.proxy_limits import MAX_SIGNALING_BYTES, SignalingMessageBound


def run(scope_type: str, incoming: list[dict], app_sends: int = 0) -> tuple[list[dict], list[dict], int]:
    """(what the app received, what went to the client, how many client messages were read)."""
    got: list[dict] = []
    sent: list[dict] = []
    queue = list(incoming)
    read = 0

    async def receive() -> dict:
        nonlocal read
        read += 1
        return queue.pop(0) if queue else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:  # the proxy: reads until the browser is gone
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            got.append(message)
            if message["type"] in ("websocket.disconnect", "http.disconnect", "http.request"):
                break
        for _ in range(app_sends):
            await send({"type": "websocket.send", "text": "late"})

    asyncio.run(SignalingMessageBound(app)({"type": scope_type}, receive, send))
    return got, sent, read


def test_small_messages_pass_and_the_first_big_one_closes_the_connection():
    small = {"type": "websocket.receive", "text": "x" * MAX_SIGNALING_BYTES}
    big = {"type": "websocket.receive", "text": "y" * (MAX_SIGNALING_BYTES + 1)}
    got, sent, read = run("websocket", [small, big, small, small], app_sends=2)
    assert got == [small, {"type": "websocket.disconnect", "code": 1009}]  # the big one never reaches the app
    assert sent == [{"type": "websocket.accept"},
                    {"type": "websocket.close", "code": 1009, "reason": "message too big"}]  # nothing after
    assert read == 2  # nothing more is read from the connection


def test_binary_messages_are_bounded_too_and_http_passes():
    big = {"type": "websocket.receive", "bytes": b"\0" * (MAX_SIGNALING_BYTES + 1)}
    got, sent, _ = run("websocket", [big])
    assert got == [{"type": "websocket.disconnect", "code": 1009}] and sent[-1]["code"] == 1009
    body = {"type": "http.request", "body": b"z" * (2 * MAX_SIGNALING_BYTES)}
    got, sent, _ = run("http", [body])
    assert got == [body] and sent == []


def test_the_bound_is_serves():
    from worldwalk.stream.webrtc.server import MAX_SIGNALING_BYTES as serve_bound

    assert MAX_SIGNALING_BYTES == serve_bound
