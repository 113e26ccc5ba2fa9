"""The `worldwalk` command: one parser, subcommands contributed by each folder.

Subcommands come from the `worldwalk.commands` entry-point group: each is a
`register(subparsers)` that adds its parser and sets `func=run`. `runtime` itself never imports
`viewer` or `stream`. A plugin that fails to import does not take the others down: its command
stays listed and, when invoked, says what went wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from .version import __version__


def _broken(name: str, error: BaseException) -> int:
    print(
        f"worldwalk {name}: this command failed to load ({type(error).__name__}: {error}).\n"
        "Reinstall with `pip install -e .[test]` or check the dependency named above.",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldwalk",
        description="Walk through worlds that a video world model dreams up: play, serve, record.",
    )
    parser.add_argument("--version", action="version", version=f"worldwalk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group="worldwalk.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as e:  # keep the other commands usable
            p = sub.add_parser(ep.name, help=f"(unavailable: {type(e).__name__})")
            p.set_defaults(func=lambda args, _n=ep.name, _e=e: _broken(_n, _e))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
