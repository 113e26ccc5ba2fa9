"""The camera convention of worldwalk, stated once, and the small helpers that build poses.

Camera frame (OpenCV): x points right, y points down, z points forward (out of the lens).

World frame: y points DOWN (gravity is +y), so the horizontal plane is x-z and "up" is -y.
A camera at the identity pose sits at the origin and looks along world +z, with its x axis
along world +x.

Poses are camera-to-world 4x4 float64 matrices: ``world_point = R @ camera_point + t``; the
columns of R are the camera's right, down and forward axes in world coordinates, and t is the
camera centre in world coordinates.

Orientation is parametrised as ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (radians):
- yaw turns about world y; positive yaw turns RIGHT (forward +z swings toward +x);
- pitch turns about the camera's x; positive pitch looks UP (forward tilts toward -y);
- roll turns about the camera's z; positive roll swings the camera's x axis toward +y.

These are the same matrices diffusers' SANA-WM ``cam_utils`` uses, so its poses need no
conversion (see action_string.py).

Intrinsics are (3, 3) pixel matrices K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with the principal
point at the image centre (cx, cy) = (W / 2, H / 2) in continuous pixel coordinates (the centre
of pixel (0, 0) is at (0.5, 0.5)).
"""

from __future__ import annotations

import math

import numpy as np


def rot_x(angle: float) -> np.ndarray:
    """Rotation about x by ``angle`` radians (positive: +z toward -y, i.e. look up)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """Rotation about y by ``angle`` radians (positive: +z toward +x, i.e. turn right)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """Rotation about z by ``angle`` radians (positive: +x toward +y)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (3, 3) ``Ry(yaw) @ Rx(pitch) @ Rz(roll)``, angles in radians."""
    return rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)


def yaw_pitch_roll(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of ``rotation``: (yaw, pitch, roll) in radians, pitch in [-pi/2, pi/2].

    At gimbal lock (looking straight up or down) yaw and roll share one degree of freedom; roll is
    then reported as 0 and yaw carries the whole turn.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must have shape (3, 3), got {R.shape}")
    # With R = Ry Rx Rz: R[:, 2] = (sy cp, -sp, cy cp) and R[1, :] = (cp sr, cp cr, -sp).
    pitch = math.asin(max(-1.0, min(1.0, -float(R[1, 2]))))
    if math.cos(pitch) > 1e-9:
        yaw = math.atan2(float(R[0, 2]), float(R[2, 2]))
        roll = math.atan2(float(R[1, 0]), float(R[1, 1]))
    else:
        # Roll set to 0: then R[:, 0] = (cy, 0, -sy).
        yaw = math.atan2(-float(R[2, 0]), float(R[0, 0]))
        roll = 0.0
    return yaw, pitch, roll


def pose_matrix(R: np.ndarray, t: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Camera-to-world (4, 4) float64 pose from a (3, 3) rotation and a camera centre (3,)."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"pose_matrix needs R (3, 3) and t (3,), got {R.shape} and {t.shape}")
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = t
    return pose


def check_pose(pose: np.ndarray, name: str = "pose") -> np.ndarray:
    """Return ``pose`` as a (4, 4) float64 array, or raise a ValueError that says what is wrong."""
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"{name} must be a camera-to-world matrix of shape (4, 4), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# The horizontal field of view every path uses when none is given (SANA-WM takes 25-120 degrees;
# the bundled model was trained at this one).
DEFAULT_FOV_DEG = 70.0


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Pixel intrinsics (3, 3) for a ``width`` x ``height`` image with horizontal field of view
    ``fov_x_deg`` degrees, square pixels and the principal point at the image centre."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0.0 < fov_x_deg < 180.0:
        raise ValueError(f"fov_x_deg must be in (0, 180) degrees, got {fov_x_deg}")
    fx = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2.0)
    return np.array([[fx, 0.0, width / 2.0], [0.0, fx, height / 2.0], [0.0, 0.0, 1.0]])


def fov_degrees(K: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Horizontal and vertical field of view (degrees) of pixel intrinsics K for an image size."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3), got {K.shape}")
    fov_x = 2.0 * math.degrees(math.atan(0.5 * width / float(K[0, 0])))
    fov_y = 2.0 * math.degrees(math.atan(0.5 * height / float(K[1, 1])))
    return fov_x, fov_y
