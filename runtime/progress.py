"""Progress of slow work someone waits on before a walk can start: building accelerated graphs on a
first start (runtime/accel/apply.py `announce`). The console logs it; whoever listens in the current
context is told as well, e.g. the server, for the player whose world is being built:

    with listening(lambda p: send_to_page(p)):   # on the thread that builds the world
        world = create_world(cfg)                # warm_up -> announce -> Progress every second

A listener is called from a helper thread, so it must be thread-safe and quick (hand the message
to an event loop); a listener that raises is logged, never lets the build fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str  # what is under way: "accel-build"
    seconds: float  # since it began
    done: bool = False  # the last report of the stage: it finished (or failed) after `seconds`


Listener = Callable[[Progress], None]

_listener: ContextVar[Listener | None] = ContextVar("worldwalk_progress_listener", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Tell `listener` of slow work started in this context (this thread, or tasks it starts)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def current_listener() -> Listener | None:
    """The listener of this context; read it on the working thread, call it from any."""
    return _listener.get()
