"""`app_builder(args)`: the cluster app from a Serve config file's `args` (cluster/serve_config.yaml: `serve
deploy`, KubeRay's RayService); args.flags holds `worldwalk serve` flags. A command beside serve_command,
not in cluster/: it parses those flags with serve_command's parser, which imports cluster/ for `--cluster`."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from worldwalk.stream.serve_command import build_config, register

from .cluster.app import build_app, cluster_config


def app_builder(args: dict[str, Any]) -> Any:
    """Serve config entry point: `import_path: worldwalk.stream.cluster_deploy:app_builder`."""
    parser = argparse.ArgumentParser(prog="worldwalk")
    register(parser.add_subparsers())
    flags = args.get("flags", "")
    ns = parser.parse_args(["serve", *(shlex.split(flags) if isinstance(flags, str) else list(flags))])
    cfg = cluster_config(ns, build_config(ns))
    if cfg.serve.require_token and not ns.token:
        raise ValueError("a non-loopback --host needs --token in the Serve config's flags: a generated "
                         "token would be seen by no one")
    return build_app(cfg)
