"""Camera-group geometry: projection, undistortion, DLT triangulation.

Shapes follow aniposelib, camera axis first:
``points_2d (n_cameras, n_points, 2)``, ``points_3d (n_points, 3)``.
NaN is the only marker for a missing view. Everything is vectorized numpy
over cameras and points; the lens model is OpenCV's 5-coefficient one
(``k1 k2 p1 p2 k3``) with focal lengths and principal point (the skew
entry of the intrinsics is ignored, as ``cv2.projectPoints`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed-point undistortion stops once no coordinate moves by more than this
# (normalized units, ~1e-8 px), or after the iteration cap. OpenCV stops
# after 5 iterations; iterating to convergence is what makes
# project-then-triangulate exact to rounding.
_UNDISTORT_TOLERANCE = 1e-11
_UNDISTORT_MAX_ITERATIONS = 50
# Rayleigh quotient iteration converges cubically from the w = 1 start:
# 3 steps reach rounding error at pixel-level noise (see solve_homogeneous).
_RAYLEIGH_ITERATIONS = 3
_RAYLEIGH_TOLERANCE = 1e-9


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
    """

    rotations: np.ndarray
    translations: np.ndarray
    focal: np.ndarray
    center: np.ndarray
    dist: np.ndarray

    @property
    def extrinsics(self) -> np.ndarray:
        """``(n_cameras, 3, 4)`` matrices ``[R | t]``."""
        return np.concatenate([self.rotations, self.translations[:, :, None]], axis=2)

    def take(self, cameras: np.ndarray) -> RigArrays:
        """Parameters indexed by an integer array of camera indices (any shape)."""
        return RigArrays(*(array[cameras] for array in (
            self.rotations, self.translations, self.focal, self.center, self.dist)))


def rotation_matrix(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues vector ``(3,)`` -> rotation matrix ``(3, 3)``."""
    rvec = _check_shape("rvec", rvec, (3,))
    theta = float(np.linalg.norm(rvec))
    if theta < 1e-12:
        return np.eye(3)
    axis = rvec / theta
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return (np.cos(theta) * np.eye(3) + (1.0 - np.cos(theta)) * np.outer(axis, axis)
            + np.sin(theta) * cross)


def rig_arrays(group: CameraGroup) -> RigArrays:
    """Stack a group's parameters over cameras (see :class:`RigArrays`)."""
    cameras = group.cameras
    matrices = np.array([camera.matrix for camera in cameras], dtype=np.float64).reshape(-1, 3, 3)
    return RigArrays(
        rotations=np.array([rotation_matrix(camera.rvec) for camera in cameras]).reshape(-1, 3, 3),
        translations=np.array([camera.tvec for camera in cameras], dtype=np.float64).reshape(-1, 3),
        focal=matrices[:, [0, 1], [0, 1]],
        center=matrices[:, [0, 1], [2, 2]],
        dist=np.array([camera.dist for camera in cameras], dtype=np.float64).reshape(-1, 5),
    )


def world_to_camera(camera: Camera, points_3d: np.ndarray) -> np.ndarray:
    """World points ``(n_points, 3)`` -> the camera's frame ``(n_points, 3)``."""
    points_3d = _check_shape("points_3d", points_3d, (None, 3))
    return points_3d @ rotation_matrix(camera.rvec).T + np.asarray(camera.tvec, dtype=np.float64)


def distort_normalized(normalized: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply the lens model to normalized coords ``(..., 2)``; ``dist (..., 5)`` broadcasts."""
    k1, k2, p1, p2, k3 = np.moveaxis(dist, -1, 0)
    x, y = normalized[..., 0], normalized[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy = x * y
    return np.stack([x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x),
                     y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy], axis=-1)


def project_with(rig: RigArrays, points_3d: np.ndarray) -> np.ndarray:
    """Project with parameters that broadcast against ``points_3d (..., 3)`` -> ``(..., 2)``.

    ``rig`` arrays carry leading axes that broadcast with the point axes
    (for example ``rig_arrays(group)`` expanded to ``(n_cameras, 1, ...)``).
    """
    in_camera = _matvec(rig.rotations, points_3d) + rig.translations
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = in_camera[..., :2] / in_camera[..., 2:3]
    return distort_normalized(normalized, rig.dist) * rig.focal + rig.center


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


def undistort_with(rig: RigArrays, points_2d: np.ndarray) -> np.ndarray:
    """Pixels ``(..., 2)`` -> normalized coords ``(..., 2)``; ``rig`` arrays broadcast.

    The fixed-point inverse of :func:`distort_normalized` used by
    ``cv2.undistortPoints``, iterated to convergence. NaN stays NaN.
    """
    k1, k2, p1, p2, k3 = np.moveaxis(rig.dist, -1, 0)
    start = (points_2d - rig.center) / rig.focal
    x0, y0 = start[..., 0], start[..., 1]
    x, y = x0.copy(), y0.copy()
    with np.errstate(invalid="ignore", over="ignore"):  # inf input ends as NaN
        for _ in range(_UNDISTORT_MAX_ITERATIONS):
            r2 = x * x + y * y
            inverse_radial = 1.0 / (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
            xy = x * y
            new_x = (x0 - 2.0 * p1 * xy - p2 * (r2 + 2.0 * x * x)) * inverse_radial
            new_y = (y0 - p1 * (r2 + 2.0 * y * y) - 2.0 * p2 * xy) * inverse_radial
            step = np.maximum(np.abs(new_x - x), np.abs(new_y - y))
            x, y = new_x, new_y
            if not np.any(step > _UNDISTORT_TOLERANCE):
                break
    return np.stack([x, y], axis=-1)


def undistort_points(camera: Camera, points_2d: np.ndarray) -> np.ndarray:
    """Pixels ``(n_points, 2)`` -> normalized image coords ``(n_points, 2)``.

    Same model as ``cv2.undistortPoints(points, matrix, dist)``; NaN rows stay NaN.
    """
    points_2d = _check_shape("points_2d", points_2d, (None, 2))
    return undistort_with(rig_arrays(CameraGroup((camera,))).take(np.array(0)), points_2d)


def undistort_rig(rig: RigArrays, points_2d: np.ndarray) -> np.ndarray:
    """Pixels ``(n_cameras, ..., 2)`` -> normalized coords, each camera's model on its slice."""
    extra = (None,) * (points_2d.ndim - 2)
    index = (slice(None), *extra)
    expanded = RigArrays(rig.rotations, rig.translations, rig.focal[index], rig.center[index],
                         rig.dist[index])
    return undistort_with(expanded, points_2d)


def block_basis(extrinsics: np.ndarray) -> np.ndarray:
    """Per-camera basis ``(..., 4, 16)`` of the DLT normal-equation blocks.

    An observation at normalized ``(x, y)`` contributes the rows
    ``x P2 - P0`` and ``y P2 - P1`` of ``A`` (``P = [R | t]``), so its block
    ``A^T A = (x^2 + y^2) P2 P2^T - x (P2 P0^T + P0 P2^T) - y (P2 P1^T + P1 P2^T)
    + P0 P0^T + P1 P1^T`` is ``block_coefficients(x, y) @ basis``: blocks of
    any camera subset are one matrix product away.
    """
    p0, p1, p2 = extrinsics[..., 0, :], extrinsics[..., 1, :], extrinsics[..., 2, :]

    def outer(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u[..., :, None] * v[..., None, :]

    terms = (outer(p2, p2), -(outer(p2, p0) + outer(p0, p2)), -(outer(p2, p1) + outer(p1, p2)),
             outer(p0, p0) + outer(p1, p1))
    return np.stack([term.reshape(*term.shape[:-2], 16) for term in terms], axis=-2)


def block_coefficients(normalized: np.ndarray) -> np.ndarray:
    """Coefficients ``(..., 4)`` of the basis for normalized coords ``(..., 2)``; 0 if missing."""
    x, y = normalized[..., 0], normalized[..., 1]
    coefficients = np.stack([x * x + y * y, x, y, np.ones_like(x)], axis=-1)
    present = np.isfinite(coefficients).all(axis=-1, keepdims=True)
    return np.where(present, coefficients, 0.0)


def summed_blocks(rig: RigArrays, normalized: np.ndarray) -> np.ndarray:
    """DLT blocks summed over the cameras of ``normalized (n_cameras, ..., 2)`` -> ``(..., 4, 4)``.

    Missing views (NaN) contribute nothing.
    """
    n_cameras = normalized.shape[0]
    coefficients = np.moveaxis(block_coefficients(normalized), 0, -2)
    flat = coefficients.reshape(*coefficients.shape[:-2], n_cameras * 4)
    basis = block_basis(rig.extrinsics).reshape(n_cameras * 4, 16)
    return (flat @ basis).reshape(*flat.shape[:-1], 4, 4)


def solve_inhomogeneous(blocks: np.ndarray) -> np.ndarray:
    """Least-squares point with ``w = 1`` from blocks ``(..., 4, 4)`` -> ``(..., 3)``.

    A symmetric 3x3 solve, elementwise over the stack. Singular
    systems (fewer than 2 distinct views) give inf or NaN.
    """
    return -_solve_symmetric(blocks[..., :3, :3], blocks[..., :3, 3])[0]


def solve_homogeneous(blocks: np.ndarray) -> np.ndarray:
    """The DLT point from blocks ``(..., 4, 4)`` -> ``(..., 3)``.

    The eigenvector of the smallest eigenvalue of ``A^T A``, which is
    aniposelib's smallest right singular vector of ``A``. Found by Rayleigh
    quotient iteration from the ``w = 1`` least-squares point, each step a
    3x3 Schur-complement solve (elementwise over the stack, about 10x faster
    than a batched ``eigh``); the few stacks that have not converged after
    :data:`_RAYLEIGH_ITERATIONS` steps (ill-posed, very noisy) go to ``eigh``.
    """
    corner, column, last = blocks[..., :3, :3], blocks[..., :3, 3], blocks[..., 3, 3]
    point = solve_inhomogeneous(blocks)
    with np.errstate(all="ignore"):
        for _ in range(_RAYLEIGH_ITERATIONS):
            shift = (_dot(point, _matvec(corner, point)) + 2.0 * _dot(column, point) + last) / (
                1.0 + _dot(point, point))
            previous, point = point, _shifted_solve(corner, column, last, shift, point)
        step = np.abs(point - previous).max(axis=-1)
        converged = step <= _RAYLEIGH_TOLERANCE * (1.0 + np.abs(point).max(axis=-1))
    retry = ~converged & np.isfinite(last)
    if retry.any():
        _, vectors = np.linalg.eigh(blocks[retry])
        with np.errstate(divide="ignore", invalid="ignore"):
            point[retry] = vectors[:, :3, 0] / vectors[:, 3:4, 0]
    return point


def _shifted_solve(corner: np.ndarray, column: np.ndarray, last: np.ndarray, shift: np.ndarray,
                   point: np.ndarray) -> np.ndarray:
    """Solve ``(B - shift I) u = (point, 1)`` and return ``u[:3] / u[3]``.

    With ``B = [[corner, column], [column^T, last]]``: eliminating the 3x3
    block leaves the Schur complement, which tends to 0 as the shift nears
    an eigenvalue; this form stays finite there.
    """
    start, solved = _solve_symmetric(corner - shift[..., None, None] * np.eye(3), column, point)
    start = -start
    schur = last - shift + _dot(column, start)
    return start + solved * (schur / (1.0 - _dot(column, solved)))[..., None]


# Small-vector products written out: numpy reductions over a length-3
# axis cost several times more than three multiply-adds.
def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1] + u[..., 2] * v[..., 2]


def _matvec(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return (matrices[..., 0] * vectors[..., None, 0] + matrices[..., 1] * vectors[..., None, 1]
            + matrices[..., 2] * vectors[..., None, 2])


def _solve_symmetric(matrices: np.ndarray, *vectors: np.ndarray) -> list[np.ndarray]:
    """Solve symmetric ``(..., 3, 3)`` systems for each ``(..., 3)`` right-hand side.

    Cramer's rule written out over the six distinct entries: elementwise
    over the stack and several times faster than ``np.linalg.solve`` on
    3x3 stacks. Singular systems give inf or NaN.
    """
    a, b, c = matrices[..., 0, 0], matrices[..., 1, 1], matrices[..., 2, 2]
    d, e, f = matrices[..., 0, 1], matrices[..., 0, 2], matrices[..., 1, 2]
    with np.errstate(all="ignore"):
        c00, c11, c22 = b * c - f * f, a * c - e * e, a * b - d * d
        c01, c02, c12 = e * f - d * c, d * f - b * e, d * e - a * f
        determinant = a * c00 + d * c01 + e * c02
        solutions = []
        for vector in vectors:
            x, y, z = vector[..., 0], vector[..., 1], vector[..., 2]
            solutions.append(np.stack([c00 * x + c01 * y + c02 * z, c01 * x + c11 * y + c12 * z,
                                       c02 * x + c12 * y + c22 * z], axis=-1)
                             / determinant[..., None])
    return solutions


def triangulate_normalized(rig: RigArrays, normalized: np.ndarray) -> np.ndarray:
    """DLT from normalized coords ``(n_cameras, n_points, 2)`` -> ``(n_points, 3)``.

    Views with NaN are dropped; points seen by fewer than 2 views are NaN.
    """
    blocks = summed_blocks(rig, normalized)
    seen_twice = np.isfinite(normalized).all(axis=2).sum(axis=0) >= 2
    points_3d = np.full((normalized.shape[1], 3), np.nan)
    points_3d[seen_twice] = solve_homogeneous(blocks[seen_twice])
    return points_3d


def triangulate(group: CameraGroup, points_2d: np.ndarray) -> np.ndarray:
    """Triangulate ``points_2d (n_cameras, n_points, 2)`` pixels -> ``(n_points, 3)``.

    Linear DLT on undistorted normalized coordinates, as aniposelib's
    ``CameraGroup.triangulate``. Views with NaN are dropped; points seen by
    fewer than 2 views are NaN.
    """
    points_2d = _check_shape("points_2d", points_2d, (len(group), None, 2))
    rig = rig_arrays(group)
    return triangulate_normalized(rig, undistort_rig(rig, points_2d))


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
