"""`Check`: one row of `bench --gpu-check`'s verdict, PASS, FAIL or SKIP with the bar it was held to."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""
    seconds: float = 0.0
    bar: str = ""  # what a PASS needs

    @property
    def ok(self) -> bool:
        """Not failed (a SKIP is not a pass either: see `summary`)."""
        return self.status != FAIL


def verdict(ok: bool) -> str:
    return PASS if ok else FAIL
