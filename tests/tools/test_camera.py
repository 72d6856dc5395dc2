"""tools/camera.py against OpenCV and aniposelib on random ring rigs."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from tests.tools.test_geometry import make_rig, random_points, to_aniposelib
from tools.camera import (
    CameraGroup,
    camera_centres,
    distort_normalized,
    pixels_per_unit,
    project,
    project_camera,
    rotation_matrix,
    undistort_points,
    world_to_camera,
)


@pytest.fixture
def rig(rng: np.random.Generator) -> CameraGroup:
    return make_rig(rng)


def test_rotation_matrix_matches_cv2_rodrigues(rng):
    for rvec in [np.zeros(3), 1e-14 * np.ones(3), *rng.normal(0, 1.5, size=(5, 3))]:
        np.testing.assert_allclose(rotation_matrix(rvec), cv2.Rodrigues(rvec)[0], atol=1e-12)


def test_world_to_camera_is_rotation_then_translation(rig, rng):
    points = random_points(rng, 20)
    camera = rig.cameras[1]
    expected = points @ cv2.Rodrigues(camera.rvec)[0].T + camera.tvec
    np.testing.assert_allclose(world_to_camera(camera, points), expected, rtol=1e-12)


def test_each_camera_centre_maps_to_its_cameras_origin(rig):
    centres = camera_centres(rig)
    assert centres.shape == (len(rig), 3)
    for camera, centre in zip(rig.cameras, centres, strict=True):
        np.testing.assert_allclose(world_to_camera(camera, centre[None]), 0.0, atol=1e-9)


def _pinhole(camera):
    """``camera`` without lens distortion and with fy = fx."""
    matrix = np.array(camera.matrix, dtype=np.float64)
    matrix[1, 1] = matrix[0, 0]
    return dataclasses.replace(camera, matrix=matrix, dist=np.zeros(5))


def test_pixels_per_unit_is_the_image_length_of_a_unit_step_across_the_view(rig, rng):
    # A pinhole camera (no distortion, fx = fy): a unit step along the camera's x axis moves
    # the image point by focal / depth pixels, whatever the point's place in the view.
    pinhole = CameraGroup(tuple(_pinhole(camera) for camera in rig.cameras))
    points = random_points(rng, 9)
    scale = pixels_per_unit(pinhole, points)
    assert scale.shape == (len(pinhole),)
    for index, camera in enumerate(pinhole.cameras):
        step = rotation_matrix(camera.rvec)[0]  # the camera's x axis in the world
        moved = np.linalg.norm(project_camera(camera, points + step) - project_camera(camera, points),
                               axis=1)
        assert scale[index] == pytest.approx(np.median(moved), rel=1e-9)


def test_pixels_per_unit_leaves_out_points_behind_a_camera_and_missing_ones(rig, rng):
    points = random_points(rng, 9)
    expected = pixels_per_unit(rig, points)
    camera = rig.cameras[0]
    centre = camera_centres(rig)[0]
    behind = centre - 50.0 * rotation_matrix(camera.rvec)[2]  # on camera 0's optical axis, behind it
    with_extra = np.vstack([points, behind, [np.nan, 0.0, 0.0]])
    np.testing.assert_allclose(pixels_per_unit(rig, with_extra)[0], expected[0])
    assert np.isnan(pixels_per_unit(rig, behind[None])[0])
    assert np.isnan(pixels_per_unit(rig, np.empty((0, 3)))).all()


def test_project_matches_opencv_and_aniposelib(rig, rng):
    points = random_points(rng, 200)
    ours = project(rig, points)
    assert ours.shape == (6, 200, 2)
    for index, camera in enumerate(rig.cameras):
        opencv, _ = cv2.projectPoints(points, camera.rvec, camera.tvec, camera.matrix, camera.dist)
        np.testing.assert_allclose(ours[index], opencv.reshape(-1, 2), rtol=1e-6)
        np.testing.assert_array_equal(project_camera(camera, points), ours[index])
    np.testing.assert_allclose(ours, to_aniposelib(rig).project(points), rtol=1e-6)


def test_project_nan_in_gives_nan_out_only_there(rig, rng):
    points = random_points(rng, 10)
    points[[2, 7], 1] = np.nan
    projected = project(rig, points)
    assert np.isnan(projected[:, [2, 7]]).all()
    assert np.isfinite(np.delete(projected, [2, 7], axis=1)).all()


def test_undistort_matches_opencv_and_inverts_projection(rig, rng):
    points = random_points(rng, 300)
    for camera in rig.cameras:
        pixels = project_camera(camera, points)
        opencv = cv2.undistortPoints(pixels.reshape(-1, 1, 2), camera.matrix, camera.dist)
        ours = undistort_points(camera, pixels)
        np.testing.assert_allclose(ours, opencv.reshape(-1, 2), rtol=1e-6, atol=1e-9)
        in_camera = world_to_camera(camera, points)
        np.testing.assert_allclose(ours, in_camera[:, :2] / in_camera[:, 2:], atol=1e-10)


def test_undistort_keeps_nan_rows(rig):
    pixels = np.array([[500.0, 300.0], [np.nan, 10.0], [np.nan, np.nan]])
    normalized = undistort_points(rig.cameras[0], pixels)
    assert np.isfinite(normalized[0]).all() and np.isnan(normalized[1:]).all()


def test_undistort_inverts_the_lens_model_over_the_whole_image(rig):
    grid = np.stack(np.meshgrid(np.linspace(0, 1024, 40), np.linspace(0, 700, 30)), axis=-1)
    pixels = grid.reshape(-1, 2)
    for camera in rig.cameras:
        normalized = undistort_points(camera, pixels)
        distorted = distort_normalized(normalized, camera.dist)
        back = distorted * np.diag(camera.matrix)[:2] + camera.matrix[:2, 2]
        np.testing.assert_allclose(back, pixels, atol=1e-6)


def test_group_arrays_are_computed_once_and_read_only(rig):
    assert rig.arrays is rig.arrays
    with pytest.raises(ValueError, match="read-only"):
        rig.arrays.dist[0, 0] = 1.0


@pytest.mark.parametrize(("call", "message"), [
    (lambda g: project(g, np.zeros((4, 2))), r"\(n, 3\), got \(4, 2\)"),
    (lambda g: undistort_points(g.cameras[0], np.zeros(2)), r"\(n, 2\), got \(2,\)"),
])
def test_shape_errors_name_expected_and_actual(rig, call, message):
    with pytest.raises(ValueError, match=message):
        call(rig)
