"""`worldwalk bench --gpu-check` (runtime/bench/gpu_check.py, gpu_paths.py): PASS, FAIL or SKIP per path with
its bar and a one-line summary; a skip is never a pass. On a machine without a GPU every GPU path is a SKIP and
the CPU paths pass."""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.bench.gpu_check import FAIL, PASS, SKIP, Check, format_checks, summary
from worldwalk.runtime.bench.gpu_paths import PATHS
from worldwalk.runtime.cli.main import main


@pytest.mark.slow  # a pytest collection in a subprocess, a small model, batching and a snapshot: about 15 CPU s
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: this machine has a GPU")
def test_gpu_check_on_a_cpu_skips_every_gpu_path_and_passes_the_cpu_ones(capsys):
    assert main(["bench", "--gpu-check"]) == 0  # nothing failed
    captured = capsys.readouterr()
    assert "no NVIDIA GPU" in captured.err
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in captured.out.splitlines()
            if line.startswith("| ") and not line.startswith("| path") }
    assert rows["cuda tests collected"] == PASS
    for name, on_gpu, _, _ in PATHS:
        assert rows[name] == (SKIP if on_gpu else PASS), (name, captured.out)
    gpu_paths = sum(on_gpu for _, on_gpu, _, _ in PATHS)
    assert f"0 failed, {gpu_paths} skipped: INCOMPLETE" in captured.out  # skips are not passes


def test_the_table_and_summary_never_count_a_skip_as_a_pass():
    table = format_checks([Check("a", PASS, "fine", 1.0, "bar a"), Check("b", FAIL, "broke", 2.0, "bar b"),
                           Check("c", SKIP, "no GPU", 0.0, "bar c")])
    assert "| a | PASS | bar a | fine | 1.0 |" in table and "| b | FAIL | bar b | broke | 2.0 |" in table
    assert "| c | SKIP | bar c | no GPU | 0.0 |" in table
    assert table.endswith("1 passed, 1 failed, 1 skipped: FAIL")
    assert summary([Check("a", PASS), Check("c", SKIP)]).endswith("1 passed, 0 failed, 1 skipped: INCOMPLETE "
                                                                   "(skipped paths were not checked)")
    assert summary([Check("a", PASS)]).endswith(": PASS")
    assert Check("c", SKIP).ok and not Check("b", FAIL).ok  # a skip fails nothing, and passes nothing either
