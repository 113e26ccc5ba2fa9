"""Losing a machine: `worldwalk serve --cluster` on a Ray cluster of three nodes on this machine,
run inside a loopback-only network namespace (tests/test_cluster_nodes.py).

    head   3 CPUs: Ray's control plane, Serve's controller and proxy, the gateway (1 CPU) and one
                   session host (2 CPUs)
    worker 2 CPUs: the other session host (it joins once the head's are placed: nothing else fits)
    spare  0 CPUs: nothing; it makes the snapshot store first (a session host on any node might)

A walk runs on the worker's session host, recorded. The spare node is removed (the walk must
not notice, and its snapshots must keep reaching the store); then the worker node is removed
as a machine is lost (its processes killed, no goodbye): the walk must go on on the head's
session host from its last snapshot, its recording continued. One JSON object to stdout on the
last line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

from worldwalk.stream.cluster.config import ClusterConfig

from .builders import wait_for
from .cluster_harness import Client, finished_records, serve_config, store

# a lost node is declared dead after about 5 missed health checks of 1 s (Ray's default: 15 s)
HEALTH = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 5}


def cluster_config() -> ClusterConfig:
    record_dir = os.environ.get("WORLDWALK_CLUSTER_RECORD_DIR")
    return ClusterConfig(serve=serve_config(record_dir=record_dir), replicas=2, sessions_per_replica=1,
                         num_cpus=2, gateway_cpus=1, admission_wait=5.0, record_frame_hashes=True)


def session_hosts() -> dict[str, str]:
    """Session-host replica id -> the id of the node it runs on, as Serve's controller has them."""
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"]["worldwalk"]
    return {r["replica_id"]: r["node_id"] for r in app["deployments"]["SessionHost"]["replicas"]
            if str(r["state"]).upper().endswith("RUNNING")}


def store_node() -> str | None:
    """The node the snapshot store lives on."""
    import ray

    from worldwalk.stream.cluster.config import STORE_NAME

    for actor in ray._private.state.actors().values():
        if actor.get("Name") == STORE_NAME and actor.get("State") == "ALIVE":
            return actor["Address"]["NodeID"]
    return None


async def walk_on_worker(url: str, worker: str) -> tuple[Client, dict]:
    """A player whose walk runs on the worker's session host (Serve picks at random: a second
    player fills the other host, and the one not on the worker leaves)."""
    nodes = session_hosts()
    first = Client(url)
    ans = await first.open()
    if nodes.get(ans["replica"]) == worker:
        return first, ans
    second = Client(url)
    ans2 = await second.open()
    await first.close()
    assert nodes.get(ans2["replica"]) == worker, (nodes, ans2.get("replica"))
    return second, ans2


async def ask(method: str, *args: Any, timeout: float = 20.0) -> Any:
    """A call to the snapshot store, bounded (a store lost with its node would never answer)."""
    return await asyncio.wait_for(getattr(store(), method).remote(*args), timeout)


async def lose_nodes(cluster: Any, url: str, nodes: dict[str, Any], out: dict[str, Any]) -> None:
    """Fills `out` as it goes (what was seen before a failure stays there)."""
    head, worker, spare = (nodes[k].node_id for k in ("head", "worker", "spare"))
    out["store_node"] = {head: "head", worker: "worker", spare: "spare"}.get(store_node())
    p, ans = await walk_on_worker(url, worker)
    walk = ans["walk"]
    await p.key("w", True)
    await wait_for(lambda: len(p.frames) > 40, 30, "40 frames before a node is lost")

    # the spare node goes: no walk notices, and the walk's snapshots still reach the store
    chunk_before = (await ask("latest", walk))[1]["chunk"]
    frames_before = len(p.frames)
    await asyncio.to_thread(cluster.remove_node, nodes["spare"], False)
    await wait_for(lambda: len(p.frames) > frames_before + 32, 30, "32 frames after the spare node went")
    try:
        latest = await ask("latest", walk, timeout=10)
    except Exception as e:  # noqa: BLE001 - the store went with the node
        latest = None
        out["store_error"] = f"{type(e).__name__}: {e}"[:300]
    out["spare"] = {"moved": p.ended, "chunks": [chunk_before, latest[1]["chunk"] if latest else None]}

    # the worker node is lost: the walk goes on on the head's session host from its last snapshot
    t_lost = time.monotonic()
    await asyncio.to_thread(cluster.remove_node, nodes["worker"], False)
    await wait_for(lambda: p.ended is not None, 60, "the player to hear that its host was lost")
    out["lost_to_moved_s"] = time.monotonic() - t_lost
    last = await ask("latest", walk)  # the walk's last snapshot: nothing made after it was kept
    last_before = p.frames[-1][0]
    await p.close()
    q = Client(url)
    ans2 = await q.open(f"?resume={walk}")
    await wait_for(lambda: len(q.frames) > 30, 30, "30 frames after the move")
    await q.close()
    recording = (await ask("resume_recording", walk))[0]
    records = await finished_records(walk, recording)
    out.update(moved=p.ended, resumed=ans2.get("resumed"), replicas=[ans["replica"], ans2.get("replica")],
               resumed_node=session_hosts().get(ans2.get("replica")) == head,
               last_snapshot_chunk=last[1]["chunk"] if last else None, gap_s=q.frames[0][0] - last_before,
               records=records, recording=recording)


def main() -> dict:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from worldwalk.stream.cluster.app import free_port, start, stop
    from worldwalk.stream.cluster.config import NAMESPACE

    out: dict[str, Any] = {}
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "include_dashboard": False, "_system_config": HEALTH})
    nodes = {"head": cluster.head_node, "spare": cluster.add_node(num_cpus=0)}
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    out["session_dir"] = ray._private.worker._global_node.get_session_dir_path()
    mode = ray._raylet.get_authentication_mode()  # the test asks for token mode (RAY_AUTH_MODE)
    out["auth"] = "token" if mode == ray._raylet.AuthenticationMode.TOKEN else str(mode)
    cfg = cluster_config()
    try:
        @ray.remote(num_cpus=0)
        def make_store() -> None:
            from worldwalk.stream.cluster.snapshots import get_store

            ray.get(get_store(cfg.records_kept, cfg.resume_timeout).status.remote())

        ray.get(make_store.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nodes["spare"].node_id, soft=False)).remote())
        port = free_port("127.0.0.1")
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        deployed: dict[str, Any] = {}
        deploying = threading.Thread(target=lambda: deployed.update(url=start(cfg, http_port=port)), daemon=True)
        deploying.start()
        # the head holds the gateway and one session host; then the worker comes for the other
        deadline = time.monotonic() + 120
        while len(session_hosts_safe()) < 1 and time.monotonic() < deadline:
            time.sleep(0.25)
        nodes["worker"] = cluster.add_node(num_cpus=2)
        deploying.join(120)
        url = deployed["url"].replace("http://", "ws://") + "ws"
        out["up_s"] = time.monotonic() - t0
        out["hosts_on"] = sorted({"head" if n == nodes["head"].node_id else "worker" if n == nodes["worker"].node_id
                                  else n for n in session_hosts().values()})
        out["lose"] = {}
        try:
            asyncio.run(asyncio.wait_for(lose_nodes(cluster, url, nodes, out["lose"]), 240))
        except Exception:
            out["lose"]["error"] = traceback.format_exc()
    finally:
        t1 = time.monotonic()
        stop(ClusterConfig(serve=cfg.serve))  # address None: shut Ray down too
        cluster.shutdown()
        out["down_s"] = time.monotonic() - t1
    return out


def session_hosts_safe() -> dict[str, str]:
    try:
        return session_hosts()
    except Exception:  # noqa: BLE001 - the app is not there yet
        return {}


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, default=str))
    sys.stdout.flush()
