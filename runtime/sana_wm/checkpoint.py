"""Loading SANA-WM checkpoints from local folders (never the network).

Accepted layouts of `DIR`:
- official `SANA-WM_streaming`: `sana_dit/model.pt` (the distilled stage-1; official key names:
  `t_embedder.mlp.0/2`, plus `pos_embed` (dropped) and `y_embedder.y_embedding` (kept as the empty
  prompt)), `ltx2_causal_vae/` (a diffusers-format LTX-2 VAE folder); optional `sana_dit/config.json`
  (a `SanaWMConfig` dict, written by `save_official`) else the config is inferred from tensor shapes;
- diffusers: `transformer/` (config.json + safetensors, `SanaWMTransformer3DModel`) and `vae/`.
Missing files, unreadable (e.g. truncated) files and key/shape mismatches raise `CheckpointError`
naming what was expected and the first mismatches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from worldwalk.runtime.safe_files import UnsafeFileError, check_regular
from worldwalk.runtime.weights_source import mark_weights_source
from worldwalk.runtime.world import CheckpointError

from .config import SanaWMConfig
from .transformer import SanaWMStreamingTransformer
from .vae import SanaWMVAE

OFFICIAL_TO_OURS = {"t_embedder.mlp.0.": "t_embedder.linear_1.", "t_embedder.mlp.2.": "t_embedder.linear_2."}
DROPPED = ("pos_embed",)
NULL_CAPTION = "y_embedder.y_embedding"


@dataclass
class LoadedModel:
    transformer: SanaWMStreamingTransformer
    vae: SanaWMVAE
    null_caption: torch.Tensor | None  # (L, caption_channels) learned empty prompt, when the checkpoint has one
    layout: str


def official_to_ours(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    out, null = {}, None
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k == NULL_CAPTION:
            null = v
            continue
        if k in DROPPED:
            continue
        for a, b in OFFICIAL_TO_OURS.items():
            if k.startswith(a):
                k = b + k[len(a) :]
        out[k] = v
    return out, null


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for a, b in OFFICIAL_TO_OURS.items():
            if k.startswith(b):
                k = a + k[len(b) :]
        out[k] = v
    return out


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    _regular(path)
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # mmap needs the zip format; older files load without it
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a cut-off or corrupt zip
        raise CheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is truncated or corrupt: download it again"
        ) from e
    for key in ("generator", "state_dict", "model", "ema"):
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return data


def _read_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        _regular(f)
        try:
            state.update(load_file(f))
        except Exception as e:
            raise CheckpointError(f"cannot read {f} ({type(e).__name__}: {e}); the file is truncated or corrupt") from e
    return state


def _regular(path: Path) -> None:
    """Refuse a checkpoint file that is not a regular file (a FIFO would hang the read) at once."""
    try:
        check_regular(path)
    except UnsafeFileError as e:
        raise CheckpointError(str(e)) from None


def infer_config(state: dict[str, torch.Tensor], **overrides) -> SanaWMConfig:
    """A config from tensor shapes (for an official .pt without config.json)."""
    w = state["x_embedder.proj.weight"]
    hidden, in_ch = w.shape[0], w.shape[1]
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    heads = state["blocks.0.attn.A_log"].numel()
    softmax = [i for i in range(layers) if f"blocks.{i}.attn.conv_k.weight" not in state]
    every = softmax[0] + 1 if softmax else 0
    kw = dict(
        in_channels=in_ch,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=20 if hidden == 2240 else max(1, hidden // 64),
        patch_size=tuple(w.shape[2:]),
        softmax_every_n=every,
        linear_head_dim=hidden // heads,
        t_kernel_size=state["blocks.0.mlp.t_conv.weight"].shape[2],
        conv_kernel_size=state["blocks.0.attn.conv_k.weight"].shape[-1]
        if "blocks.0.attn.conv_k.weight" in state
        else 0,
        qk_norm="blocks.0.attn.q_norm.weight" in state,
        cross_norm="blocks.0.cross_attn.q_norm.weight" in state,
        y_norm="attention_y_norm.weight" in state,
        chunk_plucker_channels=state["plucker_embedder.proj.weight"].shape[1],
        chunk_plucker_post_attn_blocks=sum(f"blocks.{i}.plucker_proj.weight" in state for i in range(layers)),
        caption_channels=state["y_embedder.y_proj.fc1.weight"].shape[1],
        mlp_ratio=state["blocks.0.mlp.inverted_conv.conv.weight"].shape[0] / 2 / hidden,
    )
    kw.update(overrides)
    return SanaWMConfig(**kw)


def _check(state: dict[str, torch.Tensor], model: torch.nn.Module, source: Path) -> None:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [
        f"{k}: file {tuple(state[k].shape)}, expected {want[k]}"
        for k in want
        if k in state and tuple(state[k].shape) != want[k]
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (first: {'; '.join(wrong[:3])})")
        raise CheckpointError(
            f"{source} does not match the SANA-WM transformer it describes: {'; '.join(parts)}. "
            "Check that the file is a SANA-WM stage-1 checkpoint and that its config.json matches it."
        )


def _build(
    cfg: SanaWMConfig, state: dict[str, torch.Tensor], source: Path, device, dtype
) -> SanaWMStreamingTransformer:
    with torch.device("meta"):
        model = SanaWMStreamingTransformer(cfg)
    _check(state, model, source)
    model.load_state_dict(state, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def _load_vae(folder: Path, device, dtype) -> SanaWMVAE:
    from diffusers import AutoencoderKLLTX2Video

    if not (folder / "config.json").is_file():
        raise CheckpointError(f"VAE folder {folder} has no config.json (expected a diffusers AutoencoderKLLTX2Video)")
    for f in folder.iterdir():  # diffusers opens what it finds: no FIFO (its open would hang) nor device
        if not f.is_dir():
            _regular(f)
    try:
        vae = AutoencoderKLLTX2Video.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    except Exception as e:
        raise CheckpointError(f"cannot load the VAE from {folder} ({type(e).__name__}: {e})") from e
    return SanaWMVAE(vae.to(device))


def from_pretrained(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    **config_overrides,
) -> LoadedModel:
    """Load transformer + VAE from an official or diffusers layout folder (see module doc)."""
    root = Path(path)
    official = root / "sana_dit" / "model.pt"
    diffusers_dir = root / "transformer"
    if official.is_file():
        layout, vae_dir = "official", root / "ltx2_causal_vae"
    elif (diffusers_dir / "config.json").is_file():
        layout, vae_dir = "diffusers", root / "vae"
    else:
        raise CheckpointError(
            f"no SANA-WM checkpoint in {root}: expected {official} (official SANA-WM_streaming layout, with "
            f"ltx2_causal_vae/) or {diffusers_dir}/config.json plus safetensors (diffusers layout, with vae/)"
        )
    if not vae_dir.is_dir():
        raise CheckpointError(f"{root} has a transformer but no VAE folder {vae_dir}")
    steps = tqdm(total=3, desc=f"loading SANA-WM ({layout})", disable=not progress, unit="step")
    null = None
    if layout == "official":
        state, null = official_to_ours(_read_torch(official))
        cfg_file = official.with_name("config.json")
        cfg = (
            SanaWMConfig.from_dict({**json.loads(cfg_file.read_text()), **config_overrides})
            if cfg_file.is_file()
            else infer_config(state, **config_overrides)
        )
        source = official
    else:
        cfg = SanaWMConfig.from_diffusers(json.loads((diffusers_dir / "config.json").read_text()), **config_overrides)
        state = _read_safetensors_dir(diffusers_dir)
        state = {k: v for k, v in state.items() if k not in DROPPED}
        source = diffusers_dir
    steps.update()
    transformer = _build(cfg, state, source, device, dtype)
    files = [official] if layout == "official" else sorted(diffusers_dir.glob("*.safetensors"))
    mark_weights_source(transformer, files)  # accelerated exports are named by these files (weights_source.py)
    steps.update()
    vae = _load_vae(vae_dir, device, dtype)
    mark_weights_source(vae.vae, [f for f in vae_dir.iterdir() if f.is_file()])
    steps.update()
    steps.close()
    return LoadedModel(transformer, vae, null, layout)


def save_official(
    root: str | Path, transformer: SanaWMStreamingTransformer, vae: SanaWMVAE, null_caption: torch.Tensor | None = None
) -> None:
    """Write `root/sana_dit/model.pt` (official key names, + config.json) and `root/ltx2_causal_vae/`."""
    root = Path(root)
    (root / "sana_dit").mkdir(parents=True, exist_ok=True)
    state = ours_to_official({k: v.detach().cpu() for k, v in transformer.state_dict().items()})
    if null_caption is not None:
        state[NULL_CAPTION] = null_caption.cpu()
    torch.save({"state_dict": state}, root / "sana_dit" / "model.pt")
    (root / "sana_dit" / "config.json").write_text(json.dumps(transformer.cfg.to_dict(), indent=1))
    vae.vae.save_pretrained(root / "ltx2_causal_vae")


def save_diffusers(root: str | Path, transformer: SanaWMStreamingTransformer, vae: SanaWMVAE) -> None:
    """Write `root/transformer/` (diffusers `SanaWMTransformer3DModel`) and `root/vae/`."""
    from diffusers import SanaWMTransformer3DModel

    root = Path(root)
    with torch.device("meta"):
        ref = SanaWMTransformer3DModel(**transformer.cfg.to_diffusers())
    ref.load_state_dict({k: v.detach().cpu() for k, v in transformer.state_dict().items()}, assign=True)
    ref.save_pretrained(root / "transformer")
    vae.vae.save_pretrained(root / "vae")
