"""Host syncs per chunk. The bar: at most 3 blocking host syncs a chunk of a pipelined CUDA session (the
frames' copy to the host, and the chunk's stage times read from CUDA events when it is taken).

On the CPU: a chunk's denoising passes, its cache write and its decode run on the `meta` device under a
dispatch mode that counts every operation that would make the host wait for a GPU (a scalar read, a copy
to the host): there is none, and the camera inputs reach the device without any. On CUDA (`cuda` marker):
torch's sync debug mode counts the syncs of a pipelined session, chunk by chunk."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.sana_wm.vae import DecodeState, SanaWMVAE, small_vae_config

from .builders import CHUNK, LATENT_H, LATENT_W, STRIDE, tiny_cameras, tiny_transformer

SYNCS_A_CHUNK = 3


class HostWaits(TorchDispatchMode):
    """Counts the operations that read a device tensor on the host (from a non-CPU device to the CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__)
        if name in ("_local_scalar_dense", "item", "tolist"):
            self.seen.append(name)
        elif name in ("_to_copy", "to", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0].device if name == "copy_" else kwargs.get("device")
            if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst is not None \
                    and torch.device(dst).type == "cpu":
                self.seen.append(name)
                if src.device.type == "meta":  # nothing to read: a stand-in
                    return args[0] if name == "copy_" else torch.zeros(src.shape, dtype=kwargs.get("dtype", src.dtype))
        return func(*args, **kwargs)


def test_a_chunk_reads_nothing_back_from_the_device():
    dev = torch.device("meta")
    tr = tiny_transformer().to(dev)
    torch.manual_seed(0)
    from diffusers import AutoencoderKLLTX2Video

    with torch.device(dev):
        vae = SanaWMVAE(AutoencoderKLLTX2Video(**small_vae_config(STRIDE)))
    stream = LatentRollout(tr, FlowSampler())
    text = torch.zeros(1, tr.cfg.caption_tokens, tr.cfg.caption_channels, device=dev)
    stream.reset(text, torch.ones(1, tr.cfg.caption_tokens, dtype=torch.bool, device=dev), seed=0)
    image = torch.zeros(1, tr.cfg.in_channels, 1, LATENT_H, LATENT_W, device=dev)
    shape = (1, tr.cfg.in_channels, CHUNK, LATENT_H, LATENT_W)
    state = DecodeState()
    cams = tiny_cameras(3)
    waits = HostWaits()
    for k, cam in enumerate(cams):
        with waits:
            z = stream.step(cam, shape, image if k == 0 else None)
            _, state = vae.decode_chunk(z, state)
    assert waits.seen == [], f"host waits in the chunk loop: {waits.seen}"
    assert state.started and stream.cache.chunks == 3


def test_the_counter_sees_a_host_read():
    x = torch.ones(3, device="meta")
    with HostWaits() as waits:
        x.sum().to("cpu")
        x.new_zeros(3).cpu()
    assert waits.seen == ["_to_copy", "_to_copy"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA syncs")
def test_at_most_three_blocking_host_syncs_a_chunk():
    from .builders import tiny_world

    world = tiny_world(device="cuda", dtype="bfloat16")
    world.reset(None, None, 0)
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])

    def inputs(k):
        n = world.spec.chunk_frames(k)
        poses = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
        poses[:, 2, 3] = -0.05 * np.arange(k * 13, k * 13 + n)
        return poses, np.broadcast_to(K, (n, 3, 3)).copy()

    pending = world.submit(*inputs(0))
    for k in (1, 2):  # warm: lazy inits (cuBLAS handles, pinned blocks) are not per-chunk costs
        nxt = world.submit(*inputs(k))
        pending.result()
        pending = nxt
    chunks = 4
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(3, 3 + chunks):
                nxt = world.submit(*inputs(k))
                pending.result()
                pending = nxt
            torch.cuda.set_sync_debug_mode(0)
            pending.result()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    print(f"{len(syncs)} host syncs over {chunks} chunks: {[str(w.message)[:80] for w in syncs[:6]]}")
    assert len(syncs) <= SYNCS_A_CHUNK * chunks
    world.close()
