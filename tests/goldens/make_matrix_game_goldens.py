"""Writes tests/data/matrix_game_goldens.npz: a tiny Matrix-Game 2.0 rollout run by upstream's own code.

Rerun (from the repository root, with upstream's `Matrix-Game-2/` folder checked out anywhere, at
SkyworkAI/Matrix-Game commit 3ceb3114b65f):

    python tests/goldens/make_matrix_game_goldens.py --upstream /path/to/Matrix-Game-2

It needs torch, numpy, diffusers and einops (einops is not a worldwalk dependency: put it on the path
with e.g. `pip install --target /tmp/mgdeps einops` and `PYTHONPATH=/tmp/mgdeps`). Upstream is imported,
never copied; nothing here is needed by the tests, which only read the .npz.

What runs is upstream's: `CausalInferencePipeline.inference` (the block loop, warped timesteps, fresh
noise, the t=0 cache pass), `CausalWanModel` with its `ActionModule`, the KV-cache rolling code, the Wan
VAE encoder (`wan/vae/wanx_vae_src`, called as `inference.py` calls it) and the streaming decoder
(`demo_utils/vae_block3.py`). Replaced, each with an exact fp32 torch equivalent checked below:
  * flash-attn (`flash_attn_func`, and `attention`/`flash_attention` of wan/modules/attention.py,
    which need CUDA and round to bf16) -> softmax attention in fp32;
  * `torch.cuda.current_device()` (used to place RoPE tables) -> "cpu";
  * `demo_utils/constant.py` (a 2 GiB zero cache that the pipeline deep-copies and then sets to None)
    -> a list of 32 Nones;
  * the pipeline's cache allocators (which hard-code 30 blocks, 12x128 / 16x64 heads and 257 tokens)
    -> the same allocation with the tiny model's sizes;
  * the streaming decoder is fed fp32 (upstream casts the latents to fp16 for its fp16 GPU decoder:
    the golden records the fp16-rounded latents the decoder actually receives).
Upstream's action module asserts 880 tokens a frame (352x640); the tiny 4x6 latent has 6, so the
script runs under `python -O` (it re-executes itself so) to skip those asserts; nothing else changes.
Importing `wan`'s package `__init__` pulls in T5, tokenizers and torchvision that this never uses, so
the packages are registered empty and only the modules named above are imported.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.goldens import matrix_game_tiny as tiny  # noqa: E402

OUT = HERE.parent / "data" / "matrix_game_goldens.npz"


# ----------------------------------------------------------------------------------------------
# exact replacements for CUDA-only pieces
# ----------------------------------------------------------------------------------------------
def attn_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, L, H, D) tensors, no mask, in fp32."""
    qh, kh, vh = (t.float().transpose(1, 2) for t in (q, k, v))
    s = (qh @ kh.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    return (s.softmax(-1) @ vh).transpose(1, 2).to(q.dtype)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    assert dropout_p == 0.0 and softmax_scale is None and not causal
    return attn_fp32(q, k, v)


def wan_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                  causal=False, window_size=(-1, -1), deterministic=False, dtype=None, version=None,
                  fa_version=None):
    assert q_lens is None and k_lens is None and q_scale is None and not causal and window_size == (-1, -1)
    return attn_fp32(q, k, v)


def check_replacements() -> None:
    g = torch.Generator().manual_seed(0)
    for lq, lk in ((7, 11), (3, 36)):
        q, k, v = (torch.randn(2, n, 3, 64, generator=g) for n in (lq, lk, lk))
        w = (torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / 8.0).softmax(-1)
        ref = torch.einsum("bhqk,bkhd->bqhd", w, v.double())
        for fn in (flash_attn_func, wan_attention):
            err = (fn(q, k, v).double() - ref).abs().max().item()
            assert err < 1e-5, f"{fn.__name__} differs from softmax attention by {err}"
        sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        assert (sdpa.transpose(1, 2).double() - ref).abs().max().item() < 1e-5
    print("replacements: flash_attn_func and wan attention match float64 softmax attention")


def import_upstream(root: Path) -> types.SimpleNamespace:
    sys.path.insert(0, str(root))
    torch.cuda.current_device = lambda: "cpu"  # RoPE tables are placed with it
    # diffusers probes for flash_attn when first imported: import what upstream uses before the stand-in
    from diffusers.loaders import FromOriginalModelMixin, PeftAdapterMixin  # noqa: F401
    from diffusers.models.modeling_utils import ModelMixin  # noqa: F401

    fa = types.ModuleType("flash_attn")
    fa.flash_attn_func = flash_attn_func
    sys.modules["flash_attn"] = fa
    const = types.ModuleType("demo_utils.constant")
    const.ZERO_VAE_CACHE = [None] * 32
    sys.modules["demo_utils.constant"] = const
    vis = types.ModuleType("utils.visualize")
    vis.process_video = None
    sys.modules["utils.visualize"] = vis
    tok = types.ModuleType("wan.modules.tokenizers")
    tok.HuggingfaceTokenizer = None
    sys.modules["wan.modules.tokenizers"] = tok
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
    wtok = types.ModuleType("wan.vae.wanx_vae_src.tokenizers")
    wtok.HuggingfaceTokenizer = None
    sys.modules["wan.vae.wanx_vae_src.tokenizers"] = wtok
    for pkg in ("wan", "wan.modules", "wan.vae", "wan.vae.wanx_vae_src"):
        m = types.ModuleType(pkg)
        m.__path__ = [str(root / pkg.replace(".", "/"))]
        sys.modules[pkg] = m

    import wan.modules.action_module as action_module
    import wan.modules.attention as attention
    import wan.modules.causal_model as causal_model
    import wan.modules.model as model
    import wan.vae.wanx_vae_src.clip as wanx_clip
    import wan.vae.wanx_vae_src.vae as wanx_vae
    from demo_utils import vae_block3
    from pipeline import causal_inference
    from utils import wan_wrapper

    attention.attention = attention.flash_attention = wan_attention
    model.flash_attention = wan_attention
    causal_model.attention = wan_attention
    action_module.flash_attn_func = flash_attn_func
    wanx_clip.flash_attention = wan_attention
    assert not action_module.FLASH_ATTN_3_AVAILABLE
    return types.SimpleNamespace(
        causal_inference=causal_inference, wan_wrapper=wan_wrapper, vae_block3=vae_block3, wanx_vae=wanx_vae,
        wanx_clip=wanx_clip,
    )


# ----------------------------------------------------------------------------------------------
# the rollout
# ----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, type=Path, help="the Matrix-Game-2 folder of upstream")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not sys.flags.optimize:  # skip upstream's 880-token asserts (see the module docstring)
        os.execv(sys.executable, [sys.executable, "-O", *sys.argv])
    torch.set_grad_enabled(False)
    check_replacements()
    up = import_upstream(args.upstream.resolve())
    cfg = tiny.DIT
    acfg = cfg["action_config"]
    S = (tiny.LATENT_H // 2) * (tiny.LATENT_W // 2)
    n_lat = tiny.LATENT_FRAMES
    n_raw = 1 + 4 * (n_lat - 1)
    heads, hd = cfg["num_heads"], cfg["dim"] // cfg["num_heads"]
    a_heads, a_hd = acfg["heads_num"], acfg["mouse_hidden_dim"] // acfg["heads_num"]
    g = torch.Generator().manual_seed(tiny.SEED)
    gold: dict[str, np.ndarray] = {}

    def put(name: str, t) -> None:
        gold[name] = t.detach().float().numpy().copy() if isinstance(t, torch.Tensor) else np.asarray(t)

    # -- inputs --
    image = torch.rand(1, 3, 1, 8 * tiny.LATENT_H, 8 * tiny.LATENT_W, generator=g) * 2 - 1
    visual_context = torch.randn(1, tiny.CONTEXT_TOKENS, 1280, generator=g)
    noise = torch.randn(1, 16, n_lat, tiny.LATENT_H, tiny.LATENT_W, generator=g)
    keyboard = (torch.rand(1, n_raw, acfg["keyboard_dim_in"], generator=g) < 0.4).float()
    mouse = torch.randn(1, n_raw, 2, generator=g) * 0.1
    torch.manual_seed(tiny.SEED)  # the pipeline's fresh noise comes from the global generator
    for k, v in dict(image=image, visual_context=visual_context, noise=noise, keyboard=keyboard, mouse=mouse).items():
        put(f"in/{k}", v)

    # -- first-image condition: upstream's encoder, called as inference.py calls it --
    vae = up.wanx_vae.WanVAE(pretrained_path=None)
    vae.model = up.wanx_vae.VideoVAE_(dim=tiny.VAE_DIM, z_dim=16).eval()
    tiny.fill_weights(vae.model)
    video = torch.cat([image, torch.zeros_like(image).repeat(1, 1, 4 * (n_lat - 1), 1, 1)], dim=2)
    img_cond = vae.encode(video, device="cpu", tiled=True, tile_size=[tiny.LATENT_H, tiny.LATENT_W],
                          tile_stride=[tiny.LATENT_H // 2, tiny.LATENT_W // 2])
    mask = torch.ones_like(img_cond)
    mask[:, :, 1:] = 0
    cond_concat = torch.cat([mask[:, :4], img_cond], dim=1)
    put("enc/img_cond", img_cond)
    # a longer session's condition, encoded up front as upstream does: its zero-frame latents settle
    n_long = tiny.LONG_LATENT_FRAMES
    long_video = torch.cat([image, torch.zeros_like(image).repeat(1, 1, 4 * (n_long - 1), 1, 1)], dim=2)
    put("enc/long_img_cond", vae.encode(long_video, device="cpu", tiled=True,
                                        tile_size=[tiny.LATENT_H, tiny.LATENT_W],
                                        tile_stride=[tiny.LATENT_H // 2, tiny.LATENT_W // 2]))

    # -- CLIP image tokens: upstream's VisionTransformer, preprocessed as CLIPModel.encode_video does --
    clip = up.wanx_clip.VisionTransformer(
        image_size=tiny.CLIP["image_size"], patch_size=14, dim=tiny.CLIP["dim"], mlp_ratio=4,
        out_dim=tiny.CLIP["out_dim"], num_heads=tiny.CLIP["heads"], num_layers=tiny.CLIP["layers"],
        pool_type="token", pre_norm=True, activation="gelu").eval()
    tiny.fill_weights(clip)
    frames = image.transpose(1, 2).reshape(1, 3, *image.shape[-2:])
    frames = F.interpolate(frames, size=(tiny.CLIP["image_size"],) * 2, mode="bicubic", align_corners=False)
    clip_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    clip_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    frames = frames.mul(0.5).add(0.5).sub(clip_mean).div(clip_std)  # torchvision's Normalize
    put("clip/tokens", clip(frames, use_31_block=True))
    gold["keys/clip"] = np.array([f"{k}:{tuple(v.shape)}" for k, v in clip.state_dict().items()])

    # -- the DiT and the pipeline --
    generator = up.wan_wrapper.WanDiffusionWrapper(model_config=copy.deepcopy(cfg), timestep_shift=5.0)
    tiny.fill_weights(generator.model)
    generator.eval()
    decoder = up.vae_block3.VAEDecoderWrapper()
    decoder.decoder = up.vae_block3.VAEDecoder3d(dim=tiny.VAE_DIM, z_dim=16)
    tiny.fill_weights(decoder)
    decoder.eval()
    n_layers = cfg["num_layers"]

    class TinyPipeline(up.causal_inference.CausalInferencePipeline):
        """Upstream's pipeline with its cache allocators sized for the tiny model (same layout)."""

        def _initialize_kv_cache(self, batch_size, dtype, device):
            size = self.local_attn_size * self.frame_seq_length
            self.kv_cache1 = [_kv([batch_size, size, heads, hd], dtype) for _ in range(n_layers)]

        def _initialize_kv_cache_mouse_and_keyboard(self, batch_size, dtype, device):
            size = self.local_attn_size
            self.kv_cache_keyboard = [_kv([batch_size, size, a_heads, a_hd], dtype) for _ in range(n_layers)]
            self.kv_cache_mouse = [_kv([batch_size * S, size, a_heads, a_hd], dtype) for _ in range(n_layers)]

        def _initialize_crossattn_cache(self, batch_size, dtype, device):
            z = torch.zeros([batch_size, tiny.CONTEXT_TOKENS, heads, hd], dtype=dtype)
            self.crossattn_cache = [{"k": z.clone(), "v": z.clone(), "is_init": False} for _ in range(n_layers)]

    def _kv(shape, dtype):
        return {"k": torch.zeros(shape, dtype=dtype), "v": torch.zeros(shape, dtype=dtype),
                "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}

    pargs = types.SimpleNamespace(denoising_step_list=list(tiny.DENOISING_STEPS), warp_denoising_step=True,
                                  num_frame_per_block=3, context_noise=0)

    calls: list[dict] = []

    class RecordingDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = decoder
            self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []

        def forward(self, z, *cache):
            z = z.float()  # upstream hands fp16 latents to its fp16 decoder; decode them in fp32
            out, cache = self.inner(z, *cache)
            self.blocks.append((z.clone(), out.clone()))
            return out, cache

    rec_decoder = RecordingDecoder()
    pipe = TinyPipeline(pargs, generator=generator, vae_decoder=rec_decoder)
    pipe.frame_seq_length = S
    put("sampler/denoising_steps", pipe.denoising_step_list)

    def after_call(module, args_, kwargs, output):
        flow, x0 = output
        rec = dict(x=kwargs["noisy_image_or_video"].clone(), t=kwargs["timestep"].clone(),
                   start=kwargs["current_start"], flow=flow.clone(), x0=x0.clone())
        for i in range(n_layers):
            for kind, caches in (("self", pipe.kv_cache1), ("mouse", pipe.kv_cache_mouse),
                                 ("keyboard", pipe.kv_cache_keyboard)):
                c = caches[i]
                rec[f"{kind}{i}"] = (c["k"].clone(), c["v"].clone(), int(c["global_end_index"]),
                                     int(c["local_end_index"]))
        if not calls:
            rec["cross"] = [(c["k"].clone(), c["v"].clone()) for c in pipe.crossattn_cache]
        calls.append(rec)

    generator.register_forward_hook(after_call, with_kwargs=True)
    fresh: list[torch.Tensor] = []
    real_randn_like = torch.randn_like

    def recording_randn_like(t, *a, **kw):
        out = real_randn_like(t, *a, **kw)
        fresh.append(out.clone())
        return out

    torch.randn_like = recording_randn_like
    cond = {"cond_concat": cond_concat, "visual_context": visual_context,
            "mouse_cond": mouse, "keyboard_cond": keyboard}
    try:
        pipe.inference(noise=noise, conditional_dict=cond, return_latents=False, mode="universal")
    finally:
        torch.randn_like = real_randn_like

    # -- write --
    for name, module in (("dit", generator.model), ("vae_encoder", vae.model.encoder), ("vae_decoder", decoder)):
        gold[f"keys/{name}"] = np.array([f"{k}:{tuple(v.shape)}" for k, v in module.state_dict().items()])
    put("in/cond_concat", cond_concat)
    for j, noise_j in enumerate(fresh):
        put(f"sampler/fresh_noise/{j}", noise_j)
    n_calls_per_block = len(tiny.DENOISING_STEPS) + 1
    for n, rec in enumerate(calls):
        p = f"call/{n}/"
        put(p + "x", rec["x"])
        put(p + "t", rec["t"])
        put(p + "start", rec["start"])
        put(p + "flow", rec["flow"])
        put(p + "x0", rec["x0"])
        for i in range(n_layers):
            for kind in ("self", "mouse", "keyboard"):
                k, v, ge, le = rec[f"{kind}{i}"]
                if kind != "self" and i not in acfg["blocks"]:
                    continue
                # a denoising call rewrites only the block's slot; the t=0 pass is kept whole
                lo = 0 if n % n_calls_per_block == n_calls_per_block - 1 else le - 3 * (S if kind == "self" else 1)
                put(p + f"cache/{kind}/{i}/k", k[:, lo:le])
                put(p + f"cache/{kind}/{i}/v", v[:, lo:le])
                put(p + f"cache/{kind}/{i}/ends", [ge, le])
        for i, (k, v) in enumerate(rec.get("cross", [])):
            put(f"cache/cross/{i}/k", k)
            put(f"cache/cross/{i}/v", v)
    for b, (z, video_b) in enumerate(rec_decoder.blocks):
        put(f"vae/{b}/z", z)
        put(f"vae/{b}/video", video_b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **gold)
    print(f"{len(calls)} DiT calls, {len(fresh)} fresh noises, {len(rec_decoder.blocks)} decoded blocks "
          f"({sum(v.shape[1] for _, v in rec_decoder.blocks)} frames); wrote {args.out} "
          f"({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
