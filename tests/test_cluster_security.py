"""`serve --cluster` and `worldwalk cluster` start or join Ray only with its token authentication
(stream/cluster/security.py), unless told `--insecure-cluster`, which they then say the meaning of.
Fast: no Ray cluster; a joined cluster's GCS is a small gRPC server answering as Ray's does, with
or without token authentication (tests/test_cluster_auth.py probes a real one)."""

from __future__ import annotations

import os
import stat
from concurrent import futures

import pytest

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
grpc = pytest.importorskip("grpc")

from worldwalk.stream.cluster import security  # noqa: E402
from worldwalk.stream.cluster.security import INSECURE_WARNING, InsecureCluster, secure_ray  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder of its own and none of Ray's token variables; Ray's configuration (which
    secure_ray turns to token mode) read again afterwards."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    monkeypatch.undo()
    from ray._raylet import Config

    Config.initialize("")


def fake_gcs(authenticated: bool):
    """A gRPC server answering NodeInfoGcsService.GetClusterId as Ray's GCS does: to anyone, or
    (token authentication on) to no caller without the token."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    class NodeInfo(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
        def GetClusterId(self, request, context):  # noqa: N802 (the generated name)
            if authenticated and ("authorization" not in dict(context.invocation_metadata())):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid or missing authentication token")
            return gcs_service_pb2.GetClusterIdReply()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(NodeInfo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def open_gcs():
    server, address = fake_gcs(authenticated=False)
    yield address
    server.stop(None)


@pytest.fixture
def token_gcs():
    server, address = fake_gcs(authenticated=True)
    yield address
    server.stop(None)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_local_cluster_starts_in_token_mode_with_a_private_token(home):
    done = secure_ray(None, insecure=False)
    token = home / ".ray" / "auth_token"
    assert done.token_mode and os.environ["RAY_AUTH_MODE"] == "token"
    assert mode(token) == 0o600 and mode(token.parent) == 0o700 and len(token.read_text()) == 64
    assert "made a Ray authentication token" in done.notes[0] and not done.warnings
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()  # Ray itself now sees token mode


def test_a_world_readable_token_file_is_made_private(home):
    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)
    done = secure_ray(None, insecure=False)
    assert mode(token) == 0o600 and token.read_text() == "a" * 64
    assert "private" in done.notes[0] and "644" in done.notes[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the file to another user")
def test_someone_elses_readable_token_file_is_refused(home):
    token = home / "shared-token"
    token.write_text("b" * 64)
    token.chmod(0o644)
    os.chown(token, 65534, 65534)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    with pytest.raises(InsecureCluster, match="belongs to another user"):
        secure_ray(None, insecure=False)
    assert mode(token) == 0o644


def test_token_mode_turned_off_is_refused_unless_insecure(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(InsecureCluster, match="--insecure-cluster"):
        secure_ray(None, insecure=False)
    done = secure_ray(None, insecure=True)
    assert not done.token_mode and INSECURE_WARNING in done.warnings


def test_joining_a_cluster_that_answers_anyone_is_refused(home, open_gcs):
    secure_ray(None, insecure=False)  # a token at hand: the cluster, not this machine, is the problem
    assert security.unauthenticated_call(open_gcs) == "answered"
    with pytest.raises(InsecureCluster, match="answers callers without a token"):
        secure_ray(open_gcs, insecure=False)
    done = secure_ray(open_gcs, insecure=True)
    assert any("answers callers without a token" in w for w in done.warnings) and INSECURE_WARNING in done.warnings


def test_joining_needs_the_clusters_token(home, token_gcs):
    assert security.unauthenticated_call(token_gcs) == "refused"
    with pytest.raises(InsecureCluster, match="no Ray authentication token here"):
        secure_ray(token_gcs, insecure=False)
    assert not (home / ".ray" / "auth_token").exists()  # joining never makes a token of its own
    with pytest.raises(InsecureCluster, match="requires Ray's token"):  # nothing to opt out of: it refuses
        secure_ray(token_gcs, insecure=True)
    os.environ["RAY_AUTH_TOKEN"] = "c" * 64
    done = secure_ray(token_gcs, insecure=False)
    assert done.token_mode and not done.warnings


def test_the_commands_refuse_before_ray_starts_and_warn_when_opted_out(home, open_gcs, monkeypatch, capsys):
    import ray

    from worldwalk.runtime.cli.main import main

    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs.get("address"))
        raise ConnectionError("no cluster here (test)")

    monkeypatch.setattr(ray, "init", init)
    secure_ray(None, insecure=False)  # this machine has a token
    assert main(["serve", "--cluster", open_gcs, "--world", "reference"]) == 2
    err = capsys.readouterr().err
    assert "refusing to join the Ray cluster" in err and "--insecure-cluster" in err
    assert main(["cluster", "status", "--address", open_gcs]) == 2
    assert main(["cluster", "drain", "r1", "--address", open_gcs]) == 2
    assert "answers callers without a token" in capsys.readouterr().err
    assert calls == []  # refused before Ray was asked anything
    assert main(["serve", "--cluster", open_gcs, "--world", "reference", "--insecure-cluster"]) == 1
    assert main(["cluster", "status", "--address", open_gcs, "--insecure-cluster"]) == 1
    err = capsys.readouterr().err
    assert err.count("WARNING: " + INSECURE_WARNING) == 2 and "can run any command" in err
    assert calls == [open_gcs, open_gcs]


def test_cluster_token_makes_the_token_file_private(home):
    from worldwalk.runtime.cli.main import main

    token = home / ".ray" / "auth_token"
    assert main(["cluster", "token"]) == 0 and mode(token) == 0o600
    first = token.read_text()
    token.chmod(0o664)
    assert main(["cluster", "token"]) == 0 and mode(token) == 0o600 and token.read_text() == first


def test_a_ray_whose_replicas_skip_the_token_is_refused(home, monkeypatch):
    import ray

    assert security.ray_too_old("2.52.1") and security.ray_too_old("2.57.1")
    assert security.ray_too_old("2.58.0") is None and security.ray_too_old("3.0.0") is None
    monkeypatch.setattr(ray, "__version__", "2.57.1")
    with pytest.raises(InsecureCluster, match="too old"):
        secure_ray(None, insecure=False)
