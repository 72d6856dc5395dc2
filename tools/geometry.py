"""Camera-group geometry: projection, undistortion, DLT triangulation.

The camera model (projection, undistortion) is in :mod:`tools.camera`; its
public names are importable from here too. Shapes follow aniposelib, camera
axis first: ``points_2d (n_cameras, n_points, 2)``, ``points_3d (n_points, 3)``.
NaN is the only marker for a missing view.

DLT normal matrices ``A^T A`` (symmetric 4x4) are handled as their 10
distinct entries stacked on the first axis, ``entries (10, ...)``, one
contiguous row per entry: every solve is then elementwise over points.
"""

from __future__ import annotations

import math

import numpy as np

from tools.camera import (
    Camera,
    CameraGroup,
    RigArrays,
    camera_centres,
    check_shape,
    project,
    project_rig,
    rig_arrays,
    undistort_rig,
    undistorted_xy,
)

# Public names, with those of the camera model (tools.camera) that callers import from here.
__all__ = [
    "Camera",
    "CameraGroup",
    "RigArrays",
    "dlt_points",
    "nanmean_cameras",
    "normal_entries",
    "project",
    "project_rig",
    "reprojection_error",
    "rig_arrays",
    "solve_inhomogeneous",
    "triangulate",
    "triangulate_normalized",
    "undistort_rig",
    "view_entries",
]

# Newton's method on the DLT secular equation converges quadratically from
# the w = 1 start: 3 steps reach rounding error at pixel-level noise, and the
# last step's size shows it (see dlt_points).
_NEWTON_STEPS = 3
_NEWTON_TOLERANCE = 1e-9
# Below this many points a batched eigh costs less than the ~100 numpy calls
# of the Newton iteration (measured crossover ~50).
_EIGH_BELOW = 48
# The entry of ``entries`` (row order :data:`~tools.camera.DISTINCT_ENTRIES`)
# that each of the 16 elements of the 4x4 matrix reads.
_ENTRY_OF_ELEMENT = np.array([[0, 3, 4, 6], [3, 1, 5, 7], [4, 5, 2, 8], [6, 7, 8, 9]])


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
    points_2d = check_shape("points_2d", points_2d, (len(group), None, 2))
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
    points_2d = check_shape("points_2d", points_2d, (len(group), None, 2))
    points_3d = check_shape("points_3d", points_3d, (points_2d.shape[1], 3))
    errors = np.linalg.norm(project(group, points_3d) - points_2d, axis=2)
    return nanmean_cameras(errors) if mean else errors


def nanmean_cameras(errors: np.ndarray) -> np.ndarray:
    """Mean over the camera axis of ``(n_cameras, ...)`` ignoring NaN; NaN where all are NaN."""
    present = np.isfinite(errors)
    count = present.sum(axis=0)
    total = np.where(present, errors, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def rays_on_plane(group: CameraGroup, points_2d: np.ndarray, plane_point: np.ndarray,
                  plane_normal: np.ndarray, min_angle_deg: float) -> np.ndarray:
    """Where each point's single view ray meets a plane: ``points_2d (n_cameras, n_points, 2)`` -> ``(n_points, 3)``.

    For points labelled in exactly one camera: the ray from that camera's
    centre through the undistorted pixel, cut by the plane through
    ``plane_point (3,)`` with unit normal ``plane_normal (3,)``. NaN where a
    point has no view or more than one (triangulate those), where the ray
    meets the plane at less than ``min_angle_deg`` (a grazing ray puts a
    small error in the plane's position far along it), or behind the camera.
    """
    points_2d = check_shape("points_2d", points_2d, (len(group), None, 2))
    rig = rig_arrays(group)
    normalized = undistort_rig(rig, points_2d)
    seen = np.isfinite(normalized).all(axis=2)
    single = seen.sum(axis=0) == 1
    camera = np.argmax(seen, axis=0)
    rows = np.arange(points_2d.shape[1])
    x, y = normalized[camera, rows, 0], normalized[camera, rows, 1]
    direction = np.einsum("nji,nj->ni", rig.rotations[camera],
                          np.stack([x, y, np.ones_like(x)], axis=1))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    centre = camera_centres(group)[camera]
    with np.errstate(invalid="ignore", divide="ignore"):
        facing = direction @ plane_normal
        distance = ((plane_point - centre) @ plane_normal) / facing
        steep = np.abs(facing) >= np.sin(np.radians(min_angle_deg))
        points_3d = centre + distance[:, None] * direction
    return np.where((single & steep & (distance > 0))[:, None], points_3d, np.nan)
