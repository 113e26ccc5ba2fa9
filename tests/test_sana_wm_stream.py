"""SANA-WM streaming: cached chunk-by-chunk generation against a whole-history recompute reference.

The reference below recomputes every chunk from the whole history (all earlier chunks' clean latents
at t = 0 plus the current chunk) with no cache at all. It spells out the chunk-causal structure the
cache must reproduce, one frame at a time:
- GDN: a forward delta-rule scan over every frame so far, plus a backward scan inside the frame's chunk;
- K short conv: causal taps across chunks, anti-causal taps inside the chunk;
- softmax blocks: a chunk's queries see its own chunk, chunk 0 (the sink) and the last kv_window - 1
  chunks before it, mirroring the cache's window;
- FFN temporal conv: the previous frame always, the next frame only inside the chunk.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worldwalk.runtime.sana_wm import SanaWMConfig
from worldwalk.runtime.sana_wm.camera import CameraInputs, ucpe_transforms
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.rope import apply_rope
from worldwalk.runtime.sana_wm.sampler import FlowSampler

from .builders import CHUNK
from .builders import LATENT_H as H
from .builders import LATENT_W as W
from .builders import tiny_cameras as _cameras
from .builders import tiny_transformer as _model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------
# the reference: whole-history recompute, no cache
# ------------------------------------------------------------------------------------------------


def _visible(j: int, cfg: SanaWMConfig) -> set[int]:
    if cfg.sink:
        prev = ({0} if j > 0 else set()) | set(range(max(1, j - cfg.kv_window + 1), j))
    else:
        prev = set(range(max(0, j - cfg.kv_window), j))
    return prev | {j}


def _short_conv(weight: torch.Tensor, x: torch.Tensor, cid: list[int]) -> torch.Tensor:
    """x (B, F, S, C): causal taps over all frames, anti-causal taps within the chunk, centre once."""
    w = weight[:, 0, :]  # (C, K)
    K, Fr = w.shape[1], x.shape[1]
    out = torch.zeros_like(x)
    for t in range(Fr):
        for j in range(K):
            if t - K + 1 + j >= 0:
                out[:, t] += w[:, j] * x[:, t - K + 1 + j]
            u = t + K - 1 - j
            if u < Fr and cid[u] == cid[t]:
                out[:, t] += w[:, j] * x[:, u]
        out[:, t] -= w[:, K - 1] * x[:, t]
    return out


def _upd(S, k, v, b, g):
    return g * (S - (S @ (k * b)) @ k.transpose(-1, -2)) + (v * b) @ k.transpose(-1, -2)


def _updz(z, k, b, g):
    return g * (z - (k * b) @ (k.transpose(-1, -2) @ z)) + (k * b).sum(-1, keepdim=True)


def _scan_ref(q, k, v, beta, decay, cid, zq=None, zk=None):
    """Per frame: forward delta rule over all frames <= t plus backward over later frames of its chunk."""
    B, Hh, Fr, D, S = q.shape
    out = []
    Sf = q.new_zeros(B, Hh, D, D)
    zf = q.new_zeros(B, Hh, D, 1)
    for t in range(Fr):
        Sf = _upd(Sf, k[:, :, t], v[:, :, t], beta[:, :, t], decay[:, :, t])
        Sb = q.new_zeros(B, Hh, D, D)
        end = max(u for u in range(Fr) if cid[u] == cid[t])
        for u in range(end, t, -1):
            Sb = _upd(Sb, k[:, :, u], v[:, :, u], beta[:, :, u], decay[:, :, u])
        num = (Sf + Sb) @ q[:, :, t]
        if zq is None:
            out.append(num)
            continue
        zf = _updz(zf, zk[:, :, t], beta[:, :, t], decay[:, :, t])
        zb = q.new_zeros(B, Hh, D, 1)
        for u in range(end, t, -1):
            zb = _updz(zb, zk[:, :, u], beta[:, :, u], decay[:, :, u])
        out.append(num / ((zf + zb).transpose(-1, -2) @ zq[:, :, t] + 1e-8))
    return torch.stack(out, 2)  # (B, H, F, D, S)


def _ref_gdn(att, a, Fr, rope, ucpe, crope, cid):
    B, N, C = a.shape
    S, D = N // Fr, att.head_dim
    beta, decay = att.gates(a, Fr)
    fr = lambda x: x.reshape(B, att.heads, Fr, S, D).transpose(-1, -2)  # noqa: E731
    tok = lambda x: x.transpose(-1, -2).reshape(B, att.heads, N, D)  # noqa: E731
    q, k, v = att.qkv(a).chunk(3, -1)
    k = _short_conv(att.conv_k.weight, k.view(B, Fr, S, C), cid).view(B, N, C)
    q = torch.relu(att.split_heads(att.q_norm(q)))
    k = torch.relu(att.split_heads(att.k_norm(k))) * D**-0.5 * S**-0.5
    v = att.split_heads(v)
    main = _scan_ref(fr(apply_rope(q, rope)), fr(apply_rope(k, rope)), fr(v), beta, decay, cid, fr(q), fr(k))
    main = tok(main).transpose(1, 2).reshape(B, N, C)
    qc, kc, vc = att.q_proj_cam(a), att.k_proj_cam(a), att.v_proj_cam(a)
    kc = _short_conv(att.conv_k_cam.weight, kc.view(B, Fr, S, C), cid).view(B, N, C)
    qc = torch.relu(att.split_heads(att.q_norm_cam(qc)))
    kc = torch.relu(att.split_heads(att.k_norm_cam(kc))) * D**-0.5 * S**-0.5
    vc = att.split_heads(vc)
    from worldwalk.runtime.sana_wm.camera import apply_ucpe

    pre = kc.norm(dim=-1).clamp_min(1e-6)
    qc, kc, vc = apply_ucpe(qc, ucpe.P_T, crope), apply_ucpe(kc, ucpe.P_inv, crope), apply_ucpe(vc, ucpe.P_inv, crope)
    infl = ((kc.norm(dim=-1).clamp_min(1e-6) / pre) ** 2).view(B, att.heads, Fr, S).mean(-1)
    cam = _scan_ref(fr(qc), fr(kc), fr(vc), beta / infl.clamp_min(1.0)[..., None, None], decay, cid)
    cam = apply_ucpe(tok(cam), ucpe.P, crope, inverse_rope=True).transpose(1, 2).reshape(B, N, C)
    return att.finish(main, cam, a)


def _ref_softmax(att, a, Fr, rope, ucpe, crope, cid, cfg):
    from worldwalk.runtime.sana_wm.camera import apply_ucpe

    B, N, C = a.shape
    S = N // Fr
    q, k, v = att.qkv(a).chunk(3, -1)
    q = apply_rope(att.split_heads(att.q_norm(q)), rope)
    k = apply_rope(att.split_heads(att.k_norm(k)), rope)
    v = att.split_heads(v)
    qc = apply_ucpe(att.split_heads(att.q_norm_cam(att.q_proj_cam(a))), ucpe.P_T, crope)
    kc = apply_ucpe(att.split_heads(att.k_norm_cam(att.k_proj_cam(a))), ucpe.P_inv, crope)
    vc = apply_ucpe(att.split_heads(att.v_proj_cam(a)), ucpe.P_inv, crope)
    chunk_of_token = torch.tensor(cid).repeat_interleave(S)
    main, cam = torch.zeros_like(q), torch.zeros_like(qc)
    for j in sorted(set(cid)):
        rows = chunk_of_token == j
        cols = torch.tensor([int(c) in _visible(j, cfg) for c in chunk_of_token])
        main[:, :, rows] = F.scaled_dot_product_attention(q[:, :, rows], k[:, :, cols], v[:, :, cols])
        cam[:, :, rows] = F.scaled_dot_product_attention(qc[:, :, rows], kc[:, :, cols], vc[:, :, cols])
    cam = apply_ucpe(cam, ucpe.P, crope, inverse_rope=True)
    return att.finish(main.transpose(1, 2).reshape(B, N, C), cam.transpose(1, 2).reshape(B, N, C), a)


def _ref_ffn(mlp, f, cid, grid):
    Fr, h, w = grid
    B, N, C = f.shape
    y = f.reshape(B * Fr, h, w, C).permute(0, 3, 1, 2)
    y = mlp.depth_conv(mlp.inverted_conv(y))
    val, gate = y.chunk(2, 1)
    y = mlp.point_conv(val * F.silu(gate)).view(B, Fr, C, h * w)
    wt = mlp.t_conv.weight[:, :, :, 0]  # (C, C, 3)
    out = []
    for t in range(Fr):
        acc = y[:, t] + torch.einsum("oi,bis->bos", wt[..., 1], y[:, t])
        if t > 0:
            acc = acc + torch.einsum("oi,bis->bos", wt[..., 0], y[:, t - 1])
        if t + 1 < Fr and cid[t + 1] == cid[t]:
            acc = acc + torch.einsum("oi,bis->bos", wt[..., 2], y[:, t + 1])
        out.append(acc)
    return torch.stack(out, 1).permute(0, 1, 3, 2).reshape(B, N, C)


def reference_velocity(m, x_all, t_all, cid, cam: CameraInputs, text, mask):
    cfg = m.cfg
    B, Cl, Fr, h, w = x_all.shape
    D = cfg.hidden_size
    x = m.x_embedder(x_all)
    te = m.t_embedder(t_all.long().float().flatten())
    t0 = m.t_block(te).view(B, Fr, 6, D)
    y = m.attention_y_norm(m.y_embedder(text))
    rope = m.rope(0, Fr, h, w, x.device)
    ucpe = ucpe_transforms(cam.conditions, (h, w), (1, 1))
    crope = m.rope.camera_slice(rope)
    pl = m.plucker_embedder(cam.plucker)
    for blk in m.blocks:
        sm, cm, gm, sf, cf, gf = (blk.scale_shift_table[None, None] + t0).chunk(6, 2)
        a = (blk.norm1(x).view(B, Fr, -1, D) * (1 + cm) + sm).view(B, -1, D)
        if blk.softmax:
            a = _ref_softmax(blk.attn, a, Fr, rope, ucpe, crope, cid, cfg)
        else:
            a = _ref_gdn(blk.attn, a, Fr, rope, ucpe, crope, cid)
        x = x + (gm * a.view(B, Fr, -1, D)).view(B, -1, D)
        x = x + blk.plucker_proj(pl)
        x = x + blk.cross_attn(x, blk.cross_attn.prompt_kv(y), mask.bool())
        f = (blk.norm2(x).view(B, Fr, -1, D) * (1 + cf) + sf).view(B, -1, D)
        x = x + (gf * _ref_ffn(blk.mlp, f, cid, (Fr, h, w)).view(B, Fr, -1, D)).view(B, -1, D)
    x = m.final_layer(x, te.view(B, Fr, D), Fr)
    return x.view(B, Fr, h, w, Cl).permute(0, 4, 1, 2, 3)


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kv_window", "sink"), [(2, True), (4, True), (3, False)])
def test_cached_stream_equals_whole_history_recompute(kv_window, sink):
    """The default window, a window the sink and two chunks do not fill before chunk 4, and one without a sink."""
    m = _model(kv_window=kv_window, sink=sink)
    cams = _cameras(6)
    text = torch.randn(1, 6, m.cfg.caption_channels, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 6)
    prefix = torch.randn(1, m.cfg.in_channels, 1, H, W, generator=torch.Generator().manual_seed(4))
    shape = (1, m.cfg.in_channels, CHUNK, H, W)

    stream = LatentRollout(m, FlowSampler())
    stream.reset(text, mask, seed=7)
    cached = [stream.step(cams[c], shape, prefix if c == 0 else None) for c in range(6)]

    sampler, gen = FlowSampler(), torch.Generator().manual_seed(7)
    hist: list[torch.Tensor] = []
    hist_cid: list[int] = []
    errs = []
    with torch.no_grad():
        for c in range(6):
            cam_all = CameraInputs.cat(cams[: c + 1])
            past = torch.cat(hist, 2) if hist else None

            def velocity(x, t, past=past, cam_all=cam_all, c=c, prev_cid=tuple(hist_cid)):
                n = x.shape[2]
                x_all = x if past is None else torch.cat([past, x], 2)
                t_all = torch.cat([torch.zeros(1, x_all.shape[2] - n), t], 1)
                cid = list(prev_cid) + [c] * n
                return reference_velocity(m, x_all, t_all, cid, cam_all, text, mask)[:, :, -n:]

            z = sampler.denoise(velocity, shape, gen, torch.device("cpu"), torch.float32, prefix if c == 0 else None)
            hist.append(z)
            hist_cid += [c] * z.shape[2]
            errs.append(((z - cached[c]).abs().max() / z.abs().max()).item())
    print("per-chunk max rel. error, cached vs recompute:", ", ".join(f"{e:.1e}" for e in errs))
    assert max(errs) < 1e-4


def test_cache_size_is_constant():
    m = _model()
    cam = _cameras(2)[1]
    text, mask = torch.randn(1, 4, m.cfg.caption_channels), torch.ones(1, 4)
    cache = m.new_cache()
    z = torch.randn(1, m.cfg.in_channels, CHUNK, H, W)
    sizes = {}
    with torch.no_grad():
        for c in range(1, 51):
            _, cache = m(z, torch.zeros(1, CHUNK), text, mask, cam, cache, write=True)
            if c in (5, 50):
                sizes[c] = cache.nbytes()
    print(f"cache bytes after 5 chunks: {sizes[5]}, after 50: {sizes[50]}")
    assert cache.frames == 50 * CHUNK
    assert sizes[5] == sizes[50] > 0
