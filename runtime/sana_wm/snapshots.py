"""`SnapshotStore`: where rewind snapshots of a SANA-WM session live, and what each one costs.

A snapshot at a chunk boundary is the streaming cache plus the VAE decode state (about 1.2 GiB at
704x1280 in bf16; memory.py measures it). Kept on the GPU, a session's snapshots would crowd out the
model, so on CUDA the store copies them to pinned host memory on a side stream, ordered after the
stream that made them, and copies them back on restore. The sink (chunk 0's softmax K/V, shared by
every snapshot of a session) is copied once. On the CPU the tensors already live in host memory and
are never modified in place (cache.py), so a snapshot shares them and nothing is copied; the byte
count is the same, so the session's memory budget (`SessionConfig.snapshot_budget_mb`) bounds the
number of snapshots the same way on both.

Pinned memory comes from `PinnedArenas`, one pool per process: a snapshot's tensors are carved from one
arena (its bytes rounded up to 2 MiB, not each of its ~115 tensors to a power of two), arenas return
to the pool when their snapshot is dropped and are reused by any session, so `cudaHostRegister` runs
only while the pool grows (first while the world pool builds the model, then on a helper thread), and the
pool never passes its budget (`WORLDWALK_PINNED_BUDGET`, default half of the machine's memory) across all
sessions. A snapshot counts the arena bytes it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import fields, replace

import torch

from .cache import ChunkKV, GDNCache, SoftmaxCache, StreamingCache
from .memory import reported_bytes, tensors_in
from .vae import DecodeState

ARENA_GRANULE = 2 << 20  # arenas are sized in 2 MiB steps (the pages cudaHostRegister pins)
ALIGN = 256  # every tensor carved from an arena starts on a 256-byte boundary


def arena_size(nbytes: int) -> int:
    """The pinned bytes an arena for `nbytes` of tensors takes: rounded up to 2 MiB. (torch's pinned host
    allocator would round every tensor to a power of two: 1.21 GiB of snapshot becomes about 1.57 GiB.)"""
    return max(ARENA_GRANULE, -(-int(nbytes) // ARENA_GRANULE) * ARENA_GRANULE)


def pinned_budget() -> int:
    """Pinned host memory the snapshots of this process may take, all sessions together:
    `WORLDWALK_PINNED_BUDGET` (e.g. 64GiB), else half of the machine's memory."""
    text = os.environ.get("WORLDWALK_PINNED_BUDGET", "").strip()
    if text:
        from worldwalk.runtime.byte_sizes import parse_bytes

        return parse_bytes(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 16 << 30


class Lease:
    """One arena lent to a snapshot: given back to the pool when the last holder lets go of the lease
    (a snapshot, or a session store that reuses the sink it holds). `events`: CUDA events the copies into
    the arena recorded; the arena's next user waits for them before writing into it."""

    def __init__(self, pool: PinnedArenas, arena: torch.Tensor, waits: list) -> None:
        self.arena = arena
        self.waits = waits  # the events of the arena's last user: copies into it wait for them
        self.events: list = []  # this user's copies (the next user waits for them)
        self.offset = 0
        self._finalizer = weakref.finalize(self, pool._give, arena, self.events)

    def carve(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor of `t`'s shape and dtype in the arena's next free bytes."""
        n = t.numel() * t.element_size()
        start = -(-self.offset // ALIGN) * ALIGN
        if start + n > self.arena.numel():
            raise RuntimeError(f"arena of {self.arena.numel()} bytes is too small for {start + n}")
        self.offset = start + n
        return self.arena[start : start + n].view(t.dtype).view(t.shape)


def carved_bytes(tensors) -> int:
    """Arena bytes a list of tensors takes, each aligned as `Lease.carve` places it."""
    total = 0
    for t in tensors:
        total = -(-total // ALIGN) * ALIGN + t.numel() * t.element_size()
    return total


class PinnedArenas:
    """Pinned host arenas for snapshots, kept for reuse by every session of a process within one budget.

    A snapshot takes one arena (its tensors are carved from it), so it costs one `cudaHostRegister` the
    first time an arena of its size is needed and none after: arenas go back to the pool when their
    snapshot is dropped, and the next snapshot of any session reuses them; one spare arena of the size last
    taken is made ahead on a helper thread, so a session's snapshots do not pin memory on the model thread;
    the process's first arenas of each size are made while the world pool builds the model
    (`SanaWM.prepare_snapshots`), before any session runs. `take` returns None when a new
    arena would pass the budget (free arenas of other sizes are dropped first); the store then copies into
    pageable memory, slower but bounded by the sessions' own snapshot budgets."""

    def __init__(self, budget: int | None = None, pin: bool = True, spare: bool = True) -> None:
        self.budget = pinned_budget() if budget is None else int(budget)
        self.pin = pin and torch.cuda.is_available()
        self._lock = threading.Lock()
        self._free: dict[int, list[tuple[torch.Tensor, list]]] = {}
        self.allocated = 0  # bytes of every arena made and not dropped (lent or free)
        self.lent = 0
        self.allocations = 0  # arenas made (each a cudaHostRegister on CUDA)
        self.refused = 0
        self.spare = spare  # keep one free arena of the last size taken, made on a helper thread
        self._making: set[int] = set()
        self.made_on: list[str] = []  # the thread each arena was made on (tests)

    def take(self, nbytes: int) -> Lease | None:
        size = arena_size(nbytes)
        lease = self._take(size)
        if lease is not None and self.spare:
            self._keep_spare(size)
        return lease

    def _keep_spare(self, size: int) -> None:
        """Have one free arena of `size` ready for the next snapshot, made on a helper thread (a session's
        first snapshots then do not pay the pinning on the model thread), within the budget."""
        with self._lock:
            if self._free.get(size) or size in self._making or self.allocated + size > self.budget:
                return
            self._making.add(size)
            self.allocated += size
            self.allocations += 1

        def make() -> None:
            try:
                arena = self._new(size)
            except Exception:  # a spare is a nicety: the next take makes its own
                with self._lock:
                    self.allocated -= size
                    self._making.discard(size)
                return
            with self._lock:
                self._free.setdefault(size, []).append((arena, []))
                self._making.discard(size)

        threading.Thread(target=make, name="pinned-arena", daemon=True).start()

    def _new(self, size: int) -> torch.Tensor:
        arena = torch.empty(size, dtype=torch.uint8)
        if self.pin:
            _check(torch.cuda.cudart().cudaHostRegister(arena.data_ptr(), size, 0), "cudaHostRegister")
        self.made_on.append(threading.current_thread().name)
        return arena

    def _take(self, size: int) -> Lease | None:
        with self._lock:
            free = self._free.get(size)
            if free:
                arena, events = free.pop()
                self.lent += size
                return Lease(self, arena, events)
            dropped = []
            while self.allocated + size > self.budget:
                other = next((k for k, v in self._free.items() if v), None)
                if other is None:
                    break
                dropped.append(self._free[other].pop()[0])
                self.allocated -= other
            if self.allocated + size > self.budget:
                self.refused += 1
                return None
            self.allocated += size
            self.lent += size
            self.allocations += 1
        for a in dropped:
            self._unpin(a)
        return Lease(self, self._new(size), [])

    def _give(self, arena: torch.Tensor, events: list) -> None:
        with self._lock:
            self._free.setdefault(arena.numel(), []).append((arena, events))
            self.lent -= arena.numel()

    def _unpin(self, arena: torch.Tensor) -> None:
        if self.pin:
            torch.cuda.synchronize()  # no copy may still use it
            torch.cuda.cudart().cudaHostUnregister(arena.data_ptr())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"allocated": self.allocated, "lent": self.lent, "allocations": self.allocations,
                    "refused": self.refused, "budget": self.budget}


def _check(err, what: str) -> None:
    code = getattr(err, "value", err)
    if code not in (0, None):
        raise RuntimeError(f"{what} failed with CUDA error {code}")


_PROCESS_ARENAS: PinnedArenas | None = None
_PROCESS_LOCK = threading.Lock()


def process_arenas() -> PinnedArenas:
    """The pinned arenas every session of this process shares (made on first use)."""
    global _PROCESS_ARENAS
    with _PROCESS_LOCK:
        if _PROCESS_ARENAS is None:
            _PROCESS_ARENAS = PinnedArenas()
        return _PROCESS_ARENAS


log = logging.getLogger(__name__)


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


class SnapshotStore:
    """Moves snapshot tensors off the model's device and back (a no-op on the CPU).

    On CUDA every snapshot's tensors are carved from one pinned arena of the process's pool
    (`process_arenas`), the sink (shared by a session's snapshots) from one more; `nbytes` of a snapshot
    counts the arenas' bytes, the pinned memory it really holds. `copies=True` on the CPU runs the same
    copying path into unpinned arenas (tests)."""

    def __init__(self, device: torch.device, arenas: PinnedArenas | None = None, copies: bool | None = None) -> None:
        self.device = device
        self.cuda = _cuda(device)
        self.copies = self.cuda if copies is None else copies
        self.arenas = arenas if arenas is not None else (process_arenas() if self.cuda else None)
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        # (device sinks, host sinks, the lease holding the host sinks)
        self._sink: tuple[tuple[ChunkKV | None, ...], tuple[ChunkKV | None, ...], Lease | None] | None = None
        self._warned = False

    def reset(self) -> None:
        self._sink = None

    def sink_lease(self) -> Lease | None:
        """The arena holding the session's host sink (a snapshot holds it while it refers to the sink)."""
        return None if self._sink is None else self._sink[2]

    # ---- off the device ----
    def _lease(self, tensors: list[torch.Tensor]) -> Lease | None:
        """An arena for `tensors` (None: the pool's budget is spent, or nothing to copy)."""
        if not tensors or self.arenas is None:
            return None
        lease = self.arenas.take(carved_bytes(tensors))
        if lease is None and not self._warned:
            self._warned = True
            log.warning("snapshots: the pinned budget of %.1f GB is spent (WORLDWALK_PINNED_BUDGET); this session's "
                        "snapshots go to pageable memory (slower copies)", self.arenas.budget / 1e9)
        if lease is not None and self.stream is not None:
            for ev in lease.waits:  # the arena's last copies are done before new ones land in it
                self.stream.wait_event(ev)
        return lease

    def _mover(self, lease: Lease | None) -> Callable[[torch.Tensor | None], torch.Tensor | None]:
        def host(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or not self.copies or t.device.type == "meta":
                return t
            if t.device.type == "cpu" and self.cuda:
                return t
            h = lease.carve(t) if lease is not None else torch.empty(t.shape, dtype=t.dtype)
            h.copy_(t, non_blocking=self.cuda and lease is not None)
            if self.stream is not None and t.is_cuda:
                t.record_stream(self.stream)  # the allocator keeps t until the copy is done
            return h

        return host

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

    # ---- back onto the device ----
    def _dev(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or not self.copies or t.device == self.device:
            return t
        return t.to(self.device, non_blocking=True)

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
