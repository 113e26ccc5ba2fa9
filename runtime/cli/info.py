"""`worldwalk info`: what this machine offers worldwalk (versions, devices, GL, worlds)."""

from __future__ import annotations

import argparse
import json

from worldwalk.runtime.args import parse_size
from worldwalk.runtime.bench.machine import gather


def run(args: argparse.Namespace) -> int:
    if args.world:  # the memory plan of a model world (imports torch, so only when asked)
        from worldwalk.runtime.bench.memory_plan import run_plan

        return run_plan(args)
    info = gather(gl=not args.no_gl)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        print(f"{key:<{width}}  {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices, GL renderer, worlds and checkpoints")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-gl", action="store_true", help="skip the GL probe")
    g = p.add_argument_group("memory plan of a world (--world sana-wm): weights, per-session state, peak, sessions")
    g.add_argument("--world", help="print the GPU memory plan of this world (sana-wm) instead of the machine info")
    g.add_argument("--checkpoint", metavar="DIR", help="plan for the model in this local checkpoint folder")
    g.add_argument("--random-init", choices=("full", "small"), help="plan the released size (full) or the small one")
    g.add_argument("--mode", choices=("universal", "gta_drive", "templerun"), default=None,
                   help="matrix-game: plan this model (default: read off the checkpoint's weights, else universal)")
    g.add_argument("--size", type=parse_size, metavar="WxH", default=(1280, 704),
                   help="WIDTHxHEIGHT of the video, as everywhere in worldwalk (default 1280x704)")
    g.add_argument("--gpu-memory", default="80GB", help="GPU memory to fit sessions into (default 80GB)")
    g.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="weights and activations (default bfloat16)")
    g.add_argument("--snapshots", type=int,
                   help="rewind snapshots each session keeps (default: as many as its memory budget holds)")
    p.set_defaults(func=run)
