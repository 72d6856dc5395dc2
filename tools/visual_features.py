"""Per-animal behavior features from blob tracks (video only, no keypoints).

The counterpart of :func:`tools.features.keypoint_features` for sessions
without keypoints: :func:`visual_features` turns :class:`~tools.visual_tracking.Tracks`
into a ``(n_frames, n_animals, n_features)`` matrix without NaN. Centroid
gaps of up to ``MAX_GAP_FRAMES`` frames (animal not found) are interpolated,
positions are smoothed over ``SMOOTH_FRAMES`` frames before differentiating,
and what is still missing is filled by :func:`tools.features.fill_missing`.
"""

from __future__ import annotations

import numpy as np

from tools.features import (
    MAX_GAP_FRAMES,
    SMOOTH_FRAMES,
    FeatureSet,
    angular_velocity,
    distance_to_zone,
    fill_missing,
    gather_ranked,
    interpolate_gaps,
    pairwise_distance,
    rank_others,
    smooth,
)
from tools.visual_tracking import Tracks


def visual_features(
    tracks: Tracks, fps: float, food_zone: tuple[float, float, float, float] | None = None
) -> FeatureSet:
    """Feature matrix ``(n_frames, n_animals, n_features)`` from blob tracks, without NaN.

    Columns per animal: ``velocity_x``, ``velocity_y``, ``speed`` (px/s),
    ``orientation_change`` (rad/s), ``elongation`` (major / minor axis),
    ``area`` (px), ``motion_energy`` (fraction of the blob's pixels that
    changed), ``food_zone_distance`` (px from the centroid, 0 inside; with
    ``food_zone``), and ``other{k}_distance`` to the k-th nearest other animal
    (k = 1 .. A-1).

    Parameters
    ----------
    tracks
        Output of :func:`tools.visual_tracking.track_blobs`.
    fps
        Frames per second (> 0).
    food_zone
        Optional ``(x0, y0, x1, y1)`` in pixels.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    centroid = tracks.centroid
    if centroid.ndim != 3 or centroid.shape[2] != 2:
        raise ValueError(f"tracks.centroid must be (n_frames, n_animals, 2), got {centroid.shape}")
    position = smooth(interpolate_gaps(centroid, MAX_GAP_FRAMES), SMOOTH_FRAMES)
    velocity = np.gradient(position, axis=0) * fps if len(position) > 1 else 0 * position
    columns = {
        "velocity_x": velocity[..., 0],
        "velocity_y": velocity[..., 1],
        "speed": np.linalg.norm(velocity, axis=-1),
        "orientation_change": smooth(angular_velocity(tracks.orientation, fps), SMOOTH_FRAMES),
        "elongation": smooth(tracks.elongation, SMOOTH_FRAMES),
        "area": smooth(tracks.area, SMOOTH_FRAMES),
        "motion_energy": smooth(tracks.motion_energy, SMOOTH_FRAMES),
    }
    if food_zone is not None:
        columns["food_zone_distance"] = distance_to_zone(position, food_zone)
    n_animals = centroid.shape[1]
    if n_animals > 1:
        distance = pairwise_distance(position, position)
        ranked = gather_ranked(distance, rank_others(distance))
        for rank in range(n_animals - 1):
            columns[f"other{rank + 1}_distance"] = ranked[:, :, rank]
    names = list(columns)
    return FeatureSet(fill_missing(np.stack([columns[n] for n in names], axis=-1)), names)
