"""The `--cluster` flags of `worldwalk serve` (cheap to import: no Ray, no aiortc)."""

from __future__ import annotations

import argparse


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The `--cluster` flags of `worldwalk serve`."""
    g = p.add_argument_group("cluster (Ray Serve; pip install 'worldwalk[cluster]')")
    g.add_argument("--cluster", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="serve on a Ray cluster: join ADDRESS (HEAD:6379, auto, ray://...) or start a local one")
    g.add_argument("--replicas", type=int, default=None, help="session-host replicas (default 1)")
    g.add_argument("--sessions-per-replica", type=int, default=None, help="sessions each replica hosts (default 1)")
    g.add_argument("--num-gpus", type=float, default=None, help="GPUs per session-host replica (default 0)")
    g.add_argument("--num-cpus", type=float, default=None, help="CPUs per session-host replica (default 1)")
    g.add_argument("--min-replicas", type=int, default=None, help="autoscale the session hosts from this many")
    g.add_argument("--max-replicas", type=int, default=None, help="... up to this many (players wait in line)")
    g.add_argument("--admission-wait", type=float, default=None,
                   help="seconds a player waits for a free slot before hearing busy (default 3)")
    add_insecure_argument(g)


def add_insecure_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--insecure-cluster", action="store_true",
                   help="start or join a Ray cluster without Ray's token authentication (anyone who reaches "
                        "its ports can run commands on every node; only on a network no one else reaches)")
