"""Training state on disk: safetensors only, never pickles.

`worldwalk train` resumes from files in its work folder. A pickle there (`torch.load` with
`weights_only=False`) runs whatever code its author put in it, so the state is written as
safetensors: tensors (model weights, optimiser moments, the torch RNG) plus JSON metadata (step,
seconds, numpy RNG, config), tagged with `KIND_KEY` naming what the file holds. Loading refuses
a file that is not safetensors, carries another tag, or is an old pickle checkpoint (`LEGACY`
suffix), with an error that names the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["KIND_KEY", "ForeignFileError", "default_work", "load_state", "refuse_legacy", "save_state",
           "pack_optimizer", "unpack_optimizer"]

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
    if path.exists():
        raise ForeignFileError(
            f"{path} is a pickle checkpoint; `worldwalk train` keeps its state in .safetensors and does not "
            "load pickles (they can run code). Delete it (or pass --no-resume, or another --work) to go on.")


def save_state(path: Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors and JSON-able `meta` to `path` atomically (a `.part` file, then a rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(part),
              metadata={KIND_KEY: kind, "meta": json.dumps(meta)})
    part.replace(path)


def load_state(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a state file written by `save_state` with the same `kind`; anything else raises."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    refuse_legacy(path.with_suffix(LEGACY))
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header.get("meta", "null"))
    except Exception as e:  # not safetensors, truncated, or bad JSON
        raise ForeignFileError(f"{path} is not a training state file written by `worldwalk train` ({e}); "
                               "delete it or pass --no-resume") from e
    if header.get(KIND_KEY) != kind or not isinstance(meta, dict):
        raise ForeignFileError(f"{path} is not a `worldwalk train` {kind} state (its tag is "
                               f"{header.get(KIND_KEY)!r}); delete it or pass --no-resume")
    return tensors, meta


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
