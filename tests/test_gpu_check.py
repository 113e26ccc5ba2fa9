"""`worldwalk bench --gpu-check` on a machine without a GPU: says so, runs the CPU-side checks, exits 0."""

from __future__ import annotations

import pytest
import torch

from worldwalk.runtime.bench.gpu_check import Check, format_checks
from worldwalk.runtime.cli.main import main


@pytest.mark.slow  # a pytest collection in a subprocess and a small bench: about 5 CPU s (8 s on 2 busy cores)
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: this machine has a GPU")
def test_gpu_check_on_a_cpu_says_so_and_passes(capsys):
    assert main(["bench", "--gpu-check"]) == 0
    captured = capsys.readouterr()
    assert "no NVIDIA GPU" in captured.err
    assert "| cuda tests collected | pass |" in captured.out  # the cuda tests import and wait for a GPU
    assert "| bench small --accel none | pass |" in captured.out
    assert "0 failed" in captured.out


def test_the_table_fails_on_any_failed_check():
    table = format_checks([Check("a", True, "fine", 1.0), Check("b", False, "broke", 2.0)])
    assert "| a | pass | 1.0 | fine |" in table and "| b | FAIL | 2.0 | broke |" in table
    assert table.endswith("1 passed, 1 failed")
