"""Replay and `worldwalk render` on the reference world: bit-identical replays, files read back
with PyAV, and a clear message for each kind of bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from worldwalk.controls import action_string_to_poses
from worldwalk.runtime.cli.main import main
from worldwalk.runtime.session import Session, SessionConfig
from worldwalk.runtime.worlds import create_world
from worldwalk.stream.record.recorder import attach_recorder
from worldwalk.stream.record.replay import plan_from_actions, plan_from_log, plan_from_path, render_frames

from .builders import reference_config
from .conftest import decode_video as decode
from .conftest import psnr

W, H = 128, 72
SIZE = f"{W}x{H}"


def render(*args: str) -> int:
    return main(["render", "--no-progress", *map(str, args)])


def wait_chunks(session: Session, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while session.stats()["chunks"] < n:
        assert time.monotonic() < deadline and session.error is None, session.error
        time.sleep(0.01)


def wait_more(session: Session, k: int) -> None:
    """k more chunks than made so far: after a command, chunks made after the session took it (with
    1-frame chunks a count reached before the command says nothing about it)."""
    wait_chunks(session, session.stats()["chunks"] + k)


def test_replaying_a_live_session_gives_its_raw_frames_bit_identical(tmp_path):
    wc = reference_config(width=W, height=H, seed=5)
    session = Session(create_world(wc), SessionConfig(seed=5))
    rec = attach_recorder(session, tmp_path / "live.mp4", world_cfg=wc, consume=True)
    # the frames the (headless) player took; the log holds exactly these (a chunk a rewind or reset
    # flushed from the queue before the player took it is left out of the log, like the video)
    live: list[np.ndarray] = []
    take = rec.write
    rec.write = lambda frame: (live.append(frame.image.copy()), take(frame))[1]
    try:
        session.start()
        session.inputs.press("w")
        wait_chunks(session, 4)
        session.inputs.add_mouse(60.0, -20.0)
        wait_more(session, 3)
        assert session.rewind() is not None
        wait_more(session, 3)
        session.reset()
        session.inputs.release("w")
        session.inputs.press("d")
        wait_more(session, 4)
    finally:
        session.close()
        stats = rec.close()

    plan = plan_from_log(tmp_path / "live.jsonl")
    kinds = [s.kind for s in plan.steps]
    assert "reset" in kinds and "restore" in kinds  # the log carried the rewind and the reset
    replay = render_frames(plan)
    assert np.array_equal(np.stack(live), replay)
    # the video holds the frames the (headless) player took, no drops
    images, _, stream = decode(tmp_path / "live.mp4")
    assert len(images) == stats.frames_written > 0 and stats.frames_dropped == 0
    assert (stream.width, stream.height) == (W, H)
    # rendered with no encoder flags, the log replays to the same video: it carries the live encoder settings
    assert render("--log", str(tmp_path / "live.jsonl"), "-o", str(tmp_path / "again.mp4")) == 0
    again, _, _ = decode(tmp_path / "again.mp4")
    assert np.array_equal(images, again)


def test_render_actions_to_video_log_and_back(tmp_path):
    out = tmp_path / "walk.mp4"
    assert render("--world", "reference", "--actions", "w-6,jl-4", "--size", SIZE, "--seed", 2, "-o", out) == 0
    raw = render_frames(plan_from_actions("w-6,jl-4", width=W, height=H, seed=2))
    assert raw.shape == (11, H, W, 3)  # the start pose plus 10 actions; the last chunk was padded

    images, _, stream = decode(out)
    assert len(images) == 11 and (stream.width, stream.height) == (W, H) and stream.average_rate == 16
    worst = min(psnr(a, b) for a, b in zip(images, raw, strict=True))
    assert worst > 30, f"worst decoded frame is {worst:.1f} dB from the rendered one"

    # its log replays to the same raw frames, and renders again
    assert np.array_equal(render_frames(plan_from_log(tmp_path / "walk.jsonl")), raw)
    again = tmp_path / "again.mp4"
    assert render("--log", tmp_path / "walk.jsonl", "-o", again) == 0
    assert len(decode(again)[0]) == 11


def test_camera_paths_npy_and_json(tmp_path):
    poses = action_string_to_poses("w-3,l-2")  # (6, 4, 4)
    np.save(tmp_path / "p.npy", poses)
    (tmp_path / "p.json").write_text(json.dumps(poses.tolist()))
    a = plan_from_path(tmp_path / "p.npy")
    b = plan_from_path(tmp_path / "p.json")
    assert np.array_equal(a.poses, poses) and np.array_equal(b.poses, poses)
    assert render("--world", "reference", "--path", tmp_path / "p.npy", "--size", SIZE) == 0
    assert len(decode(tmp_path / "p.mp4")[0]) == 6


def _good_log(tmp_path):
    out = tmp_path / "good.mp4"
    assert render("--world", "reference", "--actions", "w-4", "--size", SIZE, "-o", out) == 0
    return tmp_path / "good.jsonl"


def _edited(log, tmp_path, **changes):
    lines = log.read_text().splitlines()
    header = {**json.loads(lines[0]), **changes}
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--actions", "w-4,wq-2"], ["bad --actions string", "'wq-2'", "unknown key 'q'"]),
        (["--path", "{tmp}/missing.npy"], ["missing.npy does not exist"]),
        (["--log", "{tmp}/missing.jsonl"], ["missing.jsonl does not exist"]),
        (["--path", "{tmp}/bad.npy"], ["shape (5, 3, 4)", "expected (F, 4, 4)"]),
        (["--path", "{tmp}/bad.json"], ["shape (2, 3, 3)", "JSON list of 4x4"]),
        (["--log", "{tmp}/bad.jsonl"], ["not a worldwalk session log"]),
    ],
)
def test_bad_input_is_named(tmp_path, capsys, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((5, 3, 4)))
    (tmp_path / "bad.json").write_text(json.dumps(np.zeros((2, 3, 3)).tolist()))
    (tmp_path / "bad.jsonl").write_text('{"type": "something else"}\n')
    args = [a.format(tmp=tmp_path) for a in args]
    assert render(*args, "-o", tmp_path / "o.mp4") == 2
    err = capsys.readouterr().err
    for m in message:
        assert m in err, err


def test_logs_from_another_version_world_or_model_need_force(tmp_path, capsys):
    log = _good_log(tmp_path)
    out = tmp_path / "o.mp4"

    other_version = _edited(log, tmp_path, worldwalk_version="0.0.0-other")
    assert render("--log", other_version, "-o", out) == 2
    err = capsys.readouterr().err
    assert "worldwalk 0.0.0-other" in err and "--force" in err
    assert render("--log", other_version, "-o", out, "--force") == 0

    assert render("--log", log, "--world", "sana-wm", "-o", out) == 2
    assert "recorded with world 'reference'" in capsys.readouterr().err

    other_model = _edited(log, tmp_path, model="sana-wm-small")
    assert render("--log", other_model, "-o", out) == 2
    err = capsys.readouterr().err
    assert "'sana-wm-small'" in err and "'reference'" in err and "--force" in err
    assert render("--log", other_model, "-o", out, "--force") == 0
    assert len(decode(out)[0]) == 5

    assert render("--log", log, "-o", tmp_path / "good.mp4") == 2  # would overwrite its own log
    assert "overwrite" in capsys.readouterr().err


def test_render_gives_the_bundled_world_plays_camera():
    """A rendered action string sees the bundled world through play's 70-degree camera at the bundled
    frame size (it got the reference world's 256x144 intrinsics: 47 degrees across 160 pixels)."""
    from worldwalk.controls.camera import fov_degrees
    from worldwalk.stream.record.replay import iter_render, open_world

    plan = plan_from_actions("w-4", world="bundled", width=256, height=144)
    world = open_world(plan)
    try:
        spec = world.spec
        _, chunk = next(iter_render(plan, world))
    finally:
        world.close()
    for K in chunk.intrinsics:
        fov_x, _ = fov_degrees(K, spec.width, spec.height)
        assert fov_x == pytest.approx(70.0, abs=1e-6)
