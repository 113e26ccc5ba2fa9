"""Shared test fixtures and helpers: the headless-GL skip and reading a video file back (`decode_video`,
`psnr`). Test modules import the helpers from here (`from .conftest import ...`); fixtures arrive by
name. What tests build (the tiny worlds, a ServeConfig, a clock, waits) is in tests/builders.py.

Markers (registered in pyproject.toml): `slow` (tens of seconds or more), `browser` (headless
Chromium), `gl` (an EGL/OpenGL context), `cluster` (a local Ray cluster). A fast run:
`python3 -m pytest -m "not slow and not browser and not gl and not cluster"`.

The suite runs on two pytest-xdist workers (pyproject's addopts: `-n 2 --dist loadgroup`; `-n 0` runs it
in one process). Each file runs whole on one worker, so a module's fixtures are made once; the files
that drive a browser, a window, a full disk or a cluster share one worker, so at most one such harness
runs at a time; each worker runs torch on one thread (two workers on two cores).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from worldwalk.controls import DEFAULT_FOV_DEG  # noqa: F401 (for the tests that import it from here)

T = TypeVar("T")

# files whose tests start a browser, an X server, a mount namespace or a Ray cluster (see the docstring)
HARNESS_FILES = {"test_cluster", "test_cluster_auth", "test_cluster_nodes", "test_serve_disk_full", "test_page",
                 "test_page_matrix_game", "test_page_timewarp", "test_play_hud", "test_play_window",
                 "test_play_window_fit", "test_matrix_game_window", "test_recorder_full_disk", "test_recording_agrees",
                 "test_serve_browser", "test_install", "test_cluster_matrix_game"}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.stem
        item.add_marker(pytest.mark.xdist_group("harness" if name in HARNESS_FILES else name))

@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run fastest on one torch thread, and a busy 2-core machine makes several
    threads stall each other at every operator."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------
# GL
# ---------------------------------------------------------------------------------------------------


def gl_or_skip(make: Callable[[], T]) -> T:
    """`make()` (something that needs a headless EGL context), or skip the test where there is none."""
    import moderngl

    from worldwalk.runtime.worlds.gl_context import GLUnavailableError

    try:
        return make()
    except (GLUnavailableError, moderngl.Error) as e:
        pytest.skip(f"no headless GL here: {e}")


# ---------------------------------------------------------------------------------------------------
# Video files
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoStreamInfo:
    """What a test checks of a file's video stream, read while the file was open (PyAV 18.1.1 on refuses a
    closed container's stream)."""

    width: int
    height: int
    average_rate: Fraction | None


def decode_video(path: Path | str) -> tuple[list[np.ndarray], list[float], VideoStreamInfo]:
    """(RGB frames, presentation times in seconds, the video stream's size and rate) of a file, read with PyAV."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        images, times = [], []
        for f in c.decode(video=0):
            images.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
        return images, times, VideoStreamInfo(stream.width, stream.height, stream.average_rate)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
