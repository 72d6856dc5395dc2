"""tools/geometry.py against OpenCV and aniposelib on random ring rigs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from aniposelib import cameras as anipose

from tools.camera import DISTINCT_ENTRIES, Camera, CameraGroup, project, undistort_points
from tools.geometry import dlt_points, rays_on_plane, reprojection_error, triangulate

IMAGE_SIZE = (1024, 700)


def make_rig(rng: np.random.Generator, n_cameras: int = 6, distance_mm: float = 500.0
             ) -> CameraGroup:
    """Cameras on a ring ``distance_mm`` from the origin, 150 mm up, looking at it.

    Intrinsics for 1024x700 images with jittered focal length and principal
    point and small random distortion.
    """
    cameras = []
    for index in range(n_cameras):
        angle = 2 * np.pi * index / n_cameras + rng.uniform(-0.2, 0.2)
        center = np.array([distance_mm * np.cos(angle), distance_mm * np.sin(angle), 150.0])
        forward = -center / np.linalg.norm(center)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(forward, right), forward])
        matrix = np.array([[rng.uniform(1000, 1200), 0, 512 + rng.normal(0, 5)],
                           [0, rng.uniform(1000, 1200), 350 + rng.normal(0, 5)], [0, 0, 1]])
        dist = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1), rng.uniform(-2e-3, 2e-3),
                         rng.uniform(-2e-3, 2e-3), rng.uniform(-0.05, 0.05)])
        rvec = cv2.Rodrigues(rotation)[0].ravel()
        cameras.append(Camera(f"cam{index}", IMAGE_SIZE, matrix, dist, rvec, -rotation @ center))
    return CameraGroup(tuple(cameras))


def to_aniposelib(group: CameraGroup) -> anipose.CameraGroup:
    return anipose.CameraGroup([
        anipose.Camera(name=camera.name, size=camera.size, matrix=camera.matrix,
                       dist=camera.dist, rvec=camera.rvec, tvec=camera.tvec)
        for camera in group.cameras])


def random_points(rng: np.random.Generator, n_points: int) -> np.ndarray:
    """Points in a 120 mm cube around the origin (a mouse arena's worth)."""
    return rng.uniform(-60.0, 60.0, size=(n_points, 3))


@pytest.fixture
def rig(rng: np.random.Generator) -> CameraGroup:
    return make_rig(rng)


def test_triangulate_matches_opencv_two_views(rig, rng):
    points = random_points(rng, 100)
    pixels = project(rig, points) + rng.normal(0, 1.0, size=(6, 100, 2))
    pair = [0, 3]
    normalized = [undistort_points(rig.cameras[i], pixels[i]) for i in pair]
    extrinsics = [np.hstack([cv2.Rodrigues(rig.cameras[i].rvec)[0], rig.cameras[i].tvec[:, None]])
                  for i in pair]
    homogeneous = cv2.triangulatePoints(*extrinsics, normalized[0].T, normalized[1].T)
    expected = (homogeneous[:3] / homogeneous[3]).T
    two_views = np.full_like(pixels, np.nan)
    two_views[pair] = pixels[pair]
    np.testing.assert_allclose(triangulate(rig, two_views), expected, rtol=1e-6, atol=1e-6)


def test_triangulate_matches_aniposelib_with_noise_and_missing_views(rig, rng):
    points = random_points(rng, 500)
    pixels = project(rig, points) + rng.normal(0, 1.0, size=(6, 500, 2))
    pixels[rng.random((6, 500)) < 0.3] = np.nan
    ours = triangulate(rig, pixels)
    theirs = to_aniposelib(rig).triangulate(pixels)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_project_then_triangulate_recovers_points(rig, rng):
    points = random_points(rng, 1000)
    pixels = project(rig, points)
    hidden = rng.random((6, 1000)) < 0.5
    hidden[:2] = False  # every point keeps at least two views
    pixels[hidden] = np.nan
    np.testing.assert_allclose(triangulate(rig, pixels), points, atol=1e-6)


def test_triangulate_is_nan_below_two_views(rig, rng):
    pixels = project(rig, random_points(rng, 3))
    pixels[1:, 0] = np.nan  # one view
    pixels[:, 1] = np.nan  # none
    pixels[0, 2, 0] = np.inf  # a broken view is dropped, five remain
    points_3d = triangulate(rig, pixels)
    assert np.isnan(points_3d[:2]).all() and np.isfinite(points_3d[2]).all()


def test_reprojection_error_matches_aniposelib(rig, rng):
    points = random_points(rng, 50)
    pixels = project(rig, points) + rng.normal(0, 2.0, size=(6, 50, 2))
    pixels[0, 3] = np.nan
    pixels[:, 4] = np.nan
    errors = reprojection_error(rig, points, pixels)
    expected = np.linalg.norm(to_aniposelib(rig).reprojection_error(points, pixels), axis=2)
    np.testing.assert_allclose(errors, expected, rtol=1e-6)
    mean = reprojection_error(rig, points, pixels, mean=True)
    np.testing.assert_allclose(mean[3], np.mean(errors[1:, 3]))
    assert np.isnan(mean[4]) and np.isfinite(np.delete(mean, 4)).all()


def test_reprojection_error_is_zero_for_exact_projections(rig, rng):
    points = random_points(rng, 30)
    assert np.max(reprojection_error(rig, points, project(rig, points))) < 1e-9


def svd_triangulate(rig: CameraGroup, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference DLT: smallest right singular vector of each point's ``A`` (zero rows if missing).

    Also returns each point's ratio of the two smallest singular values: near 1
    the answer is ill-determined and any solver's rounding decides it.
    """
    normalized = np.stack([cv2.undistortPoints(pixels[index].reshape(-1, 1, 2), camera.matrix,
                                               camera.dist, criteria=CONVERGED).reshape(-1, 2)
                           for index, camera in enumerate(rig.cameras)])
    present = np.isfinite(normalized).all(axis=2)[..., None, None]  # (C, N, 1, 1)
    extrinsics = np.stack([np.hstack([cv2.Rodrigues(camera.rvec)[0], camera.tvec[:, None]])
                           for camera in rig.cameras])[:, None]  # (C, 1, 3, 4)
    rows = normalized[..., None] * extrinsics[:, :, 2:3] - extrinsics[:, :, :2]  # (C, N, 2, 4)
    matrices = np.where(present, rows, 0.0).transpose(1, 0, 2, 3).reshape(pixels.shape[1], -1, 4)
    _, singular, vectors = np.linalg.svd(matrices)
    with np.errstate(divide="ignore", invalid="ignore"):
        points = vectors[:, -1, :3] / vectors[:, -1, 3:]
        gap = singular[:, -2] / singular[:, -1]
    points[present.sum(axis=0)[:, 0, 0] < 2] = np.nan
    return points, gap


CONVERGED = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


@pytest.mark.parametrize(("noise_px", "n_points"), [
    (0.5, 10), (5.0, 10), (0.5, 400), (5.0, 400), (30.0, 400),  # eigh below ~50 points
    (300.0, 40000),  # Newton can reach a root that is not the smallest: caught, eigh redoes it
])
def test_triangulate_is_the_svd_solution_at_any_noise(rig, rng, noise_px, n_points):
    points = random_points(rng, n_points)
    pixels = project(rig, points) + rng.normal(0, noise_px, size=(6, n_points, 2))
    outside = ((pixels < 0) | (pixels > IMAGE_SIZE)).any(axis=2)  # where undistortion is moot
    pixels[outside | (rng.random((6, n_points)) < 0.3)] = np.nan
    expected, gap = svd_triangulate(rig, pixels)
    ours = triangulate(rig, pixels)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    determined = np.isfinite(expected).all(axis=1) & (gap > 3.0)
    scale = 1.0 + np.abs(expected[determined]).max(axis=1, keepdims=True)
    np.testing.assert_array_less(np.abs(ours - expected)[determined] / scale, 1e-7)


def test_dlt_points_is_the_smallest_eigenvector_of_any_normal_matrix(rng):
    # Random A: far from pixel-level noise, Newton's method often lands on a
    # root that is not the smallest; those points must be redone exactly.
    matrices = rng.normal(size=(2000, 12, 4))
    normal = matrices.transpose(0, 2, 1) @ matrices
    rows, columns = np.array(DISTINCT_ENTRIES).T
    _, vectors = np.linalg.eigh(normal)
    expected = vectors[:, :3, 0] / vectors[:, 3:, 0]
    np.testing.assert_allclose(dlt_points(normal[:, rows, columns].T), expected, rtol=1e-6)


def test_answers_do_not_depend_on_how_many_points_come_together(rig, rng):
    # Large inputs are undistorted in chunks per camera and solved by Newton's
    # method, small ones in one pass and by eigh: the points must not notice.
    points = random_points(rng, 20000)
    pixels = project(rig, points) + rng.normal(0, 1.0, size=(6, 20000, 2))
    pixels[:, -5:] = rng.uniform([0, 0], [1024, 700], size=(6, 5, 2))  # image corners too
    together = triangulate(rig, pixels)
    for part in (slice(0, 7), slice(16380, 16390), slice(-5, None)):
        np.testing.assert_allclose(triangulate(rig, pixels[:, part]), together[part],
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("call", "message"), [
    (lambda g: triangulate(g, np.zeros((5, 4, 2))), r"\(6, n, 2\), got \(5, 4, 2\)"),
    (lambda g: reprojection_error(g, np.zeros((3, 3)), np.zeros((6, 4, 2))),
     r"\(4, 3\), got \(3, 3\)"),
])
def test_shape_errors_name_expected_and_actual(rig, call, message):
    with pytest.raises(ValueError, match=message):
        call(rig)


def test_rays_on_plane_recover_points_of_the_plane_seen_by_one_camera(rig, rng):
    normal = np.array([0.3, -0.9, 0.2])
    normal /= np.linalg.norm(normal)
    on_plane = random_points(rng, 20)
    on_plane -= np.outer(on_plane @ normal, normal)  # the plane through the origin
    pixels = project(rig, on_plane)  # (6, 20, 2)
    single = np.full_like(pixels, np.nan)
    camera = np.arange(20) % len(rig)
    single[camera, np.arange(20)] = pixels[camera, np.arange(20)]
    found = rays_on_plane(rig, single, np.zeros(3), normal, min_angle_deg=0.0)
    facing = np.abs(np.einsum("ij,j->i", _ray_directions(rig, on_plane, camera), normal))
    usable = facing > np.sin(np.radians(5.0))
    np.testing.assert_allclose(found[usable], on_plane[usable], atol=1e-6)
    # Two views: triangulate instead; no view: nothing; a grazing ray: refused.
    assert np.isnan(rays_on_plane(rig, pixels, np.zeros(3), normal, 0.0)).all()
    assert np.isnan(rays_on_plane(rig, np.full_like(pixels, np.nan), np.zeros(3), normal, 0.0)).all()
    grazing = rays_on_plane(rig, single, np.zeros(3), normal, min_angle_deg=90.0)
    assert np.isnan(grazing).all()


def _ray_directions(rig: CameraGroup, points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    centres = np.array([-cv2.Rodrigues(c.rvec)[0].T @ c.tvec for c in rig.cameras])[camera]
    directions = points - centres
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)
