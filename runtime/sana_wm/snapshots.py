"""`SnapshotStore`: where rewind snapshots of a SANA-WM session live, and what each one costs.

A snapshot at a chunk boundary is the streaming cache plus the VAE decode state (about 1.6 GB at
704x1280 in bf16; memory.py measures it). Kept on the GPU, a session's snapshots would crowd out the
model, so on CUDA the store copies them to pinned host memory on a side stream, ordered after the
stream that made them, and copies them back on restore. The sink (chunk 0's softmax K/V, shared by
every snapshot of a session) is copied once. On the CPU the tensors already live in host memory and
are never modified in place (cache.py), so a snapshot shares them and nothing is copied; the byte
count is the same, so the session's memory budget (`SessionConfig.snapshot_budget_mb`) bounds the
number of snapshots the same way on both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import fields, replace

import torch

from .cache import ChunkKV, GDNCache, SoftmaxCache, StreamingCache
from .memory import reported_bytes
from .vae import DecodeState


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


class SnapshotStore:
    """Moves snapshot tensors off the model's device and back (a no-op on the CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = _cuda(device)
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self._sink: tuple[tuple[ChunkKV | None, ...], tuple[ChunkKV | None, ...]] | None = None  # (device, host)

    def reset(self) -> None:
        self._sink = None

    # ---- off the device ----
    def _host(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or not self.cuda or t.device.type != "cuda":
            return t
        h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        h.copy_(t, non_blocking=True)
        t.record_stream(self.stream)  # the allocator keeps t until the copy is done
        return h

    def offload_cache(self, cache: StreamingCache, after=None) -> tuple[StreamingCache, int, object]:
        """(cache in host memory, bytes this snapshot adds, event marking the copies' end or None).
        `after` is the CUDA stream that wrote the cache (the copies wait for it)."""
        sinks = tuple(b.sink if isinstance(b, SoftmaxCache) else None for b in cache.blocks)
        shared = self._sink is not None and all(a is b for a, b in zip(self._sink[0], sinks, strict=True))
        with self._on_side(after) as event:
            host_sinks = self._sink[1] if shared else tuple(_moved_kv(s, self._host) for s in sinks)
            self._sink = (sinks, host_sinks)
            blocks = [_moved_block(b, hs, self._host) for b, hs in zip(cache.blocks, host_sinks, strict=True)]
        out = StreamingCache(blocks, cache.frames, cache.chunks)
        own = reported_bytes(out) - (reported_bytes(host_sinks) if shared else 0)  # the sink is paid once
        return out, own, event.get("event")

    def offload_decode(self, state: DecodeState, after=None) -> tuple[DecodeState, int, object]:
        with self._on_side(after) as event:
            out = DecodeState({k: self._host(t) for k, t in state.tails.items()}, state.started)
        return out, state.nbytes(), event.get("event")

    # ---- back onto the device ----
    def _dev(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or not self.cuda or t.device.type == "cuda":
            return t
        return t.to(self.device, non_blocking=True)

    def restore_cache(self, cache: StreamingCache, event=None) -> StreamingCache:
        self._wait(event)
        if not self.cuda:
            return cache.snapshot()
        host_sinks = tuple(b.sink if isinstance(b, SoftmaxCache) else None for b in cache.blocks)
        dev_sinks = tuple(_moved_kv(s, self._dev) for s in host_sinks)
        blocks = [_moved_block(b, ds, self._dev) for b, ds in zip(cache.blocks, dev_sinks, strict=True)]
        self._sink = (dev_sinks, host_sinks)  # later snapshots reuse the host sink
        return StreamingCache(blocks, cache.frames, cache.chunks)

    def restore_decode(self, state: DecodeState, event=None) -> DecodeState:
        self._wait(event)
        return replace(state, tails={k: self._dev(t) for k, t in state.tails.items()})

    # ---- streams ----
    @contextlib.contextmanager
    def _on_side(self, after) -> Iterator[dict]:
        """Run the copies on the side stream, after `after` (the stream that made the tensors); yields a
        dict that holds the event marking their end once the block exits (CUDA only)."""
        info: dict = {}
        if self.stream is None:
            yield info
            return
        self.stream.wait_stream(after if after is not None else torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield info
        ev = torch.cuda.Event()
        ev.record(self.stream)
        info["event"] = ev

    def _wait(self, event) -> None:
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)


Move = Callable[[torch.Tensor | None], torch.Tensor | None]


def _moved_kv(kv: ChunkKV | None, move: Move) -> ChunkKV | None:
    return None if kv is None else ChunkKV(*(move(t) for t in (kv.k, kv.v, kv.cam_k, kv.cam_v)))


def _moved_block(b: GDNCache | SoftmaxCache, sink: ChunkKV | None, move: Move) -> GDNCache | SoftmaxCache:
    """`b` with every tensor moved, its sink replaced by `sink` (already moved, shared across snapshots)."""
    if isinstance(b, SoftmaxCache):
        return SoftmaxCache(sink, tuple(_moved_kv(kv, move) for kv in b.recent), move(b.ffn_tail))
    return GDNCache(**{f.name: move(getattr(b, f.name)) for f in fields(GDNCache)})
