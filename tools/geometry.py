"""Camera-group geometry: projection, undistortion, DLT triangulation.

Shapes follow aniposelib, camera axis first:
``points_2d (n_cameras, n_points, 2)``, ``points_3d (n_points, 3)``.
NaN is the only marker for a missing view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, eq=False)
class Camera:
    """One calibrated view (aniposelib's ``Camera``).

    Attributes
    ----------
    name : str
        Camera name, matched to streams by name.
    size : tuple[int, int]
        Image ``(width, height)`` in pixels.
    matrix : np.ndarray
        ``(3, 3)`` intrinsics.
    dist : np.ndarray
        ``(5,)`` OpenCV distortion ``k1 k2 p1 p2 k3``.
    rvec : np.ndarray
        ``(3,)`` Rodrigues rotation, world to camera.
    tvec : np.ndarray
        ``(3,)`` translation, world to camera, calibration units.
    """

    name: str
    size: tuple[int, int]
    matrix: np.ndarray
    dist: np.ndarray
    rvec: np.ndarray
    tvec: np.ndarray


@dataclass(frozen=True, eq=False)
class CameraGroup:
    """An ordered tuple of cameras; arrays are stacked over it, camera axis first."""

    cameras: tuple[Camera, ...]

    @property
    def names(self) -> list[str]:
        return [camera.name for camera in self.cameras]

    def __len__(self) -> int:
        return len(self.cameras)

    def subset(self, names: list[str]) -> "CameraGroup":
        """The cameras with these names, in the given order."""
        by_name = {camera.name: camera for camera in self.cameras}
        return CameraGroup(tuple(by_name[name] for name in names))


def project(group: CameraGroup, points_3d: np.ndarray) -> np.ndarray:
    """Project ``points_3d (n_points, 3)`` into every camera -> ``(n_cameras, n_points, 2)``.

    NaN points project to NaN.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    if points_3d.ndim != 2 or points_3d.shape[1] != 3:
        raise ValueError(f"points_3d must have shape (n_points, 3), got {points_3d.shape}")
    out = np.full((len(group), points_3d.shape[0], 2), np.nan)
    valid = np.all(np.isfinite(points_3d), axis=1)
    if not valid.any():
        return out
    for index, camera in enumerate(group.cameras):
        projected, _ = cv2.projectPoints(
            points_3d[valid].reshape(-1, 1, 3), camera.rvec, camera.tvec, camera.matrix, camera.dist
        )
        out[index, valid] = projected.reshape(-1, 2)
    return out
