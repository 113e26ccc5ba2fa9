"""`worldwalk bench` suite for the window's present path, on a headless EGL context.

Upload a 256x144 frame, draw it bicubic and timewarped into a 512x288 framebuffer (the default
window on a software renderer), and wait for the GPU (`finish`): what one display frame costs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def present(ctx: Any) -> None:
    from worldwalk.controls import intrinsics_from_fov, rotation
    from worldwalk.runtime.worlds.gl_context import create_headless_context

    from .presenter import Presenter, PresenterConfig, timewarp_homography

    gl = create_headless_context()
    with gl:
        fbo = gl.simple_framebuffer((512, 288))
        frames = np.random.default_rng(0).integers(0, 256, (8, 144, 256, 3), dtype=np.uint8)
        K = intrinsics_from_fov(256, 144)  # controls.DEFAULT_FOV_DEG
        pose = np.eye(4)
        held = np.eye(4)
        held[:3, :3] = rotation(0.05, 0.02)
        for filt in ("bicubic", "nearest"):
            presenter = Presenter(gl, PresenterConfig(filter=filt))
            warp = timewarp_homography(K, pose, held)
            times = []
            for i in range(40 if ctx.quick else 200):
                t0 = time.perf_counter()
                presenter.upload(frames[i % len(frames)])
                presenter.draw(fbo, warp=warp)
                gl.finish()
                times.append(time.perf_counter() - t0)
            times = times[5:]
            ctx.add_timings(f"present {filt} + timewarp 256x144 -> 512x288", times,
                            f"upload + mipmaps + draw, {gl.info['GL_RENDERER'][:24]}")
            ctx.add(f"present {filt} ceiling", 1 / float(np.median(times)), "frames/s", "display frames per second")
            presenter.release()
        fbo.release()
    gl.release()
