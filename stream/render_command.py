"""`worldwalk render`: headless, a session log, an action string or a camera path -> MP4 + log.

    worldwalk render --log walk.jsonl -o again.mp4          # replay a recorded session
    worldwalk render --actions "w-24,jw-12" -o path.mp4     # the SANA-WM action DSL
    worldwalk render --path poses.npy --size 512x288        # (F, 4, 4) .npy or a JSON list of 4x4

The output gets its own session log (`again.jsonl`), so a render can be replayed in turn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from worldwalk.runtime.args import (
    ACCEL_CHOICES,
    ACTION_STRING_HELP,
    BUNDLED_SIZE,
    REFERENCE_SIZE,
    choose_world,
    parse_size,
    world_problem,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="render a session log, action string or camera path to a video (headless)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", metavar="FILE.jsonl", help="a session log written beside a recording")
    src.add_argument("--actions", metavar="STRING", help=ACTION_STRING_HELP)
    src.add_argument("--path", metavar="FILE", help="camera-to-world poses: .npy (F, 4, 4) or .json list of 4x4")
    p.add_argument("--world", help="registered world (default: the log's, else bundled when its weights are "
                   "installed, else reference)")
    p.add_argument("--checkpoint", metavar="DIR", help="model checkpoint (default: the log's)")
    p.add_argument("--mode", choices=("universal", "gta_drive", "templerun"), default=None,
                   help="matrix-game: which of the checkpoint's models (default: the log's, else read off the weights)")
    p.add_argument("--seed", type=int, help="seed (default: the log's, else 0)")
    p.add_argument("--size", type=parse_size, metavar="WxH",
                   help="frame size (default: the log's, else the world's: {}x{} for bundled, which always keeps "
                   "its own, {}x{} for reference)".format(*BUNDLED_SIZE, *REFERENCE_SIZE))
    p.add_argument("--device", help="torch device (default: the log's, else cpu)")
    p.add_argument("--accel", choices=ACCEL_CHOICES, default=None,
                   help="chunk-step backend (default: the log's, else auto); see worldwalk play --help")
    p.add_argument("-o", "--output", metavar="OUT.mp4", help="video to write (a .webm gets VP9)")
    p.add_argument("--force", action="store_true", help="render a log from another world, model or version")
    p.add_argument("--codec", choices=["auto", "h264", "vp9"], default=None,
                   help="video codec (default: the log's, else auto: by the output's suffix)")
    p.add_argument("--crf", type=int, help="quality (lower is better; default: the log's, else 20 for H.264, "
                   "32 for VP9)")
    p.add_argument("--preset", default=None, help="libx264 preset (default: the log's, so that a recording "
                   "replays to the same video, else medium)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _output(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    if args.log:
        return Path(args.log).with_suffix(".render.mp4")
    if args.path:
        return Path(args.path).with_suffix(".mp4")
    return Path("render.mp4")


def input_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, found before the model (and torch) load."""
    for flag, path in (("--log", args.log), ("--path", args.path)):
        try:
            if path and not Path(path).is_file():
                return f"{flag} {path} does not exist"
        except OSError as e:  # a name too long, a folder we may not enter
            return f"{flag} {path}: {e.strerror}"
    if args.log:
        return world_problem(args.world, None) if args.world and args.world != "sana-wm" else None
    return world_problem(choose_world(args.world, args.checkpoint), args.checkpoint)


def run(args: argparse.Namespace) -> int:
    from worldwalk.runtime.safe_files import printable

    problem = input_problem(args)
    if problem:
        print(f"worldwalk render: {printable(problem)}", file=sys.stderr)
        return 2
    from worldwalk.controls.action_string import ActionStringError
    from worldwalk.runtime.accel.apply import AccelUnavailable
    from worldwalk.runtime.world import UnknownWorldError

    from .record.recorder import RecorderError
    from .record.replay import (
        ReplayError,
        plan_from_actions,
        plan_from_log,
        plan_from_path,
        render_to_file,
    )

    out = _output(args)
    try:
        if args.log and out.with_suffix(".jsonl").resolve() == Path(args.log).resolve():
            raise ReplayError(f"-o {out} would overwrite the log being rendered ({args.log}); choose another name")
        if args.log:
            plan = plan_from_log(
                args.log, world=args.world, checkpoint=args.checkpoint, seed=args.seed,
                size=args.size, device=args.device, accel=args.accel, force=args.force,
            )
        else:
            w, h = args.size or REFERENCE_SIZE
            kw = dict(world=choose_world(args.world, args.checkpoint), seed=args.seed or 0, width=w, height=h,
                      checkpoint=args.checkpoint, device=args.device or "cpu", accel=args.accel or "auto")
            plan = plan_from_actions(args.actions, **kw) if args.actions else plan_from_path(args.path, **kw)
        if args.mode:
            mode_check(plan, args.mode)
            plan.world_options["mode"] = args.mode
        cfg = encoder_config(plan.header, codec=args.codec, crf=args.crf, preset=args.preset)
        result = render_to_file(plan, out, cfg, progress=not args.no_progress)
    except ActionStringError as e:
        print(f"worldwalk render: bad --actions string: {printable(e)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, UnknownWorldError, RecorderError, AccelUnavailable) as e:  # named fixes
        print(f"worldwalk render: {printable(e)}", file=sys.stderr)  # paths from a log may hold escape codes
        return 2
    except OSError as e:  # a path the system refuses (a name too long, no permission): said plainly
        print(f"worldwalk render: {printable(e)}", file=sys.stderr)
        return 1
    print(
        f"wrote {printable(result.path)} ({result.frames} frames, {result.size[0]}x{result.size[1]} "
        f"at {result.content_fps:g} fps; "
        f"rendered at {result.fps:.1f} fps) and its log {printable(result.log_path)}",
        file=sys.stderr,
    )
    return 0


def mode_check(plan: Any, mode: str) -> None:
    """`--mode` names a Matrix-Game model; a log replays only in the mode it was recorded in (its label
    says it; its chunks' keyboard width tells it too). A contradiction is a ValueError naming both."""
    from worldwalk.runtime.matrix_game.checkpoint import KEYBOARD_WIDTH_MODE

    if plan.world != "matrix-game":
        raise ValueError(f"--mode picks a Matrix-Game model (--world matrix-game), not a mode of the "
                         f"{plan.world} world")
    header = plan.header or {}
    label = str(header.get("label", ""))
    recorded = (header.get("world_options") or {}).get("mode")
    if recorded is None and label.startswith("Matrix-Game") and label.endswith(")"):
        recorded = label.rsplit("(", 1)[-1].rstrip(")")
    for step in plan.steps or []:
        if recorded is None and step.actions is not None:
            recorded = KEYBOARD_WIDTH_MODE.get(len(step.actions["keyboard"][0]))
    if recorded is not None and recorded != mode:
        raise ValueError(f"--mode {mode} contradicts {plan.source}: it was recorded in mode {recorded} "
                         f"(a log replays in its own mode; drop --mode)")


# the encoder settings a session log carries that decide the bits of the video (threads too: x264's
# output depends on its thread count)
ENCODER_FIELDS = ("codec", "crf", "preset", "tune", "vp9_cpu_used", "keyframe_seconds", "threads")


def encoder_config(header: dict | None, **flags: object) -> object:
    """The recorder config a render encodes with: the log's own encoder settings when rendering a log
    (so a recording replays to the same video), else an offline default (medium preset, all threads);
    the flags given (not None) win."""
    from .record.recorder import RecorderConfig

    logged = ((header or {}).get("settings") or {}).get("recorder")
    if isinstance(logged, dict):
        base = {k: logged[k] for k in ENCODER_FIELDS if k in logged}
    else:
        base = {"preset": "medium", "tune": None, "threads": 0}
    base.update({k: v for k, v in flags.items() if v is not None})
    try:
        return RecorderConfig(**base)
    except TypeError as e:
        raise ValueError(f"the log's encoder settings cannot be used ({e}); pass --codec/--crf/--preset") from e
