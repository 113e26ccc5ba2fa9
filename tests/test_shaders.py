"""The shader loader: sections, versions, defines, clear errors, and a compile on EGL."""

from __future__ import annotations

import pytest

import worldwalk.shaders as shaders
from worldwalk.shaders import (
    ProgramSource,
    ShaderCompileError,
    ShaderNotFoundError,
    available_programs,
    create_program,
    load_program_source,
)

from .conftest import gl_or_skip


@pytest.fixture
def shader_dir(tmp_path, monkeypatch):
    """Point the loader at a temporary folder of .glsl files."""
    monkeypatch.setattr(shaders.resources, "files", lambda package: tmp_path)
    return tmp_path


def test_every_shipped_program_has_both_stages():
    names = available_programs()
    assert "reference_world" in names
    for name in names:
        vs, fs = load_program_source(name)
        assert vs.startswith("#version ") and "#define VERTEX_SHADER\n" in vs
        assert fs.startswith("#version ") and "#define FRAGMENT_SHADER\n" in fs


def test_source_unpacks_and_splats_into_ctx_program(shader_dir):
    (shader_dir / "tiny.glsl").write_text("#if defined VERTEX_SHADER\nV\n#elif defined FRAGMENT_SHADER\nF\n#endif\n")
    src = load_program_source("tiny", {"STEPS": 8, "FAST": None})
    assert isinstance(src, ProgramSource)
    vs, fs = src
    assert dict(src) == {"vertex_shader": vs, "fragment_shader": fs}
    header = ["#version 330 core", "#define VERTEX_SHADER", "#define STEPS 8", "#define FAST", "#line 1"]
    assert vs.splitlines()[:5] == header
    assert fs.splitlines()[1] == "#define FRAGMENT_SHADER"


def test_a_version_in_the_file_wins_and_keeps_line_numbers(shader_dir):
    body = "// header\n#version 410 core\n#if defined VERTEX_SHADER\n#elif defined FRAGMENT_SHADER\n#endif\n"
    (shader_dir / "v.glsl").write_text(body)
    vs, _ = load_program_source("v")
    lines = vs.splitlines()
    assert lines[0] == "#version 410 core" and sum("#version" in line for line in lines) == 1
    assert lines[lines.index("#line 1") + 1 :][:3] == ["// header", "", "#if defined VERTEX_SHADER"]


def test_missing_and_bad_names_list_what_exists(shader_dir):
    (shader_dir / "alpha.glsl").write_text("#if defined VERTEX_SHADER\n#elif defined FRAGMENT_SHADER\n#endif\n")
    with pytest.raises(ShaderNotFoundError, match=r"'nope'.*available: alpha"):
        load_program_source("nope")
    with pytest.raises(ShaderNotFoundError, match="without folder or '.glsl'.*alpha"):
        load_program_source("../alpha")
    (shader_dir / "half.glsl").write_text("void main() {}\n")
    with pytest.raises(ValueError, match="no VERTEX_SHADER or FRAGMENT_SHADER section"):
        load_program_source("half")


@pytest.mark.gl
def test_create_program_compiles_on_egl_and_names_the_file_on_errors(shader_dir):
    from worldwalk.runtime.worlds.gl_context import create_headless_context

    ctx = gl_or_skip(create_headless_context)
    (shader_dir / "ok.glsl").write_text(
        "#if defined VERTEX_SHADER\nvoid main() { gl_Position = vec4(0.0); }\n"
        "#elif defined FRAGMENT_SHADER\nout vec4 c;\nvoid main() { c = vec4(VALUE); }\n#endif\n"
    )
    (shader_dir / "broken.glsl").write_text(
        "#if defined VERTEX_SHADER\nvoid main() { gl_Position = vec4(0.0); }\n"
        "#elif defined FRAGMENT_SHADER\nvoid main() { nonsense; }\n#endif\n"
    )
    try:
        with ctx:
            create_program(ctx, "ok", {"VALUE": 1.0}).release()
            with pytest.raises(ShaderCompileError, match=r"shaders/broken\.glsl"):
                create_program(ctx, "broken")
    finally:
        ctx.release()
