"""files in folders others may write to. A FIFO in a log's checkpoint folder or in
train's work folder is refused at once (it used to hang the command); a symlink in a log's checkpoint
folder that leads out of the log's folder is refused; escape codes in paths are shown escaped; an
over-long path component and malformed train state files end in a message, not a traceback; and
train writes through a fresh temporary file, never through a symlink planted in a shared --work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from worldwalk.runtime.cli.main import main
from worldwalk.runtime.worlds.bundled_world import VAE_FILE, WEIGHTS, WORLD_FILE

HANG = 20.0  # seconds: far more than any of these takes; a FIFO open that blocks waits forever


def bounded(fn, fifos: list[Path]):
    """fn()'s result, or a test failure if it blocked on a FIFO. A blocked open holds the GIL (in the
    safetensors extension), so no thread of ours could act: a watchdog process opens each FIFO once after
    HANG seconds, which lets a blocked reader go (it then reads an empty file), and fn is timed."""
    watchdog = subprocess.Popen(["sh", "-c", f'sleep {HANG:.0f}; for f in "$@"; do : <> "$f"; done', "sh",
                                 *map(str, fifos)], start_new_session=True)
    t0 = time.monotonic()
    try:
        value = fn()
    finally:
        os.killpg(watchdog.pid, signal.SIGKILL)  # its own group: the shell and its sleep
        watchdog.wait()
    if time.monotonic() - t0 >= HANG:
        pytest.fail(f"blocked on a FIFO until it was opened for writing after {HANG:.0f} s")
    return value


def write_log(folder: Path, **header) -> Path:
    """A minimal bundled-world session log (header and one chunk) in `folder`."""
    h = {"type": "header", "format": "worldwalk-session", "format_version": 1, "world": "bundled",
         "model": "bundled", "fps": 16.0, "width": 160, "height": 96, "seed": 0,
         "intrinsics": [[180.0, 0.0, 80.0], [0.0, 180.0, 48.0], [0.0, 0.0, 1.0]]}
    h.update(header)
    chunk = {"type": "chunk", "index": 0, "poses": [np.eye(4).tolist()] * 13}
    path = folder / "walk.jsonl"
    path.write_text(json.dumps(h) + "\n" + json.dumps(chunk) + "\n")
    return path


def test_a_fifo_in_a_logs_checkpoint_is_refused_at_once(tmp_path, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    shutil.copyfile(WEIGHTS / VAE_FILE, ck / VAE_FILE)
    os.mkfifo(ck / WORLD_FILE)
    log = write_log(tmp_path, checkpoint="ck")
    code = bounded(lambda: main(["render", "--log", str(log), "-o", str(tmp_path / "o.mp4"), "--no-progress",
                                 "--force", "--accel", "none"]), [ck / WORLD_FILE])
    err = capsys.readouterr().err
    assert code == 2 and "'checkpoint'" in err and "FIFO" in err and WORLD_FILE in err, err


def test_a_symlink_in_a_logs_checkpoint_may_not_lead_out_of_its_folder(tmp_path):
    from worldwalk.stream.record.replay import ReplayError, plan_from_log

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(b"not yours")
    logs = tmp_path / "logs"
    (logs / "ck" / "sub").mkdir(parents=True)
    (logs / "ck" / VAE_FILE).symlink_to(elsewhere / "secret")
    with pytest.raises(ReplayError, match=r"field 'checkpoint'.*symbolic link.*outside"):
        plan_from_log(write_log(logs, checkpoint="ck"), force=True)
    (logs / "ck" / VAE_FILE).unlink()
    (logs / "ck" / "sub" / "linked").symlink_to(elsewhere, target_is_directory=True)  # a folder link too
    with pytest.raises(ReplayError, match=r"linked.*outside"):
        plan_from_log(write_log(logs, checkpoint="ck"), force=True)
    (logs / "ck" / "sub" / "linked").unlink()
    (logs / "ck" / "sub" / "inside").symlink_to(logs / "walk.jsonl")  # a link inside the folder is fine
    assert plan_from_log(write_log(logs, checkpoint="ck"), force=True).checkpoint == str((logs / "ck").resolve())


def test_paths_among_a_logs_world_options_stay_in_its_folder(tmp_path):
    from worldwalk.stream.record.replay import ReplayError, plan_from_log

    (tmp_path / "elsewhere").mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    for value in ("/etc/passwd", "../elsewhere/prompt.pt"):
        log = write_log(logs, world="sana-wm", model="sana-wm", world_options={"prompt_file": value})
        with pytest.raises(ReplayError, match=r":1: field 'world_options.prompt_file': .* is outside the log's folder"):
            plan_from_log(log, force=True)
    os.mkfifo(logs / "prompt.pt")
    log = write_log(logs, world="sana-wm", model="sana-wm", world_options={"prompt_file": "prompt.pt"})
    with pytest.raises(ReplayError, match=r"'world_options.prompt_file': .*prompt.pt.* is a FIFO"):
        plan_from_log(log, force=True)
    (logs / "prompt.pt").unlink()
    (logs / "prompt.pt").write_bytes(b"")
    options = plan_from_log(log, force=True).world_options  # beside the log: found there, wherever we run
    assert options == {"prompt_file": str((logs / "prompt.pt").resolve())}


def test_escape_codes_in_paths_are_shown_escaped(tmp_path, capsys):
    name = tmp_path / "\x1b]0;pwned\x07\x1b[31mred\x9b.jsonl"
    assert main(["render", "--log", str(name)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\x9b" not in err and "\\x1b]0;pwned" in err, repr(err)


def test_an_over_long_path_component_is_a_message_not_a_traceback(tmp_path, capsys, one_torch_thread):
    long = "a" * 300
    assert main(["render", "--log", str(tmp_path / f"{long}.jsonl")]) == 2
    assert "File name too long" in capsys.readouterr().err
    code = main(["train", "--stage", "decoder", "--work", str(tmp_path / long), "--threads", "1"])
    err = capsys.readouterr().err
    assert code != 0 and "File name too long" in err, err


def test_a_fifo_in_the_work_folder_is_refused_at_once(tmp_path, capsys, one_torch_thread):
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "decoder_samples.safetensors")
    code = bounded(lambda: main(["train", "--stage", "decoder", "--work", str(work), "--threads", "1"]),
                   [work / "decoder_samples.safetensors"])
    err = capsys.readouterr().err
    assert code == 2 and "decoder_samples.safetensors" in err and "FIFO" in err, err


def test_malformed_state_files_are_named_not_tracebacks(tmp_path, capsys, one_torch_thread):
    from worldwalk.runtime.train.state_file import ForeignFileError, save_state
    from worldwalk.runtime.train.train_device import TrainDevice
    from worldwalk.runtime.train.train_vae import _load_ckpt

    work = tmp_path / "work"
    save_state(work / "decoder_samples.safetensors", "decoder-samples", {}, {"windows": [[0, 0]]})  # no sample.0
    assert main(["train", "--stage", "decoder", "--work", str(work), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "decoder_samples.safetensors" in err and "KeyError" in err and "--no-resume" in err, err

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    path = work / "vae_ckpt.safetensors"
    for tensors, meta in (({"model.weight": torch.zeros(3)}, {"step": 1}),  # a wrong shape
                          ({}, {"step": 1, "opt": {"param_groups": "x", "scalars": {}}}),  # a wrong type
                          ({}, {"step": [1]})):  # no "opt" at all
        save_state(path, "vae", tensors, meta)
        with pytest.raises(ForeignFileError, match=r"vae_ckpt.safetensors does not hold a state"):
            _load_ckpt(path, "vae", model, opt, np.random.default_rng(0), TrainDevice())


def test_train_never_writes_through_a_planted_symlink(tmp_path):
    from worldwalk.runtime.safe_files import UnsafeFileError
    from worldwalk.runtime.sana_wm.transformer import SanaWMStreamingTransformer
    from worldwalk.runtime.train.state_file import load_state, save_state
    from worldwalk.runtime.train.train_world import export_world
    from worldwalk.runtime.worlds.bundled_world import BundledConfig

    work, victim = tmp_path / "shared-work", tmp_path / "victim.txt"
    work.mkdir()
    victim.write_text("precious")
    state = work / "decoder_samples.safetensors"
    (work / (state.name + ".part")).symlink_to(victim)  # the temporary name train used to write through
    save_state(state, "decoder-samples", {"sample.0": torch.ones(2)}, {"windows": [[0, 0]]})
    assert victim.read_text() == "precious"
    assert not state.is_symlink() and load_state(state, "decoder-samples")[1] == {"windows": [[0, 0]]}
    assert sorted(p.name for p in work.iterdir()) == [state.name, state.name + ".part"]  # no temporary left

    state.unlink()
    state.symlink_to(victim)  # a link where the file goes: refused, not replaced nor written through
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        save_state(state, "decoder-samples", {}, {"windows": []})
    cfg = BundledConfig()
    (work / WORLD_FILE).symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        export_world(SanaWMStreamingTransformer(cfg.transformer), work / WORLD_FILE, cfg)
    assert victim.read_text() == "precious"
