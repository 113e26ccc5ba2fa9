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

from worldwalk.runtime.version import __version__


def _broken(name: str, error: BaseException) -> int:
    print(
        f"worldwalk {name}: this command failed to load ({type(error).__name__}: {error}).\n"
        "Reinstall with `pip install -e .[test]` or check the dependency named above.",
        file=sys.stderr,
    )
    return 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only `command`'s when it names one: a command's start
    then imports no other command's module."""
    parser = argparse.ArgumentParser(
        prog="worldwalk",
        description="Walk through worlds that a video world model dreams up: play, serve, record.",
    )
    parser.add_argument("--version", action="version", version=f"worldwalk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = sorted(entry_points(group="worldwalk.commands"), key=lambda e: e.name)
    if command in {ep.name for ep in commands}:
        commands = [ep for ep in commands if ep.name == command]
    for ep in commands:
        try:
            ep.load()(sub)
        except Exception as e:  # keep the other commands usable
            p = sub.add_parser(ep.name, help=f"(unavailable: {type(e).__name__})")
            p.set_defaults(func=lambda args, _n=ep.name, _e=e: _broken(_n, _e))
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported with its own command's usage (`play --wrold`
    prints play's usage, not the top-level one)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(args, "command", None)
        subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        target = subparsers.choices.get(command, parser) if subparsers and command else parser
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words == ["--version"]:  # answered without loading any command
        print(f"worldwalk {__version__}")
        return 0
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parse(parser, argv)
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
