"""A first start that builds accelerated graphs says so and shows progress (render, play and serve all
build them in `create_world` -> `warm_up`); a quick (cached) start stays silent."""

from __future__ import annotations

import logging
import time

from worldwalk.runtime.accel.announce import announce


def test_a_slow_build_is_announced_with_progress(caplog):
    caplog.set_level(logging.INFO, logger="worldwalk.runtime.accel.apply")
    with announce("accel: building graphs", first_after=0.05, every=0.1):
        time.sleep(0.45)
    text = [r.getMessage() for r in caplog.records]
    assert text[0] == "accel: building graphs ..."
    assert sum("still building" in t for t in text) >= 2, text
    assert "graphs ready in" in text[-1], text


def test_a_quick_start_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="worldwalk.runtime.accel.apply")
    with announce("accel: building graphs", first_after=0.5):
        time.sleep(0.01)
    assert caplog.records == []
