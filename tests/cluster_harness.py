"""Cluster scenarios for `worldwalk serve --cluster`, run inside a loopback-only network namespace.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.cluster_harness walk_busy failover ...'

Starts a local Ray cluster (4 logical CPUs, no dashboard), deploys the cluster app (a gateway and
two session-host replicas, one session each, the reference world at a small size, or with
WORLDWALK_CLUSTER_WORLD=matrix-game the tiny random Matrix-Game world), and drives
Python aiortc WebRTC clients (and, for `browser`, headless Chromium) against the gateway on
127.0.0.1. One JSON object keyed by scenario goes to stdout on the last line (with the Ray session
folder, so the test can check that no Ray process outlives the run); a scenario that raises
reports {"error": traceback} and the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig
from worldwalk.stream.cluster.config import ClusterConfig
from worldwalk.stream.webrtc.server import ServeConfig, StreamServer

from . import builders
from .builders import reference_config, wait_for
from .webrtc_client import Player

WIDTH, HEIGHT, FPS = 128, 72, 16.0
REPLICA_ACTOR = "SERVE_REPLICA::worldwalk#SessionHost#{}"
RESUME_TIMEOUT_S = 8.0  # a moved walk's player reconnects at once (well under a second here)


def world_config() -> WorldConfig:
    if os.environ.get("WORLDWALK_CLUSTER_WORLD") == "matrix-game":  # steered by actions (test_cluster_matrix_game.py)
        return builders.matrix_game_config(seed=3)
    return reference_config(width=WIDTH, height=HEIGHT, fps=FPS)


def serve_config(**overrides: Any) -> ServeConfig:
    kw: dict[str, Any] = dict(world=world_config(),
                              session=SessionConfig(), idle_timeout=60.0)
    kw.update(overrides)
    return builders.serve_config(barcode=True, **kw)


def cluster_config() -> ClusterConfig:
    replicas = int(os.environ.get("WORLDWALK_CLUSTER_REPLICAS", "2"))  # `capacity` runs with more
    record_dir = os.environ.get("WORLDWALK_CLUSTER_RECORD_DIR")  # every walk recorded (`moves` checks one)
    return ClusterConfig(serve=serve_config(record_dir=record_dir), replicas=replicas, sessions_per_replica=1,
                         num_cpus=0.5, admission_wait=2.0, record_frame_hashes=True, resume_timeout=RESUME_TIMEOUT_S,
                         records_kept=4096)  # every chunk since a walk's first: the failover checks read all


# what the clients' background tasks ended with other than a normal end of the stream or websocket
# (main() returns them as "client_errors": recorded, not swallowed)
CLIENT_ERRORS: list[str] = []


def _note_client_error(where: str, e: BaseException) -> None:
    CLIENT_ERRORS.append(f"{where}: {type(e).__name__}: {e}"[:300])


class Client(Player):
    """One player over aiortc (tests/webrtc_client.py) whose frames and signaling messages, from the
    first frame on, are taken in the background."""

    def __init__(self, url: str) -> None:
        super().__init__(url, on_error=_note_client_error)

    async def open(self, query: str = "") -> dict:
        """Connect; returns the first non-config message after the offer (answer, busy, ...)."""
        reply = await super().open(query, timeout=20, answer_timeout=60)
        if reply["type"] == "answer":
            await self.frame(timeout=30)
            self.follow()
        return reply


def store():
    from worldwalk.stream.cluster.snapshots import get_store

    return get_store()


async def finished_records(walk: str, recording: str | None) -> list[dict]:
    """The walk's chunk records once its recording is finalized and holds no chunk the store has no record of
    (a replica sends a chunk's record on a thread pool, after the chunk went out: read at once, the last
    chunks' records may not have arrived)."""
    from worldwalk.stream.record.session_log import read_log

    log = Path(recording).with_suffix(".jsonl") if recording else None
    await wait_for(lambda: log is None or '"type":"end"' in log.read_text(), 20, "the recording to be finalized")
    logged = {c["index"] for c in read_log(log).chunks} if log else set()
    deadline = time.monotonic() + 20
    while True:
        records = await asyncio.wait_for(store().records.remote(walk), 20)
        if logged <= {r["chunk"] for r in records} or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.25)


async def idle_replicas(timeout: float = 60.0) -> None:
    """Wait until both session hosts run and hold no session (a killed one has been replaced)."""
    from ray import serve

    def ready() -> bool:
        app = serve.status().applications.get("worldwalk")
        if app is None:
            return False
        dep = app.deployments["SessionHost"]
        return dep.replica_states.get("RUNNING", 0) == 2 and sum(dep.replica_states.values()) == 2

    await wait_for(ready, timeout, "two running session hosts", 0.25)


def kill_replica(replica: str) -> None:
    import ray

    ray.kill(ray.get_actor(REPLICA_ACTOR.format(replica), namespace="serve"), no_restart=True)


async def drain_and_follow(client: Client, url: str, walk: str, replica: str) -> tuple[Client, dict]:
    """Drain the player's replica (`worldwalk cluster drain`'s own code): the player hears `moved` at a
    chunk boundary and resumes elsewhere. Returns the new client and what was seen."""
    await idle_replicas()  # a replica to move to (a killed one has been replaced)
    import argparse

    from worldwalk.stream.cluster.status import run_drain

    t_drain = time.monotonic()
    rc = await asyncio.to_thread(run_drain, argparse.Namespace(replica=replica, address="auto"))  # the CLI's
    assert rc == 0, f"worldwalk cluster drain {replica} exited {rc}"
    await wait_for(lambda: client.ended is not None, 30, "the drained replica to hand the walk off")
    moved, last_before = client.ended, client.frames[-1][0]
    await client.close()
    nxt = Client(url)
    ans = await nxt.open(f"?resume={walk}")
    out = {"moved": moved, "resumed": ans.get("resumed"), "replica": ans.get("replica"),
           "gap_s": nxt.frames[0][0] - last_before, "drain_to_moved_s": time.monotonic() - t_drain,
           "signaling_after": (ans["signaling_ms"], ans["host_ms"]), "attempts": ans.get("attempts")}
    kill_replica(replica)  # maintenance: the drained replica is taken down; Serve puts a fresh one in its place
    return nxt, out


# ---- scenarios ------------------------------------------------------------------------------------


async def walk_busy(url: str) -> dict:
    """Two players walk on different replicas; a third hears busy; both walks move forward."""
    a, b, c = Client(url), Client(url), Client(url)
    ans_a = await a.open()
    ans_b = await b.open()
    t_busy = time.monotonic()
    busy = await c.open()
    busy_s = time.monotonic() - t_busy
    await a.key("w", True)
    await b.key("w", True)
    n0 = (len(a.frames), len(b.frames))
    t_walk = time.monotonic()
    await asyncio.sleep(2.0)  # both walk 2 s at least; on a busy machine, until each has shown 10 frames more
    await wait_for(lambda: min(len(a.frames) - n0[0], len(b.frames) - n0[1]) >= 10, 15.0, "10 frames on both")
    n1 = (len(a.frames), len(b.frames))
    walked_s = time.monotonic() - t_walk
    walks = [a.answer["walk"], b.answer["walk"]]
    for client in (a, b, c):
        await client.close()
    records = [await store().records.remote(w) for w in walks]
    return {
        "replicas": [ans_a.get("replica"), ans_b.get("replica")],
        "answers": [ans_a["type"], ans_b["type"]],
        "busy": busy, "busy_s": busy_s,
        "frames_walked": [n1[0] - n0[0], n1[1] - n0[1]], "walked_s": walked_s,
        "sizes": sorted({(w, h) for _, w, h in a.frames + b.frames}),
        "connect_first_frame_s": [a.first_frame_s, b.first_frame_s],
        "offer_answer_s": [a.offer_answer_s, b.offer_answer_s],
        "signaling": [(x["signaling_ms"], x["host_ms"]) for x in (ans_a, ans_b)],
        "z_last": [r[-1]["poses"][-1][2][3] if r else None for r in records],
        "record_replicas": [sorted({x["replica"] for x in r}) for r in records],
    }


async def failover(url: str, by: str = "ray.kill") -> dict:
    """Kill the replica of a walking player: it hears `moved`, reconnects with ?resume= and the
    walk goes on on another replica. by: "ray.kill" (the actor) or "sigkill" (the process)."""
    import ray

    await idle_replicas()
    p = Client(url)
    ans = await p.open()
    walk, replica = ans["walk"], ans["replica"]
    await p.key("w", True)
    watcher = Client(url) if by == "ray.kill" else None  # a spectator follows the walk through the kill
    if watcher is not None:
        await watcher.open(f"?watch={ans['session']}")
    await wait_for(lambda: len(p.frames) > 40, 30, "40 frames before the kill")
    snapshot = await store().latest.remote(walk)
    assert snapshot is not None, "the walk has no snapshot in the store"
    meta = snapshot[1]
    t_kill = time.monotonic()
    if by == "ray.kill":
        ray.kill(ray.get_actor(REPLICA_ACTOR.format(replica), namespace="serve"), no_restart=True)
    else:
        os.kill(meta["pid"], signal.SIGKILL)
    await wait_for(lambda: p.ended is not None, 30, "the player to hear that its host stopped")
    t_moved = time.monotonic()
    last_before = p.frames[-1][0]
    moved = p.ended
    await p.close()
    q = Client(url)
    ans2 = await q.open(f"?resume={moved['walk']}")
    assert ans2.get("type") == "answer", f"the resume {time.monotonic() - t_moved:.1f} s after `moved` heard {ans2}"
    gap_s = q.frames[0][0] - last_before
    spectator: dict[str, Any] = {}
    if watcher is not None:
        await wait_for(lambda: watcher.ended is not None, 30, "the spectator to hear that the walk moved")
        await watcher.close()
        again = Client(url)
        answer = await again.open(f"?watch={ans['session']}")
        await wait_for(lambda: len(again.frames) > 5, 20, "the spectator's frames after the kill")
        spectator = {"moved": watcher.ended, "replica": answer.get("replica"), "frames": len(again.frames),
                     "session_after": ans2.get("session")}
        await again.close()
    # a few chunks after the move: counted, not timed (a busy machine makes fewer in a fixed window)
    await wait_for(lambda: len(q.frames) >= 10, 30, "10 frames after the move")
    frames_after = len(q.frames)
    recording = (await store().resume_recording.remote(walk))[0]  # freed with the walk when its player leaves
    await q.close()
    records = await finished_records(walk, recording)
    return {
        "by": by, "moved": moved, "resumed": ans2.get("resumed"), "replicas": [replica, ans2.get("replica")],
        "gap_s": gap_s, "kill_to_moved_s": t_moved - t_kill, "kill_to_first_s": q.frames[0][0] - t_kill,
        "frames_after": frames_after, "records": records, "recording": recording, "snapshot_meta": meta,
        "signaling_after": (ans2["signaling_ms"], ans2["host_ms"]), "spectator": spectator,
    }


async def moves(url: str) -> dict:
    """A recorded walk moves twice: its replica is killed (failover), then the replica it moved to is
    drained. One recording, continued across both moves."""
    await idle_replicas()
    p = Client(url)
    ans = await p.open()
    walk, first = ans["walk"], ans["replica"]
    await p.key("w", True)
    await wait_for(lambda: len(p.frames) > 40, 30, "40 frames before the kill")
    kill_replica(first)
    await wait_for(lambda: p.ended is not None, 30, "the player to hear that its host stopped")
    await p.close()
    q = Client(url)
    ans2 = await q.open(f"?resume={walk}")
    await wait_for(lambda: len(q.frames) > 30, 30, "30 frames after the failover")
    r, drained = await drain_and_follow(q, url, walk, ans2["replica"])
    await wait_for(lambda: len(r.frames) > 20, 30, "20 frames after the drain")
    serve_states = await store().serve_replicas.remote()  # what the drain watcher reads from Serve's controller
    recording = (await store().resume_recording.remote(walk))[0]
    await r.close()
    records = await finished_records(walk, recording)
    return {"replicas": [first, ans2["replica"], drained["replica"]], "drain": drained, "records": records,
            "recording": recording, "serve_states": serve_states}


async def _no_drains() -> bool:
    return not (await store().status.remote())["draining"]


async def expire(url: str) -> dict:
    """A drained walk whose player never comes back expires after the resume timeout (its snapshot
    freed); the drain of the only other session host is refused (it would leave no host taking
    players); `worldwalk cluster status` shows the walk waiting (with its time left), the drain,
    and the drain's end."""
    import argparse
    import contextlib
    import io

    from worldwalk.stream.cluster.status import cluster_status, run_drain, run_status

    def cli(run: Any, **args: Any) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = run(argparse.Namespace(address="auto", **args))
        return rc, out.getvalue()

    # a replica an earlier scenario drained takes no players: take it down (as its drain says to), so
    # that the walk's replica is not the last one taking players
    for left in list((await store().status.remote())["draining"]):
        kill_replica(left)
    await idle_replicas()
    await wait_for(lambda: _no_drains(), 30, "earlier drains to be forgotten", 0.25)
    # the killed replica's replacement may still be starting (a player then waits in the queue, or is told
    # the cluster is busy): ask again until a host answers, and say what came back if none does
    deadline = time.monotonic() + 30
    while True:
        p = Client(url)
        ans = await p.open()
        if ans.get("type") == "answer" or time.monotonic() > deadline:
            break
        await p.close()
        await asyncio.sleep(0.5)
    assert ans.get("type") == "answer", ans
    walk, replica = ans["walk"], ans["replica"]
    await p.key("w", True)
    await wait_for(lambda: len(p.frames) > 20, 30, "20 frames before the drain")
    # Serve may be restarting the other host just now (on a busy machine a health check can time out; the
    # store drains what Serve stops): the drain is refused while no other host takes players, so ask again
    deadline = time.monotonic() + 30
    while (drained := await asyncio.to_thread(cli, run_drain, replica=replica))[0] != 0 \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert drained[0] == 0, drained  # else the walk is never handed off: say why now
    await wait_for(lambda: p.ended is not None, 30, "the drained replica to hand the walk off")
    t_moved = time.monotonic()
    await p.close()  # the player never comes back
    other = next(r for r in await store().serve_replicas.remote() if r != replica)
    last = await asyncio.to_thread(cli, run_drain, replica=other)
    other_draining = await store().is_draining.remote(other)

    async def walk_state() -> dict:
        return (await store().status.remote())["walks"].get(walk[:8], {})

    deadline = time.monotonic() + 25  # the host lists the walk as moved once its session has closed (slower when busy)
    while (await walk_state()).get("state") != "moved" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    waiting = await asyncio.to_thread(cluster_status)
    waiting_text = (await asyncio.to_thread(cli, run_status, json=False))[1]
    deadline = time.monotonic() + RESUME_TIMEOUT_S + 20
    while await store().latest.remote(walk) is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    expired_s = time.monotonic() - t_moved
    after = await asyncio.to_thread(cluster_status)
    after_text = (await asyncio.to_thread(cli, run_status, json=False))[1]
    kill_replica(replica)  # taken down: Serve puts a fresh one in its place, and the drain is forgotten
    await idle_replicas()
    deadline = time.monotonic() + 10
    while replica in (await store().status.remote())["draining"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return {"walk": walk[:8], "replica": replica, "drained": drained, "last": last,
            "other_draining": other_draining, "waiting": waiting, "waiting_text": waiting_text,
            "expired_s": expired_s, "after": after, "after_text": after_text,
            "forgotten": replica not in (await store().status.remote())["draining"], "player_ended": p.ended}


async def serve_stop(url: str) -> dict:
    """Serve's own graceful shutdown drains (run last: it deletes the app): while a player walks,
    Serve stops the session hosts; the store sees them STOPPING, and the walk is handed off at a
    chunk boundary (the player hears `moved` with the hand-off) instead of being cut off when
    Serve's graceful-shutdown wait is over."""
    from ray import serve

    p = Client(url)
    ans = await p.open()
    await p.key("w", True)
    await wait_for(lambda: len(p.frames) > 20, 30, "20 frames before Serve stops the app")
    t0 = time.monotonic()
    deleting = asyncio.ensure_future(asyncio.to_thread(serve.delete, "worldwalk"))
    await wait_for(lambda: p.ended is not None, 30, "the player to hear that its host stops")
    moved_s = time.monotonic() - t0
    await p.close()
    await deleting
    return {"answer": ans["type"], "moved": p.ended, "moved_s": moved_s}


async def spectate(url: str) -> dict:
    """A spectator link through the gateway reaches the walk's replica, and follows the walk when
    its replica is drained (the page reconnects with the same link)."""
    await idle_replicas()
    p = Client(url)
    ans = await p.open()
    walk, watch = ans["walk"], ans["session"]
    await p.key("w", True)
    s = Client(url)
    s_ans = await s.open(f"?watch={watch}")
    await wait_for(lambda: len(s.frames) > 10, 20, "the spectator's frames")
    player, drained = await drain_and_follow(p, url, walk, ans["replica"])
    await wait_for(lambda: s.ended is not None, 30, "the spectator to hear that the walk moved")
    s_moved, s_before = s.ended, len(s.frames)
    await s.close()
    s2 = Client(url)
    s2_ans = await s2.open(f"?watch={watch}")
    await wait_for(lambda: len(s2.frames) > 10, 20, "the spectator's frames after the move")
    t0 = time.monotonic()
    await player.close()  # the walk ends: its spectator hears so
    await wait_for(lambda: s2.ended is not None, 20, "the spectator to hear that the walk ended")
    ended_s = time.monotonic() - t0
    await s2.close()
    late = Client(url)
    refused = await late.open(f"?watch={watch}")
    await late.close()
    return {"answers": [s_ans.get("type"), s2_ans.get("type")], "roles": [s_ans.get("role"), s2_ans.get("role")],
            "spectator_replicas": [s_ans.get("replica"), s2_ans.get("replica")],
            "player_replicas": [ans["replica"], drained["replica"]], "frames": [s_before, len(s2.frames)],
            "moved": s_moved, "ended": s2.ended, "ended_s": ended_s, "late": refused,
            "first_frame_s": [s.first_frame_s, s2.first_frame_s]}


async def browser(url: str) -> dict:
    """Headless Chromium through the gateway: the page connects, walks, and when its replica is
    killed reconnects by itself and carries on (barcode frame numbers go on, not from 0)."""
    import ray
    from playwright.async_api import async_playwright

    from worldwalk.stream.loopback_netns import launch_chromium

    await idle_replicas()
    page_url = url.replace("ws://", "http://").removesuffix("ws")
    async with async_playwright() as pw:
        context, profile = await launch_chromium(pw)
        try:
            page = await context.new_page()
            t0 = time.monotonic()
            await page.goto(page_url)

            async def ww(expr: str) -> Any:
                return await page.evaluate(f"() => {{ const ww = window.worldwalk; return {expr}; }}")

            async def until(expr: str, timeout: float, what: str) -> None:
                deadline = time.monotonic() + timeout
                while not await ww(expr):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"timed out waiting for {what}: {await ww('ww.state')}")
                    await asyncio.sleep(0.05)

            await until("ww.state === 'connected' && ww.frames.length > 0", 40, "the first frame")
            first_frame_s = time.monotonic() - t0
            await page.keyboard.down("w")
            await until("ww.frames.length > 30", 30, "30 frames")
            replica = (await ww("ww.walk")) and await store().latest.remote(await ww("ww.walk"))
            assert replica, "the page's walk has no snapshot"
            before = await ww("ww.frames[ww.frames.length - 1].index")
            ray.kill(ray.get_actor(REPLICA_ACTOR.format(replica[1]["replica"]), namespace="serve"), no_restart=True)
            t_kill = time.monotonic()
            await until("ww.moves === 1 && ww.state === 'connected' && ww.session", 40, "the page to move")
            await until(f"ww.frames.some(f => f.index > {before} && f.wall > Date.now() - 5000)", 30,
                        "frames after the move")
            moved_s = time.monotonic() - t_kill
            await until(f"ww.frames.filter(f => f.index > {before}).length >= 8", 30, "8 frames after the move")
            await page.keyboard.up("w")
            frames = await ww("ww.frames.map(f => f.index)")
            after = [i for i in frames[frames.index(before) + 1:]]
            stats = await ww("ww.lastStats")
        finally:
            await context.close()
            import shutil

            shutil.rmtree(profile, ignore_errors=True)
    return {"first_frame_s": first_frame_s, "before": before, "after_first": after[0] if after else None,
            "after_count": len(after), "moved_s": moved_s, "position": stats.get("position") if stats else None}


async def capacity(url: str) -> dict:
    """Not a test: as many walking players as there are replicas; frames each got in 4 s."""
    n = int(os.environ.get("WORLDWALK_CLUSTER_REPLICAS", "2"))
    clients = [Client(url) for _ in range(n)]
    answers = [await c.open() for c in clients]
    for c in clients:
        await c.key("w", True)
    counts0 = [len(c.frames) for c in clients]
    await asyncio.sleep(4.0)
    fps = [(len(c.frames) - k) / 4.0 for c, k in zip(clients, counts0, strict=True)]
    for c in clients:
        await c.close()
    return {"players": n, "admitted": [a["type"] for a in answers], "fps": fps}


async def queue(url: str) -> dict:
    """Autoscaling on (up to 2 session hosts): with both busy, a third player waits in line, is
    told its place, and gets its turn when a player leaves."""
    from worldwalk.stream.cluster.app import start

    port = int(url.split(":")[2].split("/")[0])
    base = cluster_config()
    start(ClusterConfig(serve=base.serve, num_cpus=base.num_cpus, min_replicas=1, max_replicas=2,
                        record_frame_hashes=True), http_port=port)  # the same app, redeployed
    await idle_replicas()
    a, b, c = Client(url), Client(url), Client(url)
    await a.open()
    await b.open()
    waiting = asyncio.ensure_future(c.open())
    await wait_for(lambda: any(m["type"] == "queued" for m in c.signals) or waiting.done(), 20, "a place in line")
    await asyncio.sleep(1.5)  # a second place report; still waiting
    still_waiting = not waiting.done()
    t_leave = time.monotonic()
    await a.close()
    answer = await asyncio.wait_for(waiting, 40)
    turn_s = time.monotonic() - t_leave
    queued = [m for m in c.signals if m["type"] == "queued"]
    out = {"answer": answer["type"], "still_waiting": still_waiting, "queued": queued[:2], "n_queued": len(queued),
           "turn_s": turn_s, "replicas": [a.answer["replica"], b.answer["replica"], answer.get("replica")]}
    await b.close()
    await c.close()
    return out


async def gate(url: str) -> dict:
    """The gateway's gate: another site's Origin and a foreign Host are refused before any
    session work; a spectator link says it is not served yet."""
    import urllib.error
    import urllib.request

    from websockets.exceptions import InvalidStatus

    out: dict[str, Any] = {}
    try:
        async with connect(url, origin="http://evil.example", open_timeout=20):
            out["evil_origin"] = "accepted"
    except InvalidStatus as e:
        out["evil_origin"] = e.response.status_code
    page = url.replace("ws://", "http://").removesuffix("ws")
    req = urllib.request.Request(page, headers={"Host": "attacker.example"})
    try:
        out["foreign_host"] = await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=10).status)
    except urllib.error.HTTPError as e:
        out["foreign_host"] = e.code
    async with connect(url + "?watch=somebody", open_timeout=20) as ws:
        out["watch"] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    # offers are bounded at the gateway too: too many candidates, and JSON nested too deep
    flood = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" + \
        "".join(f"a=candidate:{i} 1 udp 1 10.{i // 256 % 256}.{i % 256}.1 9 typ host\r\n" for i in range(100))
    for name, text in (("flood_offer", json.dumps({"type": "offer", "sdp": flood})), ("deep_json", "[" * 100_000)):
        async with connect(url, open_timeout=20, max_size=2**22) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), 20))  # config
            t0 = time.monotonic()
            await ws.send(text)
            out[name] = json.loads(await asyncio.wait_for(ws.recv(), 20))
            out[name + "_ms"] = (time.monotonic() - t0) * 1e3
    return out


async def refused_or_open(url: str) -> Any:
    """Open a websocket: its config message, or the HTTP status it was refused with."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = await connect(url, open_timeout=20)
    except InvalidStatus as e:
        return e.response.status_code
    json.loads(await asyncio.wait_for(ws.recv(), 20))
    return ws


async def closed_with(ws: Any, timeout: float) -> tuple[int, str] | None:
    """(code, reason) the server closed `ws` with within `timeout` s (other messages skipped), or
    None when it is still open."""
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (1006, "")
    return None


async def limits(url: str) -> dict:
    """The gateway's connection limits (`serve`'s: 16 open signaling sockets per address) and its
    bound on a message's size, before the offer and during a walk."""
    per_client = serve_config().max_connections_per_client
    out: dict[str, Any] = {"per_client": per_client}
    held = [await refused_or_open(url) for _ in range(per_client)]
    out["held"] = sum(1 for ws in held if not isinstance(ws, int))
    one_more = await refused_or_open(url)  # over the limit: refused before the websocket opens
    out["one_more"] = one_more if isinstance(one_more, int) else "open"
    if not isinstance(one_more, int):
        await one_more.close()
    await held.pop().close()
    await asyncio.sleep(0.5)
    again = await refused_or_open(url)  # a closed socket gives its place back
    out["after_one_closed"] = "open" if not isinstance(again, int) else again
    for ws in [*held, again]:
        if not isinstance(ws, int):
            await ws.close()
    big = json.dumps({"type": "offer", "sdp": "v=0\r\n" + "a" * (300 * 1024)})
    async with connect(url, open_timeout=20) as ws:  # an offer over the bound
        json.loads(await asyncio.wait_for(ws.recv(), 20))
        await ws.send(big)
        out["before_offer"] = await closed_with(ws, 20)
    p = Client(url)  # and during a walk: the first message over the bound ends the connection
    ans = await p.open()
    p.stop_listening()  # closed_with reads the socket from here on
    out["walk_answer"] = ans["type"]
    await p.ws.send(big)
    out["during_walk"] = await closed_with(p.ws, 10)
    await p.close()
    return out


def rss_mb(match: str) -> dict[str, float]:
    """VmRSS and VmHWM (peak), MB, of the first process whose command line contains `match`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if match not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except OSError:
            continue
        return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}
    return {}


async def proxy_memory(url: str) -> dict:
    """Not a test: the memory of Serve's HTTP proxy and of the gateway around twenty 16 MiB
    messages, sent during a walk on one connection, and then one each on twenty connections
    before their offer (what the proxy reads whole before the gateway can close)."""
    big = "x" * (16 * 1024 * 1024 - 64)
    out: dict[str, Any] = {"before": {"proxy": rss_mb("ray::ProxyActor"), "gateway": rss_mb("worldwalk:Gateway")}}
    p = Client(url)
    await p.open()
    p.stop_listening()
    sent = 0
    with contextlib.suppress(Exception):
        for _ in range(20):
            await p.ws.send(big)
            sent += 1
    out["walk"] = {"sent": sent, "closed": await closed_with(p.ws, 20)}
    await p.close()
    await asyncio.sleep(5)
    out["after_walk"] = {"proxy": rss_mb("ray::ProxyActor"), "gateway": rss_mb("worldwalk:Gateway")}
    codes = []
    for _ in range(20):
        async with connect(url, open_timeout=20, max_size=None) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), 20))
            with contextlib.suppress(Exception):
                await ws.send(big)
            codes.append(await closed_with(ws, 20))
    await asyncio.sleep(5)
    out["pre_offer"] = {"closes": sorted({str(c) for c in codes})}
    out["after_pre_offer"] = {"proxy": rss_mb("ray::ProxyActor"), "gateway": rss_mb("worldwalk:Gateway")}
    return out


async def single_process() -> dict:
    """The same player on the single-process server, for the connect -> first frame figure."""
    async with StreamServer(serve_config()) as server:
        c = Client(f"ws://127.0.0.1:{server.port}/ws")
        await c.open()
        await c.close()
    return {"connect_first_frame_s": c.first_frame_s, "offer_answer_s": c.offer_answer_s}


async def failover_sigkill(url: str) -> dict:
    return await failover(url, by="sigkill")


SCENARIOS = {"walk_busy": walk_busy, "failover": failover, "failover_sigkill": failover_sigkill, "browser": browser,
             "capacity": capacity, "queue": queue, "gate": gate, "moves": moves, "spectate": spectate,
             "serve_stop": serve_stop, "expire": expire, "limits": limits, "proxy_memory": proxy_memory}


async def main(names: list[str]) -> dict:
    import ray

    from worldwalk.stream.cluster.app import start, stop

    out: dict[str, Any] = {}
    if "single" in names:
        try:
            out["single"] = await single_process()
        except Exception:
            out["single"] = {"error": traceback.format_exc()}
    t0 = time.monotonic()
    ray.init(address="local", num_cpus=max(4, cluster_config().replicas + 1), include_dashboard=False,
             log_to_driver=False, namespace="worldwalk")  # "local": never a cluster another run left its address for
    out["session_dir"] = ray._private.worker._global_node.get_session_dir_path()
    cfg = cluster_config()
    try:
        url = start(cfg).replace("http://", "ws://") + "ws"
        out["up_s"] = time.monotonic() - t0
        out["page_url"] = url
        for name in names:
            if name == "single":
                continue
            try:
                out[name] = await asyncio.wait_for(SCENARIOS[name](url), 120)
            except Exception:
                out[name] = {"error": traceback.format_exc()}
        out["status"] = await store().status.remote()
        out["client_errors"] = list(CLIENT_ERRORS)
    finally:
        t1 = time.monotonic()
        stop(ClusterConfig(serve=cfg.serve))  # address None: shut Ray down too
        out["down_s"] = time.monotonic() - t1
    return out


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1:]))
    print(json.dumps(result, default=str))
