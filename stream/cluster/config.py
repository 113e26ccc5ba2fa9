"""`ClusterConfig`: how `worldwalk serve --cluster` lays sessions out on a Ray cluster.

The per-session settings (world, session, controls, peer, token, origins) are the single-process
server's own `ServeConfig`, so a session host runs exactly what `worldwalk serve` runs for one
player; this adds where and how many: replicas, their resources, sessions per replica,
autoscaling, how long a player waits for a free slot, and how often walks are snapshotted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worldwalk.stream.webrtc.server import ServeConfig

APP_NAME = "worldwalk"
NAMESPACE = "worldwalk"  # Ray namespace of the snapshot store (a detached named actor)
STORE_NAME = "worldwalk-snapshots"


@dataclass
class ClusterConfig:
    serve: ServeConfig = field(default_factory=ServeConfig)  # host/port: the gateway's HTTP address
    address: str | None = None  # Ray cluster to join ("auto", "HEAD:6379", "ray://..."); None: start one
    replicas: int = 1  # session hosts when autoscaling is off
    sessions_per_replica: int = 1  # they share one model (`worldwalk info --world sana-wm`: how many fit)
    num_gpus: float = 0.0  # per session-host replica (1 on GPU clusters)
    num_cpus: float = 1.0  # per session-host replica
    gateway_cpus: float = 0.25
    min_replicas: int | None = None  # both set: Ray Serve autoscales the session hosts
    max_replicas: int | None = None
    # seconds a player waits for a free slot before hearing "busy"; None: wait in line (the page
    # shows its place), as autoscaling adds replicas. A player resuming its walk waits in line for up
    # to resume_timeout instead
    admission_wait: float | None = 3.0
    snapshot_every: int = 1  # chunks between snapshots of a walk sent to the store
    records_kept: int = 256  # chunk records the store keeps per walk (status, failover checks)
    record_frame_hashes: bool = False  # sha256 of every frame in the records (tests; costly at 720p)
    # seconds a walk that lost its session host (died, drained) waits for its player; then it expires
    # (its snapshot, recording entry and spectator mail freed)
    resume_timeout: float = 60.0
    insecure: bool = False  # --insecure-cluster: start or join Ray without token authentication

    def __post_init__(self) -> None:
        if self.sessions_per_replica < 1:
            raise ValueError(f"sessions_per_replica must be at least 1, got {self.sessions_per_replica}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both --min-replicas and --max-replicas")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:  # type: ignore[operator]
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas} and {self.max_replicas}"
            )
        if not self.resume_timeout > 0:
            raise ValueError(f"resume_timeout must be positive, got {self.resume_timeout}")
        if self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {self.snapshot_every}")
        if self.autoscaling and self.admission_wait is not None:
            self.admission_wait = None  # with autoscaling a full cluster grows: players wait in line
        # one server per replica holds at most this many players; the gateway never sends more
        self.serve.max_sessions = self.sessions_per_replica

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    def host_options(self) -> dict[str, Any]:
        """Ray Serve deployment options of the session hosts."""
        from ray.serve.config import RequestRouterConfig

        from .routing import ROUTING_STATS_PERIOD_S, AvoidDraining

        opts: dict[str, Any] = {
            "max_ongoing_requests": self.sessions_per_replica,  # one long call per session
            "request_router_config": RequestRouterConfig(  # never a draining replica
                request_router_class=AvoidDraining, request_routing_stats_period_s=ROUTING_STATS_PERIOD_S),
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "health_check_period_s": 2.0,
            "graceful_shutdown_timeout_s": 20.0,  # a drain (Serve stopping a replica) moves its walks first
        }
        if self.autoscaling:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.sessions_per_replica,
                "upscale_delay_s": 2.0,
                "downscale_delay_s": 60.0,
            }
        else:
            opts["num_replicas"] = self.replicas
        return opts
