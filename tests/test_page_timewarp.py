"""The page's WebGL timewarp in a real browser: holding E turns the view at once, ahead of the
frames, and a half-second press ends turned by what the server saw it held (90 degrees/s), on
screen and in the frames once they arrive. The press's latency is split step by step, the page's
own steps (the key's way in, the frame's way out, decode and paint) included."""

from __future__ import annotations

import json

import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

_skip = netns_unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_skip is not None, reason=f"loopback namespace: {_skip}")]

ONE_DISPLAY_FRAME_DEG = 90.0 / 60.0  # the turn rate times a 60 Hz display frame
TURNED_DEG = 3.0  # two display frames of the turn


def first_past(trace: list, column: int, deg: float) -> float:
    """The page time (ms) of the first display frame whose view (column 1) or frame (2) is turned past deg."""
    return next((row[0] for row in trace if row[column] > deg), float("inf"))


@pytest.mark.timeout(150)
def test_a_turn_key_turns_the_page_view_at_once_and_ends_where_it_was_let_go():
    proc = run_module_in_loopback_netns("tests.page_timewarp_harness", [], timeout=140)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(lines[-1])
    assert "error" not in r, r["error"]
    assert r["active"], "the page did not draw through its timewarp (no WebGL?)"
    (view_mid, frame_mid), (view_end, frame_end) = r["mid"], r["end"]
    # the view answers before the frames do: it turns past a few degrees display frames before the
    # frames on screen do (a frame needs the key's way in, a chunk and the way back; the view none)
    lead_ms = first_past(r["trace"], 2, TURNED_DEG) - first_past(r["trace"], 1, TURNED_DEG)
    assert lead_ms > 0, (lead_ms, r)
    assert view_mid[0] >= frame_mid[0], r
    expected = 90.0 * r["held_s"]
    assert abs(view_end[0] - expected) <= ONE_DISPLAY_FRAME_DEG, r
    assert abs(frame_end[0] - expected) <= ONE_DISPLAY_FRAME_DEG, r
    # no overshoot on screen: just after the release the view stops where the page let go, which is
    # the server's turn give or take how much later the release reached it than the press did
    jitter_deg = 90.0 * abs(r["page_held_s"] - r["held_s"])
    assert abs(r["released"][0][0] - expected) <= ONE_DISPLAY_FRAME_DEG + jitter_deg, r
    # the press's latency, step by step: the server's part and the page's own
    assert r["latency"], r
    split = r["latency"][0]
    steps = ["in", "wait", "plan", "generate", "decode", "queue", "out", "paint"]
    # the page's clock is set from its best ping, right to within half that round trip ("in"): only
    # the frame's way out is read across the two clocks
    assert all(split[k] > -5.0 for k in steps if k != "out"), split
    assert split["out"] > -(split["in"] + 5.0), split
    assert split["total"] == pytest.approx(sum(split[k] for k in steps)) and 0 < split["total"] < 3000, split
    assert "key " in r["stats_text"] and " + paint " in r["stats_text"], r["stats_text"]
