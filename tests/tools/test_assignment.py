"""Tests of tools/assignment.py: motion prediction and gated optimal assignment."""

from __future__ import annotations

import numpy as np
import pytest

from tools.assignment import (
    assign_points,
    free_dot_points,
    predict_constant_velocity,
    recover_lost,
    split_shared_views,
)


def test_shuffling_candidates_changes_no_match(rng):
    predicted = rng.uniform(0, 500, size=(12, 2))
    candidates = predicted + rng.normal(0, 1.0, size=predicted.shape)
    order = rng.permutation(12)
    straight = assign_points(predicted, candidates, gate_px=10.0)
    shuffled = assign_points(predicted, candidates[order], gate_px=10.0)
    assert np.array_equal(straight.index, np.arange(12))
    assert np.array_equal(order[shuffled.index], straight.index)
    assert np.allclose(shuffled.cost, straight.cost)


def test_candidates_beyond_the_gate_are_never_taken():
    predicted = np.array([[0.0, 0.0], [100.0, 0.0], [np.nan, np.nan]])
    candidates = np.array([[30.0, 0.0], [102.0, 0.0]])
    result = assign_points(predicted, candidates, gate_px=10.0)
    assert result.index.tolist() == [-1, 1, -1]
    assert np.isnan(result.cost[[0, 2]]).all() and np.isnan(result.margin[[0, 2]]).all()


def test_margin_is_the_gap_to_the_second_best_option():
    predicted = np.array([[0.0, 0.0]])
    close_pair = assign_points(predicted, np.array([[1.0, 0.0], [0.0, 2.5]]), gate_px=10.0)
    alone = assign_points(predicted, np.array([[1.0, 0.0]]), gate_px=10.0)
    assert close_pair.margin[0] == pytest.approx(1.5)
    assert alone.margin[0] == pytest.approx(9.0)  # staying unassigned costs the gate


def test_one_candidate_is_never_given_twice():
    predicted = np.array([[0.0, 0.0], [1.0, 0.0]])
    result = assign_points(predicted, np.array([[0.4, 0.0]]), gate_px=5.0)
    assert sorted(result.index.tolist()) == [-1, 0]


def test_constant_velocity_extrapolates_linear_motion_and_keeps_nan():
    frames = np.array([3, 4, 5])
    points = np.stack([np.array([[t, 2.0 * t, 0.0], [np.nan] * 3]) for t in frames])
    predicted = predict_constant_velocity(frames, points, target_frame=6)
    assert np.allclose(predicted[0], [6.0, 12.0, 0.0])
    assert np.isnan(predicted[1]).all()


def test_prediction_uses_the_last_two_known_positions_and_caps_the_gap():
    frames = np.array([0, 1, 2])
    points = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[np.nan, np.nan]]])
    predicted = predict_constant_velocity(frames, points, target_frame=10, max_velocity_frames=2)
    assert np.allclose(predicted[0], [3.0, 0.0])
    single = predict_constant_velocity(frames[:1], points[:1], target_frame=5)
    assert np.allclose(single[0], [0.0, 0.0])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        assign_points(np.zeros((3, 3)), np.zeros((2, 2)), gate_px=1.0)
    with pytest.raises(ValueError, match="n_history"):
        predict_constant_velocity(np.arange(2), np.zeros((3, 1, 2)), target_frame=4)


def _rig_scene():
    from tests.fixtures.tiny_recording import tiny_rig
    from tools.geometry import project

    group = tiny_rig(4)
    points_3d = np.array([[0.0, 0.0, 10.0], [15.0, 5.0, 20.0], [-10.0, 12.0, 15.0]])
    centroids = list(project(group, points_3d))  # centroid k of every camera is keypoint k
    assignment = np.tile(np.arange(3), (4, 1))
    assignment[:, 1] = -1
    return group, points_3d, centroids, assignment


def test_a_lost_keypoint_is_found_again_where_the_views_agree():
    group, points_3d, centroids, assignment = _rig_scene()
    predicted = points_3d + [3.0, -2.0, 1.0]
    lost = np.array([False, True, False])
    found = recover_lost(group, centroids, assignment, predicted, lost, search_radius_px=30.0,
                         threshold_px=2.0, max_distance=10.0)
    assert np.array_equal(found[:, 1], np.ones(4, int))
    assert np.array_equal(found[:, [0, 2]], assignment[:, [0, 2]])


def test_a_lost_keypoint_keeps_away_from_far_or_foreign_points():
    group, points_3d, centroids, assignment = _rig_scene()
    lost = np.array([False, True, False])
    far = points_3d.copy()
    far[1] += [30.0, 0.0, 0.0]
    unchanged = recover_lost(group, centroids, assignment, far, lost, search_radius_px=500.0,
                             threshold_px=2.0, max_distance=10.0)
    assert np.array_equal(unchanged, assignment)
    # The free dot is nearer another keypoint's prediction: it is not this keypoint's.
    crowded = points_3d.copy()
    crowded[0] = points_3d[1] + [1.0, 0.0, 0.0]
    crowded[1] = points_3d[1] + [4.0, 0.0, 0.0]
    assert np.array_equal(recover_lost(group, centroids, assignment, crowded, lost, 500.0, 2.0,
                                       10.0), assignment)


def test_nothing_within_the_gate_leaves_every_point_unassigned():
    predicted = np.array([[0.0, 0.0], [np.nan, np.nan], [10.0, 10.0]])
    for candidates in (np.zeros((0, 2)), np.array([[100.0, 100.0]])):
        result = assign_points(predicted, candidates, gate_px=5.0)
        np.testing.assert_array_equal(result.index, [-1, -1, -1])
        assert np.isnan(result.cost).all() and np.isnan(result.margin).all()


def test_free_dots_are_triangulated_where_cameras_agree_and_held_ones_are_not():
    group, points_3d, centroids, assignment = _rig_scene()
    # A spurious spot in one camera lines up with nothing.
    centroids[0] = np.vstack([centroids[0], [[5.0, 5.0]]])
    dots = free_dot_points(group, centroids, assignment, points_3d.mean(axis=0), threshold_px=2.0)
    assert dots.points_3d.shape == (1, 3)
    np.testing.assert_allclose(dots.points_3d[0], points_3d[1], atol=1e-6)
    np.testing.assert_array_equal(dots.views[:, 0], np.ones(4, int))
    assert np.all(dots.error_px[:, 0] < 1e-6)
    # Keypoint 1's own labels hold its dot: nothing is left to find.
    held = np.tile(np.arange(3), (4, 1))
    assert free_dot_points(group, centroids, held, points_3d.mean(axis=0), 2.0).points_3d.shape == (0, 3)


def test_free_dots_need_min_cameras_and_stop_at_max_points():
    group, points_3d, centroids, assignment = _rig_scene()
    nothing_held = np.full_like(assignment, -1)
    centre = points_3d.mean(axis=0)
    every = free_dot_points(group, centroids, nothing_held, centre, 2.0)
    assert every.points_3d.shape == (3, 3)
    order = np.argmin(np.linalg.norm(every.points_3d[:, None] - points_3d[None], axis=2), axis=1)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert free_dot_points(group, centroids, nothing_held, centre, 2.0, max_points=2).points_3d.shape == (2, 3)
    # Keypoint 1 shows in two cameras only.
    two_views = [c.copy() for c in centroids]
    for camera in (2, 3):
        two_views[camera][1] = [-500.0, -500.0]
    assert free_dot_points(group, two_views, assignment, centre, 2.0).points_3d.shape == (0, 3)
    assert free_dot_points(group, two_views, assignment, centre, 2.0, min_cameras=2).points_3d.shape == (1, 3)


def _twins_on_one_label():
    """Two dots 10 units apart; one label on the first in cameras 0-1, on the second in 2-3."""
    from tests.fixtures.tiny_recording import tiny_rig
    from tools.geometry import project

    group = tiny_rig(4)
    dots = np.array([[15.0, 5.0, 20.0], [15.0, 5.0, 30.0]])
    pixels = project(group, dots)  # (4, 2, 2): every camera sees both, ~5 px apart
    return group, dots, pixels


def test_a_label_on_two_dots_is_parted_into_them():
    group, dots, pixels = _twins_on_one_label()
    views = np.stack([pixels[0, 0], pixels[1, 0], pixels[2, 1], pixels[3, 1]])
    split = split_shared_views(group, views, max_part_error_px=1.0, min_joint_error_px=2.0,
                               min_separation_px=4.0)
    assert split is not None
    np.testing.assert_array_equal(split.first, [True, True, False, False])
    np.testing.assert_array_equal(split.second, [False, False, True, True])
    np.testing.assert_allclose(split.first_3d, dots[0], atol=1e-6)
    np.testing.assert_allclose(split.second_3d, dots[1], atol=1e-6)
    # An unlabelled camera leaves too few views to part (2 + 2 needed).
    views[3] = np.nan
    assert split_shared_views(group, views, 1.0, 2.0, 4.0) is None


def test_one_dot_seen_with_noise_is_not_parted(rng):
    group, _, pixels = _twins_on_one_label()
    one_dot = pixels[:, 0] + rng.normal(0.0, 0.3, size=(4, 2))
    assert split_shared_views(group, one_dot, 1.0, 2.0, 4.0) is None
    # Two dots, but closer together than the separation asked for.
    two_dots = np.stack([pixels[0, 0], pixels[1, 0], pixels[2, 1], pixels[3, 1]])
    assert split_shared_views(group, two_dots, 1.0, 2.0, min_separation_px=20.0) is None
    # Or views that agree better than the joint error asked for.
    assert split_shared_views(group, two_dots, 1.0, min_joint_error_px=10.0,
                              min_separation_px=4.0) is None
