"""Identity check by body distances: catch keypoints that took a neighbour's dot.

A tracker that loses a paw for a few frames can re-acquire the dot of
another paw, and when every camera makes the same mistake the wrong label
triangulates cleanly: reprojection cannot see it. What still sees it is the
body: a forepaw is ~15 mm from the top of the back, a hindpaw ~45 mm. The
distance from a keypoint to the keypoints of *other* regions is invariant to
how the animal turns, and it is learnt from the seed frames without knowing
what any keypoint is called.

:func:`distance_model` learns the expected distances; :func:`region_relabeling`
relabels a region's points when another labelling fits those distances much
better, and :func:`body_deviation` measures how well each point fits (quality
control flags the points that fit badly and trusts the ones that fit well). Mirror pairs (left and right ear or paw) sit at the same distance
from the midline keypoints, so the check leaves them alone: it corrects
only what the body can tell apart. The thresholds are cautious: over 2,200
frames of the shipped real motion, with seeds taken anywhere in it, correct
labels were never relabelled; a looser check (exchanges across regions, a
smaller gain) undid more swaps in that test but tracked worse in the
pipeline, where many keypoints are missing at once (bench/results/pose.md).
With ``groups`` (left/right pairs) the check is run on the regions that
hold a pair, where it tells forepaws from hindpaws by tens of millimetres,
on a small gain; that gain is not safe for correct labels everywhere: on
the shipped real motion it swaps a correct forepaw_R and hindpaw_R in
about 2% of frames (a crouch around frames 216-234), a cost the pipeline
accepts for what it gains on real errors (bench/results/pose.md, session 7).

Shapes: ``points_3d (n_keypoints, 3)`` of one frame, NaN where missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# How far a distance between two keypoints may move with posture: a floor for
# rigid pairs plus a share of the distance (a paw 40 mm from the back swings more).
SPREAD_FLOOR_MM = 3.0
SPREAD_SHARE = 0.3
_TIE_BREAK = 1e-9  # in spreads: far below any gain that relabels
_GAIN_MARGIN = 1e-9  # relative: far above the rounding of a mean of a dozen gains


@dataclass(frozen=True)
class DistanceModel:
    """Expected distances between keypoints.

    Attributes
    ----------
    median_mm : np.ndarray
        ``(n_keypoints, n_keypoints)`` median distance over the frames that
        saw both keypoints; NaN where no frame saw the pair.
    spread_mm : np.ndarray
        ``(n_keypoints, n_keypoints)`` tolerance of each distance.
    """

    median_mm: np.ndarray
    spread_mm: np.ndarray


def distance_model(points_3d: np.ndarray, twins: np.ndarray | None = None) -> DistanceModel:
    """Learn expected distances from ``points_3d (n_frames, n_keypoints, 3)`` (the seed frames).

    ``twins (n_keypoints,)``: each keypoint's left/right twin (itself where
    none). A pair no frame saw takes its mirror image's distance (the body is
    left/right symmetric), so a paw hidden in every seed frame is judged too.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    if points_3d.ndim != 3 or points_3d.shape[2] != 3:
        raise ValueError(f"points_3d must have shape (n_frames, n_keypoints, 3), got {points_3d.shape}")
    distances = _pairwise(points_3d)
    seen = np.isfinite(distances).any(axis=0)
    median = np.full(distances.shape[1:], np.nan)
    median[seen] = np.nanmedian(distances[:, seen], axis=0)
    if twins is not None:
        twins = np.asarray(twins)
        median = np.where(seen, median, median[np.ix_(twins, twins)])
    return DistanceModel(median_mm=median, spread_mm=distance_spread(median))


def distance_spread(distance_mm: np.ndarray | float) -> np.ndarray | float:
    """How far a distance of ``distance_mm`` between two keypoints may move with posture (its tolerance)."""
    return SPREAD_FLOOR_MM + SPREAD_SHARE * distance_mm


def region_relabeling(points_3d: np.ndarray, regions: Sequence[Sequence[int]],
                      model: DistanceModel, min_gain: float = 1.5,
                      min_anchors: int = 3, groups: np.ndarray | None = None) -> np.ndarray:
    """A relabelling ``source (n_keypoints,)``: keypoint ``k`` should take what keypoint ``source[k]`` has.

    Per region, the region's triangulated points are matched to the region's
    keypoints (all of them, so a point may move to a keypoint that is
    missing) by optimal assignment on the mismatch between each point's
    distances to the anchors and the model's, in spreads; anchors are the
    triangulated keypoints of the other regions. The match replaces the
    current labels only when it lowers the mismatch of the moved points by
    more than ``min_gain`` on average, with at least ``min_anchors``
    anchors. ``source`` is a permutation within each region, ``arange``
    when nothing changes.

    With ``groups``, a point's mismatch as a keypoint is its best mismatch
    over the keypoint's group (:func:`tools.keypoint_names.mirror_groups`:
    a left/right pair), so only moves between groups can gain and a point
    keeps its side within its group: the body's distances cannot tell a
    left paw from the right one, but they tell a forepaw from a hindpaw,
    even when the seeds triangulated only one of the pair. Only the pairs
    of a region that holds two or more (the paws) are checked then; its
    keypoints without a twin are anchors, never moved: between pairs such
    as forepaws and hind paws the distances differ by tens of millimetres,
    so a small ``min_gain`` is safe there, but a lone keypoint of the region
    (a back keypoint beside the hind paws) can lie as near a paw as the
    paws lie to each other.

    Parameters
    ----------
    points_3d : np.ndarray
        ``(n_keypoints, 3)``, NaN where missing.
    regions : Sequence[Sequence[int]]
        Keypoint indices of each region (every keypoint in at most one region).
    model : DistanceModel
        From :func:`distance_model`.
    groups : np.ndarray or None
        ``(n_keypoints,)`` group of each keypoint; None: each its own.
    """
    points_3d = _frame_points(points_3d, model)
    n_keypoints = points_3d.shape[0]
    source = np.arange(n_keypoints)
    known = np.all(np.isfinite(points_3d), axis=1)
    distances = _pairwise(points_3d[None])[0]
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_keypoints,):
            raise ValueError(f"groups must have shape ({n_keypoints},), got {groups.shape}")
    for members in regions:
        members = np.asarray(members, dtype=np.int64)
        if groups is not None:
            members = members[_paired(groups[members])]
            if members.size == 0 or (groups[members] == groups[members[0]]).all():
                continue  # fewer than two groups: nothing to move between
        outside = known.copy()
        outside[members] = False
        anchors = np.flatnonzero(outside)
        present_columns = np.flatnonzero(known[members])
        present = members[present_columns]
        if anchors.size < min_anchors or present.size == 0:
            continue
        mismatch = _mismatch(distances[present[:, None], anchors],
                             model.median_mm[members[:, None], anchors],
                             model.spread_mm[members[:, None], anchors])
        if groups is not None:
            same_group = groups[members][:, None] == groups[members][None, :]
            mismatch = np.where(same_group[None], mismatch[:, None, :], np.inf).min(axis=2)
        current = mismatch[np.arange(present.size), present_columns]
        # The moved points' mean gain is at most the largest gain of one point on its own:
        # below min_gain (less a margin for the mean's rounding) no relabelling can pass.
        if (current - mismatch.min(axis=1) <= min_gain - _GAIN_MARGIN * abs(min_gain)).all():
            continue
        cost = np.where(np.isfinite(mismatch), mismatch, 1e6)
        # Among equal fits (twins of one group) a point keeps its label.
        cost[np.arange(present.size), present_columns] -= _TIE_BREAK
        rows, cols = linear_sum_assignment(cost)
        moved = members[cols] != present[rows]
        if (not moved.any() or not np.isfinite(mismatch[rows, cols]).all()
                or not np.isfinite(current).all()):
            continue
        if (current[rows][moved] - mismatch[rows, cols][moved]).mean() > min_gain:
            matched = members[cols]
            source[matched] = present[rows]
            # The labels left over take the missing keypoints' (empty) labels.
            source[members[~np.isin(members, matched)]] = members[~np.isin(members, present[rows])]
    return source


def pair_exchange(points_3d: np.ndarray, regions: Sequence[Sequence[int]], model: DistanceModel,
                  min_gain: float = 0.6, min_anchors: int = 4) -> np.ndarray:
    """The exchange of two keypoints of different regions that fits the body best -> ``source (n_keypoints,)``.

    A fast turn can leave two keypoints of different regions on each
    other's dots (the back and the tail base while the mouse bends into a
    U); the within-region check cannot undo that. For every pair of
    keypoints of two different regions, each point's mismatch with the
    model (mean deviation in spreads over the anchors: the keypoints of the
    other regions) as its own keypoint is compared with its mismatch as the
    other keypoint; the pair's gain is the smaller of the two points' gains
    (both must fit better: one bad point is not an exchange).
    ``points_3d (n_frames, n_keypoints, 3)`` are the last frames as labelled
    (the current one last): a pair is exchanged only when its gain is over
    ``min_gain`` in every one of them, with at least ``min_anchors``
    anchors, so a posture that only passes (the turn itself) exchanges
    nothing. The pair with the largest smallest gain wins. Over the shipped
    real motion with seeds anywhere, correct labels never gained more than
    0.53 in a frame, while a back/tail-base exchange gains more than that in
    96% of frames. ``arange`` when nothing is exchanged.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    n_keypoints = model.median_mm.shape[0]
    if points_3d.ndim != 3 or points_3d.shape[1:] != (n_keypoints, 3):
        raise ValueError(f"points_3d must have shape (n_frames, {n_keypoints}, 3), "
                         f"got {points_3d.shape}")
    source = np.arange(n_keypoints)
    region_of = _region_of(regions, n_keypoints)
    known = np.all(np.isfinite(points_3d), axis=2)  # (F, K)
    # Candidate pairs (i < j, row-major): different regions, both known in every frame.
    always = known.all(axis=0)
    first, second = np.nonzero(np.triu(region_of[:, None] != region_of[None, :], k=1)
                               & always[:, None] & always[None, :])
    if first.size == 0:
        return source
    if min_anchors >= 1:
        # Every frame must gain, so the current frame alone rules most pairs out for a
        # tenth of the work; with an anchor in every frame no gain is NaN, so the first
        # largest gain over min_gain is the same among the pairs left.
        current = _exchange_gains(_pairwise(points_3d[-1:]), known[-1:], region_of, model,
                                  first, second, min_anchors)
        first, second = first[current > min_gain], second[current > min_gain]
        if first.size == 0:
            return source
    gain = _exchange_gains(_pairwise(points_3d), known, region_of, model, first, second,
                           min_anchors)
    best = int(np.argmax(gain))  # the first pair (i < j) of the largest gain
    if gain[best] > min_gain:
        i, j = first[best], second[best]
        source[i], source[j] = j, i
    return source


def _exchange_gains(distances: np.ndarray, known: np.ndarray, region_of: np.ndarray,
                    model: DistanceModel, first: np.ndarray, second: np.ndarray,
                    min_anchors: int) -> np.ndarray:
    """:func:`pair_exchange`'s gain of exchanging ``first[p]`` and ``second[p]`` -> ``(n_pairs,)``.

    ``distances (F, K, K)`` and ``known (F, K)`` of the frames; the gain is
    the smallest over the frames, -inf where a frame has fewer than
    ``min_anchors`` anchors.
    """
    median, spread = model.median_mm, model.spread_mm
    # Deviation of point k's distance to anchor a from the slot keypoint's, in spreads,
    # axes (frame, pair, anchor): i as i, j as j, i as j, j as i.
    as_self = np.abs(distances - median) / spread  # (F, K, anchor)
    terms = (as_self[:, first], as_self[:, second],
             np.abs(distances[:, first] - median[second]) / spread[second],
             np.abs(distances[:, second] - median[first]) / spread[first])
    comparable = (known[:, None, :] & (region_of[None, None, :] != region_of[first][None, :, None])
                  & (region_of[None, None, :] != region_of[second][None, :, None]))
    for term in terms:
        comparable &= np.isfinite(term)
    count = comparable.sum(axis=2)  # (F, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        mismatch = [np.where(comparable, term, 0.0).sum(axis=2) / count for term in terms]
        gain = np.minimum(mismatch[0] - mismatch[2], mismatch[1] - mismatch[3]).min(axis=0)
    return np.where((count >= min_anchors).all(axis=0), gain, -np.inf)


def _paired(member_groups: np.ndarray) -> np.ndarray:
    """``(n_members,)`` bool: the region's members whose group is a pair within the region."""
    # A handful of members: comparing all with all costs less than np.unique.
    return (member_groups[:, None] == member_groups[None, :]).sum(axis=1) >= 2


def _frame_points(points_3d: np.ndarray, model: DistanceModel) -> np.ndarray:
    """``points_3d`` as float64, checked to be one frame ``(n_keypoints, 3)`` of the model's keypoints."""
    points_3d = np.asarray(points_3d, dtype=np.float64)
    n_keypoints = model.median_mm.shape[0]
    if points_3d.shape != (n_keypoints, 3):
        raise ValueError(f"points_3d must have shape ({n_keypoints}, 3), got {points_3d.shape}")
    return points_3d


def _region_of(regions: Sequence[Sequence[int]], n_keypoints: int) -> np.ndarray:
    """``(n_keypoints,)`` region index of each keypoint; a keypoint in no region is its own region."""
    region_of = np.full(n_keypoints, -1)
    for index, members in enumerate(regions):
        region_of[np.asarray(members, dtype=np.int64)] = index
    return np.where(region_of < 0, -1 - np.arange(n_keypoints), region_of)


def body_deviation(points_3d: np.ndarray, regions: Sequence[Sequence[int]],
                   model: DistanceModel, min_anchors: int = 3) -> np.ndarray:
    """How far each point's distances to the other regions' points are from the model's -> ``(n_keypoints,)``.

    The mean over the anchors (the triangulated keypoints of the other
    regions) of ``|distance - expected| / spread``: under 1 for a point that
    sits where the body puts its keypoint, several for one on another
    keypoint's dot. NaN where the point is missing, the model never saw the
    keypoint, or fewer than ``min_anchors`` anchors are comparable.
    ``points_3d``, ``regions`` and ``model`` as in :func:`region_relabeling`.
    """
    return body_deviations(_frame_points(points_3d, model)[None], regions, model, min_anchors)[0]


def body_deviations(points_3d: np.ndarray, regions: Sequence[Sequence[int]],
                    model: DistanceModel, min_anchors: int = 3) -> np.ndarray:
    """:func:`body_deviation` of many labellings at once: ``points_3d (n, K, 3)`` -> ``(n, K)``."""
    points_3d = np.asarray(points_3d, dtype=np.float64)
    n_keypoints = model.median_mm.shape[0]
    if points_3d.ndim != 3 or points_3d.shape[1:] != (n_keypoints, 3):
        raise ValueError(f"points_3d must have shape (n, {n_keypoints}, 3), got {points_3d.shape}")
    region_of = _region_of(regions, n_keypoints)
    deviation = np.abs(_pairwise(points_3d) - model.median_mm) / model.spread_mm
    comparable = np.isfinite(deviation) & (region_of[:, None] != region_of[None, :])
    count = comparable.sum(axis=2)
    total = np.where(comparable, deviation, 0.0).sum(axis=2)
    return np.where(count >= min_anchors, total / np.maximum(count, 1), np.nan)


def count_deviating(counts: np.ndarray | None, deviation: np.ndarray, max_deviation: float
                    ) -> np.ndarray:
    """Add frames to ``counts (2, n_keypoints)``: frames with a deviation, frames with one over ``max_deviation``.

    ``counts`` None starts from zero; ``deviation (n_keypoints,)`` as
    :func:`body_deviation` returns it, or ``(n_frames, n_keypoints)`` as
    :func:`body_deviations` does (NaN counts in neither row).
    """
    deviation = np.asarray(deviation, dtype=np.float64)
    n_keypoints = deviation.shape[-1]
    before = np.zeros((2, n_keypoints), np.int64) if counts is None else np.asarray(counts, np.int64)
    if before.shape != (2, n_keypoints):
        raise ValueError(f"counts must have shape (2, {n_keypoints}), got {before.shape}")
    judged = np.isfinite(deviation)
    added = np.stack([judged, judged & (deviation > max_deviation)]).reshape(2, -1, n_keypoints)
    return before + added.sum(axis=1, dtype=np.int64)


def misfit_keypoints(counts: np.ndarray, min_frames: int, max_share: float) -> np.ndarray:
    """``(n_keypoints,)`` bool: keypoints the model does not describe.

    ``counts (2, n_keypoints)`` from :func:`count_deviating`: a keypoint
    judged in at least ``min_frames`` frames and over the limit in more than
    ``max_share`` of them. With the tracker right most of the time, a
    keypoint that deviates in most frames says the seed frames caught it in
    a pose it seldom takes (a tail tip curled one way in three consecutive
    seed frames), not that it is mislabelled most of the time: its deviation
    then marks its right labels as often as its wrong ones.
    """
    judged, deviating = np.asarray(counts, np.int64)
    return (judged >= min_frames) & (deviating > max_share * judged)


def known_keypoints(model: DistanceModel) -> np.ndarray:
    """``(n_keypoints,)`` bool: the model knows some distance of the keypoint (the seeds triangulated it)."""
    return np.isfinite(model.median_mm).any(axis=1)


def _mismatch(observed: np.ndarray, expected: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Mean deviation in spreads ``(n_points, n_labels)`` of points' anchor distances from each label's.

    ``observed (n_points, n_anchors)``, ``expected`` and ``spread (n_labels,
    n_anchors)``; inf where no anchor distance is known for a label.
    """
    deviation = np.abs(observed[:, None, :] - expected[None]) / spread[None]
    comparable = np.isfinite(deviation)
    count = comparable.sum(axis=2)
    total = np.where(comparable, deviation, 0.0).sum(axis=2)
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def _pairwise(points_3d: np.ndarray) -> np.ndarray:
    """``(n_frames, K, K)`` distances between the keypoints of ``points_3d (n_frames, K, 3)``."""
    return np.linalg.norm(points_3d[:, :, None, :] - points_3d[:, None, :, :], axis=3)
