"""Tests for tools/pose_metrics.py: the definitions in its module docstring."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from tools.pose_metrics import evaluate_pose, keypoint_scores

N_FRAMES, N_CAMERAS, N_KEYPOINTS = 20, 3, 4


@pytest.fixture
def truth(rng: np.random.Generator) -> dict:
    visible = rng.uniform(size=(N_FRAMES, N_CAMERAS, N_KEYPOINTS)) < 0.8
    return {
        "true_3d": rng.normal(0, 30, (N_FRAMES, N_KEYPOINTS, 3)),
        "true_2d": rng.uniform(0, 500, (N_FRAMES, N_CAMERAS, N_KEYPOINTS, 2)),
        "visible": visible,
    }


def _perfect_labels(truth: dict) -> np.ndarray:
    return np.where(truth["visible"][..., None], truth["true_2d"], np.nan)


def _shift(points: np.ndarray, distance: float) -> np.ndarray:
    """Move every point by ``distance`` along x."""
    return points + np.array([distance] + [0.0] * (points.shape[-1] - 1))


def test_perfect_results_score_perfectly(truth: dict) -> None:
    metrics = evaluate_pose(
        truth["true_3d"],
        truth["true_3d"],
        np.zeros((N_FRAMES, N_KEYPOINTS), bool),
        _perfect_labels(truth),
        truth["true_2d"],
        truth["visible"],
    )
    assert metrics.mean_error_mm == 0 and metrics.median_error_mm == 0
    assert metrics.share_within_5mm == metrics.share_within_10mm == 1
    assert metrics.assignment_accuracy == 1 and metrics.n_visible == truth["visible"].sum()
    assert metrics.n_really_wrong == 0 and metrics.n_flagged == 0
    assert math.isnan(metrics.qc_precision) and math.isnan(metrics.qc_recall)


@pytest.mark.parametrize(
    ("offset_mm", "within_5", "within_10"), [(3.0, 1, 1), (7.0, 0, 1), (12.0, 0, 0)]
)
def test_3d_error_and_shares_follow_a_known_offset(
    truth: dict, offset_mm: float, within_5: int, within_10: int
) -> None:
    metrics = evaluate_pose(_shift(truth["true_3d"], offset_mm), truth["true_3d"])
    assert metrics.mean_error_mm == pytest.approx(offset_mm)
    assert metrics.median_error_mm == pytest.approx(offset_mm)
    assert (metrics.share_within_5mm, metrics.share_within_10mm) == (within_5, within_10)
    assert metrics.n_really_wrong == (0 if offset_mm <= 5 else N_FRAMES * N_KEYPOINTS)
    assert metrics.n_visible is None and metrics.qc_precision is None


def test_missing_points_count_as_outside_and_wrong(truth: dict) -> None:
    points_3d = truth["true_3d"].copy()
    points_3d[:5, 0] = np.nan
    metrics = evaluate_pose(points_3d, truth["true_3d"])
    assert metrics.n_triangulated == N_FRAMES * N_KEYPOINTS - 5
    assert metrics.mean_error_mm == 0
    assert metrics.share_within_5mm == pytest.approx(1 - 5 / (N_FRAMES * N_KEYPOINTS))
    assert metrics.n_really_wrong == 5


def test_frames_without_truth_are_not_scored_in_3d(truth: dict) -> None:
    true_3d = truth["true_3d"].copy()
    true_3d[3] = np.nan
    metrics = evaluate_pose(_shift(truth["true_3d"], 20.0), true_3d)
    assert metrics.n_keypoint_frames == (N_FRAMES - 1) * N_KEYPOINTS
    assert metrics.n_really_wrong == (N_FRAMES - 1) * N_KEYPOINTS


def test_2d_accuracy_counts_misplaced_missing_and_invisible_labels(truth: dict) -> None:
    labels = _perfect_labels(truth)
    visible_idx = np.argwhere(truth["visible"])
    invisible_idx = np.argwhere(~truth["visible"])
    misplaced, dropped = tuple(visible_idx[0]), tuple(visible_idx[1])
    labels[misplaced] += [3.5, 0]  # just outside the 3 px tolerance
    labels[tuple(visible_idx[2])] += [0, 2.9]  # just inside
    labels[dropped] = np.nan
    labels[tuple(invisible_idx[0])] = [1.0, 1.0]
    metrics = evaluate_pose(
        truth["true_3d"], truth["true_3d"], None, labels, truth["true_2d"], truth["visible"]
    )
    n_visible = int(truth["visible"].sum())
    assert metrics.n_correct_labels == n_visible - 2
    assert (
        metrics.n_misplaced_labels,
        metrics.n_missing_labels,
        metrics.n_labels_on_invisible,
    ) == (1, 1, 1)
    assert metrics.assignment_accuracy == pytest.approx((n_visible - 2) / (n_visible + 1))
    # The misplaced label and the label on an invisible keypoint make two wrong keypoint-frames
    # (a missing label alone does not).
    wrong_pairs = {(misplaced[0], misplaced[2]), (invisible_idx[0][0], invisible_idx[0][2])}
    assert metrics.n_really_wrong == len(wrong_pairs)


def test_qc_precision_and_recall(truth: dict) -> None:
    points_3d = truth["true_3d"].copy()
    points_3d[:4, 1] += [8.0, 0, 0]  # 4 really wrong keypoint-frames
    flagged = np.zeros((N_FRAMES, N_KEYPOINTS), bool)
    flagged[:2, 1] = True  # 2 of them caught
    flagged[10, 3] = True  # and one false alarm
    metrics = evaluate_pose(points_3d, truth["true_3d"], flagged)
    assert (metrics.n_flagged, metrics.n_flagged_really_wrong, metrics.n_really_wrong) == (3, 2, 4)
    assert metrics.qc_precision == pytest.approx(2 / 3)
    assert metrics.qc_recall == pytest.approx(2 / 4)


def test_shuffling_frames_changes_nothing(truth: dict, rng: np.random.Generator) -> None:
    points_3d = truth["true_3d"] + rng.normal(0, 4, truth["true_3d"].shape)
    labels = _perfect_labels(truth) + rng.normal(0, 2, truth["true_2d"].shape)
    flagged = rng.uniform(size=(N_FRAMES, N_KEYPOINTS)) < 0.3
    arrays = (points_3d, truth["true_3d"], flagged, labels, truth["true_2d"], truth["visible"])
    order = rng.permutation(N_FRAMES)
    original = asdict(evaluate_pose(*arrays))
    shuffled = asdict(evaluate_pose(*(array[order] for array in arrays)))
    for name, value in original.items():  # floats may differ in the last bit (summation order)
        assert shuffled[name] == (pytest.approx(value) if isinstance(value, float) else value), name


def test_shapes_are_checked(truth: dict) -> None:
    with pytest.raises(ValueError, match=r"true_3d must have shape \(20, 4, 3\), got \(20, 3, 3\)"):
        evaluate_pose(truth["true_3d"], truth["true_3d"][:, :3])
    with pytest.raises(ValueError, match="given together"):
        evaluate_pose(truth["true_3d"], truth["true_3d"], labels_2d=truth["true_2d"])
    with pytest.raises(ValueError, match="visible must have shape"):
        evaluate_pose(
            truth["true_3d"],
            truth["true_3d"],
            None,
            truth["true_2d"],
            truth["true_2d"],
            truth["visible"][:, :2, :2],
        )


def test_the_triangulable_share_bounds_the_share_within_5mm(truth: dict) -> None:
    seen_by = truth["visible"].sum(axis=1)  # (frames, keypoints)
    # A result that triangulates exactly the keypoint-frames two cameras see.
    points = np.where((seen_by >= 2)[..., None], truth["true_3d"], np.nan)
    labels = _perfect_labels(truth)
    metrics = evaluate_pose(points, truth["true_3d"], None, labels, truth["true_2d"],
                            truth["visible"])
    assert metrics.n_triangulable == int((seen_by >= 2).sum())
    assert metrics.share_triangulable == pytest.approx((seen_by >= 2).mean())
    assert metrics.share_within_5mm == pytest.approx(metrics.share_triangulable)
    assert metrics.share_within_5mm_of_triangulable == 1.0
    off = evaluate_pose(_shift(points, 6.0), truth["true_3d"], None, labels, truth["true_2d"],
                        truth["visible"])
    assert off.share_within_5mm_of_triangulable == 0.0 and off.share_triangulable < 1.0
    without_2d = evaluate_pose(points, truth["true_3d"])
    assert without_2d.n_triangulable is None and without_2d.share_triangulable is None


def test_keypoint_scores_tell_an_exchange_from_a_loss(truth: dict) -> None:
    true_3d = truth["true_3d"].copy()
    true_3d[:, 1] = true_3d[:, 0] + [40.0, 0.0, 0.0]  # keypoints 0 and 1 always 40 mm apart
    points = true_3d.copy()
    points[:10, [0, 1]] = true_3d[:10, [1, 0]]  # exchanged in the first half
    points[:5, 2] = np.nan  # keypoint 2 lost in a quarter
    points[:, 3] += [2.0, 0.0, 0.0]  # keypoint 3 right, 2 mm off
    true_3d[:4, 3] = np.nan  # and without truth in 4 frames
    scores = {s.keypoint: s for s in keypoint_scores(points, true_3d, ["a", "b", "c", "d"])}
    assert (scores["a"].share_within_5mm, scores["a"].share_on_other) == (0.5, 0.5)
    assert (scores["a"].most_taken, scores["a"].most_taken_share) == ("b", 0.5)
    assert scores["b"].most_taken == "a" and scores["b"].share_missing == 0.0
    assert (scores["c"].share_missing, scores["c"].share_on_other, scores["c"].most_taken) == (
        0.25, 0.0, None)
    assert (scores["d"].n_frames, scores["d"].share_within_5mm) == (N_FRAMES - 4, 1.0)


def test_keypoint_scores_need_a_name_per_keypoint(truth: dict) -> None:
    with pytest.raises(ValueError, match="3 keypoint names for 4 keypoints"):
        keypoint_scores(truth["true_3d"], truth["true_3d"], ["a", "b", "c"])
