"""session logs are untrusted input. `worldwalk render --log` on a log with a bad
field, an absurd size or count, a too-deep or too-long line, or a path that leaves the log's
folder exits 2 with a message naming the line and the field: no traceback, nothing read outside
the folder, memory bounded by the line cap."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from worldwalk.runtime.cli.main import main

pytestmark = pytest.mark.gl  # every test here builds reference worlds (EGL)


def render(*args: object) -> int:
    return main(["render", "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def good_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    assert render("--world", "reference", "--actions", "w-4", "--size", "64x32", "-o", d / "good.mp4") == 0
    return d / "good.jsonl"


def edited(good, folder, header=None, chunk=None, extra_line=None):
    """A copy of the good log in `folder` with header/first-chunk fields changed."""
    lines = good.read_text().splitlines()
    h, c = json.loads(lines[0]), json.loads(lines[1])
    h.update(header or {})
    c.update(chunk or {})
    out = [json.dumps(h), json.dumps(c), *lines[2:]]
    if extra_line is not None:
        out.insert(2, extra_line)
    path = folder / "edited.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


CASES = {
    "width_list": (dict(header={"width": []}), [":1:", "'width'"]),
    "settings_str": (dict(header={"settings": "x"}), [":1:", "'settings'"]),
    "huge_size": (dict(header={"width": 60000, "height": 60000}), [":1:", "'width'"]),
    "fps_nan": (dict(header={"fps": float("nan")}), [":1:", "'fps'"]),
    "index_null": (dict(chunk={"index": None}), [":2:", "'index'"]),
    "keep_huge": (dict(chunk={"keep": 10**9}), [":2:", "'keep'"]),
    "keep_negative": (dict(chunk={"keep": -5}), [":2:", "'keep'"]),
    "poses_str": (dict(chunk={"poses": "abc"}), [":2:", "'poses'"]),
    "deep_line": (dict(extra_line="[" * 200_000 + "]" * 200_000), [":3:", "nested"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_fields_are_named_with_their_line(case, good_log, tmp_path, capsys):
    changes, wanted = CASES[case]
    log = edited(good_log, tmp_path, **changes)
    assert render("--log", log, "-o", tmp_path / "o.mp4") == 2  # no traceback: main returned
    err = capsys.readouterr().err
    for w in wanted:
        assert w in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_paths_in_a_log_stay_in_its_folder(good_log, tmp_path, capsys):
    secret = tmp_path / "elsewhere" / "secret.npy"
    secret.parent.mkdir()
    np.save(secret, np.zeros((32, 64, 3), np.uint8))
    folder = tmp_path / "logs"
    folder.mkdir()
    for value in (str(secret), "../elsewhere/secret.npy"):
        log = edited(good_log, folder, header={"first_image": value, "first_image_hash": None})
        assert render("--log", log, "-o", folder / "o.mp4") == 2
        err = capsys.readouterr().err
        assert "'first_image'" in err and "outside" in err, err
        assert not (folder / "o.first.npy").exists()  # nothing copied beside the output
    # a checkpoint naming a system folder is neither read nor hashed
    log = edited(good_log, folder, header={"checkpoint": "/etc", "checkpoint_hash": None})
    t0 = time.monotonic()
    assert render("--log", log, "-o", folder / "o.mp4") == 2
    err = capsys.readouterr().err
    assert "'checkpoint'" in err and "--checkpoint" in err and time.monotonic() - t0 < 5, err


def test_a_huge_line_is_refused_without_reading_it_whole(good_log, tmp_path, capsys):
    from worldwalk.stream.record.session_log import read_log

    lines = good_log.read_text().splitlines()
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(lines[0] + "\n")
        f.write('{"type": "chunk", "index": 0, "poses": "' + "x" * (100 * 2**20) + '"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            read_log(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ":2:" in str(e.value) and "longer" in str(e.value), str(e.value)
    assert peak < 20 * 2**20, f"reading a log with a 100 MiB line peaked at {peak / 2**20:.0f} MiB"
