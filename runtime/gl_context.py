"""A headless OpenGL context on EGL (Mesa llvmpipe on a machine with no GPU and no display).

EGL binds a context to one thread at a time, and a context left current on the thread that
created it cannot be made current anywhere else. So `create_headless_context` hands the context
back *detached* (current on no thread): every user wraps its GL work in `with ctx:`, which makes
it current on the calling thread and detaches it again on exit. A world built on the main thread
can then render on a session's model thread, and on the next session's thread after that. Two
threads must not be inside `with ctx:` at once: hold a lock around it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import moderngl

__all__ = ["DEBIAN_PACKAGES", "GLUnavailableError", "create_headless_context", "detach_current_context"]

DEBIAN_PACKAGES = "libegl1 libgl1-mesa-dri libegl-mesa0 libgles2 libgl1 libglx-mesa0"
_INSTALL_HINT = f"install them with: apt-get update && apt-get install -y {DEBIAN_PACKAGES}"


class GLUnavailableError(RuntimeError):
    """No headless OpenGL here: EGL/Mesa missing or too old."""


@functools.lru_cache(maxsize=1)
def _egl() -> ctypes.CDLL:
    name = ctypes.util.find_library("EGL")
    if name is None:
        raise GLUnavailableError(
            f"libEGL was not found: headless rendering needs EGL and Mesa; {_INSTALL_HINT}"
        )
    lib = ctypes.CDLL(name)
    lib.eglGetCurrentDisplay.restype = ctypes.c_void_p
    lib.eglGetCurrentDisplay.argtypes = []
    lib.eglMakeCurrent.restype = ctypes.c_uint
    lib.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
    lib.eglGetCurrentContext.restype = ctypes.c_void_p
    lib.eglGetCurrentContext.argtypes = []
    lib.eglGetCurrentSurface.restype = ctypes.c_void_p
    lib.eglGetCurrentSurface.argtypes = [ctypes.c_int]
    lib.eglGetError.restype = ctypes.c_int
    return lib


_EGL_DRAW, _EGL_READ = 0x3059, 0x305A


def detach_current_context() -> None:
    """Make no EGL context current on this thread (a no-op if none is)."""
    egl = _egl()
    display = egl.eglGetCurrentDisplay()
    if display and not egl.eglMakeCurrent(display, None, None, None):
        error = egl.eglGetError()
        raise GLUnavailableError(f"eglMakeCurrent failed to release the context (EGL error {error:#x})")


def create_headless_context(require: int = 330) -> moderngl.Context:
    """A standalone OpenGL >= `require` context on EGL, detached: use it inside `with ctx:`.

    Whatever context this thread had current before the call is current again after it.
    """
    if ctypes.util.find_library("GL") is None:
        raise GLUnavailableError(f"libGL was not found: headless rendering needs it; {_INSTALL_HINT}")
    # Creating a context makes it current; put back whatever this thread had (say a window's).
    egl = _egl()
    previous = (
        egl.eglGetCurrentDisplay(),
        egl.eglGetCurrentSurface(_EGL_DRAW),
        egl.eglGetCurrentSurface(_EGL_READ),
        egl.eglGetCurrentContext(),
    )
    try:
        ctx = moderngl.create_standalone_context(backend="egl", require=require)
    except Exception as e:  # glcontext raises plain Exceptions for a missing display/driver
        raise GLUnavailableError(
            f"could not create a headless OpenGL {require // 100}.{require % 100 // 10} context on EGL "
            f"({type(e).__name__}: {e}). It needs EGL with Mesa's drivers (llvmpipe runs on any CPU); "
            f"{_INSTALL_HINT}"
        ) from e
    if previous[0] and previous[3]:
        egl.eglMakeCurrent(*previous)
    else:
        detach_current_context()
    return ctx
