"""One page protocol: `serve` and the cluster's gateway say the same config and refusals and send
the page with the same security headers, because both take them from `stream/webrtc/signaling.py`.
The gateway runs here in-process on a real starlette websocket (no Ray cluster); serve is a real
server on loopback that builds no world (every exchange here ends before one would be built)."""

from __future__ import annotations

import ast
import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config

STREAM = Path(__file__).resolve().parents[1] / "stream"
DEEP_JSON = "[" * 100_000  # JSON nested too deep
FLOOD_OFFER = json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
                          "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" + "".join(
                              f"a=candidate:{i} 1 udp 1 10.0.0.{i} 9 typ host\r\n" for i in range(100))})
NOT_AN_OFFER = json.dumps({"type": "answer", "sdp": "v=0"})
EXCHANGES = {"deep": DEEP_JSON, "flood": FLOOD_OFFER, "not_offer": NOT_AN_OFFER, "silent": None}


# ---- the source: messages and headers are made in one module -------------------------------------

def _message_lines(tree: ast.AST, dumps: bool) -> list[int]:
    """Lines of dict literals with a "type" key (a signaling message), and of json.dumps calls
    when `dumps`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "type" for k in node.keys):
            lines.append(node.lineno)
        if dumps and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dumps":
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_gateway_and_the_server_make_no_signaling_messages_of_their_own():
    # serve's data channel (stats, pong, poses: {"t": ...}) is not signaling; the gateway only relays
    served = [p.relative_to(STREAM).as_posix() for p in sorted((STREAM / "webrtc").glob("*.py"))]
    assert "webrtc/server.py" in served
    for name in [n for n in served if n != "webrtc/signaling.py"] + ["cluster/gateway.py"]:
        lines = _message_lines(ast.parse((STREAM / name).read_text()), dumps=name == "cluster/gateway.py")
        assert not lines, f"{name} makes signaling messages itself, at lines {lines}"


def test_security_headers_are_written_in_one_function():
    found = []
    for path in sorted(STREAM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for c in ast.walk(node):
                    if isinstance(c, ast.Constant) and c.value in ("Content-Security-Policy", "X-Content-Type-Options"):
                        found.append((path.relative_to(STREAM).as_posix(), node.name))
    assert sorted(set(found)) == [("webrtc/signaling.py", "security_headers")], found


# ---- the wire: the same answers from both --------------------------------------------------------

def _gateway(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cluster's Gateway as its replica builds it, minus Ray (no node address, no store)."""
    pytest.importorskip("ray.serve")
    from worldwalk.stream.cluster import gateway as gw
    from worldwalk.stream.cluster.config import ClusterConfig

    user_class = gw.Gateway.__mro__[1]  # serve.ingress wraps (a copy of) the class the module defines
    names = user_class.__init__.__globals__  # the copy's module namespace
    monkeypatch.setitem(names, "bind_replica_grpc_to_node_address", lambda: None)
    monkeypatch.setitem(names, "get_store", lambda *a: None)
    obj = object.__new__(user_class)
    user_class.__init__(obj, None, ClusterConfig(serve=cfg))
    return obj


async def _gateway_exchange(gateway: Any, sent: str | None, host: str) -> list[Any]:
    """What the gateway sends a browser that opens /ws and then sends `sent` (None: nothing): texts,
    then the close."""
    from starlette.websockets import WebSocket

    incoming: list[dict] = [{"type": "websocket.connect"}]
    if sent is not None:
        incoming.append({"type": "websocket.receive", "text": sent})
    out: list[Any] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        if message["type"] == "websocket.send":
            out.append(message["text"])
        elif message["type"] == "websocket.close":
            out.append((message.get("code"), message.get("reason")))

    scope = {"type": "websocket", "path": "/ws", "query_string": b"", "scheme": "ws", "server": ("127.0.0.1", 80),
             "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 50000), "subprotocols": []}
    await asyncio.wait_for(gateway.signaling(WebSocket(scope, receive, send)), 10)
    return out


async def _serve_exchange(url: str, sent: str | None) -> list[Any]:
    out: list[Any] = []
    async with connect(url) as ws:
        out.append(await ws.recv())
        if sent is not None:
            await ws.send(sent)
        try:
            while True:
                out.append(await asyncio.wait_for(ws.recv(), 10))
        except Exception:  # noqa: BLE001 - closed: its code and reason end the list
            out.append((ws.close_code, ws.close_reason))
    return out


def _fetch(url: str, host: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_and_the_gateway_answer_alike(monkeypatch):
    cfg = serve_config(connect_timeout=0.5)  # a browser that sends no offer is refused after it
    gateway = _gateway(cfg, monkeypatch)

    async def go() -> dict:
        got: dict[str, Any] = {}
        async with StreamServer(cfg) as server:
            host = f"127.0.0.1:{server.port}"
            for name, text in EXCHANGES.items():
                got[name] = (await _serve_exchange(f"ws://{host}/ws", text),
                             await _gateway_exchange(gateway, text, host))
            got["page"] = await asyncio.to_thread(_fetch, f"http://{host}/", host)
            got["host"] = host
        return got

    got = asyncio.run(asyncio.wait_for(go(), 60))
    for name in EXCHANGES:
        served, relayed = got[name]
        config, gateway_config = json.loads(served[0]), json.loads(relayed[0])
        assert gateway_config.pop("cluster") is True
        assert config == gateway_config and config["type"] == "config", (config, gateway_config)
        assert json.loads(served[1])["type"] == "error"
        assert served[1:] == relayed[1:], f"{name}: serve said {served[1:]}, the gateway {relayed[1:]}"
    # the page: same body, same headers (what the HTTP servers add themselves aside)
    status, headers, body = got["page"]
    page = asyncio.run(gateway.page("", _http_request(got["host"])))
    assert status == page.status_code == 200 and body == page.body
    ours = {k.lower(): v for k, v in headers.items() if k.lower() not in ("date", "server", "connection")}
    theirs = {k.lower(): v for k, v in page.headers.items()}
    assert ours == theirs, (ours, theirs)
    assert "default-src 'self'" in theirs["content-security-policy"]


def _http_request(host: str) -> Any:
    from starlette.requests import Request

    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "scheme": "http",
                    "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)})


def test_the_gateway_closes_at_a_message_over_the_signaling_bound(monkeypatch):
    """Where Serve's proxy does not bound messages (proxy_limits.py), the gateway's own read does."""
    from worldwalk.stream.webrtc.offer import MAX_SIGNALING_BYTES

    gateway = _gateway(serve_config(), monkeypatch)
    out = asyncio.run(_gateway_exchange(gateway, "x" * (MAX_SIGNALING_BYTES + 1), "127.0.0.1:8000"))
    assert json.loads(out[0])["type"] == "config" and out[1:] == [(1009, "message too big for signaling")], out


def test_the_page_handles_every_message_signaling_sends():
    import re

    tree = ast.parse((STREAM / "webrtc" / "signaling.py").read_text())
    sent = {v.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for k, v in zip(node.keys, node.values, strict=True)
            if isinstance(k, ast.Constant) and k.value == "type" and isinstance(v, ast.Constant)}
    sent |= {"busy", "error"}  # Refusal.kind
    handled = set(re.findall(r"msg\.type === '(\w+)'", (STREAM / "webrtc" / "web" / "client.js").read_text()))
    assert sent - {"offer"} <= handled, f"the page does not handle {sorted(sent - {'offer'} - handled)}"
    assert {"config", "answer", "ended", "moved", "queued", "progress"} <= sent
