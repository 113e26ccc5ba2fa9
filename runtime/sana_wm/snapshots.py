"""`SnapshotStore`: where rewind snapshots of a SANA-WM session live, and what each one costs.

A snapshot at a chunk boundary is the streaming cache plus the VAE decode state (about 1.2 GiB at
704x1280 in bf16; memory.py measures it). Kept on the GPU, a session's snapshots would crowd out the
model, so on CUDA the store copies them to pinned host memory on a side stream, ordered after the
stream that made them, and copies them back on restore. The sink (chunk 0's softmax K/V, shared by
every snapshot of a session) is copied once. On the CPU the tensors already live in host memory and
are never modified in place (cache.py), so a snapshot shares them and nothing is copied; the byte
count is the same, so the session's memory budget (`SessionConfig.snapshot_budget_mb`) bounds the
number of snapshots the same way on both.

The pinned arenas and the copies off the device and back are every world's (runtime/snapshot_memory.py:
`PinnedArenas`, `HostCopies`); this store adds SANA-WM's layout: a snapshot counts the arena bytes it holds.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from worldwalk.runtime.snapshot_memory import (
    HostCopies,
    Lease,
    Move,
    PinnedArenas,
)

from .cache import ChunkKV, GDNCache, SoftmaxCache, StreamingCache
from .memory import reported_bytes, tensors_in
from .vae import DecodeState


class SnapshotStore(HostCopies):
    """Moves SANA-WM snapshot tensors off the model's device and back (a no-op on the CPU).

    On CUDA every snapshot's tensors are carved from one pinned arena of the process's pool
    (`process_arenas`), the sink (shared by a session's snapshots) from one more; `nbytes` of a snapshot
    counts the arenas' bytes, the pinned memory it really holds. `copies=True` on the CPU runs the same
    copying path into unpinned arenas (tests)."""

    def __init__(self, device: torch.device, arenas: PinnedArenas | None = None, copies: bool | None = None) -> None:
        super().__init__(device, arenas, copies)
        # (device sinks, host sinks, the lease holding the host sinks)
        self._sink: tuple[tuple[ChunkKV | None, ...], tuple[ChunkKV | None, ...], Lease | None] | None = None

    def reset(self) -> None:
        self._sink = None

    def sink_lease(self) -> Lease | None:
        """The arena holding the session's host sink (a snapshot holds it while it refers to the sink)."""
        return None if self._sink is None else self._sink[2]

    def offload_cache(self, cache: StreamingCache, after=None) -> tuple[StreamingCache, int, object, list]:
        """(cache in host memory, bytes this snapshot adds, event marking the copies' end or None, the leases
        the snapshot must hold). `after` is the CUDA stream that wrote the cache (the copies wait for it)."""
        sinks = tuple(b.sink if isinstance(b, SoftmaxCache) else None for b in cache.blocks)
        shared = self._sink is not None and all(a is b for a, b in zip(self._sink[0], sinks, strict=True))
        leases: list[Lease] = []
        with self._on_side(after) as info:
            if shared:
                host_sinks, sink_lease = self._sink[1], self._sink[2]
            else:
                sink_lease = self._lease(list(tensors_in(sinks))) if self.copies else None
                host_sinks = tuple(_moved_kv(kv, self._mover(sink_lease)) for kv in sinks)
            self._sink = (sinks, host_sinks, sink_lease)
            rest = [_moved_block(b, None, lambda t: t) for b in cache.blocks]  # the tensors without the sinks
            own = self._lease(list(tensors_in(rest))) if self.copies else None
            move = self._mover(own)
            blocks = [_moved_block(b, hs, move) for b, hs in zip(cache.blocks, host_sinks, strict=True)]
        out = StreamingCache(blocks, cache.frames, cache.chunks)
        for lease in (sink_lease, own):
            if lease is not None:
                leases.append(lease)
                if "event" in info:
                    lease.events.append(info["event"])
        if own is not None:
            nbytes = own.arena.numel() + (0 if shared or sink_lease is None else sink_lease.arena.numel())
        else:
            nbytes = reported_bytes(out) - (reported_bytes(host_sinks) if shared else 0)  # the sink is paid once
        return out, nbytes, info.get("event"), leases

    def offload_decode(self, state: DecodeState, after=None) -> tuple[DecodeState, int, object, list]:
        lease = self._lease(list(state.tails.values())) if self.copies else None
        with self._on_side(after) as info:
            move = self._mover(lease)
            out = DecodeState({k: move(t) for k, t in state.tails.items()}, state.started)
        if lease is None:
            return out, state.nbytes(), info.get("event"), []
        if "event" in info:
            lease.events.append(info["event"])
        return out, lease.arena.numel(), info.get("event"), [lease]

    def restore_cache(self, cache: StreamingCache, event=None, sink_lease: Lease | None = None) -> StreamingCache:
        """The cache on the device; `sink_lease` holds the snapshot's host sink (later snapshots reuse it)."""
        self._wait(event)
        if not self.copies:
            return cache.snapshot()
        host_sinks = tuple(b.sink if isinstance(b, SoftmaxCache) else None for b in cache.blocks)
        dev_sinks = tuple(_moved_kv(s, self._dev) for s in host_sinks)
        blocks = [_moved_block(b, ds, self._dev) for b, ds in zip(cache.blocks, dev_sinks, strict=True)]
        self._sink = (dev_sinks, host_sinks, sink_lease)  # later snapshots reuse the host sink
        return StreamingCache(blocks, cache.frames, cache.chunks)

    def restore_decode(self, state: DecodeState, event=None) -> DecodeState:
        self._wait(event)
        return replace(state, tails={k: self._dev(t) for k, t in state.tails.items()})

def _moved_kv(kv: ChunkKV | None, move: Move) -> ChunkKV | None:
    return None if kv is None else ChunkKV(*(move(t) for t in (kv.k, kv.v, kv.cam_k, kv.cam_v)))


def _moved_block(b: GDNCache | SoftmaxCache, sink: ChunkKV | None, move: Move) -> GDNCache | SoftmaxCache:
    """`b` with every tensor moved, its sink replaced by `sink` (already moved, shared across snapshots)."""
    if isinstance(b, SoftmaxCache):
        return SoftmaxCache(sink, tuple(_moved_kv(kv, move) for kv in b.recent), move(b.ffn_tail))
    return GDNCache(**{f.name: move(getattr(b, f.name)) for f in fields(GDNCache)})
