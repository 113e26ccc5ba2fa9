"""GLSL programs, one file per program, loaded by name.

A program lives in `shaders/<name>.glsl` (package data) with two sections::

    #if defined VERTEX_SHADER
    ...
    #elif defined FRAGMENT_SHADER
    ...
    #endif

`load_program_source(name)` returns the two stages, each prefixed with the GLSL version and the
define that selects its section; `create_program(ctx, name)` compiles them with moderngl. A file
should not carry its own `#version`: if it does, that version is used instead of the default and
the line is blanked, so compiler messages still point at the right line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import moderngl

__all__ = [
    "DEFAULT_VERSION",
    "ProgramSource",
    "ShaderCompileError",
    "ShaderNotFoundError",
    "available_programs",
    "create_program",
    "load_program_source",
]

DEFAULT_VERSION = "330 core"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_VERSION_LINE = re.compile(r"^[ \t]*#[ \t]*version[ \t]+([^\r\n/]*?)[ \t]*(//.*)?$", re.MULTILINE)
_STAGES = (("vertex_shader", "VERTEX_SHADER"), ("fragment_shader", "FRAGMENT_SHADER"))


class ShaderNotFoundError(FileNotFoundError):
    """No `shaders/<name>.glsl` in the package."""


class ShaderCompileError(RuntimeError):
    """A program failed to compile or link; the message names the file and quotes the GL log."""


class ProgramSource(NamedTuple):
    """The two stages of a program: unpack it (`vs, fs = ...`) or splat it (`ctx.program(**src)`)."""

    vertex_shader: str
    fragment_shader: str

    def keys(self) -> tuple[str, ...]:
        return self._fields

    def __getitem__(self, key):  # type: ignore[override]  # ints index the tuple, names the fields
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def items(self) -> Iterator[tuple[str, str]]:
        return zip(self._fields, self, strict=True)


def available_programs() -> list[str]:
    """Names of the programs shipped in this package (file names without `.glsl`), sorted."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".glsl")] for p in root.iterdir() if p.name.endswith(".glsl"))


def _read(name: str) -> str:
    if not _NAME.match(name) or name.endswith(".glsl"):
        raise ShaderNotFoundError(
            f"bad shader name {name!r}: give the file name without folder or '.glsl', "
            f"one of: {', '.join(available_programs()) or 'none'}"
        )
    path = resources.files(__name__).joinpath(f"{name}.glsl")
    if not path.is_file():
        raise ShaderNotFoundError(
            f"no shader program {name!r} (looked for shaders/{name}.glsl in the worldwalk.shaders "
            f"package); available: {', '.join(available_programs()) or 'none'}. A new file needs a "
            "reinstall only if the package is not installed editable."
        )
    return path.read_text(encoding="utf-8")


def load_program_source(name: str, defines: Mapping[str, object] | None = None) -> ProgramSource:
    """Vertex and fragment source of `shaders/<name>.glsl`, ready for `ctx.program`.

    `defines` adds `#define KEY VALUE` lines (after the stage define) to both stages, e.g.
    `{"MARCH_STEPS": 64}`; a value of None gives a bare `#define KEY`.
    """
    text = _read(name)
    version = DEFAULT_VERSION
    match = _VERSION_LINE.search(text)
    if match:
        version = match.group(1)
        # Keep the line (empty) so the file's line numbers stay what the compiler reports.
        text = text[: match.start()] + text[match.end() :]
    missing = [stage for _, stage in _STAGES if stage not in text]
    if missing:
        raise ValueError(
            f"shaders/{name}.glsl has no {' or '.join(missing)} section: a program file holds "
            "`#if defined VERTEX_SHADER ... #elif defined FRAGMENT_SHADER ... #endif`"
        )
    extra = "".join(
        f"#define {key}\n" if value is None else f"#define {key} {value}\n"
        for key, value in (defines or {}).items()
    )
    sources = [f"#version {version}\n#define {stage}\n{extra}#line 1\n{text}" for _, stage in _STAGES]
    return ProgramSource(*sources)


def create_program(
    ctx: moderngl.Context, name: str, defines: Mapping[str, object] | None = None
) -> moderngl.Program:
    """Compile and link `shaders/<name>.glsl` on `ctx` (which must be current on this thread)."""
    import moderngl

    source = load_program_source(name, defines)
    try:
        return ctx.program(**source)
    except moderngl.Error as e:
        raise ShaderCompileError(f"shaders/{name}.glsl failed to build: {e}") from e
