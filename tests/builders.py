"""What the tests build again and again, built one way.

- One tiny world per family: the reference world's config (`reference_config`, `TINY_REFERENCE`), the
  tiny SANA-WM (`tiny_sana_wm_configs`, `tiny_world`, with `tiny_transformer` and `tiny_cameras` on its
  token grid), the tiny random Matrix-Game world's config (`matrix_game_config`; the world object itself
  is `runtime.matrix_game.world.random_world("tiny")`) and its DiT and VAE with the goldens' weights
  (`tiny_matrix_game_models`). The engine's test double is tests/timed_world.py.
- A loopback `ServeConfig` (`serve_config`); the aiortc client is tests/webrtc_client.py.
- A wait for a condition with a deadline that names what it waited for (`wait_for` in asyncio,
  `poll_until` in plain threads), and a clock the test moves (`ManualClock`) for the session, the pacer
  and the input box.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from worldwalk.runtime.world import WorldConfig

if TYPE_CHECKING:
    from worldwalk.runtime.matrix_game import CausalDiT, MatrixGameConfig, WanVAE
    from worldwalk.runtime.sana_wm import SanaWMConfig, SanaWMStreamingTransformer
    from worldwalk.runtime.sana_wm.model import SanaWM
    from worldwalk.stream.webrtc.server import ServeConfig

# ---- the reference world ------------------------------------------------------------------------------


def reference_config(width: int = 64, height: int = 32, **kw: Any) -> WorldConfig:
    """The reference world (GL-rendered, no model) at a small size; `kw` goes to `WorldConfig` (fps, seed, ...)."""
    return WorldConfig(name="reference", width=width, height=height, **kw)


TINY_REFERENCE = reference_config(fps=20.0)

# ---- the tiny SANA-WM ---------------------------------------------------------------------------------

STRIDE, CHUNK = 4, 3  # video frames per latent frame; latent frames per chunk
LATENT_H, LATENT_W = 3, 4  # the tiny transformer's token grid (tiny_transformer / tiny_cameras)
WORLD_H, WORLD_W = 48, 64  # the tiny world's frames (16x VAE: a 3x4 latent grid)


def tiny_sana_wm_configs(softmax_bf16: bool = False, vae_width: int = 8) -> tuple[SanaWMConfig, dict]:
    """`SanaWMConfig.tiny()` (8 latent channels, Plücker channels for the 4-frame VAE stride) and a small
    LTX-2 VAE of `vae_width` (8; 16 is `small_vae_config`'s own). The softmax runs in fp32 (fast on a CPU)
    unless `softmax_bf16`, SANA-WM's own setting, which the checkpoint formats assume."""
    from worldwalk.runtime.sana_wm import SanaWMConfig
    from worldwalk.runtime.sana_wm.vae import small_vae_config

    cfg = SanaWMConfig.tiny(softmax_bf16=softmax_bf16, chunk_plucker_channels=6 * STRIDE, in_channels=8)
    return cfg, small_vae_config(temporal_stride=STRIDE, latent_channels=8, width=vae_width)


def tiny_world(softmax_bf16: bool = False, vae_width: int = 8, **run: Any) -> SanaWM:
    """A random-init `SanaWM` (seed 0) of `tiny_sana_wm_configs`: 64x48 frames, 13 then 12 a chunk; `run`
    goes to `SanaWMRunConfig` (device, dtype, ...)."""
    from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig

    cfg, vae = tiny_sana_wm_configs(softmax_bf16, vae_width)
    return SanaWM.random_init(cfg, vae, SanaWMRunConfig(width=WORLD_W, height=WORLD_H, **run), seed=0)


def tiny_transformer(**overrides: Any) -> SanaWMStreamingTransformer:
    """`SanaWMConfig.tiny()` transformer (fp32 softmax), seeded, with the zero-initialised camera and
    Plücker paths switched on so tests see them."""
    import torch

    from worldwalk.runtime.sana_wm import SanaWMConfig, SanaWMStreamingTransformer

    torch.manual_seed(0)
    cfg = SanaWMConfig.tiny(softmax_bf16=False, chunk_plucker_channels=6 * STRIDE, **overrides)
    m = SanaWMStreamingTransformer(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.abs().sum() == 0 or ("norm" in name and name.endswith("weight")):
                p.normal_(0.0, 0.2 if p.ndim < 2 else p.shape[-1] ** -0.5)
    return m


def tiny_cameras(chunks: int) -> list:
    """CameraInputs of `chunks` chunks on the tiny token grid: walking forward while turning."""
    from worldwalk.runtime.sana_wm.camera import build_camera_inputs

    frames = 1 + CHUNK * STRIDE * chunks
    poses, Ks = {}, {}
    for f in range(frames):
        a = 0.04 * f
        P = np.eye(4)
        P[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        P[:3, 3] = [0.03 * f, 0.0, 0.05 * f]
        poses[f], Ks[f] = P, np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    out = []
    for c in range(chunks):
        lat = list(range(0, 1 + CHUNK)) if c == 0 else list(range(1 + CHUNK * c, 1 + CHUNK * (c + 1)))
        out.append(build_camera_inputs(poses, Ks, lat, STRIDE, (LATENT_H * 16, LATENT_W * 16), (LATENT_H, LATENT_W)))
    return out

# ---- the tiny Matrix-Game -----------------------------------------------------------------------------


def matrix_game_config(seed: int = 0, **options: Any) -> WorldConfig:
    """The tiny random Matrix-Game world as a config (for a server or a pool to build)."""
    return WorldConfig(name="matrix-game", seed=seed, options={"random_init": "tiny", **options})


def tiny_matrix_game_models(cfg: MatrixGameConfig) -> tuple[CausalDiT, WanVAE]:
    """The DiT and the VAE of a `MatrixGameConfig.tiny()` with the goldens' weights
    (tests/goldens/matrix_game_tiny.py), in eval mode."""
    import torch

    from tests.goldens import matrix_game_tiny
    from worldwalk.runtime.matrix_game import CausalDiT, WanVAE

    torch.manual_seed(0)
    dit = CausalDiT(cfg).eval()
    vae = WanVAE(dim=cfg.vae_dim, z_dim=cfg.out_dim).eval()
    matrix_game_tiny.fill_weights(dit)
    matrix_game_tiny.fill_weights(vae)
    return dit, vae

# ---- serving ------------------------------------------------------------------------------------------


def serve_config(world: WorldConfig = TINY_REFERENCE, *, barcode: bool = False, **overrides: Any) -> ServeConfig:
    """A server on 127.0.0.1 (any free port) whose peers offer only loopback candidates; `barcode`
    stamps each frame's index into its pixels (FanoutConfig) so clients can tell frames apart."""
    from worldwalk.stream.webrtc.peer import PeerConfig
    from worldwalk.stream.webrtc.server import ServeConfig
    from worldwalk.stream.webrtc.video_track import FanoutConfig

    cfg: dict[str, Any] = dict(host="127.0.0.1", port=0, world=world,
                               peer=PeerConfig(candidate_addresses=["127.0.0.1"]))
    if barcode:
        cfg["fanout"] = FanoutConfig(barcode=True)
    cfg.update(overrides)
    return ServeConfig(**cfg)

# ---- waiting ------------------------------------------------------------------------------------------


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """The browser bench's wait (stream/browser_bench.py: one wait for the tests and the bench), imported
    when first used so model tests do not load aiortc."""
    from worldwalk.stream.browser_bench import wait_for as wait

    return await wait(pred, timeout, what, interval)


class ManualClock:
    """A clock that moves only when the test sets `t`. Reads from threads other than the one that made
    it (a session's model thread) are counted in `reads` and wake `changed`, so a test can wait until
    that thread has looked at the time it set."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t
        self.reads = 0
        self.changed = threading.Condition()
        self._owner = threading.get_ident()

    def __call__(self) -> float:
        if threading.get_ident() != self._owner:
            with self.changed:
                self.reads += 1
                self.changed.notify_all()
        return self.t

    def settle(self, done: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
        """Wait (real time, the clock standing still) until `done()`; woken by every read of another
        thread and rechecked every 2 ms. TimeoutError naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.changed.wait(0.002)


def poll_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    """`wait_for` for plain threads: the first truthy value of `pred()`, polled every `interval` seconds;
    TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def pump_frames(session: Any, write: Callable[[Any], Any], stop: threading.Event) -> threading.Thread:
    """A thread giving every frame of `session` to `write` (a recording's part of the fan-out) until `stop`."""

    def run() -> None:
        while not stop.is_set():
            frame = session.frames.get(timeout=0.05)
            if frame is not None:
                write(frame)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def kept_within_budget(world: Any, budget: float, chunks: int = 6) -> tuple[list, float]:
    """The boundaries a session of `world` keeps after `chunks` chunks with a snapshot budget of `budget`
    bytes (and the budget): what the memory tests of each world family check against its plan."""
    from worldwalk.runtime.session import Session, SessionConfig

    session = Session(world, SessionConfig(queue_capacity=400, just_in_time=False, snapshot_budget_mb=budget / 1e6))
    with session.start():
        deadline = time.monotonic() + 120
        while session.stats()["chunks"] < chunks:
            assert time.monotonic() < deadline and session.error is None, session.error
            session.frames.get(timeout=0.1)
        kept = list(session._boundaries)
    return kept, budget
