"""The machine worldwalk runs on (versions, devices, GL renderer, worlds, bundled weights): `worldwalk info`
prints it, and every bench report carries it beside its figures."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from worldwalk.runtime.args import bundled_weights_folder
from worldwalk.runtime.version import __version__


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
