"""The bundled model one step ahead of the truth (runtime/train/truth_context.py), on the shipped weights and the
reference world's renders: with no chunk from the truth it is a session exactly; with some, the chunks after
them see the truth's cache."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import gl_or_skip
from worldwalk.runtime.train.eval_command import generate
from worldwalk.runtime.train.scripted import landmark_ahead, scripted_path, start_poses
from worldwalk.runtime.train.truth_context import truth_context_frames
from worldwalk.runtime.train.walks import WalkConfig
from worldwalk.runtime.worlds.bundled_world import BundledWorld
from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

pytestmark = pytest.mark.gl


def test_no_chunk_from_the_truth_is_a_session_and_truth_chunks_change_what_follows(one_torch_thread):
    world = BundledWorld(threads=1)
    spec = world.spec
    cfg = WalkConfig(width=spec.width, height=spec.height, fps=spec.fps)
    n = 1 + 4 * 6  # the first image and 6 chunks of 4 frames
    K = np.broadcast_to(cfg.intrinsics(), (n, 3, 3)).copy()
    _, toward = start_poses(1, 0, landmark_ahead(cfg.world_seed), cfg)
    poses = scripted_path("toward-landmark", toward[0], n, cfg).poses
    ref = gl_or_skip(lambda: ReferenceWorld(ReferenceWorldConfig(width=spec.width, height=spec.height,
                                                                 seed=cfg.world_seed)))
    try:
        truth = ref.render_many(poses, K)
    finally:
        ref.close()
    session, _ = generate(world, truth[0], poses, K, seed=3)
    own = truth_context_frames(world, truth, poses, K, seed=3, truth_chunks=0)
    assert own.shape == session.shape == (n, spec.height, spec.width, 3)
    np.testing.assert_array_equal(own, session)

    forced = truth_context_frames(world, truth, poses, K, seed=3, truth_chunks=3)
    np.testing.assert_array_equal(forced[:5], session[:5])  # chunk 0 reads an empty cache either way
    for k in range(1, 6):  # every later chunk reads a cache written from the truth
        chunk = slice(1 + 4 * k, 5 + 4 * k)
        assert np.abs(forced[chunk].astype(int) - session[chunk]).mean() > 0.05, k
    world.close()
