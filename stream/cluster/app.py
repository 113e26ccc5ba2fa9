"""The cluster app: a gateway deployment in front of a session-host deployment, and how to run it.

    build_app(cfg)      the Ray Serve application (Gateway bound to a SessionHost handle)
    (stream/cluster_deploy.py's app_builder(args) builds it from a Serve config file's `args`)
    run_cluster(cfg)    `worldwalk serve --cluster [ADDRESS]`: start or join Ray, deploy, print
                        the URL, and on Ctrl-C take the app (and a Ray it started) down again
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import signal
import socket
import sys
import threading
from typing import Any

from .config import APP_NAME, NAMESPACE, STORE_NAME, ClusterConfig

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "worldwalk.stream.cluster.proxy_limits:middlewares"


def build_app(cfg: ClusterConfig) -> Any:
    from ray import serve

    from .gateway import Gateway
    from .session_host import SessionHost

    hosts = serve.deployment(SessionHost, name="SessionHost").options(**cfg.host_options()).bind(cfg)
    gateway = serve.deployment(
        Gateway, name="Gateway", num_replicas=1, max_ongoing_requests=10_000,
        ray_actor_options={"num_cpus": cfg.gateway_cpus},
    )
    return gateway.bind(hosts, cfg)


def cluster_config(args: argparse.Namespace, serve: Any) -> ClusterConfig:
    """A ClusterConfig from `worldwalk serve` flags and the ServeConfig built from them (serve_command's
    build_config, passed in: this module never imports serve_command, which imports it)."""
    overrides = {k: getattr(args, k, None) for k in ("replicas", "sessions_per_replica", "num_gpus", "num_cpus",
                                                     "min_replicas", "max_replicas", "admission_wait")}
    address = getattr(args, "cluster", None)
    return ClusterConfig(serve=serve, address=None if address in (None, "local") else address,
                         insecure=bool(getattr(args, "insecure_cluster", False)),
                         **{k: v for k, v in overrides.items() if v is not None})


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host if host not in ("", "::") else "0.0.0.0", 0))
        return s.getsockname()[1]


def page_url(cfg: ClusterConfig, port: int) -> str:
    from worldwalk.stream.webrtc.server import page_url as serve_page_url

    return serve_page_url(cfg.serve, port)


def proxy_options(serve: Any) -> dict[str, Any]:
    """serve.start's options that put proxy_limits.py's middleware in Serve's HTTP proxy: an
    environment variable of the controller, which the proxies it starts inherit (Serve has no
    other way since HTTPOptions.middlewares went). Only a controller started here takes them."""
    if "controller_options" not in inspect.signature(serve.start).parameters:
        return {}
    return {"controller_options": {"runtime_env": {"env_vars": {PROXY_CALLBACK_ENV: PROXY_CALLBACK}}}}


def start(cfg: ClusterConfig, http_port: int | None = None) -> str:
    """Start or join Ray (in token mode: security.py; raises InsecureCluster), deploy the app;
    returns the page URL."""
    import ray
    from ray import serve

    from .security import secure_ray

    port = http_port or cfg.serve.port or free_port(cfg.serve.host)
    if not ray.is_initialized():
        secure_ray(cfg.address, cfg.insecure).print("worldwalk serve")
        local: dict[str, Any] = {}
        if cfg.address is None:  # a local cluster fits what is asked (logical CPUs may exceed the cores)
            wanted = cfg.gateway_cpus + cfg.num_cpus * (cfg.max_replicas or cfg.replicas)
            local["num_cpus"] = max(os.cpu_count() or 1, math.ceil(wanted))
        if cfg.address is None:  # the local Ray's processes (Serve's proxy among them) inherit it
            os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
        # "local": a new cluster, never one another `ray start` on this machine left its address for
        ray.init(address=cfg.address or "local", namespace=NAMESPACE, log_to_driver=False, **local)
    serve.start(http_options={"host": cfg.serve.host, "port": port}, **proxy_options(serve))
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    return page_url(cfg, port)


def stop(cfg: ClusterConfig) -> None:
    """Take the app and the snapshot store down; stop Ray too when this process started it."""
    import ray
    from ray import serve

    serve.delete(APP_NAME)
    try:
        ray.kill(ray.get_actor(STORE_NAME, namespace=NAMESPACE))
    except ValueError:
        pass  # never made
    if cfg.address is None:
        serve.shutdown()
        ray.shutdown()


def run_cluster(cfg: ClusterConfig) -> int:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        print("worldwalk serve --cluster: Ray Serve is not installed; pip install 'worldwalk[cluster]'",
              file=sys.stderr)
        return 2
    where = f"joining the Ray cluster at {cfg.address}" if cfg.address else "starting a local Ray cluster"
    print(f"worldwalk serve: {where}", flush=True)
    from .security import InsecureCluster, is_auth_error

    try:
        url = start(cfg)
    except InsecureCluster as e:
        print(f"worldwalk serve: refusing to {'join' if cfg.address else 'start'} the Ray cluster: {e}",
              file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(f"worldwalk serve: cannot reach the Ray cluster at {cfg.address}: {e}. Start it with "
              "`ray start --head` (or check the address).", file=sys.stderr)
        return 1
    except Exception as e:
        if not is_auth_error(e):
            raise
        print(f"worldwalk serve: the Ray cluster at {cfg.address} refused this machine's token: {e}",
              file=sys.stderr)
        return 1
    print(f"worldwalk serve: open {url}", flush=True)
    if cfg.serve.require_token:
        print("worldwalk serve: the URL carries the access token; share it only with players", flush=True)
    print("worldwalk serve: `worldwalk cluster status` shows replicas and sessions; Ctrl-C stops", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    print("worldwalk serve: taking the cluster app down", file=sys.stderr, flush=True)
    stop(cfg)
    return 0
