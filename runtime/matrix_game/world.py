"""`create(cfg)`: the `matrix-game` entry of the `worldwalk.worlds` registry, and `MatrixGameWorld`.

Needs `cfg.checkpoint` (the official folder, see checkpoint.py), or `options["random_init"]` =
"tiny" | "full" for random weights (tests, benchmarks). Options (`OPTIONS`): mode (universal,
gta_drive, templerun; default: read off the weights), dtype, threads (torch CPU threads, as the
bundled world's: a session and its replay on the same count make the same bits).

Matrix-Game is steered by per-frame keyboard and mouse actions, not by a camera path
(`spec.steering == "actions"`): the poses a session hands `generate_chunk` are passed through to
the chunk, and the actions come from `use_input(path)` (the session's planned chunk: its input
timeline read per frame, mapped by steering.py) or `set_actions` (raw frames for the next chunk);
without either the chunk is generated with no key held and the mouse still.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from worldwalk.runtime.chunk import Chunk
from worldwalk.runtime.snapshot_memory import PinnedArenas
from worldwalk.runtime.threads import use_torch_threads
from worldwalk.runtime.world import ModelSpec, WorldConfig
from worldwalk.runtime.world_options import DTYPE, Choice, Integer, check_options

from .clip import ClipVision, ClipVisionConfig
from .config import MODES, MatrixGameConfig
from .dit import CausalDiT
from .rollout import Rollout
from .snapshots import MatrixGameSnapshot, MatrixGameSnapshots
from .steering import ActionMapper, help_lines
from .vae import WanVAE

# The options `create` reads, and their limits (a session log may carry any).
OPTIONS = {
    "mode": Choice(MODES),
    "dtype": DTYPE,
    "random_init": Choice(("tiny", "full")),
    "threads": Integer(0, 256, "torch threads (0: the default)"),
}


def image_tensor(image: np.ndarray | None, cfg: MatrixGameConfig) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) in [-1, 1] at the model's size, as upstream prepares its image: a
    centred crop to the model's aspect with PIL (whose crop rounds the box's half-pixel edges to even),
    PIL's bilinear resize of the 8-bit image (what torchvision's `Resize(antialias=True)` does to a PIL
    image), then /255, -0.5, /0.5; None -> a mid-grey frame."""
    if image is None:
        return torch.zeros(1, 3, cfg.height, cfg.width)
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    w, h = pil.size
    if h / w > cfg.height / cfg.width:
        nw, nh = w, int(w * cfg.height / cfg.width)
    else:
        nw, nh = int(h * cfg.width / cfg.height), h
    pil = pil.crop(((w - nw) / 2, (h - nh) / 2, (w + nw) / 2, (h + nh) / 2))
    if pil.size != (cfg.width, cfg.height):
        pil = pil.resize((cfg.width, cfg.height), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float()
    return x.div(255).sub(0.5).div(0.5)


class MatrixGameWorld:
    def __init__(self, cfg: MatrixGameConfig, dit: CausalDiT, vae: WanVAE, clip: ClipVision,
                 device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                 snapshot_arenas: PinnedArenas | None = None, threads: int = 0) -> None:
        """`snapshot_arenas`: where snapshots are carved (default: the process's pinned pool on CUDA,
        pageable memory on the CPU). `threads`: torch's CPU threads on the thread that runs the
        session (0: `WORLDWALK_TORCH_THREADS` or the cores less one)."""
        self.cfg, self.clip, self.seed, self.threads = cfg, clip, seed, threads
        self.snapshot_arenas = snapshot_arenas
        self._snapshots = MatrixGameSnapshots(device, snapshot_arenas)
        self.rollout = Rollout(cfg, dit, vae, device, dtype)
        self.device, self.dtype = device, dtype
        self.spec = ModelSpec(
            name="matrix-game", fps=float(cfg.fps), frames_per_chunk=cfg.vae_time_ratio * cfg.frames_per_block,
            first_chunk_frames=cfg.raw_frames(cfg.frames_per_block), width=cfg.width, height=cfg.height,
            device=device, dtype=str(dtype).removeprefix("torch."), label=f"Matrix-Game 2.0 ({cfg.mode})",
            steering="actions",
        )
        self.mapper = ActionMapper(cfg.mode)
        self.actions_sent = ""  # the last actions sent, for the HUD
        self._actions: tuple[np.ndarray, np.ndarray | None] | None = None
        self._chunk = 0
        self.accel = "none"

    # -- session --
    @torch.no_grad()
    def reset(self, first_frame: np.ndarray | None, prompt: str | None, seed: int) -> None:
        use_torch_threads(self.threads)  # on the session's thread, which runs every chunk
        image = image_tensor(first_frame, self.cfg).to(self.device, self.dtype)
        tokens = self.clip(image)  # (1, 257, 1280)
        self.rollout.reset(tokens, image=image, seed=seed)
        self._chunk, self._actions = 0, None
        self.mapper.reset()

    def fork(self) -> MatrixGameWorld:
        """A world for one more session over this one's model: the DiT, VAE and CLIP tower are shared
        (runtime/worlds/world_pool.py), the rollout's caches, noise and actions are its own."""
        return MatrixGameWorld(self.cfg, self.rollout.dit, self.rollout.vae, self.clip, self.device, self.dtype,
                               self.seed, self.snapshot_arenas, self.threads)

    def set_actions(self, keyboard: np.ndarray, mouse: np.ndarray | None = None) -> None:
        """Raw per-frame actions for the next chunk: keyboard (n, K) multi-hot, mouse (n, 2) [pitch, yaw]."""
        self._actions = (np.asarray(keyboard, np.float32), None if mouse is None else np.asarray(mouse, np.float32))

    def use_input(self, path) -> None:
        """The session's planned chunk (`controls.PlannedPath`) -> this chunk's actions: its input
        timeline read per frame. The first chunk's first frame (the first image) has no interval
        and gets no key and no look."""
        n = self.rollout.raw_frames_needed()
        frames = path.timeline.frame_inputs(path.edges)
        if len(frames) > n:
            raise ValueError(f"chunk {self._chunk} takes {n} action frames, the path has {len(frames)}")
        keyboard, mouse = self.mapper.actions(frames, path.timeline)
        pad = n - len(frames)
        keyboard = np.concatenate([np.zeros((pad, keyboard.shape[1]), np.float32), keyboard])
        if mouse is not None:
            mouse = np.concatenate([np.zeros((pad, 2), np.float32), mouse])
        self.actions_sent = self.mapper.describe(keyboard, mouse)
        self.set_actions(keyboard, mouse)

    def controls_help(self) -> list[str]:
        """The key map of this world's mode, for the window's help."""
        return help_lines(self.cfg.mode)

    def generate_chunk(self, poses: np.ndarray, intrinsics: np.ndarray) -> Chunk:
        n = self.rollout.raw_frames_needed()
        if len(poses) != n:
            raise ValueError(f"chunk {self._chunk} has {n} frames, got {len(poses)} poses")
        keyboard, mouse = self._actions or (np.zeros((n, self.cfg.keyboard_dim), np.float32),
                                            np.zeros((n, self.cfg.mouse_dim), np.float32))
        self._actions = None
        kb = torch.from_numpy(keyboard)[None].to(self.device, self.dtype)
        ms = torch.from_numpy(mouse)[None].to(self.device, self.dtype) if self.cfg.mouse and mouse is not None else None
        if self.cfg.mouse and ms is None:
            ms = torch.zeros(1, n, self.cfg.mouse_dim, device=self.device, dtype=self.dtype)
        use_torch_threads(self.threads)  # a restored walk's next chunk may run on another thread than its reset
        start = time.perf_counter()
        block = self.rollout.step(kb, ms)
        frames = ((block.video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (T, 3, H, W)
        chunk = Chunk(frames.permute(0, 2, 3, 1).cpu().numpy(), np.asarray(poses, np.float64),
                      np.asarray(intrinsics, np.float64), self._chunk,
                      {"block": time.perf_counter() - start, "decode": getattr(self.rollout, "decode_s", 0.0)},
                      actions={"keyboard": keyboard, "mouse": mouse if self.cfg.mouse else None})
        self._chunk += 1
        return chunk

    def snapshot(self) -> MatrixGameSnapshot:
        """This chunk boundary in host memory (pinned on CUDA, snapshots.py), copied without blocking."""
        return self._snapshots.offload(self.rollout.live_state(), self._chunk)

    def prepare_snapshots(self) -> int:
        """Make the arenas a session's snapshots take before any session runs (on CUDA pinned memory, whose
        `cudaHostRegister` would otherwise stall a session's first chunks): a throwaway walk keeps a boundary
        before each block until the caches are at their steady size, dropping each once the next is kept, so
        every size is made once and goes back to the pool. Returns the arenas made (0 without a pool: the
        CPU). The world is left mid-walk (the world pool closes it)."""
        arenas = self._snapshots.arenas
        if arenas is None:
            return 0
        made = arenas.allocations
        self.reset(None, None, 0)
        kept = None
        for k in range(3):  # boundaries 0, 1, 2 grow the decoder's time cache; from 3 on they are alike
            kept = self.snapshot()
            n = self.spec.chunk_frames(k)
            self.generate_chunk(np.repeat(np.eye(4)[None], n, 0), np.repeat(np.eye(3)[None], n, 0))
        kept = self.snapshot()
        del kept
        return arenas.allocations - made

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, MatrixGameSnapshot):
            raise TypeError(f"expected a MatrixGameSnapshot from this world's snapshot(), got "
                            f"{type(snapshot).__name__}")
        self.rollout.adopt(self._snapshots.restore(snapshot))
        self._chunk = snapshot.chunk
        self.mapper.reset()  # look not yet sent belongs to the walk rewound away

    def close(self) -> None:
        """Drop the session's state (its caches on the device); the shared model stays."""
        self.rollout.release()
        self._actions = None


def random_world(size: str, mode: str = "universal", device: str = "cpu", seed: int = 0,
                 dtype: torch.dtype = torch.float32, snapshot_arenas: PinnedArenas | None = None,
                 threads: int = 0) -> MatrixGameWorld:
    """Random weights at the released size ("full") or the test size ("tiny", with a tiny CLIP)."""
    torch.manual_seed(seed)
    if size == "full":
        cfg, clip_cfg = MatrixGameConfig.for_mode(mode), ClipVisionConfig()
    else:
        clip_cfg = ClipVisionConfig.tiny()
        cfg = MatrixGameConfig.tiny(mode, clip_dim=clip_cfg.dim)
    dit = CausalDiT(cfg).eval().to(device, dtype)
    vae = WanVAE(dim=cfg.vae_dim, z_dim=cfg.out_dim).eval().to(device, dtype)
    clip = ClipVision(clip_cfg).eval().to(device, dtype)
    return MatrixGameWorld(cfg, dit, vae, clip, device, dtype, seed, snapshot_arenas, threads)


def create(cfg: WorldConfig) -> MatrixGameWorld:
    o = check_options("matrix-game", cfg.options, OPTIONS)
    mode, threads = o.get("mode"), int(o.get("threads", 0))
    if cfg.checkpoint:
        from .checkpoint import load

        cuda = cfg.device.startswith("cuda") and torch.cuda.is_available()
        dtype = getattr(torch, o.get("dtype", "bfloat16" if cuda else "float32"))
        loaded = load(cfg.checkpoint, mode=mode, device=cfg.device, dtype=dtype)
        return MatrixGameWorld(loaded.cfg, loaded.dit, loaded.vae, loaded.clip, cfg.device, dtype, cfg.seed,
                               threads=threads)
    if o.get("random_init") in ("tiny", "full"):
        # the weights are the option's, not the session's: seeded 0 whatever cfg.seed, so a log replays
        # on the same random model (the session's seed still picks the noise, at reset)
        return random_world(o["random_init"], mode or "universal", cfg.device, 0, threads=threads)
    raise ValueError(
        "the matrix-game world needs a checkpoint folder: pass --checkpoint DIR with the files of "
        "Skywork/Matrix-Game-2.0 from Hugging Face (base_distilled_model/, Wan2.1_VAE.pth, "
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth)"
    )
