"""The CLI, the TOML app config and the bench smoke test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from worldwalk.runtime.cli.app_config import AppConfig, ConfigError
from worldwalk.runtime.cli.main import main


def test_info_prints_gl_renderer_and_torch_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch_devices" in out and "cpu" in out
    assert "renderer:" in out and "unavailable" not in out.split("renderer:")[1].splitlines()[0]


def test_info_json_lists_the_reference_world(capsys):
    assert main(["info", "--json", "--no-gl"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "reference" in info["worlds"]
    assert info["checkpoints"] == ["bundled_vae.safetensors", "bundled_world.safetensors"]  # the shipped weights


def test_app_config_loads_and_rejects_typos(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[world]\nname = "reference"\nwidth = 128\n[controls]\nmove_speed = 2.5\n'
                    '[bindings]\nforward = ["i"]\n[recorder]\ncrf = 20\n')
    cfg = AppConfig.load(good)
    assert cfg.world.width == 128 and cfg.controls.move_speed == 2.5
    assert cfg.bindings.forward == ("i",)
    assert cfg.sections["recorder"] == {"crf": 20}
    bad = tmp_path / "bad.toml"
    bad.write_text("[controls]\nmove_sped = 2\n")
    with pytest.raises(ConfigError, match="move_sped.*valid keys"):
        AppConfig.load(bad)
    bad.write_text("[wrld]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[wrld\]"):
        AppConfig.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        AppConfig.load(tmp_path / "missing.toml")


def _serve_config(*argv: str):
    import argparse

    from worldwalk.stream.serve_command import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return build_config(parser.parse_args(["serve", *argv]))


def test_serve_reads_the_recorder_section_and_refuses_what_nothing_reads(tmp_path):
    """[recorder] sets how serve's recordings encode (it was accepted and never read); a typo in it, or a
    [viewer] section no command reads, is an error naming it."""
    cfg_file = tmp_path / "app.toml"
    cfg_file.write_text('[recorder]\npreset = "veryfast"\ncrf = 26\n')
    cfg = _serve_config("--config", str(cfg_file), "--port", "0")
    assert (cfg.recorder.preset, cfg.recorder.crf) == ("veryfast", 26)
    cfg_file.write_text('[recorder]\nprset = "veryfast"\n')
    with pytest.raises(ConfigError, match="prset.*valid keys"):
        _serve_config("--config", str(cfg_file))
    cfg_file.write_text("[viewer]\nvsync = true\n")
    with pytest.raises(ConfigError, match=r"unknown section \[viewer\]"):
        AppConfig.load(cfg_file)


def test_bench_quick_runs_and_its_json_parses(tmp_path, capsys):
    # two cheap suites: this checks the command, its table and JSON; each suite's figures are the bench's
    # own business (the whole --quick bench is about a minute, too much for every test run). In this
    # process: `python -m worldwalk.runtime.cli` itself is started by the play tests.
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--suite", "generation", "--suite", "pipeline", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "generated fps" in captured.out  # the table
    result = json.loads(out.read_text())
    names = {f["name"] for f in result["figures"]}
    assert any("generated fps" in n for n in names), names
    assert any("engine throughput" in n for n in names)
    assert all({"name", "value", "unit"} <= set(f) for f in result["figures"])
    assert result["machine"]["cores"] >= 1


@pytest.mark.parametrize("command", [["play"], ["render", "--actions", "w-4"], ["serve", "--port", "0"]])
def test_a_checkpoint_folder_that_is_not_one_is_named_not_replaced(command, tmp_path, capsys):
    """--checkpoint means SANA-WM; a wrong folder is an error naming it, never a silent fallback."""
    empty = tmp_path / "not-a-checkpoint"
    empty.mkdir()
    if command[0] == "serve":
        import argparse

        from worldwalk.runtime.world import WorldConfig
        from worldwalk.runtime.worlds import create_world
        from worldwalk.stream.serve_command import build_config, register

        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        cfg = build_config(parser.parse_args([*command, "--checkpoint", str(empty)]))
        assert cfg.world.name == "sana-wm" and cfg.world.checkpoint == str(empty)
        with pytest.raises(ValueError, match="not-a-checkpoint"):
            create_world(WorldConfig(name="sana-wm", checkpoint=str(empty)))
        return
    out = ["-o", str(tmp_path / "o.mp4")] if command[0] == "render" else []
    rc = main([*command, "--checkpoint", str(empty), *out])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not-a-checkpoint" in err and "sana_dit/model.pt" in err
    assert "reference" not in err


def test_play_without_a_display_says_how_to_get_one():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "worldwalk.runtime.cli", "play", "--world", "reference"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no display" in proc.stderr and "worldwalk serve" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_screenshots_go_to_the_pictures_folder_not_the_current_one(monkeypatch, tmp_path):
    from worldwalk.viewer.play_command import default_screenshot_dir

    monkeypatch.setenv("XDG_PICTURES_DIR", str(tmp_path / "pics"))
    assert default_screenshot_dir() == tmp_path / "pics" / "worldwalk"
    monkeypatch.delenv("XDG_PICTURES_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_screenshot_dir() == tmp_path / "Pictures" / "worldwalk"
