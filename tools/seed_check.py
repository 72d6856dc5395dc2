"""Check tracked identities against the seed frames the tracker reaches.

Tracking runs forward from the first seed frame, and every later seed frame
re-anchors it with hand labels. The frame just before such a seed frame was
tracked, so the two can be compared: a label whose point sits on another
keypoint's seed point was following the wrong dot. Two neighbouring
keypoints exchanged on the way are what no distance or reprojection check
sees when they are 10 mm apart (6 cameras, seeds at frames 100, 300 and 450
of the shipped motion: back_bottom and tail_base exchanged from frame 101 to
299; bench/results/pose.md, session 10). The labels of that keypoint are
then untrusted back to where its track began: the frame after it was last
missing or in doubt, or the previous seed frame.

Shapes: ``points_3d (n_frames, n_keypoints, 3)`` in millimetres, NaN where
missing, one row per frame in frame order; ``is_seed (n_frames,)`` bool.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.camera import check_shape


def contradicted_by_seeds(points_3d: np.ndarray, is_seed: np.ndarray,
                          suspect: np.ndarray | None = None, min_offset_mm: float = 5.0
                          ) -> np.ndarray:
    """``(n_frames, n_keypoints)`` bool: tracked labels that the next seed frame contradicts.

    At every seed frame after the first one whose previous frame was
    tracked, each tracked point is carried one frame on at its last
    velocity (where the frame before shows it) and the carried points are
    matched to the seed frame's points by optimal assignment on their
    distances: a keypoint matched to another keypoint's seed point, more
    than ``min_offset_mm`` from its own, is contradicted. Its labels are
    marked from the previous frame back to where its track began: the walk
    stops at a frame where it is missing or ``suspect (n_frames,
    n_keypoints)`` (where quality control saw its identity in doubt: the
    trouble in which it most likely took the wrong dot), or at the previous
    seed frame. Seed frames themselves are never marked.
    """
    points_3d = check_shape("points_3d", points_3d, (None, None, 3))
    is_seed = np.asarray(is_seed, dtype=bool)
    check_shape("is_seed", is_seed, (points_3d.shape[0],))
    stops = ~np.all(np.isfinite(points_3d), axis=2)
    if suspect is not None:
        check_shape("suspect", suspect, points_3d.shape[:2])
        stops |= np.asarray(suspect, dtype=bool)
    marked = np.zeros(points_3d.shape[:2], dtype=bool)
    seeds = np.flatnonzero(is_seed)
    for seed in seeds[1:]:
        if is_seed[seed - 1]:
            continue
        carried = points_3d[seed - 1]
        if seed >= 2 and not is_seed[seed - 2]:
            velocity = carried - points_3d[seed - 2]
            carried = np.where(np.isfinite(velocity), carried + velocity, carried)
        contradicted = _contradicted(carried, points_3d[seed], min_offset_mm)
        previous_seed = seeds[seeds < seed].max()
        for keypoint in np.flatnonzero(contradicted):
            frame = seed - 1
            while frame > previous_seed and not stops[frame, keypoint]:
                marked[frame, keypoint] = True
                frame -= 1
    return marked


def _contradicted(tracked: np.ndarray, seed: np.ndarray, min_offset_mm: float) -> np.ndarray:
    """``(K,)`` bool: ``tracked (K, 3)`` points that optimal matching puts on another keypoint's ``seed (K, 3)`` point.

    Only keypoints present in both frames take part: two labels on each
    other's dots match each other's seed points even when the animal moved a
    few millimetres in between, while a keypoint the seed frame does not
    show (or the tracker lost) is no evidence either way.
    """
    contradicted = np.zeros(tracked.shape[0], dtype=bool)
    both = np.flatnonzero(np.all(np.isfinite(tracked), axis=1) & np.all(np.isfinite(seed), axis=1))
    if both.size:
        cost = np.linalg.norm(tracked[both, None, :] - seed[None, both, :], axis=2)
        matched_rows, matched_cols = linear_sum_assignment(cost)
        keypoints, seed_keypoints = both[matched_rows], both[matched_cols]
        own = np.linalg.norm(tracked[keypoints] - seed[keypoints], axis=1)
        contradicted[keypoints[(keypoints != seed_keypoints) & (own > min_offset_mm)]] = True
    return contradicted
