"""Work that is constant for a session or a chunk is done once: the prompt's cross-attention K/V (per
session, and again after a reset or a restore under another prompt), the camera inputs on the device and
their embedding (per chunk, shared by the four denoising passes and the cache write), and the FFN's
temporal conv computes only the frames it keeps. Each gives the numbers the repeated work gave, bit for bit
on the CPU in fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from worldwalk.runtime.accel.apply import AcceleratedStep, engine
from worldwalk.runtime.accel.onnx_export import CacheLayout
from worldwalk.runtime.sana_wm.camera import CameraInputs
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler

from .builders import CHUNK, LATENT_H, LATENT_W, tiny_cameras, tiny_transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE_T = CHUNK


def _prompt(tr, seed: int, tokens: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    text = torch.randn(1, tokens, tr.cfg.caption_channels, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(1, tokens, dtype=torch.bool)
    mask[:, -1] = False  # a padded token: the mask must travel with the cached K/V
    return text, mask


def _run(stream: LatentRollout, cams: list, start: int = 0) -> list[torch.Tensor]:
    tr = stream.transformer
    image = torch.randn(1, tr.cfg.in_channels, 1, LATENT_H, LATENT_W, generator=torch.Generator().manual_seed(2))
    shape = (1, tr.cfg.in_channels, CHUNK, LATENT_H, LATENT_W)
    return [stream.step(cam, shape, image if start + k == 0 else None) for k, cam in enumerate(cams)]


def _calls(module: torch.nn.Module, counter: list[int]):
    return module.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))


def _same_cache(a, b) -> None:
    assert a.frames == b.frames
    for x, y in zip(a.blocks, b.blocks, strict=True):
        for name in ("state", "norm_state", "cam_state", "k_tail", "cam_k_tail", "ffn_tail"):
            if getattr(y, name, None) is not None:
                assert torch.equal(getattr(x, name), getattr(y, name)), name
        if hasattr(y, "recent"):
            for p, q in zip(x.context(), y.context(), strict=True):
                assert torch.equal(p.k, q.k) and torch.equal(p.v, q.v) and torch.equal(p.cam_v, q.cam_v)


def test_prompt_kv_made_once_per_session_gives_the_same_latents():
    """The caption embedding and every block's cross-attention K/V are made once at reset (not in each of a
    chunk's 5 forwards); the latents and cache are bit for bit those of embedding the raw prompt every forward."""
    tr = tiny_transformer()
    cams = tiny_cameras(3)
    text, mask = _prompt(tr, 1)

    ref = LatentRollout(tr, FlowSampler())
    ref.reset(text, mask, seed=3)
    ref.backend = lambda x, t, _prompt, _mask, cam, cache, w: tr(x, t, text, mask, cam, cache, w)  # every forward
    want = _run(ref, cams)

    embeds, kv = [0], [0]
    hooks = [_calls(tr.y_embedder, embeds), _calls(tr.blocks[0].cross_attn.kv_linear, kv)]
    try:
        stream = LatentRollout(tr, FlowSampler())
        stream.reset(text, mask, seed=3)
        got = _run(stream, cams)
        assert embeds[0] == kv[0] == 1, "3 chunks of 5 forwards embedded the prompt more than once"
        got_cache = stream.cache

        # a reset with another prompt makes its K/V again; the old prompt's are not reused
        other = _prompt(tr, 9)
        stream.reset(*other, seed=3)
        assert embeds[0] == 2
        changed = _run(stream, cams[:1])[0]
    finally:
        for h in hooks:
            h.remove()
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    _same_cache(got_cache, ref.cache)
    fresh = LatentRollout(tr, FlowSampler())
    fresh.reset(*other, seed=3)
    assert torch.equal(changed, _run(fresh, cams[:1])[0]) and not torch.equal(changed, want[0])


def test_a_restore_brings_back_the_prompt_the_snapshot_was_taken_with():
    """Snapshot under prompt A, reset to prompt B, restore: the next chunk is the one prompt A gives (the
    restore makes A's cross-attention K/V again), not a mix of A's cache and B's prompt."""
    tr = tiny_transformer()
    cams = tiny_cameras(3)
    stream = LatentRollout(tr, FlowSampler())
    stream.reset(*_prompt(tr, 1), seed=3)
    _run(stream, cams[:2])
    snap = stream.snapshot()
    want = _run(stream, cams[2:], start=2)[0]

    stream.reset(*_prompt(tr, 9), seed=5)
    _run(stream, cams[:1])
    stream.restore(snap)
    assert torch.equal(_run(stream, cams[2:], start=2)[0], want)


def test_camera_inputs_moved_and_embedded_once_per_chunk(monkeypatch):
    """A chunk's camera inputs go to the device once and its Plücker embedding is made once for its 4
    denoising passes and its cache write (the write used to move them again, and so embed them again)."""
    tr = tiny_transformer()
    cams = tiny_cameras(3)
    text, mask = _prompt(tr, 1)
    ref = LatentRollout(tr, FlowSampler())
    ref.reset(text, mask, seed=3)
    tr.memo_chunk_inputs = False  # the reference recomputes the chunk's inputs in every forward
    want = _run(ref, cams)
    tr.memo_chunk_inputs = True

    moves, embeds = [0], [0]
    to = CameraInputs.to

    def counted_to(self, device, dtype):
        moves[0] += 1
        return to(self, device, dtype)

    monkeypatch.setattr(CameraInputs, "to", counted_to)
    hook = _calls(tr.plucker_embedder, embeds)
    try:
        stream = LatentRollout(tr, FlowSampler())
        stream.reset(text, mask, seed=3)
        got = _run(stream, cams)
    finally:
        hook.remove()
    assert moves[0] == embeds[0] == len(cams), (moves, embeds)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    _same_cache(stream.cache, ref.cache)


def test_accelerated_step_prepares_a_chunk_once(tmp_path, monkeypatch):
    """The fixed-shape step flattens the cache (a copy of all of it) and builds its inputs, the Plücker
    embedding among them, once per chunk for the 4 reads and the write alike (the write sees the same camera
    object as the reads; the embedding is an input of the graph, not a layer in it)."""
    tr = tiny_transformer()
    stream = LatentRollout(tr, FlowSampler())
    stream.backend = step = AcceleratedStep(tr, engine("flat", torch.device("cpu")), tmp_path)
    stream.reset(*_prompt(tr, 1), seed=3)
    flattens = [0]
    flatten = CacheLayout.flatten

    def counted(self, cache, home=0.0):
        flattens[0] += 1
        return flatten(self, cache, home)

    monkeypatch.setattr(CacheLayout, "flatten", counted)
    embeds, projected = [0], [0]
    hooks = [_calls(tr.plucker_embedder, embeds), _calls(tr.blocks[0].plucker_proj, projected)]
    try:
        _run(stream, tiny_cameras(3))
    finally:
        for h in hooks:
            h.remove()
    # chunks 1 and 2 run the step, chunk 0 is eager (its Plücker embedding and projections made once too)
    assert step.counts["accel"] == 2 * 5 and flattens[0] == 2 and embeds[0] == projected[0] == 3


@pytest.mark.parametrize("tail", [False, True])
def test_ffn_temporal_conv_computes_only_the_frames_it_keeps(tail):
    """The temporal conv of a chunk after the first runs over [tail, chunk, zero] and computes the chunk's T
    frames (it computed T + 1 and dropped one): the same sums as padding inside the conv, bit for bit."""
    mlp = tiny_transformer().blocks[0].mlp
    B, C, T, h, w = 1, mlp.t_conv.in_channels, SHAPE_T, LATENT_H, LATENT_W
    x = torch.randn(B, T * h * w, C, generator=torch.Generator().manual_seed(4))
    prev = torch.randn(B, C, mlp.pad, h * w, generator=torch.Generator().manual_seed(5)) if tail else None
    frames = []
    hook = mlp.t_conv.register_forward_hook(lambda m, i, o: frames.append(o.shape[2]))
    try:
        with torch.no_grad():
            got, new_tail = mlp(x, (T, h, w), prev)
    finally:
        hook.remove()
    assert frames == [T]

    # the former computation: the context padded inside the conv, the first frames dropped
    with torch.no_grad():
        y = mlp.depth_conv(mlp.inverted_conv(x.reshape(B * T, h, w, C).permute(0, 3, 1, 2)))
        value, gate = y.chunk(2, dim=1)
        y = mlp.point_conv(value * F.silu(gate)).view(B, T, C, h * w).permute(0, 2, 1, 3)
        ctx = torch.cat([prev, y], 2) if tail else y
        conv = F.conv2d(ctx, mlp.t_conv.weight, padding=(mlp.pad, 0))
        want = (y + conv[:, :, ctx.shape[2] - T :]).permute(0, 2, 3, 1).reshape(B, -1, C)
    assert conv.shape[2] == T + (mlp.pad if tail else 0)
    assert torch.equal(got, want) and torch.equal(new_tail, ctx[:, :, -mlp.pad :])


def test_the_prompt_context_holds_what_it_reports():
    """The session-long K/V are compact copies: V as a view of the (B, L, 2C) K/V projection would keep its
    K half alive beside the normed K (1.5x the bytes reported with the cross-attention k_norm)."""
    from worldwalk.runtime.sana_wm.memory import held_bytes, reported_bytes

    for cross_norm in (True, False):
        tr = tiny_transformer(cross_norm=cross_norm)
        prompt = tr.prompt_context(*_prompt(tr, 1, tokens=7))
        assert held_bytes(prompt.kv) == reported_bytes(prompt.kv) == prompt.nbytes() - prompt.mask.numel()


def _perturbed(world):
    """A tiny world whose zero-initialised Plücker and camera paths carry numbers (random init leaves them 0)."""
    with torch.no_grad():
        for p in world.rollout.transformer.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.2 if p.ndim < 2 else p.shape[-1] ** -0.5, generator=torch.Generator().manual_seed(1))
    return world


def test_plucker_projections_made_once_per_chunk():
    """Every block's `plucker_proj` runs once a chunk (at its first pass), not in each of its 4 denoising passes
    and its cache write; the latents and the cache are bit for bit those of projecting in every pass."""
    tr = tiny_transformer()
    cams = tiny_cameras(3)
    text, mask = _prompt(tr, 1)
    ref = LatentRollout(tr, FlowSampler())
    ref.reset(text, mask, seed=3)
    tr.memo_chunk_inputs = False  # the reference projects in every forward
    want = _run(ref, cams)
    tr.memo_chunk_inputs = True

    projected = [[0] for b in tr.blocks if hasattr(b, "plucker_proj")]
    assert projected, "the tiny config has Plücker blocks"
    hooks = [_calls(b.plucker_proj, n) for b, n in zip([b for b in tr.blocks if hasattr(b, "plucker_proj")],
                                                        projected, strict=True)]
    try:
        stream = LatentRollout(tr, FlowSampler())
        stream.reset(text, mask, seed=3)
        got = _run(stream, cams)
    finally:
        for h in hooks:
            h.remove()
    assert [n[0] for n in projected] == [len(cams)] * len(projected), projected
    assert tr._chunk_memo is None  # released once the chunk is written, not kept across chunks
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    _same_cache(stream.cache, ref.cache)


class _ContextCats(TorchDispatchMode):
    """Counts concatenations that read one of `storages` (the cached K/V a chunk attends to)."""

    def __init__(self, storages: set[int]) -> None:
        super().__init__()
        self.storages, self.count = storages, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.cat.default:
            if any(t.untyped_storage().data_ptr() in self.storages for t in args[0]):
                self.count += 1
        return func(*args, **(kwargs or {}))


def test_softmax_context_copied_once_per_chunk():
    """A softmax block's cached K/V (sink and window, main and camera branch) are copied into its attention
    context once a chunk, not in each of the chunk's 5 forwards; the latents are those of copying every pass."""
    tr = tiny_transformer()
    cams = tiny_cameras(4)
    text, mask = _prompt(tr, 1)
    ref = LatentRollout(tr, FlowSampler())
    ref.reset(text, mask, seed=3)
    tr.memo_chunk_inputs = False
    want = _run(ref, cams)
    tr.memo_chunk_inputs = True

    stream = LatentRollout(tr, FlowSampler())
    stream.reset(text, mask, seed=3)
    got = _run(stream, cams[:2])
    softmax = [b for b in stream.cache.blocks if hasattr(b, "recent")]
    assert softmax and all(b.recent for b in softmax), "chunk 2 reads a sink and a recent chunk"
    cached = {t.untyped_storage().data_ptr() for b in softmax for kv in b.context()
              for t in (kv.k, kv.v, kv.cam_k, kv.cam_v)}
    with _ContextCats(cached) as cats:
        got += _run(stream, cams[2:3], start=2)
    assert cats.count == 4 * len(softmax), cats.count  # k, v, camera k, camera v: once each, at the first pass
    got += _run(stream, cams[3:], start=3)
    assert tr._chunk_memo is None
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    _same_cache(stream.cache, ref.cache)


def test_frames_of_a_world_unchanged_by_making_chunk_inputs_once():
    """A tiny world's frames (and the decoded pixels) are bit for bit those of recomputing the Plücker
    projections and softmax contexts in every pass, on the CPU in fp32."""
    from .builders import tiny_world

    def frames(memo: bool) -> list:
        import numpy as np

        from worldwalk.controls.camera import DEFAULT_FOV_DEG, intrinsics_from_fov

        world = _perturbed(tiny_world())
        world.rollout.transformer.memo_chunk_inputs = memo
        K = intrinsics_from_fov(world.spec.width, world.spec.height, DEFAULT_FOV_DEG)
        world.reset(None, None, 4)
        out = []
        for k in range(4):
            n = world.spec.chunk_frames(k)
            poses = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
            poses[:, 0, 3] = 0.05 * np.arange(k * n, (k + 1) * n)
            out.append(world.generate_chunk(poses, np.broadcast_to(K, (n, 3, 3)).copy()).frames)
        world.close()
        return out

    import numpy as np

    for a, b in zip(frames(True), frames(False), strict=True):
        assert np.array_equal(a, b)
