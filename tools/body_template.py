"""Where each keypoint sits in the body's own frame: along the back and above or below it.

Distances to the rest of the body cannot tell a hind paw from the tail base
(both lie 40-60 mm from the ears and the back top), and after a fast move a
tracker can leave a paw's label on a tail dot and the other way round. In the
body's own frame they are far apart: with the back axis (two midline
keypoints) as the first direction and the rig's up direction, made
perpendicular to it, as the second, a mouse's paws sit 16-34 mm below the
back while the tail base is level with it (-1 to 5 mm) and the tail middle
16-26 mm above (5th-95th percentiles over the shipped true motion while the
back is not upright). :func:`template_model` learns each keypoint's place
(along, above) from the seed frames; :func:`template_relabeling` moves a
point whose place is far from its keypoint's to a keypoint whose place it
fits, among the keypoints that are missing or misplaced too.

Shapes: ``points_3d (n_keypoints, 3)`` of one frame, NaN where missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.body_distances import DistanceModel, body_deviations
from tools.body_side import cross3, lateral_directions
from tools.camera import check_shape

UNJUDGED_DEVIATION = 1.0  # a point the body cannot judge (too few anchors) fits it at the limit
UNPLACED_COST = 50.0  # tolerances: a keypoint without a place takes a point only when nothing else can
# How far a point may lie from its keypoint's place along the back and above it, one tolerance.
ALONG_TOLERANCE_MM = 20.0
ABOVE_TOLERANCE_MM = 10.0


@dataclass(frozen=True)
class TemplateModel:
    """Each keypoint's place in the body frame (from the seed frames, or a run's trusted labels).

    Attributes
    ----------
    up : np.ndarray
        ``(3,)`` unit vector, the rig's up direction.
    axis_from, axis_to : int
        Midline keypoints; ``axis_to - axis_from`` is the first body direction.
    place_mm : np.ndarray
        ``(n_keypoints, 2)`` place (along the axis, above it) from the middle
        of the two axis keypoints; NaN where neither the keypoint nor its twin
        has one.
    """

    up: np.ndarray
    axis_from: int
    axis_to: int
    place_mm: np.ndarray


def body_places(points_3d: np.ndarray, up: np.ndarray, axis_from: int, axis_to: int,
                max_tilt: float = 0.8) -> np.ndarray | None:
    """``(K, 2)`` place of each point (along the axis, above it) in mm; None when the frame has no body frame.

    No body frame when an axis keypoint is missing or the axis is within
    ``acos(max_tilt)`` of ``up`` (a rearing or climbing animal). Across the
    body is :func:`tools.body_side.lateral_direction`; above is along x across.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    places, framed = _places(points_3d[None], np.array([axis_from]), np.array([axis_to]), up,
                             max_tilt)
    return places[0] if framed[0] else None


def _places(points_3d: np.ndarray, axis_from: np.ndarray, axis_to: np.ndarray, up: np.ndarray,
            max_tilt: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`body_places` of many rows at once: ``points_3d (n, M, 3)``, row ``i``'s axis from point ``axis_from[i]`` to ``axis_to[i]``.

    Returns places ``(n, M, 2)`` (NaN in rows without a body frame) and
    ``framed (n,)``. Rows are frames of a run, or axis hypotheses on one frame.
    """
    rows = np.arange(points_3d.shape[0])
    start, end = points_3d[rows, axis_from], points_3d[rows, axis_to]
    axis = end - start
    across, framed = lateral_directions(axis, up, max_tilt)
    with np.errstate(invalid="ignore", divide="ignore"):
        along = axis / np.linalg.norm(axis, axis=1, keepdims=True)
        above = cross3(along, across)
        offset = points_3d - ((start + end) / 2)[:, None, :]
        places = np.stack([np.einsum("nmc,nc->nm", offset, along),
                           np.einsum("nmc,nc->nm", offset, above)], axis=2)
    return np.where(framed[:, None, None], places, np.nan), framed


def template_model(seed_points_3d: np.ndarray, up: np.ndarray, axis_from: int, axis_to: int,
                   max_tilt: float = 0.8, twins: np.ndarray | None = None) -> TemplateModel | None:
    """Learn each keypoint's place from ``seed_points_3d (n_seeds, K, 3)``; None if no seed frame has a body frame.

    ``twins (K,)``: each keypoint's left/right twin (itself where none); twins
    share one place (:func:`_twins_share_places`), so a paw hidden in every
    seed frame takes its twin's.
    """
    seeds = check_shape("seed_points_3d", seed_points_3d, (None, None, 3))
    places = [body_places(frame, up, axis_from, axis_to, max_tilt) for frame in seeds]
    places = [place for place in places if place is not None]
    if not places:
        return None
    stacked = np.stack(places)
    seen = np.all(np.isfinite(stacked), axis=2)  # (n_framed_seeds, K)
    total = np.where(seen[..., None], stacked, 0.0).sum(axis=0)
    count = seen.sum(axis=0)
    mean = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], np.nan)
    return TemplateModel(up=np.asarray(up, dtype=np.float64), axis_from=axis_from,
                         axis_to=axis_to, place_mm=_twins_share_places(mean, twins))


def trusted_template(points_3d: np.ndarray, trusted: np.ndarray, model: TemplateModel,
                     twins: np.ndarray | None = None, max_tilt: float = 0.8) -> TemplateModel:
    """``model`` with each keypoint's place the median place of its ``trusted`` points.

    ``points_3d (n_frames, K, 3)`` and ``trusted (n_frames, K)`` (for
    example the labels quality control did not flag) of a whole run: a few
    seed frames catch one posture (a tail curled one way, a paw hidden),
    the trusted frames give a keypoint's usual place. Twins share their
    medians (``twins`` as for :func:`template_model`), so a paw whose labels
    are never trusted takes its twin's; a keypoint that has neither keeps
    ``model``'s place. The frames' body axis is taken as labelled, trusted or
    not (keeping only frames with both axis keypoints trusted did worse on
    12 recordings: 73.04% against 73.18% within 5 mm).
    """
    points_3d = check_shape("points_3d", points_3d, (None, model.place_mm.shape[0], 3))
    trusted = check_shape("trusted", trusted, points_3d.shape[:2]).astype(bool)
    n_frames = points_3d.shape[0]
    places, _ = _places(points_3d, np.full(n_frames, model.axis_from),
                        np.full(n_frames, model.axis_to), model.up, max_tilt)
    places = np.where(trusted[..., None], places, np.nan)
    counted = np.isfinite(places).all(axis=2).any(axis=0)
    median = np.full_like(model.place_mm, np.nan)
    median[counted] = np.nanmedian(places[:, counted], axis=0)
    # Twins share first, so a paw the seeds hid (never trusted: QC leaves it unchecked)
    # takes its twin's trusted place rather than half of the seeds' posture.
    shared = _twins_share_places(median, twins)
    return replace(model, place_mm=np.where(np.isfinite(shared), shared, model.place_mm))


def place_assignment(points_3d: np.ndarray, wanted: np.ndarray, candidates_3d: np.ndarray,
                     model: TemplateModel, max_place_mm: float, max_tilt: float = 0.8) -> np.ndarray:
    """Give the ``wanted`` keypoints the candidate points whose places fit theirs -> ``(n_wanted,)``.

    ``points_3d (K, 3)`` is the frame (its axis keypoints give the body
    frame), ``wanted (n_wanted,)`` keypoint indices, ``candidates_3d (n, 3)``
    points no keypoint holds. One optimal assignment on the distance between
    each candidate's place and each keypoint's (``model.place_mm``); a pair
    farther apart than ``max_place_mm`` is never made, nor one whose point
    lies nearer some other keypoint's place. Returns the candidate
    index of each wanted keypoint, -1 for none (also where the frame has no
    body frame or the keypoint no place).
    """
    points_3d = check_shape("points_3d", points_3d, (model.place_mm.shape[0], 3))
    candidates_3d = check_shape("candidates_3d", candidates_3d, (None, 3))
    wanted = np.asarray(wanted, dtype=np.int64)
    chosen = np.full(wanted.size, -1)
    if wanted.size == 0 or candidates_3d.shape[0] == 0:
        return chosen
    stacked = np.concatenate([points_3d[[model.axis_from, model.axis_to]], candidates_3d])[None]
    places, framed = _places(stacked, np.array([0]), np.array([1]), model.up, max_tilt)
    if not framed[0]:
        return chosen
    to_every = np.linalg.norm(places[0, 2:, None, :] - model.place_mm[None], axis=2)  # (n, K)
    distance = to_every[:, wanted]
    # NaN (no place) is never allowed; nor a point nearer another keypoint's place (twins
    # share theirs): a tail middle does not take the tail tip's dot.
    nearest = np.where(np.isfinite(to_every), to_every, np.inf).min(axis=1)
    allowed = (distance <= max_place_mm) & (distance <= nearest[:, None])
    if not allowed.any():
        return chosen
    rows, columns = linear_sum_assignment(np.where(allowed, distance, 1e9))
    taken = allowed[rows, columns]
    chosen[columns[taken]] = rows[taken]
    return chosen


def _twins_share_places(place_mm: np.ndarray, twins: np.ndarray | None) -> np.ndarray:
    """``place_mm (K, 2)`` with each twin pair at the mean of its places, or at the one known.

    Along and above the back, mirroring changes nothing: one place for both
    twins describes the body rather than the gait phase a few frames caught
    (seed frames with one hind paw 13 mm ahead of the other).
    """
    if twins is None:
        return place_mm
    twin_place = place_mm[np.asarray(twins)]
    known, twin_known = np.isfinite(place_mm), np.isfinite(twin_place)
    return np.where(known & twin_known, (place_mm + twin_place) / 2,
                    np.where(known, place_mm, twin_place))


def template_relabeling(points_3d: np.ndarray, model: TemplateModel,
                        along_tolerance_mm: float = ALONG_TOLERANCE_MM,
                        above_tolerance_mm: float = ABOVE_TOLERANCE_MM,
                        misplaced: float = 1.5, fits: float = 1.0, max_tilt: float = 0.8
                        ) -> np.ndarray:
    """A relabelling ``source (K,)``: keypoint ``k`` should take what keypoint ``source[k]`` has.

    A point is misplaced when its place is more than ``misplaced``
    tolerances from its keypoint's (distance in units of
    ``along_tolerance_mm`` and ``above_tolerance_mm``). The points of the
    misplaced keypoints are matched by optimal assignment to those keypoints
    and the missing ones; a point may only go to a keypoint whose place it
    fits within ``fits`` tolerances, or stay. The axis keypoints and
    keypoints without a place are left alone. ``arange`` when nothing
    moves or the frame has no body frame. On the shipped true motion with
    seeds from one moment (frames 0-2, 100-102, ... 900-902), true points are
    moved in no frame for 9 of those 10 seed times, and in 4 of 500 frames
    (the landing from the platform) for seeds 200-202.
    """
    points_3d = check_shape("points_3d", points_3d, (model.place_mm.shape[0], 3))
    n_keypoints = points_3d.shape[0]
    source = np.arange(n_keypoints)
    places = body_places(points_3d, model.up, model.axis_from, model.axis_to, max_tilt)
    if places is None:
        return source
    scale = np.array([along_tolerance_mm, above_tolerance_mm])
    # mismatch[k, j]: keypoint k's point at keypoint j's place, in tolerances.
    mismatch = np.linalg.norm((places[:, None, :] - model.place_mm[None, :, :]) / scale, axis=2)
    present = np.all(np.isfinite(points_3d), axis=1)
    movable = np.isfinite(model.place_mm).all(axis=1)
    movable[[model.axis_from, model.axis_to]] = False
    own = np.diagonal(mismatch)
    candidates = np.flatnonzero(movable & (~present | (own > misplaced)))
    if not present[candidates].any():
        return source
    sub = mismatch[np.ix_(candidates, candidates)]
    allowed = (sub < fits) | np.eye(candidates.size, dtype=bool)
    cost = np.where(present[candidates, None], np.where(allowed, sub, 1e6), 0.0)
    rows, cols = linear_sum_assignment(cost)
    source[candidates[cols]] = candidates[rows]
    return source


def labelling_fit(points_3d: np.ndarray, model: TemplateModel, body: DistanceModel,
                  regions: list[list[int]], along_tolerance_mm: float = ALONG_TOLERANCE_MM,
                  above_tolerance_mm: float = ABOVE_TOLERANCE_MM, max_tilt: float = 0.8) -> float:
    """How badly a frame's labels fit the body: lower is better; NaN when the labels give no body frame.

    The sum over the frame's points of the body's deviation
    (:func:`tools.body_distances.body_deviation`, ``UNJUDGED_DEVIATION``
    where it cannot judge) and the distance from the keypoint's place in
    tolerances (none for a keypoint without a place).
    """
    points_3d = check_shape("points_3d", points_3d, (model.place_mm.shape[0], 3))
    places = body_places(points_3d, model.up, model.axis_from, model.axis_to, max_tilt)
    if places is None:
        return float("nan")
    return float(_fits(points_3d[None], places[None], model, body, regions,
                       np.array([along_tolerance_mm, above_tolerance_mm]))[0])


def axis_search(points_3d: np.ndarray, model: TemplateModel, body: DistanceModel,
                regions: list[list[int]], along_tolerance_mm: float = ALONG_TOLERANCE_MM,
                above_tolerance_mm: float = ABOVE_TOLERANCE_MM, axis_spreads: float = 1.5,
                max_tilt: float = 0.8) -> tuple[np.ndarray, float]:
    """The labelling of a frame's points that fits the body best, the body axis taken from any two of them.

    :func:`template_relabeling` builds the body frame on the two axis
    keypoints' labels; where one of them is missing or on another dot it can
    move nothing. Here every ordered pair of points whose distance is within
    ``axis_spreads`` of the body's tolerance of the axis length, and not
    upright, is tried as the axis; the other points go to keypoints by
    optimal assignment on their places, and the labelling with the lowest
    :func:`labelling_fit` wins. Returns ``source (K,)`` (keypoint ``k``
    should take what keypoint ``source[k]`` has; the keypoints left without
    a point take the missing ones' NaN, each missing one its own) and its
    fit, NaN (with ``arange``) when no pair qualifies. Left and right twins
    share a place, so which twin a point goes to is arbitrary: put them on
    their sides afterwards.
    """
    points_3d = check_shape("points_3d", points_3d, (model.place_mm.shape[0], 3))
    n_keypoints = points_3d.shape[0]
    axis_from, axis_to = model.axis_from, model.axis_to
    scale = np.array([along_tolerance_mm, above_tolerance_mm])
    present = np.flatnonzero(np.all(np.isfinite(points_3d), axis=1))
    points = points_3d[present]
    expected = body.median_mm[axis_from, axis_to]
    unsearched = np.arange(n_keypoints), float("nan")
    if not np.isfinite(expected) or present.size < 2:
        return unsearched
    distance = np.linalg.norm(points[:, None] - points[None], axis=2)
    near = np.abs(distance - expected) <= axis_spreads * body.spread_mm[axis_from, axis_to]
    np.fill_diagonal(near, False)
    pairs = np.argwhere(near)  # (H, 2) ordered pairs of rows of ``points``, row-major
    places, framed = _places(np.broadcast_to(points, (len(pairs), *points.shape)), pairs[:, 0],
                             pairs[:, 1], model.up, max_tilt)
    pairs, places = pairs[framed], places[framed]  # (H, n, 2)
    costs = np.linalg.norm((places[:, :, None, :] - model.place_mm) / scale, axis=3)
    costs = np.nan_to_num(costs, nan=UNPLACED_COST)
    if not len(pairs):
        return unsearched
    # The pair's two points are the axis keypoints and nothing else.
    tried = np.arange(len(pairs))
    costs[tried, pairs[:, 0]] = costs[tried, pairs[:, 1]] = 1e9
    costs[tried, pairs[:, 0], axis_from] = costs[tried, pairs[:, 1], axis_to] = 0.0
    # Every point gets a keypoint (there are no more points than keypoints), so each
    # assignment's rows are 0..n-1 in order and its columns say where they go.
    columns = np.array([linear_sum_assignment(cost)[1] for cost in costs])  # (H, n)
    sources = np.full((len(pairs), n_keypoints), -1)
    sources[tried[:, None], columns] = present
    placings = np.full((len(pairs), *model.place_mm.shape), np.nan)
    placings[tried[:, None], columns] = places
    labelled = np.where(sources[..., None] >= 0, points_3d[np.maximum(sources, 0)], np.nan)
    fits = _fits(labelled, placings, model, body, regions, scale)
    best = int(np.argmin(fits))  # the first pair wins a tie
    source = sources[best]
    # The keypoints left without a point take the missing keypoints' (empty) records: each
    # missing one its own where it is left without, the rest in order.
    missing = np.setdiff1d(np.arange(n_keypoints), present)
    unfilled = source < 0
    source[missing[unfilled[missing]]] = missing[unfilled[missing]]
    source[source < 0] = np.setdiff1d(missing, source)
    return source, float(fits[best])


def _fits(points_3d: np.ndarray, places: np.ndarray, model: TemplateModel, body: DistanceModel,
          regions: list[list[int]], scale: np.ndarray) -> np.ndarray:
    """:func:`labelling_fit` of labellings ``points_3d (n, K, 3)`` at ``places (n, K, 2)`` -> ``(n,)``."""
    present = np.all(np.isfinite(points_3d), axis=2)
    deviation = np.nan_to_num(body_deviations(points_3d, regions, body), nan=UNJUDGED_DEVIATION)
    mismatch = np.nan_to_num(np.linalg.norm((places - model.place_mm) / scale, axis=2), nan=0.0)
    return np.where(present, deviation + mismatch, 0.0).sum(axis=1)
