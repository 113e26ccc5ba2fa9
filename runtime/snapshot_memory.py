"""Where rewind snapshots live off the model's device, for every world: pinned host arenas from one pool
per process (`PinnedArenas`) and the copies into them and back (`HostCopies`).

A world's kept chunk boundary holds its caches; kept on the GPU, a session's snapshots would crowd out
the sessions themselves, so on CUDA they are copied to pinned host memory on a side stream, ordered after
the stream that made them, and copied back on restore (runtime/sana_wm/snapshots.py, runtime/matrix_game/
snapshots.py say what each world copies). On the CPU the same code runs without pinning.

Pinned memory comes from `PinnedArenas`, one pool per process: a snapshot's tensors are carved from one
arena (its bytes rounded up to 2 MiB, not each tensor to a power of two), arenas return to the pool when
their snapshot is dropped and are reused by any session, so `cudaHostRegister` runs only while the pool
grows (first while the world pool builds the model, then on a helper thread), and the pool never passes
its budget (`WORLDWALK_PINNED_BUDGET`, default half of the machine's memory) across all sessions. A
snapshot counts the arena bytes it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator

import torch

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


Move = Callable[[torch.Tensor | None], torch.Tensor | None]


class HostCopies:
    """Copies a world's snapshot tensors off its device into host memory, and back.

    On CUDA (`copies` by default) a snapshot's tensors are carved from one pinned arena of the process's
    pool (`process_arenas`) and copied on a side stream without blocking the caller; the event that marks
    their end travels with the snapshot, and a restore's copies wait for it. Without an arena (the pool's
    budget spent, or no pool: the CPU) a copy goes to a fresh pageable tensor. `copies=False` leaves the
    tensors where they are (a world whose host tensors are never written in place can share them). A
    world's store (its snapshot layout) builds on these steps."""

    def __init__(self, device: torch.device | str, arenas: PinnedArenas | None = None,
                 copies: bool | None = None) -> None:
        self.device = torch.device(device)
        self.cuda = _cuda(self.device)
        self.copies = self.cuda if copies is None else copies
        self.arenas = arenas if arenas is not None else (process_arenas() if self.cuda else None)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._warned = False

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

    def _mover(self, lease: Lease | None) -> Move:
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

    # ---- back onto the device ----
    def _dev(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or not self.copies or t.device == self.device:
            return t
        return t.to(self.device, non_blocking=True)

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
