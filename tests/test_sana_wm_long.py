"""Sessions of any length (frame positions past the RoPE table's end) and per-chunk inputs computed once."""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.sana_wm.rope import Rope3D

from .builders import tiny_transformer as _model
from .test_accel_builds import _stream_after

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_session_runs_past_the_rope_tables_end():
    """rope_max_seq_len=6 covers the 3x4 token grid but only 6 frame positions: 4 chunks reach frame 10."""
    tr = _model(rope_max_seq_len=6)
    stream = _stream_after(tr, 4)
    assert stream.cache.frames == 1 + 3 * 4 > tr.cfg.rope_max_seq_len
    assert all(torch.isfinite(b.state).all() for b in stream.cache.blocks if hasattr(b, "state"))


def test_chunk_rotations_are_the_rows_of_one_long_table():
    rope = Rope3D(32, 8)
    whole = rope(0, 40, 2, 3, torch.device("cpu"))  # 40 frames: past max_len
    part = rope(29, 5, 2, 3, torch.device("cpu"))
    assert torch.equal(part, whole[29 * 6 : 34 * 6])
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        rope(0, 1, 9, 3, torch.device("cpu"))  # the spatial grid is still bounded


def test_chunk_inputs_computed_once_give_the_same_outputs():
    """RoPE, UCPE and the Plücker embedding are computed once per chunk (its four denoising passes share
    one camera object): the latents and the cache are bit for bit those of computing them every pass."""
    tr = _model()
    tr.memo_chunk_inputs = False
    ref = _stream_after(tr, 3)
    tr.memo_chunk_inputs = True
    got = _stream_after(tr, 3)
    assert tr._chunk_memo is None  # kept for the chunk's passes, dropped once the chunk is written
    for a, b in zip(got.cache.blocks, ref.cache.blocks, strict=True):
        for name in ("state", "norm_state", "cam_state", "k_tail", "ffn_tail"):
            if getattr(b, name, None) is not None:
                assert torch.equal(getattr(a, name), getattr(b, name)), name
        if hasattr(b, "recent"):
            assert torch.equal(a.recent[-1].k, b.recent[-1].k) and torch.equal(a.sink.cam_v, b.sink.cam_v)
