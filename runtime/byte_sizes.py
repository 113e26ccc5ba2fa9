"""`parse_bytes`: a memory size as people write it ('80GB', '80GiB', '24000MiB') in bytes."""

from __future__ import annotations

import re


def parse_bytes(text: str) -> int:
    """'80GB', '80GiB', '81920MiB', '8e10' -> bytes (GB = 10^9 bytes, GiB = 2^30; a bare 'G' means GiB)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?)(i?)(B?)\s*", text or "")
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r}: write e.g. 80GB, 80GiB or 24000MiB")
    value, unit, binary, b = float(m.group(1)), m.group(2).upper(), m.group(3), m.group(4)
    if not unit:
        return int(value)
    power = "KMGT".index(unit) + 1
    base = 1024 if (binary or not b) else 1000
    return int(value * base**power)
