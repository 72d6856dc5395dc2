"""Tests of tools/confidence.py: QC flags, reasons, retries and scores."""

from __future__ import annotations

import numpy as np

from tools.confidence import QualityParams, assess_frame


def _frame(n_cameras: int = 4, n_keypoints: int = 3):
    points_3d = np.zeros((n_keypoints, 3))
    ncams = np.full(n_keypoints, n_cameras)
    mean_error = np.full(n_keypoints, 0.5)
    error = np.full((n_cameras, n_keypoints), 0.5)
    margin = np.full((n_cameras, n_keypoints), 20.0)
    return points_3d, ncams, mean_error, error, margin, np.zeros((n_keypoints, 3))


def test_good_keypoints_pass_with_high_score():
    quality = assess_frame(*_frame())
    assert not quality.flagged.any() and not quality.retry.any()
    assert (quality.score > 0.8).all() and (quality.score <= 1).all()


def test_each_problem_gets_its_reason_and_only_its_views_are_retried():
    points_3d, ncams, mean_error, error, margin, predicted = _frame()
    error[:, 0] = np.nan  # keypoint 0: no label anywhere
    points_3d[0] = np.nan
    ncams[0] = 0
    error[2, 1] = 9.0  # keypoint 1: one view far off
    margin[1, 2] = 0.5  # keypoint 2: an ambiguous view
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams())
    assert quality.reason.tolist() == ["unassigned", "reprojection", "low_margin"]
    assert quality.retry[:, 0].all()
    assert quality.retry[:, 1].tolist() == [False, False, True, False]
    assert quality.retry[:, 2].tolist() == [False, True, False, False]
    assert quality.score[0] == 0.0


def test_few_cameras_and_jumps_are_flagged():
    points_3d, ncams, mean_error, error, margin, predicted = _frame()
    ncams[0] = 2
    predicted[1] = [100.0, 0.0, 0.0]
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted)
    assert quality.reason.tolist() == ["few_cameras", "jump", ""]


def test_labels_confirmed_by_part_of_the_rig_are_flagged_for_review_but_not_retried():
    points_3d, ncams, mean_error, error, margin, predicted = _frame(n_cameras=6)
    error[3:, 0] = np.nan  # keypoint 0: three of six views agree
    ncams[0] = 3
    error[4:, 1] = np.nan  # keypoint 1: four agree
    ncams[1] = 4
    plain = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams())
    review = assess_frame(points_3d, ncams, mean_error, error, margin, predicted,
                          QualityParams(review_min_cameras=4))
    assert not plain.flagged.any()
    assert review.reason.tolist() == ["few_cameras", "", ""]
    assert np.array_equal(review.retry, plain.retry)
    assert review.score[0] < plain.score[0] and review.score[1] == plain.score[1]


def test_the_body_flags_far_labels_vouches_for_near_ones_and_marks_unknown_keypoints():
    points_3d, ncams, mean_error, error, margin, predicted = _frame(n_cameras=6, n_keypoints=4)
    ncams[:] = [6, 3, 3, 6]
    params = QualityParams(review_min_cameras=4)
    deviation = np.array([2.5, 0.2, 0.9, np.nan])  # far, near, neither, unknown
    known = np.array([True, True, True, False])
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, params,
                           deviation, known)
    # Keypoint 1 is seen by few cameras but sits where the body puts it: no review.
    assert quality.reason.tolist() == ["body", "", "few_cameras", "unchecked"]
    without_body = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, params)
    assert without_body.reason.tolist() == ["", "few_cameras", "few_cameras", ""]
    # Review flags never send views back through stages 1-3.
    assert not quality.retry.any() and not without_body.retry.any()


def test_geometric_reasons_take_precedence_over_the_body():
    points_3d, ncams, mean_error, error, margin, predicted = _frame()
    error[1, 0] = 9.0
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams(),
                           np.array([3.0, 3.0, 0.1]), np.ones(3, bool))
    assert quality.reason.tolist() == ["reprojection", "body", ""]
    assert quality.retry[1, 0] and not quality.retry[:, 1:].any()


def test_a_two_camera_label_the_body_vouches_for_is_retried_but_not_flagged():
    points_3d, ncams, mean_error, error, margin, predicted = _frame(n_cameras=4, n_keypoints=2)
    error[2:, :] = np.nan  # both keypoints: two labelled views
    margin[2:, :] = np.nan
    ncams[:] = 2
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams(),
                           np.array([0.2, 0.9]), np.ones(2, bool))
    assert quality.reason.tolist() == ["", "few_cameras"]
    # Both are still worth another look in the views that have no label.
    assert quality.retry[:, 0].tolist() == [False, False, True, True]
    assert np.array_equal(quality.retry[:, 0], quality.retry[:, 1])


def test_a_keypoint_found_again_is_reviewed_until_the_body_vouches_for_it():
    points_3d, ncams, mean_error, error, margin, predicted = _frame(n_keypoints=3)
    points_3d[2] = np.nan  # keypoint 2 is lost again: nothing to review
    ncams[2] = 0
    error[:, 2] = np.nan
    margin[:, 2] = np.nan
    found = np.array([True, True, True])
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams(),
                           np.array([0.9, 0.2, np.nan]), np.ones(3, bool), found)
    assert quality.reason.tolist() == ["reacquired", "", "unassigned"]
    assert not quality.retry[:, 0].any()
    plain = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams(),
                         np.array([0.9, 0.2, np.nan]), np.ones(3, bool))
    assert plain.reason.tolist() == ["", "", "unassigned"]


def test_a_guessed_side_is_reviewed_even_where_the_body_vouches_for_the_point():
    points_3d, ncams, mean_error, error, margin, predicted = _frame(n_keypoints=3)
    points_3d[2] = np.nan  # a lost keypoint has no label to review
    ncams[2] = 0
    error[:, 2] = np.nan
    margin[:, 2] = np.nan
    vouched = np.array([0.1, 0.1, np.nan])
    unsure = np.array([True, False, True])
    quality = assess_frame(points_3d, ncams, mean_error, error, margin, predicted, QualityParams(),
                           vouched, np.ones(3, bool), None, unsure)
    assert quality.reason.tolist() == ["side", "", "unassigned"]
    assert not quality.retry[:, 0].any()
    assert quality.score[0] < quality.score[1]
