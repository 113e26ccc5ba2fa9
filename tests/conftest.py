"""Shared test fixtures and helpers: one tiny SANA-WM (transformer, cameras, world), the headless-GL
skip, and reading a video file back (`decode_video`, `psnr`). Test modules import the helpers from
here (`from .conftest import ...`); fixtures arrive by name.

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

# ---------------------------------------------------------------------------------------------------
# The tiny SANA-WM: built one way for every test of the model, the stream and the accelerators
# ---------------------------------------------------------------------------------------------------

STRIDE, CHUNK = 4, 3  # video frames per latent frame; latent frames per chunk
LATENT_H, LATENT_W = 3, 4  # the tiny transformer's token grid (tiny_transformer / tiny_cameras)
WORLD_H, WORLD_W = 48, 64  # the tiny world's frames (16x VAE: a 3x4 latent grid)


def tiny_transformer(**overrides):
    """`SanaWMConfig.tiny()` transformer (fp32 softmax), seeded, with the zero-initialised camera and
    Plücker paths switched on so tests see them."""
    import torch

    from worldwalk.runtime.sana_wm import SanaWMConfig, SanaWMStreamingTransformer

    torch.manual_seed(0)
    cfg = SanaWMConfig.tiny(softmax_bf16=False, chunk_plucker_channels=6 * STRIDE, **overrides)
    m = SanaWMStreamingTransformer(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.abs().sum() == 0 or ("norm" in name and name.endswith("weight")):
                p.normal_(0.0, 0.2 if p.ndim < 2 else p.shape[-1] ** -0.5)
    return m


def tiny_cameras(chunks: int) -> list:
    """CameraInputs of `chunks` chunks on the tiny token grid: walking forward while turning."""
    from worldwalk.runtime.sana_wm.camera import build_camera_inputs

    frames = 1 + CHUNK * STRIDE * chunks
    poses, Ks = {}, {}
    for f in range(frames):
        a = 0.04 * f
        P = np.eye(4)
        P[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        P[:3, 3] = [0.03 * f, 0.0, 0.05 * f]
        poses[f], Ks[f] = P, np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    out = []
    for c in range(chunks):
        lat = list(range(0, 1 + CHUNK)) if c == 0 else list(range(1 + CHUNK * c, 1 + CHUNK * (c + 1)))
        out.append(build_camera_inputs(poses, Ks, lat, STRIDE, (LATENT_H * 16, LATENT_W * 16), (LATENT_H, LATENT_W)))
    return out


def tiny_world(softmax_bf16: bool = False, **run):
    """A random-init `SanaWM` of the tiny config with a small LTX-2 VAE: 64x48 frames, 13 then 12 a chunk.
    The softmax runs in fp32 (fast on a CPU) unless `softmax_bf16`, SANA-WM's own setting, which the
    checkpoint formats assume."""
    from worldwalk.runtime.sana_wm import SanaWMConfig
    from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig
    from worldwalk.runtime.sana_wm.vae import small_vae_config

    cfg = SanaWMConfig.tiny(softmax_bf16=softmax_bf16, chunk_plucker_channels=6 * STRIDE, in_channels=8)
    vae = small_vae_config(temporal_stride=STRIDE, latent_channels=8, width=8)
    return SanaWM.random_init(cfg, vae, SanaWMRunConfig(width=WORLD_W, height=WORLD_H, **run), seed=0)


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


def decode_video(path: Path | str) -> tuple[list[np.ndarray], list[float], object]:
    """(RGB frames, presentation times in seconds, the video stream) of a file, read with PyAV."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        images, times = [], []
        for f in c.decode(video=0):
            images.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
        return images, times, stream


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
