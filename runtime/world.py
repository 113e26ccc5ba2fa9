"""The model seam: `WorldModel`, `ModelSpec`, and the registry of worlds.

A world is anything that turns camera poses into chunks of frames. Worlds register under the
`worldwalk.worlds` entry-point group (a factory `create(cfg: WorldConfig) -> WorldModel`), so a
world model from another package plugs in without touching this one. `create_world` (runtime/worlds/)
builds a registered world and applies its `--accel` backend.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .chunk import Chunk

log = logging.getLogger(__name__)


# `serve --max-sessions` on the CPU, where compute, not memory, bounds the players (on a GPU the memory
# plan says: stream/webrtc/admission.py:default_max_sessions)
CPU_SESSIONS = 4


@dataclass(frozen=True)
class ModelSpec:
    """What downstream code needs to know about a world's output."""

    name: str
    fps: float  # content frame rate
    frames_per_chunk: int
    first_chunk_frames: int  # the first chunk may differ (SANA-WM: the first image plus 3 latents)
    width: int
    height: int
    device: str = "cpu"
    dtype: str = "float32"
    is_model: bool = True  # False for renderers of ground truth (the reference world)
    label: str = ""  # what the HUD and logs call it
    takes_prompt: bool = False  # whether reset's text prompt steers it (SANA-WM); others ignore it
    # what the player's input steers: "camera" (a 6-DoF camera path; the window timewarps its
    # frames by the look commanded since) or "actions" (per-frame keyboard and mouse actions read
    # from the input timeline by the world's `use_input`; no known angle per unit, no timewarp)
    steering: str = "camera"

    def prompt_ignored(self, prompt: str | None) -> str | None:
        """The note a command prints when it was given a prompt this world does not read, else None."""
        if prompt and not self.takes_prompt:
            return f"--prompt is ignored: the {self.name} world takes no text prompt"
        return None

    def chunk_frames(self, chunk_index: int) -> int:
        return self.first_chunk_frames if chunk_index == 0 else self.frames_per_chunk


@runtime_checkable
class WorldModel(Protocol):
    spec: ModelSpec

    def reset(self, first_frame: np.ndarray | None, prompt: str | None, seed: int) -> None: ...

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        """poses (F, 4, 4) camera-to-world, intrinsics (F, 3, 3); F = spec.chunk_frames(k)."""
        ...

    def snapshot(self) -> object: ...

    def restore(self, snapshot: object) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Accelerable(Protocol):
    """A world whose steps `runtime/accel` can run through a faster backend (torch.compile, ONNX
    Runtime, TensorRT, CUDA graphs). It exports them as two attributes that accel reads and replaces:
    `rollout`, holding the chunk-step module (`rollout.transformer`) and a slot for a stand-in with the
    same call signature (`rollout.backend`, None = eager), and `vae`, whose `decode_chunk(z, state)`
    a wrapper with the same interface may take over. Whoever builds the world applies the backend
    (`create_world` in runtime/worlds/, which builds the graphs at once). An optional `backends()`
    says what each step runs on now ({"chunk": "onnx", "decode": "eager (onnx failed)"}), read through
    `step_backends` for the HUD, the page and the exit figures: nothing falls back silently.

    Worlds never import accel: accel imports the steps it runs, and the builder imports accel.
    """

    rollout: Any
    vae: Any


def step_backends(world: Any) -> dict[str, str]:
    """What each accelerable step of `world` runs on now (its `backends()`); {} for a world without."""
    backends = getattr(world, "backends", None)
    return dict(backends()) if callable(backends) else {}


def backends_text(backends: dict[str, str] | None) -> str:
    """`step_backends` in one short line, as the HUD and the page show it: "chunk: onnx · decode: eager
    (onnx failed)"; "" for a world with no such steps (the reference world)."""
    return " · ".join(f"{part}: {where}" for part, where in (backends or {}).items())


@dataclass
class WorldConfig:
    """How to build a world: its registered name plus options each world reads as it likes."""

    name: str = "reference"
    width: int = 256
    height: int = 144
    fps: float = 16.0
    seed: int = 0
    checkpoint: str | None = None
    device: str = "cpu"
    accel: str = "none"  # chunk-step backend: none, compile, onnx, tensorrt, cudagraph, auto (runtime/accel/)
    options: dict[str, Any] = field(default_factory=dict)


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be loaded; the message names what was expected and where it
    comes from."""


class UnknownWorldError(LookupError):
    pass


def available_worlds() -> dict[str, Any]:
    """Registered world factories by name (entry points, loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group="worldwalk.worlds")}


def load_world_code(cfg: WorldConfig) -> None:
    """Import the code of the world `cfg` names without building one (nothing for an unknown name).

    A server calls this at start: a first `import torch` leaves a reference cycle of frames behind
    (torch.fx captures its caller's frame), and every frame on the stack at that moment keeps its
    locals; had the import happened inside a world's build, that world would stay in memory until
    the cyclic garbage collector ran."""
    entry = available_worlds().get(cfg.name)
    if entry is not None:
        entry.load()


def default_world_name() -> str:
    """The world `play`, `serve` and `render` use when none is named: the bundled model when its
    weights are installed, else the reference world. A bundled world that cannot be loaded at all
    (a broken install) is logged, not hidden, and the reference world plays."""
    worlds = available_worlds()
    if "bundled" in worlds:
        try:
            module = importlib.import_module(worlds["bundled"].load().__module__)
        except (ImportError, AttributeError) as e:
            log.warning("the bundled world does not import (%s: %s); playing the reference world",
                        type(e).__name__, e)
            return "reference"
        if getattr(module, "weights_available", lambda: False)():
            return "bundled"
    return "reference"
