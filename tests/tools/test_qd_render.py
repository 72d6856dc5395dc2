"""Tests for tools/qd_render.py: rig, body model, physical occlusion, spot and body rendering."""

from __future__ import annotations

import numpy as np
import pytest

from tools import qd_render
from tools.camera import camera_centres
from tools.geometry import project
from tools.motion import QD_KEYPOINTS, walk_procedural
from tools.qd_render import _segment_distance

INDEX = {name: i for i, name in enumerate(QD_KEYPOINTS)}
BACK = [INDEX["back_top"], INDEX["back_middle"], INDEX["back_bottom"]]


def _standing_mouse() -> np.ndarray:
    """One frame of the walker, turned so it faces +x, left is +y: ``(1, 12, 3)``."""
    points = walk_procedural(1, seed=0)
    forward = points[0, INDEX["back_top"], :2] - points[0, INDEX["back_bottom"], :2]
    angle = -np.arctan2(forward[1], forward[0])
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    centred = points - [*points[0, INDEX["back_middle"], :2], 0.0]
    return centred @ rotation.T


def _visibility(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    axes = qd_render.body_axes(points)
    normals = qd_render.qd_normals(points, axes)
    starts, ends = qd_render.body_capsules(points, axes, normals)
    return qd_render.visible_dots(points, normals, starts, ends, centers)[:, 0]


def test_camera_above_sees_the_back_and_camera_below_sees_none():
    seen = _visibility(_standing_mouse(), np.array([[0.0, 0.0, 800.0], [0.0, 0.0, -800.0]]))
    assert seen[0, BACK].all()
    assert not seen[1, BACK].any()


def test_body_hides_the_paws_of_the_far_side():
    # Low cameras on the left and on the right of the mouse, looking across its body.
    seen = _visibility(_standing_mouse(), np.array([[0.0, 600.0, 60.0], [0.0, -600.0, 60.0]]))
    left_paws, right_paws = (
        [INDEX["forepaw_L"], INDEX["hindpaw_L"]],
        [INDEX["forepaw_R"], INDEX["hindpaw_R"]],
    )
    assert seen[0, left_paws].all() and not seen[0, right_paws].any()
    assert seen[1, right_paws].all() and not seen[1, left_paws].any()


def test_a_capsule_between_dot_and_camera_hides_the_dot():
    points = np.zeros((1, 12, 3))
    points[0, :, 0] = np.arange(12) * 100.0  # dots far apart; only dot 0 and 1 matter
    points[0, 0] = [0.0, 0.0, -20.0]  # under the capsule, facing up at the camera
    points[0, 1] = [0.0, 40.0, -20.0]  # beside it
    normals = np.zeros((1, 12, 3))
    normals[..., 2] = 1.0
    starts = np.array([[[-50.0, 0.0, 0.0]]])
    ends = np.array([[[50.0, 0.0, 0.0]]])
    seen = qd_render.visible_dots(
        points, normals, starts, ends, np.array([[0.0, 0.0, 1000.0]]), radii=np.array([10.0])
    )
    assert not seen[0, 0, 0] and seen[0, 0, 1]


def test_segment_distance_matches_dense_sampling(rng):
    segments = rng.normal(0.0, 10.0, (50, 4, 3))
    exact = _segment_distance(segments[:, 0], segments[:, 1], segments[:, 2], segments[:, 3])
    along = np.linspace(0.0, 1.0, 401)
    first = segments[:, None, 0] + along[None, :, None] * (segments[:, 1] - segments[:, 0])[:, None]
    second = (
        segments[:, None, 2] + along[None, :, None] * (segments[:, 3] - segments[:, 2])[:, None]
    )
    sampled = np.linalg.norm(first[:, :, None] - second[:, None, :], axis=-1).min(axis=(1, 2))
    assert np.all(exact <= sampled + 1e-9)
    np.testing.assert_allclose(exact, sampled, atol=0.2)


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5])
def test_isolated_spot_centroid_is_the_true_projection(rng, sigma):
    image = np.zeros((60, 80), dtype=np.uint8)
    for center in rng.uniform([20.0, 20.0], [60.0, 40.0], (10, 2)):
        spot = qd_render.render_spots(
            image, center[None], np.array([200.0]), np.array([sigma])
        ).astype(float)
        ys, xs = np.mgrid[: spot.shape[0], : spot.shape[1]]
        centroid = np.array([(spot * xs).sum(), (spot * ys).sum()]) / spot.sum()
        assert np.linalg.norm(centroid - center) < 0.3


def test_spots_add_up_saturate_and_ignore_the_outside():
    image = np.full((30, 30), 10, dtype=np.uint8)
    doubled = qd_render.render_spots(
        image, np.array([[15.0, 15.0], [15.0, 15.0]]), np.array([200.0, 200.0]), 1.5
    )
    assert doubled[15, 15] == 255 and doubled[0, 0] == 10
    outside = qd_render.render_spots(image, np.array([[-40.0, 15.0]]), np.array([200.0]), 1.5)
    np.testing.assert_array_equal(outside, image)


def test_rig_cameras_surround_the_animal_and_see_it(rng):
    points = walk_procedural(100, seed=1)
    group = qd_render.make_rig(6, (640, 480), points.reshape(-1, 3), rng)
    centers = camera_centres(group)
    assert np.all(centers[:, 2] > points[..., 2].max())
    azimuths = np.sort(np.arctan2(centers[:, 1], centers[:, 0]))
    assert np.diff(azimuths).max() < np.radians(90.0)  # a ring, no big blind side
    pixels = project(group, points.reshape(-1, 3))
    assert np.all((pixels >= 0) & (pixels < [640, 480]))
    focal = np.array([camera.matrix[0, 0] for camera in group.cameras])
    assert np.all(np.abs(focal / 640 - 1.2) < 0.1)


@pytest.mark.parametrize("elevation_deg", [(35.0, 55.0), (60.0, 80.0), (15.0, 30.0)])
def test_rig_cameras_look_down_from_the_elevation_asked_for(rng, elevation_deg):
    points = walk_procedural(100, seed=1).reshape(-1, 3)
    group = qd_render.make_rig(6, (640, 480), points, rng, elevation_deg)
    # Each camera is aimed within 10 mm of the volume's centre, hundreds of mm away.
    target = (points.min(axis=0) + points.max(axis=0)) / 2.0
    towards = camera_centres(group) - target
    elevation = np.degrees(np.arctan2(towards[:, 2], np.hypot(towards[:, 0], towards[:, 1])))
    assert np.all((elevation > elevation_deg[0] - 2.0) & (elevation < elevation_deg[1] + 2.0))
    pixels = project(group, points)
    assert np.all((pixels >= 0) & (pixels < [640, 480]))


def test_reflectance_body_is_found_by_background_subtraction(rng):
    points = walk_procedural(1, seed=3)
    group = qd_render.make_rig(2, (320, 240), points.reshape(-1, 3), rng)
    camera = group.cameras[0]
    axes = qd_render.body_axes(points)
    starts, ends = qd_render.body_capsules(points, axes, qd_render.qd_normals(points, axes))
    background = qd_render.floor_background(camera, 200.0, rng)
    ends_px, radii_px, _ = qd_render.project_capsules(camera, starts, ends)
    frame = qd_render.render_capsules(
        background, ends_px[0], radii_px[0], np.full(len(radii_px[0]), 40.0)
    )
    mask = np.abs(frame.astype(int) - background.astype(int)) > 30
    x, y = np.rint(project(group.subset(["cam0"]), points[0, [INDEX["back_middle"]]])[0, 0]).astype(
        int
    )
    assert mask[y, x]  # the back dot lies on the animal's silhouette
    assert 0.002 < mask.mean() < 0.5
