"""Stage 4: RANSAC triangulation and cross-view correction.

:func:`refine_cross_view` takes one frame's centroid assignment,
triangulates each keypoint from the cameras that agree
(:func:`tools.consensus.consensus_normalized`) and repairs the others: it
re-assigns them to a nearby centroid, recovers unassigned views, drops
outliers and settles two keypoints claiming one centroid. Hypotheses are
rows of arrays; nothing loops over points or hypotheses in Python.

Shapes, camera axis first: ``assignment (n_cameras, n_keypoints)`` centroid
indices, -1 for none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.consensus import consensus_normalized
from tools.geometry import (
    CameraGroup,
    RigArrays,
    nanmean_cameras,
    project_rig,
    rig_arrays,
    solve_inhomogeneous,
    triangulate_normalized,
    undistort_rig,
    view_entries,
)


@dataclass(frozen=True)
class RefineParams:
    """Thresholds of :func:`refine_cross_view`, in pixels.

    Attributes
    ----------
    inlier_threshold_px : float
        A camera agrees with a keypoint's 3D point when its reprojection
        error is below this. 8 px is about 4x the error of a well-assigned
        quantum dot (centroid noise plus calibration error) and well under
        the spacing of neighbouring dots, so a wrong centroid rarely passes.
    lock_threshold_px : float
        Cameras at or below this error are trusted as they are and anchor
        the re-triangulation of every alternative; 3 px sits above the bulk
        of correct assignments, so good views are not second-guessed.
    search_radius_px : float
        Alternatives are centroids within this distance of the keypoint's
        projection. 40 px covers the image-space error of a point
        triangulated from only two locked views; hypotheses beyond the
        inlier threshold are scored but can only be accepted when
        re-triangulation pulls them under it.
    max_alternatives : int
        At most this many nearest centroids are scored per camera.
    min_cameras : int
        Fewest agreeing cameras for a keypoint to be triangulated.
    """

    inlier_threshold_px: float = 8.0
    lock_threshold_px: float = 3.0
    search_radius_px: float = 40.0
    max_alternatives: int = 4
    min_cameras: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.lock_threshold_px <= self.inlier_threshold_px:
            raise ValueError("need 0 < lock_threshold_px <= inlier_threshold_px, got "
                             f"{self.lock_threshold_px} and {self.inlier_threshold_px}")
        if not self.search_radius_px > 0:
            raise ValueError(f"search_radius_px must be positive, got {self.search_radius_px}")
        if self.max_alternatives < 1 or self.min_cameras < 2:
            raise ValueError("need max_alternatives >= 1 and min_cameras >= 2, got "
                             f"{self.max_alternatives} and {self.min_cameras}")


@dataclass(frozen=True)
class AssignmentChange:
    """One assignment that :func:`refine_cross_view` changed.

    ``reason`` is one of ``reassigned_outlier`` (a disagreeing view moved to
    a centroid that agrees), ``recovered_unassigned`` (a view without a
    label got one), ``dropped_outlier`` (no nearby centroid agrees),
    ``dropped_conflict`` (another keypoint won the centroid) and ``swap``
    (two keypoints exchanged centroids in this camera). Centroid -1 is none.
    """

    camera: int
    keypoint: int
    old_centroid: int
    new_centroid: int
    reason: str


@dataclass(frozen=True)
class RefineResult:
    """One frame after cross-view correction.

    Attributes
    ----------
    points_3d : np.ndarray
        ``(n_keypoints, 3)``, NaN where fewer than ``min_cameras`` agree.
    assignment : np.ndarray
        ``(n_cameras, n_keypoints)`` int centroid index, -1 for none.
    reprojection_error_px : np.ndarray
        ``(n_cameras, n_keypoints)``, NaN where unassigned or not triangulated.
    inlier : np.ndarray
        ``(n_cameras, n_keypoints)`` bool, error below the inlier threshold.
    ncams : np.ndarray
        ``(n_keypoints,)`` int cameras used for ``points_3d`` (0 where NaN).
    mean_error_px : np.ndarray
        ``(n_keypoints,)`` mean error over the cameras used, NaN where none.
    changes : tuple[AssignmentChange, ...]
        Every changed assignment and why, by camera then keypoint.
    """

    points_3d: np.ndarray
    assignment: np.ndarray
    reprojection_error_px: np.ndarray
    inlier: np.ndarray
    ncams: np.ndarray
    mean_error_px: np.ndarray
    changes: tuple[AssignmentChange, ...]


def refine_cross_view(group: CameraGroup, centroids: Sequence[np.ndarray],
                      assignment: np.ndarray, params: RefineParams = RefineParams()
                      ) -> RefineResult:
    """Stage 4 on one frame: triangulate each keypoint by consensus and repair its views.

    Per keypoint: the camera subset with the most inliers (ties by lower
    error) is re-triangulated; cameras within ``lock_threshold_px`` are
    locked. Every other camera, assigned or not, scores up to
    ``max_alternatives`` centroids within ``search_radius_px`` of the
    projection by re-triangulating each with the locked cameras, and takes
    the one with the lowest mean error if its own error is under
    ``inlier_threshold_px``; otherwise its label is dropped. Two keypoints
    claiming one centroid in a camera are settled by the lowest total error
    (an optimal assignment where a dropped claim costs the inlier threshold),
    which also performs swaps.

    Parameters
    ----------
    group : CameraGroup
        The calibrated cameras.
    centroids : Sequence[np.ndarray]
        One ``(n_centroids, 2)`` pixel array per camera, in detection order.
    assignment : np.ndarray
        ``(n_cameras, n_keypoints)`` int index into each camera's centroids, -1 for none.
    params : RefineParams
        Thresholds.

    Returns
    -------
    RefineResult
        Keypoints whose views never agree keep their labels, untriangulated.
    """
    assignment = np.asarray(assignment)
    if assignment.ndim != 2:
        raise ValueError(f"assignment must have shape ({len(group)}, n_keypoints), "
                         f"got {assignment.shape}")
    return refine_cross_view_batch(group, [centroids], assignment[None], params)[0]


def refine_cross_view_batch(group: CameraGroup, centroids: Sequence[Sequence[np.ndarray]],
                            assignment: np.ndarray, params: RefineParams = RefineParams()
                            ) -> list[RefineResult]:
    """:func:`refine_cross_view` on many frames in one vectorized pass.

    Parameters
    ----------
    centroids : Sequence[Sequence[np.ndarray]]
        Per frame, one ``(n_centroids, 2)`` array per camera.
    assignment : np.ndarray
        ``(n_frames, n_cameras, n_keypoints)`` int, -1 for none.

    Returns
    -------
    list[RefineResult]
        One per frame, identical to calling :func:`refine_cross_view` on each.
    """
    rig = rig_arrays(group)
    pixels, current, frame = _frame_arrays(len(group), centroids, assignment)
    normalized = undistort_rig(rig, pixels)
    observed_px, observed = _observe(pixels, frame, current), _observe(normalized, frame, current)
    consensus = consensus_normalized(rig, observed_px[:, :, None], observed[:, :, None],
                                     params.inlier_threshold_px)
    locked = consensus.reprojection_error_px <= params.lock_threshold_px
    few = locked.sum(axis=0) < params.min_cameras
    locked[:, few] = consensus.chosen[:, few] >= 0
    usable = locked.sum(axis=0) >= params.min_cameras
    locked &= usable
    anchor = np.where(locked[..., None], observed, np.nan)
    anchor_points = _triangulate_reusing(rig, anchor, consensus.points_3d,
                                         (locked == (consensus.chosen >= 0)).all(axis=0))
    options, option_cost, target = _score_alternatives(
        rig, pixels, normalized, frame, observed_px, anchor, locked, usable, anchor_points,
        params)
    proposal = np.where(locked | ~usable, current, -1)
    proposal[target] = options[:, 0]
    locked_mean = nanmean_cameras(np.where(locked, consensus.reprojection_error_px, np.nan))
    claim_cost = np.where(locked, locked_mean, params.inlier_threshold_px)
    claim_cost[target] = option_cost[:, 0]
    final, lost = _settle_conflicts(proposal, claim_cost, options, option_cost, target, frame,
                                    pixels.shape[2], params.inlier_threshold_px)
    same_views = np.where(consensus.chosen >= 0, final == current, final < 0).all(axis=0)
    return _assemble(rig, pixels, normalized, frame, current, final, lost, usable,
                     np.where(same_views[:, None], consensus.points_3d, np.nan), params)


def _frame_arrays(n_cameras: int, centroids: Sequence[Sequence[np.ndarray]],
                  assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad and check the inputs.

    Returns centroid pixels ``(n_cameras, n_frames, max_centroids, 2)``
    NaN-padded, the assignment as ``(n_cameras, n_frames * n_keypoints)``
    and the frame of each of those points.
    """
    assignment = np.asarray(assignment)
    if assignment.ndim != 3 or assignment.shape[1] != n_cameras or len(centroids) != len(
            assignment) or not np.issubdtype(assignment.dtype, np.integer):
        raise ValueError(f"assignment must be int of shape (n_frames={len(centroids)}, "
                         f"{n_cameras}, n_keypoints), got {assignment.dtype} {assignment.shape}")
    n_frames, _, n_keypoints = assignment.shape
    arrays = []
    for index, per_camera in enumerate(centroids):
        if len(per_camera) != n_cameras:
            raise ValueError(f"frame {index}: expected {n_cameras} centroid arrays, "
                             f"got {len(per_camera)}")
        frame_arrays = [np.asarray(points, dtype=np.float64).reshape(-1, 2) if np.size(points)
                        else np.empty((0, 2)) for points in per_camera]
        counts = np.array([len(points) for points in frame_arrays])
        bad = (assignment[index] < -1) | (assignment[index] >= counts[:, None])
        if bad.any():  # all cameras checked at once, the first bad one reported
            camera = int(np.argmax(bad.any(axis=1)))
            raise ValueError(f"frame {index} camera {camera}: assignment "
                             f"{assignment[index, camera][bad[camera]].tolist()} outside "
                             f"-1..{counts[camera] - 1}")
        arrays.extend(frame_arrays)
    width = max([1] + [len(points) for points in arrays])
    pixels = np.full((n_frames * n_cameras, width, 2), np.nan)
    for row, points in enumerate(arrays):
        pixels[row, :len(points)] = points
    pixels = pixels.reshape(n_frames, n_cameras, width, 2).transpose(1, 0, 2, 3)
    current = assignment.transpose(1, 0, 2).reshape(n_cameras, -1).astype(np.int64)
    return pixels, current, np.repeat(np.arange(n_frames), n_keypoints)


def _observe(values: np.ndarray, frame: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``values (n_cameras, n_frames, n_centroids, 2)`` at ``chosen (n_cameras, n_points)``."""
    cameras = np.arange(values.shape[0])[:, None]
    taken = values[cameras, frame[None, :], np.maximum(chosen, 0)]
    taken[chosen < 0] = np.nan
    return taken


def _score_alternatives(rig: RigArrays, pixels: np.ndarray, normalized: np.ndarray,
                        frame: np.ndarray, observed_px: np.ndarray, anchor: np.ndarray,
                        locked: np.ndarray, usable: np.ndarray, anchor_points: np.ndarray,
                        params: RefineParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank the centroids near each target view's projection.

    Targets are the (camera, point) cells of usable points that are not
    locked; ``anchor (n_cameras, n_points, 2)`` are the locked views'
    normalized coordinates (NaN elsewhere) and ``anchor_points (n_points, 3)``
    are triangulated from them. Returns ``options (n_targets, n_alternatives)`` centroid
    indices, best first, -1 past the acceptable ones, their mean pixel errors
    ``option_cost`` (same shape) and the ``(n_cameras, n_points)`` target mask.
    """
    target = usable[None, :] & ~locked
    camera, point = np.nonzero(target)
    locked_entries = view_entries(rig.dlt_basis, anchor[:, point]).sum(axis=1)  # (10, T)
    in_frame = frame[point]
    index, distance = _nearby_centroids(rig, pixels, camera, in_frame, anchor_points[point],
                                        params)
    nearby_px = pixels[camera[:, None], in_frame[:, None], index]  # (T, A, 2)
    nearby = normalized[camera[:, None], in_frame[:, None], index]
    own_entries = view_entries(rig.dlt_basis[camera], nearby)  # (10, T, A)
    hypotheses = solve_inhomogeneous(locked_entries[:, :, None] + own_entries)  # (T, A, 3)
    projected = project_rig(rig, hypotheses)  # (C, T, A, 2)
    locked_error = np.linalg.norm(projected - observed_px[:, point, None, :], axis=3)
    locked_here = locked[:, point, None]
    locked_sum = np.where(locked_here, locked_error, 0.0).sum(axis=0)
    rows = np.arange(len(point))
    own_error = np.linalg.norm(projected[camera, rows] - nearby_px, axis=2)
    mean_error = (locked_sum + own_error) / (locked_here.sum(axis=0) + 1)
    acceptable = (distance <= params.search_radius_px) & (own_error < params.inlier_threshold_px)
    rank = np.argsort(np.where(acceptable, mean_error, np.inf), axis=1, kind="stable")
    ranked = (rows[:, None], rank)  # plain indexing: np.take_along_axis costs more on tiny arrays
    options = np.where(acceptable[ranked], index[ranked], -1)
    return options, mean_error[ranked], target


def _nearby_centroids(rig: RigArrays, pixels: np.ndarray, camera: np.ndarray, frame: np.ndarray,
                      points_3d: np.ndarray, params: RefineParams
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The ``max_alternatives`` centroids nearest each target's projection.

    ``camera``, ``frame (n_targets,)`` and ``points_3d (n_targets, 3)`` ->
    centroid indices and pixel distances ``(n_targets, n_alternatives)``,
    nearest first; distance inf for padding.
    """
    projected = project_rig(rig, points_3d)[camera, np.arange(len(camera))]  # (T, 2)
    offset = pixels[camera, frame] - projected[:, None, :]  # (T, M, 2)
    distance = np.hypot(offset[..., 0], offset[..., 1])
    distance = np.where(np.isnan(distance), np.inf, distance)
    index = np.argsort(distance, axis=1, kind="stable")[:, :params.max_alternatives]
    return index, distance[np.arange(len(index))[:, None], index]


def _settle_conflicts(proposal: np.ndarray, claim_cost: np.ndarray, options: np.ndarray,
                      option_cost: np.ndarray, target: np.ndarray, frame: np.ndarray,
                      n_centroids: int, drop_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Give each centroid claimed twice in a camera and frame to one keypoint.

    Only (camera, frame) cells with a double claim are solved, each as an
    optimal assignment of that frame's keypoints to their acceptable
    centroids, where leaving a keypoint without one costs ``drop_cost``.
    Returns the final assignment and the cells that lost their first choice.
    """
    final = proposal.copy()
    camera, point = np.nonzero(proposal >= 0)
    cell = camera * (frame.max(initial=0) + 1) + frame[point]
    keys = cell * n_centroids + proposal[camera, point]
    claimed_twice = np.bincount(keys)[keys] > 1
    if not claimed_twice.any():  # no centroid claimed twice: nothing to settle
        return final, np.zeros(proposal.shape, dtype=bool)
    # Each cell's claims, ``(C, P, n_alternatives)``: a target's acceptable options, another
    # labelled cell its proposal; -1 pads. Cells with neither claim nothing.
    claimed = np.full(proposal.shape + options.shape[1:], -1)
    claimed[..., 0] = proposal
    claimed[target] = options
    costs = np.zeros(claimed.shape)
    costs[..., 0] = claim_cost
    costs[target] = option_cost
    claims = target | (proposal >= 0)
    for conflict in np.unique(cell[claimed_twice]):
        first = np.argmax(cell == conflict)
        here = camera[first]
        points = np.flatnonzero((frame == frame[point[first]]) & claims[here])
        final[here, points] = _optimal_claims(claimed[here, points], costs[here, points], drop_cost)
    return final, (final != proposal)


def _optimal_claims(centroids: np.ndarray, costs: np.ndarray, drop_cost: float) -> np.ndarray:
    """Minimum-cost matching of claims ``centroids, costs (n_claims, n_options)`` (-1 pads).

    Returns each claim's centroid, -1 where dropped.
    """
    offered = centroids >= 0
    columns = np.unique(centroids[offered])
    n_claims, n_columns = len(centroids), len(columns)
    cost = np.full((n_claims, n_columns + n_claims), 1e9)
    cost[:, n_columns:][np.diag_indices(n_claims)] = drop_cost
    rows, slots = np.nonzero(offered)
    cost[rows, np.searchsorted(columns, centroids[rows, slots])] = costs[rows, slots]
    rows, picked = linear_sum_assignment(cost)
    taken = np.full(n_claims, -1)
    real = picked < n_columns
    taken[rows[real]] = columns[picked[real]]
    return taken


def _assemble(rig: RigArrays, pixels: np.ndarray, normalized: np.ndarray, frame: np.ndarray,
              current: np.ndarray, final: np.ndarray, lost: np.ndarray, usable: np.ndarray,
              known_points: np.ndarray, params: RefineParams) -> list[RefineResult]:
    """Triangulate the final assignment and split the arrays into per-frame results.

    ``known_points (n_points, 3)``: the consensus points whose views the final
    assignment kept, NaN elsewhere; only the others are triangulated again.
    """
    observed = _observe(normalized, frame, final)
    observed[:, ~usable] = np.nan
    ncams = np.isfinite(observed[..., 0]).sum(axis=0)
    triangulable = ncams >= params.min_cameras
    observed[:, ~triangulable] = np.nan
    known = triangulable & np.isfinite(known_points).all(axis=1)
    points_3d = _triangulate_reusing(rig, observed, known_points, known)
    errors = np.linalg.norm(project_rig(rig, points_3d) - _observe(pixels, frame, final), axis=2)
    ncams = np.where(triangulable, ncams, 0)
    mean_error = nanmean_cameras(errors)
    n_keypoints = len(frame) // max(1, pixels.shape[1])
    results = []
    for index in range(pixels.shape[1]):
        part = slice(index * n_keypoints, (index + 1) * n_keypoints)
        results.append(RefineResult(
            points_3d[part].copy(), final[:, part].copy(), errors[:, part].copy(),
            errors[:, part] < params.inlier_threshold_px, ncams[part].copy(),
            mean_error[part].copy(), _changes(current[:, part], final[:, part], lost[:, part])))
    return results


def _triangulate_reusing(rig: RigArrays, normalized: np.ndarray, known_points: np.ndarray,
                         known: np.ndarray) -> np.ndarray:
    """DLT of ``normalized (n_cameras, n_points, 2)``, taking ``known_points`` where ``known``.

    Stage 4 mostly keeps the consensus views of a keypoint: only the points
    whose views changed are solved again.
    """
    points_3d = np.where(known[:, None], known_points, np.nan)
    if not known.all():
        points_3d[~known] = triangulate_normalized(rig, normalized[:, ~known])
    return points_3d


def _changes(current: np.ndarray, final: np.ndarray, lost: np.ndarray
             ) -> tuple[AssignmentChange, ...]:
    """The changed cells of one frame ``(n_cameras, n_keypoints)``, with reasons."""
    changes = []
    for camera, keypoint in zip(*np.nonzero(final != current), strict=True):
        old, new = int(current[camera, keypoint]), int(final[camera, keypoint])
        swapped = (current[camera] == new) & (final[camera] == old)
        if old >= 0 and new >= 0:
            reason = "swap" if swapped.any() else "reassigned_outlier"
        elif old < 0:
            reason = "recovered_unassigned"
        else:
            reason = "dropped_conflict" if lost[camera, keypoint] else "dropped_outlier"
        changes.append(AssignmentChange(int(camera), int(keypoint), old, new, reason))
    return tuple(changes)
