"""Files in folders that someone else may write to: a session log's folder, a checkpoint folder, the
training work folder (`--work` may be shared).

- `open_regular(path)` opens a file for reading only when it is a regular file. It opens without
  blocking and checks with fstat, so a FIFO (whose open would wait forever for a writer), a device
  or a socket is refused at once; `follow_symlinks=False` refuses a symlink too. `check_regular`
  does the same check for files a library opens by name (safetensors, numpy).
- `check_inside(root, folder)` walks a folder tree and refuses what would lead a reader elsewhere:
  a symlink that resolves outside `folder`, or anything that is neither a file nor a folder.
- `replaced(path)` writes a file through a fresh temporary file in its folder (created exclusively,
  under a random name nobody could plant in advance), which then replaces `path` by a rename. A
  symlink planted at `path` is refused: writing through it would overwrite its target.
- `printable(text)` shows the control characters of a name (terminal escape sequences) as escapes,
  for messages that quote paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["UnsafeFileError", "check_inside", "check_regular", "open_regular", "printable", "replaced"]

_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}  # text direction overrides


class UnsafeFileError(ValueError):
    """A path that is not the plain file (or folder) it should be; the message names it and the fix."""


def printable(text: object) -> str:
    """`text` with control characters (ESC, CR, BEL, C1, direction overrides, undecodable bytes) as
    escapes, so quoting a name in a message cannot drive the terminal; newlines and tabs are kept."""
    out = []
    for ch in str(text):
        if ch not in "\n\t" and (ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs")):
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                       if unicodedata.category(ch) != "Cs" else f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, *, follow_symlinks: bool = True) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; else UnsafeFileError, at once."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafeFileError(f"{printable(path)} is a symbolic link, where a file was expected; "
                                  "remove it (nothing is read through links here)") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{printable(path)} is {_kind(mode)}, not a regular file; remove it or "
                                  "replace it with the file that belongs there")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, *, follow_symlinks: bool = True) -> Path:
    """`path`, if it is a regular file (see `open_regular`); for files a library opens by name."""
    open_regular(path, follow_symlinks=follow_symlinks).close()
    return Path(path)


def check_inside(root: str | os.PathLike, folder: str | os.PathLike, what: str = "") -> None:
    """Refuse anything under `root` (a file or folder tree) that a reader would follow out of `folder`
    (a symlink resolving outside it), or that is neither a regular file nor a folder (a FIFO, whose
    open would hang; a device; a socket). Symlinked folders are not descended: they are checked as links."""
    folder = Path(folder).resolve()
    what = what or "the checkpoint"
    pending = [Path(root)]
    while pending:
        path = pending.pop()
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = path.resolve(strict=True)
                if not target.is_relative_to(folder):
                    raise UnsafeFileError(f"{printable(path)} in {what} is a symbolic link to {printable(target)}, "
                                          f"outside {printable(folder)}; keep {what}'s files inside that folder")
                st = target.stat()
            if stat.S_ISDIR(st.st_mode):
                if not path.is_symlink():
                    pending.extend(sorted(path.iterdir()))
            elif not stat.S_ISREG(st.st_mode):
                raise UnsafeFileError(f"{printable(path)} in {what} is {_kind(st.st_mode)}, not a regular file; "
                                      "remove it")
        except (OSError, RuntimeError) as e:  # a dangling link, a link loop (RuntimeError), a name too long
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UnsafeFileError(f"{printable(path)} in {what} cannot be read ({printable(reason)}); "
                                  "remove it or fix it") from None


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


@contextlib.contextmanager
def replaced(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write `path` through a temporary file in its folder: yields the temporary file (binary, open for
    writing); when the block ends without an error it replaces `path` (a rename: readers see the old
    file or the new one, never half of one); on an error it is removed. A symlink at `path` is refused."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafeFileError(f"{printable(path)} is a symbolic link; it is not written through (it could point at "
                              "any file of yours). Remove it, or use a folder only you can write to")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as an ordinary new file would be (mkstemp makes 0600)
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
