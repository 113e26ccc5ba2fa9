"""Checking a browser's SDP offer before anything acts on it.

An offer is untrusted text that makes the server do work: aiortc parses it on the event loop and
aioice sends connectivity checks to every candidate it lists (4,000 `a=candidate` lines once
made the server send 6,724 STUN requests for 33 s and stalled the loop). `check_offer` bounds it
first, in linear time with plain string operations: its size and line count, the media sections
the page sends (exactly one video and one data channel, nothing else), and the number of remote
candidates. Candidates trickled later are not accepted at all (the server reads nothing after
the offer but the socket closing), so the cap in the offer is the whole budget.

A refused offer raises `BadOffer` with a short, fixed reason the client may see.
"""

from __future__ import annotations

from dataclasses import dataclass

# the largest websocket message signaling takes (an SDP offer is a few KiB): `serve`'s websocket limit,
# the cluster proxy's (cluster/proxy_limits.py) and the gateway's
MAX_SIGNALING_BYTES = 256 * 1024


@dataclass
class OfferLimits:
    max_bytes: int = 32 * 1024  # a browser's offer is 4-8 KiB
    max_lines: int = 600
    max_line_bytes: int = 2048
    max_candidates: int = 16  # remote ICE candidates; a browser lists a few per interface


class BadOffer(ValueError):
    """An offer refused before use; `reason` is short and safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_offer(sdp: object, limits: OfferLimits | None = None) -> str:
    """The offer's SDP if it is within `limits` and has the expected media, else BadOffer."""
    lim = limits or OfferLimits()
    if not isinstance(sdp, str):
        raise BadOffer("the offer's sdp must be a string")
    if len(sdp) > lim.max_bytes or len(sdp.encode("utf-8", "surrogatepass")) > lim.max_bytes:
        raise BadOffer(f"the offer is larger than {lim.max_bytes} bytes")
    lines = sdp.splitlines()
    if len(lines) > lim.max_lines:
        raise BadOffer(f"the offer has more than {lim.max_lines} lines")
    if not lines or lines[0].strip() != "v=0":
        raise BadOffer("the offer is not SDP (it must start with v=0)")
    media: list[str] = []
    candidates = 0
    for line in lines:
        if len(line) > lim.max_line_bytes:
            raise BadOffer(f"the offer has a line longer than {lim.max_line_bytes} bytes")
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            if line.strip():
                raise BadOffer("the offer has a line that is not SDP (x=...)")
            continue
        if line.startswith("m="):
            media.append(line[2:].split(" ", 1)[0])
        elif line.startswith("a=candidate:"):
            candidates += 1
            if candidates > lim.max_candidates:
                raise BadOffer(f"the offer lists more than {lim.max_candidates} ICE candidates")
    if sorted(media) != ["application", "video"]:
        found = ", ".join(media) or "none"
        raise BadOffer(f"the offer must have one video and one data-channel section (found: {found})")
    return sdp
