"""Which checkpoint files a module's weights were loaded from, so an exported graph can be named by the
files instead of by every weight's bytes.

A loader calls `mark_weights_source(module, files)` once the weights are in place. `weights_source(module)`
later gives a short identity of those files, or None when the module was never marked or a weight has
been modified in place since (tensor version counters moved): then the caller hashes the weights.

A file's identity is its resolved path, size and modification time (ns) plus a sha256 of its first and
last MiB. Why not all its bytes: a full-size SANA-WM checkpoint is 5-10 GB, so hashing it costs what
hashing the weights costs (the 5-15 s this avoids); the stat alone would miss a file replaced by one of
the same size with its mtime kept (`cp -p`), which the two edge reads (headers, metadata, last tensors)
catch in practice. Moving or touching the file only costs one more export.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch.nn as nn

from worldwalk.runtime.safe_files import open_regular

EDGE_BYTES = 1 << 20
_ATTR = "_worldwalk_weights_source"


def file_identity(path: str | os.PathLike) -> str:
    """sha256 (hex, 16) of a file's resolved path, size, mtime and first and last `EDGE_BYTES`."""
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    with open_regular(p) as f:  # a FIFO put in the file's place is refused, not waited on
        h.update(f.read(EDGE_BYTES))
        if st.st_size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()[:16]


def _versions(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """(in-place modification counter, storage address) of each parameter and buffer (no data is read)."""
    return tuple((t._version, t.data_ptr()) for t in module.state_dict(keep_vars=True).values())


def _unchanged(now: tuple[tuple[int, int], ...], then: tuple[tuple[int, int], ...]) -> bool:
    """No tensor modified in place since: its counter has not moved (a parameter moved to another device or
    dtype keeps its counter), or it is a new tensor whose counter is still 0 (a buffer moved by `.to`)."""
    return len(now) == len(then) and all(
        v == v0 or (p != p0 and v == 0) for (v, p), (v0, p0) in zip(now, then, strict=True)
    )


def mark_weights_source(module: nn.Module, files: Iterable[str | os.PathLike]) -> nn.Module:
    """Record that `module`'s weights are what `files` hold (moving the module to a device or dtype keeps the
    record: dtypes are part of every export's name). Returns `module`."""
    paths = tuple(sorted(Path(f).resolve() for f in files))
    if not paths:
        raise ValueError("mark_weights_source needs at least one file")
    object.__setattr__(module, _ATTR, (paths, _versions(module)))
    return module


def weights_source(module: nn.Module) -> str | None:
    """Identity of the files `module` was loaded from, or None (never marked, or changed in place since)."""
    record = getattr(module, _ATTR, None)
    if record is None:
        return None
    paths, versions = record
    if not _unchanged(_versions(module), versions):
        return None
    return ";".join(f"{p.name}={file_identity(p)}" for p in paths)
