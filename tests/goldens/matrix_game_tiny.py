"""The tiny Matrix-Game 2.0 setup that the goldens are made with and the parity tests replay.

Both sides build the same model from the numbers here: the goldens script builds upstream's modules,
the tests build ours, and `fill_weights` gives every parameter the same deterministic random values by
its state-dict name, so no weights are stored, only the rollout's inputs and outputs.

Geometry: a 4x6 latent (32x48 pixels), so 2x3 = 6 tokens a latent frame (upstream's 880 needs a
352x640 frame; the token count only changes tensor sizes, never the rules the goldens pin down).
"""

from __future__ import annotations

import zlib

import torch

LATENT_H, LATENT_W = 4, 6
LATENT_FRAMES = 9  # three blocks of three latent frames
LONG_LATENT_FRAMES = 40  # the image condition of a longer session (the encoder settles after ~30)
CONTEXT_TOKENS = 5  # CLIP tokens given to the image embedder (257 for the real CLIP)
SEED = 1234

# upstream CausalWanModel config (the names of configs/distilled_model/universal/config.json)
DIT = dict(
    model_type="i2v",
    patch_size=(1, 2, 2),
    in_dim=36,
    dim=64,
    ffn_dim=96,
    freq_dim=256,
    out_dim=16,
    num_heads=2,
    num_layers=2,
    local_attn_size=6,
    sink_size=0,
    eps=1e-6,
    action_config=dict(
        blocks=[0],
        enable_keyboard=True,
        enable_mouse=True,
        heads_num=1,
        hidden_size=16,
        img_hidden_size=64,
        keyboard_dim_in=4,
        keyboard_hidden_dim=64,
        mouse_dim_in=2,
        mouse_hidden_dim=64,
        mouse_qk_dim_list=[8, 28, 28],
        patch_size=[1, 2, 2],
        qk_norm=True,
        qkv_bias=False,
        rope_dim_list=[8, 28, 28],
        rope_theta=256,
        vae_time_compression_ratio=4,
        windows_size=3,
    ),
)
VAE_DIM = 16  # Wan 2.1 uses 96
# the CLIP visual tower (ViT-H/14: 224 px, width 1280, 16 heads, 32 blocks of which 31 run)
CLIP = dict(image_size=28, dim=64, heads=2, layers=3, out_dim=32)
DENOISING_STEPS = [1000, 666, 333]


def _values(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) ^ SEED)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("weight", "gamma") and len(shape) == 1 or leaf == "gamma":
        return 1.0 + 0.1 * x  # norm gains
    if leaf == "bias":
        return 0.05 * x
    if leaf == "modulation":
        return 0.2 * x
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return x / max(fan_in, 1) ** 0.5


def fill_weights(module: torch.nn.Module) -> None:
    """Sets every parameter of `module` from its state-dict name (same name, same values anywhere)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(_values(name, tuple(p.shape)).to(p.dtype))
