"""A Ray cluster set up as the README's multi-machine steps say runs no stranger's code (marked
`cluster`): tests/cluster_auth_harness.py, in a loopback-only network namespace, starts it (token
file, `RAY_AUTH_MODE=token ray start --head --node-ip-address`, `worldwalk serve --cluster`) and
calls it as a process without the token would. Set up as the old steps did (no token), the same
calls ran their payload on both replicas and `cluster status` answered.
"""

from __future__ import annotations

import json

import pytest

from worldwalk.stream.loopback_netns import netns_unavailable_reason, run_module_in_loopback_netns

pytestmark = pytest.mark.cluster
pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")


@pytest.fixture(scope="module")
def probed() -> dict:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"cluster tests run in a loopback-only namespace: {reason}")
    proc = run_module_in_loopback_netns("tests.cluster_auth_harness", [], timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"the harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1])


def test_the_token_file_is_private(probed):
    assert probed["token_cmd"]["rc"] == 0 and probed["token_mode"] == "600", probed["token_cmd"]


def test_a_replicas_grpc_port_refuses_a_caller_without_the_token(probed):
    calls = probed["stranger_calls"]
    replicas = {c["replica"] for c in calls}
    assert replicas == {"ray::ServeReplica:worldwalk:Gateway", "ray::ServeReplica:worldwalk:SessionHost"}, calls
    assert not any(c["payload_ran"] for c in calls), calls
    for replica in replicas:  # Serve's ASGIService port of each replica: refused for want of a token
        codes = [c["code"] for c in calls if c["replica"] == replica]
        assert "UNAUTHENTICATED" in codes and "OK" not in codes and "UNKNOWN" not in codes, calls


def test_the_replicas_listen_on_the_node_address_only(probed):
    binds = {c["bind"] for c in probed["stranger_calls"]}
    assert binds <= {"127.0.0.1", "::ffff:127.0.0.1"}, binds  # not "::" nor "0.0.0.0": every interface


def test_cluster_status_without_the_token_is_refused(probed):
    plain, opted_out = probed["stranger_status"], probed["stranger_status_insecure"]
    assert plain["rc"] == 2 and "no Ray authentication token" in plain["stderr"], plain
    assert "app worldwalk" not in plain["stdout"]
    # --insecure-cluster does not help a stranger: the cluster itself refuses a caller without the token
    assert opted_out["rc"] != 0 and "requires Ray's token" in opted_out["stderr"], opted_out
    assert "app worldwalk" not in opted_out["stdout"]
    owner = probed["owner_status"]  # while its owner, with the token, is answered
    assert owner["rc"] == 0 and "app worldwalk: ApplicationStatus.RUNNING" in owner["stdout"], owner
    assert probed["left"] == 0
