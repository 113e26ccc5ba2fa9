"""`worldwalk serve`: sessions in the browser over WebRTC.

    worldwalk serve [--host H] [--port P] [--world NAME | --checkpoint DIR] [--max-sessions N]
                    [--token T] [--record-dir DIR] [--config TOML] ...

Binds 127.0.0.1 unless told otherwise. Binding any other address requires a token: `--token`,
or one is generated; the URL to open is printed with it. Settings come from the `[server]`
section of `--config` (keys of `ServeConfig`, plus `ice_servers`, `candidate_addresses`,
`max_bitrate`), with flags overriding them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from worldwalk.runtime.args import DEFAULT_WORLD_HELP, add_accel_argument, choose_world, parse_size, world_problem


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve sessions to browsers over WebRTC",
        description="Serve worlds to browsers: each browser gets its own session, streamed over WebRTC, "
        "steered with keyboard, mouse or gamepad. Open the printed URL.",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=None, help="port to bind (default 8080; 0 picks one)")
    p.add_argument("--world", default=None, help=DEFAULT_WORLD_HELP)
    p.add_argument("--checkpoint", metavar="DIR", default=None, help="checkpoint folder for a model world")
    p.add_argument("--mode", choices=("universal", "gta_drive", "templerun"), default=None,
                   help="matrix-game: which of the checkpoint's models to serve (default: read off the weights)")
    p.add_argument("--size", type=parse_size, metavar="WxH", default=None, help="frame size (resolution) to generate")
    p.add_argument("--fps", type=float, default=None, help="content frame rate of worlds that take one")
    p.add_argument("--seed", type=int, default=None)
    add_accel_argument(p)
    p.add_argument("--prompt", default=None, help="text prompt for worlds that take one")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="players at once (default: on a GPU what the memory plan fits beside the one shared model, "
                        "its graphs and pinned snapshots; 4 on the CPU)")
    p.add_argument("--batch-sessions", action="store_true", default=None,
                   help="sessions in step share forwards of the one model (a batch dimension; eager model only)")
    p.add_argument("--max-spectators", type=int, default=None, help="spectators per session (default 8)")
    p.add_argument("--idle-timeout", type=float, default=None, help="seconds without input before a session ends")
    p.add_argument("--token", default=None, help="access token (generated when binding a non-loopback address)")
    p.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN",
                   help="another page origin allowed to open sessions (repeatable)")
    p.add_argument("--record-dir", metavar="DIR", default=None, help="record every session into DIR")
    p.add_argument("--bitrate", type=int, default=None, metavar="BPS", help="maximum video bitrate, bits/s")
    p.add_argument("--codec", choices=["h264", "vp8"], default=None,
                   help="preferred video codec (default h264 when the browser offers it, else vp8)")
    p.add_argument("--ice-server", action="append", default=None, metavar="URL",
                   help="STUN/TURN server for both ends, e.g. stun:stun.example.org:3478 (repeatable)")
    p.add_argument("--ice-username", default=None, help="username for the TURN servers")
    p.add_argument("--ice-credential", default=None, help="credential for the TURN servers")
    p.add_argument("--candidate-address", action="append", default=None, metavar="IP",
                   help="host-candidate address to offer (repeatable; 'auto' = every non-loopback "
                        "address; default auto, or 127.0.0.1 when there is none)")
    p.add_argument("--config", metavar="TOML", default=None, help="settings file ([world], [session], [server], ...)")
    from .cluster.flags import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    """A ServeConfig from the config file and the flags (flags win)."""
    from worldwalk.runtime.cli.app_config import AppConfig, build_foreign

    from .record.recorder import RecorderConfig
    from .webrtc.peer import IceServerConfig, PeerConfig
    from .webrtc.server import ServeConfig

    app = AppConfig.load(args.config)
    table = dict(app.sections.get("server", {}))
    peer_table = {k: table.pop(k) for k in ("ice_servers", "candidate_addresses", "max_bitrate", "codecs")
                  if k in table}
    ice = [IceServerConfig(**s) if isinstance(s, dict) else IceServerConfig(urls=[s])
           for s in peer_table.pop("ice_servers", [])]
    if args.ice_server:
        turn_user = {"username": args.ice_username, "credential": args.ice_credential}
        ice += [IceServerConfig(urls=[u], **(turn_user if u.startswith("turn") else {})) for u in args.ice_server]
    if args.candidate_address:
        peer_table["candidate_addresses"] = args.candidate_address
    if args.bitrate is not None:
        peer_table["max_bitrate"] = args.bitrate
    if args.codec:
        order = ("video/H264", "video/VP8") if args.codec == "h264" else ("video/VP8", "video/H264")
        peer_table["codecs"] = order
    peer = PeerConfig(ice_servers=ice, **peer_table)
    if getattr(args, "batch_sessions", None):
        table["batch_sessions"] = True

    world = app.world
    if args.world or args.checkpoint or args.config is None:
        world.name = choose_world(args.world, args.checkpoint)
    if args.checkpoint:
        world.checkpoint = args.checkpoint
    if getattr(args, "mode", None):
        world.options = {**world.options, "mode": args.mode}
    world.accel = args.accel
    if args.size:
        world.width, world.height = args.size
    if args.fps:
        world.fps = args.fps
    session = app.session
    if args.seed is not None:
        session.seed = world.seed = args.seed
    if args.prompt is not None:
        session.prompt = args.prompt

    app.sections["server"] = table
    return build_foreign(
        ServeConfig, app, "server",
        host=args.host, port=args.port, max_sessions=args.max_sessions, max_spectators=args.max_spectators,
        idle_timeout=args.idle_timeout, token=args.token, allowed_origins=args.allow_origin,
        record_dir=args.record_dir, world=world, session=session, controls=app.controls,
        bindings=app.bindings, peer=peer, recorder=build_foreign(RecorderConfig, app, "recorder"),
    )



async def serve_until_stopped(cfg: Any) -> None:
    from .webrtc.server import StreamServer

    server = StreamServer(cfg)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"worldwalk serve: open {server.url}", flush=True)
    if cfg.host in ("0.0.0.0", "::", ""):
        import socket

        other = server.url.replace("127.0.0.1", socket.gethostname(), 1)
        print(f"worldwalk serve: from other machines: {other}", flush=True)
    if cfg.require_token:
        print("worldwalk serve: the URL carries the access token; share it only with players", flush=True)
    try:
        await stop.wait()
    finally:
        print("worldwalk serve: shutting down, closing every session", file=sys.stderr, flush=True)
        await server.close()


def run(args: argparse.Namespace) -> int:
    import logging

    if not getattr(args, "verbose", False):  # one line per HTTP request and ICE check is noise
        for name in ("websockets", "aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.world or args.checkpoint:  # answered before the server and the model load
        problem = world_problem(choose_world(args.world, args.checkpoint), args.checkpoint)
        if problem:
            print(f"worldwalk serve: {problem}", file=sys.stderr)
            return 2
    if getattr(args, "cluster", None):
        from .cluster.app import cluster_config, run_cluster

        try:
            cluster = cluster_config(args, build_config(args))
        except (ValueError, TypeError) as e:
            print(f"worldwalk serve: {e}", file=sys.stderr)
            return 2
        return run_cluster(cluster)
    try:
        cfg = build_config(args)
    except (ValueError, TypeError) as e:
        print(f"worldwalk serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_until_stopped(cfg))
    except OSError as e:
        print(f"worldwalk serve: cannot listen on {cfg.host}:{cfg.port}: {e}. "
              "Choose another --port (or --port 0 for any free one).", file=sys.stderr)
        return 1
    return 0
