"""`announce`: a long graph build is never silent. It says what is being built once it takes a while,
how long it has taken as it goes, and when it is done, on the log and to the context's progress
listener (runtime/progress.py: a server tells the waiting page)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from worldwalk.runtime.progress import Progress, current_listener

log = logging.getLogger("worldwalk.runtime.accel.apply")


@contextlib.contextmanager
def announce(what: str, first_after: float = 2.0, every: float = 10.0, tell_every: float = 1.0) -> Iterator[None]:
    """Say `what` is happening when it takes longer than `first_after` seconds, then how long it has
    taken every `every` seconds, and when it is done: a first start that builds graphs is not silent.
    The context's progress listener (runtime/progress.py: a server, for the page) hears from it every
    `tell_every` seconds from `first_after` on, and once more when it is done."""
    done = threading.Event()
    t0 = time.perf_counter()
    listener = current_listener()  # read here: the ticker thread has its own context

    def tell(finished: bool = False) -> None:
        if listener is None:
            return
        try:
            listener(Progress("accel-build", time.perf_counter() - t0, finished))
        except Exception as e:  # the build goes on; the waiting player just hears less
            log.warning("accel: a progress listener failed: %s: %s", type(e).__name__, e)

    def tick() -> None:
        if done.wait(first_after):
            return
        log.info("%s ...", what)
        tell()
        next_log = first_after + every
        while not done.wait(min(every, tell_every)):
            tell()
            if time.perf_counter() - t0 >= next_log:
                log.info("... still building (%.0f s so far)", time.perf_counter() - t0)
                next_log += every

    thread = threading.Thread(target=tick, name="accel-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if time.perf_counter() - t0 > first_after:
            log.info("accel: graphs ready in %.1f s (cached on disk: later starts load them)", time.perf_counter() - t0)
            tell(finished=True)
