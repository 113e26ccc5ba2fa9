"""error text and logs. Bad signaling input gets a short code and a fixed
message (no exception text), the log gets at most one line per kind of bad input (and no
traceback); a real server fault gets a fixed `server_error` message, and its traceback is logged."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config
from .webrtc_client import offer_sdp

pytestmark = pytest.mark.gl  # the servers here build reference worlds (EGL)


async def _reply_to(url: str, message: str) -> dict:
    async with connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "config"
        await ws.send(message)
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


def _unusable(sdp: str) -> str:
    """An offer that passes the size/media/candidate checks but that aiortc cannot apply."""
    return sdp.replace("a=setup:actpass", "a=setup:zzz")


def test_bad_input_gets_fixed_messages_and_one_log_line_per_kind(caplog):
    async def go():
        async with StreamServer(serve_config(max_sessions=4)) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            offer = await offer_sdp()
            deep = "[" * 100_000 + "]" * 100_000
            replies = {"deep": [], "unusable": [], "not_offer": []}
            for _ in range(5):
                replies["deep"].append(await _reply_to(url, deep))
                replies["not_offer"].append(await _reply_to(url, json.dumps({"type": "offer", "sdp": 5})))
                replies["unusable"].append(
                    await _reply_to(url, json.dumps({"type": "offer", "sdp": _unusable(offer)})))
                for _ in range(100):  # the unusable offer's session is freed
                    if not server.sessions and len(server.guests) == 0:
                        break
                    await asyncio.sleep(0.02)
            return replies

    with caplog.at_level(logging.INFO, logger="worldwalk"):
        replies = asyncio.run(asyncio.wait_for(go(), 60))
    for kind, got in replies.items():
        assert all(r["type"] == "error" and r["code"] == "bad_request" for r in got), (kind, got)
        assert len({r["message"] for r in got}) == 1, f"{kind}: the message varies: {got}"
        text = got[0]["message"].lower()
        for leak in ("recursion", "zzz", "traceback", "errno", "none"):
            assert leak not in text, f"{kind}: {got[0]['message']!r} leaks exception text"
    server_records = [r for r in caplog.records if r.name.startswith("worldwalk.stream")]
    assert not [r for r in server_records if r.exc_info], "a traceback was logged for bad input"
    assert len(server_records) <= 3, [r.getMessage() for r in server_records]  # one per kind


def test_a_server_fault_hides_its_text_but_logs_its_traceback(caplog):
    def broken_session(start: object = None):
        raise RuntimeError("secret detail: /srv/private/path")

    async def go():
        async with StreamServer(serve_config(), session_factory=broken_session) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            return await _reply_to(url, json.dumps({"type": "offer", "sdp": await offer_sdp()}))

    with caplog.at_level(logging.INFO, logger="worldwalk"):
        reply = asyncio.run(asyncio.wait_for(go(), 30))
    assert reply["type"] == "error" and reply["code"] == "server_error", reply
    assert "secret" not in reply["message"] and "/srv" not in reply["message"]
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)
