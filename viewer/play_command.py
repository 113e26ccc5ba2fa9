"""`worldwalk play`: walk through a world in a local window.

    worldwalk play [--world reference|bundled|sana-wm] [--checkpoint DIR] [--image first.png]
                   [--prompt TEXT] [--size WxH] [--window WxH] [--fullscreen] [--record out.mp4]
                   [--seconds N]

With no --world it plays the bundled model when that world is registered, else the reference
world. On exit it prints one JSON line with what the run measured (displayed fps, input-to-frame
latency, final pose, the HUD's lines, which backend each step ran on, ...) and exits 1 when the world
failed or the recording stopped early (a full disk: the HUD said so, the walk went on, the file keeps
what was written), 2 for bad input. pyglet is imported only when the command runs: it needs a display.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldwalk.runtime.args import (
    DEFAULT_WORLD_HELP,
    add_accel_argument,
    choose_world,
    display_problem,
    parse_size,
    world_problem,
)

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "play",
        help="walk through a world in a local window",
        description="Walk through a world in a local window (WASD, mouse, gamepad). F1 in the window "
        "lists the controls.",
    )
    p.add_argument("--world", default=None, help=DEFAULT_WORLD_HELP)
    p.add_argument("--checkpoint", metavar="DIR", default=None, help="checkpoint folder for a model world")
    p.add_argument("--mode", choices=("universal", "gta_drive", "templerun"), default=None,
                   help="matrix-game: which of the checkpoint's models to play (default: read off the weights)")
    p.add_argument("--image", metavar="PNG", default=None, help="first frame to start from")
    p.add_argument("--prompt", default=None, help="text prompt for worlds that take one")
    p.add_argument("--size", type=parse_size, metavar="WxH", default=None,
                   help="frame size the world generates (worlds with a fixed size keep theirs)")
    p.add_argument("--window", type=parse_size, metavar="WxH", default=None,
                   help="window size (default: the frame scaled up to 3/4 of the screen, 3/5 with software GL; "
                   "centred)")
    p.add_argument("--fullscreen", action="store_true")
    p.add_argument("--record", metavar="OUT.mp4", default=None,
                   help="record what is shown to a video, plus OUT.jsonl for `worldwalk render`")
    p.add_argument("--seconds", type=float, default=None, help="quit after this many seconds")
    add_accel_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bindings", metavar="TOML", default=None, help="key bindings overriding the defaults")
    p.add_argument("--nearest", action="store_true", help="nearest-neighbour upscaling instead of bicubic")
    p.add_argument("--no-timewarp", action="store_true", help="start with rotation timewarp off (T toggles)")
    p.add_argument("--no-hud", action="store_true", help="start with the HUD hidden (F2 toggles)")
    p.add_argument("--queue", type=int, metavar="FRAMES", default=None,
                   help="frames the model may run ahead of the screen (default: one chunk); "
                   "more absorbs slower chunks, fewer answers keys sooner")
    p.add_argument("--display-hz", type=float, default=60.0, help="redraw rate when vsync does not pace")
    p.add_argument("--screenshot-dir", default=None,
                   help="where F12 saves PNG screenshots (default: worldwalk/ in your pictures folder, "
                   "$XDG_PICTURES_DIR or ~/Pictures)")
    p.set_defaults(func=run)


def default_screenshot_dir() -> Path:
    """Where F12 screenshots go unless --screenshot-dir says: a worldwalk folder in the user's pictures
    folder ($XDG_PICTURES_DIR, else ~/Pictures), never the folder play happened to start in."""
    pictures = os.environ.get("XDG_PICTURES_DIR") or str(Path.home() / "Pictures")
    return Path(os.path.expanduser(pictures)) / "worldwalk"


def load_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the file, resized to the world's frame size if needed."""
    import numpy as np
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise SystemExit(f"worldwalk play: cannot read --image {path}: {e}") from e
    if image.size != size:
        print(f"worldwalk play: resizing {path} from {image.size[0]}x{image.size[1]} to the world's "
              f"{size[0]}x{size[1]}", file=sys.stderr)
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _open_recorder(session: Any, path: str, world_cfg: Any) -> Any:
    """The recorder (stream/record/recorder.py) for --record; imported only when asked for."""
    try:
        from worldwalk.stream.record.recorder import attach_recorder
    except ImportError as e:
        raise SystemExit(f"worldwalk play: --record needs worldwalk.stream.record.recorder ({e})") from e
    return attach_recorder(session, path, world_cfg=world_cfg)


def record_problem(path: str) -> str | None:
    """What is wrong with --record PATH before anything slow starts (None when it looks writable): a
    folder, or a folder that cannot be made or written. Failures later (a full disk) show in the HUD."""
    p = Path(path)
    if p.is_dir():
        return f"--record {path} is a folder; name a video file in it, e.g. {p / 'walk.mp4'}"
    folder = p.parent
    while not folder.exists() and folder != folder.parent:  # the folder is made when recording starts
        folder = folder.parent
    if not folder.is_dir():
        return f"--record {path}: {folder} is not a folder, so the video cannot be made there; choose another path"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--record {path}: the folder {folder} cannot be written (permission denied); choose one you can write"
    return None


def _close_recorder(recorder: Any) -> str | None:
    """Finalize the recording and say what it holds; returns why it stopped early, if it did."""
    try:
        rec = recorder.close()
    except Exception as e:  # the disk filled (or the folder went) during the walk: what was written is kept
        from worldwalk.stream.record.session_recording import describe_failure

        cause = e.__cause__ or e
        note = describe_failure(cause)
        print(f"worldwalk play: {note}: the recording stopped early ({cause}); {recorder.path} keeps what was "
              "recorded before that (it plays up to its last whole fragment)", file=sys.stderr)
        return note
    print(f"worldwalk play: recorded {rec.frames_written} frames to {rec.path}"
          + (f" (log {rec.log_path})" if rec.log_path else ""), file=sys.stderr)
    return None


NO_DISPLAY_FIX = ("Run it in a desktop session, under a virtual one (Xvfb :1 & DISPLAY=:1 worldwalk play), "
                  "or play in a browser with `worldwalk serve`.")


def run(args: argparse.Namespace) -> int:
    # Bad input and a missing display are answered first: the model (and torch) take seconds to load.
    name = choose_world(args.world, args.checkpoint)
    problem = world_problem(name, args.checkpoint)
    if problem:
        print(f"worldwalk play: {problem}", file=sys.stderr)
        return 2
    if args.image and not Path(args.image).is_file():
        print(f"worldwalk play: --image {args.image} is not a file", file=sys.stderr)
        return 2
    problem = record_problem(args.record) if args.record else None
    if problem:
        print(f"worldwalk play: {problem}", file=sys.stderr)
        return 2
    problem = display_problem()
    if problem:
        print(f"worldwalk play: no display to open a window on ({problem}). {NO_DISPLAY_FIX}", file=sys.stderr)
        return 2

    from worldwalk.controls import Bindings, BindingsError

    try:
        bindings = Bindings.load(args.bindings) if args.bindings else Bindings()
    except (BindingsError, OSError) as e:
        print(f"worldwalk play: --bindings: {e}", file=sys.stderr)
        return 2

    import pyglet

    pyglet.options["debug_gl"] = False  # a glGetError after every call costs more than drawing

    from worldwalk.controls import PoseIntegrator
    from worldwalk.runtime.session import Session, SessionConfig
    from worldwalk.runtime.world import UnknownWorldError, WorldConfig
    from worldwalk.runtime.worlds import create_world

    wcfg = WorldConfig(name=name, seed=args.seed, checkpoint=args.checkpoint, device=args.device, accel=args.accel,
                       options={"mode": args.mode} if getattr(args, "mode", None) else {})
    if args.size:
        wcfg.width, wcfg.height = args.size
    try:
        world = create_world(wcfg)
    except UnknownWorldError as e:
        print(f"worldwalk play: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from worldwalk.runtime.accel.apply import AccelUnavailable

        if args.world is not None or args.checkpoint or name == "reference" or isinstance(e, AccelUnavailable):
            print(f"worldwalk play: cannot open the {name} world: {e}", file=sys.stderr)
            return 2
        # no --world: the bundled model is the default, but the reference world always works
        print(f"worldwalk play: the {name} world is unavailable ({type(e).__name__}: {e}); "
              "playing the reference world", file=sys.stderr)
        wcfg.name = "reference"
        world = create_world(wcfg)
    # Only now import the window module: importing pyglet.window makes a GLX context current on
    # this thread, and a headless EGL world created after that renders black frames (Mesa).
    try:
        from .window import PlayWindow, WindowConfig
    except Exception as e:  # pyglet opens the display on import
        world.close()
        if "display" not in f"{type(e).__name__} {e}".lower():
            raise
        print(f"worldwalk play: no display to open a window on ({e}). {NO_DISPLAY_FIX}", file=sys.stderr)
        return 2

    spec = world.spec
    if note := spec.prompt_ignored(args.prompt):
        print(f"worldwalk play: {note}", file=sys.stderr)
    first = load_image(args.image, (spec.width, spec.height)) if args.image else None
    # The window paces frames itself (with its own jitter slack), so the queue only needs one
    # chunk: every frame queued beyond that is latency between a key press and its answer.
    queue = args.queue if args.queue else max(spec.frames_per_chunk, spec.first_chunk_frames)
    session = Session(
        world,
        SessionConfig(seed=args.seed, prompt=args.prompt, queue_capacity=queue),
        integrator=PoseIntegrator(bindings=bindings),
        first_frame=first,
    )
    recorder = None
    window = None
    stopped: str | None = None
    try:
        if args.record:
            try:
                recorder = _open_recorder(session, args.record, wcfg)  # before start: no chunk missed
            except (OSError, ValueError) as e:  # a full disk, an odd frame size: nothing is lost yet
                print(f"worldwalk play: cannot record to {args.record}: {e}", file=sys.stderr)
                return 2
        cfg = WindowConfig(
            size=args.window, fullscreen=args.fullscreen, seconds=args.seconds,
            filter="nearest" if args.nearest else "bicubic", timewarp=not args.no_timewarp,
            hud=not args.no_hud, display_hz=args.display_hz,
            screenshot_dir=args.screenshot_dir or str(default_screenshot_dir()),
        )
        label = spec.label or spec.name
        window = PlayWindow(session, cfg, bindings, recorder, title=f"worldwalk: {label}")
        session.start()  # after the window exists, so it is up while the first chunk is made
        figures = window.run()
    finally:
        session.close()
        if recorder is not None:
            stopped = _close_recorder(recorder)
    if recorder is not None:
        figures["recording"] = str(Path(args.record))
        figures["recording_error"] = figures.get("recording_error") or stopped
    print(json.dumps(figures), flush=True)
    return 1 if figures.get("error") or figures.get("recording_error") else 0
