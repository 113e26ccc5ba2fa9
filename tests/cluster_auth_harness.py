"""A cluster set up as the README's multi-machine steps say, probed by a stranger (run inside a
loopback-only network namespace; tests/test_cluster_auth.py runs it).

    unshare -n sh -c 'ip link set lo up && exec python -m tests.cluster_auth_harness [insecure]'

In a fresh home folder: `worldwalk cluster token`, `RAY_AUTH_MODE=token ray start --head
--node-ip-address=127.0.0.1`, `worldwalk serve --cluster 127.0.0.1:PORT` (a gateway and one session
host). Then, from processes with another home and no Ray token variables (a stranger): one call with
Ray Serve's own generated gRPC stubs to each replica's inter-replica port, whose request metadata
is a pickle that makes a folder when unpickled; `worldwalk cluster status` with and without
--insecure-cluster; and `worldwalk cluster status` as the owner, who has the token. With
`insecure` the cluster is set up as the old steps did (no token, `--insecure-cluster`): the
figures before the fix. One JSON object goes to stdout on the last line. No graceful shutdown
(it is slow and not under test): `ray start --block` is stopped, which ends every Ray process of
the run, and any left over is killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))
CLI = [sys.executable, "-m", "worldwalk.runtime.cli"]
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", WORLDWALK_TORCH_THREADS="1", **extra)
    return env


def listening_sockets(match: str) -> list[tuple[str, int, int]]:
    """(address, port, pid) of the TCP sockets listening in this network namespace that belong to
    processes whose command line contains `match` (read from /proc: no extra tools)."""
    owners: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match not in cmdline:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_link.startswith("socket:["):
                    owners[with_link[8:-1]] = int(pid)
        except OSError:
            continue
    out = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in owners:  # 0A: LISTEN
                continue
            addr, port = f[1].split(":")
            raw = bytes.fromhex(addr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
            out.append((socket.inet_ntop(family, raw), int(port, 16), owners[f[9]]))
    return out


class MakeFolder:
    """Unpickling this makes a folder: the proof that a call's payload ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


STRANGER_CALLS = r"""
import json, sys
import grpc
from ray.serve.generated import serve_pb2, serve_pb2_grpc
for target, payload in json.loads(sys.argv[1]):
    stub = serve_pb2_grpc.ASGIServiceStub(grpc.insecure_channel(target))
    try:
        stub.HandleRequest(serve_pb2.ASGIRequest(pickled_request_metadata=bytes.fromhex(payload), request_args=b"",
                                                 request_kwargs=b""), timeout=10)
        print(json.dumps({"code": "OK", "details": ""}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": (e.details() or "")[:200]}))
"""


def stranger_calls(targets: list[tuple[str, Path]], env: dict[str, str]) -> list[dict[str, Any]]:
    """One call to each replica port from a process without the token, Ray Serve's stubs; each
    call's request metadata makes its folder when unpickled (a reference to os.mkdir: the process
    that unpickles it needs nothing of ours)."""
    jobs = [(target, pickle.dumps(MakeFolder(str(folder))).hex()) for target, folder in targets]
    proc = subprocess.run([sys.executable, "-c", STRANGER_CALLS, json.dumps(jobs)], capture_output=True,
                          text=True, env=env, timeout=120)
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(answers) != len(targets):
        raise RuntimeError(f"the stranger's calls failed:\n{proc.stderr[-2000:]}")
    for answer, (_, folder) in zip(answers, targets, strict=True):
        answer["payload_ran"] = folder.exists()
    return answers


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=timeout)
    return {"rc": proc.returncode, "stdout": proc.stdout[-1500:], "stderr": proc.stderr[-2500:],
            "s": round(time.monotonic() - t0, 1)}


def descendants(roots: set[int]) -> set[int]:
    """The processes below `roots`."""
    parent: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, grew = set(), True
    while grew:
        new = {pid for pid, pp in parent.items() if (pp in roots or pp in found) and pid not in found}
        found |= new
        grew = bool(new)
    return found


def wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before printing {text!r}:\n{path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} after {timeout:.0f} s:\n{path.read_text()[-3000:]}")
        time.sleep(0.2)


def main(insecure: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="worldwalk-auth-"))
    owner, stranger = work / "owner", work / "stranger"
    owner.mkdir()
    stranger.mkdir()
    temp_dir = work / "ray"  # this run's Ray session folders (and the processes' command lines)
    gcs_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{gcs_port}"
    out: dict[str, Any] = {"insecure": insecure, "temp_dir": str(temp_dir)}
    owner_env = environment(owner)
    stranger_env = environment(stranger)
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()
    try:
        head_env = dict(owner_env)
        # the old steps had no opt-out flag (tree before the fix: its CLI does not know it)
        known = not insecure or "--insecure-cluster" in run_cli(["cluster", "status", "--help"], owner_env)["stdout"]
        opt_out = ["--insecure-cluster"] if insecure and known else []
        if not insecure:  # README step 1: the token, then Ray in token mode on the node's address
            out["token_cmd"] = run_cli(["cluster", "token"], owner_env)
            token = owner / ".ray" / "auth_token"
            out["token_mode"] = f"{stat.S_IMODE(token.stat().st_mode):03o}" if token.exists() else None
            head_env["RAY_AUTH_MODE"] = "token"
        head_log = work / "head.log"
        head = subprocess.Popen(
            [RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--num-cpus=3",
             "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"],
            stdout=head_log.open("w"), stderr=subprocess.STDOUT, env=head_env, start_new_session=True)
        procs.append(head)
        wait_for_line(head_log, "Ray runtime started", head, 90)
        out["head_up_s"] = round(time.monotonic() - t0, 1)
        serve_log = work / "serve.log"
        serve = subprocess.Popen(
            CLI + ["serve", "--cluster", address, "--port", str(http_port), "--world", "reference",
                   "--size", "128x72", "--num-cpus", "0.5", *opt_out],
            stdout=serve_log.open("w"), stderr=subprocess.STDOUT, env=owner_env, start_new_session=True)
        procs.append(serve)
        wait_for_line(serve_log, "worldwalk serve: open http", serve, 120)
        out["serve_up_s"] = round(time.monotonic() - t0, 1)
        out["serve_log"] = serve_log.read_text()[-2000:]
        # the replicas' inter-replica gRPC ports: Serve's replicas listen on two ports each (Ray's core
        # worker port, which answers Ray's own services, and Serve's ASGIService port)
        replicas = listening_sockets("ServeReplica:worldwalk")
        out["replica_sockets"] = replicas
        targets = []
        for i, (ip, port, _) in enumerate(replicas):
            host = "127.0.0.1" if ip in ("0.0.0.0", "::") else (f"[{ip}]" if ":" in ip else ip)
            targets.append((f"{host}:{port}", work / f"payload-ran-{i}"))
        calls = stranger_calls(targets, stranger_env)
        for call, (ip, port, pid) in zip(calls, replicas, strict=True):
            call.update(bind=ip, port=port, replica=Path(f"/proc/{pid}/cmdline").read_bytes()
                        .split(b"\0")[0].decode(errors="replace").strip())
        out["stranger_calls"] = calls
        out["stranger_status"] = run_cli(["cluster", "status", "--address", address], stranger_env)
        if known:
            out["stranger_status_insecure"] = run_cli(["cluster", "status", "--address", address,
                                                       "--insecure-cluster"], stranger_env)
        out["owner_status"] = run_cli(["cluster", "status", "--address", address, *opt_out], owner_env)
        out["probe_s"] = round(time.monotonic() - t0, 1)
    finally:
        ours = descendants({p.pid for p in procs})  # Ray's processes: children of this run's commands
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (left := [pid for pid in ours if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
            time.sleep(0.1)
        out["left"] = len(left)
        out["wall_s"] = round(time.monotonic() - t0, 1)
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main("insecure" in sys.argv[1:]), default=str))
