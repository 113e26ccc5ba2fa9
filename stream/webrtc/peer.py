"""What each peer connection is built with: ICE servers, host-candidate addresses, codecs, bitrate.

aioice gathers host candidates from every interface address except loopback, so a browser on
a machine (or in a network namespace) with nothing but `lo` would get no candidate at all. The
server's `candidate_addresses` option replaces that list for its own peer connections: aioice
looks its module function `get_host_addresses` up at gathering time, and the hook installed
here answers from a context variable that `gather_with_addresses` sets around
`setLocalDescription`, so peer connections made elsewhere in the process keep aioice's default.

Codecs: the video transceiver is created before the browser's offer is applied, with H.264
first and VP8 after it, so the answer picks H.264 whenever the browser offers it.

Bitrate: aiortc's encoders follow the browser's bandwidth estimate (REMB) between bounds kept
as module constants of `aiortc.codecs.h264` / `.vpx`; `apply_bitrate` sets those bounds, for
the whole process (one server per process).
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender
from aiortc.codecs import h264, vpx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

AUTO = "auto"  # in candidate_addresses: aioice's own choice (every non-loopback address)


@dataclass
class IceServerConfig:
    """One STUN or TURN server, as the browser's RTCIceServer has it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None

    def to_aiortc(self) -> RTCIceServer:
        return RTCIceServer(urls=self.urls, username=self.username, credential=self.credential)

    def to_browser(self) -> dict:
        out: dict = {"urls": self.urls}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass
class PeerConfig:
    # no public STUN by default: aiortc's default would reach out to stun.l.google.com
    ice_servers: list[IceServerConfig] = field(default_factory=list)
    # host-candidate addresses; "auto" = aioice's choice, falling back to 127.0.0.1 when it
    # finds none (a loopback-only machine)
    candidate_addresses: list[str] = field(default_factory=lambda: [AUTO])
    codecs: tuple[str, ...] = ("video/H264", "video/VP8")  # in order of preference
    max_bitrate: int | None = None  # bits per second; None keeps aiortc's bounds

    def __post_init__(self) -> None:
        for a in self.candidate_addresses:
            if a != AUTO:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    raise ValueError(
                        f"candidate address {a!r} is not an IP address; give IPv4/IPv6 "
                        f"literals or {AUTO!r}"
                    ) from None


_addresses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "worldwalk_candidate_addresses", default=None
)
_aioice_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    wanted = _addresses.get()
    default = _aioice_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if wanted is None:
        return default
    out: list[str] = []
    for a in wanted:
        if a == AUTO:
            out += default or (["127.0.0.1"] if use_ipv4 else [])
            continue
        version = ipaddress.ip_address(a).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(a)
    return list(dict.fromkeys(out))


def install_candidate_hook() -> None:
    """Route aioice's host-address lookup through `_get_host_addresses` (idempotent)."""
    if aioice.ice.get_host_addresses is not _get_host_addresses:
        aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def gather_with_addresses(addresses: list[str]) -> Iterator[None]:
    """Within this block (and tasks started in it), peer connections gather on `addresses`."""
    install_candidate_hook()
    token = _addresses.set(list(addresses))
    try:
        yield
    finally:
        _addresses.reset(token)


def new_peer_connection(cfg: PeerConfig) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[s.to_aiortc() for s in cfg.ice_servers]))


def preferred_codecs(order: tuple[str, ...]) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs sorted by `order` (mime types); RTX kept, others after."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    rank = {m.lower(): i for i, m in enumerate(order)}
    known = [c for c in caps if c.mimeType.lower() in rank]
    known.sort(key=lambda c: rank[c.mimeType.lower()])
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return known + rtx


def add_video_transceiver(pc: RTCPeerConnection, cfg: PeerConfig) -> RTCRtpTransceiver:
    """A send-only video transceiver with our codec preference; call before setRemoteDescription
    so the browser's video m-line is matched to it and negotiated in our order."""
    transceiver = pc.addTransceiver("video", direction="sendonly")
    transceiver.setCodecPreferences(preferred_codecs(cfg.codecs))
    return transceiver


def apply_bitrate(max_bitrate: int | None) -> None:
    """Bound aiortc's H.264 and VP8 encoders to `max_bitrate` bits per second (process-wide)."""
    if max_bitrate is None:
        return
    if max_bitrate < 50_000:
        raise ValueError(f"max bitrate {max_bitrate} b/s is too low to carry video; use >= 50000")
    for mod in (h264, vpx):
        mod.MAX_BITRATE = max_bitrate
        mod.MIN_BITRATE = min(mod.MIN_BITRATE, max_bitrate)
        mod.DEFAULT_BITRATE = min(mod.DEFAULT_BITRATE, max_bitrate)


def is_loopback_host(host: str) -> bool:
    """True for addresses and names that only this machine can reach."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def answer_video_codec(sdp: str) -> str:
    """The codec the answer sends video with: the first payload type of its video m-line."""
    pt = None
    for line in sdp.splitlines():
        if line.startswith("m=video"):
            fields = line.split()
            pt = fields[3] if len(fields) > 3 else None
        elif pt is not None and line.startswith(f"a=rtpmap:{pt} "):
            return line.split()[1].split("/")[0]
    return ""
