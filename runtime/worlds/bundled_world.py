"""The bundled world: a small SANA-WM-family model trained on the reference world, shipped in the package.

`BundledWorld` is a `SanaWM` (runtime/sana_wm/model.py): the same chunk loop, chunk-causal cache,
`FlowSampler` (on the timesteps stored with the weights: 1000, 500, 0 for the shipped ones) and
decoder thread, with a small transformer and its own VAE (`FrameVAEStream` behind the `SanaWMVAE`
interface; see `BundledConfig`): 160x96 video at 16 fps, a latent frame every 4 video frames, and the
chunk size stored with the weights too: the shipped ones take 1 latent frame (4 video frames, 0.25 s) a
chunk, the first chunk being the first image plus that latent frame (5 frames); the weights shipped
before 2026-12-06 took 3 (12 video frames, 0.75 s; 13 in the first chunk).

Camera: poses are taken relative to the session's first frame (the first image's camera) and
their translations multiplied by `translation_scale` (world units -> model units) before UCPE
and Plücker rays are built, exactly as in training (train_world.py).

Weights: `runtime/worlds/weights/bundled_vae.safetensors` and `bundled_world.safetensors` (configs in
their metadata), plus `bundled_start.npy`, the first frame used when the caller gives none (the
reference world's view from its spawn point). `worldwalk train` rebuilds all three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldwalk.runtime.safe_files import check_regular
from worldwalk.runtime.sana_wm.camera import CameraInputs, build_camera_inputs, pose_inverse
from worldwalk.runtime.sana_wm.config import SanaWMConfig
from worldwalk.runtime.sana_wm.model import SanaWM, SanaWMRunConfig
from worldwalk.runtime.sana_wm.sampler import SamplerConfig
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.sana_wm.vae import SanaWMVAE
from worldwalk.runtime.weights_source import mark_weights_source
from worldwalk.runtime.world import WorldConfig
from worldwalk.runtime.world_options import Integer, check_options

from .bundled_vae import BundledVAEConfig, FrameVAE, FrameVAEConfig, FrameVAEStream, build_vae, vae_config_from_dict

__all__ = ["BundledConfig", "BundledWorld", "WEIGHTS", "camera_inputs", "create", "transformer_config"]

WEIGHTS = Path(__file__).parent / "weights"
VAE_FILE, WORLD_FILE, START_FILE = "bundled_vae.safetensors", "bundled_world.safetensors", "bundled_start.npy"
# The sampler the bundled model trains for: 3 steps ending lower than SANA-WM's distilled 4 (1000, 960, 889, 727,
# then clean), which leaves a model trained by flow matching alone at the average of what could be in view
TIMESTEPS = (1000, 667, 333, 0)
# The options `create` reads from WorldConfig.options, and their limits (a session log may carry any).
OPTIONS = {"threads": Integer(0, 256, "torch threads (0: the default)")}


def transformer_config(in_channels: int = FrameVAEConfig.latent_channels) -> SanaWMConfig:
    """The bundled transformer: 4 blocks of width 128 (3 GDN, 1 softmax), 2 heads of 64: 1.8M parameters;
    `in_channels` is the VAE's latent width."""
    return SanaWMConfig.small(
        in_channels=in_channels,
        num_layers=4,
        hidden_size=128,
        num_attention_heads=2,
        linear_head_dim=64,
        caption_channels=32,
        caption_tokens=1,
        chunk_plucker_channels=24,  # 6 Plücker channels x temporal stride 4
        chunk_plucker_post_attn_blocks=4,
        mlp_ratio=2.5,
        rope_max_seq_len=4096,
        softmax_bf16=False,
    )


@dataclass
class BundledConfig:
    vae: FrameVAEConfig | BundledVAEConfig = field(default_factory=FrameVAEConfig)
    transformer: SanaWMConfig = field(default_factory=transformer_config)
    fps: float = 16.0
    translation_scale: float = 0.1  # model units per world unit
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(timesteps=TIMESTEPS))

    @property
    def stride(self) -> int:
        return self.vae.temporal_stride

    @property
    def chunk_latents(self) -> int:
        return self.transformer.chunk_latent_frames


def chunk_latent_indices(k: int, chunk_latents: int = 3) -> list[int]:
    """Latent frames of chunk k: chunk 0 is the image latent plus `chunk_latents` more."""
    if k == 0:
        return list(range(chunk_latents + 1))
    return [1 + chunk_latents * k + i for i in range(chunk_latents)][:chunk_latents]


def chunk_video_frames(k: int, stride: int = 4, chunk_latents: int = 3) -> list[int]:
    """Video frames of chunk k (chunk 0: frame 0 and the next stride * chunk_latents)."""
    n = stride * chunk_latents
    return list(range(n + 1)) if k == 0 else list(range(n * k + 1, n * (k + 1) + 1))


def relative_poses(poses: np.ndarray, anchor: np.ndarray, scale: float) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) in the frame of `anchor` (4, 4), translations scaled."""
    rel = pose_inverse(anchor)[None] @ poses
    rel[:, :3, 3] *= scale
    return rel


def camera_inputs(poses_rel: dict[int, np.ndarray], intrinsics: dict[int, np.ndarray], latents: list[int],
                  cfg: BundledConfig) -> CameraInputs:
    """UCPE conditions and Plücker rays for latent frames `latents` from relative, scaled poses, with the home
    view's weight as a session has it (SanaWMConfig.home_radius; training batches rebuild the inputs without)."""
    v = cfg.vae
    return build_camera_inputs(poses_rel, intrinsics, latents, cfg.stride, (v.height, v.width), v.latent_hw,
                               cfg.transformer.home_view)


def empty_text(cfg: BundledConfig, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled model has no prompt: a zero caption token, unmasked."""
    t = cfg.transformer
    text = torch.zeros(batch, t.caption_tokens, t.caption_channels)
    return text, torch.ones(batch, t.caption_tokens, dtype=torch.bool)


def weights_available(folder: Path | None = None) -> bool:
    """Whether the bundled weights are installed (then `play`, `serve` and `render` default to them)."""
    folder = Path(folder) if folder is not None else WEIGHTS
    return all((folder / name).is_file() for name in (VAE_FILE, WORLD_FILE))


def load_weights(folder: Path | None = None) -> tuple[BundledConfig, torch.nn.Module, SanaWMStreamingTransformer]:
    """(config, VAE, transformer) from `folder` (default: the shipped weights), on the CPU, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else WEIGHTS
    missing = [n for n in (VAE_FILE, WORLD_FILE) if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"bundled weights {missing} not found in {folder}; run `worldwalk train` to build them "
            "or pass --checkpoint to a folder that has them"
        )
    for name in (VAE_FILE, WORLD_FILE):  # a FIFO would hang the open: only regular files are read
        check_regular(folder / name)
    vmeta = _metadata(folder / VAE_FILE, safe_open)
    wmeta = _metadata(folder / WORLD_FILE, safe_open)
    vcfg = vae_config_from_dict(json.loads(vmeta["config"]))
    tcfg = SanaWMConfig.from_dict(json.loads(wmeta["config"]))
    sampler = SamplerConfig()  # weights from before the sampler was stored with them: SANA-WM's 4 steps
    if "sampler" in wmeta:
        try:
            stored = json.loads(wmeta["sampler"])
            sampler = SamplerConfig(timesteps=tuple(int(t) for t in stored["timesteps"]),
                                    renoise=bool(stored.get("renoise", True)))
        except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{folder / WORLD_FILE}: the sampler stored with the weights ({wmeta['sampler']!r}) is "
                             f"not usable ({e}); retrain or re-export them with `worldwalk train --stage world`, "
                             "or pass --checkpoint to a folder with good weights") from None
    cfg = BundledConfig(vae=vcfg, transformer=tcfg, translation_scale=float(wmeta.get("translation_scale", 0.1)),
                        sampler=sampler)
    vae = build_vae(vcfg)
    _load_state(vae, load_file(str(folder / VAE_FILE)), folder / VAE_FILE)
    model = SanaWMStreamingTransformer(tcfg)
    _load_state(model, load_file(str(folder / WORLD_FILE)), folder / WORLD_FILE)
    # an accelerated build names its exports by these files, not by every weight's bytes
    mark_weights_source(vae, [folder / VAE_FILE])
    mark_weights_source(model, [folder / WORLD_FILE])
    return cfg, vae.eval(), model.eval()


def _metadata(path: Path, safe_open) -> dict[str, str]:
    """The safetensors header metadata of a bundled weights file, with its config."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # truncated or not a safetensors file at all
        raise ValueError(f"{path} is not a readable safetensors file ({e}); rebuild it with `worldwalk train`") from e
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' in its metadata: it is not a bundled-world weights file "
                         "(those are written by `worldwalk train --stage ship`)")
    return meta


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights, naming the first mismatches instead of a wall of keys."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shapes {shapes[:3]}; rebuild it with `worldwalk train`")
    module.load_state_dict(state)


def _fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the aspect ratio and resize (bilinear) to width x height; (H, W, 3) uint8."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    target = width / height
    if w / h > target:
        cw = int(round(h * target))
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(round(w / target))
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class BundledWorld(SanaWM):
    """The bundled model behind the `WorldModel` seam: a `SanaWM` with the small config and its own VAE
    (`FrameVAEStream`, the `SanaWMVAE` interface), so it runs SANA-WM's one chunk loop, decode/denoise
    overlap included. What it adds: the shipped weights, the shipped first frame when none is given,
    poses scaled to model units (`translation_scale`), and no prompt (the model has none)."""

    def __init__(self, folder: Path | None = None, seed: int = 0, threads: int | None = None,
                 sampler: SamplerConfig | None = None) -> None:
        """`sampler` replaces the one the weights were trained for (stored with them), as `eval --timesteps` does."""
        folder = Path(folder) if folder is not None else WEIGHTS
        self.model_cfg, vae, transformer = load_weights(folder)
        c = self.model_cfg
        run = SanaWMRunConfig(width=c.vae.width, height=c.vae.height, fps=c.fps, sampler=sampler or c.sampler,
                              threads=threads or 0, translation_scale=c.translation_scale)
        super().__init__(transformer, FrameVAEStream(vae) if isinstance(vae, FrameVAE) else SanaWMVAE(vae), run,
                         name="bundled", label="bundled model (small SANA-WM, trained on the reference world)",
                         takes_prompt=False)
        start = folder / START_FILE
        self.start = np.load(check_regular(start), allow_pickle=False) if start.exists() else None
        self.reset(None, None, seed)

    def reset(self, first_frame: np.ndarray | None = None, prompt: str | None = None, seed: int = 0) -> None:
        """Start a session from `first_frame` (any size: centre-cropped and resized) or the shipped one."""
        if first_frame is None:
            if self.start is None:
                raise ValueError("the bundled world needs a first frame: pass one, or ship bundled_start.npy")
            first_frame = self.start
        self.first_frame = _fit_frame(np.asarray(first_frame, np.uint8), self.spec.width, self.spec.height)
        super().reset(self.first_frame, None, seed)  # no text encoder: a zero caption token


def create(cfg: WorldConfig) -> BundledWorld:
    """Entry point of the `bundled` world; `cfg.checkpoint` may name a folder with the three weight files.

    The bundled model has a fixed size (160x96 at 16 fps): cfg.width, cfg.height and cfg.fps are not used.
    """
    check_options("bundled", cfg.options, OPTIONS)
    return BundledWorld(Path(cfg.checkpoint) if cfg.checkpoint else None, seed=cfg.seed,
                        threads=cfg.options.get("threads"))
