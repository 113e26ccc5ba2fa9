"""Loads Matrix-Game 2.0 from the official Hugging Face folder (`Skywork/Matrix-Game-2.0`), as a user
downloads it with their own tools (worldwalk never downloads anything):

    base_distilled_model/base_distill.safetensors               universal   (keys `model.` + DiT names)
    gta_distilled_model/gta_keyboard2dim.safetensors            gta_drive
    templerun_distilled_model/templerun_7dim_onlykey.safetensors templerun
    Wan2.1_VAE.pth                                              the Wan 2.1 VAE (encoder + decoder)
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth     CLIP; its `visual.*` tower is used

`--checkpoint` may name that folder, one of the three model folders in it, or a model .safetensors
file; the VAE and CLIP files are looked for beside the model and one folder up. The mode is read off
the weights (the keyboard embedding takes 4, 2 or 7 keys); `mode=` overrides which model file a
folder with several is read from, and must agree with the weights. A `config.json` beside the model
file (upstream's format) gives the DiT's sizes; without one the released sizes are used.

Weights are memory-mapped (safetensors, `torch.load(mmap=True)`) and assigned into modules built on
the meta device, so no random initialisation runs and no second copy is made (a dtype change converts
tensor by tensor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from worldwalk.runtime.world import CheckpointError

from .clip import ClipVision, ClipVisionConfig
from .config import MatrixGameConfig
from .dit import CausalDiT
from .vae import WanVAE

HF_REPO = "Skywork/Matrix-Game-2.0"
MODEL_FILES = {
    "universal": "base_distilled_model/base_distill.safetensors",
    "gta_drive": "gta_distilled_model/gta_keyboard2dim.safetensors",
    "templerun": "templerun_distilled_model/templerun_7dim_onlykey.safetensors",
}
VAE_FILE = "Wan2.1_VAE.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
KEYBOARD_WIDTH_MODE = {4: "universal", 2: "gta_drive", 7: "templerun"}
KEYBOARD_KEY = "blocks.0.action_model.keyboard_embed.0.weight"


def _where(what: str) -> str:
    return (f"{what} comes with the Hugging Face repository {HF_REPO}; fetch it with your own tools, e.g. "
            f"`huggingface-cli download {HF_REPO} --local-dir DIR`, and pass --checkpoint DIR")


@dataclass
class LoadedMatrixGame:
    cfg: MatrixGameConfig
    dit: CausalDiT
    vae: WanVAE
    clip: ClipVision
    files: dict[str, Path]


def find_files(path: str | Path, mode: str | None = None) -> tuple[Path, Path, Path]:
    """(model .safetensors, VAE .pth, CLIP .pth) under `path`, or a CheckpointError naming what is missing."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"Matrix-Game checkpoint {p} does not exist; {_where('the model')}")
    if p.is_file():
        model, roots = p, [p.parent, p.parent.parent]
    else:
        roots = [p, p.parent]
        found = {m: p / f for m, f in MODEL_FILES.items() if (p / f).is_file()}
        here = sorted(p.glob("*.safetensors"))
        if mode is not None and mode in found:
            model = found[mode]
        elif mode is None and found:
            model = next(iter(found.values()))  # universal first
        elif len(here) == 1:
            model = here[0]
        else:
            want = MODEL_FILES[mode] if mode else " or ".join(MODEL_FILES.values())
            raise CheckpointError(f"Matrix-Game checkpoint folder {p} has no {want}; {_where('the distilled model')}")
    named = []
    for name, what in ((VAE_FILE, "the Wan 2.1 VAE"), (CLIP_FILE, "the open-clip XLM-RoBERTa ViT-H/14 image encoder")):
        hit = next((r / name for r in roots if (r / name).is_file()), None)
        if hit is None:
            raise CheckpointError(f"Matrix-Game checkpoint {p} has no {name} ({what}) beside the model or one folder "
                                  f"up; {_where(name)}")
        named.append(hit)
    return model, named[0], named[1]


def _read_dit(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            out[key.removeprefix("model.")] = f.get_tensor(key)
    return out


def config_for(model_file: Path, state: dict[str, torch.Tensor], mode: str | None,
               base: MatrixGameConfig | None) -> MatrixGameConfig:
    if KEYBOARD_KEY not in state:
        raise CheckpointError(f"{model_file} is not a Matrix-Game 2.0 distilled model (no {KEYBOARD_KEY})")
    width = int(state[KEYBOARD_KEY].shape[1])
    found = KEYBOARD_WIDTH_MODE.get(width)
    if found is None:
        raise CheckpointError(f"{model_file}: a keyboard embedding of width {width} matches no mode (4, 2 or 7)")
    if mode is not None and mode != found:
        raise CheckpointError(f"--mode {mode} does not match {model_file}: its keyboard takes {width} keys ({found})")
    sizes: dict = {}
    config_json = model_file.parent / "config.json"
    if config_json.is_file():  # upstream's CausalWanModel config; absent fields keep the released sizes
        c = json.loads(config_json.read_text())
        a = c.get("action_config", {})
        named = dict(dim=c.get("dim"), ffn_dim=c.get("ffn_dim"), num_heads=c.get("num_heads"),
                     num_layers=c.get("num_layers"), local_attn_size=c.get("local_attn_size"),
                     action_blocks=tuple(a["blocks"]) if "blocks" in a else None,
                     keyboard_embed_dim=a.get("hidden_size"), action_hidden=a.get("mouse_hidden_dim"),
                     action_heads=a.get("heads_num"))
        sizes = {k: v for k, v in named.items() if v is not None}
    if base is not None:
        return MatrixGameConfig.for_mode(found, **{**_sizes_of(base), **sizes})
    return MatrixGameConfig.for_mode(found, **sizes)


def read_config(path: str | Path, mode: str | None = None) -> MatrixGameConfig:
    """The config of the model `load` would read from `path`, from the file's header only (no tensor is
    read): the mode off the keyboard embedding's width, refused when `mode` contradicts it."""
    from safetensors import safe_open

    model_file = find_files(path, mode)[0]
    with safe_open(str(model_file), framework="pt", device="cpu") as f:
        key = next((k for k in f.keys() if k.removeprefix("model.") == KEYBOARD_KEY), None)  # noqa: SIM118
        shape = f.get_slice(key).get_shape() if key is not None else None
    state = {} if shape is None else {KEYBOARD_KEY: torch.empty(shape, device="meta")}
    return config_for(model_file, state, mode, None)


def _sizes_of(cfg: MatrixGameConfig) -> dict:
    keep = ("dim", "ffn_dim", "num_heads", "num_layers", "action_blocks", "keyboard_embed_dim", "action_hidden",
            "action_heads", "latent_height", "latent_width", "vae_dim")
    return {k: getattr(cfg, k) for k in keep}


def _assign(module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, device: str, what: Path) -> None:
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}")
    for key in list(state):  # convert tensor by tensor, dropping each source as it goes
        state[key] = state[key].to(device=device, dtype=dtype)
    module.load_state_dict(state, strict=True, assign=True)


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    """A .pth state dict, memory-mapped (files in torch's zip format; older ones are read whole)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as e:
        if "mmap" not in str(e) and "zip" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def load(path: str | Path, mode: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
         base: MatrixGameConfig | None = None, clip_cfg: ClipVisionConfig | None = None) -> LoadedMatrixGame:
    model_file, vae_file, clip_file = find_files(path, mode)
    dit_state = _read_dit(model_file)
    cfg = config_for(model_file, dit_state, mode, base)
    with torch.device("meta"):
        dit = CausalDiT(cfg)
    _assign(dit, dit_state, dtype, device, model_file)

    vae_state = _load_pth(vae_file)
    vae_state = {k: v for k, v in vae_state.items() if k.split(".")[0] in ("encoder", "conv1", "decoder", "conv2")}
    vae_dim = int(vae_state["encoder.conv1.weight"].shape[0]) if "encoder.conv1.weight" in vae_state else cfg.vae_dim
    with torch.device("meta"):
        vae = WanVAE(dim=vae_dim, z_dim=cfg.out_dim)
    _assign(vae, vae_state, dtype, device, vae_file)
    vae.reset_statistics(device)

    clip_state = _load_pth(clip_file)
    clip_state = {k.removeprefix("visual."): v for k, v in clip_state.items() if k.startswith("visual.")}
    with torch.device("meta"):
        clip = ClipVision(clip_cfg or ClipVisionConfig())
    _assign(clip, clip_state, dtype, device, clip_file)
    clip.reset_statistics(device)
    return LoadedMatrixGame(cfg, dit.eval(), vae.eval(), clip.eval(),
                            {"model": model_file, "vae": vae_file, "clip": clip_file})
