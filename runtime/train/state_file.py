"""Training state on disk: safetensors only, never pickles.

`worldwalk train` resumes from files in its work folder. A pickle there (`torch.load` with
`weights_only=False`) runs whatever code its author put in it, so the state is written as
safetensors: tensors (model weights, optimiser moments, the torch RNG) plus JSON metadata (step,
seconds, numpy RNG, config), tagged with `KIND_KEY` naming what the file holds. Loading refuses
a file that is not safetensors, carries another tag, or is an old pickle checkpoint (`LEGACY`
suffix), with an error that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from worldwalk.runtime.safe_files import UnsafeFileError, check_regular, open_regular, printable, replaced

__all__ = ["KIND_KEY", "ForeignFileError", "default_work", "load_state", "refuse_legacy", "restoring", "save_state",
           "pack_optimizer", "unpack_optimizer", "work_file"]

KIND_KEY = "worldwalk_train_state"
LEGACY = ".pt"


class ForeignFileError(ValueError):
    """A file in the work folder that `worldwalk train` did not write (or must not trust)."""


def default_work() -> Path:
    """The default work folder: `$XDG_CACHE_HOME/worldwalk/train`, else `~/.cache/worldwalk/train`.

    Per user, never the shared temporary directory (anyone could plant files there)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "worldwalk" / "train"


def refuse_legacy(path: Path) -> None:
    """Raise if the pickle file `path` exists: it is never loaded (it could run code)."""
    if path.is_symlink() or path.exists():
        raise ForeignFileError(
            f"{printable(path)} is a pickle checkpoint; `worldwalk train` keeps its state in .safetensors and does not "
            "load pickles (they can run code). Delete it (or pass --no-resume, or another --work) to go on.")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write CPU copies of `tensors` (they load on any device) to `path` atomically, through a fresh
    temporary file in the folder (`safe_files.replaced`: a symlink planted at `path` is refused, never
    written through a shared folder)."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    with replaced(path) as f:
        f.write(data)


def save_state(path: Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors and JSON-able `meta` to `path` as a state file of `kind` (`write_safetensors`)."""
    write_safetensors(path, tensors, {KIND_KEY: kind, "meta": json.dumps(meta)})


def work_file(path: Path) -> Path:
    """`path`, checked to be a regular file and not a symlink before a library opens it by name (a FIFO
    would hang the open; a link could lead anywhere). Raises ForeignFileError naming it and the fix."""
    try:
        return check_regular(path, follow_symlinks=False)
    except UnsafeFileError as e:
        raise ForeignFileError(f"{e}; `worldwalk train` did not put it in its work folder (or pass another "
                               "--work)") from None


def load_state(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a state file written by `save_state` with the same `kind`; anything else raises.
    The file is read through one descriptor opened as a regular file, never through a symlink."""
    from safetensors.torch import load

    refuse_legacy(path.with_suffix(LEGACY))
    try:
        with open_regular(path, follow_symlinks=False) as f:
            data = f.read()
    except UnsafeFileError as e:
        raise ForeignFileError(f"{e}; `worldwalk train` did not put it in its work folder (or pass --no-resume, "
                               "or another --work)") from None
    try:
        tensors = load(data)  # checks the layout; its header (8 bytes of length, then JSON) holds the metadata
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        meta = json.loads(header.get("meta", "null"))
    except Exception as e:  # not safetensors, truncated, or bad JSON
        raise ForeignFileError(f"{printable(path)} is not a training state file written by `worldwalk train` "
                               f"({printable(str(e)[:200])}); delete it or pass --no-resume") from e
    if header.get(KIND_KEY) != kind or not isinstance(meta, dict):
        raise ForeignFileError(f"{printable(path)} is not a `worldwalk train` {kind} state (its tag is "
                               f"{printable(repr(header.get(KIND_KEY))[:60])}); delete it or pass --no-resume")
    return tensors, meta


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Apply a loaded state inside this block: what a malformed one raises there (a missing key, a
    wrong shape, type or value) becomes a ForeignFileError naming the file and the fix."""
    try:
        yield
    except ForeignFileError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise ForeignFileError(f"{printable(path)} does not hold a state `worldwalk train` can resume from "
                               f"({type(e).__name__}: {printable(str(e)[:200])}); delete it or pass --no-resume"
                               ) from None


def pack_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt.") -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's state dict as flat tensors plus JSON (param groups, scalar state)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}{i}.{k}"] = v
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                     prefix: str = "opt.") -> None:
    """Load what `pack_optimizer` wrote back into `opt`."""
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith(prefix):
            i, k = name[len(prefix):].split(".", 1)
            state.setdefault(int(i), {})[k] = v
    for name, v in meta["scalars"].items():
        i, k = name.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
