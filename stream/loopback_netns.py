"""Run a real headless Chromium where only loopback exists: a fresh network namespace.

WebRTC tests may send traffic to loopback addresses only. `run_in_loopback_netns` starts a
command inside `unshare -n` (as root) with `lo` brought up and nothing else, so neither the
server nor the browser can reach any other address. Inside, `launch_chromium` starts Debian's
Chromium through Python playwright (`playwright install` is neither needed nor possible).
The browser bench (stream/browser_bench.py) and the browser tests run there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # a page in a background tab must keep decoding video at full rate
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
REPO = Path(__file__).resolve().parent.parent


def interfaces() -> list[str]:
    """Interfaces of this process's network namespace (/proc/net/dev is per namespace; sysfs
    is not remounted by `unshare -n`, so /sys/class/net would still show the host's)."""
    with open("/proc/self/net/dev") as f:
        return sorted(line.split(":", 1)[0].strip() for line in f.readlines()[2:])


def in_loopback_only_netns() -> bool:
    """True when `lo` is the only network interface this process can see."""
    return interfaces() == ["lo"]


def netns_unavailable_reason() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root for `unshare -n`"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -n` failed: {probe.stderr.strip()}"
    return None


def run_in_loopback_netns(argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `argv` in a new network namespace with only `lo` (up); capture its output."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def run_module_in_loopback_netns(
    module: str, args: list[str], timeout: float, env: dict | None = None
) -> subprocess.CompletedProcess:
    return run_in_loopback_netns([sys.executable, "-m", module, *args], timeout, env)


async def launch_chromium(playwright):
    """Headless Debian Chromium with the loopback-WebRTC flags and a fresh profile."""
    if not in_loopback_only_netns():
        raise RuntimeError(
            f"refusing to start the test browser outside a loopback-only namespace "
            f"(interfaces: {interfaces()}); run it through run_in_loopback_netns"
        )
    profile = tempfile.mkdtemp(prefix="worldwalk-chromium-")
    context = await playwright.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 640, "height": 360},
    )
    return context, profile
