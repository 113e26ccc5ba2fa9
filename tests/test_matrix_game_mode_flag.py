"""`--mode` on `info`, `bench` and `render` for the matrix-game world, as `play` and `serve` have it: the
mode's action space, window and steps in the plan; the mode's tiny model benched and rendered; a mode the
weights (or the log) contradict refused with both named."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from worldwalk.runtime.cli.main import main

from .test_matrix_game_checkpoint import folder  # noqa: F401 (a fixture: the official layout, tiny weights)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_info_plans_the_mode_asked_for(capsys) -> None:
    assert main(["info", "--world", "matrix-game", "--random-init", "full", "--mode", "gta_drive"]) == 0
    out = capsys.readouterr().out
    assert "Matrix-Game 2.0 gta_drive, 352x640" in out
    assert "keyboard 2 multi-hot [forward, back]; mouse [0, yaw]" in out
    assert "window: 4 latent frames in every cache (3520 self-attention tokens)" in out
    assert "steps: 3 [1000, 666, 333] + the t=0 cache pass = 4 DiT calls a block" in out
    assert f"{30 * 2 * 4 * 880 * 1536 * 2 / 2**20:.1f} MiB" in out  # the 4-frame self-attention cache
    assert main(["info", "--world", "matrix-game", "--random-init", "small", "--mode", "templerun"]) == 0
    out = capsys.readouterr().out
    assert "keyboard 7 one-hot [nomove, jump, slide, turn_left, turn_right, left_side, right_side]; no mouse" in out
    assert "steps: 4 [1000, 750, 500, 250] + the t=0 cache pass = 5 DiT calls a block" in out
    assert main(["info", "--world", "sana-wm", "--random-init", "small", "--mode", "templerun"]) == 2
    assert "--mode picks a Matrix-Game model" in capsys.readouterr().err


def test_info_reads_the_mode_off_the_weights_and_refuses_a_contradiction(folder: Path, capsys) -> None:  # noqa: F811
    from worldwalk.runtime.matrix_game.checkpoint import MODEL_FILES

    gta = str(folder / MODEL_FILES["gta_drive"])
    assert main(["info", "--world", "matrix-game", "--checkpoint", gta]) == 0
    assert "Matrix-Game 2.0 gta_drive" in capsys.readouterr().out
    assert main(["info", "--world", "matrix-game", "--checkpoint", gta, "--mode", "universal"]) == 2
    err = capsys.readouterr().err
    assert "--mode universal does not match" in err and "its keyboard takes 2 keys (gta_drive)" in err
    assert main(["info", "--world", "matrix-game", "--checkpoint", gta, "--random-init", "full"]) == 2
    assert "pass one of --checkpoint DIR or --random-init" in capsys.readouterr().err


def test_bench_runs_the_modes_tiny_model(capsys) -> None:
    assert main(["bench", "--world", "matrix-game", "--random-init", "small", "--mode", "templerun",
                 "--chunks", "1"]) == 0
    captured = capsys.readouterr()
    assert "small templerun 32x48" in captured.out + captured.err
    assert "FAILED" not in captured.out + captured.err
    assert main(["bench", "--random-init", "small", "--mode", "templerun"]) == 2
    assert "--mode picks a Matrix-Game model" in capsys.readouterr().err


def _record_tiny(path: Path, mode: str) -> Path:
    """A session of the tiny random world in `mode`, recorded for two chunks with W held."""
    from worldwalk.runtime.session import Session, SessionConfig
    from worldwalk.runtime.world import WorldConfig
    from worldwalk.runtime.worlds import create_world
    from worldwalk.stream.record.recorder import attach_recorder

    wc = WorldConfig(name="matrix-game", seed=3, options={"random_init": "tiny", "mode": mode})
    world = create_world(wc)
    session = Session(world, SessionConfig(seed=3))
    rec = attach_recorder(session, path, world_cfg=wc, consume=True)
    try:
        session.start()
        session.inputs.press("w")
        deadline = time.monotonic() + 120
        while session.stats()["chunks"] < 2:
            assert time.monotonic() < deadline and session.error is None, session.error
            time.sleep(0.01)
    finally:
        session.close()
        rec.close()
    return path.with_suffix(".jsonl")


def test_render_runs_the_modes_tiny_world_and_refuses_another_mode(tmp_path: Path, capsys) -> None:
    from worldwalk.stream.record.session_log import read_log

    log = _record_tiny(tmp_path / "gta.mp4", "gta_drive")
    assert all(np.asarray(c["actions"]["keyboard"]).shape[1] == 2 for c in read_log(log).chunks)
    out = tmp_path / "again.mp4"
    assert main(["render", "--log", str(log), "--mode", "gta_drive", "-o", str(out), "--no-progress"]) == 0
    assert out.is_file() and read_log(out.with_suffix(".jsonl")).header["world_options"]["mode"] == "gta_drive"
    capsys.readouterr()
    assert main(["render", "--log", str(log), "--mode", "universal", "-o", str(tmp_path / "x.mp4"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--mode universal contradicts" in err and "recorded in mode gta_drive" in err
    assert main(["render", "--actions", "w-8", "--world", "reference", "--mode", "templerun", "-o",
                 str(tmp_path / "r.mp4"), "--no-progress"]) == 2
    assert "--mode picks a Matrix-Game model" in capsys.readouterr().err


def test_a_logs_mode_is_read_off_its_label_or_its_actions() -> None:
    from types import SimpleNamespace

    from worldwalk.stream.render_command import mode_check

    by_label = SimpleNamespace(world="matrix-game", source="a.jsonl", steps=[],
                               header={"label": "Matrix-Game 2.0 (templerun)", "world_options": {}})
    by_actions = SimpleNamespace(world="matrix-game", source="b.jsonl", header=None,
                                 steps=[SimpleNamespace(actions={"keyboard": np.zeros((12, 2))})])
    for plan, recorded in ((by_label, "templerun"), (by_actions, "gta_drive")):
        mode_check(plan, recorded)
        with pytest.raises(ValueError, match=f"--mode universal contradicts {plan.source}: it was recorded in "
                                             f"mode {recorded}"):
            mode_check(plan, "universal")
