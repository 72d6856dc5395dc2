"""Steps of the pose graph's nodes: requests from the window, Stage 4, records, window moves.

The graph (:mod:`graphs.pose`) only wires; what its nodes compute between a
backend call and the next state lives here, on arrays from
:class:`agent.pose_frames.FrameStore`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from agent.pose_frames import FrameRecord, FrameStore
from tools.assignment import (
    assign_points,
    free_dot_points,
    predict_constant_velocity,
    recover_lost,
    split_shared_views,
)
from tools.body_distances import (
    DistanceModel,
    body_deviation,
    body_deviations,
    count_deviating,
    distance_model,
    known_keypoints,
    misfit_keypoints,
    pair_exchange,
    region_relabeling,
)
from tools.body_order import (
    OrderPair,
    agreeing_references,
    chain_end_reversed,
    lasting,
    order_exchanges,
    order_pairs,
    pair_behind_axis_front,
)
from tools.body_side import (
    SideModel,
    lateral_direction,
    lies_on_sides,
    order_by_side,
    order_vouches,
    reversed_vouching_pairs,
    rig_up,
    side_model,
)
from tools.body_template import (
    TemplateModel,
    axis_search,
    labelling_fit,
    place_assignment,
    template_model,
    template_relabeling,
    trusted_template,
)
from tools.camera import camera_centres
from tools.confidence import QualityParams, label_score
from tools.geometry import (
    CameraGroup,
    nanmean_cameras,
    rays_on_plane,
    reprojection_error,
    triangulate,
)
from tools.keypoint_names import ear_pair, left_twins, mirror_groups, tail_chain, twin_indices
from tools.reacquire import fit_template
from tools.refine import RefineParams, RefineResult, refine_cross_view
from tools.seed_check import contradicted_by_seeds

# Hidden keypoints' last seen points follow the rigid motion of the seen ones
# when at least MIN_CARRY_INLIERS keypoints agree with it within SHAPE_INLIER_MM
# (head and back move nearly rigidly between frames; see update_last_seen).
SHAPE_INLIER_MM = 10.0
MIN_CARRY_INLIERS = 4


def predict_track(window: list[dict], last_seen_3d: list | None, frame: int) -> np.ndarray:
    """3D motion prediction ``(n_keypoints, 3)`` at ``frame`` from :meth:`FrameStore.window` entries.

    Constant velocity over the window; where the window never triangulated a
    keypoint, its last seen point ``last_seen_3d (K, 3)`` (NaN when None).
    """
    frames = np.array([entry["frame"] for entry in window])
    history = np.array([entry["points_3d"] for entry in window], dtype=np.float64)
    predicted = predict_constant_velocity(frames, history, frame)
    if last_seen_3d is None:
        return predicted
    return np.where(np.isfinite(predicted), predicted, np.asarray(last_seen_3d, dtype=np.float64))


def region_indices(keypoints: list[str], regions: dict[str, list[str]]) -> list[list[int]]:
    """The keypoint indices of each region, in ``regions`` order."""
    return [[keypoints.index(name) for name in members] for members in regions.values()]


def fill_from_regions(points_3d: np.ndarray, keypoints: list[str],
                      regions: dict[str, list[str]]) -> np.ndarray:
    """``points_3d (K, 3)`` with each NaN point replaced by the mean of its region's known points.

    A rough guess for a keypoint never seen yet, good enough to start looking for it.
    """
    filled = np.array(points_3d, dtype=np.float64)
    for index in region_indices(keypoints, regions):
        known = np.all(np.isfinite(filled[index]), axis=1)
        if known.any() and not known.all():
            filled[np.array(index)[~known]] = filled[np.array(index)[known]].mean(axis=0)
    return filled


def camera_view(group: CameraGroup, keypoints: list[str], window: list[dict], camera: int,
                frame: int, prior_2d: np.ndarray | None, strategy: int) -> dict:
    """Fields of a :class:`~agent.backends.pose_base.CameraView` for ``camera`` about ``keypoints``.

    Exemplars are the window's labels in this camera (entries with
    ``points_2d (n_cameras, n_keypoints, 2)`` of these keypoints); the prior
    is ``prior_2d (n_keypoints, 2)``, the 3D prediction projected into this
    camera, or None everywhere (naive ablation: no 3D prior).
    """
    exemplars = [{"frame": entry["frame"], "points": _points(entry["points_2d"][camera])}
                 for entry in window]
    prior = [None] * len(keypoints) if prior_2d is None else _points(prior_2d)
    return {"frame": frame, "camera": group.cameras[camera].name,
            "image_size": group.cameras[camera].size, "keypoints": list(keypoints),
            "exemplars": exemplars, "prior": prior, "strategy": strategy}


def free_centroids(xy: np.ndarray, claimed: set[int]) -> list[dict]:
    """:class:`Centroid` fields of the centroids of ``xy (n, 2)`` whose index is not in ``claimed``."""
    return [{"index": i, "x": float(x), "y": float(y)} for i, (x, y) in enumerate(xy.tolist())
            if i not in claimed]


def _points(points: np.ndarray) -> list[tuple[float, float] | None]:
    """``points (n, 2)`` as a list of (x, y), None where NaN.

    Plain Python after one ``tolist``: a view's dozen points cost less than numpy's calls.
    """
    return [(x, y) if math.isfinite(x) and math.isfinite(y) else None for x, y in points.tolist()]


def label_positions(centroids: list[np.ndarray], assignment: np.ndarray) -> np.ndarray:
    """Pixel positions ``(n_cameras, n_keypoints, 2)`` of ``assignment (C, K)``; NaN where -1."""
    points = np.full((*assignment.shape, 2), np.nan)
    for camera, xy in enumerate(centroids):
        labelled = assignment[camera] >= 0
        points[camera, labelled] = xy[assignment[camera, labelled]]
    return points


def seed_distance_model(seed_window: list[dict], twins: np.ndarray | None = None) -> DistanceModel:
    """Expected keypoint distances from the seed frames' :meth:`FrameStore.window` entries.

    ``twins``: each keypoint's left/right twin; a pair the seeds never saw
    takes its mirror image's distance (:func:`tools.body_distances.distance_model`).
    """
    return distance_model(np.array([entry["points_3d"] for entry in seed_window], dtype=np.float64),
                          twins)


def seed_side_model(seed_window: list[dict], group: CameraGroup, keypoints: list[str],
                    regions: list[list[int]]) -> SideModel | None:
    """Left/right order across the body from the seed frames' :meth:`FrameStore.window` entries.

    Pairs and sides come from the keypoint names (:mod:`tools.keypoint_names`),
    up from the rig (:func:`tools.body_side.rig_up`, towards the cameras from
    the seed frames' mean point); None when the seeds triangulate nothing, or
    :func:`tools.body_side.side_model` finds no up direction, axis or agreed
    handedness.
    """
    points_3d = np.array([entry["points_3d"] for entry in seed_window], dtype=np.float64)
    known = np.all(np.isfinite(points_3d), axis=2)
    if not known.any():
        return None
    groups = mirror_groups(keypoints)
    up = rig_up(camera_centres(group), points_3d[known].mean(axis=0))
    return side_model(points_3d, twin_indices(groups), left_twins(keypoints, groups), regions, up)


def midline_keypoints(twins: np.ndarray | None, n_keypoints: int) -> np.ndarray:
    """``(K,)`` bool: the keypoints without a left/right twin, where the names show some twins.

    Names without any left/right pair (no ``twins``, or each keypoint its own)
    cannot tell a midline keypoint from a paw: then none counts as midline.
    """
    if twins is None:
        return np.zeros(n_keypoints, bool)
    alone = np.asarray(twins) == np.arange(n_keypoints)
    return alone if not alone.all() else np.zeros(n_keypoints, bool)


# A single view's ray meeting the body's midplane at a grazing angle puts the midplane's small
# errors far along the ray; 4-camera seed frames that hid the tail base met it at 9-25 degrees,
# 0.3-6.1 mm from the true point.
MIDPLANE_MIN_ANGLE_DEG = 5.0


def midline_from_one_view(seed_window: list[dict], group: CameraGroup, sides: SideModel | None,
                          keypoints: list[str]) -> list[dict]:
    """``seed_window`` with each midline keypoint no seed frame triangulates placed on the body's midplane.

    The body's models (distances, places) have nothing to judge a keypoint
    the seed frames never triangulate: quality control then leaves it
    ``unchecked`` and the results' review cannot move it (on 4-camera rigs
    the tail base is often seen by one camera in the seed frames). A midline
    keypoint (one without a left/right twin) lies in the body's midplane,
    through the body axis and the rig's up, so its one view's ray cut by
    that plane gives its point (:func:`tools.geometry.rays_on_plane`) in
    each seed frame where one camera labels it. Only keypoints that no seed
    frame triangulates: adding a guess beside a triangulated frame changed
    the body the tracker checks against on recordings it tracked well (4
    cameras seed 0: 65.9 -> 64.1% within 5 mm). Only for the models: the seed
    frames' records and the tracker's window keep the hand labels'
    triangulation. Unchanged without a side model (no axis), or where the
    names show no left/right pair (:func:`midline_keypoints`).
    """
    if sides is None:
        return seed_window
    seeds_3d = np.array([entry["points_3d"] for entry in seed_window], dtype=np.float64)
    midline = midline_keypoints(twin_indices(mirror_groups(keypoints)), len(keypoints))
    missing = midline & ~np.all(np.isfinite(seeds_3d), axis=2).any(axis=0)
    if not missing.any():
        return seed_window
    completed = []
    for entry, points_3d in zip(seed_window, seeds_3d, strict=True):
        across = lateral_direction(points_3d, sides.up, sides.axis_from, sides.axis_to, 0.8)
        if across is None:
            completed.append(entry)
            continue
        centre = (points_3d[sides.axis_from] + points_3d[sides.axis_to]) / 2
        on_plane = rays_on_plane(group, np.asarray(entry["points_2d"], dtype=np.float64), centre,
                                 across, MIDPLANE_MIN_ANGLE_DEG)
        filled = np.where(missing[:, None] & np.isfinite(on_plane), on_plane, points_3d)
        completed.append({**entry, "points_3d": filled})
    return completed


def twins_at_twin_height(seed_window: list[dict], group: CameraGroup, sides: SideModel | None,
                         keypoints: list[str]) -> list[dict]:
    """``seed_window`` with each twin no seed frame triangulates placed at its twin's height, for the track's start.

    A keypoint with a left/right twin (a paw) that one camera labels in a seed
    frame where its twin is triangulated lies on that camera's ray; both
    paws of a pair stand at about the same height, so the ray cut by the
    horizontal plane (the side model's up) through the twin gives its point
    (:func:`tools.geometry.rays_on_plane`; not where the ray grazes it): on the
    48 sweep recordings' seed frames 0.5-5.7 mm from a hind paw (median 2.4),
    6-15 mm from a forepaw (a forepaw is lifted more often). Only where the
    track starts (:func:`pass_start`): the body's models keep judging such a
    paw by its twin's distances, and quality control leaves it ``unchecked``.
    Unchanged without a side model.
    """
    if sides is None:
        return seed_window
    seeds_3d = np.array([entry["points_3d"] for entry in seed_window], dtype=np.float64)
    twins = twin_indices(mirror_groups(keypoints))
    missing = (twins != np.arange(len(keypoints))) & ~np.all(np.isfinite(seeds_3d), axis=2).any(axis=0)
    if not missing.any():
        return seed_window
    completed = []
    for entry, points_3d in zip(seed_window, seeds_3d, strict=True):
        filled = points_3d.copy()
        points_2d = np.asarray(entry["points_2d"], dtype=np.float64)
        for keypoint in np.flatnonzero(missing):
            twin = points_3d[twins[keypoint]]
            if np.isfinite(twin).all():
                height = (twin @ sides.up) * sides.up
                on_plane = rays_on_plane(group, points_2d[:, [keypoint]], height, sides.up,
                                         MIDPLANE_MIN_ANGLE_DEG)[0]
                filled[keypoint] = np.where(np.isfinite(on_plane), on_plane, filled[keypoint])
        completed.append({**entry, "points_3d": filled})
    return completed


def template_review(seed_window: list[dict], sides: SideModel | None, keypoints: list[str],
                    regions: list[list[int]], max_body_deviation: float,
                    confirm_body_deviation: float) -> TemplateReview | None:
    """The results' template check (:func:`final_records`) from the seed frames' :meth:`FrameStore.window` entries.

    Each keypoint's place along and above the back comes from the seed
    frames (:func:`final_records` then takes the places from the labels QC
    trusts), in the side model's body frame (its axis and the rig's up); None
    without a side model, or when no seed frame has its axis away from vertical.
    Left/right twins (from the ``keypoints``' names) share a place, and the
    body that confirms a move judges a keypoint the seeds hid by its twin's
    distances (:func:`seed_distance_model`); the tracker's own body check
    leaves such a keypoint ``unchecked``.
    """
    if sides is None:
        return None
    twins = twin_indices(mirror_groups(keypoints))
    points_3d = np.array([entry["points_3d"] for entry in seed_window], dtype=np.float64)
    template = template_model(points_3d, sides.up, sides.axis_from, sides.axis_to, twins=twins)
    if template is None:
        return None
    body = seed_distance_model(seed_window, twins)
    return TemplateReview(template, body, regions, max_body_deviation, confirm_body_deviation,
                          twins, sides, seed_points_3d=points_3d, tail=tail_chain(keypoints),
                          ears=ear_pair(keypoints))


def describe_side_model(model: SideModel | None, keypoints: list[str]) -> dict | None:
    """run.json's ``side_check``: the body axis, the pairs Stage 4 puts on their sides and those whose order vouches; None if off."""
    if model is None:
        return None
    return {"axis": [keypoints[model.axis_from], keypoints[model.axis_to]],
            "up": [round(float(value), 6) for value in model.up],
            "pairs": [sorted([keypoints[pair.positive], keypoints[pair.negative]])
                      for pair in model.pairs],
            "vouching_pairs": [sorted([keypoints[pair.positive], keypoints[pair.negative]])
                               for pair in model.vouching_pairs]}


def side_vouched(points_3d: np.ndarray, model: SideModel | None) -> np.ndarray:
    """``(K,)`` bool: keypoints whose pair's order across the body vouches for their sides in this frame.

    Only pairs Stage 4 leaves in the tracker's order (the ears), lying on
    their seed frames' sides by more than ``SIDE_ORDER_MARGIN_MM``
    (:func:`tools.body_side.order_vouches`); QC then does not flag them
    ``side`` in this frame, while their sides stay a guess for the next.
    """
    if model is None:
        return np.zeros(len(points_3d), bool)
    return order_vouches(points_3d, model, SIDE_ORDER_MARGIN_MM)


EXCHANGE_FRAMES = 10  # a cross-region exchange must fit better over this many frames
# Between the left/right pairs of one region (forepaws vs hindpaws) the body's
# distances differ by tens of millimetres, so a small gain already relabels
# (bench/results/pose.md, session 7).
MIRROR_MIN_GAIN = 0.1
# A twin that comes back this much nearer its own last seen place than the other
# twin's kept its side (a walking mouse's paws are 20-30 mm apart).
SIDE_MARGIN_MM = 10.0
# A side guess outlives this many frames of its keypoint's loss.
SIDE_GUESS_KEPT_FRAMES = 10
# A pair reversed across the body by more than this is put back on its sides; true pairs
# reverse by more in 8-14% of frames (tools/body_side.py), a mouse's hind paws are
# 25-30 mm apart (bench/results/pose.md, session 9).
SIDE_ORDER_MARGIN_MM = 6.0


def recent_points(store: FrameStore, frame: int, n_frames: int = EXCHANGE_FRAMES - 1,
                  direction: int = 1) -> np.ndarray | None:
    """``(n_frames, K, 3)`` points of the accepted frames just before ``frame`` in tracking order; None if not all are accepted."""
    frames = [frame - direction * back for back in range(n_frames, 0, -1)]
    if min(frames) < 0 or not store.has(frames):
        return None
    return np.stack([entry["points_3d"] for entry in store.window(frames)])


# QC stops judging a keypoint by the body once it has deviated in most of at least this
# many accepted frames (tools.body_distances.misfit_keypoints; bench/results/pose.md, session 10).
BODY_FIT_MIN_FRAMES = 30
BODY_FIT_MAX_SHARE = 0.5


def body_check(points_3d: np.ndarray, regions: list[list[int]], model: DistanceModel,
               fit_counts: list[list[int]] | None, max_deviation: float
               ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """QC's view of the body -> ``(deviation, known, fit_counts)``.

    ``deviation (K,)``: each point's deviation from the seed frames'
    distances, NaN for keypoints that deviated over ``max_deviation`` in most
    of the earlier accepted frames counted in ``fit_counts`` (the seeds do
    not describe them: the body neither flags nor vouches for them);
    ``known (K,)``: the seeds triangulated the keypoint; ``fit_counts``:
    the counts with this frame added (:func:`tools.body_distances.count_deviating`,
    None = no frame yet), for the state once the frame is accepted.
    """
    deviation = body_deviation(points_3d, regions, model)
    counts = np.zeros((2, deviation.size), np.int64) if fit_counts is None else np.asarray(fit_counts)
    misfit = misfit_keypoints(counts, BODY_FIT_MIN_FRAMES, BODY_FIT_MAX_SHARE)
    updated = count_deviating(counts, deviation, max_deviation)
    return np.where(misfit, np.nan, deviation), known_keypoints(model), updated.tolist()


def triangulate_labels(group: CameraGroup, centroids: list[np.ndarray], assignment: np.ndarray,
                       stage: np.ndarray, params: RefineParams | None,
                       predicted_3d: np.ndarray | None = None, search_radius_px: float = 60.0,
                       max_distance: float = 25.0, body: DistanceModel | None = None,
                       regions: list[list[int]] | None = None,
                       history_3d: np.ndarray | None = None,
                       mirror: np.ndarray | None = None,
                       sides: SideModel | None = None) -> dict[str, np.ndarray]:
    """Stage 4 (``params`` given) or plain DLT (``params`` None) of one frame's labels.

    With Stage 4, keypoints it cannot triangulate are looked for again among
    the free centroids near ``predicted_3d`` by cross-view consensus
    (:func:`tools.assignment.recover_lost`), and Stage 4 runs once more if
    any is found. Then, with a ``body`` distance model and the keypoint
    indices of the ``regions``, a region whose points fit the body much
    better relabelled is relabelled (:func:`tools.body_distances.region_relabeling`),
    and with ``history_3d (n_frames, K, 3)``, the points of the frames just
    before (:func:`recent_points`), two keypoints of different regions that
    the body has contradicted over all those frames are exchanged
    (:func:`tools.body_distances.pair_exchange`). With ``mirror``
    (:func:`tools.keypoint_names.mirror_groups`), a point is also moved
    between the left/right pairs of a region holding two or more (a
    forepaw's label on a hindpaw's dot) on a small gain; ``side_guessed`` marks the
    keypoints that took a point that way (their side is a guess). Last, with
    ``sides`` (:func:`seed_side_model`), a pair reversed across the body by
    more than ``SIDE_ORDER_MARGIN_MM`` is exchanged (:func:`tools.body_side.order_by_side`).

    Parameters
    ----------
    centroids : list[np.ndarray]
        One ``(n_c, 2)`` array per camera.
    assignment, stage : np.ndarray
        ``(n_cameras, n_keypoints)`` centroid index (-1 none) and the stage that set it.
    predicted_3d : np.ndarray or None
        ``(n_keypoints, 3)`` motion prediction, NaN where unknown.

    Returns
    -------
    dict
        ``points_3d (K, 3)``, ``ncams (K,)``, ``mean_error_px (K,)``, ``error_px (C, K)``
        (NaN unlabelled, inf labelled but untriangulated), ``assignment`` and
        ``stage`` ``(C, K)`` after Stage 4's corrections, ``side_guessed (K,)``.
    """
    # object dtype: a fixed-width string array would cut "refine" to the widest stage present.
    assignment, stage = assignment.copy(), np.array(stage, dtype=object)
    side_guessed = np.zeros(assignment.shape[1], dtype=bool)
    if params is not None:
        result = refine_cross_view(group, centroids, assignment, params)
        for change in result.changes:
            stage[change.camera, change.keypoint] = "refine" if change.new_centroid >= 0 else ""
        lost = ~np.all(np.isfinite(result.points_3d), axis=1)
        if predicted_3d is not None and lost.any():
            found = recover_lost(group, centroids, result.assignment, predicted_3d, lost,
                                 search_radius_px, params.inlier_threshold_px, max_distance)
            result = _rerun_if_changed(group, centroids, result, found, stage, params)
        assignment, points_3d = result.assignment, result.points_3d
        ncams, mean_error, error = result.ncams, result.mean_error_px, result.reprojection_error_px
        if body is not None and regions is not None:
            source = region_relabeling(points_3d, regions, body)
            assignment, points_3d, ncams, mean_error, error, stage = _relabel(
                source, assignment, points_3d, ncams, mean_error, error, stage)
            if mirror is not None:
                source = region_relabeling(points_3d, regions, body, min_gain=MIRROR_MIN_GAIN,
                                           groups=mirror)
                side_guessed = source != np.arange(source.size)
                assignment, points_3d, ncams, mean_error, error, stage = _relabel(
                    source, assignment, points_3d, ncams, mean_error, error, stage)
            if history_3d is not None:
                source = pair_exchange(np.concatenate([history_3d, points_3d[None]]), regions, body)
                side_guessed = side_guessed[source]
                assignment, points_3d, ncams, mean_error, error, stage = _relabel(
                    source, assignment, points_3d, ncams, mean_error, error, stage)
        if sides is not None:
            source = order_by_side(points_3d, sides, SIDE_ORDER_MARGIN_MM)
            side_guessed = side_guessed[source]
            assignment, points_3d, ncams, mean_error, error, stage = _relabel(
                source, assignment, points_3d, ncams, mean_error, error, stage)
    else:
        points_2d = label_positions(centroids, assignment)
        points_3d = triangulate(group, points_2d)
        error = reprojection_error(group, points_3d, points_2d)
        ncams = np.sum(np.isfinite(error), axis=0)
        mean_error = nanmean_cameras(error)
    labelled = assignment >= 0
    error = np.where(labelled, np.where(np.isfinite(error), error, np.inf), np.nan)
    return {"points_3d": points_3d, "ncams": np.asarray(ncams, dtype=np.int64),
            "mean_error_px": mean_error, "error_px": error, "assignment": assignment,
            "stage": np.where(labelled, stage, ""),
            "side_guessed": side_guessed & np.all(np.isfinite(points_3d), axis=1)}


def _relabel(source: np.ndarray, assignment: np.ndarray, points_3d: np.ndarray, ncams: np.ndarray,
             mean_error: np.ndarray, error: np.ndarray, stage: np.ndarray) -> tuple:
    """Keypoint ``k`` takes the labels and point of keypoint ``source[k]`` (a permutation; ``arange``: as they are)."""
    moved = source != np.arange(source.size)
    if not moved.any():
        return assignment, points_3d, ncams, mean_error, error, stage
    new_stage = stage[:, source].copy()
    new_stage[:, moved] = np.where(assignment[:, source[moved]] >= 0, "refine", "")
    return (assignment[:, source], points_3d[source], np.asarray(ncams)[source],
            mean_error[source], error[:, source], new_stage)


def _rerun_if_changed(group: CameraGroup, centroids: list[np.ndarray], result: RefineResult,
                      assignment: np.ndarray, stage: np.ndarray, params: RefineParams
                      ) -> RefineResult:
    """Stage 4 again on ``assignment (C, K)`` if it differs from ``result``'s; ``stage`` updated in place."""
    if np.array_equal(assignment, result.assignment):
        return result
    stage[assignment != result.assignment] = "refine"
    result = refine_cross_view(group, centroids, assignment, params)
    for change in result.changes:
        stage[change.camera, change.keypoint] = "refine" if change.new_centroid >= 0 else ""
    return result


def refined_labels(labels: dict[str, list], assignment: np.ndarray, stage: np.ndarray
                   ) -> dict[str, list]:
    """One camera's labels after Stage 4; a label it changed has no assignment margin."""
    margin = [m if before == after else None
              for m, before, after in zip(labels["margin_px"], labels["centroid"],
                                          assignment.tolist(), strict=True)]
    return {"centroid": assignment.tolist(), "margin_px": margin, "stage": stage.tolist()}


def seed_record(group: CameraGroup, frame: int, points_2d: np.ndarray,
                centroids: list[np.ndarray], snap_px: float = 3.0) -> FrameRecord:
    """The record of a seed frame: its manual labels ``points_2d (C, K, 2)``, triangulated.

    A label's centroid is the detected one it matches within ``snap_px`` (one
    centroid per label: two labels on one merged spot keep only the closer), else -1.
    A keypoint the labels do not triangulate (labelled in fewer than two
    cameras) is flagged like a tracked one: ``unassigned`` or ``few_cameras``.
    """
    points_3d = triangulate(group, points_2d)
    error = reprojection_error(group, points_3d, points_2d)
    centroid = np.stack([assign_points(points_2d[camera], xy, snap_px).index
                         for camera, xy in enumerate(centroids)])
    triangulated = np.all(np.isfinite(points_3d), axis=1)
    labelled = np.all(np.isfinite(points_2d), axis=2)
    return FrameRecord(
        frame=frame, points_3d=points_3d, error_px=nanmean_cameras(error),
        ncams=np.where(triangulated, labelled.sum(axis=0), 0), score=triangulated.astype(float),
        flagged=~triangulated,
        reason=np.where(triangulated, "", np.where(labelled.any(axis=0), "few_cameras", "unassigned")),
        points_2d=points_2d, centroid=centroid, view_error_px=error,
        stage=np.where(labelled, "seed", ""),
    )


def region_tasks(group: CameraGroup, keypoints: list[str], regions: dict[str, list[str]],
                 window: list[dict], projected: np.ndarray | None, frame: int,
                 centroids: list[np.ndarray], labels: dict[str, dict[str, list]],
                 redo: dict[str, list[str]], strategy: int) -> list[dict]:
    """Stage 1 payloads (``RegionTask``), one per camera in ``redo``.

    Each carries the camera's view restricted to the keypoints to (re)assign,
    the regions restricted likewise, and the centroids that no kept label holds.
    ``projected (n_cameras, n_keypoints, 2)`` is the motion prior projected into
    every camera (:func:`tools.camera.project`; None: no prior); each view
    takes its keypoints' rows.
    """
    tasks = []
    for camera, names in redo.items():
        index = group.names.index(camera)
        kept = labels.get(camera, {}).get("centroid", [-1] * len(keypoints))
        claimed = {c for name, c in zip(keypoints, kept, strict=True) if c >= 0 and name not in names}
        chosen = [keypoints.index(name) for name in names]
        chosen_window = [{"frame": entry["frame"], "points_2d": entry["points_2d"][:, chosen]}
                         for entry in window]
        prior_2d = None if projected is None else projected[index, chosen]
        view = camera_view(group, list(names), chosen_window, index, frame, prior_2d, strategy)
        subset = {region: [k for k in members if k in names] for region, members in regions.items()}
        tasks.append({"view": view, "regions": {r: m for r, m in subset.items() if m},
                      "centroids": free_centroids(centroids[index], claimed)})
    return tasks


def merge_labels(keypoints: list[str], previous: dict[str, list] | None,
                 answer_labels: list[dict]) -> dict[str, list]:
    """One camera's labels after Stage 3: ``previous`` with the answered keypoints replaced."""
    merged = previous or {"centroid": [-1] * len(keypoints), "margin_px": [None] * len(keypoints),
                          "stage": [""] * len(keypoints)}
    merged = {key: list(values) for key, values in merged.items()}
    for label in answer_labels:
        i = keypoints.index(label["keypoint"])
        merged["centroid"][i] = label["centroid"]
        merged["margin_px"][i] = label["margin_px"]
        merged["stage"][i] = label["stage"] if label["centroid"] >= 0 else ""
    return merged


def accept(state: dict, centroids: list[np.ndarray]) -> tuple[FrameRecord, list]:
    """The accepted frame's record and the updated last seen 3D points."""
    refined, quality = state["refined"], state["quality"]
    assignment = np.array(refined["assignment"], dtype=np.int64)
    points_2d = label_positions(centroids, assignment)
    points_3d = np.array(refined["points_3d"], dtype=np.float64)
    record = FrameRecord(
        frame=state["frame"], points_3d=points_3d,
        error_px=np.array(refined["mean_error_px"], dtype=np.float64),
        ncams=np.array(refined["ncams"], dtype=np.int64),
        score=np.array(quality["score"], dtype=np.float64),
        flagged=np.array(quality["flagged"], dtype=bool), reason=np.array(quality["reason"]),
        points_2d=points_2d, centroid=assignment,
        view_error_px=np.where(np.isinf(refined["error_px"]), np.nan, refined["error_px"]),
        stage=np.array(refined["stage"]),
    )
    return record, update_last_seen(state["last_seen_3d"], points_3d)


def found_again(lost_frames: list[int], reacquired: list[bool], points_3d: np.ndarray,
                min_lost_frames: int) -> np.ndarray:
    """``(K,)`` bool: keypoints triangulated now that were found again after ``min_lost_frames`` or more lost frames.

    True from the frame a keypoint is found again for as long as it stays
    triangulated (``reacquired`` carries it from frame to frame).
    """
    seen = np.all(np.isfinite(points_3d), axis=1)
    was_lost = np.asarray(lost_frames) >= max(1, min_lost_frames)
    return seen & (np.asarray(reacquired, dtype=bool) | was_lost)


def side_still_unsure(side_unsure: list[bool] | None, side_guessed: list[bool],
                      lost_frames: list[int], points_3d: np.ndarray, twin: np.ndarray,
                      last_seen_3d: list | None, margin_mm: float = SIDE_MARGIN_MM
                      ) -> np.ndarray:
    """``(K,)`` bool: keypoints of a left/right pair whose sides are a guess.

    Distances cannot tell the two sides of a pair apart, so a pair's sides
    become a guess when Stage 4 moved a point into the pair from another
    group (``side_guessed``), or when one of the pair is found again while
    its twin is or was just lost, or moved more than ``margin_mm`` from its
    last seen place (either could have taken the other's dot), unless the
    point is nearer the keypoint's last seen place than its twin's by
    ``margin_mm``, or when one moves more than ``margin_mm`` from its last
    seen place while its twin is lost (it may be on the twin's dot, whatever
    the twin's last seen place, carried with the body while it was lost,
    says). They stay a guess while one of the pair is
    still triangulated and was unsure in the frame before (``side_unsure``),
    and a lost keypoint's guess is kept for ``SIDE_GUESS_KEPT_FRAMES`` frames:
    back near its last seen place, it is on the dot the guess gave it (QC
    flags only triangulated keypoints).
    ``lost_frames`` as in :func:`update_lost` (before this frame);
    ``twin (K,)`` from :func:`tools.keypoint_names.twin_indices`;
    ``last_seen_3d (K, 3)`` as in :func:`update_last_seen`.
    """
    seen = np.all(np.isfinite(points_3d), axis=1)
    has_twin = twin != np.arange(seen.size)
    lost = np.asarray(lost_frames) > 0
    moved_far = kept_side = np.zeros(seen.size, bool)
    if last_seen_3d is not None:
        last_seen = np.asarray(last_seen_3d, dtype=np.float64)
        to_own = np.linalg.norm(points_3d - last_seen, axis=1)
        moved_far = to_own > margin_mm
        # NaN (never seen): no evidence, the side stays a guess.
        kept_side = to_own + margin_mm < np.linalg.norm(points_3d - last_seen[twin], axis=1)
    came_back = lost & (lost | ~seen | moved_far)[twin]
    # Moved away while the twin is lost: it may have taken the twin's dot (whose last
    # seen place, carried with the body while it is lost, cannot say).
    jumped = moved_far & (lost | ~seen)[twin]
    placed = seen & has_twin & (np.asarray(side_guessed, dtype=bool) | (came_back & ~kept_side)
                                | jumped)
    before = np.zeros(seen.size, bool) if side_unsure is None else np.asarray(side_unsure, bool)
    unsure = before | placed
    # A guess lost for a few frames is still one when the keypoint comes back near its last
    # seen place: that place was the guess.
    kept = ~seen & before & (np.asarray(lost_frames) < SIDE_GUESS_KEPT_FRAMES)
    return has_twin & ((seen & (unsure | unsure[twin])) | kept)


def update_lost(lost_frames: list[int], points_3d: np.ndarray) -> list[int]:
    """Lost-frame counts after an accepted frame: reset where triangulated, one more elsewhere."""
    seen = np.all(np.isfinite(points_3d), axis=1)
    return np.where(seen, 0, np.asarray(lost_frames) + 1).tolist()


def update_last_seen(last_seen_3d: list, points_3d: np.ndarray) -> list:
    """``last_seen_3d (K, 3)`` with the keypoints triangulated in ``points_3d (K, 3)`` moved there.

    The others move with the body: the rigid motion that takes the last seen
    points onto this frame's (RANSAC over keypoint triples, at least
    ``MIN_CARRY_INLIERS`` agreeing within ``SHAPE_INLIER_MM``), so a keypoint
    hidden for a while is looked for where the body has taken it.
    """
    last_seen = np.array(last_seen_3d, dtype=np.float64)
    seen = np.all(np.isfinite(points_3d), axis=1)
    # The fit (RANSAC over every keypoint triple) only moves keypoints this frame
    # misses that were seen before: a frame that sees every keypoint needs none.
    hidden = ~seen & np.all(np.isfinite(last_seen), axis=1)
    if hidden.any():
        fit = fit_template(last_seen, points_3d, SHAPE_INLIER_MM)
        if fit.n_inliers >= MIN_CARRY_INLIERS:
            carried = hidden & np.all(np.isfinite(fit.fitted), axis=1)
            last_seen[carried] = fit.fitted[carried]
    last_seen[seen] = points_3d[seen]
    return last_seen.tolist()


def advance(window: list[int], frame: int, seed_frames: frozenset[int], direction: int = 1
            ) -> tuple[list[int], int]:
    """Skip the seed frames at ``frame`` and on in ``direction`` (they join the window); the next frame to track."""
    while frame in seed_frames:
        window = [*window, frame]
        frame += direction
    return window, frame


def pass_start(store: FrameStore, frames: list[int], n_keypoints: int, window_frames: int = 3,
               body_points: Mapping[int, np.ndarray] | None = None) -> dict:
    """Tracking state at the start of a pass from the seed ``frames`` (in tracking order).

    The window is the last ``window_frames`` of them; the last seen points
    come from all of them; no keypoint is lost yet. A keypoint none of them
    triangulates starts from its point in ``body_points`` (seed frame ->
    ``(K, 3)``: :func:`midline_from_one_view`'s and
    :func:`twins_at_twin_height`'s points) of the last of them that has one: without a 3D point it has no prior in any
    camera but the one that labelled it, and is never triangulated (4
    cameras seed 22: the tail base, seen by one camera in the seed frames,
    lost in all 500 frames).
    """
    last_seen = np.full((n_keypoints, 3), np.nan)
    for entry in store.window(frames):
        last_seen = np.array(update_last_seen(last_seen, entry["points_3d"]))
    for frame in reversed(frames):
        if body_points is None or frame not in body_points:
            continue
        estimate = np.asarray(body_points[frame], dtype=np.float64)
        placed = ~np.all(np.isfinite(last_seen), axis=1) & np.all(np.isfinite(estimate), axis=1)
        last_seen[placed] = estimate[placed]
    return {"window": frames[-window_frames:], "last_seen_3d": last_seen.tolist(),
            "lost_frames": [0] * n_keypoints, "reacquired": [False] * n_keypoints,
            "side_unsure": [False] * n_keypoints}


def backward_start(store: FrameStore, seed_frames: frozenset[int], n_keypoints: int,
                   window_frames: int = 3, body_points: Mapping[int, np.ndarray] | None = None
                   ) -> dict:
    """State that tracks backward from the first seed frame to frame 0, once forward tracking is done.

    Frames before the first seed frame are tracked in reverse order, so a
    recording labelled anywhere gets every frame. The window is the first
    seed frames, nearest last (:func:`pass_start`). ``frame`` is -1 when
    there is nothing before the first seed frame.
    """
    first = sorted(seed_frames)[:window_frames]
    return {"frame": first[0] - 1, "direction": -1,
            **pass_start(store, first[::-1], n_keypoints, window_frames, body_points)}


SEED_MISMATCH = "seed_mismatch"  # qc.csv reason: a later seed frame contradicts the label's track
AXIS_SEARCH_REASON = "axis_search"  # qc.csv reason of a label the axis search moved, unvouched
# QC reasons that put a label's identity in doubt: a seed frame's contradiction is traced
# back to the last of them (not to few_cameras or reprojection, which concern its views).
IDENTITY_DOUBTS = ("jump", "low_margin", "body", "reacquired", "side", AXIS_SEARCH_REASON)


@dataclass(frozen=True)
class TemplateReview:
    """What :func:`relabel_by_template` needs: the places, and the body check that confirms a move.

    ``body`` and ``regions`` as for :func:`body_check`. A cycle of moves
    stands only where the body agrees: each moved point's deviation as its
    new keypoint is at most ``max_body_deviation``, and the cycle lowers the
    sum of its points' deviations (one point may fit its new keypoint no
    better than its old: a dot of the tail middle fits a hind paw's
    distances about as well as the tail's, while its place says tail; where
    the body judges none of the cycle's points both ways, the places decide). A moved
    label's ``few_cameras`` flag is cleared when that deviation is under
    ``confirm_body_deviation`` (quality control's vouching,
    :func:`tools.confidence.assess_frame`). ``twins``: each keypoint's
    left/right twin, for :func:`tools.body_template.trusted_template` and to
    keep the tracker's order within a pair the axis search hands back
    (:func:`_twins_kept`); ``sides``: the side model that puts a pair which
    received a moved point on its sides (None: left as moved); ``order``:
    the midline pairs the places cannot tell apart, put in their order
    along the body first (:func:`tools.body_order.order_exchanges`; empty
    from :func:`template_review`, found by :func:`final_records` in the
    run's trusted labels and in ``seed_points_3d``, the seed frames' points
    ``(n_seed_frames, K, 3)``). ``tail``: the tail's tip, middle and base, as
    :func:`tools.keypoint_names.tail_chain` reads them from the names, for
    :func:`flag_reversed_tail`; ``ears``: the left and right ear
    (:func:`tools.keypoint_names.ear_pair`), for :func:`flag_head_behind_back`.
    """

    template: TemplateModel
    body: DistanceModel
    regions: list[list[int]]
    max_body_deviation: float
    confirm_body_deviation: float
    twins: np.ndarray | None = None
    sides: SideModel | None = None
    order: tuple[OrderPair, ...] = ()
    seed_points_3d: np.ndarray | None = None
    tail: tuple[int, int, int] | None = None
    ears: tuple[int, int] | None = None


# The places come from the labels QC trusts, which the moves change: a second pass, with the
# places of the first pass's result, moved 191 more points right and 7 wrong over 24 recordings.
TEMPLATE_PASSES = 2
TEMPLATE_STAGE = "template"  # keypoints_2d.csv stage of a label the results' template step moved
# A midline pair is exchanged where its references put it the wrong way round by more than this,
# on average. The shipped true motion reaches 4.4 mm with the back bottom and tail base's four
# references (the tail base tucked ahead, frames 245-262), 4.6 mm with three (no tail tip; the
# landing, frame 337); 36 recordings (results-only): 437 keypoint-frames right and 10 wrong
# at 5 mm, 377 and 6 at 6 mm, 467 and 341 at 3 mm.
ORDER_MARGIN_MM = 5.0
# qc.csv reason of a label the order step moved: the tracker followed the two dots one way,
# their order along the body says the other, and either can be wrong (the procedural walker's
# tail base passes ahead of the back bottom for tens of frames, by ~10 mm). Flagging them:
# walker seeds 50-53 and 4-camera 50-52, QC goal on 5 of 7 instead of 1 (6 cameras seed 51
# recall 0.393 -> 0.971); 48 real-motion recordings 43 -> 45 of 48, 1,227 flags added,
# lowest precision 0.515; accuracy within 0.07 points (the axis search sees the flag)
# (bench/results/pose.md, session 16).
ORDER_REASON = "order"


def _order_pairs(points_3d: np.ndarray, trusted: np.ndarray, seed_points_3d: np.ndarray | None,
                 place_mm: np.ndarray, midline: np.ndarray) -> tuple[OrderPair, ...]:
    """The midline pairs to put in their order: the run's trusted labels', then the seed frames' the run lacks.

    Where the tracker kept a pair exchanged for most of the run, its own
    labels show no reference on one side (:func:`tools.body_order.order_pairs`)
    and the pair goes unchecked; the seed frames' hand labels still order it
    (4 cameras seed 45: back bottom and tail base exchanged in 47% of frames,
    58.5 -> 62.6% within 5 mm; of the 48 sweep recordings and the 7 walker
    recordings two others changed: +0.2 points, and 0.03 mm more mean
    error; bench/results/pose.md). Where the run's labels show references on
    both sides but the wrong way round, the seed frames' hand labels drop
    the references they contradict (:func:`tools.body_order.agreeing_references`);
    a pair so left one-sided is ordered by the seed frames' references, if
    they show some on both sides.
    """
    pairs = order_pairs(points_3d, trusted, place_mm, midline)
    if seed_points_3d is None or not len(seed_points_3d):
        return tuple(pairs)
    seed_known = np.all(np.isfinite(seed_points_3d), axis=2)
    pairs = agreeing_references(pairs, seed_points_3d, seed_known)
    known = {(pair.first, pair.second) for pair in pairs}
    seed_pairs = order_pairs(seed_points_3d, seed_known, place_mm, midline)
    return tuple(pairs + [pair for pair in seed_pairs if (pair.first, pair.second) not in known])


def final_records(records: list[FrameRecord], seed_frames: frozenset[int],
                  review: TemplateReview | None,
                  dots: FreeDotSearch | None = None) -> list[FrameRecord]:
    """What the results files and run.json are written from: the frame log's ``records`` (by frame) reviewed.

    Each tracked frame's labels are put in their places along and above the
    back (:func:`relabel_by_template`, with a ``review``; the seed frames'
    hand labels stay as they are), each keypoint's place the median over
    the labels quality control did not flag
    (:func:`tools.body_template.trusted_template`), and so are the midline
    pairs put in their order along the body
    (:func:`tools.body_order.order_pairs`), twice (``TEMPLATE_PASSES``:
    the second pass takes its places from the first's result); with
    ``dots``, a lost paw takes back its dot's views from its twin's label
    (:func:`parted_twins`), keypoints still untriangulated are looked for
    among the dots no label holds (:func:`found_in_free_dots`) and, with the quality
    thresholds ``dots`` carries, labels enough cameras agree on that fit the
    review's body lose their ``few_cameras``, ``body`` or ``reacquired``
    review flag (:func:`accepted_by_body`); a left/right pair left in the
    tracker's order that lies reversed across the body is exchanged
    (:func:`exchange_reversed_pairs`); a tail tip and middle lying the wrong
    way round along the tail are flagged (:func:`flag_reversed_tail`); then
    the labels are checked against the later seed frames
    (:func:`review_against_seeds`). The frame log itself is not changed (a
    resume continues from it).
    """
    if review is not None and records:
        seed_template = review.template
        midline = midline_keypoints(review.twins, records[0].points_3d.shape[0])
        for _ in range(TEMPLATE_PASSES):
            points_3d = np.array([record.points_3d for record in records])
            trusted = np.array([~record.flagged for record in records])
            template = trusted_template(points_3d, trusted, seed_template, review.twins)
            review = replace(review, template=template, order=_order_pairs(
                points_3d, trusted, review.seed_points_3d, template.place_mm, midline))
            streak = AxisSearchStreak()
            records = [record if record.frame in seed_frames
                       else relabel_by_template(record, review, streak) for record in records]
        if dots is not None:
            misfit = body_misfits(records, review)
            found: list[FrameRecord] = []
            last_index = np.full(records[0].points_3d.shape[0], -1)  # into found, by keypoint
            for record in records:
                if record.frame not in seed_frames:
                    both_lost = _twins_lost(record, review.twins)
                    last_seen = _last_seen(found, last_index)
                    record = parted_twins(record, review, dots, last_seen, misfit)
                    record = found_in_free_dots(
                        record, review, dots, misfit,
                        np.where(both_lost[:, None], last_seen, np.nan) if both_lost.any() else None)
                seen = np.all(np.isfinite(record.points_3d), axis=1)
                last_index[seen] = len(found)
                found.append(record)
            records = found
            records = accepted_by_body(records, seed_frames, review, misfit, dots.quality)
        records = exchange_reversed_pairs(records, seed_frames, review)
        records = flag_reversed_tail(records, seed_frames, review)
        records = flag_head_behind_back(records, seed_frames, review)
    return review_against_seeds(records, seed_frames)


# A pair left in the tracker's order (the ears) lying reversed across the body by more than
# this is exchanged where the body vouches for the exchange, else flagged `side`. True ears lie
# reversed by at most 11.8 mm over the shipped true motion's 1,000 frames (by more than 10 mm
# in 1.2%, 6 mm in 3.6%). On 42 recordings (flags added to finished results): 356 flags, 345
# on really wrong labels (6 cameras seed 41: the ears exchanged at the landing and kept so for
# 159 frames, QC recall 0.769 -> 0.949); 10 mm: 1,277 flags, 353 right; 6 mm: 2,986, 371.
# Exchanged instead of flagged (session 23, 48 sweep recordings): 6 cameras seed 41 77.2 ->
# 82.3% within 5 mm, seed 43 79.6 -> 83.5%; without the body's vouching an ear on a far dot
# (4 cameras seed 22) took its twin's right label.
REVERSED_PAIR_MARGIN_MM = 12.0


def exchange_reversed_pairs(records: list[FrameRecord], seed_frames: frozenset[int],
                            review: TemplateReview) -> list[FrameRecord]:
    """``records`` with each vouching pair the tracker keeps exchanged put back on its sides.

    Stage 4 leaves the ears in the tracker's order (:func:`tools.body_side.side_model`),
    so an exchange the tracker keeps is seen only in their order across the body
    (:func:`tools.body_side.reversed_vouching_pairs`, by ``REVERSED_PAIR_MARGIN_MM``,
    which true ears do not reach). The pair is exchanged (:func:`_moved`: flags go
    with their points) where both points fit the body as each other's keypoint
    within ``review.max_body_deviation``; otherwise (one of them on a far dot)
    its unflagged labels are flagged ``side``. Not on seed frames.
    """
    sides = review.sides
    if sides is None or not sides.vouching_pairs or not records:
        return records
    reversed_twins = reversed_vouching_pairs(np.array([record.points_3d for record in records]),
                                             sides, REVERSED_PAIR_MARGIN_MM)
    reviewed = []
    for record, frame_reversed in zip(records, reversed_twins, strict=True):
        if record.frame in seed_frames or not frame_reversed.any():
            reviewed.append(record)
            continue
        source = np.arange(frame_reversed.size)
        for pair in sides.vouching_pairs:
            if frame_reversed[pair.positive]:
                source[[pair.positive, pair.negative]] = pair.negative, pair.positive
        deviation = body_deviation(record.points_3d[source], review.regions, review.body)
        fits = np.nan_to_num(deviation, nan=np.inf) <= review.max_body_deviation
        for pair in sides.vouching_pairs:
            if not fits[[pair.positive, pair.negative]].all():
                source[[pair.positive, pair.negative]] = pair.positive, pair.negative
        kept = frame_reversed & (source == np.arange(source.size))
        reviewed.append(_moved(_flag_labels(record, kept, "side"), source, review))
    return reviewed


# The tail tip lying nearer the tail base than the tail middle by more than this is taken for an
# exchange. In the shipped true motion the tip lies at least 2.5 mm farther (over 1,000 frames).
TAIL_MARGIN_MM = 5.0
# qc.csv reason of a tail tip and tail middle lying the wrong way round along the tail.
TAIL_ORDER_REASON = "tail_order"


def flag_reversed_tail(records: list[FrameRecord], seed_frames: frozenset[int],
                       review: TemplateReview) -> list[FrameRecord]:
    """``records`` with the tail tip and tail middle flagged where they lie the wrong way round.

    The two lie typically 41 mm apart, too far for the order step's pairs
    (:func:`tools.body_order.order_pairs`), and as the tail swings the body
    does not judge the tip; a tracker that took each for the other
    triangulates both cleanly (4 cameras seed 42, frames 217-276). Along the
    tail the tip lies farther from the base than the middle does
    (:func:`tools.body_order.chain_end_reversed`), so where it lies nearer by
    more than ``TAIL_MARGIN_MM`` both labels are flagged ``tail_order`` for
    review: a tail curled back on itself does the same, so they are flagged,
    not exchanged. Which keypoints are the tail's comes from their names
    (``review.tail``): a run that kept them exchanged, or seed frames that
    caught the tail curled, would teach the order the wrong way round. Only
    with a review, which needs named left/right twins as well. Not on seed
    frames. Not an identity doubt for :func:`review_against_seeds` (as
    ``order`` is not): which of the two is wrong, or whether the tail is
    curled, the flag cannot say.
    """
    if review.tail is None or not records:
        return records
    points_3d = np.array([record.points_3d for record in records])
    reversed_tail = chain_end_reversed(points_3d, review.tail, TAIL_MARGIN_MM)
    tip, middle, _ = review.tail
    labels = np.zeros(points_3d.shape[1], bool)
    labels[[tip, middle]] = True
    return [_flag_labels(record, labels, TAIL_ORDER_REASON)
            if is_reversed and record.frame not in seed_frames else record
            for record, is_reversed in zip(records, reversed_tail, strict=True)]


# The ears' midpoint lying behind the back's top (along the body seen from above) by more than
# this, for at least HEAD_MIN_FRAMES frames in a row, is taken for an ear and the back's top on
# each other's dots. In the shipped true motion it lies behind by that much in 6 frames, all in
# the landing (333-338); exchanged, their midpoint falls behind by 14 mm (median) and stays so.
# On the 48 sweep recordings with paws started at their twin's height (session 27, flags added to
# finished results): 748 flags on 4 cameras, 450 on really wrong labels, 14 on 6 cameras, 3
# wrong; without the run of frames, 767 / 451 and 221 / 6.
HEAD_MARGIN_MM = 10.0
HEAD_MIN_FRAMES = 10
# qc.csv reason of ears lying behind the back's top.
HEAD_ORDER_REASON = "head_order"


def flag_head_behind_back(records: list[FrameRecord], seed_frames: frozenset[int],
                          review: TemplateReview) -> list[FrameRecord]:
    """``records`` with the ears and the back's top flagged where the ears lie behind it.

    An ear and the back's top lie 15-20 mm apart, and with each on the
    other's dot the distances to the other regions hardly change (the body
    check does not see it) and the ear still lies on its side (4 cameras
    seeds 0 and 43: from the landing to the end, unflagged). Along the body
    the head lies ahead of the back, so where the ears' midpoint lies behind
    the back's top by more than ``HEAD_MARGIN_MM``
    (:func:`tools.body_order.pair_behind_axis_front`, the side model's axis
    and up) for at least ``HEAD_MIN_FRAMES`` records in a row, the three
    labels are flagged ``head_order`` for review; a mouse tucking its head in
    does the same for a few frames (6 in the shipped motion's landing), so
    they are flagged, not moved. Which keypoints are the ears comes from their names
    (``review.ears``). Not on seed frames; not an identity doubt for
    :func:`review_against_seeds`.
    """
    sides = review.sides
    if review.ears is None or sides is None or not records:
        return records
    points_3d = np.array([record.points_3d for record in records])
    behind = lasting(pair_behind_axis_front(points_3d, review.ears, (sides.axis_from, sides.axis_to),
                                            sides.up, HEAD_MARGIN_MM), HEAD_MIN_FRAMES)
    labels = np.zeros(points_3d.shape[1], bool)
    labels[[*review.ears, sides.axis_from]] = True
    return [_flag_labels(record, labels, HEAD_ORDER_REASON)
            if is_behind and record.frame not in seed_frames else record
            for record, is_behind in zip(records, behind, strict=True)]


# A label that min_cameras cameras agree on and that fits the body within this many tolerances
# needs no review for missing review_min_cameras. 36 recordings (flags edited on session 14's
# results): QC precision 0.46-0.67 -> 0.56-0.76, the QC goal on 36 of 36 (34 before); 1.0 let
# recall fall to 0.893 on one. In quality control itself (so the review trusted those labels
# and its axis search no longer moved them) it cost 0.44 points within 5 mm on 12 recordings.
ACCEPT_BODY_DEVIATION = 0.8
# On a rig of at least this many cameras a midline keypoint's few_cameras flag needs no body:
# labels the body does not judge that half the rig agrees on (the tail tip, its distances
# changing as the tail swings) were right in 5,356 of 5,356 such flags on 5-8 cameras (session
# 24: 99 recordings, sweep, conditions and walker); on 4 cameras 147 of 3,131 were wrong (the
# back bottom 73 of 128).
UNJUDGED_MIDLINE_MIN_RIG = 5


def accepted_by_body(records: list[FrameRecord], seed_frames: frozenset[int],
                     review: TemplateReview, misfit: np.ndarray,
                     quality: QualityParams) -> list[FrameRecord]:
    """``records`` with the review flags of labels the review's body accepts cleared.

    Quality control judged the tracker's labels with the seed frames' body;
    the results are judged again with the review's body on the final labels.
    ``few_cameras``: quality control flags a label fewer than
    ``review_min_cameras`` cameras confirm unless the body vouches for it
    (deviation under ``confirm_body_deviation``); the review moves only what
    it flagged. For the results, a label at least ``quality.min_cameras``
    cameras and half the rig agree on whose deviation from the review's body
    is under ``ACCEPT_BODY_DEVIATION`` asks for no review (a 4-camera rig
    flags every label 3 cameras see; on an 8-camera rig a third of the
    unflagged labels only 3 cameras agreed on were wrong, mostly paws 7-28 mm
    off on another dot, so there it takes 4: QC recall 0.879-0.938 ->
    0.928-0.980 over 5 recordings, bench/results/pose-conditions.md); so
    does such a label of a midline keypoint the body does not judge, on a rig
    of ``UNJUDGED_MIDLINE_MIN_RIG`` or more cameras.
    ``body`` and ``reacquired``: a label more cameras agree on than
    ``review_min_cameras`` asks for no review where its deviation is at most
    ``max_body_deviation`` (``body``) or under ``ACCEPT_BODY_DEVIATION``
    (``reacquired``); on the 29 six-camera sweep recordings 1,914 such
    ``body`` flags were on right labels and 3 on wrong ones, 672 and 81
    ``reacquired`` ones (on four cameras no label has more cameras than
    the review asks). Not for keypoints the body does not judge
    (``misfit``) nor seed frames. A cleared flag's score is restored.
    """
    if not records:
        return records
    deviation = body_deviations(np.array([record.points_3d for record in records]),
                                review.regions, review.body)
    deviation[:, misfit] = np.nan
    n_cameras = records[0].points_2d.shape[0]
    # Midline keypoints the body does not judge (deviation unknown), on rigs large enough.
    unjudged_midline = (np.isnan(deviation) & midline_keypoints(review.twins, deviation.shape[1])
                        & (n_cameras >= UNJUDGED_MIDLINE_MIN_RIG))
    deviation = np.nan_to_num(deviation, nan=np.inf)
    min_agreeing = max(quality.min_cameras, n_cameras // 2)
    accepted: list[FrameRecord] = []
    for record, frame_deviation, frame_unjudged in zip(records, deviation, unjudged_midline,
                                                       strict=True):
        confirmed = record.ncams > quality.review_min_cameras
        clear = (((record.reason == "few_cameras") & (record.ncams >= min_agreeing)
                  & ((frame_deviation < ACCEPT_BODY_DEVIATION) | frame_unjudged))
                 | ((record.reason == "body") & confirmed
                    & (frame_deviation <= review.max_body_deviation))
                 | ((record.reason == "reacquired") & confirmed
                    & (frame_deviation < ACCEPT_BODY_DEVIATION)))
        if record.frame in seed_frames or not clear.any():
            accepted.append(record)
            continue
        accepted.append(replace(record, flagged=record.flagged & ~clear,
                                reason=np.where(clear, "", record.reason),
                                score=np.where(clear, _unflagged_score(record.score),
                                               record.score)))
    return accepted


# A free dot seen by fewer cameras than this is never taken: on 12 recordings (results-only
# experiment) 3 cameras found 483 keypoint-frames right and 27 wrong within 20 mm of their
# places, 2 cameras 1,067 right and 351 wrong (mostly a paw on its twin's dot). In the
# pipeline, dots seen by 4 or more cameras were 169 right and 1 wrong, by 3 cameras 363 and
# 47: found_in_free_dots takes only what quality control would accept unflagged.
FREE_DOT_MIN_CAMERAS = 3
# Farthest a free dot's place (along and above the back) may lie from its keypoint's.
FREE_DOT_MAX_PLACE_MM = 20.0
FREE_DOT_STAGE = "free_dot"  # keypoints_2d.csv stage of a label found among the free dots


@dataclass(frozen=True)
class FreeDotSearch:
    """What :func:`found_in_free_dots` needs besides the review.

    ``centroids_of(frame)``: the frame's per-camera ``(n_c, 2)`` centroids
    (None where the run kept none); ``quality``: quality control's
    thresholds (a camera agrees within ``max_view_error_px``; the score and
    the ``reprojection`` flag as quality control gives them).
    """

    group: CameraGroup
    centroids_of: Callable[[int], list[np.ndarray] | None]
    quality: QualityParams


def body_misfits(records: list[FrameRecord], review: TemplateReview) -> np.ndarray:
    """``(K,)`` bool: keypoints whose labels in ``records`` deviate from the review's body in most frames.

    As quality control's :func:`body_check` counts them over the run
    (:func:`tools.body_distances.misfit_keypoints`): the body neither flags
    nor vouches for them.
    """
    deviation = body_deviations(np.array([record.points_3d for record in records]),
                                review.regions, review.body)
    counts = count_deviating(None, deviation, review.max_body_deviation)
    return misfit_keypoints(counts, BODY_FIT_MIN_FRAMES, BODY_FIT_MAX_SHARE)


def _twins_lost(record: FrameRecord, twins: np.ndarray | None) -> np.ndarray:
    """``(K,)`` bool: keypoints untriangulated in ``record`` together with their left/right twin."""
    lost = ~np.all(np.isfinite(record.points_3d), axis=1)
    if twins is None:
        return np.zeros(lost.size, bool)
    return lost & lost[twins] & (twins != np.arange(twins.size))


def _last_seen(records: list[FrameRecord], last_index: np.ndarray) -> np.ndarray:
    """``(K, 3)`` each keypoint's last triangulated point in ``records``, where it was then.

    ``last_index (K,)``: the record where each keypoint was last seen (-1
    never, or not asked: NaN). Not carried with the body as
    :func:`update_last_seen` does (a rigid fit per frame cost 0.3-0.8 s per
    500 frames): twins are compared with each other's, both left behind.
    """
    last_seen = np.full((last_index.size, 3), np.nan)
    for index in np.unique(last_index[last_index >= 0]):
        keypoints = last_index == index
        last_seen[keypoints] = records[index].points_3d[keypoints]
    return last_seen


# A label on two dots (parted_twins): its views' largest error at least this, each part's at
# most SPLIT_PART_ERROR_PX, the parts' points at least SPLIT_SEPARATION_PX apart in the median view.
SPLIT_JOINT_ERROR_PX = 2.0
SPLIT_PART_ERROR_PX = 1.0
SPLIT_SEPARATION_PX = 4.0
SPLIT_STAGE = "split"  # keypoints_2d.csv stage of the views a lost twin took back


def parted_twins(record: FrameRecord, review: TemplateReview, search: FreeDotSearch,
                 last_seen: np.ndarray, misfit: np.ndarray | None = None) -> FrameRecord:
    """``record`` with a lost keypoint given back its dot's views from its twin's label.

    Two paws close together, each dot hidden in some cameras: the
    triangulated paw's label can hold the lost twin's dot in the cameras that
    see only that one, a few pixels from its own, and Stage 4 keeps those
    views as inliers of one point. :func:`tools.assignment.split_shared_views`
    parts such a label's views into two consistent points (parts of 2 or
    more views); the part nearer the keypoint's ``last_seen (K, 3)`` point
    stays (never seen: nothing is parted), and the other goes to the twin
    where it passes quality control's view errors and the body's deviation
    (:func:`_found_points_pass`; unlike a free dot, it needs neither
    ``review_min_cameras`` cameras nor the body's vouching: the two parts'
    own agreement is the evidence). Both keypoints are
    triangulated again from their parts; the twin's views take stage
    ``SPLIT_STAGE``, and the keypoint's ``reprojection`` flag goes where its
    own views pass quality control. Then the pair is put on its seed frames' sides
    (:func:`tools.body_side.order_by_side`, as Stage 4 orders a pair); where
    it does not lie on them by ``SIDE_ORDER_MARGIN_MM`` both labels are
    flagged ``side`` (which twin took which part is a guess). The 29 six-camera
    sweep recordings: 80.27 -> 80.55% within 5 mm (28 gain), QC recall at most
    0.004 lower, precision 0.003-0.018 lower (the labels it mends were flagged).
    """
    twins = review.twins
    if twins is None:
        return record
    present = np.all(np.isfinite(record.points_3d), axis=1)
    # A label whose views all lie near its point holds one dot (the split's own test, cheaper).
    spread = np.where(np.isfinite(record.view_error_px), record.view_error_px, -np.inf).max(axis=0)
    for keypoint, twin in enumerate(twins.tolist()):
        if (twin == keypoint or not present[keypoint] or present[twin]
                or not spread[keypoint] >= SPLIT_JOINT_ERROR_PX
                or not np.isfinite(last_seen[keypoint]).all()):
            continue
        split = split_shared_views(search.group, record.points_2d[:, keypoint],
                                   SPLIT_PART_ERROR_PX, SPLIT_JOINT_ERROR_PX, SPLIT_SEPARATION_PX)
        if split is None:
            continue
        parts = [(split.first, split.first_3d), (split.second, split.second_3d)]
        own = [float(np.linalg.norm(point - last_seen[keypoint])) for _, point in parts]
        (kept, _), (moved, _) = parts if own[0] <= own[1] else parts[::-1]
        candidate = _parted(record, keypoint, twin, kept, moved, search)
        error = candidate.view_error_px[:, [twin]]
        if _found_points_pass(candidate.points_3d, np.array([twin]), np.nanmean(error, axis=0),
                              np.nanmax(error, axis=0), None, review, search.quality, misfit)[0]:
            record, present = candidate, np.all(np.isfinite(candidate.points_3d), axis=1)
            record = _parted_by_side(record, keypoint, twin, review)
    return record


def _parted_by_side(record: FrameRecord, keypoint: int, twin: int, review: TemplateReview
                    ) -> FrameRecord:
    """A parted pair (:func:`parted_twins`) put on its sides; its unflagged labels flagged ``side`` where they cannot say."""
    if review.sides is not None:
        exchange = order_by_side(record.points_3d, review.sides, SIDE_ORDER_MARGIN_MM)
        if exchange[keypoint] == twin:
            source = np.arange(exchange.size)
            source[[keypoint, twin]] = twin, keypoint
            record = _moved(record, source, review)
        if lies_on_sides(record.points_3d, review.sides, twin, SIDE_ORDER_MARGIN_MM):
            return record
    unsure = np.zeros(record.flagged.size, bool)
    unsure[[keypoint, twin]] = True
    return _flag_labels(record, unsure, "side")


def _parted(record: FrameRecord, keypoint: int, twin: int, kept: np.ndarray, moved: np.ndarray,
            search: FreeDotSearch) -> FrameRecord:
    """``record`` with ``keypoint``'s ``moved (C,)`` views given to ``twin``, both triangulated again."""
    centroid, points_2d = record.centroid.copy(), record.points_2d.copy()
    stage = record.stage.astype(object)
    centroid[moved, twin], points_2d[moved, twin] = centroid[moved, keypoint], points_2d[moved, keypoint]
    stage[moved, twin] = SPLIT_STAGE
    centroid[moved, keypoint], points_2d[moved, keypoint], stage[moved, keypoint] = -1, np.nan, ""
    pair = [keypoint, twin]
    pair_3d = triangulate(search.group, points_2d[:, pair])
    pair_error = reprojection_error(search.group, pair_3d, points_2d[:, pair])
    points_3d, view_error = record.points_3d.copy(), record.view_error_px.copy()
    points_3d[pair], view_error[:, pair] = pair_3d, pair_error
    error_px, ncams = record.error_px.copy(), record.ncams.copy()
    error_px[pair] = nanmean_cameras(pair_error)
    ncams[pair] = [int(kept.sum()), int(moved.sum())]
    flagged, reason, score = record.flagged.copy(), record.reason.astype(object), record.score.copy()
    flagged[twin], reason[twin] = False, ""
    # The keypoint's views held two dots: with its own alone, the reprojection flag may go.
    quality = search.quality
    if (reason[keypoint] == "reprojection" and error_px[keypoint] <= quality.max_error_px
            and np.nanmax(pair_error[:, 0]) <= quality.max_view_error_px):
        flagged[keypoint], reason[keypoint] = False, ""
    score[pair] = label_score(pair_3d, error_px[pair], ncams[pair], flagged[pair], quality)
    return replace(record, points_3d=points_3d, error_px=error_px, ncams=ncams, score=score,
                   flagged=flagged, reason=reason, points_2d=points_2d, centroid=centroid,
                   view_error_px=view_error, stage=stage)


def _found_points_pass(points_3d: np.ndarray, found: np.ndarray, mean_error: np.ndarray,
                       worst_view: np.ndarray, ncams: np.ndarray | None, review: TemplateReview,
                       quality: QualityParams, misfit: np.ndarray | None) -> np.ndarray:
    """``(len(found),)`` bool: the ``found`` keypoints' new points in ``points_3d (K, 3)`` pass QC's checks.

    Mean error at most ``max_error_px`` and every view at most
    ``max_view_error_px``, a body deviation at most ``max_body_deviation``
    (not judged for the ``misfit (K,)`` keypoints), and, with ``ncams``,
    ``review_min_cameras`` cameras or the body's vouching (deviation under
    ``confirm_body_deviation``): what :func:`found_in_free_dots` asks of a
    point it gives a lost keypoint (:func:`parted_twins` gives no ``ncams``).
    """
    deviation = body_deviation(points_3d, review.regions, review.body)[found]
    if misfit is not None:
        deviation = np.where(misfit[found], np.nan, deviation)
    passed = ((mean_error <= quality.max_error_px) & (worst_view <= quality.max_view_error_px)
              & (np.nan_to_num(deviation) <= review.max_body_deviation))
    if ncams is None:
        return passed
    vouched = np.nan_to_num(deviation, nan=np.inf) < review.confirm_body_deviation
    return passed & ((ncams >= quality.review_min_cameras) | vouched)


def found_in_free_dots(record: FrameRecord, review: TemplateReview, search: FreeDotSearch,
                       misfit: np.ndarray | None = None,
                       last_seen: np.ndarray | None = None) -> FrameRecord:
    """``record`` with its untriangulated keypoints given the free dots whose places fit theirs.

    The dots no label holds are triangulated where at least
    ``FREE_DOT_MIN_CAMERAS`` cameras agree within quality control's
    ``max_view_error_px`` (:func:`tools.assignment.free_dot_points`; a lost
    keypoint's own labels count as free), and each lost keypoint takes the
    one whose place along and above the back lies within
    ``FREE_DOT_MAX_PLACE_MM`` of its own (:func:`tools.body_template.place_assignment`):
    a keypoint lost after a fast move whose dot shows in every camera (a
    tail tip after the landing, 160 frames) is found frame by frame. A dot is
    taken only where quality control's checks of views and body pass, so the
    step adds no flags: mean error at most ``max_error_px`` and every view at
    most ``max_view_error_px``, a body deviation at most ``max_body_deviation``
    (judged with every found point in place; not for the ``misfit (K,)``
    keypoints, :func:`body_misfits`), and ``review_min_cameras`` cameras or
    the body's vouching (deviation under ``confirm_body_deviation``); and not
    where the keypoint's left/right twin is lost too (twins share a place,
    so the side would be a guess). The place stands in for quality control's
    ``reacquired`` check and there is no motion prediction for ``jump``.
    With ``last_seen (K, 3)`` (each keypoint's last triangulated point,
    :func:`_last_seen`; NaN never seen), a keypoint whose twin is lost too is taken where
    its dot is nearer its own last seen point than its twin's by
    ``SIDE_MARGIN_MM``, as quality control keeps a returning twin's side.
    Found labels take stage ``free_dot``; a lost keypoint left without a dot
    loses its stray labels on the dots taken.
    """
    present = np.all(np.isfinite(record.points_3d), axis=1)
    lost = np.flatnonzero(~present)
    template, quality = review.template, search.quality
    if lost.size == 0 or not present[[template.axis_from, template.axis_to]].all():
        return record
    centroids = search.centroids_of(record.frame)
    if centroids is None:
        return record
    held = np.where(present[None, :], record.centroid, -1)
    dots = free_dot_points(search.group, centroids, held, record.points_3d[present].mean(axis=0),
                           quality.max_view_error_px, FREE_DOT_MIN_CAMERAS,
                           max_points=lost.size + 1)
    chosen = place_assignment(record.points_3d, lost, dots.points_3d, template,
                              FREE_DOT_MAX_PLACE_MM)
    if last_seen is not None and review.twins is not None:
        chosen = _twins_by_last_seen(chosen, lost, dots.points_3d, last_seen, review.twins)
    found, dot = lost[chosen >= 0], chosen[chosen >= 0]
    if found.size == 0:
        return record
    ncams = (dots.views[:, dot] >= 0).sum(axis=0)
    mean_error = np.nanmean(dots.error_px[:, dot], axis=0)
    worst_view = np.nanmax(dots.error_px[:, dot], axis=0)
    trial = record.points_3d.copy()
    trial[found] = dots.points_3d[dot]
    # Twins share a place: with both lost, which one a dot is would be a guess.
    twin_lost = _twins_lost(record, review.twins)[found]
    if last_seen is not None and twin_lost.any():
        to_own = np.linalg.norm(trial[found] - last_seen[found], axis=1)
        to_twin = np.linalg.norm(trial[found] - last_seen[review.twins[found]], axis=1)
        twin_lost &= ~(to_own + SIDE_MARGIN_MM < to_twin)  # NaN (never seen): still a guess
    accepted = _found_points_pass(trial, found, mean_error, worst_view, ncams, review, quality,
                                  misfit) & ~twin_lost
    found, dot, ncams, mean_error = found[accepted], dot[accepted], ncams[accepted], mean_error[accepted]
    if found.size == 0:
        return record
    views = dots.views[:, dot]  # (C, n_found)
    points_3d = record.points_3d.copy()
    points_3d[found] = dots.points_3d[dot]
    centroid, points_2d = record.centroid.copy(), record.points_2d.copy()
    # object dtype: a fixed-width string array would cut a longer name to the widest present.
    view_error, stage = record.view_error_px.copy(), record.stage.astype(object)
    for camera in range(views.shape[0]):
        agreed = views[camera] >= 0
        # A lost keypoint left without a dot gives up its stray labels on the dots just taken.
        taken = np.isin(centroid[camera], views[camera, agreed]) & ~present
        centroid[camera, taken], points_2d[camera, taken] = -1, np.nan
        view_error[camera, taken], stage[camera, taken] = np.nan, ""
        points_2d[camera, found] = np.nan
        points_2d[camera, found[agreed]] = centroids[camera][views[camera, agreed]]
    centroid[:, found] = views
    view_error[:, found] = dots.error_px[:, dot]
    stage[:, found] = np.where(views >= 0, FREE_DOT_STAGE, "")
    error_px, counts = record.error_px.copy(), record.ncams.copy()
    error_px[found], counts[found] = mean_error, ncams
    flagged, reason, score = record.flagged.copy(), record.reason.astype(object), record.score.copy()
    flagged[found], reason[found] = False, ""
    score[found] = label_score(points_3d[found], mean_error, ncams, flagged[found], quality)
    return replace(record, points_3d=points_3d, error_px=error_px, ncams=counts, score=score,
                   flagged=flagged, reason=reason, points_2d=points_2d, centroid=centroid,
                   view_error_px=view_error, stage=stage)


# How much better (in labelling_fit units, per point) the axis search's labelling must fit the
# body than the tracker's, where the tracker's axis gives a body frame at all. 12 recordings
# (results-only experiment): 3 per point took 26 frames, all right; 1.5 per point took 145 and
# lost on 8 of the 12.
AXIS_SEARCH_GAIN = 3.0
# The worst fit per point a searched labelling may have (true labels of the shipped motion fit
# 0.9-1.1; a head-to-tail reversal found in a rearing frame, 2.7).
AXIS_SEARCH_MAX_FIT = 2.0
# A smaller gain stands where the search has proposed the same relabelling in this many
# consecutive frames: a tracker that lost the body keeps its wrong labels frame after frame,
# while a search that wins by chance seldom repeats itself. 48 recordings (results-only
# replays), the moves flagged axis_search: 1 per point over 1 / 3 / 5 frames gave within
# 5 mm +0.11 / +0.16 / +0.15 points with six cameras (QC precision of seed 7 under 0.5 in
# all three), +0.90 / +0.50 / +0.37 with four, single recordings down to -0.35 / -0.24 /
# -0.12; over 5 frames and unflagged (kept): +0.15 / +0.39, none below -0.05. The proposals
# compared are the midline's (_midline_part; session 24): with cameras 60-80 degrees up
# (6 recordings) +0.8 points within 5 mm, on the 48 +0.02 / +0.23, none lower.
AXIS_SEARCH_STREAK_GAIN = 1.0
AXIS_SEARCH_STREAK_FRAMES = 5


@dataclass
class AxisSearchStreak:
    """The axis search's latest proposal (its midline part) in one pass of the review, and for how many consecutive frames it stood."""

    frame: int = -2
    source: tuple[int, ...] = ()
    frames: int = 0

    def repeated(self, frame: int, source: np.ndarray) -> int:
        """How many consecutive frames up to ``frame`` proposed ``source (K,)``, this one counted."""
        proposal = tuple(source.tolist())
        same = frame == self.frame + 1 and proposal == self.source
        self.frame, self.source, self.frames = frame, proposal, self.frames + 1 if same else 1
        return self.frames


def relabel_by_template(record: FrameRecord, review: TemplateReview,
                        streak: AxisSearchStreak | None = None) -> FrameRecord:
    """``record`` with its points moved to the keypoints whose places they fit, where the body agrees.

    First the review's midline pairs that the places cannot tell apart (the
    back bottom and the tail base) are put in their order along the body
    (:func:`tools.body_order.order_exchanges`, margin ``ORDER_MARGIN_MM``);
    the labels that moves are flagged ``ORDER_REASON`` (the tracker and the
    order disagree, and a true pair can pass each other).
    Where quality control doubts an axis keypoint (flagged, or missing), the
    body axis is searched (:func:`tools.body_template.axis_search`):
    its labelling replaces the tracker's where it fits the body within
    ``AXIS_SEARCH_MAX_FIT`` per point (:func:`tools.body_template.labelling_fit`)
    and moves only labels QC flagged (or missing ones), where an axis
    keypoint is lost or the tracker's labels fit worse by
    ``AXIS_SEARCH_GAIN`` per point (labels on an upright axis are left
    alone). Its moved labels the body does not vouch for are flagged
    ``axis_search``. With a ``streak`` (the frames reviewed in order), a gain
    of ``AXIS_SEARCH_STREAK_GAIN`` per point is enough where the search has
    proposed the same relabelling of the midline keypoints in
    ``AXIS_SEARCH_STREAK_FRAMES`` consecutive frames; the labels it moves are then not flagged
    ``axis_search`` (the repeated proposal is the evidence). Then
    :func:`tools.body_template.template_relabeling` proposes moves on the
    frame's axis; each cycle of them stands only if the body confirms it
    (:class:`TemplateReview`). Pairs that received a moved point are put on
    their sides (:func:`_moved_pairs_by_side`). A moved point takes its 3D
    point, 2D labels (stage ``template``), errors and score with it, and its
    QC flag where the flag concerns its views (``unassigned``,
    ``few_cameras``, ``reprojection``, ``low_margin``, ``model``); a flag
    that doubted its identity (``IDENTITY_DOUBTS``) judged the keypoint it
    left and is dropped, as is ``unchecked`` (the tracker's body had no
    reference for the keypoint it left; the review's body has confirmed it
    as the new one), and ``few_cameras`` is cleared where the body vouches
    for it. A cleared flag's score is restored (quality control halves a
    flagged label's score).
    """
    keypoints = np.arange(record.points_3d.shape[0])
    order = order_exchanges(record.points_3d, review.order, ORDER_MARGIN_MM)
    record = _flag_labels(_moved(record, order, review), order != keypoints, ORDER_REASON)
    record = _axis_searched(record, review, streak)
    source = template_relabeling(record.points_3d, review.template)
    if np.array_equal(source, keypoints):
        return record
    before = body_deviation(record.points_3d, review.regions, review.body)
    after = body_deviation(record.points_3d[source], review.regions, review.body)
    present = np.all(np.isfinite(record.points_3d[source]), axis=1)
    fits = ~present | (after <= review.max_body_deviation)
    judged = present & np.isfinite(after) & np.isfinite(before[source])
    gain = np.where(judged, before[source] - after, 0.0)
    source = _confirmed_cycles(source, fits, gain, judged)
    if np.array_equal(source, keypoints):
        return record
    return _moved(record, _moved_pairs_by_side(record.points_3d, source, review.sides), review)


def _axis_searched(record: FrameRecord, review: TemplateReview,
                   streak: AxisSearchStreak | None = None) -> FrameRecord:
    """``record`` relabelled by the axis search where it doubts an axis keypoint (:func:`relabel_by_template`)."""
    template = review.template
    axis = np.array([template.axis_from, template.axis_to])
    if not record.flagged[axis].any():
        return record
    present = np.all(np.isfinite(record.points_3d), axis=1)
    n_points = int(present.sum())
    lost = axis[~present[axis]]
    current = (float("nan") if lost.size else
               labelling_fit(record.points_3d, template, review.body, review.regions))
    # A search fits no better than 0, so it cannot gain enough on labels that fit well; and
    # labels on an upright axis (no body frame, both present) are a rearing, not a mistake.
    least_gain = AXIS_SEARCH_GAIN if streak is None else AXIS_SEARCH_STREAK_GAIN
    if not (lost.size or current > least_gain * n_points):
        return record
    source, fit = axis_search(record.points_3d, template, review.body, review.regions)
    if not fit <= AXIS_SEARCH_MAX_FIT * n_points or current - fit <= least_gain * n_points:
        return record
    # NaN - fit (an axis keypoint lost) compares False: such a frame needs no gain.
    on_streak_only = current - fit <= AXIS_SEARCH_GAIN * n_points
    if streak is not None and (streak.repeated(record.frame, _midline_part(source, review.twins))
                               < AXIS_SEARCH_STREAK_FRAMES and on_streak_only):
        return record
    # The search only relabels what QC already doubts: with an axis dot hidden and the labels
    # right, a labelling shifted one step along the back can fit as well. 24 recordings: 255
    # frames taken, 1,098 labels gained and 17 lost (no condition: 1,563 and 102; only where
    # the lost keypoint takes a point the body flagged: 841 and 19).
    source = _twins_kept(source, review.twins)
    donors = source[source != np.arange(source.size)]
    if not (record.flagged[donors] | ~present[donors]).all():
        return record
    source = _moved_pairs_by_side(record.points_3d, source, review.sides)
    return _moved(record, source, review, doubt=None if on_streak_only else AXIS_SEARCH_REASON)


def _midline_part(source: np.ndarray, twins: np.ndarray | None) -> np.ndarray:
    """``source (K,)`` with the keypoints that have a twin left out (-1): what a streak compares.

    Twins share places, so which ear or paw the search gives which point is
    arbitrary and changes from frame to frame while its relabelling of the
    midline stands (a whole-frame comparison rarely saw 5 equal proposals in
    a row). Without twins, all of ``source``.
    """
    if twins is None:
        return source
    return np.where(np.asarray(twins) == np.arange(source.size), source, -1)


def _moved(record: FrameRecord, source: np.ndarray, review: TemplateReview,
           doubt: str | None = None) -> FrameRecord:
    """``record`` relabelled by ``source (K,)`` as :func:`relabel_by_template` describes.

    With ``doubt``, a moved point the body does not vouch for (deviation as
    its new keypoint under ``confirm_body_deviation``) is flagged with that
    reason, unless its flag is about its views (which it keeps); a flag that
    doubted its identity is replaced, not cleared.
    """
    keypoints = np.arange(source.size)
    if np.array_equal(source, keypoints):
        return record
    moved = source != keypoints
    present = np.all(np.isfinite(record.points_3d[source]), axis=1)
    deviation = body_deviation(record.points_3d[source], review.regions, review.body)
    vouched = present & (np.nan_to_num(deviation, nan=np.inf) < review.confirm_body_deviation)
    reason, flagged, score = record.reason[source], record.flagged[source], record.score[source]
    identity_doubt = np.isin(reason, (*IDENTITY_DOUBTS, "unchecked"))
    cleared = moved & ((identity_doubt & (doubt is None or vouched))
                       | ((reason == "few_cameras") & vouched))
    doubted = moved & present & ~vouched & (~flagged | identity_doubt) & (doubt is not None)
    score = np.where(cleared, _unflagged_score(score),
                     np.where(doubted & ~flagged, 0.5 * score, score))
    flagged = (flagged & ~cleared) | doubted
    reason = np.where(cleared, "", np.where(doubted, doubt or "", reason))
    labelled = record.centroid[:, source] >= 0
    return replace(record, points_3d=record.points_3d[source], error_px=record.error_px[source],
                   ncams=record.ncams[source], score=score, flagged=flagged, reason=reason,
                   points_2d=record.points_2d[:, source], centroid=record.centroid[:, source],
                   view_error_px=record.view_error_px[:, source],
                   stage=np.where(moved[None, :] & labelled, TEMPLATE_STAGE,
                                  record.stage[:, source]))


def _unflagged_score(score: np.ndarray) -> np.ndarray:
    """A flagged label's score with its flag cleared: quality control halves a flagged label's score."""
    return np.minimum(1.0, 2 * score)


def _flag_labels(record: FrameRecord, labels: np.ndarray, reason: str) -> FrameRecord:
    """``record`` with its unflagged ``labels (K,)`` flagged ``reason``, their scores halved as quality control would."""
    new = labels & ~record.flagged
    if not new.any():
        return record
    return replace(record, flagged=record.flagged | new, reason=np.where(new, reason, record.reason),
                   score=np.where(new, 0.5 * record.score, record.score))


def _twins_by_last_seen(chosen: np.ndarray, lost: np.ndarray, points_3d: np.ndarray,
                        last_seen: np.ndarray, twins: np.ndarray) -> np.ndarray:
    """``chosen (n_lost,)`` with the points of two lost twins exchanged where that puts each nearer its last seen point.

    Places cannot tell twins apart (:func:`found_in_free_dots`); their last
    seen points can, where both are known (NaN: left as chosen).
    """
    chosen = chosen.copy()
    slot = {int(keypoint): index for index, keypoint in enumerate(lost)}
    for index, keypoint in enumerate(lost):
        twin = int(twins[keypoint])
        other = slot.get(twin)
        if other is None or twin <= keypoint or chosen[index] < 0 or chosen[other] < 0:
            continue
        mine, theirs = points_3d[chosen[index]], points_3d[chosen[other]]
        kept = (np.linalg.norm(mine - last_seen[keypoint]) + np.linalg.norm(theirs - last_seen[twin]))
        exchanged = (np.linalg.norm(theirs - last_seen[keypoint])
                     + np.linalg.norm(mine - last_seen[twin]))
        if exchanged < kept:
            chosen[index], chosen[other] = chosen[other], chosen[index]
    return chosen


def _twins_kept(source: np.ndarray, twins: np.ndarray | None) -> np.ndarray:
    """``source`` with each twin pair in the order that leaves more of its points where they were.

    Places cannot tell twins apart, so the search's order within a pair is
    arbitrary; the tracker's labels are some evidence (a pair handed back
    its own two points keeps them as they were).
    """
    if twins is None:
        return source
    kept = source.copy()
    for keypoint, twin in enumerate(np.asarray(twins)):
        if keypoint < twin:
            stay = int(source[keypoint] == keypoint) + int(source[twin] == twin)
            exchanged = int(source[twin] == keypoint) + int(source[keypoint] == twin)
            if exchanged > stay:
                kept[[keypoint, twin]] = source[twin], source[keypoint]
    return kept


def _moved_pairs_by_side(points_3d: np.ndarray, source: np.ndarray, sides: SideModel | None
                         ) -> np.ndarray:
    """``source`` with each left/right pair that received a moved point put on its sides.

    Twins share one place along and above the back, so the places cannot say
    which twin a moved point belongs to; their order across the body can
    (:func:`tools.body_side.order_by_side`, as Stage 4 applies it). Pairs the
    review did not touch keep the tracker's order.
    """
    if sides is None:
        return source
    exchange = order_by_side(points_3d[source], sides, SIDE_ORDER_MARGIN_MM)
    moved = source != np.arange(source.size)
    for pair in sides.pairs:
        members = [pair.positive, pair.negative]
        if not moved[members].any():
            exchange[members] = members
    return source[exchange]


def _confirmed_cycles(source: np.ndarray, fits: np.ndarray, gain: np.ndarray,
                      judged: np.ndarray) -> np.ndarray:
    """``source`` with every cycle of moves the body does not confirm undone.

    Per receiving keypoint ``(K,)``: ``fits``, its new point fits the body
    (or it receives nothing); ``gain``, how much lower the point's deviation
    is as this keypoint than as its old one; ``judged``, whether the body
    judged the point both ways. A cycle stands when every point in it fits
    and its gains add up to more than 0 (or the body judged none of them).
    """
    kept = np.arange(source.size)
    seen = np.zeros(source.size, bool)
    for start in np.flatnonzero(source != kept):
        if seen[start]:
            continue
        cycle, keypoint = [], start
        while not seen[keypoint]:
            seen[keypoint] = True
            cycle.append(keypoint)
            keypoint = source[keypoint]
        if fits[cycle].all() and (gain[cycle].sum() > 0 or not judged[cycle].any()):
            kept[cycle] = source[cycle]
    return kept


def review_against_seeds(records: list[FrameRecord], seed_frames: frozenset[int]
                         ) -> list[FrameRecord]:
    """The accepted ``records`` (by frame) with the labels the seed frames contradict flagged.

    :func:`tools.seed_check.contradicted_by_seeds` on the records' points:
    an unflagged label on a track that a later seed frame shows was on
    another keypoint's dot, back to the last frame QC doubted its identity
    (``IDENTITY_DOUBTS``), is flagged ``seed_mismatch`` (its score halved,
    as quality control does). Labels already flagged keep their reason. The
    frame log is not changed: the results files and run.json are written
    from this view of it.
    """
    if len(seed_frames) < 2 or not records:
        return records
    n_frames = records[-1].frame + 1
    points_3d = np.full((n_frames, *records[0].points_3d.shape), np.nan)
    is_seed = np.isin(np.arange(n_frames), sorted(seed_frames))
    doubted = np.zeros(points_3d.shape[:2], dtype=bool)
    for record in records:
        points_3d[record.frame] = record.points_3d
        doubted[record.frame] = np.isin(record.reason, IDENTITY_DOUBTS)
    contradicted = contradicted_by_seeds(points_3d, is_seed, doubted)
    return [_flag_labels(record, contradicted[record.frame], SEED_MISMATCH) for record in records]
