"""Bytes a piece of streaming state reports against the bytes it actually keeps alive.

A tensor that is a view (a slice, `chunk`, `expand`, a transpose) keeps its whole storage alive: a cached
tail of 1 frame sliced from a 4-frame activation holds all 4. `reported_bytes` counts what the tensors
themselves span (numel x element size, what `nbytes()` methods report); `held_bytes` counts the distinct
storages behind them (what the allocator cannot free). Caches, decode states and snapshots must hold no
more than they report (tests/test_sana_wm_memory.py). Both work on the `meta` device, where full-size
shapes cost nothing, which is how the full-size memory table in the README is computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import torch


def tensors_in(obj: Any, _seen: set[int] | None = None) -> Iterator[torch.Tensor]:
    """Every tensor reachable through dataclasses, dicts, lists, tuples and finished futures."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v, seen)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from tensors_in(v, seen)
    elif isinstance(obj, Future):
        if obj.done() and obj.exception() is None:
            yield from tensors_in(obj.result(), seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensors_in(getattr(obj, f.name), seen)


def reported_bytes(*objs: Any) -> int:
    """Sum of numel x element size over the distinct tensors reachable from `objs`."""
    seen: set[int] = set()
    ts = [t for o in objs for t in tensors_in(o, seen)]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in ts}.values())


def held_bytes(*objs: Any) -> int:
    """Sum of storage sizes over the distinct storages reachable from `objs` (views count their base)."""
    storages: dict[int, int] = {}
    seen: set[int] = set()
    for o in objs:
        for t in tensors_in(o, seen):
            s = t.untyped_storage()
            storages[s._cdata] = s.nbytes()
    return sum(storages.values())


@dataclasses.dataclass
class StateBytes:
    """What one streaming session keeps between chunks (bytes): reported (numel) and held (storages)."""

    weights: int
    cache_reported: int
    cache_held: int
    decode_reported: int
    decode_held: int
    snapshot_reported: int  # one more rewind snapshot: the tensors it has that the live state does not
    snapshot_held: int  # ... and the storages it keeps alive that the live state does not
    sink: int = 0  # chunk 0's softmax K/V: in the cache, shared by every snapshot

    @property
    def snapshot_copy(self) -> int:
        """Bytes one snapshot takes as a copy off the device (SnapshotStore): cache less the sink + decode state."""
        return self.cache_reported - self.sink + self.decode_reported

    def rows(self) -> list[tuple[str, float, float]]:
        """(name, reported GB, held GB)."""
        g = 1e9
        return [
            ("weights", self.weights / g, self.weights / g),
            ("transformer cache", self.cache_reported / g, self.cache_held / g),
            ("VAE decode state", self.decode_reported / g, self.decode_held / g),
            ("per rewind snapshot", self.snapshot_reported / g, self.snapshot_held / g),
        ]


@torch.no_grad()
def measure_session_state(
    transformer: Any, vae: Any, height: int, width: int, chunks: int = 3, seed: int = 0
) -> StateBytes:
    """Run `chunks` chunks of a session (the stream and the VAE decode, no pixels to the host) on the
    modules' device and dtype, and count what the state between chunks reports and holds.

    On the `meta` device this costs nothing at full size. The snapshot figure is what a snapshot taken
    after chunk k-2 still holds once chunk k is done: the cache and decode tensors no later state shares.
    """
    from .camera import build_camera_inputs
    from .rollout import LatentRollout
    from .sampler import FlowSampler
    from .vae import DecodeState

    cfg = transformer.cfg
    dev, dtype = next(transformer.parameters()).device, transformer.dtype
    s, L = vae.temporal_stride, cfg.chunk_latent_frames
    hw = (height // vae.spatial_stride, width // vae.spatial_stride)
    stream = LatentRollout(transformer, FlowSampler())
    text = torch.zeros(1, cfg.caption_tokens, cfg.caption_channels, device=dev, dtype=dtype)
    stream.reset(text, torch.ones(1, cfg.caption_tokens, dtype=torch.bool, device=dev), seed)
    image = torch.zeros(1, vae.latent_channels, 1, *hw, device=dev, dtype=dtype)
    eye, K = torch.eye(4).double().numpy(), torch.tensor([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1.0]])
    decode, snaps = DecodeState(), []
    for k in range(chunks):
        first = 0 if k == 0 else 1 + L * k
        latents = list(range(first, 1 + L * (k + 1)))
        videos = range(0, 1 + L * s * (k + 1))
        cam = build_camera_inputs({i: eye for i in videos}, {i: K.numpy() for i in videos}, latents, s,
                                  (height, width), hw).to(dev, dtype)
        snaps.append((stream.snapshot(), decode))
        z = stream.step(cam, (1, vae.latent_channels, L, *hw), image if k == 0 else None)
        _, decode = vae.decode_chunk(z, decode)
        del z
    live = (stream.snapshot(), decode)
    old = snaps[-2] if len(snaps) >= 2 else snaps[-1]
    weights = sum(t.numel() * t.element_size() for m in (transformer, vae.vae) for t in m.state_dict().values())
    return StateBytes(
        weights=weights,
        cache_reported=stream.cache.nbytes(),
        cache_held=held_bytes(stream.cache),
        decode_reported=decode.nbytes(),
        decode_held=held_bytes(decode),
        snapshot_reported=reported_bytes(old, live) - reported_bytes(live),
        snapshot_held=held_bytes(old, live) - held_bytes(live),
        sink=reported_bytes([getattr(b, "sink", None) for b in stream.cache.blocks]),
    )
