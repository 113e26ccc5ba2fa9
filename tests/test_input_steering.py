"""The input channel carries a browser's messages to the end: a pong, the player's session steered, or a
spectator's input counted as ignored; nothing a message does raises into the server."""

from __future__ import annotations

import json
from collections import deque
from types import SimpleNamespace

from worldwalk.controls import InputBox
from worldwalk.stream.webrtc.input_channel import InputGate, receive


class FakeSession:
    def __init__(self) -> None:
        self.inputs = InputBox()
        self.commands: list[str] = []

    def reset(self) -> None:
        self.commands.append("reset")

    def rewind(self) -> int:
        self.commands.append("rewind")
        return 0

    def set_paused(self, paused: bool) -> None:
        self.commands.append("pause" if paused else "resume")


def test_a_players_messages_steer_its_session_and_a_spectators_are_ignored():
    gate, replies, keys = InputGate(), [], deque()
    play = SimpleNamespace(session=FakeSession(), last_input=0.0)
    steered = [play]

    def send(obj: dict) -> None:
        receive(gate, json.dumps(obj), reply=replies.append, steered=lambda: steered[0], key_log=keys)

    send({"t": "ping", "id": 7})
    send({"t": "key", "key": "w", "down": True})
    for cmd in ("reset", "rewind", "pause", "resume"):
        send({"t": "cmd", "cmd": cmd})
    assert [r["id"] for r in replies if r["t"] == "pong"] == [7]
    assert play.session.inputs.peek().keys == {"w"} and [k[:2] for k in keys] == [("w", True)]
    assert play.session.commands == ["reset", "rewind", "pause", "resume"] and play.last_input > 0
    steered[0] = None  # a spectator (or a session already gone)
    send({"t": "key", "key": "a", "down": True})
    receive(gate, "not json", reply=replies.append, steered=lambda: None)
    assert gate.counters.ignored == 1 and gate.counters.reasons["not_json"] == 1
    assert play.session.inputs.peek().keys == {"w"}


def test_a_session_that_fails_a_message_is_counted_not_raised():
    gate = InputGate()
    broken = SimpleNamespace(session=None, last_input=0.0)  # no inputs: every message fails to apply
    receive(gate, json.dumps({"t": "blur"}), reply=lambda obj: None, steered=lambda: broken)
    assert gate.counters.reasons["apply_failed"] == 1
