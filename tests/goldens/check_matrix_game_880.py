"""Upstream against ours at the real frame geometry: 352x640 (44x80 latents, 880 tokens a frame), with
upstream's 880-token asserts left on (no `python -O`), two blocks of the tiny-width DiT. Prints the
relative error of every DiT call's flow and of the self-attention and mouse caches after it. Nothing
is written: the outputs at this size are too large to commit; the goldens use a 4x6 latent instead.

    PYTHONPATH=/tmp/mgdeps python tests/goldens/check_matrix_game_880.py --upstream /path/to/Matrix-Game-2
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.goldens import make_matrix_game_goldens as mk  # noqa: E402
from tests.goldens import matrix_game_tiny as tiny  # noqa: E402
from worldwalk.runtime.matrix_game import CausalDiT, MatrixGameConfig, Rollout  # noqa: E402

H, W, N = 44, 80, 6  # latent size, latent frames (two blocks)
S = (H // 2) * (W // 2)


def _kv(shape: list[int]) -> dict:
    return {"k": torch.zeros(shape), "v": torch.zeros(shape), "global_end_index": torch.tensor([0]),
            "local_end_index": torch.tensor([0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, type=Path)
    args = ap.parse_args()
    assert not sys.flags.optimize, "run without -O: this check keeps upstream's asserts"
    torch.set_grad_enabled(False)
    up = mk.import_upstream(args.upstream.resolve())
    g = torch.Generator().manual_seed(7)
    vis = torch.randn(1, 257, 1280, generator=g)
    noise = torch.randn(1, 16, N, H, W, generator=g)
    n_raw = 1 + 4 * (N - 1)
    keyboard = (torch.rand(1, n_raw, 4, generator=g) < 0.4).float()
    mouse = torch.randn(1, n_raw, 2, generator=g) * 0.1
    cond = torch.randn(1, 20, N, H, W, generator=g)

    gen = up.wan_wrapper.WanDiffusionWrapper(model_config=copy.deepcopy(tiny.DIT), timestep_shift=5.0)
    tiny.fill_weights(gen.model)
    gen.eval()
    heads, hd = tiny.DIT["num_heads"], tiny.DIT["dim"] // tiny.DIT["num_heads"]

    class Pipeline(up.causal_inference.CausalInferencePipeline):
        def _initialize_kv_cache(self, batch_size, dtype, device):
            self.kv_cache1 = [_kv([1, 6 * S, heads, hd]) for _ in range(2)]

        def _initialize_kv_cache_mouse_and_keyboard(self, batch_size, dtype, device):
            self.kv_cache_keyboard = [_kv([1, 6, 1, 64]) for _ in range(2)]
            self.kv_cache_mouse = [_kv([S, 6, 1, 64]) for _ in range(2)]

        def _initialize_crossattn_cache(self, batch_size, dtype, device):
            self.crossattn_cache = [{"k": None, "v": None, "is_init": False} for _ in range(2)]

    class NoDecode(torch.nn.Module):
        def forward(self, z, *cache):
            return z, list(cache)

    pargs = types.SimpleNamespace(denoising_step_list=[1000, 666, 333], warp_denoising_step=True,
                                  num_frame_per_block=3, context_noise=0)
    pipe = Pipeline(pargs, generator=gen, vae_decoder=NoDecode())

    def window(c: dict) -> torch.Tensor:
        return c["k"][:, : int(c["local_end_index"])].clone()

    theirs: list = []
    gen.register_forward_hook(lambda m, a, kw, out: theirs.append(
        (out[0].clone(), [window(c) for c in pipe.kv_cache1], window(pipe.kv_cache_mouse[0]))), with_kwargs=True)
    fresh: list[torch.Tensor] = []
    real_randn_like = torch.randn_like

    def recording(t, *a, **kw):
        fresh.append(real_randn_like(t, *a, **kw))
        return fresh[-1]

    torch.randn_like = recording
    torch.manual_seed(0)
    try:
        pipe.inference(noise=noise, conditional_dict={"cond_concat": cond, "visual_context": vis,
                                                      "mouse_cond": mouse, "keyboard_cond": keyboard})
    finally:
        torch.randn_like = real_randn_like

    cfg = MatrixGameConfig.tiny(latent_height=H, latent_width=W)
    dit = CausalDiT(cfg).eval()
    tiny.fill_weights(dit)

    class Condition:
        def block(self, first: int, n: int) -> torch.Tensor:
            return cond[:, :, first : first + n]

    fresh_it, block_it = iter(fresh), iter(range(N))

    def source(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        if kind == "fresh":
            return next(fresh_it).permute(1, 0, 2, 3)[None]
        b = next(block_it)
        return noise[:, :, 3 * b : 3 * b + 3]

    ours: list = []

    def observe(c: dict) -> None:
        layers = c["cache"].layers
        mk_ = layers[0].mouse_kv
        ours.append((c["flow"].clone(), [x.self_kv.k[:, : x.self_kv.local_end].clone() for x in layers],
                     mk_.k[:, : mk_.local_end].clone()))

    roll = Rollout(cfg, dit, types.SimpleNamespace(decode_block=lambda z, cache: z))
    roll.observer = observe
    roll.reset(vis, condition=Condition(), noise=source)  # type: ignore[arg-type]
    done = 0
    for _ in range(N // 3):
        n = roll.raw_frames_needed()
        roll.step(keyboard[:, done : done + n], mouse[:, done : done + n])
        done += n

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b.double()).norm() / b.double().norm())

    print(f"{len(theirs)} upstream calls at {S} tokens a frame")
    for i, (o, u) in enumerate(zip(ours, theirs, strict=True)):
        print(f"call {i}: flow {rel(o[0], u[0]):.1e}  self0.k {rel(o[1][0], u[1][0]):.1e}  "
              f"self1.k {rel(o[1][1], u[1][1]):.1e}  mouse0.k {rel(o[2], u[2]):.1e}")


if __name__ == "__main__":
    main()
