"""Key -> presented latency, step by step: when each step of a chunk happened (`ChunkTiming`,
stamped by the session) and one press's latency split into its steps (`LatencySplit`), as the
window's HUD, the page's stats and `worldwalk bench --suite latency` report it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ChunkTiming:
    """When each step of a chunk happened, on the input box's clock (time.monotonic()): the
    key -> screen latency broken down (`LatencySplit`)."""

    chunk_index: int
    generation: int
    planned: float  # the input timeline was read: the chunk's camera path was fixed
    model: float  # the world was asked for the chunk
    generated: float  # the world returned it, decoded
    decode_s: float  # of which the decode, when the world says (Chunk.timings["decode"])
    queued: float  # its frames are in the queue (after the chunk listeners ran)


@dataclass(frozen=True)
class LatencySplit:
    """One key -> presented latency, step by step (seconds; they add up to `total`).

    wait: the press waits for the next chunk to be planned (its input read).
    plan: planning to the model (snapshot, boundary listeners, path planning).
    generate: the world makes the chunk (all sampler steps, cache write), decode excluded.
    decode: the world's VAE decode, when it reports one.
    queue: the frame waits in the queue and for its turn at the content rate.
    display: from being taken for the screen to presented (upload, draw, flip).
    """

    wait: float
    plan: float
    generate: float
    decode: float
    queue: float
    display: float

    @property
    def total(self) -> float:
        return self.wait + self.plan + self.generate + self.decode + self.queue + self.display

    @classmethod
    def of(cls, press: float, timing: ChunkTiming, taken: float, presented: float) -> LatencySplit:
        """From the press time, the frame's chunk timing (`ChunkTiming`), the
        time the frame was taken for the screen and the time it was presented."""
        gen = timing.generated - timing.model
        decode = min(max(timing.decode_s, 0.0), gen)
        return cls(timing.planned - press, timing.model - timing.planned, gen - decode, decode,
                   taken - timing.generated, presented - taken)

    @staticmethod
    def median(splits: list[LatencySplit]) -> LatencySplit | None:
        """Step by step medians (they need not add up to the median total)."""
        if not splits:
            return None
        return LatencySplit(*(statistics.median(getattr(s, f.name) for s in splits) for f in fields(LatencySplit)))

    def text(self) -> str:
        """`wait 30 + plan 1 + gen 20 + dec 0 + queue 140 + show 9 ms`"""
        ms = [round(1000 * getattr(self, f.name)) for f in fields(self)]
        return "wait {} + plan {} + gen {} + dec {} + queue {} + show {} ms".format(*ms)
