"""`PlayWindow`: the local game window around a running `Session`.

One display loop on the main thread: dispatch window events (they only record intent in the
session's `InputBox` or flip a toggle), poll the gamepad, ask the `FramePacer` for the frame due
now (never waiting on the model), draw it through the `Presenter` with rotation timewarp toward
the pose the player holds right now, draw the HUD over it, flip. The model thread runs on its
own; until its first chunk arrives the window shows a "generating first chunk" spinner.

Controls: click captures the mouse, Esc releases it (Esc again quits); keys go to the session
by name per the bindings; focus loss clears held keys. P pause, R reset, Backspace rewind (hold
to keep rewinding), T timewarp, N nearest/bicubic, F2 HUD, H, F1 or ? help, F11 fullscreen,
F12 screenshot.

Create any headless EGL world (the reference world) before importing this module: importing
pyglet's window module makes a GLX context current on the importing thread, and an EGL context
created after that renders black on Mesa (`play_command` orders it so).
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import moderngl
import numpy as np
import pyglet
from pyglet.window import key

from worldwalk.controls import Bindings
from worldwalk.controls.camera import yaw_pitch_roll
from worldwalk.runtime.chunk import Frame
from worldwalk.runtime.pacer import FramePacer, PacerConfig
from worldwalk.runtime.session import Session

from .devices import Gamepad, pyglet_key_name
from .hud import Hud, HudConfig, HudView, hud_lines
from .metrics import LatencyMeter, RateMeter
from .presenter import Presenter, PresenterConfig, timewarp_homography

log = logging.getLogger(__name__)

# Keys the window handles itself; they never reach the session.
COMMAND_KEYS = {
    key.ESCAPE, key.F1, key.F2, key.QUESTION, key.F11, key.F12, key.P, key.R, key.T, key.N, key.H, key.BACKSPACE,
}


@dataclass
class WindowConfig:
    size: tuple[int, int] | None = None  # window (W, H); None: the frame scaled to a share of the screen
    screen_share: float = 0.75  # default window: the frame scaled up to this share of the screen, centred
    software_screen_share: float = 0.6  # when GL runs on the CPU (llvmpipe): drawing shares the model's cores
    fullscreen: bool = False
    title: str = "worldwalk"
    display_hz: float = 60.0  # redraws per second (timewarp answers the mouse at this rate)
    vsync: bool = True
    seconds: float | None = None  # quit after this long (tests, demos)
    jitter_frames: int = 0  # pacer slack (0: a chunk's first frame is shown as soon as it is made)
    filter: str = "bicubic"
    timewarp: bool = True
    hud: bool = True
    screenshot_dir: str = "."
    esc_quit_seconds: float = 2.0  # a second Esc within this time (mouse free) quits


def default_window_size(frame: tuple[int, int], screen: tuple[int, int], share: float) -> tuple[int, int]:
    """The frame scaled up (never down), aspect kept, to fill `share` of the screen in its tighter direction;
    even sizes."""
    k = max(1.0, min(screen[0] * share / frame[0], screen[1] * share / frame[1]))
    return 2 * round(frame[0] * k / 2), 2 * round(frame[1] * k / 2)


def screen_rect() -> tuple[int, int, int, int]:
    """(x, y, width, height) of the default screen (1280x720 at 0, 0 when pyglet cannot say)."""
    try:
        screen = pyglet.display.get_display().get_default_screen()
        return screen.x, screen.y, screen.width, screen.height
    except Exception:
        return 0, 0, 1280, 720


SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer", "swiftshader")


def software_renderer(renderer: str) -> bool:
    """Whether a GL_RENDERER string names a rasterizer that runs on the CPU."""
    return any(s in renderer.lower() for s in SOFTWARE_RENDERERS)


def software_gl_note(renderer: str) -> str:
    """The HUD's line for a software renderer: why drawing is slow and what would help."""
    name = renderer.split("(")[0].strip() or "software"
    return f"GL: {name} (software: the CPU draws)"


def timewarp_allowed(spec: Any) -> bool:
    """Whether frames of this world may be timewarped: only camera-steered worlds, whose poses give
    the angle the view turns by. An action world's yaw/pitch units have no known angle."""
    return getattr(spec, "steering", "camera") == "camera"


def help_lines(bindings: Bindings, world: Sequence[str] = ()) -> list[str]:
    """The help overlay; `world` replaces the camera controls for an action world (its key map)."""
    def keys(action: str) -> str:
        return "/".join(k.upper() if len(k) == 1 else k for k in getattr(bindings, action)) or "-"

    common = [
        "",
        "P pause   R reset   Backspace rewind",
        "T timewarp   N nearest/bicubic   F2 HUD",
        "F11 fullscreen   F12 screenshot",
        "H, F1 or ? help  Esc twice: quit",
    ]
    if world:
        return ["CONTROLS", *world, "mouse look    click to capture, Esc releases",
                "timewarp      off: this world's look actions have no known angle", *common]
    return [
        "CONTROLS",
        f"move          {keys('forward')} {keys('left')} {keys('back')} {keys('right')}",
        f"rise / sink   {keys('up')} / {keys('down')}",
        f"turn          {keys('turn_left')} / {keys('turn_right')}",
        f"look          {keys('look_up')} / {keys('look_down')}",
        f"faster        {keys('fast')}",
        "mouse look    click to capture, Esc releases",
        "gamepad       left stick moves, right looks",
        "              triggers sink / rise",
        *common,
    ]


class PlayWindow:
    def __init__(
        self,
        session: Session,
        cfg: WindowConfig | None = None,
        bindings: Bindings | None = None,
        recorder: Any = None,
        title: str | None = None,
    ) -> None:
        self.session = session
        self.cfg = cfg or WindowConfig()
        self.bindings = bindings or getattr(session.integrator, "bindings", None) or Bindings()
        # anything with write(frame) and path (resets and rewinds reach its log through the session's
        # events); its `error` (if any) stops the recording
        self.recorder = recorder
        spec = session.spec
        sx, sy, sw, sh = screen_rect()
        frame = (spec.width, spec.height)
        size = self.cfg.size or default_window_size(frame, (sw, sh), self.cfg.screen_share)
        # hidden until sized and placed: the renderer (known once the context exists) sets the size
        self.window = pyglet.window.Window(
            width=size[0], height=size[1], caption=title or self.cfg.title, resizable=True,
            vsync=self.cfg.vsync, fullscreen=self.cfg.fullscreen, visible=False,
        )
        self.ctx = moderngl.create_context()  # attaches to the window's (current) GL context
        self.gl_renderer = self.ctx.info.get("GL_RENDERER", "")
        self.software_gl = software_renderer(self.gl_renderer)
        if not self.cfg.fullscreen:
            if self.software_gl and self.cfg.size is None:
                # A CPU rasterizer shares the cores with the model: a smaller share of the screen.
                size = default_window_size(frame, (sw, sh), self.cfg.software_screen_share)
                self.window.set_size(*size)
            self.window.set_location(sx + max(0, (sw - size[0]) // 2), sy + max(0, (sh - size[1]) // 2))
        self.window.set_visible(True)
        self.warp_allowed = timewarp_allowed(spec)
        timewarp = self.cfg.timewarp and self.warp_allowed
        self.presenter = Presenter(self.ctx, PresenterConfig(filter=self.cfg.filter, timewarp=timewarp))
        world_help = getattr(session.world, "controls_help", None)
        self.hud = Hud(self.window, help_lines(self.bindings, world_help() if callable(world_help) else ()),
                       HudConfig())
        self.hud.visible = self.cfg.hud
        self.hud.recording = recorder is not None
        self.pacer = FramePacer(session.frames, spec.fps, PacerConfig(jitter_frames=self.cfg.jitter_frames),
                                on_frame=recorder.write if recorder is not None else None)
        self.gamepad = Gamepad()
        self.view = HudView(title=title or spec.label or spec.name, filter=self.cfg.filter,
                            timewarp=timewarp, steering=getattr(spec, "steering", "camera"),
                            recording=str(getattr(recorder, "path", "")) or None,
                            gl_note=software_gl_note(self.gl_renderer) if self.software_gl else None)
        self.current: Frame | None = None
        self.shown = RateMeter(1.0)
        self.draws = RateMeter(1.0)
        self.latency = LatencyMeter()  # key press -> first frame generated with it
        self.look_latency = LatencyMeter()  # mouse look -> first redraw (timewarp answers it)
        self.frames_shown = 0
        self.first_frame_s: float | None = None
        self.screenshots: list[str] = []
        self._captured = False
        self._quit = False
        self._screenshot_wanted = False
        self._esc_time = -math.inf
        self._t0 = time.monotonic()
        self._error_told = False
        self._dirty = True  # something changed that the next tick must draw
        self._drawn_state: tuple[Any, Any] | None = None
        self.window.push_handlers(self)

    # ---- events: record intent or flip a toggle, nothing more -----------------------------------

    def on_key_press(self, symbol: int, modifiers: int) -> bool:
        now = time.monotonic()
        log.debug("key press %s (mouse %s)", key.symbol_string(symbol), "captured" if self._captured else "free")
        if symbol not in COMMAND_KEYS and not (symbol == key.SLASH and modifiers & key.MOD_SHIFT):
            name = pyglet_key_name(symbol)
            if self.bindings.actions({name}):
                self.latency.press(now)
            self.session.inputs.press(name, now)
            return True
        if symbol == key.ESCAPE:
            if self._captured:
                self._capture(False)
            elif now - self._esc_time < self.cfg.esc_quit_seconds:
                self._quit = True
            else:
                self._esc_time = now
                self.hud.toast("press Esc again to quit", now, self.cfg.esc_quit_seconds)
        elif symbol in (key.H, key.F1, key.QUESTION, key.SLASH):  # as on the page
            self.hud.help_visible = not self.hud.help_visible
        elif symbol == key.F2:  # the HUD: the page's stats panel
            self.hud.visible = not self.hud.visible
        elif symbol == key.P:
            paused = not self.session.paused
            self.session.set_paused(paused)
            self.hud.toast("paused" if paused else "resumed", now)
        elif symbol == key.R:
            self.session.reset()
            self.latency.cancel()
            self.hud.toast("reset to the first frame", now)
        elif symbol == key.T and not self.warp_allowed:
            self.hud.toast("no timewarp for this world: its look actions have no known angle", now)
        elif symbol == key.T:
            self.presenter.cfg.timewarp = self.view.timewarp = not self.presenter.cfg.timewarp
            self.hud.toast(f"timewarp {'on' if self.view.timewarp else 'off'}", now)
        elif symbol == key.N:
            f = "nearest" if self.presenter.cfg.filter != "nearest" else "bicubic"
            self.presenter.cfg.filter = self.view.filter = f
            self.hud.toast(f"{f} upscaling", now)
        elif symbol == key.F11:
            self.window.set_fullscreen(not self.window.fullscreen)
        elif symbol == key.F12:
            self._screenshot_wanted = True
        self._dirty = True
        return True  # handled: also keeps pyglet's default (Esc closes the window) away

    def on_key_release(self, symbol: int, modifiers: int) -> bool:
        if symbol not in COMMAND_KEYS:
            self.session.inputs.release(pyglet_key_name(symbol))
        return True

    def on_text_motion(self, motion: int) -> bool:
        # Backspace arrives here on the press and again on every key repeat: hold to keep rewinding.
        if motion == key.MOTION_BACKSPACE:
            self._rewind()
        return True

    def _rewind(self) -> None:
        now = time.monotonic()
        target = self.session.rewind()
        if target is not None:
            self.latency.cancel()
            self.hud.toast(f"rewound to chunk {target}", now)
        else:
            self.hud.toast("nothing to rewind to", now)

    def on_mouse_press(self, x: int, y: int, button: int, modifiers: int) -> bool:
        if not self._captured:
            self._capture(True)
        return True

    def on_mouse_motion(self, x: int, y: int, dx: float, dy: float) -> bool:
        log.debug("mouse motion %+.0f %+.0f (%s)", dx, dy, "captured" if self._captured else "free")
        if self._captured:
            now = time.monotonic()
            self.session.inputs.add_mouse(dx, -dy, now)  # pyglet's dy points up, ours down
            if self.presenter.cfg.timewarp and (dx or dy):
                self.look_latency.press(now)
        return True

    def on_mouse_drag(self, x: int, y: int, dx: float, dy: float, buttons: int, modifiers: int) -> bool:
        return self.on_mouse_motion(x, y, dx, dy)

    def on_deactivate(self) -> bool:
        log.debug("focus lost: held keys cleared")
        # Focus lost: keys released elsewhere would otherwise stay held forever.
        self.session.inputs.clear()
        self.latency.cancel()
        if self._captured:
            self._capture(False)
        return True

    def on_expose(self) -> None:
        self._dirty = True

    def on_resize(self, width: int, height: int) -> None:
        self._dirty = True  # pyglet's own handler still runs (viewport and projection)

    def on_close(self) -> bool:
        self._quit = True
        return True  # the loop closes the window once it has stopped drawing

    def _capture(self, on: bool) -> None:
        log.debug("mouse %s", "captured" if on else "released")
        self._captured = on
        self.view.mouse_captured = on
        self.window.set_exclusive_mouse(on)

    # ---- the display loop ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Show frames until the window closes (or `cfg.seconds` pass); returns the run's figures."""
        self._t0 = time.monotonic()
        self._draw_once()  # the "generating first chunk" screen, before anything slow
        self.gamepad.open()
        period = 1.0 / self.cfg.display_hz
        next_tick = self._t0
        try:
            while not self._quit:
                self.window.dispatch_events()
                pyglet.clock.tick()
                if self._quit:
                    break
                self.gamepad.poll(self.session.inputs)
                self._draw_once()
                now = time.monotonic()
                if self.cfg.seconds is not None and now - self._t0 >= self.cfg.seconds:
                    break
                next_tick = max(next_tick + period, now - period)
                if next_tick > now:
                    time.sleep(next_tick - now)
        finally:
            result = self.figures()
            self.gamepad.close()
            self.presenter.release()
            self.window.close()
        return result

    def _draw_once(self) -> None:
        """One display tick: take the frame due now, and redraw only if anything on screen changes
        (a new frame, a new timewarp, HUD text or animation, window events): an idle window
        leaves the cores to the model."""
        now = time.monotonic()
        frame = self.pacer.poll(now)
        if frame is not None:
            self.presenter.upload(frame.image)
            self.current = frame
        stats = self.session.stats()
        self._update_status(stats, now)
        self._check_recording(now)

        warp = None
        if self.current is not None and self.presenter.cfg.timewarp:
            warp = timewarp_homography(self.current.intrinsics, self.current.pose, self.session.held_pose(self.current))
        fb_size = self.window.get_framebuffer_size()

        self.view.draw_fps = self.draws.rate(now)
        self.view.actions = getattr(self.session.world, "actions_sent", None) or None  # action worlds only
        self.view.shown_fps = self.shown.rate(now)
        self.view.latency_ms = None if self.latency.last is None else 1000 * self.latency.last
        median = self.latency.median()
        self.view.latency_median_ms = None if median is None else 1000 * median
        split = self.latency.split_median()
        self.view.latency_split = None if split is None else split.text()
        self.view.gamepad = self.gamepad.name
        hud_changed = self.hud.set_lines(hud_lines(stats, self.view), now)

        state = (fb_size, None if warp is None else warp.round(6).tobytes())
        if not (frame is not None or hud_changed or self._dirty or self._screenshot_wanted
                or state != self._drawn_state or self.hud.animating(now)):
            return
        self._dirty = False
        self._drawn_state = state
        self.presenter.draw(self.ctx.screen, fb_size, warp)
        self.hud.draw(now)

        if self._screenshot_wanted:
            self._screenshot_wanted = False
            self._save_screenshot(fb_size, now)
        self.window.flip()

        presented = time.monotonic()
        self.draws.tick(presented)
        self.look_latency.presented(presented, presented)
        if frame is not None:
            self.frames_shown += 1
            self.shown.tick(presented)
            if self.first_frame_s is None:
                self.first_frame_s = presented - self._t0
            self.latency.presented(frame.input_time, presented, self.session.timing(frame), taken=now)

    def _update_status(self, stats: dict[str, Any], now: float) -> None:
        error = stats.get("error")
        if error:
            self.hud.status = f"the world failed: {error}"
            if not self._error_told:
                self._error_told = True
                print(f"worldwalk play: the world failed: {error}", file=sys.stderr)
        elif self.current is None:
            self.hud.status = "generating first chunk…"
        elif self.current.generation != self.session.generation and not self.session.paused:
            self.hud.status = "generating…"
        else:
            self.hud.status = None

    def _check_recording(self, now: float) -> None:
        """A recording that stopped (a full disk, a folder that went away) is said in the HUD, for good, and
        once on stderr; the walk goes on and the file keeps what was recorded until then (the recorder
        writes fragmented MP4, which plays up to its last whole fragment)."""
        error = getattr(self.recorder, "error", None)
        if error is None or self.view.recording_note is not None:
            return
        from worldwalk.stream.record.session_recording import describe_failure

        self.view.recording_note = note = describe_failure(error)
        self.hud.recording = False
        self.hud.toast(note, now, 5.0)
        self._dirty = True
        print(f"worldwalk play: {note} ({error}); the walk goes on, and {self.view.recording} keeps what was "
              "recorded until now", file=sys.stderr, flush=True)

    def _save_screenshot(self, fb_size: tuple[int, int], now: float) -> None:
        from PIL import Image

        data = self.ctx.screen.read(viewport=(0, 0, *fb_size), components=3, alignment=1)
        image = np.frombuffer(data, np.uint8).reshape(fb_size[1], fb_size[0], 3)[::-1]  # GL rows bottom-up
        folder = Path(self.cfg.screenshot_dir)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"worldwalk-{stamp}-{len(self.screenshots):03d}.png"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        except OSError as e:  # a read-only or full folder: say so, play on
            print(f"screenshot not saved: {e}; choose a folder with --screenshot-dir", file=sys.stderr, flush=True)
            self.hud.toast(f"screenshot not saved: {e.strerror or e}", now)
            return
        self.screenshots.append(str(path))
        print(f"screenshot: {path}", flush=True)
        self.hud.toast(f"saved {path}", now)

    def figures(self) -> dict[str, Any]:
        """What the run measured, for the exit line and for tests."""
        now = time.monotonic()
        stats = self.session.stats()
        pose = np.asarray(stats["pose"])
        yaw, pitch, roll = yaw_pitch_roll(pose[:3, :3])
        shown_pts = self.current.index if self.current is not None else None
        elapsed = now - self._t0
        return {
            "world": stats.get("world"),
            "seconds": elapsed,
            "frames_shown": self.frames_shown,
            # content frames presented per second, from the first frame on
            "displayed_fps": (self.frames_shown - 1) / (elapsed - self.first_frame_s)
            if self.first_frame_s is not None and elapsed > self.first_frame_s and self.frames_shown > 1
            else 0.0,
            "displayed_fps_recent": self.shown.rate(now),
            "draw_fps": self.draws.rate(now),
            "gen_fps": stats.get("gen_fps"),
            "chunk_ms": stats.get("chunk_ms"),
            "chunks": stats.get("chunks"),
            "first_frame_s": self.first_frame_s,
            "latency": self.latency.summary(),
            "look_latency": self.look_latency.summary(),
            "position": pose[:3, 3].tolist(),
            "yaw_pitch_roll_deg": [math.degrees(a) for a in (yaw, pitch, roll)],
            "last_frame_index": shown_pts,
            "pacer_skipped": self.pacer.skipped,
            "timewarp": self.presenter.cfg.timewarp,
            "gamepad": self.gamepad.name,
            "screenshots": self.screenshots,
            "window": [*self.window.get_location(), *self.window.get_size()],
            "gl_renderer": self.gl_renderer,
            "software_gl": self.software_gl,
            "hud": self.hud.lines,
            "backends": stats.get("backends") or {},
            "recording_error": self.view.recording_note,
            "error": stats.get("error"),
        }
