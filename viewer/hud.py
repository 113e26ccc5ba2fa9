"""The heads-up display: stats panel, recording light, help overlay, status spinner and toasts.

Drawn with pyglet text and shapes on top of what the presenter drew with moderngl (same GL
context, drawn after it), so it is part of the back buffer and of every screenshot. Text is
rebuilt only when it changes and at most `update_hz` times a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyglet
from pyglet import shapes
from pyglet.text import Label

from worldwalk.controls.camera import yaw_pitch_roll
from worldwalk.runtime.world import backends_text


@dataclass
class HudConfig:
    font_size: float = 11.0  # at a window 720 pixels high; scaled with the height, see min/max
    min_font_size: float = 7.5
    max_font_size: float = 14.0
    font_names: tuple[str, ...] = ("DejaVu Sans Mono", "Menlo", "Consolas", "Courier New")
    margin: int = 10
    padding: int = 8
    update_hz: float = 5.0
    panel_opacity: int = 160  # 0..255 behind the text
    toast_seconds: float = 2.5


@dataclass
class HudView:
    """What the window knows beyond `Session.stats()`: display-side figures and toggles."""

    title: str = ""
    shown_fps: float = 0.0  # content frames presented per second
    draw_fps: float = 0.0  # display refreshes per second
    latency_ms: float | None = None  # last key press -> first frame reflecting it
    latency_median_ms: float | None = None
    latency_split: str | None = None  # the median latency step by step (LatencySplit.text)
    timewarp: bool = True
    steering: str = "camera"  # the world's ModelSpec.steering: "actions" worlds are never timewarped
    actions: str | None = None  # what an action world was last sent ("forward+left  pitch +0.00 yaw +0.30")
    filter: str = "bicubic"
    recording: str | None = None  # the file being recorded, if any
    recording_note: str | None = None  # why recording stopped ("not recording: disk full"), kept on screen
    mouse_captured: bool = False
    gamepad: str | None = None
    gl_note: str | None = None  # said when the GL renderer is a software one


def _fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    return "--" if v is None else f"{v:.{digits}f}{unit}"


def hud_lines(stats: dict, view: HudView) -> list[str]:
    """The stats panel's lines, from `Session.stats()` and the window's own figures."""
    lines = [view.title or str(stats.get("label") or stats.get("world", ""))]
    if not stats.get("chunks"):  # nothing generated yet: no figures to show
        stats = {**stats, "gen_fps": None, "chunk_ms": None}
    lines.append(
        f"gen {_fmt(stats.get('gen_fps'), '', 1)}  shown {_fmt(view.shown_fps, '', 1)}"
        f"  draw {_fmt(view.draw_fps)} fps"
    )
    lat = f"chunk {_fmt(stats.get('chunk_ms'), ' ms')}  latency {_fmt(view.latency_ms, ' ms')}"
    if view.latency_median_ms is not None:
        lat += f" (med {view.latency_median_ms:.0f})"
    lines.append(lat)
    if view.latency_split:
        lines.append(f"  {view.latency_split}")
    pose = stats.get("pose")
    if pose is not None:
        pose = np.asarray(pose)
        yaw, pitch, _ = yaw_pitch_roll(pose[:3, :3])
        x, y, z = pose[:3, 3]
        lines.append(
            f"x {x:+.2f} y {y:+.2f} z {z:+.2f}  yaw {math.degrees(yaw):+.0f} pitch {math.degrees(pitch):+.0f}"
        )
    if view.actions:
        lines.append(f"sent {view.actions}")
    warp = f"timewarp {'on' if view.timewarp else 'off'}"
    if view.steering == "actions":
        warp = "timewarp off (action world)"
    flags = [warp, view.filter]
    if stats.get("paused"):
        flags.append("PAUSED")
    if view.gamepad:
        flags.append("gamepad")
    flags.append("F1 help" if view.mouse_captured else "F1 help, click to look")
    lines.append("  ".join(flags))
    backends = backends_text(stats.get("backends"))
    if backends:
        lines.append(backends)
    if view.recording_note:
        lines.append(view.recording_note)
    if view.gl_note:
        lines.append(view.gl_note)
    return lines


class Hud:
    def __init__(self, window: pyglet.window.Window, help_lines: Sequence[str], cfg: HudConfig | None = None):
        self.window = window
        self.cfg = cfg or HudConfig()
        self.visible = True
        self.help_visible = False
        self.batch = pyglet.graphics.Batch()
        self._bg = pyglet.graphics.Group(order=0)
        self._fg = pyglet.graphics.Group(order=1)
        font = {"font_name": list(self.cfg.font_names), "font_size": self.cfg.font_size}
        self._font = font
        # stats panel (top-left)
        self._panel = shapes.Rectangle(0, 0, 1, 1, color=(0, 0, 0, self.cfg.panel_opacity), batch=self.batch,
                                       group=self._bg)
        self._stats = Label("", multiline=True, width=2000, anchor_y="top", batch=self.batch, group=self._fg,
                            **font)
        self._lines: list[str] = []
        self._next_update = 0.0
        # recording light (top-right)
        self._rec_dot = shapes.Circle(0, 0, 7, color=(230, 30, 30, 255), batch=self.batch, group=self._fg)
        self._rec_text = Label("REC", anchor_x="right", anchor_y="center", color=(255, 80, 80, 255),
                               batch=self.batch, group=self._fg, **font)
        self.recording = False
        # help overlay (centre)
        self._help_panel = shapes.Rectangle(0, 0, 1, 1, color=(0, 0, 0, 200), batch=self.batch, group=self._bg)
        self._help = Label("\n".join(help_lines), multiline=True, width=2000, anchor_x="left", anchor_y="top",
                           batch=self.batch, group=self._fg, **font)
        # status message with a spinner (centre), e.g. while the first chunk is generated
        self._status_panel = shapes.Rectangle(0, 0, 1, 1, color=(0, 0, 0, 170), batch=self.batch,
                                              group=self._bg)
        self._status = Label("", anchor_x="center", anchor_y="center", batch=self.batch, group=self._fg,
                             font_name=font["font_name"], font_size=self.cfg.font_size * 1.4)
        self._dots = [shapes.Circle(0, 0, 4, color=(255, 255, 255, 255), batch=self.batch, group=self._fg)
                      for _ in range(10)]
        self.status: str | None = None
        # toast (bottom centre)
        self._toast_panel = shapes.Rectangle(0, 0, 1, 1, color=(0, 0, 0, 170), batch=self.batch,
                                             group=self._bg)
        self._toast = Label("", anchor_x="center", anchor_y="bottom", batch=self.batch, group=self._fg, **font)
        self._toast_until = 0.0
        self._fitted_for: tuple[int, int] | None = None
        self._drawn_blink = False

    @property
    def lines(self) -> list[str]:
        """The stats panel's lines as last set."""
        return list(self._lines)

    def set_lines(self, lines: list[str], now: float, force: bool = False) -> bool:
        """New stats text; applied at most `update_hz` times a second unless forced.
        Returns whether the panel changed (so the window knows to redraw)."""
        if lines == self._lines or (not force and now < self._next_update):
            return False
        self._lines = lines
        self._next_update = now + 1.0 / self.cfg.update_hz
        self._stats.text = "\n".join(lines)
        return self.visible

    @staticmethod
    def _blink(now: float) -> bool:
        return (now % 1.0) < 0.6

    def animating(self, now: float) -> bool:
        """Whether the HUD looks different now than at its last draw by itself (the spinner,
        the recording light blinking, a toast to show or expire)."""
        return (
            self.status is not None
            or now < self._toast_until + 0.1
            or (self.recording and self._blink(now) != self._drawn_blink)
        )

    def toast(self, text: str, now: float, seconds: float | None = None) -> None:
        self._toast.text = text
        self._toast_until = now + (self.cfg.toast_seconds if seconds is None else seconds)

    def _fit_fonts(self, w: int, h: int) -> None:
        """Scale the text with the window; shrink the help until it fits."""
        if self._fitted_for == (w, h):
            return
        self._fitted_for = (w, h)
        c = self.cfg
        size = min(max(c.font_size * h / 720.0, c.min_font_size), c.max_font_size)
        for label in (self._stats, self._rec_text, self._toast):
            label.font_size = size
        self._status.font_size = size * 1.4
        self._help.font_size = size
        room_w, room_h = w - 4 * c.padding - 2 * c.margin, h - 4 * c.padding - 2 * c.margin
        for _ in range(8):  # content size scales ~linearly with the font size
            cw, ch = self._help.content_width, self._help.content_height
            if cw <= room_w and ch <= room_h or self._help.font_size <= 5:
                break
            self._help.font_size = max(5.0, self._help.font_size * min(room_w / cw, room_h / ch) * 0.98)

    def draw(self, now: float) -> None:
        w, h = self.window.width, self.window.height
        m, p = self.cfg.margin, self.cfg.padding
        self._fit_fonts(w, h)

        show_stats = self.visible and bool(self._lines) and not self.help_visible
        self._stats.visible = self._panel.visible = show_stats
        if show_stats:
            self._stats.position = (m + p, h - m - p, 0)
            self._panel.position = (m, h - m - self._stats.content_height - 2 * p)
            self._panel.width = self._stats.content_width + 2 * p
            self._panel.height = self._stats.content_height + 2 * p

        rec = self.recording
        blink = self._drawn_blink = self._blink(now)
        self._rec_dot.visible = rec and blink
        self._rec_text.visible = rec
        if rec:
            self._rec_text.position = (w - m - 22, h - m - 10, 0)
            self._rec_dot.position = (w - m - 8, h - m - 10)

        self._help.visible = self._help_panel.visible = self.help_visible
        if self.help_visible:
            cw, ch = self._help.content_width, self._help.content_height
            x0, y0 = (w - cw) // 2, (h + ch) // 2
            self._help.position = (x0, y0, 0)
            self._help_panel.position = (x0 - 2 * p, y0 - ch - 2 * p)
            self._help_panel.width, self._help_panel.height = cw + 4 * p, ch + 4 * p

        status = self.status
        self._status.visible = self._status_panel.visible = status is not None
        for d in self._dots:
            d.visible = status is not None
        if status is not None:
            if self._status.text != status:
                self._status.text = status
            cx, cy = w // 2, h // 2
            self._status.position = (cx, cy + 24, 0)
            bw = max(self._status.content_width + 4 * p, 160)
            self._status_panel.position = (cx - bw // 2, cy - 40)
            self._status_panel.width, self._status_panel.height = bw, 90
            n = len(self._dots)
            head = (now * 1.2 % 1.0) * n  # one turn every 0.83 s
            for i, d in enumerate(self._dots):
                a = 2 * math.pi * i / n
                d.position = (cx + 16 * math.sin(a), cy - 12 + 16 * math.cos(a))
                age = (head - i) % n  # how long ago the head passed this dot, in dots
                d.opacity = int(255 * max(0.15, 1.0 - age / n))

        toast = now < self._toast_until
        self._toast.visible = self._toast_panel.visible = toast
        if toast:
            self._toast.position = (w // 2, m + p, 0)
            tw, th = self._toast.content_width, self._toast.content_height
            self._toast_panel.position = (w // 2 - tw // 2 - p, m)
            self._toast_panel.width, self._toast_panel.height = tw + 2 * p, th + 2 * p

        self.batch.draw()
