"""`ForwardBatcher`: the chunk steps of several sessions on one model, run as one forward with a batch dim.

Sessions of a SANA-WM-family world that share one transformer (one copy of the weights on the
device) each call the model 5 times a chunk (4 denoising passes, 1 cache write). Attached as their
rollout's `backend`, the batcher holds each call for at most `window` seconds and gathers the calls
that can go together: same pass shape (latent frames, grid, prompt length), same write flag, same
cache layout and the same absolute frame position (RoPE), i.e. sessions in step at the same chunk.
It stacks their inputs and caches along the batch dimension, runs the transformer once, and hands
each session its slice: its own velocity and, for the cache write, its own cache (compact copies, so
no session keeps the batch's tensors alive). Noise, poses, prompts and seeds stay per session (the
sampler and camera code run in each session's thread), and so does the VAE decode.

A session host builds one batcher per device and hands it every world it builds (`join`: the world
moves onto the shared transformer, and leaves the batch when it closes).

A call runs at once when every attached session is waiting (nothing more can join) or when its group
holds every attached session; otherwise when the window ends. Sessions not in step pay up to one
window per pass. The forward runs in the thread of the first caller of a group (the leader); on CUDA
the leader waits for each caller's stream (an event recorded when the call was made) and each caller
waits for the leader's forward (an event) before using its slice.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F


def _cuda(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_available()


def layout(obj: Any) -> Any:
    """A hashable description of the tensors in `obj` (shapes, dtypes, where None) and its plain values."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), obj.dtype, obj.device)
    if isinstance(obj, list | tuple):
        return ("L", *(layout(v) for v in obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__, *(layout(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
    return ("V", obj)


def stack(values: list[Any]) -> Any:
    """Concatenate same-layout values (tensors, tuples/lists, dataclasses of them) along dim 0."""
    v0 = values[0]
    if v0 is None:
        return None
    if isinstance(v0, torch.Tensor):
        return torch.cat(values, 0)
    if isinstance(v0, list | tuple):
        return type(v0)(stack([v[i] for v in values]) for i in range(len(v0)))
    if dataclasses.is_dataclass(v0) and not isinstance(v0, type):
        return dataclasses.replace(v0, **{f.name: stack([getattr(v, f.name) for v in values])
                                          for f in dataclasses.fields(v0) if f.init})
    return v0


def take(obj: Any, i: int, copy: bool) -> Any:
    """Row `i` (batch size 1) of a stacked value; `copy` makes compact tensors that own their memory."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        row = obj[i : i + 1]
        return row.clone(memory_format=torch.contiguous_format) if copy else row
    if isinstance(obj, list | tuple):
        return type(obj)(take(v, i, copy) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: take(getattr(obj, f.name), i, copy)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


_state = threading.local()  # .batch: sessions in the forward this thread is running (0 = not batching)
SMALL_ROWS = 64  # a linear layer with fewer rows than this per session runs session by session


def _rowwise(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook on each nn.Linear: inside a batched forward, a layer with few rows per session (timestep,
    prompt and per-frame gate projections) is recomputed session by session. Matrix kernels pick their
    blocking by the row count, so a handful of rows can round differently in a batch than alone; the
    token-sized layers do not (tested), and these small ones cost next to nothing twice."""
    n = getattr(_state, "batch", 0)
    x = inputs[0]
    if n <= 1 or x.shape[0] % n or x[: x.shape[0] // n].numel() // x.shape[-1] >= SMALL_ROWS:
        return None
    return torch.cat([F.linear(part, module.weight, module.bias) for part in x.chunk(n)], 0)


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))


@dataclasses.dataclass
class _Call:
    args: tuple  # (x, t, text, mask, camera, cache, write), batch size 1 each
    ready: Any = None  # CUDA event on the caller's stream
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: Any = None
    finished: Any = None  # CUDA event after the batched forward
    error: BaseException | None = None


class ForwardBatcher:
    def __init__(self, transformer: torch.nn.Module, window: float = 0.005) -> None:
        self.transformer = transformer
        self.window = window
        self.batches: Counter[int] = Counter()  # forwards run, by batch size
        self.timeouts = 0  # forwards that ran because the window ended (sessions not in step, or idle)
        self._cond = threading.Condition()
        self._groups: dict[Any, list[_Call]] = {}
        self._members = 0
        self._memo: tuple[list[Any], Any] | None = None  # (members' prompt/camera/cache, their stack)
        self._hooks = [m.register_forward_hook(_rowwise) for m in transformer.modules()
                       if isinstance(m, torch.nn.Linear)]

    # ---- sessions ----
    def attach(self, world: Any) -> None:
        """Route `world`'s chunk step through this batcher. The world must run on this transformer."""
        stream = world.rollout
        if stream.transformer is not self.transformer:
            raise ValueError("a batched session must run on the batcher's transformer: build the worlds on one "
                             "model (ForwardBatcher.share_weights(world) re-points a world with identical weights)")
        if stream.backend is not None and stream.backend is not self:
            raise ValueError("this world already has an accelerated chunk step (--accel): batch with --accel none")
        stream.backend = self
        with self._cond:
            self._members += 1

    def join(self, world: Any) -> Any:
        """For a session host: put a freshly built world on the shared model (same weights), batch it, and
        make its close() leave the batch first. Returns the world."""
        if world.rollout.transformer is not self.transformer:
            self.share_weights(world)
        self.attach(world)
        close = world.close

        def leave_then_close() -> None:
            self.detach(world)
            close()

        world.close = leave_then_close
        return world

    def detach(self, world: Any) -> None:
        if world.rollout.backend is self:
            world.rollout.backend = None
            with self._cond:
                self._members -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Remove the batcher's hooks from the transformer."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def share_weights(self, world: Any) -> None:
        """Make `world` run on this batcher's transformer (its own must hold the same weights)."""
        mine, theirs = self.transformer.state_dict(), world.rollout.transformer.state_dict()
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k].to(mine[k].device))
                                               for k in mine):
            raise ValueError("the world's transformer holds other weights than the batcher's")
        world.transformer = world.rollout.transformer = self.transformer

    # ---- the chunk step ----
    def __call__(self, x, t, text, mask, camera, cache, write):
        if x.shape[0] != 1:
            raise ValueError(f"batched sessions call with batch size 1, got {x.shape[0]}")
        call = _Call((x, t, text, mask, camera, cache, write))
        if _cuda(x):
            call.ready = torch.cuda.Event()
            call.ready.record()
        key = (bool(write), layout(x), layout(t), layout(text), layout(mask), layout(camera), layout(cache))
        with self._cond:
            group = self._groups.setdefault(key, [])
            group.append(call)
            self._cond.notify_all()
            leader = len(group) == 1
            if leader:
                deadline = time.monotonic() + self.window
                while True:
                    waiting = sum(len(g) for g in self._groups.values())
                    if len(group) >= self._members or waiting >= self._members:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.timeouts += 1
                        break
                    self._cond.wait(left)
                del self._groups[key]
        if leader:
            self._run(group)
        else:
            call.done.wait()
        if call.error is not None:
            raise call.error
        if call.finished is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(call.finished)
            for tensor in _tensors(call.result):
                tensor.record_stream(stream)
        return call.result

    @torch.no_grad()
    def _run(self, group: list[_Call]) -> None:
        try:
            if group[0].ready is not None:
                for c in group:
                    torch.cuda.current_stream().wait_event(c.ready)
            x, t, text, mask, camera, cache, write = group[0].args
            if len(group) == 1:
                results = [self.transformer(x, t, text, mask, camera, cache, write)]
            else:
                # prompt, camera and cache are the same objects in a chunk's 4 denoising passes: stacked once
                members = [c.args[2:6] for c in group]
                memo = self._memo
                if memo is not None and len(memo[0]) == len(members) and all(
                        a is b for ma, mb in zip(memo[0], members, strict=True) for a, b in zip(ma, mb, strict=True)):
                    shared = memo[1]
                else:
                    shared = tuple(stack([m[j] for m in members]) for j in range(4))
                    self._memo = None if write else (members, shared)
                xs, ts = stack([c.args[0] for c in group]), stack([c.args[1] for c in group])
                _state.batch = len(group)
                try:
                    out, new_cache = self.transformer(xs, ts, *shared, write)
                finally:
                    _state.batch = 0
                results = [(take(out, i, copy=False), take(new_cache, i, copy=True)) for i in range(len(group))]
                if write:
                    self._memo = None
            finished = None
            if group[0].ready is not None:
                finished = torch.cuda.Event()
                finished.record()
            self.batches[len(group)] += 1
            for c, r in zip(group, results, strict=True):
                c.result, c.finished = r, finished
        except BaseException as e:  # every caller of the group hears of it
            for c in group:
                c.error = e
        finally:
            for c in group:
                c.done.set()
