"""The bundled model one step ahead of the truth: its chunks with the cache written from the true latents.

A session writes each finished chunk's own latents into the cache, so what the model draws at 6 s rests on
what it drew before. Here the first `truth_chunks` chunks are still denoised by the model, but the cache is
written from the reference world's true latents of those chunks instead (what training without a rollout
does); after them the model goes on from its own, as a session does. Scored like a session, this separates
what the model cannot draw at all from what it loses by building on its own drift:
`worldwalk eval` reports the landmark walk three ways (own context, the truth's throughout, the truth's until
4 s), and with `truth_chunks` 0 the frames are exactly a session's (tests/test_truth_context.py).
"""

from __future__ import annotations

import numpy as np
import torch

from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.vae import to_uint8
from worldwalk.runtime.worlds.bundled_world import BundledWorld, chunk_latent_indices, empty_text

from .train_world import TrainWorldConfig, _cameras

__all__ = ["truth_context_frames"]


@torch.no_grad()
def truth_context_frames(world: BundledWorld, truth: np.ndarray, poses: np.ndarray, K: np.ndarray, seed: int,
                         truth_chunks: int) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of `world` along poses (N, 4, 4) from truth[0], the cache of its first
    `truth_chunks` chunks written from the true frames' latents; F = 1 + stride L m, the whole chunks that fit."""
    cfg = world.model_cfg
    s, L = cfg.stride, cfg.chunk_latents
    m = (len(poses) - 1) // (s * L)  # whole chunks after the first image
    n = 1 + s * L * m
    # 1. the true frames' latents, the first image's included (the session encodes it the same way)
    x = torch.from_numpy(np.ascontiguousarray(truth[:n])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    true_z = world.vae.encode_video(x.to(world.device)).to(world.dtype)  # (1, C, 1 + L m, h, w)
    cams = _cameras(poses[:n], K[:n], m, cfg, TrainWorldConfig(augment=0.0), np.random.default_rng(0))
    stream = LatentRollout(world.transformer, world.rollout.sampler)
    text, mask = empty_text(cfg)
    stream.reset(text.to(world.device, world.dtype), mask.to(world.device), seed)
    h, w = true_z.shape[3:]
    out, state = [], None
    for k in range(m):
        idx = chunk_latent_indices(k, L)
        # 2. the model denoises chunk k reading the cache
        z = stream.denoise(cams[k], (1, true_z.shape[1], L, h, w), true_z[:, :, :1] if k == 0 else None)
        # 3. the cache is written from the truth's latents of the chunk, or from the model's own
        stream.commit(true_z[:, :, idx[0] : idx[-1] + 1] if k < truth_chunks else z, cams[k])
        # 4. decoded as a session decodes it
        pixels, state = world.vae.decode_chunk(z, state)
        out.append(to_uint8(pixels))
    return np.concatenate(out)
