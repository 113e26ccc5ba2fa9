"""`worldwalk train` never runs code from its work folder: a planted pickle is refused with a
clear error (it used to be loaded with torch.load(weights_only=False)), a safetensors file with
another tag is refused, and the default work folder is the user's cache, not the shared /tmp."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from worldwalk.runtime.cli.main import main


class _Planted:
    """Unpickling this runs `Path(marker).touch()`: the attack a world-writable folder allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_planted_pickle_in_work_folder_is_refused_not_run(tmp_path, one_torch_thread, capsys):
    work, marker = tmp_path / "work", tmp_path / "code-ran"
    work.mkdir()
    (work / "decoder_samples.pt").write_bytes(pickle.dumps(_Planted(marker)))
    code = main(["train", "--stage", "decoder", "--work", str(work), "--threads", "1"])
    assert not marker.exists(), "the planted pickle ran code"
    assert code == 2
    err = capsys.readouterr().err
    assert "decoder_samples.pt" in err and "pickle" in err


def test_foreign_safetensors_state_is_refused(tmp_path):
    from safetensors.torch import save_file

    from worldwalk.runtime.train.state_file import ForeignFileError, load_state, save_state

    path = tmp_path / "world_ckpt.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"config": "{}"})  # valid safetensors, not ours
    with pytest.raises(ForeignFileError, match="world_ckpt.safetensors"):
        load_state(path, "world")
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ForeignFileError, match="not a training state"):
        load_state(path, "world")
    save_state(path, "vae", {"x": torch.ones(2)}, {"step": 3})  # ours, but another stage's
    with pytest.raises(ForeignFileError, match="'vae'"):
        load_state(path, "world")
    tensors, meta = load_state(path, "vae")
    assert meta == {"step": 3} and torch.equal(tensors["x"], torch.ones(2))


def test_default_work_folder_is_the_users_cache(tmp_path, monkeypatch):
    from worldwalk.runtime.train.state_file import default_work

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_work() == tmp_path / "cache" / "worldwalk" / "train"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_work() == tmp_path / "home" / ".cache" / "worldwalk" / "train"
