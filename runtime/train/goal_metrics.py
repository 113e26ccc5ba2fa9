"""The bundled world's goal metrics (issue #25), beside PSNR/SSIM in `worldwalk eval`.

- Detail, `edge_energy`: on grey levels (0.299 R + 0.587 G + 0.114 B), the mean absolute difference
  between vertically neighbouring pixels plus the same horizontally. `edge_ratio` is the model's over
  the truth's (1: as much detail as the truth; a blur is well below 1).
- Landmarks, `blue_mask`: the pixels whose blue exceeds both red and green by more than 55 and is
  above 140 (the blue block). `mask_scores` gives the model's mask area over the truth's and the IoU
  of the two masks.
- Ghosting, `ghost_share`: the share of the frame's pixels that are blue in the model's frame where
  the truth has no blue, on frames where the camera has turned 90 degrees or more away from where it
  started.

All take (H, W, 3) uint8 frames (or (N, H, W, 3) stacks where said) and return floats.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLUE_MARGIN", "BLUE_MIN", "blue_mask", "edge_energy", "edge_ratio", "ghost_share", "mask_scores",
           "turned_away", "window"]

BLUE_MARGIN = 55  # blue above both red and green by more than this
BLUE_MIN = 140  # and above this
GREY = np.array([0.299, 0.587, 0.114])


def edge_energy(frame: np.ndarray) -> float:
    """Mean |vertical neighbour difference| + mean |horizontal neighbour difference| of the grey levels."""
    g = np.asarray(frame, np.float64) @ GREY
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def edge_ratio(frames: np.ndarray, truth: np.ndarray) -> float:
    """Edge energy of `frames` (N, H, W, 3) over that of `truth` (same frames), summed over the stack."""
    model = sum(edge_energy(f) for f in frames)
    true = sum(edge_energy(f) for f in truth)
    return model / true if true > 0 else float("nan")


def blue_mask(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: blue > red + 55, blue > green + 55 and blue > 140."""
    f = np.asarray(frame).astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (b - r > BLUE_MARGIN) & (b - g > BLUE_MARGIN) & (b > BLUE_MIN)


def mask_scores(frame: np.ndarray, truth: np.ndarray) -> tuple[float, float] | None:
    """(area ratio, IoU) of the blue masks of `frame` against `truth`; None when the truth has no blue."""
    m, t = blue_mask(frame), blue_mask(truth)
    area = int(t.sum())
    if area == 0:
        return None
    return float(m.sum()) / area, float((m & t).sum()) / float((m | t).sum())


def ghost_share(frame: np.ndarray, truth: np.ndarray) -> float:
    """Share of the frame's pixels blue in `frame` where `truth` has no blue."""
    m, t = blue_mask(frame), blue_mask(truth)
    return float((m & ~t).mean())


def turned_away(poses: np.ndarray, degrees: float = 90.0) -> np.ndarray:
    """(N,) bool: frames whose viewing direction is at least `degrees` from the first frame's (poses (N, 4, 4)
    camera-to-world, looking down -z or +z alike: the angle between the forward axes)."""
    fwd = poses[:, :3, 2]
    cos = np.clip(np.einsum("nj,j->n", fwd, fwd[0]) /
                  (np.linalg.norm(fwd, axis=1) * np.linalg.norm(fwd[0]) + 1e-12), -1.0, 1.0)
    return np.degrees(np.arccos(cos)) >= degrees - 1e-6


def window(t: float, fps: float, n: int, half: int = 2) -> list[int]:
    """Frame indices within +-`half` of time `t` (s), after the first frame and before `n`."""
    c = int(round(t * fps))
    return [i for i in range(c - half, c + half + 1) if 0 < i < n]
