"""`MatrixGameSnapshot` and its store: a chunk boundary of a Matrix-Game session, kept in host memory.

A boundary holds copies of what the next block changes: every layer's self-attention, mouse and keyboard
windows (their tensors and fill counters), the VAE decoder's time cache, the raw action history and the
generator's state (2.2 GiB at full size in bf16, universal; memory.py plans it). The cross-attention keys
and values of the first image and the image condition never change in a session: a snapshot refers to the
live ones.

On CUDA the copies land in one pinned arena of the process's pool (runtime/snapshot_memory.py, shared with
SANA-WM) on a side stream, layer by layer, without blocking the model thread; the attention windows are
written in place by the next block, so each layer's first write waits (on the GPU, not on the host) for
that layer's copies only, and the copies overlap the layers before it. A restore waits for all of them and
copies back into fresh device tensors. On the CPU the same code copies
into pageable memory (or into unpinned arenas when the world is given a pool: tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from worldwalk.runtime.snapshot_memory import HostCopies, Lease, Move, PinnedArenas, arena_size, carved_bytes

from .cache import DiTCache, LayerCache, WindowKV
from .rollout import ImageCondition, RolloutState
from .vae import TimeCache


def _window(w: WindowKV | None, move: Move) -> WindowKV | None:
    return None if w is None else WindowKV(move(w.k), move(w.v), w.global_end, w.local_end)


def moved_state(state: RolloutState, move: Move, after_layer: Callable[[LayerCache], None] | None = None
                ) -> RolloutState:
    """`state` with each tensor a snapshot owns passed through `move`, layer by layer (`after_layer` is
    called with each layer of `state` once its windows are moved), then the decoder's time cache and the
    action history. The cross-attention K/V, the image condition and the generator state (already on the
    host) are kept as they are."""
    layers = []
    for c in state.cache.layers:
        layers.append(LayerCache(_window(c.self_kv, move), _window(c.mouse_kv, move), _window(c.keyboard_kv, move)))
        if after_layer is not None:
            after_layer(c)
    slots = [move(s) if isinstance(s, torch.Tensor) else s for s in state.vae_cache.slots]
    return replace(state, cache=DiTCache(layers, state.cache.cross), vae_cache=TimeCache(slots, 0),
                   keyboard=move(state.keyboard), mouse=move(state.mouse))


def owned_tensors(state: RolloutState) -> list[torch.Tensor]:
    """The tensors a snapshot copies, in the order they are carved from its arena."""
    out: list[torch.Tensor] = []

    def note(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is not None:
            out.append(t)
        return t

    moved_state(state, note)
    return out


def host_bytes(state: RolloutState) -> tuple[int, int]:
    """(bytes of the copies a snapshot of `state` keeps in pageable memory, pinned bytes its arena takes)."""
    tensors = owned_tensors(state)
    return sum(t.numel() * t.element_size() for t in tensors), arena_size(carved_bytes(tensors))


@dataclass
class MatrixGameSnapshot:
    """A chunk boundary of the world: its rollout's state in host memory and the chunk count. `nbytes`
    (the host bytes it holds: its arena's, or its copies') lets a session bound how many it keeps."""

    state: RolloutState
    chunk: int
    event: object = None  # CUDA event: the copies to the host are done
    host_bytes: int = 0
    leases: list[Lease] = field(default_factory=list)  # the pinned arena its tensors are carved from

    def nbytes(self) -> int:
        return self.host_bytes

    def __getstate__(self) -> dict:
        """What pickle keeps (the cluster's failover store): the copies finished, the event and the arena
        dropped, every tensor a compact host copy (one carved from an arena would pickle the whole arena),
        the shared cross-attention K/V and image condition too."""
        if self.event is not None:
            self.event.synchronize()
        compact = moved_state(self.state, lambda t: None if t is None else t.detach().to("cpu", copy=True))
        cross = compact.cache.cross
        cross = type(cross)([t.cpu() for t in cross.k], [t.cpu() for t in cross.v])
        condition = ImageCondition.ready([t.cpu() for t in self.state.condition.latents])
        state = dict(self.__dict__)
        state.update(state=replace(compact, cache=DiTCache(compact.cache.layers, cross), condition=condition),
                     event=None, leases=[])
        return state


class MatrixGameSnapshots(HostCopies):
    """Copies a Matrix-Game rollout's state off the device and back: always copies (the caches are written
    in place), into the process's pinned arenas on CUDA, `arenas` when given, else pageable memory."""

    def __init__(self, device: torch.device | str, arenas: PinnedArenas | None = None) -> None:
        super().__init__(device, arenas, copies=True)

    def offload(self, state: RolloutState, chunk: int) -> MatrixGameSnapshot:
        """A snapshot of the live `state` (`Rollout.live_state`), copied on the side stream on CUDA; the
        model's stream goes on, each layer's next write waiting for that layer's copies (`WindowKV.copying`)."""
        tensors = owned_tensors(state)
        lease = self._lease(tensors)
        with self._on_side(None) as info:
            host = moved_state(state, self._mover(lease), self._mark_copying if self.stream is not None else None)
        event = info.get("event")
        if event is not None and lease is not None:
            lease.events.append(event)
        nbytes = lease.arena.numel() if lease is not None else sum(t.numel() * t.element_size() for t in tensors)
        return MatrixGameSnapshot(host, chunk, event, nbytes, [] if lease is None else [lease])

    def _mark_copying(self, layer: LayerCache) -> None:
        """The layer's windows are written in place by the next block: its first write waits (on the GPU)
        for their copies, recorded here on the side stream. The decoder's time cache and the action history
        are replaced, never written in place: nothing waits for their copies but a restore."""
        ev = torch.cuda.Event()
        ev.record(self.stream)
        for w in (layer.self_kv, layer.mouse_kv, layer.keyboard_kv):
            if w is not None:
                w.copying = ev

    def restore(self, snap: MatrixGameSnapshot) -> RolloutState:
        """The snapshot's state in fresh tensors on the device (the snapshot stays as it was: it may be
        restored again); shared parts a pickle brought to the host go back to the device."""
        self._wait(snap.event)

        def back(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(self.device, non_blocking=True, copy=True)

        state = moved_state(snap.state, back)
        cross = state.cache.cross
        if any(t.device != self.device for t in cross.k):
            cross = type(cross)([t.to(self.device) for t in cross.k], [t.to(self.device) for t in cross.v])
        condition = state.condition
        if condition.latents and condition.latents[0].device != self.device:
            condition = ImageCondition.ready([t.to(self.device) for t in state.condition.latents])
        return replace(state, cache=DiTCache(state.cache.layers, cross), condition=condition)
