"""Headless OpenGL on EGL (Mesa llvmpipe on a machine with no GPU and no display).

Two facts shape this file. EGL binds a context to one thread at a time, and a context left
current on the thread that created it cannot be made current anywhere else. And with libglvnd a
thread that has a window's GLX context current (pyglet makes one current as soon as
`pyglet.window` is imported) cannot make an EGL context current at all: the GL calls silently go
to the window's context instead, and the headless renderer draws black.

- `GLThread` is the robust answer: one private thread owns the context, and every GL call of its
  user runs there (`gl.call(fn, ...)`). Whatever the calling threads have current does not
  matter. `ReferenceWorld` uses it.
- `shared_gl_thread` is one process-wide `GLThread` for users built and closed many times over
  (the server builds a world per player). Creating and destroying an EGL context costs ~15 ms
  and leaves ~40 KB of driver memory behind each time (500 reference worlds grew RSS by 36 MB), so
  such users share this context: each creates and releases only its own GL objects, and objects
  that can be shared (compiled programs) live in `gl.cache` as long as the context does.
- `create_headless_context` returns a *detached* context (created on a private thread, current
  on none) for code that prefers `with ctx:` on threads of its own that have no window context.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import moderngl

__all__ = [
    "DEBIAN_PACKAGES",
    "GLThread",
    "GLUnavailableError",
    "shared_gl_thread",
    "create_headless_context",
    "detach_current_context",
]

DEBIAN_PACKAGES = "libegl1 libgl1-mesa-dri libegl-mesa0 libgles2 libgl1 libglx-mesa0"
_INSTALL_HINT = f"install them with: apt-get update && apt-get install -y {DEBIAN_PACKAGES}"
T = TypeVar("T")


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
    lib.eglGetCurrentContext.restype = ctypes.c_void_p
    lib.eglGetCurrentContext.argtypes = []
    lib.eglMakeCurrent.restype = ctypes.c_uint
    lib.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
    lib.eglGetError.restype = ctypes.c_int
    lib.eglReleaseThread.restype = ctypes.c_uint
    lib.eglReleaseThread.argtypes = []
    return lib


def detach_current_context() -> None:
    """Make no EGL context current on this thread (a no-op if none is)."""
    egl = _egl()
    display = egl.eglGetCurrentDisplay()
    if display and not egl.eglMakeCurrent(display, None, None, None):
        error = egl.eglGetError()
        raise GLUnavailableError(f"eglMakeCurrent failed to release the context (EGL error {error:#x})")


def _create_here(require: int) -> moderngl.Context:
    """A standalone context on EGL, current on the calling thread (which must have no GLX one)."""
    _egl()  # a clear message when libEGL itself is absent
    if ctypes.util.find_library("GL") is None:
        raise GLUnavailableError(f"libGL was not found: headless rendering needs it; {_INSTALL_HINT}")
    try:
        ctx = moderngl.create_standalone_context(backend="egl", require=require)
    except Exception as e:  # glcontext raises plain Exceptions for a missing display or driver
        raise GLUnavailableError(
            f"could not create a headless OpenGL {require // 100}.{require % 100 // 10} context on EGL "
            f"({type(e).__name__}: {e}). It needs EGL with Mesa's drivers (llvmpipe runs on any CPU); "
            f"{_INSTALL_HINT}"
        ) from e
    if not _egl().eglGetCurrentContext():
        ctx.release()
        raise GLUnavailableError("the new EGL context could not be made current on its thread")
    return ctx


def create_headless_context(require: int = 330) -> moderngl.Context:
    """A standalone OpenGL >= `require` context on EGL, current on no thread.

    Use it inside `with ctx:` (which makes it current on the calling thread and detaches it on
    exit), one thread at a time, on threads that have no window (GLX) context current.
    """
    result: dict[str, object] = {}

    def create() -> None:  # on a fresh thread: nothing the caller has current can interfere
        try:
            result["ctx"] = _create_here(require)
            detach_current_context()
        except BaseException as e:  # handed to the caller below
            result["error"] = e

    thread = threading.Thread(target=create, name="egl-context-create", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["ctx"]  # type: ignore[return-value]


class GLThread:
    """A private thread that owns a headless EGL context; `call` runs GL work there, in order.

    The context is current on that thread for its whole life, so `fn` just uses `gl.ctx`.
    Calls from any number of threads are serialized. `close` releases the context (after an
    optional cleanup function) and ends the thread; calls after that raise RuntimeError.
    """

    def __init__(self, name: str = "worldwalk-gl", require: int = 330) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False
        self._close_lock = threading.Lock()
        self.cache: dict[object, object] = {}  # GL objects shared by this context's users (GL thread only)
        try:
            self.ctx: moderngl.Context = self._executor.submit(_create_here, require).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run fn(*args, **kwargs) on the GL thread and return its result (or raise its error)."""
        if self._closed:
            raise RuntimeError("this GL thread is closed")
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except RuntimeError as e:  # shut down between the check and the submit
            raise RuntimeError("this GL thread is closed") from e
        return future.result()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, cleanup: Callable[[], object] | None = None) -> None:
        """Run `cleanup` (e.g. release GL objects), release the context, end the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True

        def finish() -> None:
            try:
                if cleanup is not None:
                    cleanup()
            finally:
                self.ctx.release()
                # Mesa keeps ~10 MiB of per-thread state until the thread says it is done
                _egl().eglReleaseThread()

        try:
            self._executor.submit(finish).result()
        finally:
            self._executor.shutdown(wait=True)


_shared: GLThread | None = None
_shared_lock = threading.Lock()


def shared_gl_thread(require: int = 330) -> GLThread:
    """The process-wide GL thread (created on first use, kept until the process ends): see the
    module docstring. Its users must not close it; they release their own objects through `call`."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = GLThread(name="worldwalk-gl-shared", require=require)
        return _shared
