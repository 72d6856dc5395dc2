"""Motion prediction and gated optimal assignment of centroids to keypoints.

The classical tracker of the pose pipeline predicts where each keypoint will
be from the last accepted frames (constant velocity) and assigns the detected
centroids to the predictions by an optimal assignment (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``) in which a keypoint may stay
unassigned at the cost of the gate: a centroid farther than ``gate_px`` from
a prediction is never taken. The margin of an assignment is the cost gap to
the keypoint's second-best option, so a small margin marks an ambiguous label.
NaN means missing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.consensus import consensus_triangulate
from tools.geometry import CameraGroup, project, reprojection_error, triangulate

# Cost of forbidden pairs: far above any gate so the solver never picks one.
_FORBIDDEN = 1e9


@dataclass(frozen=True)
class Assignment:
    """Result of :func:`assign_points`.

    Attributes
    ----------
    index : np.ndarray
        ``(n_points,)`` int index into the candidates, -1 where unassigned.
    cost : np.ndarray
        ``(n_points,)`` distance to the assigned candidate, NaN where unassigned.
    margin : np.ndarray
        ``(n_points,)`` cost of the second-best option (the next candidate,
        or staying unassigned at the gate) minus ``cost``; NaN where unassigned.
    """

    index: np.ndarray
    cost: np.ndarray
    margin: np.ndarray


def predict_constant_velocity(frames: np.ndarray, points: np.ndarray, target_frame: int,
                              max_velocity_frames: int = 2) -> np.ndarray:
    """Predict ``points`` at ``target_frame`` from a short history, per point.

    Parameters
    ----------
    frames : np.ndarray
        ``(n_history,)`` frame indices of the history in the order they were
        tracked: increasing, or decreasing when tracking runs backward.
    points : np.ndarray
        ``(n_history, n_points, d)`` positions, NaN where missing.
    target_frame : int
        Frame to predict, after the last history frame in tracking order.
    max_velocity_frames : int
        The velocity (from the last two finite positions of a point) is
        extrapolated over at most this many frames, so that a point seen long
        ago is not thrown far away.

    Returns
    -------
    np.ndarray
        ``(n_points, d)``: last finite position plus velocity times the gap;
        the last finite position when only one is known; NaN when none is.
    """
    frames = np.asarray(frames, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or frames.shape != (points.shape[0],):
        raise ValueError(f"need frames (n_history,) and points (n_history, n_points, d), got "
                         f"{frames.shape} and {points.shape}")
    n_points, dims = points.shape[1:]
    finite = np.all(np.isfinite(points), axis=2)
    # Index of the last and second-to-last finite history entry per point (-1: none).
    order = np.arange(frames.size)[:, None] * np.ones((1, n_points), dtype=int)
    ranked = np.where(finite, order, -1)
    last = ranked.max(axis=0)
    ranked_before = np.where(order < last[None, :], ranked, -1)
    before = ranked_before.max(axis=0)
    columns = np.arange(n_points)
    prediction = np.full((n_points, dims), np.nan)
    known = last >= 0
    prediction[known] = points[last[known], columns[known]]
    moving = known & (before >= 0)
    if moving.any():
        step = (frames[last[moving]] - frames[before[moving]])[:, None]
        velocity = (points[last[moving], columns[moving]] - points[before[moving], columns[moving]]) / step
        gap = target_frame - frames[last[moving]]
        gap = (np.sign(gap) * np.minimum(np.abs(gap), max_velocity_frames))[:, None]
        prediction[moving] += velocity * gap
    return prediction


def assign_points(predicted: np.ndarray, candidates: np.ndarray, gate_px: float) -> Assignment:
    """Optimal one-to-one assignment of ``candidates`` to ``predicted`` points, with gating.

    Parameters
    ----------
    predicted : np.ndarray
        ``(n_points, 2)`` predicted positions, NaN where unknown (never assigned).
    candidates : np.ndarray
        ``(n_candidates, 2)`` detected positions.
    gate_px : float
        Largest distance at which a candidate may be assigned; leaving a
        point unassigned costs ``gate_px``.

    Returns
    -------
    Assignment
        Minimises the total distance plus ``gate_px`` per unassigned point;
        ties resolve in input order, so the result is deterministic.
    """
    predicted = _checked_points("predicted", predicted)
    candidates = _checked_points("candidates", candidates)
    if not gate_px > 0:
        raise ValueError(f"gate_px must be positive, got {gate_px}")
    n_points, n_candidates = predicted.shape[0], candidates.shape[0]
    distance, allowed = gated_distances(predicted, candidates, gate_px)
    if not allowed.any():  # a quarter of the tracker's calls: nothing within the gate
        unassigned = np.full(n_points, np.nan)
        return Assignment(index=np.full(n_points, -1), cost=unassigned, margin=unassigned.copy())
    # One private "stay unassigned" column per point, priced at the gate.
    cost = np.full((n_points, n_candidates + n_points), _FORBIDDEN)
    np.copyto(cost[:, :n_candidates], distance, where=allowed)
    points = np.arange(n_points)
    cost[points, n_candidates + points] = gate_px
    rows, cols = linear_sum_assignment(cost)
    real = cols < n_candidates
    index = np.full(n_points, -1)
    index[rows[real]] = cols[real]
    assigned_rows, assigned_cols = rows[real], cols[real]
    chosen_cost = np.full(n_points, np.nan)
    chosen_cost[assigned_rows] = distance[assigned_rows, assigned_cols]
    # Second-best option of an assigned point: another allowed candidate or the gate.
    others = np.where(allowed, distance, np.inf)
    others[assigned_rows, assigned_cols] = np.inf
    second = np.minimum(others.min(axis=1, initial=np.inf), gate_px)
    margin = np.full(n_points, np.nan)
    margin[assigned_rows] = second[assigned_rows] - chosen_cost[assigned_rows]
    return Assignment(index=index, cost=chosen_cost, margin=margin)


def gated_distances(predicted: np.ndarray, candidates: np.ndarray, gate_px: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(n_points, n_candidates)`` and which of them :func:`assign_points` allows.

    A pair is allowed when its distance is at most ``gate_px``; NaN distances
    never are (nor infinite ones, with a finite gate). ``predicted (n_points,
    2)`` and ``candidates (n_candidates, 2)`` as float64 arrays.
    """
    # The tracker calls this tens of thousands of times on a few points: few numpy calls
    # (np.linalg.norm's own formula).
    offset = predicted[:, None, :] - candidates[None, :, :]
    distance = np.sqrt(np.add.reduce(offset * offset, axis=2))
    return distance, distance <= gate_px


def _checked_points(name: str, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {points.shape}")
    return points


def recover_lost(group: CameraGroup, centroids: Sequence[np.ndarray], assignment: np.ndarray,
                 predicted_3d: np.ndarray, lost: np.ndarray, search_radius_px: float,
                 threshold_px: float, max_distance: float, min_cameras: int = 3,
                 max_candidates: int = 4) -> np.ndarray:
    """Find lost keypoints again among the centroids no keypoint holds, by cross-view consensus.

    For each lost keypoint (in order), every camera offers its free centroids
    within ``search_radius_px`` of the keypoint's predicted projection (at
    most ``max_candidates``, nearest first);
    :func:`tools.consensus.consensus_triangulate` picks one per camera so that
    most cameras agree. The keypoint takes them when at least ``min_cameras``
    cameras agree within ``threshold_px`` (spurious spots seldom line up in 3
    views) and the agreed 3D point lies within ``max_distance`` of the
    keypoint's prediction and nearer to it than to any other keypoint's
    prediction (so a lost paw does not take its neighbour's dot).

    Parameters
    ----------
    group : CameraGroup
        The calibrated cameras.
    centroids : Sequence[np.ndarray]
        One ``(n_c, 2)`` array per camera.
    assignment : np.ndarray
        ``(n_cameras, n_keypoints)`` centroid index, -1 for none.
    predicted_3d : np.ndarray
        ``(n_keypoints, 3)`` predicted points, NaN where unknown (never recovered).
    lost : np.ndarray
        ``(n_keypoints,)`` bool, the keypoints to look for.

    Returns
    -------
    np.ndarray
        ``(n_cameras, n_keypoints)`` the assignment with the recovered views set.
    """
    assignment = np.array(assignment, dtype=np.int64)
    n_cameras = len(group)
    if assignment.ndim != 2 or assignment.shape[0] != n_cameras or len(centroids) != n_cameras:
        raise ValueError(f"need one centroid array per camera and assignment ({n_cameras}, "
                         f"n_keypoints), got {len(centroids)} and {assignment.shape}")
    predicted_3d = np.asarray(predicted_3d, dtype=np.float64)
    predicted_2d = project(group, predicted_3d)
    searched = np.flatnonzero(lost & np.all(np.isfinite(predicted_3d), axis=1))
    if searched.size == 0:
        return assignment
    # Distances do not depend on the assignment: one pass for every searched keypoint.
    pixels = _padded_centroids(centroids, max_candidates)  # (C, M, 2)
    offset = pixels[:, None] - predicted_2d[:, searched, None]  # (C, L, M, 2)
    distance = np.sqrt(offset[..., 0] * offset[..., 0] + offset[..., 1] * offset[..., 1])
    within = distance <= search_radius_px  # False for padding (NaN)
    cameras = np.arange(n_cameras)[:, None]
    for row, keypoint in enumerate(searched):
        near = within[:, row] & _free_centroids(assignment, pixels.shape[1])
        if np.count_nonzero(near.any(axis=1)) < min_cameras:
            continue
        order = np.argsort(np.where(near, distance[:, row], np.inf), axis=1,
                           kind="stable")[:, :max_candidates]
        offered = np.take_along_axis(near, order, axis=1)
        index = np.where(offered, order, -1)
        candidates = np.where(offered[..., None], pixels[cameras, order], np.nan)[:, None]
        result = consensus_triangulate(group, candidates, threshold_px)
        distances = np.linalg.norm(predicted_3d - result.points_3d[0], axis=1)
        own = distances[keypoint]
        if (result.n_inliers[0] >= min_cameras and own <= max_distance
                and own <= np.nanmin(distances)):
            chosen = result.chosen[:, 0]
            used = chosen >= 0
            assignment[used, keypoint] = index[used, chosen[used]]
    return assignment


@dataclass(frozen=True)
class FreeDots:
    """Result of :func:`free_dot_points`: 3D points of dots no keypoint holds.

    Attributes
    ----------
    points_3d : np.ndarray
        ``(n_points, 3)`` consensus points, most cameras first.
    views : np.ndarray
        ``(n_cameras, n_points)`` centroid index each camera agreed with, -1 for none.
    error_px : np.ndarray
        ``(n_cameras, n_points)`` reprojection error in each agreeing camera, NaN elsewhere.
    """

    points_3d: np.ndarray
    views: np.ndarray
    error_px: np.ndarray


def free_dot_points(group: CameraGroup, centroids: Sequence[np.ndarray], assignment: np.ndarray,
                    near_3d: np.ndarray, threshold_px: float, min_cameras: int = 3,
                    max_candidates: int = 8, max_points: int = 4) -> FreeDots:
    """Triangulate the dots that no keypoint holds, one consensus point at a time.

    Each camera offers its free centroids (none of ``assignment``'s), at most
    ``max_candidates`` nearest the projection of ``near_3d (3,)`` (the
    animal); :func:`tools.consensus.consensus_triangulate` picks the point
    most cameras agree on within ``threshold_px``, its centroids leave the
    pool, and the search goes on while at least ``min_cameras`` cameras agree
    (spurious spots seldom line up in 3 views), up to ``max_points`` points.

    Parameters
    ----------
    centroids : Sequence[np.ndarray]
        One ``(n_c, 2)`` array per camera.
    assignment : np.ndarray
        ``(n_cameras, n_keypoints)`` centroid index, -1 for none.
    """
    n_cameras = len(group)
    assignment = np.asarray(assignment, dtype=np.int64)
    if assignment.ndim != 2 or assignment.shape[0] != n_cameras or len(centroids) != n_cameras:
        raise ValueError(f"need one centroid array per camera and assignment ({n_cameras}, "
                         f"n_keypoints), got {len(centroids)} and {assignment.shape}")
    centre = project(group, np.asarray(near_3d, dtype=np.float64).reshape(1, 3))[:, 0]
    pools = [_free_nearest(xy, assignment[camera], centre[camera], max_candidates)
             for camera, xy in enumerate(centroids)]
    points, views, errors = [], [], []
    while len(points) < max_points and sum(pool.size > 0 for pool in pools) >= min_cameras:
        # As wide as the largest pool: most cameras have 0-2 free centroids, and the
        # hypotheses grow with the square of the width.
        candidates = np.full((n_cameras, 1, max(pool.size for pool in pools), 2), np.nan)
        for camera, pool in enumerate(pools):
            candidates[camera, 0, : pool.size] = centroids[camera][pool]
        result = consensus_triangulate(group, candidates, threshold_px)
        if result.n_inliers[0] < min_cameras:
            break
        chosen = result.chosen[:, 0]
        view = np.full(n_cameras, -1)
        for camera in np.flatnonzero(chosen >= 0):
            view[camera] = pools[camera][chosen[camera]]
            pools[camera] = np.delete(pools[camera], chosen[camera])
        points.append(result.points_3d[0])
        views.append(view)
        errors.append(result.reprojection_error_px[:, 0])
    if not points:
        return FreeDots(np.empty((0, 3)), np.empty((n_cameras, 0), np.int64),
                        np.empty((n_cameras, 0)))
    return FreeDots(np.array(points), np.array(views).T, np.array(errors).T)


def _padded_centroids(centroids: Sequence[np.ndarray], min_width: int) -> np.ndarray:
    """``(n_cameras, width, 2)`` centroid pixels, NaN-padded to at least ``min_width`` columns."""
    width = max([min_width] + [len(xy) for xy in centroids])
    pixels = np.full((len(centroids), width, 2), np.nan)
    for camera, xy in enumerate(centroids):
        pixels[camera, :len(xy)] = np.reshape(xy, (-1, 2))
    return pixels


def _free_centroids(assignment: np.ndarray, width: int) -> np.ndarray:
    """``(n_cameras, width)`` bool: the centroid slots that no keypoint of ``assignment`` holds."""
    held = np.zeros((assignment.shape[0], width + 1), dtype=bool)  # column -1: unassigned
    held[np.arange(assignment.shape[0])[:, None], assignment] = True
    return ~held[:, :width]


def _free_nearest(xy: np.ndarray, held: np.ndarray, point: np.ndarray, max_candidates: int,
                  radius_px: float = np.inf) -> np.ndarray:
    """Indices of the centroids ``xy (n, 2)`` that ``held`` (one camera's assignment) leaves free,
    nearest ``point (2,)`` first, within ``radius_px``, at most ``max_candidates``."""
    is_free = np.ones(len(xy), dtype=bool)
    is_free[held[held >= 0]] = False
    free = np.flatnonzero(is_free)
    distance = np.linalg.norm(xy[free] - point, axis=1)
    order = np.argsort(distance, kind="stable")
    return free[order][distance[order] <= radius_px][:max_candidates]


@dataclass(frozen=True)
class TwinSplit:
    """Result of :func:`split_shared_views`: one keypoint's views parted into two consistent points.

    Attributes
    ----------
    first, second : np.ndarray
        ``(n_cameras,)`` bool, the views of each part (disjoint, 2 or more each).
    first_3d, second_3d : np.ndarray
        ``(3,)`` each part's triangulated point.
    """

    first: np.ndarray
    second: np.ndarray
    first_3d: np.ndarray
    second_3d: np.ndarray


def split_shared_views(group: CameraGroup, points_2d: np.ndarray, max_part_error_px: float,
                       min_joint_error_px: float, min_separation_px: float) -> TwinSplit | None:
    """Part one keypoint's labelled views ``points_2d (n_cameras, 2)`` into two consistent points.

    Two paws close together: where a paw's dot is hidden, its label may sit on
    its twin's dot a few pixels away, and Stage 4 keeps it as an inlier. The
    label then triangulates one point from two dots (its views disagree by a
    few pixels) while each dot's views agree closely. Every partition of the
    labelled views into two parts of 2 or more is triangulated; the one whose
    worse part has the lowest largest reprojection error is returned when
    that error is at most ``max_part_error_px``, all views together leave
    a largest error of at least ``min_joint_error_px`` and the two points
    project at least ``min_separation_px`` apart in the median labelled view
    (two parts of one dot's noisy views triangulate to about one point);
    else None (also with fewer than 4 views). NaN marks an unlabelled view.
    """
    labelled = np.flatnonzero(np.all(np.isfinite(points_2d), axis=1))
    if labelled.size < 4:
        return None
    n_cameras = points_2d.shape[0]
    joint = triangulate(group, points_2d[:, None])
    if not np.nanmax(reprojection_error(group, joint, points_2d[:, None])) >= min_joint_error_px:
        return None
    # Partitions with the first labelled view in the first part, each part of 2 or more.
    rest = labelled[1:]
    firsts = []
    for size in range(1, labelled.size - 2):
        for chosen in combinations(rest.tolist(), size):
            part = np.zeros(n_cameras, dtype=bool)
            part[[labelled[0], *chosen]] = True
            firsts.append(part)
    first = np.array(firsts)  # (P, C)
    second = ~first & np.isin(np.arange(n_cameras), labelled)[None]
    parts = np.concatenate([first, second])  # (2P, C)
    views = np.where(parts.T[..., None], points_2d[:, None], np.nan)  # (C, 2P, 2)
    points_3d = triangulate(group, views)
    worst = np.nanmax(reprojection_error(group, points_3d, views), axis=0)  # (2P,)
    n_parts = len(firsts)
    score = np.maximum(worst[:n_parts], worst[n_parts:])
    best = int(np.argmin(score))
    if not score[best] <= max_part_error_px:
        return None
    projected = project(group, points_3d[[best, n_parts + best]])[labelled]  # (L, 2, 2)
    if not np.median(np.linalg.norm(projected[:, 0] - projected[:, 1], axis=1)) >= min_separation_px:
        return None
    return TwinSplit(first=first[best], second=second[best], first_3d=points_3d[best],
                     second_3d=points_3d[n_parts + best])
