"""Matrix-Game played in a real browser: W held on the page reaches the world as its forward action, the
video keeps coming, and the page does not timewarp an action world's frames."""

from __future__ import annotations

import json

import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

_skip = netns_unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_skip is not None, reason=f"loopback namespace: {_skip}")]


@pytest.mark.timeout(180)
def test_matrix_game_is_played_from_the_page_without_timewarp():
    proc = run_module_in_loopback_netns("tests.page_matrix_game_harness", [], timeout=170)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(lines[-1])
    assert "error" not in r, r["error"]
    assert any(s.startswith("forward") for s in r["sent"]), r  # W reached the model as its action
    assert r["timewarp_on"] is False and not r["timewarp_active"], r
    assert r["frames"] >= 3, r
