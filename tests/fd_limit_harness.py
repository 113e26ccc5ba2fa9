"""A `StreamServer` in a process of its own with a small open-file limit, for
tests/test_serve_idle_sockets.py.

    python -m tests.fd_limit_harness SOFT HARD [--fill]

Sets RLIMIT_NOFILE to (SOFT, HARD), starts a server on 127.0.0.1 (connection limits far above
what the files allow), prints {"port", "soft", "max_connections"} as one JSON line, and serves
until stdin closes. `--fill` then opens /dev/null until no descriptor is left, so every accept
fails, for `FILL_SECONDS`, and frees them again. Logging goes to stderr (WARNING and above).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys

from worldwalk.stream.webrtc.server import StreamServer

from .builders import serve_config

FILL_SECONDS = 3.0


async def main(soft: int, hard: int, fill: bool) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    cfg = serve_config(max_connections=100_000, max_connections_per_client=100_000)
    async with StreamServer(cfg) as server:
        print(json.dumps({"port": server.port, "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                          "max_connections": server.admission.cfg.max_connections}), flush=True)
        loop = asyncio.get_running_loop()
        if fill:
            await loop.run_in_executor(None, sys.stdin.readline)  # the test is ready
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            await asyncio.sleep(FILL_SECONDS)
            for fd in held:
                os.close(fd)
            print(json.dumps({"filled": len(held)}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), "--fill" in sys.argv))
