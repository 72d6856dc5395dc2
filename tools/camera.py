"""Camera model: calibrated cameras, projection and undistortion.

Shapes follow aniposelib, camera axis first:
``points_2d (n_cameras, n_points, 2)``, ``points_3d (n_points, 3)``.
NaN is the only marker for a missing view. Everything is vectorized numpy
over cameras and points; the lens model is OpenCV's 5-coefficient one
(``k1 k2 p1 p2 k3``) with focal lengths and principal point (the skew
entry of the intrinsics is ignored, as ``cv2.projectPoints`` does).
:class:`RigArrays` also carries each camera's share of the DLT normal
matrices that :mod:`tools.geometry` triangulates with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Fixed-point undistortion stops once the error left, estimated from the
# last two steps, is below this (normalized units, ~1e-9 px), or after the
# iteration cap. OpenCV stops after 5 iterations; iterating to convergence
# is what makes project-then-triangulate exact to rounding.
_UNDISTORT_TOLERANCE = 1e-12
_UNDISTORT_MAX_ITERATIONS = 50
# Elements per undistortion pass: 16k float64 (128 kB) keep the iteration's
# dozen temporaries in a 1-2 MB L2 cache (2.4x faster than passes of 36k).
_UNDISTORT_CHUNK = 16384

# Distinct entries of a symmetric 4x4 DLT normal matrix, in the row order of
# ``entries (10, ...)`` (see :mod:`tools.geometry`).
DISTINCT_ENTRIES = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (3, 3))


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

    def subset(self, names: list[str]) -> CameraGroup:
        """The cameras with these names, in the given order."""
        by_name = {camera.name: camera for camera in self.cameras}
        return CameraGroup(tuple(by_name[name] for name in names))

    @cached_property
    def arrays(self) -> RigArrays:
        """The parameters stacked over cameras, read-only, computed on first use.

        Per-frame callers (Stage 4 runs once per frame) then skip restacking;
        cameras are frozen, so their arrays must not be changed in place.
        """
        return _stack_cameras(self.cameras)


@dataclass(frozen=True)
class RigArrays:
    """The parameters of a group stacked over cameras, for broadcasting.

    Attributes
    ----------
    rotations : np.ndarray
        ``(n_cameras, 3, 3)`` world-to-camera rotations.
    translations : np.ndarray
        ``(n_cameras, 3)`` world-to-camera translations.
    focal : np.ndarray
        ``(n_cameras, 2)`` ``fx, fy`` in pixels.
    center : np.ndarray
        ``(n_cameras, 2)`` principal point ``cx, cy`` in pixels.
    dist : np.ndarray
        ``(n_cameras, 5)`` distortion ``k1 k2 p1 p2 k3``.
    dlt_basis : np.ndarray
        ``(n_cameras, 4, 10)``: a view at normalized ``(x, y)`` adds
        ``(x^2 + y^2, x, y, 1) @ dlt_basis`` to the DLT normal matrix entries.
    """

    rotations: np.ndarray
    translations: np.ndarray
    focal: np.ndarray
    center: np.ndarray
    dist: np.ndarray
    dlt_basis: np.ndarray


def rotation_matrix(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues vector ``(3,)`` -> rotation matrix ``(3, 3)``."""
    return _rotation_matrices(check_shape("rvec", rvec, (3,))[None])[0]


def _rotation_matrices(rvecs: np.ndarray) -> np.ndarray:
    """Rodrigues vectors ``(n, 3)`` -> rotation matrices ``(n, 3, 3)``."""
    theta = np.linalg.norm(rvecs, axis=1)
    axis = rvecs / np.where(theta < 1e-12, 1.0, theta)[:, None]  # ~0 where no rotation
    x, y, z = axis.T
    zero = np.zeros_like(x)
    cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    return cos * np.eye(3) + (1.0 - cos) * axis[:, :, None] * axis[:, None, :] + sin * cross


def rig_arrays(group: CameraGroup) -> RigArrays:
    """A group's parameters stacked over cameras (see :class:`RigArrays`); cached on the group."""
    return group.arrays


def _stack_cameras(cameras: tuple[Camera, ...]) -> RigArrays:
    """:class:`RigArrays` of ``cameras``, every array made read-only (it is shared)."""
    matrices = np.array([camera.matrix for camera in cameras], dtype=np.float64).reshape(-1, 3, 3)
    rvecs = np.array([camera.rvec for camera in cameras], dtype=np.float64).reshape(-1, 3)
    rotations = _rotation_matrices(rvecs)
    translations = np.array([camera.tvec for camera in cameras], dtype=np.float64).reshape(-1, 3)
    arrays = RigArrays(
        rotations=rotations,
        translations=translations,
        focal=matrices[:, [0, 1], [0, 1]],
        center=matrices[:, [0, 1], [2, 2]],
        dist=np.array([camera.dist for camera in cameras], dtype=np.float64).reshape(-1, 5),
        dlt_basis=_dlt_basis(np.concatenate([rotations, translations[:, :, None]], axis=2)),
    )
    for array in vars(arrays).values():
        array.setflags(write=False)
    return arrays


def _dlt_basis(extrinsics: np.ndarray) -> np.ndarray:
    """``(n_cameras, 4, 10)`` basis of :class:`RigArrays` from ``[R | t] (n_cameras, 3, 4)``.

    A view at normalized ``(x, y)`` contributes the rows ``x P2 - P0`` and
    ``y P2 - P1`` of ``A`` (``P = [R | t]``), so its part of ``A^T A`` is
    ``(x^2 + y^2) P2 P2^T - x (P2 P0^T + P0 P2^T) - y (P2 P1^T + P1 P2^T)
    + P0 P0^T + P1 P1^T``: linear in ``(x^2 + y^2, x, y, 1)``.
    """
    rows, columns = np.array(DISTINCT_ENTRIES).T
    p0, p1, p2 = extrinsics[:, 0], extrinsics[:, 1], extrinsics[:, 2]

    def symmetric(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u[:, rows] * v[:, columns] + v[:, rows] * u[:, columns]

    return np.stack([p2[:, rows] * p2[:, columns], -symmetric(p2, p0), -symmetric(p2, p1),
                     p0[:, rows] * p0[:, columns] + p1[:, rows] * p1[:, columns]], axis=1)


def camera_centres(group: CameraGroup) -> np.ndarray:
    """Camera centres in world coordinates ``(n_cameras, 3)``: ``-R^T t`` of each camera."""
    rig = group.arrays
    return -np.einsum("cji,cj->ci", rig.rotations, rig.translations)


def world_to_camera(camera: Camera, points_3d: np.ndarray) -> np.ndarray:
    """World points ``(n_points, 3)`` -> the camera's frame ``(n_points, 3)``."""
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    return points_3d @ rotation_matrix(camera.rvec).T + np.asarray(camera.tvec, dtype=np.float64)


def pixels_per_unit(group: CameraGroup, points_3d: np.ndarray) -> np.ndarray:
    """Each camera's image scale at ``points_3d (n_points, 3)``: ``(n_cameras,)`` pixels per world unit.

    The median over the points of focal length (mean of fx and fy) over the
    point's depth: how many pixels a unit length spans there, facing the
    camera (lens distortion aside). Points not finite or not in front of the
    camera are left out; NaN for a camera that has none.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    points_3d = points_3d[np.all(np.isfinite(points_3d), axis=1)]
    rig = group.arrays
    depth = np.einsum("cj,nj->cn", rig.rotations[:, 2, :], points_3d) + rig.translations[:, 2:3]
    scale = np.where(depth > 0.0, rig.focal.mean(axis=1)[:, None] / np.where(depth > 0.0, depth, 1.0),
                     np.nan)
    in_front = np.isfinite(scale).any(axis=1)
    return np.array([np.median(row[np.isfinite(row)]) if seen else np.nan
                     for row, seen in zip(scale, in_front, strict=True)])


def distort_normalized(normalized: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply the lens model to normalized coords ``(..., 2)``; ``dist (..., 5)`` broadcasts.

    OpenCV's ``u radial(r^2) + (2 p1 x y + p2 (r^2 + 2 x^2), p1 (r^2 + 2 y^2) + 2 p2 x y)``,
    written as ``u (radial + 2 (p1 y + p2 x)) + (p2, p1) r^2``.
    """
    k1, k2, p1, p2, k3 = (dist[..., index] for index in range(5))
    x, y = normalized[..., 0], normalized[..., 1]
    r2 = x * x + y * y
    scale = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)) + 2.0 * (p1 * y + p2 * x)
    return normalized * scale[..., None] + dist[..., 3:1:-1] * r2[..., None]  # (p2, p1)


def project_rig(rig: RigArrays, points_3d: np.ndarray) -> np.ndarray:
    """Project ``points_3d (..., 3)`` into every camera of ``rig`` -> ``(n_cameras, ..., 2)``."""
    flat = points_3d.reshape(-1, 3)
    with np.errstate(all="ignore"):
        in_camera = flat @ rig.rotations.transpose(0, 2, 1) + rig.translations[:, None, :]
        normalized = in_camera[..., :2] / in_camera[..., 2:3]
    pixels = (distort_normalized(normalized, rig.dist[:, None, :]) * rig.focal[:, None, :]
              + rig.center[:, None, :])
    return pixels.reshape(len(rig.dist), *points_3d.shape[:-1], 2)


def project(group: CameraGroup, points_3d: np.ndarray) -> np.ndarray:
    """Project ``points_3d (n_points, 3)`` into every camera -> ``(n_cameras, n_points, 2)``.

    NaN points project to NaN.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    return project_rig(rig_arrays(group), points_3d)


def project_camera(camera: Camera, points_3d: np.ndarray) -> np.ndarray:
    """Project ``points_3d (n_points, 3)`` into one camera -> ``(n_points, 2)``."""
    return project(CameraGroup((camera,)), points_3d)[0]


def undistort_rig(rig: RigArrays, points_2d: np.ndarray) -> np.ndarray:
    """Pixels ``(n_cameras, ..., 2)`` -> normalized coords, each camera's model on its slice.

    The fixed-point inverse of :func:`distort_normalized` used by
    ``cv2.undistortPoints``, iterated to convergence. Missing views (NaN or
    inf) come out NaN.
    """
    x, y, present = undistorted_xy(
        rig, points_2d.reshape(len(rig.dist), math.prod(points_2d.shape[1:-1]), 2))
    normalized = np.stack([x, y], axis=-1)
    normalized[~present] = np.nan
    return normalized.reshape(points_2d.shape)


def undistort_points(camera: Camera, points_2d: np.ndarray) -> np.ndarray:
    """Pixels ``(n_points, 2)`` -> normalized image coords ``(n_points, 2)``.

    Same model as ``cv2.undistortPoints(points, matrix, dist)``; NaN rows stay NaN.
    """
    points_2d = check_shape("points_2d", points_2d, (None, 2))
    return undistort_rig(rig_arrays(CameraGroup((camera,))), points_2d[None])[0]


def undistorted_xy(rig: RigArrays, points_2d: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ``(n_cameras, n_points, 2)`` -> normalized ``x, y`` and ``present``.

    All three are ``(n_cameras, n_points)``; ``x`` and ``y`` are 0 where the
    view is missing (not finite), so that they can be summed without masks.
    """
    x = (points_2d[..., 0] - rig.center[:, :1]) / rig.focal[:, :1]
    y = (points_2d[..., 1] - rig.center[:, 1:]) / rig.focal[:, 1:]
    present = np.isfinite(x) & np.isfinite(y)
    x[~present] = 0.0
    y[~present] = 0.0
    # Small inputs: all cameras in one pass, the fewest numpy calls. Large:
    # one camera and a cache-sized run of points at a time.
    cameras = [slice(None)] if x.size <= _UNDISTORT_CHUNK else [
        slice(camera, camera + 1) for camera in range(len(x))]
    for camera in cameras:
        for start in range(0, x.shape[1], _UNDISTORT_CHUNK):
            part = slice(start, start + _UNDISTORT_CHUNK)
            _undistort_in_place(x[camera, part], y[camera, part], rig.dist[camera])
    return x, y, present


def _undistort_in_place(x: np.ndarray, y: np.ndarray, dist: np.ndarray) -> None:
    """Replace distorted normalized ``x, y (n_cameras, n)`` by undistorted ones.

    OpenCV's fixed point ``u = (x0 - tangential(u)) / radial(u)`` with
    ``dist (n_cameras, 5)``; the tangential terms are written as
    ``u * 2 (p1 y + p2 x) + (p2, p1) r^2``. ``x`` and ``y`` are iterated
    stacked, so that both coordinates' steps share each numpy call (Stage 4
    undistorts a few dozen centroids per frame: the calls are the cost).
    """
    k1, k2, p1, p2, k3 = dist.T[:, :, None]
    twice_p1, twice_p2 = 2.0 * p1, 2.0 * p2
    tangent_r2 = np.stack([p2, p1])  # (2, n_cameras, 1): what r^2 adds to x and to y
    u = np.stack([x, y])
    u0 = u.copy()
    previous = 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # huge input ends as NaN
        for _ in range(_UNDISTORT_MAX_ITERATIONS):
            r2 = u[0] * u[0] + u[1] * u[1]
            inverse_radial = 1.0 / (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
            twice_tangent = twice_p1 * u[1] + twice_p2 * u[0]
            step = (u0 - u * twice_tangent - tangent_r2 * r2) * inverse_radial - u
            u += step
            # fmax skips NaN, so one broken point does not stop the others.
            size = np.abs(step)
            largest = max(np.fmax.reduce(size[0], axis=None), np.fmax.reduce(size[1], axis=None))
            # Each step shrinks by ratio = largest / previous, so what is left
            # is about largest * ratio / (1 - ratio). NaN: nothing finite left.
            if not largest > _UNDISTORT_TOLERANCE or (
                    previous > largest
                    and largest * largest <= _UNDISTORT_TOLERANCE * (previous - largest)):
                break
            previous = largest
    x[...] = u[0]
    y[...] = u[1]


def check_shape(name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> np.ndarray:
    """``array`` as float64, or ValueError naming the expected and actual shapes."""
    array = np.asarray(array, dtype=np.float64)
    matches = array.ndim == len(expected) and all(
        want is None or want == got for want, got in zip(expected, array.shape, strict=True))
    if not matches:
        wanted = "(" + ", ".join("n" if want is None else str(want) for want in expected) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    return array
