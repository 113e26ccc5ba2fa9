"""The page in a real browser: the help panel never covers the click that starts the walk (a click
anywhere on the picture, the panel included, closes it and captures the mouse), and the browser's
/favicon.ico request is served, not a 404 in the console; while a first start builds the world's graphs
the status line says how long it has taken so far."""

from __future__ import annotations

import json

import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

_skip = netns_unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_skip is not None, reason=f"loopback namespace: {_skip}")]


@pytest.mark.timeout(150)
def test_the_first_click_starts_the_walk_and_the_icon_is_served():
    proc = run_module_in_loopback_netns("tests.page_harness", [], timeout=140)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(lines[-1])
    assert "error" not in r, r["error"]
    assert r["under_centre"] == "video", r  # the help panel is up, but not over the centre
    assert r["help_hidden_after_centre_click"] and r["locks_after_centre_click"] == 1, r
    assert r["help_hidden_after_panel_click"] and r["locks_after_panel_click"] == 2, r
    status, ctype, size = r["favicon"]
    assert status == 200 and ctype == "image/x-icon" and size > 100, r
    assert r["icon_link"], r
    progress = r["progress"]
    assert len(progress) >= 3 and progress[-1]["done"] and not progress[0]["done"], progress
    building = [t for t in r["status_texts"] if t.startswith("Building the model's accelerated graphs")]
    assert building and building[-1].endswith("s so far…"), r["status_texts"]
    assert any(t.startswith("Accelerated graphs ready after") for t in r["status_texts"]), r["status_texts"]
