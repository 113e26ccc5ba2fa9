"""`worldwalk info`: what this machine offers worldwalk (versions, devices, GL, worlds)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from .args import bundled_weights_folder, parse_size
from .version import __version__


def gather(gl: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {
        "worldwalk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        devices = ["cpu"]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                devices.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
        info["torch_devices"] = devices
        info["torch_threads"] = torch.get_num_threads()
    except Exception as e:  # torch is a dependency, but say so plainly if it is broken
        info["torch"] = f"unavailable ({type(e).__name__}: {e})"
        info["torch_devices"] = []
    if gl:
        info["gl"] = _gl_info()
    from worldwalk.runtime.world import available_worlds

    info["worlds"] = sorted(available_worlds())
    info["checkpoints"] = _checkpoints()
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gl_info() -> dict[str, str]:
    try:
        import moderngl

        ctx = moderngl.create_standalone_context(backend="egl")
        try:
            return {
                "renderer": ctx.info["GL_RENDERER"],
                "version": ctx.info["GL_VERSION"],
                "vendor": ctx.info["GL_VENDOR"],
            }
        finally:
            ctx.release()
    except Exception as e:
        return {
            "renderer": f"unavailable ({type(e).__name__}: {e})",
            "hint": "install the EGL/Mesa packages: apt-get install libegl1 libgl1-mesa-dri libegl-mesa0",
        }


def _checkpoints() -> list[str]:
    """Bundled weights shipped in the package."""
    folder = bundled_weights_folder()
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors"))


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
