"""Where `worldwalk train` runs and in what precision: `--device {auto,cpu,cuda}`, `--precision {fp32,bf16}`.

bf16 is autocast around the forward passes only. The weights (the master copy), their gradients and
the optimiser state stay fp32, the losses are computed in fp32 (the stages cast the model's outputs
with `.float()` outside `autocast()`), and the model's own fp32 islands (norms, the GDN recurrent
state, the UCPE transforms: `sana_wm.layers.fp32_island`) stay fp32 inside it. No loss scaling:
bf16 has fp32's exponent range. The encode stage and the VAE's latent statistics run in fp32 whatever
the precision: they make the data set every later stage reads.

Checkpoints hold CPU tensors only (`state_file.save_state` moves them there), and a stage loads one on
the CPU before moving the model to its device, so a run stopped on a GPU resumes on the CPU and back.
A batch is built on the host and moved to the device once (`put`); the CUDA-only calls (pinned memory,
the CUDA RNG state) are made only on a CUDA device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["PRECISIONS", "NoCudaError", "TrainDevice", "resolve_device"]

PRECISIONS = ("fp32", "bf16")
CUDA_RNG_KEY = "cuda_rng"  # the CUDA generator's state in a checkpoint written on a GPU


class NoCudaError(ValueError):
    """`--device cuda` (or bf16 on a GPU without it) asked of a machine that cannot do it."""


@dataclass(frozen=True)
class TrainDevice:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # one of PRECISIONS

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def __str__(self) -> str:
        return f"{self.device} {self.precision}"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast on this device around a forward pass; nothing in fp32."""
        if not self.bf16:
            yield
            return
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            yield

    def put(self, x: torch.Tensor) -> torch.Tensor:
        """A host tensor on this device (through pinned memory on a GPU, so the copy runs asynchronously)."""
        if not self.cuda:
            return x.to(self.device)
        return x.pin_memory().to(self.device, non_blocking=True)

    def generator(self, seed: int) -> torch.Generator:
        """A seeded generator on this device (noise drawn where it is used)."""
        g = torch.Generator(device=self.device) if self.cuda else torch.Generator()
        return g.manual_seed(seed)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The device's own RNG state for a checkpoint (the CPU one is saved by the stages themselves)."""
        return {CUDA_RNG_KEY: torch.cuda.get_rng_state(self.device)} if self.cuda else {}

    def set_rng_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `rng_state` saved, when the checkpoint was written on a GPU and this run is on one."""
        if self.cuda and CUDA_RNG_KEY in tensors:
            torch.cuda.set_rng_state(tensors[CUDA_RNG_KEY].cpu(), self.device)


def resolve_device(device: str = "auto", precision: str | None = None) -> TrainDevice:
    """The `TrainDevice` for `--device` and `--precision` (default: bf16 on a GPU, fp32 on the CPU).

    `device` is `auto`, `cpu`, `cuda` or `cuda:N`: `auto` is CUDA when torch sees a GPU, else the CPU;
    CUDA without one is an error, never a silent fallback to hours on the CPU."""
    if device != "auto" and device != "cpu" and device.split(":")[0] != "cuda":
        raise ValueError(f"device {device!r}: use auto, cpu or cuda")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NoCudaError("no CUDA device: use --device cpu (torch sees no GPU: a CPU build of torch, no NVIDIA "
                          "driver, or CUDA_VISIBLE_DEVICES hides them)")
    dev = torch.device(device)
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    if dev.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise NoCudaError(f"{torch.cuda.get_device_name(dev)} has no bf16: use --precision fp32")
    return TrainDevice(dev, precision)

