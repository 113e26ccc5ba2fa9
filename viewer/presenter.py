"""`Presenter`: puts the newest generated frame on a moderngl framebuffer.

Works on any moderngl context (a pyglet window's or a headless EGL one). Each frame is uploaded
to a texture and drawn by `shaders/present.glsl` into the aspect-preserving content rectangle of
the target (black letterbox bars around it), Catmull-Rom bicubic by default. With timewarp the
frame is reprojected by the rotation between the pose it was generated at and the pose the
player holds now, so looking around answers within one display frame although the model
answers a chunk later (`timewarp_homography`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import moderngl
import numpy as np

from worldwalk.shaders import create_program

Filter = Literal["bicubic", "bilinear", "nearest"]
_FILTER_CODE = {"nearest": 0, "bilinear": 1, "bicubic": 2}


@dataclass
class PresenterConfig:
    filter: Filter = "bicubic"
    timewarp: bool = True
    blur_lod: float = 3.0  # mip level (1/8 size) whose colours fill what lies beyond the edges
    blur_px: float = 12.0  # source pixels past the edge over which that fill fades in
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # letterbox bars


def timewarp_homography(K: np.ndarray, frame_pose: np.ndarray, held_pose: np.ndarray) -> np.ndarray:
    """(3, 3) map from pixels of the view the player holds now to pixels of the frame.

    A ray through output pixel p in the current camera is d = K^-1 p; in the frame's camera it
    is R d with R = R_frame^T R_held (rotation from the current camera to the frame's camera,
    both camera-to-world, OpenCV axes); projecting gives H = K R K^-1. Translation is left to
    the model. Pixel coordinates follow OpenCV (x right, y down, row 0 on top).
    """
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(frame_pose, dtype=np.float64)[:3, :3].T @ np.asarray(held_pose, dtype=np.float64)[:3, :3]
    return K @ R @ np.linalg.inv(K)


def content_rect(frame_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the letterboxed picture inside the target, GL convention (y from the bottom)."""
    fw, fh = frame_size
    tw, th = target_size
    scale = min(tw / fw, th / fh)
    w = max(1, min(tw, round(fw * scale)))
    h = max(1, min(th, round(fh * scale)))
    return (tw - w) // 2, (th - h) // 2, w, h


class Presenter:
    """Upload a frame, then draw it (optionally timewarped) into any framebuffer."""

    def __init__(self, ctx: moderngl.Context, cfg: PresenterConfig | None = None) -> None:
        self.ctx = ctx
        self.cfg = cfg or PresenterConfig()
        quad = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")  # triangle strip
        self._vbo = ctx.buffer(quad.tobytes())
        # One program per filter (a compile-time define: software GL pays for every branch).
        self._programs: dict[str, tuple[moderngl.Program, moderngl.VertexArray]] = {}
        self.texture: moderngl.Texture | None = None
        self._rgba: np.ndarray | None = None  # (H, W, 4) upload buffer: RGBA samples faster than RGB
        self.frame_size: tuple[int, int] | None = None  # (W, H) of the last upload

    def _program(self, filter: str) -> tuple[moderngl.Program, moderngl.VertexArray]:
        if filter not in _FILTER_CODE:
            raise ValueError(f"unknown filter {filter!r}; use one of {', '.join(_FILTER_CODE)}")
        if filter not in self._programs:
            program = create_program(self.ctx, "present", {"FILTER": _FILTER_CODE[filter]})
            vao = self.ctx.vertex_array(program, [(self._vbo, "2f", "in_pos")])
            self._programs[filter] = (program, vao)
        return self._programs[filter]

    def upload(self, image: np.ndarray) -> None:
        """image: (H, W, 3) uint8 RGB, top row first (texel row 0 = top row)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Presenter.upload wants (H, W, 3) uint8, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if self.texture is None or self.texture.size != (w, h):
            if self.texture is not None:
                self.texture.release()
            self.texture = self.ctx.texture((w, h), 4)
            self.texture.repeat_x = self.texture.repeat_y = False  # clamp to edge
            self.texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
            self._rgba = np.full((h, w, 4), 255, np.uint8)
            self.frame_size = (w, h)
        assert self._rgba is not None
        self._rgba[..., :3] = image
        self.texture.write(self._rgba)
        self.texture.build_mipmaps()  # the blurred fill beyond the edges reads coarse levels

    def draw(
        self,
        target: moderngl.Framebuffer,
        target_size: tuple[int, int] | None = None,
        warp: np.ndarray | None = None,
    ) -> tuple[int, int, int, int]:
        """Clear `target` to the bar colour and draw the last upload letterboxed into it.

        warp: (3, 3) output-pixel -> frame-pixel homography (`timewarp_homography`); ignored
        when timewarp is off. Returns the content rectangle (x, y, w, h), GL convention.
        """
        size = target_size or target.size
        target.use()
        ctx = self.ctx
        ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        ctx.scissor = None
        ctx.viewport = (0, 0, size[0], size[1])
        target.clear(*self.cfg.background, 1.0)
        if self.texture is None or self.frame_size is None:
            return 0, 0, 0, 0
        rect = content_rect(self.frame_size, size)
        ctx.viewport = rect
        H = np.eye(3) if warp is None or not self.cfg.timewarp else np.asarray(warp, dtype=np.float64)
        program, vao = self._program(self.cfg.filter)
        self.texture.use(0)
        program["u_image"] = 0
        program["u_size"] = (float(self.frame_size[0]), float(self.frame_size[1]))
        program["u_warp"] = tuple(H.T.astype("f4").ravel())  # GLSL mat3 is column-major
        program["u_blur_lod"] = float(self.cfg.blur_lod)
        program["u_blur_px"] = float(self.cfg.blur_px)
        vao.render(moderngl.TRIANGLE_STRIP)
        ctx.viewport = (0, 0, size[0], size[1])
        return rect

    def release(self) -> None:
        for program, vao in self._programs.values():
            vao.release()
            program.release()
        self._programs.clear()
        self._vbo.release()
        if self.texture is not None:
            self.texture.release()
        self.texture = None
