"""Fuse keypoint and visual features into one robustly standardised matrix."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.features import FeatureSet

# IQR of a standard normal distribution: dividing by it makes the scale comparable to a std.
_NORMAL_IQR = 1.3489795


def robust_zscore(values: np.ndarray) -> np.ndarray:
    """Standardise each feature of ``(n_frames, n_animals, n_features)`` over frames and animals.

    ``(x - median) / (IQR / 1.349)``; a feature with zero IQR is divided by
    its standard deviation instead, and a constant feature becomes 0.
    """
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    median = np.median(flat, axis=0)
    q25, q75 = np.percentile(flat, [25, 75], axis=0)
    scale = (q75 - q25) / _NORMAL_IQR
    scale = np.where(scale > 0, scale, flat.std(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    return ((values - median) / scale).astype(np.float32)


def fuse(keypoint: FeatureSet, visual: FeatureSet) -> FeatureSet:
    """Concatenate robustly z-scored keypoint and visual features.

    Both sets are ``(n_frames, n_animals, n_features)`` with the same frames
    and animals; the result has ``kp_`` and ``vis_`` prefixed names, keypoint
    columns first.
    """
    if keypoint.values.shape[:2] != visual.values.shape[:2]:
        raise ValueError(
            f"feature sets must share (n_frames, n_animals); got {keypoint.values.shape[:2]} "
            f"and {visual.values.shape[:2]}"
        )
    values = np.concatenate(
        [robust_zscore(keypoint.values), robust_zscore(visual.values)], axis=-1
    )
    names = [f"kp_{n}" for n in keypoint.names] + [f"vis_{n}" for n in visual.names]
    return FeatureSet(values, names)


def match_tracks_to_keypoints(track_centroid: np.ndarray, keypoint_centre: np.ndarray) -> np.ndarray:
    """Blob track of each keypoint animal, so fused features describe one animal.

    One assignment for the session (Hungarian on the median distance between
    each track and each animal's keypoint centre over the frames where both
    are known); a pair never seen together costs more than any seen pair.

    Parameters
    ----------
    track_centroid, keypoint_centre : np.ndarray
        ``(n_frames, n_animals, 2)`` x, y in pixels; NaN = missing.

    Returns
    -------
    np.ndarray
        ``(n_animals,)`` int64: track ``order[a]`` is keypoint animal ``a``.
    """
    if track_centroid.shape != keypoint_centre.shape or track_centroid.ndim != 3 or track_centroid.shape[2] != 2:
        raise ValueError(f"need two (n_frames, n_animals, 2) arrays, got {track_centroid.shape} "
                         f"and {keypoint_centre.shape}")
    gap = np.linalg.norm(keypoint_centre[:, :, None] - track_centroid[:, None], axis=-1)  # (T, animal, track)
    seen = np.isfinite(gap).any(axis=0)
    cost = np.zeros(gap.shape[1:])
    cost[seen] = np.nanmedian(gap[:, seen], axis=0)
    cost[~seen] = (cost[seen].max() + 1.0) if seen.any() else 0.0
    animals, tracks = linear_sum_assignment(cost)
    return tracks[np.argsort(animals)].astype(np.int64)
