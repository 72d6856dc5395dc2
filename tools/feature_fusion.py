"""Fuse keypoint and visual features into one robustly standardised matrix."""

from __future__ import annotations

import numpy as np

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
