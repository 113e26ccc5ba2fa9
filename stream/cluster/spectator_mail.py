"""The walk store's spectator mailboxes: how a spectator's signaling reaches the replica hosting the walk.

Serve's own calls go to any replica, not to a chosen one, so the gateway `post`s a spectator's
offer (or its cancel) to the inbox of the replica that hosts the walk, the replica `take`s it, runs
the spectator on its own server and `reply`s its signaling to the request's outbox, which the
gateway reads with `replies`. Mail nobody takes (its reader left) is dropped after `mail_kept`
seconds; a walk's mail is dropped when the walk expires.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any


class SpectatorMail:
    """Part of the walk store (`snapshots.WalkStore`): the mailboxes, changed under the store's lock."""

    _lock: threading.RLock
    _clock: Callable[[], float]

    def __init__(self, mail_kept: float) -> None:
        self._mail_kept = mail_kept
        self._mail = threading.Condition(self._lock)
        self._inbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # replica -> spectator requests
        self._outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)  # request id -> messages back
        self._mail_walk: dict[str, str] = {}  # request id -> its walk
        self._mail_touched: dict[str, float] = {}  # "in:replica" / "out:request" -> last written (clock)

    def post(self, replica: str, request: dict[str, Any]) -> None:
        with self._mail:
            self._inbox[replica].append(request)
            if "walk" in request:
                self._mail_walk[request["id"]] = request["walk"]
            self._mail_touched[f"in:{replica}"] = self._clock()
            self._mail.notify_all()

    def take(self, replica: str, timeout: float = 2.0) -> list[dict[str, Any]]:
        """A replica's spectator requests (offers, cancels); waits up to `timeout` for one."""
        with self._mail:
            self._mail.wait_for(lambda: self._inbox.get(replica), timeout)
            self._mail_touched.pop(f"in:{replica}", None)
            return self._inbox.pop(replica, [])

    def reply(self, request: str, messages: list[dict[str, Any]]) -> None:
        with self._mail:
            self._outbox[request].extend(messages)
            self._mail_touched[f"out:{request}"] = self._clock()
            self._mail.notify_all()

    def replies(self, request: str, timeout: float = 1.0) -> list[dict[str, Any]]:
        with self._mail:
            self._mail.wait_for(lambda: self._outbox.get(request), timeout)
            self._mail_touched.pop(f"out:{request}", None)
            return self._outbox.pop(request, [])

    def mail(self) -> int:
        """Spectator messages waiting in the mailboxes (status, tests)."""
        with self._lock:
            return sum(map(len, self._inbox.values())) + sum(map(len, self._outbox.values()))

    def _drop_walk_mail(self, walk: str) -> None:
        """The walk ended: its spectators' requests and the answers to them are dropped."""
        with self._lock:
            rids = {r for r, w in self._mail_walk.items() if w == walk}
            for replica, requests in list(self._inbox.items()):
                self._inbox[replica] = [q for q in requests if q.get("id") not in rids]
            for rid in rids:
                self._drop_mail(f"out:{rid}")

    def _drop_unread_mail(self, now: float) -> None:
        """Drop the mail nobody took within `mail_kept` seconds, and the empty inboxes."""
        with self._lock:
            for key in [k for k, t in self._mail_touched.items() if now - t >= self._mail_kept]:
                self._drop_mail(key)
            for replica in [r for r, requests in self._inbox.items() if not requests]:
                del self._inbox[replica]

    def _drop_mail(self, key: str) -> None:
        kind, name = key.split(":", 1)
        self._mail_touched.pop(key, None)
        if kind == "in":
            for request in self._inbox.pop(name, []):
                self._mail_walk.pop(request.get("id", ""), None)
        else:
            self._outbox.pop(name, None)
            self._mail_walk.pop(name, None)
