"""tools/refine.py: Stage 4 cross-view correction."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tools.test_geometry import make_rig
from tools.geometry import CameraGroup, project
from tools.refine import RefineParams, refine_cross_view, refine_cross_view_batch


@pytest.fixture
def rig(rng: np.random.Generator) -> CameraGroup:
    return make_rig(rng)


def make_frame(rig: CameraGroup, rng: np.random.Generator, n_keypoints: int = 12,
               noise_px: float = 0.5, n_spurious: int = 2, hidden: float = 0.1):
    """One frame of quantum dots: per camera the visible keypoints' projections plus
    spurious spots, in shuffled detection order.

    Returns the 3D keypoints, the per-camera centroids and the true assignment
    ``(C, n_keypoints)`` (-1 where hidden).
    """
    points_3d = rng.uniform(-40, 40, size=(n_keypoints, 3))
    true_px = project(rig, points_3d)
    centroids, assignment = [], np.full((len(rig), n_keypoints), -1)
    for camera in range(len(rig)):
        visible = np.flatnonzero(rng.random(n_keypoints) > hidden)
        spots = np.vstack([true_px[camera, visible] + rng.normal(0, noise_px, (len(visible), 2)),
                           rng.uniform([0, 0], [1024, 700], size=(n_spurious, 2))])
        order = rng.permutation(len(spots))
        centroids.append(spots[order])
        position = np.argsort(order)
        assignment[camera, visible] = position[:len(visible)]
    return points_3d, centroids, assignment


def spurious_index(centroids, assignment, camera):
    return next(i for i in range(len(centroids[camera])) if i not in assignment[camera])


def test_refine_keeps_a_correct_frame(rig, rng):
    points_3d, centroids, assignment = make_frame(rig, rng)
    result = refine_cross_view(rig, centroids, assignment)
    assert result.changes == ()
    np.testing.assert_array_equal(result.assignment, assignment)
    np.testing.assert_array_equal(result.ncams, (assignment >= 0).sum(axis=0))
    assert np.max(np.abs(result.points_3d - points_3d)) < 1.0
    assert result.inlier[assignment >= 0].all() and np.all(result.mean_error_px < 2.0)


def test_refine_restores_corrupted_assignments_and_says_why(rig, rng):
    points_3d, centroids, truth = make_frame(rig, rng, hidden=0.0)
    corrupted = truth.copy()
    corrupted[2, [0, 1]] = truth[2, [1, 0]]
    corrupted[4, 3] = spurious_index(centroids, truth, 4)
    corrupted[1, 7] = -1
    result = refine_cross_view(rig, centroids, corrupted)
    np.testing.assert_array_equal(result.assignment, truth)
    reasons = {(c.camera, c.keypoint): (c.old_centroid, c.new_centroid, c.reason)
               for c in result.changes}
    assert reasons == {
        (2, 0): (truth[2, 1], truth[2, 0], "swap"),
        (2, 1): (truth[2, 0], truth[2, 1], "swap"),
        (4, 3): (corrupted[4, 3], truth[4, 3], "reassigned_outlier"),
        (1, 7): (-1, truth[1, 7], "recovered_unassigned"),
    }
    assert np.max(np.abs(result.points_3d - points_3d)) < 1.0


def test_refine_drops_an_outlier_without_an_alternative(rig, rng):
    _, centroids, truth = make_frame(rig, rng, hidden=0.0)
    hidden_dot = truth[3, 5]
    centroids[3] = np.delete(centroids[3], hidden_dot, axis=0)  # keypoint 5's dot is occluded
    truth[3] = np.where(truth[3] > hidden_dot, truth[3] - 1, truth[3])
    truth[3, 5] = -1
    corrupted = truth.copy()
    corrupted[3, 5] = spurious_index(centroids, truth, 3)
    result = refine_cross_view(rig, centroids, corrupted)
    np.testing.assert_array_equal(result.assignment, truth)
    assert [(c.camera, c.keypoint, c.reason) for c in result.changes] == [
        (3, 5, "dropped_outlier")]
    assert result.ncams[5] == 5 and np.isnan(result.reprojection_error_px[3, 5])


def test_refine_gives_a_contested_centroid_to_the_consistent_keypoint(rig, rng):
    _, centroids, truth = make_frame(rig, rng, hidden=0.0)
    corrupted = truth.copy()
    corrupted[0, 6] = truth[0, 9]  # keypoint 6 claims keypoint 9's dot
    result = refine_cross_view(rig, centroids, corrupted)
    np.testing.assert_array_equal(result.assignment, truth)
    assert [(c.camera, c.keypoint, c.reason) for c in result.changes] == [
        (0, 6, "reassigned_outlier")]


def test_refine_leaves_untriangulable_keypoints_alone(rig, rng):
    _, centroids, truth = make_frame(rig, rng, hidden=0.0)
    single_view = truth.copy()
    single_view[1:, 2] = -1
    result = refine_cross_view(rig, centroids, single_view)
    assert result.assignment[0, 2] == truth[0, 2] and result.ncams[2] == 0
    assert np.isnan(result.points_3d[2]).all() and np.isnan(result.mean_error_px[2])
    assert not result.inlier[:, 2].any()


def test_batch_equals_frame_by_frame(rig, rng):
    frames = [make_frame(rig, rng) for _ in range(5)]
    assignment = np.stack([truth for _, _, truth in frames])
    assignment[1, 2, [0, 1]] = assignment[1, 2, [1, 0]]
    assignment[3, 0, 4] = -1
    batch = refine_cross_view_batch(rig, [centroids for _, centroids, _ in frames], assignment)
    for (_, centroids, _), corrupted, together in zip(frames, assignment, batch, strict=True):
        alone = refine_cross_view(rig, centroids, corrupted)
        np.testing.assert_array_equal(alone.assignment, together.assignment)
        np.testing.assert_allclose(alone.points_3d, together.points_3d, rtol=1e-9, atol=1e-9)
        assert alone.changes == together.changes


def test_refine_checks_its_input(rig, rng):
    _, centroids, truth = make_frame(rig, rng)
    truth[0, 0] = len(centroids[0])
    with pytest.raises(ValueError, match="frame 0 camera 0"):
        refine_cross_view(rig, centroids, truth)
    with pytest.raises(ValueError, match=r"\(n_frames=1, 6, n_keypoints\)"):
        refine_cross_view(rig, centroids[:5], truth[:5])
    with pytest.raises(ValueError, match="lock_threshold_px"):
        RefineParams(lock_threshold_px=10.0)
    with pytest.raises(ValueError, match="min_cameras"):
        RefineParams(min_cameras=1)
