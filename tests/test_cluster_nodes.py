"""Losing a machine (marked `cluster` and `slow`): tests/cluster_nodes_harness.py runs the cluster
app on three Ray nodes on this machine, in a loopback-only network namespace. Removing a node
that holds nothing disturbs no walk; removing the node that holds a walk's session host moves the
walk to the other node from its last snapshot, with its recording continued."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

from .test_cluster import ray_processes_of

pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # one xdist worker runs the file (conftest: a harness file)
ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")


@pytest.fixture(scope="module")
def nodes_run(tmp_path_factory) -> dict:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"cluster tests run in a loopback-only namespace: {reason}")
    t0 = time.monotonic()
    records = tmp_path_factory.mktemp("cluster-node-recordings")
    env = {"WORLDWALK_CLUSTER_RECORD_DIR": str(records),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # an authenticated cluster
    proc = run_module_in_loopback_netns("tests.cluster_nodes_harness", [], timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"the harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads(lines[-1])
    out["wall_s"] = time.monotonic() - t0
    return out


def test_losing_a_node_moves_only_its_walks_from_the_store_on_the_head(nodes_run):
    from worldwalk.stream.record.replay import plan_from_log, render_frames
    from worldwalk.stream.record.session_log import image_hash, read_log

    from .test_cluster import check_walk_carries_on
    from .test_recording_agrees import check_agree

    print(json.dumps({k: v for k, v in nodes_run.items() if k != "lose"}
                     | {"lose": {k: v for k, v in nodes_run["lose"].items() if k != "records"}}, indent=1, default=str))
    assert nodes_run["auth"] == "token", nodes_run["auth"]
    assert nodes_run["hosts_on"] == ["head", "worker"], nodes_run["hosts_on"]
    r = nodes_run["lose"]
    assert r.get("store_node") == "head", r  # made from the spare node, it lives on the head
    # the spare node went: the walk did not notice, and its snapshots still reached the store
    assert "spare" in r, r
    assert r["spare"]["moved"] is None and r["spare"]["chunks"][1] is not None, r
    assert r["spare"]["chunks"][1] > r["spare"]["chunks"][0], r["spare"]
    assert "error" not in r, r["error"]
    # the worker went: the walk moved to the head's session host, from its last snapshot
    assert r["moved"]["type"] == "moved" and r["resumed"] is True and r["resumed_node"] is True, r
    moved_at, replicas = check_walk_carries_on(r["records"])
    assert replicas == r["replicas"] and moved_at == r["last_snapshot_chunk"], (moved_at, r["last_snapshot_chunk"])
    # one recording for the whole walk, continued on the head, which replays bit for bit
    video = Path(r["recording"])
    assert video.is_file() and not list(video.parent.glob("*.moving*"))
    log = read_log(video.with_suffix(".jsonl"))
    assert log.end is not None and [e["kind"] for e in log.records if e["type"] == "event"] == ["moved"]
    n = check_agree(video)
    hashes: dict[int, list[str]] = {}
    for rec in r["records"]:
        hashes.setdefault(rec["chunk"], rec["hashes"])
    expected = [h for c in log.chunks for h in hashes[c["index"]][: c.get("keep", len(c["poses"]))]]
    assert [image_hash(f) for f in render_frames(plan_from_log(log.path))] == expected
    assert n == len(expected) >= 60


def test_no_ray_process_outlives_the_nodes(nodes_run):
    left = ray_processes_of(nodes_run["session_dir"])
    assert not left, "Ray processes outlived the cluster:\n" + "\n".join(left)
