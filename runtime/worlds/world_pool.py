"""`WorldPool`: one model per device, a light world per session over it.

`serve` and the cluster's session hosts give every player a world. Built whole each time, a world
brings its own copy of the weights and its own accelerated graphs or engines: 7.24 GiB of weights
(and about as much again in CUDA graphs) per player at SANA-WM's full size. The pool builds the world
once (`create_world`: weights, `--accel` graphs, warm-up) and hands each session a fork of it
(`SanaWM.fork`): the same transformer, VAE and graphs, with the session's own cache, noise, snapshots,
streams and decoder thread. Worlds that cannot fork (the reference world, which owns a GL context) are
built per session as before.

    pool = WorldPool(cfg.world)
    world = pool.session_world()   # first call builds the model (slow), later ones are light
                                   # (with batch=True they also share forwards: runtime/batching.py)
    ... world.close()              # frees the session's state; the model stays for the next one
    pool.close()                   # the model goes when the last session's world has gone
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from worldwalk.runtime.world import WorldConfig, WorldModel
from worldwalk.runtime.worlds import create_world

log = logging.getLogger(__name__)


class WorldPool:
    """`batch`: sessions in step share forwards too (runtime/batching.py: a chunk pass of every waiting session as
    one forward with a batch dimension), for an eager model; an accelerated one (`--accel`) runs its graphs per
    session instead."""

    def __init__(self, cfg: WorldConfig, batch: bool = False) -> None:
        self.cfg = cfg
        self.batch = batch
        self.batcher: Any = None
        self._lock = threading.Lock()  # one build at a time; later sessions wait for it, then fork
        self._model: Any = None  # the world whose model the sessions share (holds no session itself)
        self._forks: bool | None = None  # whether the world forks (known after the first build)
        self.builds = 0  # whole worlds built (1 for a forking world, one per session otherwise)
        self.forks = 0

    def session_world(self) -> WorldModel:
        """A world for one more session; the first call builds the model (and its graphs)."""
        if self._forks is False:  # nothing to share: each session builds its own, as many at once as asked
            return self._whole()
        with self._lock:
            if self._model is None:
                world = self._whole()
                if not callable(getattr(world, "fork", None)):
                    self._forks = False
                    return world  # this world is the session's own
                self._forks = True
                self._prepare_snapshots(world)
                try:
                    world.close()  # the warm-up's session state goes; the model stays
                except Exception:
                    log.exception("freeing the shared world's warm-up state failed")
                self._model = world
                if self.batch:
                    self.batcher = self._batcher(world)
            model = self._model
        twin = model.fork()
        self.forks += 1
        if self.batcher is not None:
            self.batcher.join(twin)  # its close() leaves the batch first
        return twin

    @staticmethod
    def _prepare_snapshots(world: Any) -> None:
        """Make the pinned arenas of the sessions' snapshots now, while the model is built (SanaWM.prepare_snapshots),
        so no session's chunk waits on the process's first `cudaHostRegister`; a no-op where snapshots are not
        copied (the CPU)."""
        prepare = getattr(world, "prepare_snapshots", None)
        if not callable(prepare):
            return
        try:
            made = prepare()
        except Exception:  # an optimisation: sessions still make their own arenas
            log.exception("preparing the snapshot arenas failed; sessions make their own")
            return
        if made:
            log.info("serve: %d snapshot arena(s) made before the first session", made)

    @staticmethod
    def _batcher(world: Any) -> Any:
        from worldwalk.runtime.batching import ForwardBatcher

        if getattr(world.rollout, "backend", None) is not None:
            log.warning("serve: sessions are not batched: the model's chunk step is accelerated (--accel %s); "
                        "batching runs eager forwards", getattr(world, "accel", "?"))
            return None
        return ForwardBatcher(world.rollout.transformer)

    def _whole(self) -> WorldModel:
        world = create_world(self.cfg)
        self.builds += 1
        return world

    @property
    def shared(self) -> Any:
        """The world whose model the sessions share (None before the first session, or when it cannot fork)."""
        return self._model

    def close(self) -> None:
        """Drop the pool's reference to the model: its memory goes once the last session's world is closed."""
        with self._lock:
            self._model = None
            if self.batcher is not None:
                self.batcher.close()
                self.batcher = None
