"""`worldwalk cluster status`: replicas, nodes, sessions per replica and chunk times of a running
cluster app (Ray Serve's own status plus the snapshot store's walk records).

    worldwalk cluster status [--address HEAD:6379] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cluster", help="the Ray Serve cluster of `serve --cluster`",
                              description="Inspect the cluster app that `worldwalk serve --cluster` deployed.")
    sub = p.add_subparsers(dest="cluster_command", required=True)
    s = sub.add_parser("status", help="replicas, nodes, sessions per replica, chunk times")
    s.add_argument("--address", default="auto", help="Ray cluster to ask (default: auto, the one on this machine)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=run_status)


def cluster_status(address: str = "auto") -> dict[str, Any]:
    """A plain dict: nodes, deployments with replica states, walks (live ones per replica)."""
    import ray
    from ray import serve

    from .config import APP_NAME, NAMESPACE, STORE_NAME  # here: config imports the server (aiortc, PyAV)

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    nodes = [{"ip": n["NodeManagerAddress"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0),
              "gpus": n["Resources"].get("GPU", 0)} for n in ray.nodes()]
    app = serve.status().applications.get(APP_NAME)
    deployments = {}
    if app is not None:
        for name, dep in app.deployments.items():
            deployments[name] = {"status": str(dep.status), "replicas": dict(dep.replica_states)}
    try:
        walks = ray.get(ray.get_actor(STORE_NAME, namespace=NAMESPACE).status.remote(), timeout=10)
    except ValueError:
        walks = {"walks": {}, "snapshots": 0}
    live = Counter(w["replica"] for w in walks["walks"].values() if w["live"])
    return {"app": str(app.status) if app is not None else "not deployed", "nodes": nodes,
            "deployments": deployments, "sessions_per_replica": dict(live), "walks": walks["walks"]}


def run_status(args: argparse.Namespace) -> int:
    from .config import APP_NAME
    try:
        import ray  # noqa: F401
    except ImportError:
        print("worldwalk cluster: Ray is not installed; pip install 'worldwalk[cluster]'", file=sys.stderr)
        return 2
    try:
        st = cluster_status(args.address)
    except ConnectionError as e:
        print(f"worldwalk cluster: no Ray cluster at {args.address}: {e}. Is `worldwalk serve --cluster` "
              "(or `ray start --head`) running?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, default=str))
        return 0
    print(f"app {APP_NAME}: {st['app']}")
    for n in st["nodes"]:
        print(f"  node {n['ip']:<15} {'alive' if n['alive'] else 'dead '}  {n['cpus']:g} CPU  {n['gpus']:g} GPU")
    for name, dep in st["deployments"].items():
        states = ", ".join(f"{k.lower()} {v}" for k, v in dep["replicas"].items()) or "none"
        print(f"  {name:<12} {dep['status']}: replicas {states}")
    for replica, n in sorted(st["sessions_per_replica"].items()):
        print(f"  replica {replica}: {n} session{'s' if n != 1 else ''}")
    for walk, w in st["walks"].items():
        state = "live" if w["live"] else "ended"
        print(f"  walk {walk}  {state:<5} replica {w['replica']}  chunk {w['chunk']}  {w['chunk_ms']} ms/chunk"
              + (f"  snapshot {w['snapshot_bytes']} B, pickled in {w['snapshot_ms']:.1f} ms, stored in "
                 f"{w.get('snapshot_send_ms') or 0:.1f} ms" if w["snapshot_bytes"] else ""))
    return 0
