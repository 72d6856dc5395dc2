"""Tests for tools/seed_check.py: tracked identities checked against later seed frames."""

from __future__ import annotations

import numpy as np
import pytest

from tools.seed_check import contradicted_by_seeds


def _track(n_frames: int = 40, seed: int = 3) -> np.ndarray:
    """``(n_frames, 4, 3)`` mm: four keypoints 10 mm apart in a row, walking 3 mm a frame along x."""
    rng = np.random.default_rng(seed)
    start = np.array([[0.0, 0, 0], [10.0, 0, 0], [20.0, 0, 0], [30.0, 0, 0]])
    steps = np.arange(n_frames)[:, None, None] * np.array([3.0, 0.0, 0.0])
    return start[None] + steps + rng.normal(0.0, 0.2, (n_frames, 4, 3))


def _seeds(n_frames: int, frames: list[int]) -> np.ndarray:
    return np.isin(np.arange(n_frames), frames)


def test_a_correct_track_is_never_contradicted():
    points = _track()
    assert not contradicted_by_seeds(points, _seeds(40, [0, 20, 39])).any()


def test_neighbours_that_exchanged_dots_are_marked_back_to_their_previous_seed():
    points = _track()
    points[8:20, [1, 2]] = points[8:20, [2, 1]]  # exchanged from frame 8 until seed frame 20
    marked = contradicted_by_seeds(points, _seeds(40, [0, 20, 39]))
    assert np.flatnonzero(marked.any(axis=1)).tolist() == list(range(1, 20))
    assert set(np.flatnonzero(marked.any(axis=0)).tolist()) == {1, 2}
    assert not marked[[0, 20]].any()  # seed frames themselves are not marked


def test_marking_stops_where_the_track_was_broken():
    points = _track()
    points[8:20, [1, 2]] = points[8:20, [2, 1]]
    points[12, 1] = np.nan  # keypoint 1 lost in frame 12, found again on the wrong dot
    marked = contradicted_by_seeds(points, _seeds(40, [0, 20, 39]))
    assert np.flatnonzero(marked[:, 1]).tolist() == list(range(13, 20))
    assert np.flatnonzero(marked[:, 2]).tolist() == list(range(1, 20))


def test_marking_stops_where_the_labels_identity_was_in_doubt():
    points = _track()
    points[8:20, [1, 2]] = points[8:20, [2, 1]]
    suspect = np.zeros((40, 4), bool)
    suspect[8:10, 1] = True  # quality control doubted it where the exchange happened
    marked = contradicted_by_seeds(points, _seeds(40, [0, 20, 39]), suspect)
    assert np.flatnonzero(marked[:, 1]).tolist() == list(range(10, 20))
    assert np.flatnonzero(marked[:, 2]).tolist() == list(range(1, 20))
    with pytest.raises(ValueError, match=r"suspect must have shape \(40, 4\), got \(40, 3\)"):
        contradicted_by_seeds(points, _seeds(40, [0, 20]), np.zeros((40, 3), bool))


def test_a_fast_keypoint_is_carried_on_at_its_velocity_and_a_missing_one_is_skipped():
    points = _track()
    points[:, 3] += np.arange(40)[:, None] * [0.0, 9.0, 0.0]  # the tail tip sweeps 9.5 mm a frame
    points[38, 0] = np.nan
    assert not contradicted_by_seeds(points, _seeds(40, [0, 20, 39])).any()


def test_a_keypoint_the_seed_frame_does_not_show_is_no_evidence():
    points = _track()
    points[20, 3] = np.nan  # not labelled in the seed frame
    points[19, 0] = np.nan  # lost just before it
    assert not contradicted_by_seeds(points, _seeds(40, [0, 20, 39])).any()


def test_only_seed_frames_reached_by_tracking_check_anything():
    points = _track()
    points[:5, [1, 2]] = points[:5, [2, 1]]  # before the first seed frame (tracked backward)
    points[25:, [1, 2]] = points[25:, [2, 1]]  # after the last one
    assert not contradicted_by_seeds(points, _seeds(40, [5, 6, 20])).any()
    assert not contradicted_by_seeds(points, _seeds(40, [10])).any()


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"points_3d must have shape \(n, n, 3\), got \(4, 2\)"):
        contradicted_by_seeds(np.zeros((4, 2)), np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"is_seed must have shape \(40\), got \(3,\)"):
        contradicted_by_seeds(_track(), np.zeros(3, bool))
