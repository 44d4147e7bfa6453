"""Box and camera geometry shared by the nuScenes reader and the synthetic scenes.

``lidar2img = K4x4 @ lidar2cam`` with ``K4x4`` the 3x3 intrinsics padded into eye(4): it maps
homogeneous LiDAR points to (u d, v d, d, 1). Boxes are (x, y, z of the box *centre*, l, w, h, yaw)
in the LiDAR frame, ``l`` along the heading.
"""

from __future__ import annotations

import numpy as np


def lidar_to_image_matrix(intrinsic: np.ndarray, lidar2cam: np.ndarray) -> np.ndarray:
    """4 x 4 ``K4x4 @ lidar2cam`` (maps homogeneous LiDAR points to (u*d, v*d, d, 1))."""
    padded = np.eye(4)
    padded[:3, :3] = np.asarray(intrinsic, dtype=np.float64)
    return padded @ np.asarray(lidar2cam, dtype=np.float64)


def resized_intrinsic(intrinsic: np.ndarray, *, scale_x: float, scale_y: float) -> np.ndarray:
    """The 3 x 3 intrinsics of an image resized by (scale_x, scale_y): pixel (u, v) -> (u sx, v sy),
    mmdetection3d's convention (no half-pixel shift)."""
    scale = np.diag([scale_x, scale_y, 1.0])
    return scale @ np.asarray(intrinsic, dtype=np.float64)


def project_to_image(points: np.ndarray, lidar2img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N x 2) and depths (N) of LiDAR-frame points (N x 3)."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ lidar2img.T
    depth = homogeneous[:, 2]
    return homogeneous[:, :2] / np.maximum(depth[:, None], 1e-6), depth


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """The 8 corners (N x 8 x 3) of (x, y, z_centre, l, w, h, yaw) boxes; l along the heading."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64) / 2
    local = signs[None] * boxes[:, None, 3:6]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]
