"""The cluster's snapshot store on its own (no Ray cluster: its state and calls as a plain object,
on a clock the test moves): walks that lost their session expire after the resume timeout, with
their snapshots and spectator mail; drains end, and the last session host is not drained."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from worldwalk.stream.cluster import snapshots  # noqa: E402
from worldwalk.stream.cluster.snapshots import WalkStore, watch_id  # noqa: E402

from .builders import ManualClock  # noqa: E402

TIMEOUT = 5.0


@pytest.fixture
def store(monkeypatch) -> WalkStore:
    monkeypatch.setattr(snapshots, "ray", SimpleNamespace(put=lambda data: data, get=lambda ref: ref))
    s = WalkStore(watch_serve=False, resume_timeout=TIMEOUT, mail_kept=30.0)
    s._clock = ManualClock(100.0)
    s.serve_replicas = lambda: {"r1": "RUNNING", "r2": "RUNNING"}  # what Serve's controller would list
    return s


def walk_on(store: WalkStore, walk: str, replica: str, chunk: int = 3) -> None:
    store.hosting(walk, replica)
    store.keep(walk, b"snapshot", {"chunk": chunk, "replica": replica, "made": float(chunk)})
    store.record(walk, [{"chunk": chunk, "replica": replica, "chunk_ms": 10.0, "input": {}, "poses": []}])
    store.recording(walk, f"/records/{walk}.mp4")


def test_a_walk_nobody_resumes_expires_with_its_snapshot_and_spectator_mail(store):
    walk_on(store, "walk-a", "r1")
    walk_on(store, "walk-b", "r2")
    store.post("r1", {"id": "spect-1", "walk": "walk-a", "offer": {}})
    store.reply("spect-1", [{"type": "close", "code": 1000, "reason": "closed"}])  # its reader left
    assert store.mail() == 2
    store.unhost("walk-a", "r1")  # its replica died (or handed it off): the player may come back
    st = store.status()
    assert st["walks"]["walk-a"]["state"] == "moved" and st["walks"]["walk-a"]["resume_s"] == TIMEOUT
    assert st["walks"]["walk-b"]["state"] == "live" and st["moved"] == 1

    store._clock.t += TIMEOUT - 1
    assert store.expire() == [] and store.latest("walk-a") is not None
    assert store.status()["walks"]["walk-a"]["resume_s"] == 1.0
    store._clock.t += 1
    assert store.expire() == ["walk-a"]
    assert store.latest("walk-a") is None and store.resume_recording("walk-a")[0] is None
    assert store.where(watch_id("walk-a")) is None and store.mail() == 0
    st = store.status()
    assert st["snapshots"] == 1 and st["moved"] == 0 and st["walks"]["walk-a"]["state"] == "ended"
    assert store.claim("walk-a") is False  # the player comes back too late: a new walk
    # a late boundary of the expired walk is not kept
    store.keep("walk-a", b"late", {"chunk": 9, "replica": "r1", "made": 9.0})
    assert store.latest("walk-a") is None
    # the live walk never expires, however long it runs
    store._clock.t += 1000
    assert store.expire() == [] and store.latest("walk-b") is not None


def test_a_player_coming_back_keeps_its_walk(store):
    walk_on(store, "walk-a", "r1")
    store.unhost("walk-a")  # the gateway saw the replica die
    store._clock.t += TIMEOUT - 0.5
    assert store.claim("walk-a") is True  # the player reconnects: a session host has the timeout again
    store._clock.t += TIMEOUT - 0.5
    assert store.expire() == []
    store.hosting("walk-a", "r2")  # resumed there
    store.unhost("walk-a", "r1")  # the old replica's late word changes nothing
    store._clock.t += 10 * TIMEOUT
    assert store.expire() == [] and store.status()["walks"]["walk-a"]["state"] == "live"


def test_a_walk_lost_before_its_first_snapshot_ends_at_once(store):
    store.hosting("walk-a", "r1")
    store.unhost("walk-a")
    assert store.where(watch_id("walk-a")) is None and store.claim("walk-a") is False
    assert store.status()["moved"] == 0


def test_spectator_mail_nobody_takes_is_dropped(store):
    walk_on(store, "walk-a", "r1")
    store.post("gone-replica", {"id": "s1", "walk": "walk-a", "offer": {}})
    store.reply("s2", [{"type": "close"}])
    store._clock.t += 29
    store.expire()
    assert store.mail() == 2
    store.reply("s3", [{"type": "send", "text": "{}"}])
    store._clock.t += 1
    store.expire()
    assert store.mail() == 1 and store.replies("s3", 0) == [{"type": "send", "text": "{}"}]
    assert store.mail() == 0 and not store._inbox and not store._outbox and not store._mail_walk


def test_the_last_session_host_taking_players_is_not_drained(store):
    walk_on(store, "walk-a", "r1")
    assert store.drain("r1") == {"walks": ["walk-a"]}
    refused = store.drain("r2")
    assert "last session host" in refused["refused"] and not store.is_draining("r2")
    store.serve_replicas = lambda: {"r1": "RUNNING"}
    assert "refused" in store.drain("r1") or store.is_draining("r1")  # asking again changes nothing
    store.serve_replicas = lambda: {"r2": "RUNNING"}
    assert "refused" in store.drain("r2")


def test_a_drain_ends_when_its_walks_have_left(store):
    walk_on(store, "walk-a", "r1")
    walk_on(store, "walk-b", "r1", chunk=5)
    store.drain("r1")
    d = store.status()["draining"]["r1"]
    assert (d["state"], d["walks_here"], d["why"]) == ("draining", 2, "asked")
    store.unhost("walk-a", "r1")  # handed off; its player comes back on r2
    store.hosting("walk-a", "r2")
    store.unhost("walk-b", "r1")  # handed off; its player does not come back
    d = store.status()["draining"]["r1"]
    assert (d["state"], d["walks_here"], d["walks_waiting"], d["walks_gone"]) == ("drained", 0, 1, 1)
    store._clock.t += TIMEOUT
    assert store.expire() == ["walk-b"]
    d = store.status()["draining"]["r1"]
    assert (d["state"], d["walks_waiting"], d["walks_gone"]) == ("drained", 0, 2)


def test_records_are_read_whole_while_replicas_append():
    """Ray runs the store's calls on many threads: reading a walk's chunk records (a resumed recording's,
    the failover checks') while its replica appends more gives a whole list, never "deque mutated during
    iteration"."""
    import threading

    s = WalkStore(records_kept=4096, watch_serve=False)
    rec = {"chunk": 0, "input": {}, "poses": [], "replica": "r"}
    s.record("w", [dict(rec, chunk=i) for i in range(4096)])
    stop = threading.Event()

    def append() -> None:
        i = 4096
        while not stop.is_set():
            s.record("w", [dict(rec, chunk=i)])
            i += 1

    writer = threading.Thread(target=append)
    writer.start()
    try:
        for _ in range(200):
            _, by_chunk = s.resume_recording("w")
            assert len(by_chunk) == 4096
            assert len(s.records("w")) == 4096
    finally:
        stop.set()
        writer.join()
