"""`AvoidDraining`: how the gateway's calls pick a session host: Ray Serve's "power of two
choices" (two replicas at random, the one with the shorter queue that has a free slot), leaving
out replicas that drain.

A draining replica (`worldwalk cluster drain`, or Serve stopping it) takes no new sessions: it
says so in its routing stats (`SessionHost.record_routing_stats`, sent to the routers every
`ROUTING_STATS_PERIOD_S`), and this router never picks it, although, its sessions handed off, it
looks like the emptiest replica. Until its stats arrive, a call that lands there is answered
"draining" and the gateway asks again.
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

ROUTING_STATS_PERIOD_S = 1.0


class AvoidDraining(FIFOMixin, RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        live = [r for r in candidate_replicas if not _stats(r).get("draining")]
        return [random.sample(live, min(2, len(live)))] if live else []


def _stats(replica: RunningReplica) -> dict[str, Any]:
    return getattr(replica, "routing_stats", None) or {}
