"""The gateway's admission (`Gateway._admit`) on its own: a new player hears busy after
`admission_wait`; a player resuming its walk waits in line, its walk claimed again each second,
for up to `resume_timeout`. The host call and the browser are small stand-ins that keep time;
the cluster scenarios (test_cluster.py) run the same code against Ray Serve."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from functools import partial
from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from worldwalk.stream.cluster.config import ClusterConfig  # noqa: E402
from worldwalk.stream.cluster.gateway import Gateway  # noqa: E402


class Page:
    """What the browser hears."""

    def __init__(self) -> None:
        self.heard: list[dict] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, text: str) -> None:
        self.heard.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


class HostCall:
    """A streaming call to a session host whose first item ("admitted") comes after `delay` s."""

    def __init__(self, delay: float) -> None:
        self.delay, self.cancelled = delay, False

    async def __anext__(self) -> dict:
        await asyncio.sleep(self.delay)
        return {"type": "admitted", "replica": "r1", "node": "n1"}

    def cancel(self) -> None:
        self.cancelled = True


class Store:
    """The snapshot store's `claim`, as an actor handle calls it (`store.claim.remote(walk)`)."""

    def __init__(self) -> None:
        self.claims: list[str] = []
        self.claim = SimpleNamespace(remote=self._claim)

    async def _claim(self, walk: str) -> bool:
        self.claims.append(walk)
        return True


def gateway(admission_wait: float | None, resume_timeout: float) -> SimpleNamespace:
    """What `Gateway._admit` reads, counts and calls on its gateway (no Serve deployment)."""
    gw = SimpleNamespace(cfg=ClusterConfig(admission_wait=admission_wait, resume_timeout=resume_timeout),
                         line=deque(), busy_refusals=0, store=Store())
    gw._busy = partial(Gateway._busy, gw)
    return gw


def admit(gw: SimpleNamespace, call: HostCall, resumed: bool) -> tuple[dict | None, Page]:
    page = Page()
    return asyncio.run(Gateway._admit(gw, page, call, "walk-1", resumed)), page


def test_a_new_player_hears_busy_after_the_admission_wait():
    gw, call = gateway(admission_wait=0.2, resume_timeout=10.0), HostCall(delay=2.5)
    admitted, page = admit(gw, call, resumed=False)
    assert admitted is None and [m["type"] for m in page.heard] == ["busy"] and page.closed is not None
    assert call.cancelled and gw.busy_refusals == 1 and gw.store.claims == []


def test_a_resuming_player_waits_in_line_past_the_admission_wait_and_keeps_its_walk():
    gw, call = gateway(admission_wait=0.2, resume_timeout=10.0), HostCall(delay=2.5)
    admitted, page = admit(gw, call, resumed=True)
    assert admitted is not None and admitted["type"] == "admitted"
    # about two 1 s ticks in 2.5 s; a stalled machine may see one more or one fewer
    heard = [m["type"] for m in page.heard]
    assert 1 <= len(heard) <= 3 and set(heard) == {"queued"} and page.heard[0]["ahead"] == 0
    assert gw.store.claims == ["walk-1"] * len(heard)  # its walk claimed again each second it waited
    assert not call.cancelled and gw.busy_refusals == 0 and not gw.line and page.closed is None


def test_a_resuming_player_hears_busy_once_its_walk_would_expire():
    gw, call = gateway(admission_wait=0.2, resume_timeout=1.5), HostCall(delay=30.0)
    admitted, page = admit(gw, call, resumed=True)
    assert admitted is None and [m["type"] for m in page.heard] == ["queued", "busy"]
    assert call.cancelled and gw.busy_refusals == 1 and not gw.line
