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

from worldwalk.shaders import load_program_source

Filter = Literal["bicubic", "bilinear", "nearest"]
_FILTER_CODE = {"nearest": 0, "bilinear": 1, "bicubic": 2}


@dataclass
class PresenterConfig:
    filter: Filter = "bicubic"
    timewarp: bool = True
    max_blur_lod: float = 5.0  # coarsest mip level smearing what lies beyond the frame's edges
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
        self.program = ctx.program(**load_program_source("present"))
        quad = np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4")  # triangle strip
        self._vbo = ctx.buffer(quad.tobytes())
        self._vao = ctx.vertex_array(self.program, [(self._vbo, "2f", "in_pos")])
        self.texture: moderngl.Texture | None = None
        self.frame_size: tuple[int, int] | None = None  # (W, H) of the last upload

    def upload(self, image: np.ndarray) -> None:
        """image: (H, W, 3) uint8 RGB, top row first (texel row 0 = top row)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Presenter.upload wants (H, W, 3) uint8, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if self.texture is None or self.texture.size != (w, h):
            if self.texture is not None:
                self.texture.release()
            self.texture = self.ctx.texture((w, h), 3, alignment=1)
            self.texture.repeat_x = self.texture.repeat_y = False  # clamp to edge
            self.texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
            self.frame_size = (w, h)
        self.texture.write(np.ascontiguousarray(image), alignment=1)
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
        self.texture.use(0)
        self.program["u_image"] = 0
        self.program["u_size"] = (float(self.frame_size[0]), float(self.frame_size[1]))
        self.program["u_warp"] = tuple(H.T.astype("f4").ravel())  # GLSL mat3 is column-major
        self.program["u_filter"] = _FILTER_CODE[self.cfg.filter]
        self.program["u_max_lod"] = float(self.cfg.max_blur_lod)
        self._vao.render(moderngl.TRIANGLE_STRIP)
        ctx.viewport = (0, 0, size[0], size[1])
        return rect

    def release(self) -> None:
        for obj in (self._vao, self._vbo, self.program, self.texture):
            if obj is not None:
                obj.release()
        self.texture = None
