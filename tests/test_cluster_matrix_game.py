"""`worldwalk serve --cluster --world matrix-game`: a killed replica's walk goes on elsewhere (marked `cluster`).

One run of tests/cluster_harness.py's `failover` scenario with the tiny random Matrix-Game world
(WORLDWALK_CLUSTER_WORLD=matrix-game): a player holds W with a spectator watching, its replica is
killed, and the walk carries on on the other replica from the stored snapshot (rollout caches, noise
generator, action history), the spectator following it.
The recording goes on in the same files, and its log (the actions of every chunk) replays on one
world from the first frame to exactly the frames both replicas made.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

from .test_cluster import FAILOVER_BOUND_S, ray_processes_of

pytestmark = pytest.mark.cluster  # one xdist worker runs the file (conftest: a harness file)
pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"cluster tests run in a loopback-only namespace: {reason}")
    records = tmp_path_factory.mktemp("cluster-recordings")
    proc = run_module_in_loopback_netns("tests.cluster_harness", ["failover"], timeout=240,
                                        env={"WORLDWALK_CLUSTER_RECORD_DIR": str(records),
                                             "WORLDWALK_CLUSTER_WORLD": "matrix-game"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"the harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1])


def test_a_killed_replicas_matrix_game_walk_goes_on_from_its_snapshot_with_its_actions(run):
    from worldwalk.stream.record.replay import plan_from_log, render_frames
    from worldwalk.stream.record.session_log import image_hash, read_log

    r = run["failover"]
    assert "error" not in r, r["error"]
    assert r["moved"]["type"] == "moved" and r["resumed"] is True
    assert r["replicas"][0] != r["replicas"][1]
    assert r["gap_s"] < FAILOVER_BOUND_S and r["frames_after"] >= 10, r
    s = r["spectator"]  # a spectator watched: it follows the walk to its new replica, same link
    assert s["moved"]["type"] == "moved" and s["replica"] == r["replicas"][1] and s["frames"] > 5, s
    by_chunk: dict[int, list[dict]] = defaultdict(list)
    for rec in sorted(r["records"], key=lambda x: x["made"]):
        by_chunk[rec["chunk"]].append(rec)
    chunks = sorted(by_chunk)
    assert chunks == list(range(len(chunks))), f"chunks lost in the move: {chunks}"
    replicas = list(dict.fromkeys(rec["replica"] for k in chunks for rec in by_chunk[k]))
    assert replicas[:2] == r["replicas"]
    moved_at = min(k for k in chunks if any(rec["replica"] != replicas[0] for rec in by_chunk[k]))
    assert moved_at >= 3, "the walk restarted instead of going on"  # 40 frames (9 + 12 + 12 + ...) first
    for k in chunks:  # a chunk made on both replicas (before the kill and again after) came out the same
        assert all(rec["hashes"] == by_chunk[k][0]["hashes"] for rec in by_chunk[k]), f"chunk {k} differs"

    # one recording across the kill, whose log holds each chunk's actions; replayed from the first
    # frame on one world it makes, bit for bit, the frames the two replicas made
    log = read_log(Path(r["recording"]).with_suffix(".jsonl"))
    assert log.end is not None and [e["kind"] for e in log.records if e["type"] == "event"] == ["moved"]
    # chunks the killed replica made but never logged come into the continued log from the walk's records
    assert all("actions" in c for c in log.chunks), [c["index"] for c in log.chunks if "actions" not in c]
    pressed = [c["index"] for c in log.chunks if np.asarray(c["actions"]["keyboard"])[:, 0].any()]
    assert any(k < moved_at for k in pressed) and any(k >= moved_at for k in pressed), pressed  # W, both sides
    hashes = {k: by_chunk[k][-1]["hashes"] for k in chunks}
    known = [c for c in log.chunks if c["index"] in hashes]
    assert [c["index"] for c in known] == chunks[: len(known)] and len(known) > moved_at  # past the move
    expected = [h for c in known for h in hashes[c["index"]][: c.get("keep", len(c["poses"]))]]
    replayed = [image_hash(f) for f in render_frames(plan_from_log(log.path))]
    assert replayed[: len(expected)] == expected


def test_shutdown_leaves_no_ray_process(run):
    left = ray_processes_of(run["session_dir"])
    assert not left, "Ray processes outlived the cluster:\n" + "\n".join(left)
