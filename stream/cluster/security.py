"""Ray's token authentication for `worldwalk serve --cluster` and `worldwalk cluster`.

Ray runs what it is sent: the GCS and each node's raylet take work from any caller, and every
Ray Serve replica (the gateway and each session host) listens for Serve's inter-replica gRPC
calls and unpickles what arrives. Without Ray's token authentication (Ray >= 2.52,
`RAY_AUTH_MODE=token`) anyone who reaches those ports runs commands as the user running Ray,
on every node. So worldwalk starts or joins a cluster only in token mode:

    secure_ray(address, insecure)      before ray.init: token mode on for this process and the
                                       Ray it starts; a token at hand (RAY_AUTH_TOKEN, the file
                                       RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token), made
                                       when a local cluster starts (0600), an existing file
                                       readable by others made private or refused; when joining,
                                       the cluster itself must refuse a caller without the token
    private_token_file(create)         `worldwalk cluster token`: the token file, made or fixed
    bind_replica_grpc_to_node_address  in a replica: Serve's inter-replica gRPC server listens on
                                       the node's address (Ray's own choice is every interface)

A refusal raises `InsecureCluster` with what to do; `--insecure-cluster` turns each into a
warning (INSECURE_WARNING says what it means). Nothing here imports Ray at module level.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_RAY = (2, 58)  # token authentication came in 2.52; Serve replicas' gRPC ports check it from 2.58
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
README_STEPS = "see the README's multi-machine steps (\"Many players: a Ray cluster\")"
INSECURE_WARNING = (
    "--insecure-cluster: this Ray cluster may run without token authentication. Anyone who can "
    "reach its ports (the GCS, 6379; each node's raylet, object manager and worker ports; the "
    "dashboard, 8265; every Serve replica's gRPC port) can run any command as the user running "
    "Ray, on every node, and read every walk. Use it only where no one else can reach the cluster "
    "network."
)


class InsecureCluster(Exception):
    """The cluster (or this machine's token) would let others run code; the message says why
    and what to do."""


@dataclass
class Secured:
    """What secure_ray did: notes worth a line, and the warnings --insecure-cluster let through."""

    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token_mode: bool = False

    def print(self, prog: str) -> None:
        for line in self.notes:
            print(f"{prog}: {line}", file=sys.stderr, flush=True)
        for line in self.warnings:
            print(f"{prog}: WARNING: {line}", file=sys.stderr, flush=True)


def token_path() -> Path:
    """The token file Ray reads: RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    named = os.environ.get(TOKEN_PATH_ENV)
    return Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"


def _shown(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) else text


def private_token_file(create: bool) -> tuple[Path, str | None]:
    """The token file, private: (path, a note of what was done, or None). Makes it (0600, a
    256-bit random token) when missing and `create`; an existing one that others may read is
    made 0600 when this user owns it. Raises InsecureCluster (missing and not `create`, not a
    regular file, empty, or readable by others and owned by someone else)."""
    path = token_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise InsecureCluster(
                f"no Ray authentication token here ({TOKEN_ENV} is not set and {_shown(path)} does not "
                f"exist). Copy the head node's token file to {_shown(path)} (mode 600) on this machine, or "
                f"set {TOKEN_ENV}; {README_STEPS}") from None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return path, f"made a Ray authentication token in {_shown(path)} (mode 600)"
    if not stat.S_ISREG(st.st_mode):
        raise InsecureCluster(f"the Ray token file {_shown(path)} is not a regular file")
    if st.st_size == 0:
        raise InsecureCluster(f"the Ray token file {_shown(path)} is empty; delete it (a local cluster makes "
                              "a new one) or copy the head node's token there")
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if not loose:
        return path, None
    if st.st_uid != os.getuid():
        raise InsecureCluster(
            f"the Ray token file {_shown(path)} is readable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):03o}) and belongs to another user, so it cannot be made private "
            f"here: anyone who reads it can run code on the cluster. Its owner should run "
            f"`chmod 600 {path}`, or point {TOKEN_PATH_ENV} at a private copy")
    os.chmod(path, 0o600)
    return path, (f"made the Ray token file {_shown(path)} private (mode 600; it was "
                  f"{stat.S_IMODE(st.st_mode):03o}, readable by other users)")


def is_auth_error(e: BaseException) -> bool:
    """Ray refused this process's token (or its lack of one)."""
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:
        return False
    return isinstance(e, AuthenticationError)


def ray_too_old(version: str | None = None) -> str | None:
    """Why the installed Ray cannot keep strangers out, or None."""
    if version is None:
        import ray

        version = ray.__version__
    try:
        numbers = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None  # a development build: no claim
    if numbers >= MIN_RAY:
        return None
    return (f"Ray {version} is too old to keep strangers out: token authentication came in Ray 2.52, and "
            f"before Ray {MIN_RAY[0]}.{MIN_RAY[1]} each Serve replica's gRPC port took calls without the token. "
            f"pip install 'ray[serve]>={MIN_RAY[0]}.{MIN_RAY[1]}'")


def _ray_auth_env_mode() -> str | None:
    mode = os.environ.get(AUTH_MODE_ENV)
    return mode.strip().lower() if mode is not None else None


def enable_token_mode() -> None:
    """RAY_AUTH_MODE=token for this process and the Ray processes it starts; Ray reads its
    configuration once, so it is read again."""
    os.environ[AUTH_MODE_ENV] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):
        pass


def unauthenticated_call(address: str, timeout: float = 5.0) -> str:
    """Ask the GCS at `address` (HOST:PORT) for its cluster id without a token: "refused" (token
    authentication is on), "answered" (off: anyone may call), or "unreachable"."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        from ray._common.tls_utils import load_certs_from_env

        cert, key, ca = load_certs_from_env()
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert))
    else:
        channel = grpc.insecure_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        return "answered"
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            return "refused"
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return "unreachable"
        return "refused" if "auth" in (e.details() or "").lower() else "unreachable"
    finally:
        channel.close()


def gcs_address(address: str | None) -> str | None:
    """HOST:PORT of the GCS a Ray address names ("auto": the cluster `ray start` left on this
    machine); None for a Ray Client address (ray://) or when none is found."""
    if address is None:
        return None
    from ray._private.services import get_ray_address_from_environment

    try:  # as ray.init reads it (RAY_ADDRESS, the file `ray start` leaves), loopback kept as given
        found = get_ray_address_from_environment(address, None)
    except (ValueError, ConnectionError):
        return None
    if not found or found in ("auto", "local") or "://" in found or ":" not in found:
        return None
    return found


def secure_ray(address: str | None, insecure: bool) -> Secured:
    """Call before ray.init. `address` None: a local cluster is about to start; else the
    cluster being joined. Raises InsecureCluster unless `insecure` (then: warnings)."""
    out = Secured()

    def refuse(why: str) -> None:
        if not insecure:
            raise InsecureCluster(why + ". To run without Ray's token authentication anyway, add "
                                  "--insecure-cluster (read what it means first: worldwalk prints it)")
        out.warnings.append(why)

    old = ray_too_old()
    if old:
        refuse(old)
    mode = _ray_auth_env_mode()
    if mode not in (None, "token"):
        refuse(f"{AUTH_MODE_ENV}={os.environ[AUTH_MODE_ENV]} turns Ray's token authentication off")
    else:
        has_token = bool(os.environ.get(TOKEN_ENV, "").strip())
        try:
            if not has_token:
                _, note = private_token_file(create=address is None)
                if note:
                    out.notes.append(note)
                has_token = True
        except InsecureCluster as e:
            refuse(str(e))
        except OSError as e:
            refuse(f"cannot make the Ray token file {_shown(token_path())}: {e.strerror or e}")
        if has_token:
            enable_token_mode()
            out.token_mode = True
    if address is not None:
        gcs = gcs_address(address)
        answer = unauthenticated_call(gcs) if gcs is not None else "unknown"
        if answer == "answered":
            refuse(f"the Ray cluster at {gcs} answers callers without a token: it was started without token "
                   f"authentication. Restart it (every node) with {AUTH_MODE_ENV}=token and the same token "
                   f"file; {README_STEPS}")
        elif answer == "refused" and not out.token_mode:  # Ray would retry for half a minute, then say "unreachable"
            raise InsecureCluster(f"the Ray cluster at {gcs} requires Ray's token, and this machine has none: "
                                  f"copy the head node's token file to {_shown(token_path())} (mode 600), or set "
                                  f"{TOKEN_ENV}; {README_STEPS}")
    if insecure:
        out.warnings.append(INSECURE_WARNING)
    return out


def bind_replica_grpc_to_node_address() -> str | None:
    """In a Serve replica, before Serve starts its inter-replica gRPC server (a deployment's
    constructor runs first): make it listen on this node's Ray address instead of every
    interface. Ray Serve has no setting for it, so its call that binds the port is wrapped;
    other replicas reach it at that address anyway (Serve publishes node address and port).
    Returns the address, or None when this Ray has no such call (then nothing changes)."""
    try:
        import ray
        from ray.serve._private import replica as serve_replica
    except ImportError:
        return None
    original: Any = getattr(serve_replica, "add_port_to_grpc_server", None)
    if original is None:
        return None
    if getattr(original, "node_address", None):
        return original.node_address
    ip = ray.util.get_node_ip_address()
    host = f"[{ip}]" if ":" in ip else ip

    def add_port(server: Any, address: str) -> int:
        if address in ("[::]:0", "0.0.0.0:0"):
            address = f"{host}:0"
        return original(server, address)

    add_port.node_address = ip  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = add_port
    return ip
