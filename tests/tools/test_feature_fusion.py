"""Tests for tools/feature_fusion.py."""

from __future__ import annotations

import numpy as np
import pytest

from tools.feature_fusion import fuse, match_tracks_to_keypoints, robust_zscore
from tools.features import FeatureSet


def test_fuse_standardises_and_prefixes(rng) -> None:
    keypoint = FeatureSet(rng.normal(100, 20, (200, 3, 2)).astype(np.float32), ["speed", "bend"])
    constant = np.full((200, 3, 1), 7.0, dtype=np.float32)
    visual = FeatureSet(np.concatenate([rng.exponential(5, (200, 3, 1)), constant], -1),
                        ["speed", "flat"])
    fused = fuse(keypoint, visual)
    assert fused.names == ["kp_speed", "kp_bend", "vis_speed", "vis_flat"]
    assert fused.values.shape == (200, 3, 4)
    np.testing.assert_allclose(np.median(fused.values[..., :3], axis=(0, 1)), 0.0, atol=1e-5)
    q25, q75 = np.percentile(fused.values[..., :3], [25, 75], axis=(0, 1))
    np.testing.assert_allclose(q75 - q25, 1.3489795, rtol=1e-4)
    np.testing.assert_array_equal(fused.values[..., 3], 0.0)


def test_zscore_ignores_outliers(rng) -> None:
    values = rng.normal(0, 1, (1000, 1, 1))
    spiked = values.copy()
    spiked[:5] = 1e6
    inliers = slice(5, None)
    np.testing.assert_allclose(robust_zscore(spiked)[inliers], robust_zscore(values)[inliers],
                               atol=0.05)


def test_mismatched_sets_are_rejected() -> None:
    a = FeatureSet(np.zeros((10, 2, 1), np.float32), ["a"])
    b = FeatureSet(np.zeros((9, 2, 1), np.float32), ["b"])
    with pytest.raises(ValueError, match="n_frames, n_animals"):
        fuse(a, b)


def test_match_tracks_to_keypoints_undoes_a_permutation(rng):
    keypoint_centre = rng.uniform(0, 500, size=(40, 3, 2))
    keypoint_centre[5:9, 1] = np.nan  # a missing animal for a few frames changes nothing
    tracks = keypoint_centre[:, [2, 0, 1]] + rng.normal(0, 2, size=(40, 3, 2))
    tracks[np.isnan(tracks)] = 100.0  # the tracker still reports a position
    order = match_tracks_to_keypoints(tracks, keypoint_centre)
    np.testing.assert_array_equal(order, [1, 2, 0])
    known = np.isfinite(keypoint_centre)
    np.testing.assert_allclose(tracks[:, order][known], keypoint_centre[known], atol=10)
