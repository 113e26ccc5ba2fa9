"""HTTP methods. Only GET and HEAD are served (405 with `Allow` otherwise),
HEAD gets the headers without a body, and a malformed request (two Host headers) gets 400 with
no traceback in the log. Raw requests over a socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import pytest

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config


async def raw_request(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send `head` (request line and headers, no body), read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


METHODS = ["POST", "PUT", "DELETE", "TRACE", "CONNECT", "PATCH", "OPTIONS", "BREW"]


def test_only_get_and_head_are_served(caplog):
    async def go():
        async with StreamServer(serve_config()) as server:
            port = server.port
            host = f"Host: 127.0.0.1:{port}\n"
            get = await raw_request(port, f"GET / HTTP/1.1\n{host}")
            head = await raw_request(port, f"HEAD / HTTP/1.1\n{host}")
            others = {m: await raw_request(port, f"{m} / HTTP/1.1\n{host}") for m in METHODS}
            ws_post = await raw_request(port, f"POST /ws HTTP/1.1\n{host}")
            two_hosts = await raw_request(port, f"GET / HTTP/1.1\n{host}Host: example.org\n")
            return get, head, others, ws_post, two_hosts

    with caplog.at_level(logging.DEBUG):
        get, head, others, ws_post, two_hosts = asyncio.run(asyncio.wait_for(go(), 30))
    assert get[0] == 200 and b"client.js" in get[2]
    assert head[0] == 200 and head[2] == b"", f"HEAD got {head[0]} with a {len(head[2])}-byte body"
    assert int(head[1]["content-length"]) == len(get[2])  # HEAD says what GET would send
    for method, (status, headers, body) in others.items():
        assert status == 405, f"{method} / got {status}"
        assert headers.get("allow") == "GET, HEAD" and b"<html" not in body.lower()
    assert ws_post[0] == 405
    assert two_hosts[0] == 400, f"two Host headers got {two_hosts[0]}"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, f"{len(tracebacks)} traceback(s) logged, first: {tracebacks[0].getMessage()}"


@pytest.mark.parametrize("head", [
    "GET /ws HTTP/1.1\nHost: 127.0.0.1\nHost: 127.0.0.1\n",
    "GET /ws HTTP/1.1\nHost: 127.0.0.1\nOrigin: http://127.0.0.1\nOrigin: http://b\n",
])
def test_duplicate_headers_get_400(head, caplog):
    async def go():
        async with StreamServer(serve_config()) as server:
            return await raw_request(server.port, head)

    with caplog.at_level(logging.DEBUG):
        status, _, _ = asyncio.run(asyncio.wait_for(go(), 30))
    assert status == 400
    assert not [r for r in caplog.records if r.exc_info]
