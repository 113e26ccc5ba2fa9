"""The per-chunk SANA-WM step and the VAE decoder step as fixed-shape, pure-tensor modules, and their ONNX export.

Every accelerated path (ONNX Runtime, torch.compile, TensorRT, CUDA graphs) runs the modules defined here,
so they share one flattening of the cache and one graph per chunk shape:

- `ChunkStep(transformer, layout, write)`: one transformer forward over a chunk after the first. The
  denoising passes (`write=False`) return the velocity; the clean pass (`write=True`) returns the velocity
  and the cache after the chunk. Inputs that the eager model builds from Python ints (RoPE at the chunk's
  absolute frame position, UCPE matrices) come in as tensors, so one graph serves every chunk >= 1. Backends
  whose graphs embed the weights (ONNX Runtime, TensorRT) build only the write step and run the denoising
  passes on it too, keeping the velocity (apply.AcceleratedStep `shared`): the weights are held once.
- `DecodeStep(vae, keys, template)`: the VAE's chunked causal decode of a chunk after the first, its
  carried conv tails in and out as tensors.

The first chunk (image latent + generated frames, empty cache, upsamplers dropping frames) runs eagerly:
it has other shapes and happens once a session.

Flat cache layout (`CacheLayout`), per block in order, only the entries the config has:
    GDN block      b{i}.state (B,H,D,D) fp32, b{i}.norm_state (B,H,D,1) fp32, b{i}.cam_state (B,H,D,D) fp32,
                   b{i}.k_tail (B,S,K-1,C), b{i}.cam_k_tail (B,S,K-1,C), b{i}.ffn_tail (B,C,P,S)
    softmax block  b{i}.k, b{i}.v, b{i}.cam_k, b{i}.cam_v (B,H,N_max,D), b{i}.ffn_tail (B,C,P,S)
with N_max = N_0 + (kv_window - 1) N_c (N_0 tokens of chunk 0, the sink; N_c of later chunks): the sink in
[0, N_0), then the recent chunks oldest first, each N_c long. Slots not yet filled are zeros and masked by
`kv_mask` (N_max,) (0 = attend, -inf = padding, shared by every softmax block; near the first view the recent
chunks' slots carry the home view's fade, attention.recent_bias); filled slots sit at the
end of the recent region, so a write shifts the recent region left by one chunk and appends the new one.
Tensor names of the graphs: inputs `latents timesteps text_mask rope cam_rope ucpe_p ucpe_pt ucpe_pinv kv_mask`,
then `b{i}.plucker` per block with a Plücker projection (its `plucker_proj` of the chunk's embedded rays
(B, N, C), made once for the chunk's passes: transformer.ChunkInputs), the prompt's
cross-attention K/V `b{i}.cross_k b{i}.cross_v` per block (`PromptContext`, made once a session, so the
graphs carry no caption embedder and no cross-attention K/V projection), then the cache names; outputs
`velocity` (+ `new.` + the cache names when writing).

Exported files are cached on disk (`export_dir()`: $WORLDWALK_ONNX_DIR or ~/.cache/worldwalk/onnx), one folder
per graph named by its kind and `module_hash` (the checkpoint files a world was loaded from, else the weights'
bytes; the configs), the input shapes and dtypes, the torch/onnx versions, the opset and the device
(`<kind>-<hash>/model.onnx`; TensorRT engines are cached beside it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldwalk.runtime.sana_wm.attention import recent_bias
from worldwalk.runtime.sana_wm.cache import ChunkKV, GDNCache, PromptContext, SoftmaxCache, StreamingCache, owned
from worldwalk.runtime.sana_wm.camera import CameraInputs, UcpeTransforms, apply_ucpe
from worldwalk.runtime.sana_wm.layers import TemporalShortConv
from worldwalk.runtime.sana_wm.rope import apply_rope
from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
from worldwalk.runtime.weights_source import weights_source

STEP_INPUTS = ("latents", "timesteps", "text_mask", "rope", "cam_rope", "ucpe_p", "ucpe_pt", "ucpe_pinv", "kv_mask")
OPSET = 17
GDN_FIELDS = ("state", "norm_state", "cam_state", "k_tail", "cam_k_tail")
KV_FIELDS = ("k", "v", "cam_k", "cam_v")


class ExportError(RuntimeError):
    pass


def export_dir(path: str | os.PathLike | None = None) -> Path:
    """Where exported graphs (and TensorRT engines) are cached."""
    p = path or os.environ.get("WORLDWALK_ONNX_DIR") or "~/.cache/worldwalk/onnx"
    out = Path(p).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return out


def module_hash(*modules: nn.Module) -> str:
    """sha256 naming the weights an export embeds; called only when a graph is exported.

    Every parameter's and buffer's name, dtype and shape count, and every sub-module's config (`cfg` dataclass or
    diffusers `config`: settings such as softmax_bf16 change the graph without changing a weight). The weights
    themselves count by their checkpoint files (runtime/weights_source.py) for a sub-module loaded from files
    and unchanged since, else by their bytes (copied to the host: 5-15 s at full size, which the files avoid).
    The source of every worldwalk class in the modules counts too: a graph traced by older code is not reused."""
    h = hashlib.sha256()
    for m in modules:
        sourced: list[str] = []
        for path in sorted({_source_file(type(sub)) for sub in m.modules()} - {None}):
            h.update(_file_digest(path).encode())
        for prefix, sub in m.named_modules():  # parents first: a marked parent covers its children
            if any(_under(prefix, s) for s in sourced):
                continue
            source = weights_source(sub)
            if source is not None:
                sourced.append(prefix)
                h.update(f"{prefix}<-{source}".encode())
            config = _config_text(sub)
            if config:
                h.update(f"{prefix}:{config}".encode())
        for name, t in sorted(m.state_dict().items()):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            if not any(_under(name, s) for s in sourced):
                t = t.detach().cpu().contiguous()
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _config_text(module: nn.Module) -> str:
    cfg = getattr(module, "cfg", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    config = getattr(module, "config", None)  # diffusers models: a FrozenDict
    if isinstance(config, dict):
        return json.dumps(dict(config), sort_keys=True, default=str)
    return ""


def _source_file(cls: type) -> str | None:
    """The file defining a worldwalk class (None for torch's own and other libraries' classes)."""
    if not cls.__module__.startswith("worldwalk."):
        return None
    return getattr(sys.modules.get(cls.__module__), "__file__", None)


@functools.cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_key(kind: str, weights_hash: str, inputs: Sequence[torch.Tensor], extra: dict | None = None) -> str:
    """File stem for an exported graph: kind, weights, shapes and dtypes, versions and device."""
    import onnx

    meta = {
        "kind": kind,
        "weights": weights_hash,
        "shapes": [(tuple(t.shape), str(t.dtype)) for t in inputs],
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": OPSET,
        "device": str(inputs[0].device),
        **(extra or {}),
    }
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return f"{kind}-{digest}"


# ---------------------------------------------------------------------------------------------------
# The cache, flattened
# ---------------------------------------------------------------------------------------------------


@dataclass
class CacheLayout:
    """Names and shapes of the flat cache of one transformer at one chunk shape (see the module doc)."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[torch.dtype]
    softmax: list[bool]  # per block
    n0: int  # tokens of chunk 0 (the sink)
    nc: int  # tokens of a later chunk
    keep: int  # recent chunks kept (kv_window - 1)

    @property
    def n_max(self) -> int:
        return self.n0 + self.keep * self.nc

    @staticmethod
    def from_cache(cache: StreamingCache, transformer: SanaWMStreamingTransformer, chunk_tokens: int) -> CacheLayout:
        """The layout of chunks >= 1, read off a cache written by chunk 0 (eager)."""
        cfg = transformer.cfg
        if not cfg.sink:
            raise ExportError("the fixed-shape chunk step needs SanaWMConfig.sink=True (a sink fixes the window size)")
        keep = cfg.kv_window - 1
        names, shapes, dtypes, soft, n0 = [], [], [], [], 0
        for i, b in enumerate(cache.blocks):
            soft.append(isinstance(b, SoftmaxCache))
            if isinstance(b, SoftmaxCache):
                if b.sink is None or b.sink.cam_k is None:
                    raise ExportError("chunk 0 must be written with camera inputs before the chunk step can run")
                n0 = b.sink.k.shape[2]
                for f in KV_FIELDS:
                    t = getattr(b.sink, f)
                    names.append(f"b{i}.{f}")
                    shapes.append((*t.shape[:2], n0 + keep * chunk_tokens, t.shape[3]))
                    dtypes.append(t.dtype)
            else:
                for f in GDN_FIELDS:
                    t = getattr(b, f)
                    if t is not None:
                        names.append(f"b{i}.{f}")
                        shapes.append(tuple(t.shape))
                        dtypes.append(t.dtype)
            if b.ffn_tail is not None:
                names.append(f"b{i}.ffn_tail")
                shapes.append(tuple(b.ffn_tail.shape))
                dtypes.append(b.ffn_tail.dtype)
        return CacheLayout(names, shapes, dtypes, soft, n0, chunk_tokens, keep)

    def flatten(self, cache: StreamingCache, home: float = 0.0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(flat tensors in `names` order, kv_mask (N_max,)) of a cache written by chunks 0..k-1; `home`
        (CameraInputs.home) fades the recent chunks as the eager attention does (attention.recent_bias)."""
        flat: list[torch.Tensor] = []
        recent = 0
        for b in cache.blocks:
            if isinstance(b, SoftmaxCache):
                recent = len(b.recent)
                for f in KV_FIELDS:
                    sink = getattr(b.sink, f)
                    parts = [getattr(kv, f).to(sink.dtype) for kv in b.recent]
                    pad = self.keep - len(parts)
                    if pad:
                        parts.insert(0, sink.new_zeros(*sink.shape[:2], pad * self.nc, sink.shape[3]))
                    flat.append(torch.cat([sink, *parts], 2) if parts else sink)
            else:
                flat += [getattr(b, f) for f in GDN_FIELDS if getattr(b, f) is not None]
            if b.ffn_tail is not None:
                flat.append(b.ffn_tail)
        dev = flat[0].device
        mask = torch.zeros(self.n_max, device=dev)
        mask[self.n0 : self.n0 + (self.keep - recent) * self.nc] = float("-inf")
        if home > 0 and recent:
            mask[self.n_max - recent * self.nc :] = recent_bias(home)
        return [t.contiguous() for t in flat], mask

    def unflatten(self, flat: Sequence[torch.Tensor], before: StreamingCache, frames: int) -> StreamingCache:
        """The typed cache after one more chunk of `frames` latent frames, from the write step's outputs."""
        it = iter(flat)
        blocks: list[GDNCache | SoftmaxCache] = []
        for b in before.blocks:
            if isinstance(b, SoftmaxCache):
                k, v, ck, cv = (next(it) for _ in KV_FIELDS)
                n = min(len(b.recent) + 1, self.keep)
                recent = tuple(  # copies: a slice would keep the whole padded window alive
                    ChunkKV(*(owned(t[:, :, s : s + self.nc]) for t in (k, v, ck, cv)))
                    for s in range(self.n_max - n * self.nc, self.n_max, self.nc)
                )
                blocks.append(SoftmaxCache(b.sink, recent, next(it) if b.ffn_tail is not None else None))
            else:
                vals = {f: next(it) if getattr(b, f) is not None else None for f in GDN_FIELDS}
                blocks.append(GDNCache(**vals, ffn_tail=next(it) if b.ffn_tail is not None else None))
        return StreamingCache(blocks, before.frames + frames, before.chunks + 1)


# ---------------------------------------------------------------------------------------------------
# The chunk step
# ---------------------------------------------------------------------------------------------------


def real_rope(table: torch.Tensor) -> torch.Tensor:
    """Complex (N, D/2) RoPE table -> real (N, D/2, 2) (cos, sin), which `apply_rope` also takes."""
    return torch.view_as_real(table).contiguous()


def plucker_names(transformer: SanaWMStreamingTransformer) -> list[str]:
    """Input names of the blocks' projected Plücker embeddings (after `STEP_INPUTS`)."""
    return [f"b{i}.plucker" for i, b in enumerate(transformer.blocks) if hasattr(b, "plucker_proj")]


def prompt_names(blocks: int) -> list[str]:
    """Input names of the prompt's per-block cross-attention K/V (after `STEP_INPUTS`)."""
    return [f"b{i}.cross_{t}" for i in range(blocks) for t in ("k", "v")]


def prompt_inputs(prompt: PromptContext) -> list[torch.Tensor]:
    """The `prompt_names` tensors of a session's prompt."""
    return [t.contiguous() for kv in prompt.kv for t in kv]


def step_inputs(
    transformer: SanaWMStreamingTransformer,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    prompt: PromptContext,
    camera: CameraInputs,
    cache: StreamingCache,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(the `STEP_INPUTS` tensors of one chunk but kv_mask, the `plucker_names` tensors), which the prompt's K/V
    and the flat cache follow."""
    cfg = transformer.cfg
    _, _, T, H, W = latents.shape
    p = cfg.patch_size
    h, w = H // p[1], W // p[2]
    dev, dtype = latents.device, transformer.dtype
    with torch.no_grad():  # the same for the chunk's passes: the Plücker rays embedded and projected here, once
        chunk = transformer._chunk_inputs(camera, cache.frames, T, h, w, dev)
    u = chunk.ucpe
    fixed = [
        latents.to(dtype).contiguous(),
        timesteps.float().contiguous(),
        prompt.mask.bool().contiguous(),
        real_rope(chunk.rope),
        real_rope(chunk.cam_rope),
        u.P.contiguous(),
        u.P_T.contiguous(),
        u.P_inv.contiguous(),
    ]
    return fixed, [t.contiguous() for t in chunk.pluckers if t is not None]


def _softmax_attention(attn, x, T, rope, ucpe, cam_rope, ctx: list[torch.Tensor], kv_mask, masked: bool = True):
    """attention.SoftmaxAttention.forward over a padded, masked window (`masked`; unmasked once the window is
    full, which lets SDPA pick a flash kernel); returns (out, this chunk's k, v, ck, cv)."""
    B, N, C = x.shape
    mask = torch.cat([kv_mask, kv_mask.new_zeros(N)]).view(1, 1, 1, -1) if masked else None
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q = apply_rope(attn.split_heads(attn.q_norm(q)), rope)
    k = apply_rope(attn.split_heads(attn.k_norm(k)), rope)
    q, k, v = (attn._sdpa_dtype(t) for t in (q, k, attn.split_heads(v)))
    k_all, v_all = torch.cat([ctx[0].to(k.dtype), k], 2), torch.cat([ctx[1].to(v.dtype), v], 2)
    main = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=None if mask is None else mask.to(q.dtype))
    main = main.to(x.dtype).transpose(1, 2).reshape(B, N, C)
    qc = attn.split_heads(attn.q_norm_cam(attn.q_proj_cam(x)))
    kc = attn.split_heads(attn.k_norm_cam(attn.k_proj_cam(x)))
    vc = attn.split_heads(attn.v_proj_cam(x))
    qc = attn._sdpa_dtype(apply_ucpe(qc, ucpe.P_T, cam_rope))
    kc = attn._sdpa_dtype(apply_ucpe(kc, ucpe.P_inv, cam_rope))
    vc = attn._sdpa_dtype(apply_ucpe(vc, ucpe.P_inv, cam_rope))
    kc_all, vc_all = torch.cat([ctx[2].to(kc.dtype), kc], 2), torch.cat([ctx[3].to(vc.dtype), vc], 2)
    cmask = None if mask is None else mask.to(qc.dtype)
    out_c = F.scaled_dot_product_attention(qc, kc_all, vc_all, attn_mask=cmask).to(x.dtype)
    cam = apply_ucpe(out_c, ucpe.P, cam_rope, inverse_rope=True).transpose(1, 2).reshape(B, N, C)
    return attn.finish(main, cam, x), (k, v, kc, vc)


class ChunkStep(nn.Module):
    """One transformer forward over a chunk >= 1 with a flat cache (the graph every backend runs).

    forward(latents, timesteps, text_mask, rope, cam_rope, ucpe_p, ucpe_pt, ucpe_pinv, kv_mask, *pluckers, *prompt_kv,
    *cache) -> velocity, or (velocity, *new_cache) when `write` (pluckers: one per `plucker_names`, made once a
    chunk; prompt_kv: `prompt_inputs`, 2 per block).
    Mirrors SanaWMStreamingTransformer.forward and Block.forward; the softmax window is padded and masked, or
    (`masked=False`, for chunks whose window is full) not masked at all: kv_mask is then unused and the
    exported graph drops it.
    """

    def __init__(
        self, transformer: SanaWMStreamingTransformer, layout: CacheLayout, write: bool, masked: bool = True
    ) -> None:
        super().__init__()
        self.tr = transformer
        self.layout = layout
        self.write = write
        self.masked = masked

    def forward(self, latents, timesteps, text_mask, rope, cam_rope, ucpe_p, ucpe_pt, ucpe_pinv, kv_mask, *rest):
        tr, cfg, lay = self.tr, self.tr.cfg, self.layout
        n, n_pl = 2 * len(tr.blocks), sum(hasattr(b, "plucker_proj") for b in tr.blocks)
        given = iter(rest[:n_pl])  # each block's projected Plücker embedding (step_inputs)
        pluckers = [next(given) if hasattr(b, "plucker_proj") else None for b in tr.blocks]
        prompt_kv, cache = rest[n_pl : n_pl + n], rest[n_pl + n :]
        B, _, T, H, W = latents.shape
        p = cfg.patch_size
        grid = (T, H // p[1], W // p[2])
        x = tr.x_embedder(latents)  # (B, N, C)
        t_emb = tr.t_embedder(timesteps.long().float().flatten())  # (B*T, C)
        t0 = tr.t_block(t_emb).view(B, T, -1)
        t_emb = t_emb.view(B, T, -1)
        ucpe = UcpeTransforms(ucpe_p, ucpe_pt, ucpe_pinv)
        entries = dict(zip(lay.names, cache, strict=True))
        new: list[torch.Tensor] = []
        for i, block in enumerate(tr.blocks):
            kv = (prompt_kv[2 * i], prompt_kv[2 * i + 1])
            x = self._block(i, block, x, kv, text_mask, t0, grid, rope, ucpe, cam_rope, pluckers[i], entries, kv_mask,
                            new)
        x = tr.final_layer(x, t_emb, T)
        out = x.view(B, T, grid[1], grid[2], p[1], p[2], cfg.in_channels).permute(0, 6, 1, 2, 4, 3, 5)
        out = out.reshape(B, cfg.in_channels, T, H, W)
        return (out, *new) if self.write else out

    def _block(self, i, block, x, prompt_kv, mask, t0, grid, rope, ucpe, cam_rope, plucker, entries, kv_mask, new):
        B, N, C = x.shape
        T = grid[0]
        mod = (block.scale_shift_table[None, None] + t0.reshape(B, T, 6, C)).chunk(6, dim=2)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = (block.norm1(x).view(B, T, -1, C) * (1 + scale_msa) + shift_msa).view(B, N, C)
        if block.softmax:
            ctx = [entries[f"b{i}.{f}"] for f in KV_FIELDS]
            h, kv = _softmax_attention(block.attn, h, T, rope, ucpe, cam_rope, ctx, kv_mask, self.masked)
            if self.write:
                lay = self.layout
                for old, cur in zip(ctx, kv, strict=True):
                    # sink, then the recent region shifted left by one chunk, then this chunk
                    new.append(torch.cat([old[:, :, : lay.n0], old[:, :, lay.n0 + lay.nc :], cur.to(old.dtype)], 2)
                               if lay.keep > 0 else old)
        else:
            gc = GDNCache(**{f: entries.get(f"b{i}.{f}") for f in GDN_FIELDS})
            h, written = block.attn(h, T, rope, ucpe, cam_rope, gc, self.write)
            if self.write:
                new += [getattr(written, f) for f in GDN_FIELDS if f"b{i}.{f}" in entries]
        x = x + (gate_msa * h.view(B, T, -1, C)).view(B, N, C)
        if plucker is not None:
            x = x + plucker  # block.plucker_proj of the chunk's rays, made once for its passes
        x = x + block.cross_attn(x, prompt_kv, mask)
        h = (block.norm2(x).view(B, T, -1, C) * (1 + scale_mlp) + shift_mlp).view(B, N, C)
        h, ffn_tail = block.mlp(h, grid, entries.get(f"b{i}.ffn_tail"))
        if self.write and f"b{i}.ffn_tail" in entries:
            new.append(owned(ffn_tail))
        return x + (gate_mlp * h.view(B, T, -1, C)).view(B, N, C)


# ---------------------------------------------------------------------------------------------------
# The VAE decoder step
# ---------------------------------------------------------------------------------------------------


class DecodeStep(nn.Module):
    """The VAE's `decode_chunk` for a chunk >= 1 as a pure function: (z, *tails) -> (frames, *new_tails).

    `template` is the decode state chunk 0 left (any dataclass with `started`, optionally `tails`, a dict
    keyed by `keys`); the tails travel as tensors in `keys` order. Only its flags are kept: its tails would
    pin chunk 0's decode state for as long as the step lives.
    """

    def __init__(self, vae: Any, keys: list, template: Any) -> None:
        super().__init__()
        self.vae = vae
        self.keys = list(keys)
        self.template = replace(template, tails={}) if getattr(template, "tails", None) else template
        if isinstance(getattr(vae, "vae", None), nn.Module):
            self.decoder_module = vae.vae  # registered, so .to()/state_dict() see the weights

    def forward(self, z: torch.Tensor, *tails: torch.Tensor):
        state = self.template
        if self.keys:
            state = replace(state, tails=dict(zip(self.keys, tails, strict=True)))
        frames, after = self.vae.decode_chunk(z, state)
        new = [after.tails[k] for k in self.keys] if self.keys else []
        return (frames, *new) if new else frames


def decode_keys(state: Any) -> list:
    """The carried tensors' keys of a decode state, in the order the decoder writes them."""
    tails = getattr(state, "tails", None)
    return list(tails) if tails else []


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def plain_convs(module: nn.Module) -> Iterator[None]:
    """Temporarily give subclassed convolutions (e.g. bundled_vae.FastConv3d, which calls a oneDNN op the
    exporters do not know) their plain torch class back; same parameters, same numbers."""
    swapped = []
    for m in module.modules():
        for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            if isinstance(m, base) and type(m) is not base:
                swapped.append((m, type(m)))
                m.__class__ = base
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


class SlicedShortConv(TemporalShortConv):
    """`TemporalShortConv` as K shifted multiply-adds instead of a grouped conv1d: the same sums (fp32 rounding
    aside), but ONNX Runtime's grouped 1D convolution over (B*S) tiny sequences cost about 0.7 ms each on the
    bundled-size model, a third of the chunk step. Swapped in only while exporting (`export_friendly`)."""

    def forward(self, x: torch.Tensor, frames: int, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        S, K = N // frames, self.kernel
        xt = x.view(B, frames, S, C)  # (B, T, S, C)
        if tail is None:
            tail = xt.new_zeros(B, S, K - 1, C)
        full = torch.cat([tail.to(xt.dtype).transpose(1, 2), xt], 1)  # (B, K-1+T, S, C)
        own = torch.cat([xt, xt.new_zeros(B, K - 1, S, C)], 1)  # zeros past the chunk end
        w = self.weight.to(x.dtype)[:, 0, :]  # (C, K)
        y = -xt * w[:, K - 1]  # the shared centre tap counted once
        for j in range(K):
            y = y + full[:, j : j + frames] * w[:, j] + own[:, K - 1 - j : K - 1 - j + frames] * w[:, j]
        return y.reshape(B, N, C), full[:, -(K - 1) :].transpose(1, 2)


class _ExportConv:
    """A convolution as exported: ONNX's Conv takes no bf16 before opset 22 and the TorchScript exporter stops
    at opset 20, so a bf16 (or fp16) graph with Conv nodes fails the ONNX checker. In reduced precision a
    1x1 convolution (the FFN's projections, most of its work) exports as a MatMul in the model's dtype, and
    any other convolution computes in fp32 between casts. fp32 models export plain Conv nodes."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.dtype not in (torch.bfloat16, torch.float16):
            return super()._conv_forward(x, weight, bias)  # type: ignore[misc]
        pointwise = (all(k == 1 for k in self.kernel_size) and all(s == 1 for s in self.stride)  # type: ignore[attr-defined]
                     and self.groups == 1 and not any(_as_tuple(self.padding)))  # type: ignore[attr-defined]
        if pointwise:
            n = x.dim()  # explicit permutations: movedim exports a Transpose with a negative axis
            y = F.linear(x.permute(0, *range(2, n), 1), weight.flatten(1), bias)
            return y.permute(0, n - 1, *range(1, n - 1))
        b = None if bias is None else bias.float()
        return super()._conv_forward(x.float(), weight.float(), b).to(x.dtype)  # type: ignore[misc]


def _as_tuple(p: Any) -> tuple:
    return (1,) if isinstance(p, str) else tuple(p) if isinstance(p, tuple | list) else (p,)


_EXPORT_CONVS = {
    base: type(f"Export{base.__name__}", (_ExportConv, base), {}) for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
}


@contextlib.contextmanager
def export_friendly(module: nn.Module) -> Iterator[None]:
    """While exporting: convolutions as `_ExportConv` (plain torch convs, as `plain_convs`, that a bf16 graph
    can carry) and sliced short convs."""
    swapped: list[tuple[nn.Module, type]] = []
    for m in module.modules():
        if type(m) is TemporalShortConv:
            swapped.append((m, type(m)))
            m.__class__ = SlicedShortConv
            continue
        for base, export_cls in _EXPORT_CONVS.items():
            if isinstance(m, base):
                swapped.append((m, type(m)))
                m.__class__ = export_cls
                break
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def export_onnx(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
) -> Path:
    """Export with fixed shapes (TorchScript exporter, opset 17) to `path` (<key>/model.onnx, a folder per graph
    so weights of models over 2 GB, saved as external data beside it, never collide); reuse an existing one."""
    if path.exists():
        return path
    import shutil
    import warnings

    tmp = path.parent.with_name(f"{path.parent.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with torch.no_grad(), export_friendly(module), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(inputs),
                str(tmp / path.name),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                do_constant_folding=True,
            )
        try:
            os.replace(tmp, path.parent)
        except OSError:  # another process exported the same graph first
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def export_chunk_step(step: ChunkStep, inputs: Sequence[torch.Tensor], folder: Path, weights_hash: str) -> Path:
    lay = step.layout
    kind = ("chunk-write" if step.write else "chunk-read") + ("" if step.masked else "-full")
    outs = ["velocity"] + ([f"new.{n}" for n in lay.names] if step.write else [])
    path = folder / cache_key(kind, weights_hash, inputs) / "model.onnx"
    names = [*STEP_INPUTS, *plucker_names(step.tr), *prompt_names(len(step.tr.blocks)), *lay.names]
    return export_onnx(step, inputs, names, outs, path)


def export_decode_step(step: DecodeStep, inputs: Sequence[torch.Tensor], folder: Path, weights_hash: str) -> Path:
    names = [f"tail{j}" for j in range(len(step.keys))]
    path = folder / cache_key("vae-decode", weights_hash, inputs) / "model.onnx"
    return export_onnx(step, inputs, ["z", *names], ["frames", *[f"new.{n}" for n in names]], path)
