"""`worldwalk serve` without a browser: input validation, the barcode, ICE and codec setup, and the
HTTP/websocket gate (token, origin, host, busy) against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from worldwalk.runtime.session import Session
from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.webrtc import peer
from worldwalk.stream.webrtc.input_channel import (
    InputChannelConfig,
    InputGate,
    InvalidMessage,
    RateLimiter,
    parse_message,
)
from worldwalk.stream.webrtc.peer import answer_video_codec
from worldwalk.stream.webrtc.server import ServeConfig, StreamServer
from worldwalk.stream.webrtc.sessions import PlayerStart
from worldwalk.stream.webrtc.video_track import read_barcode, stamp_barcode

from .builders import TINY_REFERENCE, matrix_game_config, serve_config
from .timed_world import TimedWorld
from .webrtc_client import Player

REASONS = {"binary", "oversized", "not_json", "not_object", "unknown_kind", "missing_field", "unknown_field",
           "unknown_key", "bad_type", "out_of_range", "unknown_command"}

# ---- input messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, kind",
    [
        ('{"t": "key", "key": "w", "down": true}', "key"),
        ('{"t": "key", "key": "shift", "down": false, "ts": 1700000000000.5}', "key"),
        ('{"t": "mouse", "dx": -3.5, "dy": 2}', "mouse"),
        ('{"t": "pad", "ls": [0.5, -1], "rs": [0, 0], "lt": 0, "rt": 1}', "pad"),
        ('{"t": "blur"}', "blur"),
        ('{"t": "cmd", "cmd": "rewind"}', "cmd"),
        ('{"t": "ping", "id": 3}', "ping"),
    ],
)
def test_valid_messages_parse(raw, kind):
    assert parse_message(raw).kind == kind


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"t": "blur"}', "binary"),
        ("x" * 5000, "oversized"),
        ('{"t": "key", "key": "' + "\u00e9" * 2100 + '", "down": true}', "oversized"),  # > 4 KiB as UTF-8
        ("{", "not_json"),
        ("[" * 2000 + "]" * 2000, "not_json"),  # too deep for the parser
        ("[1]", "not_object"),
        ('{"t": "fly"}', "unknown_kind"),
        ('{"t": "key", "key": "w"}', "missing_field"),
        ('{"t": "key", "key": "w", "down": true, "x": 1}', "unknown_field"),
        ('{"t": "key", "key": "KeyW", "down": true}', "unknown_key"),
        ('{"t": "key", "key": "w", "down": 1}', "bad_type"),
        ('{"t": "mouse", "dx": NaN, "dy": 0}', "out_of_range"),
        ('{"t": "mouse", "dx": 1e400, "dy": 0}', "out_of_range"),
        ('{"t": "mouse", "dx": true, "dy": 0}', "bad_type"),
        ('{"t": "pad", "ls": [1.5, 0], "rs": [0, 0], "lt": 0, "rt": 0}', "out_of_range"),
        ('{"t": "pad", "ls": [0], "rs": [0, 0], "lt": 0, "rt": 0}', "bad_type"),
        ('{"t": "cmd", "cmd": "shutdown"}', "unknown_command"),
        ('{"t": "ping", "id": -1}', "bad_type"),
    ],
    ids=lambda v: v if v in REASONS else "",
)
def test_invalid_messages_name_the_reason(raw, reason):
    with pytest.raises(InvalidMessage) as e:
        parse_message(raw)
    assert e.value.reason == reason


def test_gate_never_raises_and_counts_every_drop():
    rng = random.Random(1)
    gate = InputGate(InputChannelConfig(rate=1e9, burst=1e9))
    junk = ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 200))) for _ in range(1500)]
    junk += [None, 3, 4.5, object(), b"\xff" * 10, "{" * 10000]
    for raw in junk:
        assert gate.admit(raw) is None
    assert gate.counters.dropped == len(junk) and gate.counters.accepted == 0
    assert gate.admit('{"t": "blur"}') is not None


def test_rate_limiter_bounds_bursts_and_refills():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=5, clock=lambda: now[0])
    assert sum(limiter.allow() for _ in range(20)) == 5
    now[0] += 0.5  # 5 more tokens
    assert sum(limiter.allow() for _ in range(20)) == 5


# ---- barcode, codecs, ICE ---------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 59, 4095, 123456, 2**24 - 1])
def test_barcode_round_trip(index):
    image = np.random.default_rng(index).integers(0, 256, (144, 256, 3), dtype=np.uint8)
    stamped = stamp_barcode(image, index)
    assert read_barcode(stamped) == index
    assert np.array_equal(stamped[20:], image[20:])  # only the top band changes
    stamped[:8, 8 * 10 : 8 * 11] ^= 255  # flip a bit: the check catches it
    assert read_barcode(stamped) is None


def test_h264_preferred_then_vp8():
    mimes = [c.mimeType for c in peer.preferred_codecs(("video/H264", "video/VP8"))]
    assert mimes[0] == "video/H264" and "video/VP8" in mimes
    assert mimes.index("video/VP8") > max(i for i, m in enumerate(mimes) if m == "video/H264")


def test_answer_codec_is_the_first_video_payload():
    sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
    assert answer_video_codec(sdp) == "H264"


def test_candidate_addresses_apply_only_inside_the_block():
    import aioice.ice

    peer.install_candidate_hook()
    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert "127.0.0.1" not in outside  # aioice's own rule
    with peer.gather_with_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == outside


def test_bad_candidate_address_is_named():
    with pytest.raises(ValueError, match="not an IP address"):
        peer.PeerConfig(candidate_addresses=["localhost"])


def test_non_loopback_bind_requires_a_token():
    assert ServeConfig(host="127.0.0.1").require_token is False
    public = ServeConfig(host="0.0.0.0")
    assert public.require_token is True and len(public.token) >= 16
    assert ServeConfig(host="127.0.0.1", token="t").require_token is True


# ---- the HTTP and websocket gate, on 127.0.0.1 ------------------------------------------------


def timed_session(start: PlayerStart | None = None) -> Session:
    return Session(TimedWorld(chunk_seconds=0.01, width=64, height=32, fps=30.0))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


async def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    def fetch():
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    return await asyncio.to_thread(fetch)


def test_page_files_and_host_check():
    async def go():
        async with StreamServer(ServeConfig(port=0), session_factory=timed_session) as server:
            base = f"http://127.0.0.1:{server.port}"
            status, headers, body = await _get(base + "/")
            assert status == 200 and b"client.js" in body and "text/html" in headers["Content-Type"]
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            status, headers, body = await _get(base + "/client.js")
            assert status == 200 and b"RTCPeerConnection" in body
            assert (await _get(base + "/nothing"))[0] == 404
            # a page reached through another name (DNS rebinding) is refused on a loopback bind
            assert (await _get(base + "/", {"Host": f"attacker.example:{server.port}"}))[0] == 403

    run(go())


async def _first_message(url: str, **kw) -> dict:
    async with connect(url, **kw) as ws:
        return json.loads(await ws.recv())


def test_origin_is_checked():
    async def go():
        async with StreamServer(ServeConfig(port=0), session_factory=timed_session) as server:
            ws = f"ws://127.0.0.1:{server.port}/ws"
            with pytest.raises(InvalidStatus) as e:
                await _first_message(ws, origin="http://evil.example")
            assert e.value.response.status_code == 403
            msg = await _first_message(ws, origin=f"http://127.0.0.1:{server.port}")
            assert msg["type"] == "config" and msg["role"] == "player"

    run(go())


def test_token_checked_at_signaling():
    async def go():
        cfg = ServeConfig(port=0, require_token=True, token="right-token")
        async with StreamServer(cfg, session_factory=timed_session) as server:
            ws = f"ws://127.0.0.1:{server.port}/ws"
            for query, status in (("", 401), ("?token=wrong", 403), ("?token=", 401)):
                with pytest.raises(InvalidStatus) as e:
                    await _first_message(ws + query)
                assert e.value.response.status_code == status
            assert (await _first_message(ws + "?token=right-token"))["type"] == "config"
            assert server.url.endswith("?token=right-token")
            assert server.players.opened == 0  # the refused ones never got near a session

    run(go())


def test_busy_beyond_max_sessions_and_bad_offer():
    async def go():
        cfg = ServeConfig(port=0, max_sessions=1)
        async with StreamServer(cfg, session_factory=timed_session) as server:
            ws = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(ws) as first:
                assert json.loads(await first.recv())["type"] == "config"  # holds the only slot
                busy = await _first_message(ws)
                assert busy["type"] == "busy" and "busy" in busy["message"]
                await first.send(json.dumps({"type": "nonsense"}))
                err = json.loads(await first.recv())
                assert err["type"] == "error" and err["code"] == "bad_request"
            for _ in range(100):  # the slot comes back
                if not server.sessions and not server.admission.slots_held:
                    break
                await asyncio.sleep(0.05)
            assert (await _first_message(ws))["type"] == "config"
            watch = await _first_message(ws + "?watch=nope")
            assert watch["type"] == "error" and watch["code"] == "no_such_session"

    run(go())


# ---- a Python WebRTC client (aiortc) on 127.0.0.1: codecs, input, idle timeout, recording ---------


async def _aiortc_client(url: str, codec: str | None = None, after_connect=None) -> dict:
    """Connect like the page does (tests/webrtc_client.py), take 10 frames, then `after_connect(player,
    out)`; return what came back."""
    async with Player(url, codec) as player:
        answer = await player.open(timeout=10)
        out: dict = {"config": player.config, "answer": {k: answer[k] for k in ("session", "codec", "role")},
                     "stats": player.messages, "frames": []}
        for _ in range(10):
            frame = await player.frame()
            out["frames"].append((frame.width, frame.height))
        if after_connect is not None:
            await after_connect(player, out)
    return out


@pytest.mark.parametrize("codec, expect", [(None, "H264"), ("video/VP8", "VP8")])
def test_python_client_streams_steers_and_records(tmp_path, codec, expect):
    import av

    async def steer(player, out):
        await player.key("w", True)
        await player.send("not json")
        await asyncio.sleep(0.6)
        await player.key("w", False)
        await asyncio.sleep(0.3)

    async def go():
        cfg = serve_config(WorldConfig(), record_dir=str(tmp_path))  # the sessions are timed_session's
        async with StreamServer(cfg, session_factory=timed_session) as server:
            out = await _aiortc_client(f"ws://127.0.0.1:{server.port}/ws", codec, steer)
            for _ in range(100):
                if not server.sessions and not server.guests:
                    break
                await asyncio.sleep(0.05)
            assert not server.sessions and not server.guests  # the client left: all freed
        return out

    out = run(go())
    assert out["answer"]["codec"] == expect and out["answer"]["role"] == "player"
    assert out["frames"] == [(64, 32)] * 10
    stats = [s for s in out["stats"] if s.get("t") == "stats"]
    assert stats and stats[-1]["position"][2] > 0.2  # W walked forward
    assert stats[-1]["input"]["dropped"] == 1 and stats[-1]["input"]["reasons"] == {"not_json": 1}
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].with_suffix(".jsonl").exists()
    with av.open(str(videos[0])) as f:
        assert sum(1 for _ in f.decode(video=0)) > 5


def test_idle_session_is_freed():
    async def wait_ended(player, out):
        while (msg := await player.next_signal(10))["type"] != "ended":
            pass
        out["ended"] = msg["reason"]

    async def go():
        cfg = serve_config(WorldConfig(), idle_timeout=1.0)  # the sessions are timed_session's
        async with StreamServer(cfg, session_factory=timed_session) as server:
            out = await _aiortc_client(f"ws://127.0.0.1:{server.port}/ws", None, wait_ended)
            assert not server.sessions
        return out

    assert run(go())["ended"] == "idle"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_bundled_model_streams_and_walks():
    """The default world of a fresh install, built by the server itself, to a WebRTC client."""

    async def hold_w(player, out):
        await player.key("w", True)
        await asyncio.sleep(2.0)
        await player.key("w", False)
        await asyncio.sleep(0.5)

    async def go():
        cfg = serve_config(WorldConfig(name="bundled", accel="auto"))
        async with StreamServer(cfg) as server:
            return await _aiortc_client(f"ws://127.0.0.1:{server.port}/ws", None, hold_w)

    out = run(go())
    assert out["frames"] == [(160, 96)] * 10
    stats = [s for s in out["stats"] if s.get("t") == "stats"]
    assert stats and stats[-1]["position"][2] > 0.3, stats[-1]  # W walked forward in the model's world


def test_message_numbers_are_checked_and_the_gate_remembers_the_newest():
    gate = InputGate()
    assert gate.admit('{"t": "mouse", "dx": 1, "dy": 0, "n": 7}').seq == 7
    assert gate.admit('{"t": "key", "key": "w", "down": true, "n": 9}').seq == 9
    assert gate.admit('{"t": "mouse", "dx": 1, "dy": 0}').seq == -1  # n is optional
    assert gate.last_seq == 9
    assert gate.admit('{"t": "mouse", "dx": 1, "dy": 0, "n": -1}') is None
    assert gate.admit('{"t": "mouse", "dx": 1, "dy": 0, "n": true}') is None
    assert gate.counters.reasons["bad_type"] == 2


def test_a_pose_message_carries_the_frame_and_the_held_rotation():
    from worldwalk.stream.webrtc.pose_channel import pose_message

    with Session(TimedWorld(chunk_seconds=0.0, fps=16.0)).start() as session:
        frame = session.frames.get(timeout=10)
        assert frame is not None
        session.inputs.add_mouse(100.0, 0.0)
        session.inputs.press("e")
        msg = pose_message(frame, session, input_seq=12)
    assert msg["t"] == "pose" and msg["i"] == frame.index and msg["n"] == 12
    assert msg["f"] == [0.0, 0.0, 0.0]
    assert msg["h"][0] == pytest.approx(math.radians(15.0), abs=0.01)  # 100 px at 0.15 deg/px (and a moment of E)
    assert msg["w"] == [pytest.approx(math.radians(90.0)), 0.0]
    assert msg["k"][2:] == [0.5, 0.5] and msg["m"][1] < 0
    json.dumps(msg)


@pytest.mark.timeout(180)
def test_matrix_game_is_served_to_a_player_and_a_spectator_recorded_and_rewound(tmp_path):
    """The tiny random Matrix-Game world behind `serve`: a player steers it with keys (turned into its
    per-frame actions), a spectator watches, a rewind is asked for, and the recording's log carries
    the actions and replays to the video."""
    from worldwalk.stream.record.session_log import read_log

    async def play(player, out):
        url = f"{out['url']}?watch={out['answer']['session']}"
        await player.key("w", True)
        out["spectator"] = await _aiortc_client(url)
        await player.command("rewind")
        await asyncio.sleep(1.0)
        await player.key("w", False)
        await asyncio.sleep(0.5)

    async def go():
        world = matrix_game_config(seed=3)
        cfg = serve_config(world, record_dir=str(tmp_path))
        async with StreamServer(cfg) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"

            async def remember_url(player, out):
                out["url"] = url
                await play(player, out)

            out = await _aiortc_client(url, None, remember_url)
            for _ in range(200):
                if not server.sessions and not server.guests:
                    break
                await asyncio.sleep(0.05)
        return out

    out = asyncio.run(asyncio.wait_for(go(), 150))
    assert out["answer"]["role"] == "player" and out["spectator"]["answer"]["role"] == "spectator"
    assert len(out["spectator"]["frames"]) == 10
    video = next(tmp_path.glob("*.mp4"))
    log = read_log(video.with_suffix(".jsonl"))
    assert any(np.asarray(c["actions"]["keyboard"]).any() for c in log.chunks)  # W reached the model
    assert [e["kind"] for e in log.records if e["type"] == "event"].count("rewind") == 1
    # the log replays to the video: as many frames, each within what H.264 keeps of a random model's
    # noise-like frames at this size (bit for bit against the raw frames: test_matrix_game_session.py)
    import av

    from worldwalk.stream.record.replay import plan_from_log, render_frames

    with av.open(str(video)) as f:
        shown = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]).astype(np.int16)
    replay = render_frames(plan_from_log(video.with_suffix(".jsonl")))
    assert replay.shape == shown.shape and len(shown) > 10
    assert np.abs(shown - replay).mean(axis=(1, 2, 3)).max() < 25.0


def test_a_prompt_the_world_does_not_read_is_said_once(caplog):
    from worldwalk.runtime.session import SessionConfig


    server = StreamServer(ServeConfig(port=0, session=SessionConfig(prompt="a castle"), world=TINY_REFERENCE))
    with caplog.at_level("WARNING", logger="worldwalk.stream.webrtc.sessions"):
        for _ in range(2):
            session = server.players.default_session(PlayerStart())
            session.close()
            session.world.close()
    notes = [r.getMessage() for r in caplog.records if "--prompt is ignored" in r.getMessage()]
    assert notes == ["serve: --prompt is ignored: the reference world takes no text prompt"]
