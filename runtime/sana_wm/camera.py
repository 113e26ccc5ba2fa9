"""Camera inputs of SANA-WM: UCPE per latent frame and Plücker rays per video frame.

Two camera signals enter the transformer, both built from camera-to-world poses made relative to
the session's first frame (OpenCV camera: x right, y down, z forward) and from intrinsics scaled
to the latent token grid:

- UCPE (`camera_conditions`, (B, T, 20)): for latent frame j the flattened 4x4 pose plus fx, fy, cx,
  cy of its last video frame (video frame s*j; frame 0 for j = 0, s = VAE temporal stride). Inside
  the attention blocks it becomes one ray<-world SE(3) matrix per token (`ucpe_transforms`).
- Plücker (`plucker`, (B, 6*s, T, h, w)): the s video frames that latent frame j summarises (video
  frames s*j-s+1 .. s*j; frames 0 .. s-1 for j = 0, the last one repeated when short) each give
  6-D rays [d, o x d] per token; they are packed frame-major into 6*s channels.

Intrinsics whose horizontal or vertical field of view leaves 25-120 degrees are rejected, as the
official scripts do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .layers import fp32_island

MIN_FOV_DEG = 25.0
MAX_FOV_DEG = 120.0


class FieldOfViewError(ValueError):
    pass


def check_fov(intrinsics: np.ndarray, width: int, height: int) -> None:
    """Raise FieldOfViewError unless every (3, 3) K gives a field of view within 25-120 degrees."""
    K = np.asarray(intrinsics, dtype=np.float64).reshape(-1, 3, 3)
    fov_x = np.degrees(2.0 * np.arctan(width / (2.0 * K[:, 0, 0])))
    fov_y = np.degrees(2.0 * np.arctan(height / (2.0 * K[:, 1, 1])))
    bad = ~((fov_x >= MIN_FOV_DEG) & (fov_x <= MAX_FOV_DEG) & (fov_y >= MIN_FOV_DEG) & (fov_y <= MAX_FOV_DEG))
    bad |= ~np.isfinite(fov_x) | ~np.isfinite(fov_y) | (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FieldOfViewError(
            f"frame {i}: field of view {fov_x[i]:.1f} x {fov_y[i]:.1f} degrees (horizontal x vertical) "
            f"for a {width}x{height} image is outside the {MIN_FOV_DEG:.0f}-{MAX_FOV_DEG:.0f} degree range "
            "SANA-WM was trained on; pass intrinsics with a focal length inside that range "
            "(e.g. controls.camera.intrinsics_from_fov(width, height), DEFAULT_FOV_DEG degrees)"
        )


def pose_inverse(pose: np.ndarray) -> np.ndarray:
    """Closed-form inverse of a rigid (4, 4) pose."""
    R, t = pose[:3, :3], pose[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def home_weight(pose_rel: np.ndarray, radius: float, angle_deg: float, fade: float = 0.0) -> float:
    """How far a pose relative to the first frame (4, 4) is back at its view, 0 to 1: 1 within `radius` of its
    position and `angle_deg` of its view direction (the cameras' z axes), falling linearly to 0 at (1 + `fade`)
    times each (at once without a fade); the product of the two."""
    cos = float(np.clip(pose_rel[2, 2], -1.0, 1.0))  # z of the first frame's axes . this camera's z axis
    w = 1.0
    for value, inner in ((float(np.linalg.norm(pose_rel[:3, 3])), radius), (math.degrees(math.acos(cos)), angle_deg)):
        if value >= inner:
            w *= max(0.0, 1.0 - (value - inner) / (fade * inner)) if fade > 0 and inner > 0 else 0.0
    return w


def latent_frame_sources(latent_index: int, stride: int) -> tuple[int, list[int]]:
    """Video frames feeding latent frame j: (the UCPE frame, the `stride` Plücker frames)."""
    if latent_index == 0:
        return 0, list(range(stride))
    last = stride * latent_index
    return last, list(range(last - stride + 1, last + 1))


@dataclass
class CameraInputs:
    conditions: torch.Tensor  # (B, T, 20): flattened relative c2w + fx, fy, cx, cy on the token grid
    plucker: torch.Tensor  # (B, 6 * s, T, h, w)
    home: float = 0.0  # 1: the chunk ends back at the first frame's view, 0: away (camera.home_weight)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> CameraInputs:
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            # cast on the host, pin, copy without blocking: a pageable copy makes the host wait for the model's
            # stream (two waits a chunk), so it could not queue the next chunk while this one runs
            return CameraInputs(_to_cuda(self.conditions, dev, torch.float32), _to_cuda(self.plucker, dev, dtype),
                                self.home)
        return CameraInputs(self.conditions.to(device, torch.float32), self.plucker.to(device, dtype), self.home)

    @staticmethod
    def cat(parts: list[CameraInputs]) -> CameraInputs:
        return CameraInputs(torch.cat([p.conditions for p in parts], 1), torch.cat([p.plucker for p in parts], 2),
                            parts[-1].home)


def _to_cuda(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if t.device.type != "cpu":
        return t.to(device, dtype)
    t = t.to(dtype)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def plucker_rays(K4: torch.Tensor, c2w: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(F, 6, h, w) Plücker rays [d, o x d] for pixel centres at integer token coordinates."""
    n = K4.shape[0]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=K4.dtype), torch.arange(w, dtype=K4.dtype), indexing="ij")
    fx, fy, cx, cy = (K4[:, i].view(n, 1, 1) for i in range(4))
    d_cam = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones(n, h, w, dtype=K4.dtype)], -1)
    d = torch.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:, None, None, :3, 3].expand_as(d)
    return torch.cat([d, torch.cross(o, d, dim=-1)], -1).permute(0, 3, 1, 2)


def build_camera_inputs(
    poses_rel: dict[int, np.ndarray],
    intrinsics_px: dict[int, np.ndarray],
    latent_indices: list[int],
    stride: int,
    image_size: tuple[int, int],
    grid: tuple[int, int],
    home: tuple[float, float, float] | None = None,
) -> CameraInputs:
    """Camera tensors for the given latent frames.

    poses_rel / intrinsics_px map video frame index -> relative c2w (4, 4) / pixel K (3, 3); a Plücker
    frame past the last available one repeats the last one (the official padding).
    image_size is (height, width) of the video, grid (h, w) of the token grid. `home` (radius, degrees,
    fade): the inputs' `home` is the last latent frame's `home_weight` (0 without).
    """
    H, W = image_size
    h, w = grid
    scale = np.array([w / W, h / H, w / W, h / H])
    avail = max(poses_rel)

    def k4(i: int) -> np.ndarray:
        K = intrinsics_px[i]
        return np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]]) * scale

    cond, pl = [], []
    for j in latent_indices:
        ucpe, frames = latent_frame_sources(j, stride)
        frames = [min(f, avail) for f in frames]
        cond.append(np.concatenate([poses_rel[ucpe].reshape(-1), k4(ucpe)]))
        c2w = torch.from_numpy(np.stack([poses_rel[f] for f in frames])).float()
        K4 = torch.from_numpy(np.stack([k4(f) for f in frames])).float()
        pl.append(plucker_rays(K4, c2w, h, w).reshape(-1, h, w))  # (6 * s, h, w), frame-major
    conditions = torch.from_numpy(np.stack(cond)).float()[None]
    plucker = torch.stack(pl, 1)[None]
    last = poses_rel[min(latent_frame_sources(latent_indices[-1], stride)[0], avail)]
    return CameraInputs(conditions, plucker, 0.0 if home is None else home_weight(last, *home))


# ---------------------------------------------------------------------------------------------
# UCPE: per-token ray<-world transforms
# ---------------------------------------------------------------------------------------------


@dataclass
class UcpeTransforms:
    """Per-token 4x4 matrices: q uses P^T, k and v use P^-1, the attention output is mapped back with P."""

    P: torch.Tensor  # (B, N, 4, 4)
    P_T: torch.Tensor
    P_inv: torch.Tensor


@fp32_island
def ucpe_transforms(conditions: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int]) -> UcpeTransforms:
    """Build ray<-world SE(3) matrices for every token of a (B, T, 20) camera condition (fp32).

    A token's ray frame has z along its viewing ray, x = normalize(cam_y x z) and y = z x x; its origin
    is the camera centre. Pixel directions come from a pinhole unprojection of token coordinates.
    """
    B, T, _ = conditions.shape
    h, w = grid
    cond = conditions.float()
    c2w = cond[..., :16].view(B, T, 4, 4)
    fx, fy, cx, cy = (cond[..., 16 + i].view(B, T, 1, 1) for i in range(4))
    # diffusers/official go through a field-of-view round trip on the token grid (xi = 0): same fx up to rounding.
    image_w, image_h = w * patch[1], h * patch[0]
    fx = (w * 0.5) / torch.tan(torch.atan(image_w / (2 * fx)))
    fy = (h * 0.5) / torch.tan(torch.atan(image_h / (2 * fy)))
    cx, cy = cx / patch[1], cy / patch[0]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=cond.device),
        torch.arange(w, dtype=torch.float32, device=cond.device),
        indexing="ij",
    )
    x = (xs - cx) / fx
    y = (ys - cy) / fy
    g = 1.0 / torch.sqrt(1.0 + x * x + y * y)
    d_cam = torch.stack([g * x, g * y, g], -1)  # (B, T, h, w, 3) unit rays
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    z = F.normalize(torch.einsum("btij,bthwj->bthwi", R, d_cam), dim=-1, eps=1e-6)
    cam_y = R[..., :, 1][:, :, None, None, :].expand_as(z)
    xr = F.normalize(torch.cross(cam_y, z, dim=-1), dim=-1, eps=1e-6)
    yr = F.normalize(torch.cross(z, xr, dim=-1), dim=-1, eps=1e-6)
    R_w2l = torch.stack([xr, yr, z], -1).transpose(-1, -2)  # (B, T, h, w, 3, 3)
    t_w2l = -torch.einsum("bthwij,btj->bthwi", R_w2l, t)
    P = torch.zeros(B, T, h, w, 4, 4, device=cond.device)
    P[..., :3, :3] = R_w2l
    P[..., :3, 3] = t_w2l
    P[..., 3, 3] = 1.0
    P = P.reshape(B, T * h * w, 4, 4)
    P_inv = torch.zeros_like(P)
    P_inv[..., :3, :3] = P[..., :3, :3].transpose(-1, -2)
    P_inv[..., :3, 3] = -torch.einsum("bnij,bnj->bni", P_inv[..., :3, :3], P[..., :3, 3])
    P_inv[..., 3, 3] = 1.0
    return UcpeTransforms(P, P.transpose(-1, -2), P_inv)


@fp32_island
def apply_ucpe(
    x: torch.Tensor, matrix: torch.Tensor, rope: torch.Tensor | None, inverse_rope: bool = False
) -> torch.Tensor:
    """x (B, H, N, D): the first D/2 channels (groups of 4) get the per-token 4x4 (in fp32), the rest get RoPE."""
    from .rope import apply_rope

    B, Hh, N, D = x.shape
    first, second = x.split(D // 2, dim=-1)
    # in fp32: the matrices carry translations that grow as the player walks, which bf16 would quantise
    first = torch.einsum("bnij,bhnkj->bhnki", matrix.float(), first.float().reshape(B, Hh, N, -1, 4))
    first = first.reshape(B, Hh, N, D // 2).to(x.dtype)
    if rope is not None:
        second = apply_rope(second, rope, inverse=inverse_rope)
    return torch.cat([first, second], dim=-1)


def fov_degrees(K: np.ndarray, width: int, height: int) -> tuple[float, float]:
    return (
        math.degrees(2 * math.atan(width / (2 * K[0, 0]))),
        math.degrees(2 * math.atan(height / (2 * K[1, 1]))),
    )
