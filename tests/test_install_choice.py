"""`.ci/install` picks the torch build: the CUDA build with an NVIDIA GPU, else the CPU build;
WORLDWALK_TORCH overrides. Checked through `--torch-choice`, which prints the choice and installs
nothing, with a stand-in `nvidia-smi` on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / ".ci" / "install"


def choice(tmp_path: Path, smi: str | None = None, **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:  # a stand-in nvidia-smi: `smi` is its shell body
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "WORLDWALK_TORCH"}
    full = {**base, "PATH": f"{bin_dir}:{base['PATH']}", **env}
    return subprocess.run(["bash", str(INSTALL), "--torch-choice"], env=full, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this machine has an NVIDIA driver")
def test_the_torch_build_follows_the_gpu_and_the_override(tmp_path):
    assert choice(tmp_path).stdout.strip() == "cpu"  # no GPU here
    gpu = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"'
    assert choice(tmp_path, gpu).stdout.strip() == "cuda"
    no_driver = 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"; exit 9'
    assert choice(tmp_path, no_driver).stdout.strip() == "cpu"
    assert choice(tmp_path, gpu, WORLDWALK_TORCH="cpu").stdout.strip() == "cpu"
    assert choice(tmp_path, WORLDWALK_TORCH="cuda").stdout.strip() == "cuda"
    bad = choice(tmp_path, WORLDWALK_TORCH="rocm")
    assert bad.returncode == 1 and "use cpu, cuda or skip" in bad.stdout
