"""`worldwalk serve` with a real headless Chromium, inside a network namespace that has only `lo`.

All scenarios run in one child process (`python -m tests.serve_harness`, started through
`unshare -n`), sharing one browser; each test below checks its scenario's part of the result.
The reference world renders 256x144 frames at 20 fps content rate.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

SCENARIOS = ["walk", "two_and_busy", "malformed", "token", "gamepad", "cycles"]
CYCLES_RSS_TOLERANCE_MIB = 12  # over 20 cycles after 3 warm-up ones: a leak of 0.6 MiB a session fails
# glibc gives each thread its own malloc arena; the executor threads' short-lived frame buffers then
# make RSS jump by 10-20 MiB steps with no leak at all (seen: +29 MiB, flat with 2 arenas). Two
# arenas let the measurement see leaks rather than fragmentation.
HARNESS_ENV = {"MALLOC_ARENA_MAX": "2"}

_skip = netns_unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_skip is not None, reason=f"loopback namespace: {_skip}")]


@pytest.fixture(scope="module")
def results() -> dict:
    proc = run_module_in_loopback_netns("tests.serve_harness", SCENARIOS, timeout=400, env=HARNESS_ENV)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads(lines[-1])
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "pose_before"} for k, v in out.items()},
                     indent=1, default=str))
    return out


def scenario(results: dict, name: str) -> dict:
    r = results[name]
    assert "error" not in r, r["error"]
    return r


@pytest.mark.timeout(420)
def test_browser_receives_frames_and_walks_forward(results):
    r = scenario(results, "walk")
    assert r["frames"] >= 60
    assert r["sizes"] == [[256, 144]] and r["video_size"] == [256, 144]
    assert r["codec"] in ("H264", "VP8")
    # holding W for a second walks forward (+z) on the server ...
    before, after = np.array(r["pose_before"]), np.array(r["pose_after"])
    step = after[:3, 3] - before[:3, 3]
    assert step[2] > 0.5 and abs(step[0]) < 0.05, step
    # ... the stats channel says so, and the frames the browser showed were made there
    assert r["stats_position_after"][2] - r["stats_position_before"][2] > 0.5
    assert r["stats_frame_advance"] > 20
    assert r["shown_position_after"][2] - r["shown_position_before"][2] > 0.5
    assert r["image_change"] > 1.0
    lat = r["latency_frame_ms"]
    assert lat["n"] >= 60 and 0 < lat["median"] < 3000
    assert r["latency_key_ms"]["to_generated_ms"] is not None
    # the server shut down with the page open: its peer connection closed, the page was told
    assert r["pcs_closed_on_shutdown"]
    assert r["page_state_after_shutdown"] == "ended" and "shut down" in r["page_status_after_shutdown"]


def test_two_independent_sessions_a_spectator_and_busy(results):
    r = scenario(results, "two_and_busy")
    a, b = r["sessions"]
    assert a != b
    assert r["a_moved"] > 0.3 and r["b_moved"] == 0.0  # only A's player walked
    assert r["spectator_role"] == "spectator" and r["spectator_moved_a"] == 0.0
    assert r["spectator_ignored"] >= 1
    assert len(r["spectator_frames"]) >= 3  # the spectator sees A's frames
    assert r["busy_state"] == "busy" and "busy" in r["busy_text"]
    assert r["sessions_during_busy"] == 2
    assert r["third_after_b_left"] not in (a, b)
    assert r["status"]["sessions"] == 0 and r["status"]["guests"] == 0


def test_malformed_messages_are_dropped_and_counted(results):
    r = scenario(results, "malformed")
    assert r["sent"] == 1000
    c = r["server_counters"]
    # every bad message is dropped and counted; a ping of the page's own that fell into the
    # flood may be rate-limited on top of them (and counted as such)
    assert 1000 <= c["dropped"] <= 1000 + c["reasons"].get("rate_limited", 0), c
    assert c["dropped"] - 1000 <= 2, c
    assert r["stats_dropped"] >= 1000  # the page hears the count over the stats channel
    assert r["frames_shown_during_1_5s_after"] >= 10  # still streaming
    assert r["session_error"] is None
    assert r["moved_after"] > 0.3  # and still steerable


def test_token_refused_at_signaling(results):
    r = scenario(results, "token")
    for label in ("missing", "wrong"):
        assert r[label]["state"] == "error" and r[label]["sessions"] == 0, r[label]
    assert r["right"]["state"] == "connected" and r["right"]["sessions"] == 1
    assert r["reconnect"] == {"new_session": True, "sessions": 1}


def test_gamepad_stick_walks(results):
    r = scenario(results, "gamepad")
    assert r["step"][2] > 0.3 and abs(r["step"][0]) < 0.05, r
    assert r["input"]["dropped"] == 0


def test_connect_disconnect_cycles_return_to_baseline(results):
    r = scenario(results, "cycles")
    base, after = r["baseline"], r["after"]
    assert r["status"]["opened"] == r["status"]["closed"] == r["n"] + 3
    assert after["named"] == base["named"]  # no model, recorder or pacing thread left behind
    assert after["os_threads"] <= base["os_threads"] + 2  # the asyncio executor may add a worker
    grew_mib = (after["rss_kib"] - base["rss_kib"]) / 1024
    assert grew_mib < CYCLES_RSS_TOLERANCE_MIB, f"RSS grew {grew_mib:.1f} MiB over {r['n']} cycles"
