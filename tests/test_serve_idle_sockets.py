"""sockets held open without a request cannot keep players out. A socket that
has not sent a complete request within `request_timeout` (5 s) is closed; over a per-address limit
a socket is answered 503 and closed at accept; over the total, a newcomer takes the place of a
socket idle for a second; one address cannot hold every session; the open-file limit is raised to
its hard limit and the server stays below it; a failing accept is logged once, without a traceback.
Loopback only: the "addresses" are 127.0.0.x."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from worldwalk.stream.loopback_netns import REPO
from worldwalk.stream.webrtc.admission import ACCEPT_BURST, Admission, AdmissionConfig
from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def idle_socket(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sent before closing the socket; None if it is still open after `timeout`."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
        return None


async def first_message(url: str, source: str) -> tuple[dict | int, object]:
    """The server's first websocket message (or the HTTP status it refused with) and the open socket."""
    try:
        ws = await connect(url, local_addr=(source, 0), open_timeout=10)
    except InvalidStatus as e:
        return e.response.status_code, None
    return json.loads(await asyncio.wait_for(ws.recv(), 10)), ws


def test_sockets_without_a_request_are_closed():
    async def go():
        async with StreamServer(serve_config()) as server:
            silent = await idle_socket(server.port)
            half = await idle_socket(server.port)
            half[1].write(b"GET / HTTP/1.1\r\nHost: 127.0")  # never finished
            t0 = time.monotonic()
            got = [await read_until_closed(r, 8.0) for r, _ in (silent, half)]
            took = time.monotonic() - t0
            for _, w in (silent, half):
                w.close()
            await asyncio.sleep(0.1)
            return got, took, server.admission.connections

    got, took, left = run(go())
    print(f"idle sockets closed after {took:.1f} s")
    assert None not in got, f"a socket without a request was still open after 8 s: {got}"
    assert left == 0


def test_over_the_per_address_limit_a_socket_is_refused_at_accept():
    async def go():
        async with StreamServer(serve_config(max_connections_per_client=4)) as server:
            held = [await idle_socket(server.port, "127.0.0.2") for _ in range(4)]
            reader, writer = await idle_socket(server.port, "127.0.0.2")  # sends nothing
            answer = await read_until_closed(reader, 2.0)
            writer.close()
            other = await first_message(f"ws://127.0.0.1:{server.port}/ws", "127.0.0.3")
            await other[1].close()
            for _, w in held:
                w.close()
            return answer, other[0]

    answer, other = run(go())
    assert answer is not None and answer.startswith(b"HTTP/1.1 503"), answer
    assert isinstance(other, dict) and other["type"] == "config"


def test_players_get_in_while_idle_sockets_hold_every_place():
    """64 idle sockets from 4 addresses (the default limits: 64 in all, 16 per address) made every
    player get 503 for as long as they were held."""

    async def go():
        async with StreamServer(serve_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            held = [await idle_socket(server.port, f"127.0.0.{2 + i % 4}") for i in range(64)]
            assert server.admission.connections == 64
            await asyncio.sleep(1.2)  # idle for a second now
            players = [await first_message(url, f"127.0.1.{i}") for i in range(1, 5)]  # max_sessions: 4
            replies = [p for p, _ in players]
            for _, ws in players:
                if ws is not None:
                    await ws.close()
            for _, w in held:
                w.close()
            return replies, server.admission.evicted_connections

    replies, evicted = run(go())
    assert all(isinstance(r, dict) and r["type"] == "config" for r in replies), replies
    assert evicted == 4


def test_one_address_cannot_hold_every_session():
    async def go():
        async with StreamServer(serve_config(max_sessions=3)) as server:  # 2 per address by default
            url = f"ws://127.0.0.1:{server.port}/ws"
            mine = [await first_message(url, "127.0.0.2") for _ in range(3)]
            other = await first_message(url, "127.0.0.3")
            for _, ws in [*mine, other]:
                if ws is not None:
                    await ws.close()
            return [m for m, _ in mine], other[0]

    mine, other = run(go())
    assert [m["type"] for m in mine] == ["config", "config", "busy"], mine
    assert "one address" in mine[2]["message"]
    assert other["type"] == "config"


def test_admission_evicts_only_sockets_idle_long_enough():
    adm = Admission(AdmissionConfig(max_connections=2, evict_idle_after=60.0))
    evicted: list[str] = []
    assert adm.open_connection("a", "10.0.0.1", evict=evicted.append) is None
    assert adm.open_connection("b", "10.0.0.2", evict=evicted.append) is None
    assert adm.open_connection("c", "10.0.0.3", evict=evicted.append) is not None  # both idle < 60 s
    adm.cfg.evict_idle_after = 0.0
    adm.request_received("a")  # a request arrived: "a" keeps its place
    assert adm.open_connection("c", "10.0.0.3", evict=evicted.append) is None
    assert evicted == ["b"] and adm.connections == 2
    assert adm.open_connection("d", "10.0.0.4") is not None  # no evict given: refused


def _start_harness(*args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fd_limit_harness", *args], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(proc.stderr.read()[-2000:])
    return proc, json.loads(line)


def _stop_harness(proc: subprocess.Popen) -> str:
    try:
        _, err = proc.communicate("", timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def listen_backlog(port: int) -> int:
    """The listen backlog of the socket listening on `port` (`ss` shows it as a listener's Send-Q)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


def test_fd_limit_raised_and_connections_kept_below_it():
    proc, info = _start_harness("128", "256")
    try:
        backlog = listen_backlog(info["port"])
        async def go():
            held, first = [], asyncio.get_running_loop().time()
            for i in range(300):  # more than the server's files allow
                reader, writer = await idle_socket(info["port"], f"127.0.2.{1 + i % 200}")
                held.append((reader, writer))
            # answered 503 and closed at accept (or, idle, closed for a newcomer): waited for together, so a busy
            # machine's late refusals count too, until half a second before the first could meet the harness's
            # request timeout (counted from accept, so no socket it closes is counted)
            until = first + serve_config().request_timeout - 0.5
            wait = max(0.1, until - asyncio.get_running_loop().time())
            loop = asyncio.get_running_loop()

            async def closed_at(reader):  # (what the server sent, when the close was seen) or None
                got = await read_until_closed(reader, wait)
                return None if got is None else (got, loop.time())

            closed = await asyncio.gather(*(closed_at(reader) for reader, _ in held))
            refused = sum(c is not None for c in closed)
            # past the limit every accept closes a socket (refused, or idle and evicted), so the sockets still
            # open were all accepted by the last close: a second after it, all have been idle over a second (on
            # a starved machine the server may still have been working through its backlog at the wait's end)
            # and a player gets in, taking an idle one's place (or one the request timeout freed)
            last = max((c[1] for c in closed if c is not None), default=loop.time())
            await asyncio.sleep(max(0.0, last + 1.2 - loop.time()))
            player = await first_message(f"ws://127.0.0.1:{info['port']}/ws", "127.0.3.1")
            if player[1] is not None:  # refused: the status is what the assertion below reports
                await player[1].close()
            for _, w in held:
                w.close()
            return refused, player[0]

        refused, player = run(go())
    finally:
        err = _stop_harness(proc)
    assert info["soft"] == 256, f"the open-file limit stayed at {info['soft']} (hard limit 256)"
    # the sockets one wake-up accepts (the listen backlog) fit in the files left beside the connections
    assert backlog == ACCEPT_BURST and info["max_connections"] + ACCEPT_BURST < 256, (backlog, info)
    assert refused >= 300 - info["max_connections"], (refused, info)
    assert isinstance(player, dict) and player["type"] == "config", player
    assert "Traceback" not in err and "accept" not in err, err[-2000:]


def test_accept_failures_are_logged_once_without_a_traceback():
    proc, info = _start_harness("256", "256", "--fill")
    try:
        async def go():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            await asyncio.sleep(0.5)  # every descriptor is taken now
            sockets = [await idle_socket(info["port"]) for _ in range(20)]  # queued: accept fails
            await asyncio.sleep(3.5)
            for _, w in sockets:
                w.close()

        run(go())
        filled = json.loads(proc.stdout.readline())
    finally:
        err = _stop_harness(proc)
    lines = [ln for ln in err.splitlines() if "accept" in ln]
    assert filled["filled"] > 0
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and "EMFILE" in lines[0], lines
