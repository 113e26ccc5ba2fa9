"""`worldwalk cluster status`: replicas, nodes, sessions per replica and chunk times of a running
cluster app (Ray Serve's own status plus the snapshot store's walk records); `worldwalk cluster
drain`: move a replica's walks elsewhere (maintenance) before taking it down.

    worldwalk cluster status [--address HEAD:6379] [--json]
    worldwalk cluster drain REPLICA [--address HEAD:6379]
    worldwalk cluster token

Both join the cluster only with Ray's token authentication (security.py), unless
--insecure-cluster; `cluster token` makes (or makes private) this machine's token file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from .flags import add_insecure_argument


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cluster", help="the Ray Serve cluster of `serve --cluster`",
                              description="Inspect the cluster app that `worldwalk serve --cluster` deployed.")
    sub = p.add_subparsers(dest="cluster_command", required=True)
    s = sub.add_parser("status", help="replicas, nodes, sessions per replica, chunk times")
    s.add_argument("--address", default="auto", help="Ray cluster to ask (default: auto, the one on this machine)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    add_insecure_argument(s)
    s.set_defaults(func=run_status)
    d = sub.add_parser("drain", help="move a session host's walks to other replicas, and send it no new ones",
                       description="Each walk on the replica moves at its next chunk boundary (the player's page "
                                   "reconnects by itself); the replica then takes no new sessions. Take it down "
                                   "afterwards (its node, or `ray kill`); Serve starts a fresh one in its place.")
    d.add_argument("replica", help="the replica's id, as `worldwalk cluster status` lists it")
    d.add_argument("--address", default="auto", help="Ray cluster to ask (default: auto, the one on this machine)")
    add_insecure_argument(d)
    d.set_defaults(func=run_drain)
    t = sub.add_parser("token", help="make this machine's Ray token file (private), or make an existing one private",
                       description="The token every node of the cluster and every worldwalk command needs: the "
                                   "file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token. Made (mode 600, 256 random "
                                   "bits) when missing; an existing one readable by others is made private. Copy it "
                                   "to every node (mode 600) before `ray start`. The token is never printed.")
    t.set_defaults(func=run_token)


def join(address: str, insecure: bool) -> None:
    """ray.init on the cluster at `address`, in token mode (security.py); raises InsecureCluster,
    ConnectionError, or Ray's AuthenticationError."""
    import ray

    from .security import secure_ray

    if not ray.is_initialized():
        secure_ray(address, insecure).print("worldwalk cluster")
        from .config import NAMESPACE  # here: config imports the server (aiortc, PyAV)

        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")


def refused(args: argparse.Namespace, e: Exception) -> int | None:
    """The exit code and message of a refused join (None: `e` is something else)."""
    from .security import InsecureCluster, is_auth_error

    if isinstance(e, InsecureCluster):
        print(f"worldwalk cluster: refusing to join the Ray cluster: {e}", file=sys.stderr)
        return 2
    if isinstance(e, ConnectionError):
        print(f"worldwalk cluster: no Ray cluster at {args.address}: {e}. Is `worldwalk serve --cluster` "
              "(or `ray start --head`) running?", file=sys.stderr)
        return 1
    if is_auth_error(e):
        print(f"worldwalk cluster: the Ray cluster at {args.address} refused this machine's token: {e}",
              file=sys.stderr)
        return 1
    return None


def cluster_status(address: str = "auto", insecure: bool = False) -> dict[str, Any]:
    """A plain dict: nodes, deployments with replica states, walks (live ones per replica)."""
    import ray
    from ray import serve

    from .config import APP_NAME, NAMESPACE, STORE_NAME  # here: config imports the server (aiortc, PyAV)

    join(address, insecure)
    nodes = [{"ip": n["NodeManagerAddress"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0),
              "gpus": n["Resources"].get("GPU", 0)} for n in ray.nodes()]
    app = serve.status().applications.get(APP_NAME)
    deployments = {}
    if app is not None:
        for name, dep in app.deployments.items():
            deployments[name] = {"status": str(dep.status), "replicas": dict(dep.replica_states)}
    try:
        store = ray.get_actor(STORE_NAME, namespace=NAMESPACE)
        walks = ray.get(store.status.remote(), timeout=10)
        hosts = ray.get(store.serve_replicas.remote(), timeout=10) if app is not None else {}
    except ValueError:
        walks, hosts = {"walks": {}, "snapshots": 0}, {}
    live = Counter(w["replica"] for w in walks["walks"].values() if w["live"])
    return {"app": str(app.status) if app is not None else "not deployed", "nodes": nodes,
            "deployments": deployments, "session_hosts": hosts, "sessions_per_replica": dict(live),
            "draining": walks.get("draining", {}), "walks": walks["walks"],
            "snapshots": walks.get("snapshots", 0), "resume_timeout": walks.get("resume_timeout")}


def run_status(args: argparse.Namespace) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("worldwalk cluster: Ray is not installed; pip install 'worldwalk[cluster]'", file=sys.stderr)
        return 2
    try:
        st = cluster_status(args.address, getattr(args, "insecure_cluster", False))
    except Exception as e:
        code = refused(args, e)
        if code is None:
            raise
        return code
    from .config import APP_NAME

    if args.json:
        print(json.dumps(st, default=str))
        return 0
    print(f"app {APP_NAME}: {st['app']}")
    for n in st["nodes"]:
        print(f"  node {n['ip']:<15} {'alive' if n['alive'] else 'dead '}  {n['cpus']:g} CPU  {n['gpus']:g} GPU")
    for name, dep in st["deployments"].items():
        states = ", ".join(f"{k.lower()} {v}" for k, v in dep["replicas"].items()) or "none"
        print(f"  {name:<12} {dep['status']}: replicas {states}")
    for replica, state in sorted(st["session_hosts"].items()):
        n = st["sessions_per_replica"].get(replica, 0)
        print(f"  session host {replica}: {state.lower()}, {n} session{'s' if n != 1 else ''}"
              + drain_text(st["draining"].get(replica)))
    for walk, w in st["walks"].items():
        state = w.get("state") or ("live" if w["live"] else "ended")
        if state == "moved":
            state = f"moved, resumable {w['resume_s']:g} s more"
        print(f"  walk {walk}  {state:<5} replica {w['replica']}  chunk {w['chunk']}  {w['chunk_ms']} ms/chunk"
              + (f"  snapshot {w['snapshot_bytes']} B, pickled in {w['snapshot_ms']:.1f} ms, stored in "
                 f"{w.get('snapshot_send_ms') or 0:.1f} ms" if w["snapshot_bytes"] else ""))
    return 0


def drain_text(drain: dict[str, Any] | None) -> str:
    """A session host's drain, for the status line ("" when it does not drain)."""
    if not drain:
        return ""
    why = drain["why"]
    if drain["state"] == "draining":
        return f", draining ({why}): {drain['walks_here']} walk(s) still here"
    n = drain["walks_waiting"]
    waiting = f" ({n} handed-off walk(s) still waiting for their players)" if n else ""
    return f", drained ({why}): no walk left here{waiting}; take it down"


def run_drain(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError:
        print("worldwalk cluster: Ray is not installed; pip install 'worldwalk[cluster]'", file=sys.stderr)
        return 2
    from .config import NAMESPACE, STORE_NAME

    try:
        join(args.address, getattr(args, "insecure_cluster", False))
        store = ray.get_actor(STORE_NAME, namespace=NAMESPACE)
        known = ray.get(store.serve_replicas.remote(), timeout=10)
    except ValueError:
        print("worldwalk cluster: no worldwalk app runs on this cluster (`worldwalk serve --cluster` first)",
              file=sys.stderr)
        return 1
    except Exception as e:
        code = refused(args, e)
        if code is None:
            raise
        return code
    if args.replica not in known:
        names = ", ".join(sorted(known)) or "none"
        print(f"worldwalk cluster: no session host {args.replica!r}; the replicas are: {names}", file=sys.stderr)
        return 1
    answer = ray.get(store.drain.remote(args.replica), timeout=10)
    if "refused" in answer:
        print(f"worldwalk cluster: not draining: {answer['refused']}", file=sys.stderr)
        return 1
    n = len(answer["walks"])
    print(f"replica {args.replica}: draining; {n} walk{'s move' if n != 1 else ' moves'} to other replicas at the "
          "next chunk boundary, and it takes no new sessions")
    return 0


def run_token(args: argparse.Namespace) -> int:
    from .security import InsecureCluster, private_token_file

    try:
        path, note = private_token_file(create=True)
    except (InsecureCluster, OSError) as e:
        print(f"worldwalk cluster: {e}", file=sys.stderr)
        return 1
    print(note or f"the Ray token file {path} is in place (mode 600)")
    print(f"copy it to the same place on every node (scp -p {path} NODE:{path}; mode 600), then start Ray "
          "there with RAY_AUTH_MODE=token")
    return 0
