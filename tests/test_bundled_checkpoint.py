"""Bundled weights that are truncated, foreign or mismatched get an error naming the file."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from worldwalk.runtime.worlds.bundled_world import VAE_FILE, WEIGHTS, WORLD_FILE, load_weights


@pytest.fixture
def copy(tmp_path):
    for f in WEIGHTS.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_truncated(copy):
    path = copy / WORLD_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{WORLD_FILE} is not a readable safetensors file"):
        load_weights(copy)


def test_foreign_file_without_config(copy):
    save_file({"w": torch.zeros(2)}, str(copy / VAE_FILE))
    with pytest.raises(ValueError, match="no 'config' in its metadata"):
        load_weights(copy)


def test_wrong_shapes_are_named(copy):
    from safetensors import safe_open

    path = copy / WORLD_FILE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    name = next(iter(state))
    state[name] = torch.zeros(3, 3)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ValueError, match=f"wrong shapes.*{name}"):
        load_weights(copy)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="worldwalk train"):
        load_weights(tmp_path)


def test_the_sampler_comes_with_the_weights_and_older_weights_keep_sana_wm_s(copy):
    from safetensors import safe_open

    assert load_weights(copy)[0].sampler.timesteps == (1000, 500, 0)  # the shipped model's 2 steps
    with safe_open(str(copy / WORLD_FILE), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sampler"}  # written before it was stored
    save_file(load_file(str(copy / WORLD_FILE)), str(copy / WORLD_FILE), metadata=meta)
    assert load_weights(copy)[0].sampler.timesteps == (1000, 960, 889, 727, 0)


def test_a_broken_stored_sampler_is_named(copy):
    from safetensors import safe_open

    with safe_open(str(copy / WORLD_FILE), "pt") as f:
        meta = dict(f.metadata())
    meta["sampler"] = '{"timesteps": [1000, 333, 667, 0]}'
    save_file(load_file(str(copy / WORLD_FILE)), str(copy / WORLD_FILE), metadata=meta)
    with pytest.raises(ValueError, match=f"{WORLD_FILE}: the sampler stored with the weights .* not usable"):
        load_weights(copy)
