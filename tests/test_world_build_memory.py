"""memory per world build. A server builds a world per player, so 500
reference-world builds and closes must give their memory back: RSS grows by less than 10 MB,
and no thread is left behind per world. (The world's own factory is called directly: the entry-
point lookup of `create_world` adds ~25 ms a build and nothing else.)"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from worldwalk.runtime.worlds.reference_world import create as create_world  # the `reference` entry point

from .builders import TINY_REFERENCE
from .server_probe import rss_mib

pytestmark = pytest.mark.gl  # every test here builds reference worlds (EGL)


def test_500_world_builds_and_closes_keep_rss_flat():
    cfg = TINY_REFERENCE
    for _ in range(20):  # warm-up: the GL driver, shader compiler and JIT, allocator pools
        world = create_world(cfg)
        world.generate_chunk(*_one_pose())
        world.close()
    gc.collect()
    threads = threading.active_count()
    base = rss_mib()
    t0 = time.monotonic()
    for i in range(500):
        world = create_world(cfg)
        if i % 100 == 0:  # now and then, a world that renders before it goes
            world.reset(seed=i)
            world.generate_chunk(*_one_pose())
        world.close()
    gc.collect()
    grew = rss_mib() - base
    print(f"500 builds: RSS grew {grew:.1f} MiB in {time.monotonic() - t0:.1f} s")
    assert grew < 10, f"RSS grew {grew:.1f} MiB over 500 reference-world builds and closes"
    assert threading.active_count() <= threads


def _one_pose():
    import numpy as np

    from worldwalk.controls.camera import intrinsics_from_fov

    return np.eye(4)[None], intrinsics_from_fov(64, 32)[None]
