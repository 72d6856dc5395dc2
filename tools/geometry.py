"""Camera-group geometry: projection, undistortion, DLT triangulation.

Shapes follow aniposelib, camera axis first:
``points_2d (n_cameras, n_points, 2)``, ``points_3d (n_points, 3)``.
NaN is the only marker for a missing view. Everything is vectorized numpy
over cameras and points; the lens model is OpenCV's 5-coefficient one
(``k1 k2 p1 p2 k3``) with focal lengths and principal point (the skew
entry of the intrinsics is ignored, as ``cv2.projectPoints`` does).

DLT normal matrices ``A^T A`` (symmetric 4x4) are handled as their 10
distinct entries stacked on the first axis, ``entries (10, ...)``, one
contiguous row per entry: every solve is then elementwise over points.
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
# Newton's method on the DLT secular equation converges quadratically from
# the w = 1 start: 3 steps reach rounding error at pixel-level noise, and the
# last step's size shows it (see dlt_points).
_NEWTON_STEPS = 3
_NEWTON_TOLERANCE = 1e-9
# Below this many points a batched eigh costs less than the ~100 numpy calls
# of the Newton iteration (measured crossover ~50).
_EIGH_BELOW = 48
# Distinct entries of a symmetric 4x4, in the row order of ``entries``, and
# the entry each of the 16 elements reads.
DISTINCT_ENTRIES = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (3, 3))
_ENTRY_OF_ELEMENT = np.array([[0, 3, 4, 6], [3, 1, 5, 7], [4, 5, 2, 8], [6, 7, 8, 9]])


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
    return _rotation_matrices(_check_shape("rvec", rvec, (3,))[None])[0]


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


def world_to_camera(camera: Camera, points_3d: np.ndarray) -> np.ndarray:
    """World points ``(n_points, 3)`` -> the camera's frame ``(n_points, 3)``."""
    points_3d = _check_shape("points_3d", points_3d, (None, 3))
    return points_3d @ rotation_matrix(camera.rvec).T + np.asarray(camera.tvec, dtype=np.float64)


def distort_normalized(normalized: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply the lens model to normalized coords ``(..., 2)``; ``dist (..., 5)`` broadcasts.

    OpenCV's ``u radial(r^2) + (2 p1 x y + p2 (r^2 + 2 x^2), p1 (r^2 + 2 y^2) + 2 p2 x y)``,
    written as ``u (radial + 2 (p1 y + p2 x)) + (p2, p1) r^2``.
    """
    k1, k2, p1, p2, k3 = (dist[..., index] for index in range(5))
    x, y = normalized[..., 0], normalized[..., 1]
    r2 = x * x + y * y
    scale = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)) + 2.0 * (p1 * y + p2 * x)
    return normalized * scale[..., None] + dist[..., [3, 2]] * r2[..., None]


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
    points_3d = _check_shape("points_3d", points_3d, (None, 3))
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
    points_2d = _check_shape("points_2d", points_2d, (None, 2))
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
    ``u * 2 (p1 y + p2 x) + (p2, p1) r^2``.
    """
    k1, k2, p1, p2, k3 = dist.T[:, :, None]
    x0, y0 = x.copy(), y.copy()
    previous = 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # huge input ends as NaN
        for _ in range(_UNDISTORT_MAX_ITERATIONS):
            r2 = x * x + y * y
            inverse_radial = 1.0 / (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
            twice_tangent = (2.0 * p1) * y + (2.0 * p2) * x
            step_x = (x0 - x * twice_tangent - p2 * r2) * inverse_radial - x
            step_y = (y0 - y * twice_tangent - p1 * r2) * inverse_radial - y
            x += step_x
            y += step_y
            # fmax/fmin skip NaN, so one broken point does not stop the others.
            largest = max(np.fmax.reduce(step_x, axis=None), -np.fmin.reduce(step_x, axis=None),
                          np.fmax.reduce(step_y, axis=None), -np.fmin.reduce(step_y, axis=None))
            # Each step shrinks by ratio = largest / previous, so what is left
            # is about largest * ratio / (1 - ratio). NaN: nothing finite left.
            if not largest > _UNDISTORT_TOLERANCE or (
                    previous > largest
                    and largest * largest <= _UNDISTORT_TOLERANCE * (previous - largest)):
                break
            previous = largest


def view_entries(dlt_basis: np.ndarray, normalized: np.ndarray) -> np.ndarray:
    """Each view's share of its DLT normal matrix -> ``entries (10, n_views, ...)``.

    ``normalized (n_views, ..., 2)`` with the basis of each view's camera,
    ``dlt_basis (n_views, 4, 10)`` (:class:`RigArrays`). Missing views (NaN)
    give zeros; sums over any set of views are that set's normal matrices.
    """
    n_views = normalized.shape[0]
    flat = normalized.reshape(n_views, math.prod(normalized.shape[1:-1]), 2)
    present = np.isfinite(flat).all(axis=2)
    x, y = np.where(present, flat[..., 0], 0.0), np.where(present, flat[..., 1], 0.0)
    entries = dlt_basis.transpose(0, 2, 1) @ _coefficients(x, y, present)
    return entries.transpose(1, 0, 2).reshape(10, *normalized.shape[:-1])


def normal_entries(rig: RigArrays, x: np.ndarray, y: np.ndarray,
                   present: np.ndarray) -> np.ndarray:
    """DLT normal matrices of ``x, y (n_cameras, n_points)`` summed over cameras -> ``(10, n_points)``.

    ``x, y`` as :func:`undistorted_xy` gives them: 0 where not ``present``.
    """
    n_cameras, n_points = x.shape
    coefficients = _coefficients(x, y, present).reshape(4 * n_cameras, n_points)
    return rig.dlt_basis.reshape(4 * n_cameras, 10).T @ coefficients


def _coefficients(x: np.ndarray, y: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(n_cameras, 4, n)`` multipliers ``(x^2 + y^2, x, y, 1)`` of the basis, 0 where missing."""
    return np.stack([x * x + y * y, x, y, present], axis=1)


def solve_inhomogeneous(entries: np.ndarray) -> np.ndarray:
    """Least-squares point with ``w = 1`` of normal matrices ``entries (10, ...)`` -> ``(..., 3)``.

    A symmetric 3x3 solve, elementwise. Singular systems (fewer than 2
    distinct views) give inf or NaN.
    """
    m00, m11, m22, m01, m02, m12, b0, b1, b2, _ = entries
    point, _ = _solve_symmetric(m00, m11, m22, m01, m02, m12, (-b0, -b1, -b2))
    return np.stack(point, axis=-1)


def dlt_points(entries: np.ndarray) -> np.ndarray:
    """The DLT point of each normal matrix ``entries (10, n_points)`` -> ``(n_points, 3)``.

    The eigenvector ``(X, 1)`` of the smallest eigenvalue ``s`` of
    ``B = [[M, b], [b^T, c]]`` (aniposelib's smallest right singular vector
    of ``A``). ``X(s) = -(M - s I)^-1 b`` and ``s`` is the smallest root of
    ``g(s) = c - s + b . X(s)``, with ``g'(s) = -(1 + |X(s)|^2)``: Newton's
    method from ``s = 0`` (the ``w = 1`` least-squares point) converges
    quadratically, g being concave below the smallest eigenvalue of ``M``.
    Each step is one 3x3 solve, elementwise over the points. Points not
    converged after :data:`_NEWTON_STEPS`, or whose ``M - s I`` is not
    positive definite (a root that is not the smallest), go to ``eigh``, as
    do small batches. NaN entries give a NaN point.
    """
    if entries.shape[1] < _EIGH_BELOW:
        return _eigh_points(entries)
    m00, m11, m22, m01, m02, m12, b0, b1, b2, c = entries
    rhs = (-b0, -b1, -b2)
    shift = np.zeros_like(c)
    point, determinant = _solve_symmetric(m00, m11, m22, m01, m02, m12, rhs)
    with np.errstate(all="ignore"):
        for _ in range(_NEWTON_STEPS):
            x, y, z = point
            shift = shift + (c - shift + b0 * x + b1 * y + b2 * z) / (1.0 + x * x + y * y + z * z)
            previous = point
            point, determinant = _solve_symmetric(m00 - shift, m11 - shift, m22 - shift,
                                                  m01, m02, m12, rhs)
        step, size = 0.0, 1.0
        for new, old in zip(point, previous, strict=True):
            step, size = np.maximum(step, np.abs(new - old)), np.maximum(size, np.abs(new))
        positive_definite = (m00 > shift) & ((m00 - shift) * (m11 - shift) > m01 * m01) & (
            determinant > 0)
        converged = (step <= _NEWTON_TOLERANCE * size) & positive_definite
    points_3d = np.stack(point, axis=-1)
    retry = ~converged & np.isfinite(c)
    if retry.any():
        points_3d[retry] = _eigh_points(entries[:, retry])
    return points_3d


def _eigh_points(entries: np.ndarray) -> np.ndarray:
    """:func:`dlt_points` by a batched ``eigh`` of the 4x4 matrices."""
    points_3d = np.full((entries.shape[1], 3), np.nan)
    finite = np.isfinite(entries).all(axis=0)
    if finite.any():
        _, vectors = np.linalg.eigh(np.moveaxis(entries[:, finite][_ENTRY_OF_ELEMENT], -1, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            points_3d[finite] = vectors[:, :3, 0] / vectors[:, 3:4, 0]
    return points_3d


def _solve_symmetric(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray,
                     f: np.ndarray, rhs: tuple[np.ndarray, ...]
                     ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Solve ``[[a, d, e], [d, b, f], [e, f, c]] u = rhs`` elementwise.

    Cramer's rule written out, several times faster than
    ``np.linalg.solve`` on 3x3 stacks. Returns the components of ``u`` and
    the determinant; singular systems give inf or NaN.
    """
    with np.errstate(all="ignore"):
        c00, c11, c22 = b * c - f * f, a * c - e * e, a * b - d * d
        c01, c02, c12 = e * f - d * c, d * f - b * e, d * e - a * f
        determinant = a * c00 + d * c01 + e * c02
        inverse = 1.0 / determinant
        x, y, z = rhs
        return ((c00 * x + c01 * y + c02 * z) * inverse, (c01 * x + c11 * y + c12 * z) * inverse,
                (c02 * x + c12 * y + c22 * z) * inverse), determinant


def triangulate_normalized(rig: RigArrays, normalized: np.ndarray) -> np.ndarray:
    """DLT from normalized coords ``(n_cameras, n_points, 2)`` -> ``(n_points, 3)``.

    Views with NaN are dropped; points seen by fewer than 2 views are NaN.
    """
    present = np.isfinite(normalized).all(axis=2)
    x = np.where(present, normalized[..., 0], 0.0)
    y = np.where(present, normalized[..., 1], 0.0)
    return _triangulate_xy(rig, x, y, present)


def triangulate(group: CameraGroup, points_2d: np.ndarray) -> np.ndarray:
    """Triangulate ``points_2d (n_cameras, n_points, 2)`` pixels -> ``(n_points, 3)``.

    Linear DLT on undistorted normalized coordinates, as aniposelib's
    ``CameraGroup.triangulate``. Views with NaN are dropped; points seen by
    fewer than 2 views are NaN.
    """
    points_2d = _check_shape("points_2d", points_2d, (len(group), None, 2))
    rig = rig_arrays(group)
    return _triangulate_xy(rig, *undistorted_xy(rig, points_2d))


def _triangulate_xy(rig: RigArrays, x: np.ndarray, y: np.ndarray,
                    present: np.ndarray) -> np.ndarray:
    """:func:`triangulate` from :func:`undistorted_xy`'s output."""
    entries = normal_entries(rig, x, y, present)
    entries[:, present.sum(axis=0) < 2] = np.nan  # cheaper than gathering the others
    return dlt_points(entries)


def reprojection_error(group: CameraGroup, points_3d: np.ndarray, points_2d: np.ndarray,
                       mean: bool = False) -> np.ndarray:
    """Euclidean pixel distance between projected ``points_3d`` and ``points_2d``.

    Parameters
    ----------
    points_3d : np.ndarray
        ``(n_points, 3)``.
    points_2d : np.ndarray
        ``(n_cameras, n_points, 2)``; NaN marks a missing view.
    mean : bool
        Average over the views present.

    Returns
    -------
    np.ndarray
        ``(n_cameras, n_points)`` NaN where the view or the point is missing;
        with ``mean=True`` ``(n_points,)``, NaN where no view is present.
    """
    points_2d = _check_shape("points_2d", points_2d, (len(group), None, 2))
    points_3d = _check_shape("points_3d", points_3d, (points_2d.shape[1], 3))
    errors = np.linalg.norm(project(group, points_3d) - points_2d, axis=2)
    return nanmean_cameras(errors) if mean else errors


def nanmean_cameras(errors: np.ndarray) -> np.ndarray:
    """Mean over the camera axis of ``(n_cameras, ...)`` ignoring NaN; NaN where all are NaN."""
    present = np.isfinite(errors)
    count = present.sum(axis=0)
    total = np.where(present, errors, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _check_shape(name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> np.ndarray:
    """``array`` as float64, or ValueError naming the expected and actual shapes."""
    array = np.asarray(array, dtype=np.float64)
    matches = array.ndim == len(expected) and all(
        want is None or want == got for want, got in zip(expected, array.shape, strict=True))
    if not matches:
        wanted = "(" + ", ".join("n" if want is None else str(want) for want in expected) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {array.shape}")
    return array
