"""Exported graphs are named by the checkpoint files a world was loaded from (runtime/weights_source.py),
by the weights' bytes only for weights that came from no file or changed since, and only when a graph is
exported."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from worldwalk.runtime.accel.apply import AcceleratedStep, engine
from worldwalk.runtime.accel.onnx_export import module_hash
from worldwalk.runtime.sana_wm.rollout import LatentRollout
from worldwalk.runtime.sana_wm.sampler import FlowSampler
from worldwalk.runtime.weights_source import mark_weights_source, weights_source

from .builders import CHUNK, LATENT_H, LATENT_W, tiny_cameras, tiny_transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _loaded(path, seed: int = 0):
    """A tiny transformer built with random weights `seed`, then loaded from `path` and marked."""
    torch.manual_seed(seed)
    m = tiny_transformer()
    m.load_state_dict(load_file(str(path)))
    return mark_weights_source(m, [path])


def test_a_module_loaded_from_a_file_is_named_by_the_file(tmp_path):
    path = tmp_path / "world.safetensors"
    save_file(tiny_transformer().state_dict(), str(path))
    a = _loaded(path)
    assert weights_source(a) is not None and "world.safetensors=" in weights_source(a)
    name = module_hash(a)
    assert module_hash(a) == name  # stable

    # the file, not the bytes in memory: a module whose weights differ but that is marked with the same file
    # (here by hand) gets the same name; an unmarked copy of `a` gets the name of its bytes
    other = tiny_transformer()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    mark_weights_source(other, [path])
    assert module_hash(other) == name
    unmarked = tiny_transformer()
    unmarked.load_state_dict(a.state_dict())
    assert weights_source(unmarked) is None and module_hash(unmarked) != name

    # another file (new weights, same size) is another name, however its mtime was kept
    st = os.stat(path)
    state = {k: v + 1.0 for k, v in a.state_dict().items()}
    save_file(state, str(path))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert module_hash(a) != name


def test_weights_changed_after_loading_are_hashed_by_their_bytes(tmp_path):
    path = tmp_path / "world.safetensors"
    save_file(tiny_transformer().state_dict(), str(path))
    a = _loaded(path)
    by_file = module_hash(a)
    with torch.no_grad():
        a.blocks[0].attn.proj.weight.mul_(2.0)  # in place: its version counter moves
    assert weights_source(a) is None
    changed = module_hash(a)
    assert changed != by_file
    twin = tiny_transformer()
    twin.load_state_dict(a.state_dict())
    assert module_hash(twin) == changed  # the bytes decide now


def test_dtype_and_config_are_part_of_the_name(tmp_path):
    path = tmp_path / "world.safetensors"
    save_file(tiny_transformer().state_dict(), str(path))
    a = _loaded(path)
    name = module_hash(a)
    a.cfg.softmax_bf16 = True  # changes the graph, not a weight
    assert module_hash(a) != name
    a.cfg.softmax_bf16 = False
    a.to(torch.float64)
    assert weights_source(a) is not None and module_hash(a) != name


def test_the_loaders_mark_their_files(tmp_path):
    from worldwalk.runtime.sana_wm.checkpoint import from_pretrained, save_official
    from worldwalk.runtime.worlds.bundled_world import load_weights, weights_available

    from .test_accel import _vae

    save_official(tmp_path / "official", tiny_transformer(), _vae())
    loaded = from_pretrained(tmp_path / "official", progress=False)
    assert "model.pt=" in weights_source(loaded.transformer)
    assert "config.json=" in weights_source(loaded.vae.vae)
    if weights_available():
        _, vae, model = load_weights()
        assert "bundled_world.safetensors=" in weights_source(model)
        assert "bundled_vae.safetensors=" in weights_source(vae)


def test_weights_are_hashed_only_when_a_graph_is_exported(tmp_path):
    """A backend that exports nothing (the fixed-shape modules run as they are) never hashes the weights."""
    tr = tiny_transformer()
    stream = LatentRollout(tr, FlowSampler())
    stream.backend = step = AcceleratedStep(tr, engine("flat", torch.device("cpu")), tmp_path)
    text = torch.randn(1, 3, tr.cfg.caption_channels)
    stream.reset(text, torch.ones(1, 3, dtype=torch.bool), seed=0)
    image = torch.zeros(1, tr.cfg.in_channels, 1, LATENT_H, LATENT_W)
    for k, cam in enumerate(tiny_cameras(2)):
        stream.step(cam, (1, tr.cfg.in_channels, CHUNK, LATENT_H, LATENT_W), image if k == 0 else None)
    assert step.counts["accel"] == 5 and step._hash is None


def test_a_graph_traced_by_other_code_gets_another_name(tmp_path, monkeypatch):
    """The exported graph is the code as much as the weights: the same weights under a changed worldwalk source
    file (an upgrade) are another name, so a graph traced by the old code is never loaded for the new."""
    import importlib.util
    import sys

    from worldwalk.runtime.accel import onnx_export

    src = tmp_path / "wrapped_block.py"
    src.write_text("import torch\n\nclass Wrapped(torch.nn.Module):\n    def __init__(self, inner):\n"
                   "        super().__init__()\n        self.inner = inner\n\n"
                   "    def forward(self, x):\n        return self.inner(x)\n")
    spec = importlib.util.spec_from_file_location("worldwalk._test_wrapped_block", src)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    m = mod.Wrapped(tiny_transformer())
    before = module_hash(m)
    assert module_hash(m) == before
    src.write_text(src.read_text().replace("return self.inner(x)", "return 2 * self.inner(x)"))
    onnx_export._file_digest.cache_clear()  # a new process reads the new file
    assert module_hash(m) != before
