"""`ServeConfig`: the settings of `worldwalk serve` (its flags and the config file), and what they mean."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from worldwalk.controls import Bindings, IntegratorConfig
from worldwalk.runtime.session import SessionConfig
from worldwalk.runtime.world import WorldConfig

from ..record.recorder import RecorderConfig
from .admission import AdmissionConfig, default_max_sessions
from .input_channel import InputChannelConfig
from .offer import OfferLimits
from .peer import PeerConfig, is_loopback_host
from .video_track import FanoutConfig


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (see StreamServer.port)
    world: WorldConfig = field(default_factory=WorldConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    controls: IntegratorConfig = field(default_factory=IntegratorConfig)
    bindings: Bindings = field(default_factory=Bindings)
    # players (worlds) at once, counting those being torn down; one more gets "busy". None: on a GPU what the
    # memory plan fits beside the shared model (admission.py:default_max_sessions), 4 on the CPU
    max_sessions: int | None = None
    max_connections: int = 64  # TCP connections open at once, idle ones included; more get HTTP 503
    max_connections_per_client: int = 16  # sockets open at once from one address (a tab: a few)
    max_sessions_per_client: int = 2  # players (worlds) at once from one address
    request_timeout: float = 5.0  # seconds from accept to a complete HTTP request; then the socket is closed
    max_spectators: int = 8  # per session
    batch_sessions: bool = False  # sessions in step share forwards of the one model (eager only; runtime/batching.py)
    idle_timeout: float = 300.0  # seconds without input before a player's session is freed
    connect_timeout: float = 30.0  # seconds from the websocket opening to a connected peer
    token: str | None = None
    require_token: bool | None = None  # None: required exactly when host is not loopback
    allowed_origins: list[str] = field(default_factory=list)
    peer: PeerConfig = field(default_factory=PeerConfig)
    offer: OfferLimits = field(default_factory=OfferLimits)
    input: InputChannelConfig = field(default_factory=InputChannelConfig)
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    stats_interval: float = 0.25  # seconds between stats messages on the data channel
    record_dir: str | None = None  # record each player's session: <dir>/session-<id>-<time>.mp4
    recorder: RecorderConfig = field(default_factory=RecorderConfig)  # how recordings encode ([recorder])

    def __post_init__(self) -> None:
        if self.max_sessions is None:
            self.max_sessions = default_max_sessions(self.world)
        self.admission_config()  # names a bad limit
        if self.require_token is None:
            self.require_token = self.token is not None or not is_loopback_host(self.host)
        if self.require_token and not self.token:
            self.token = secrets.token_urlsafe(16)

    def admission_config(self) -> AdmissionConfig:
        return AdmissionConfig(max_sessions=self.max_sessions, max_connections=self.max_connections,
                               max_connections_per_client=self.max_connections_per_client,
                               max_sessions_per_client=self.max_sessions_per_client)

