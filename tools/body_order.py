"""Which of two close midline keypoints is which: their order along the body.

The places along and above the back (:mod:`tools.body_template`) tell a hind
paw from the tail base, but not the back bottom from the tail base, ~10 mm
further along: their places lie within one tolerance of each other, and the
back bottom, an end of the body axis, is never moved by the places. After an
occlusion a tracker can take each for the other for a hundred frames, and
both labels triangulate cleanly. Their order along the body tells them
apart: the back top and back middle lie nearer the back bottom, the tail
middle nearer the tail base, in the frames quality control trusts and in
the frame at hand. :func:`order_pairs` finds such pairs and their reference
keypoints in a run's trusted labels; :func:`order_exchanges` exchanges a
pair's points in a frame where the references put them the wrong way round.

Shapes: ``points_3d (n_frames, K, 3)`` of a run or ``(K, 3)`` of one frame,
NaN where missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tools.body_distances import distance_spread
from tools.body_template import ABOVE_TOLERANCE_MM, ALONG_TOLERANCE_MM
from tools.camera import check_shape
from tools.clips import label_runs

# A pair farther apart than this is not ordered: its places coincide only where the pair lies
# apart across the body (the tail's middle and tip, 41 mm apart, as the tail swings), and
# its order along the body says nothing. Pairs the order check serves: back bottom and tail
# base 7-10 mm, back neighbours 17-33 mm (session 23: 4 cameras seed 41 38.7 -> 44.1%
# within 5 mm; bench/results/pose.md).
MAX_PAIR_DISTANCE_MM = 35.0
# A reference orders a pair where its distances to the two differ by at least this (median).
MIN_GAP_MM = 4.0


@dataclass(frozen=True)
class OrderPair:
    """Two midline keypoints and the keypoints that order them.

    Attributes
    ----------
    first, second : int
        The pair's keypoint indices.
    nearer_first, nearer_second : np.ndarray
        ``(n,)`` int reference keypoints expected nearer ``first`` than
        ``second`` (and the other way round).
    distance_mm : float
        Median distance between the pair's points.
    """

    first: int
    second: int
    nearer_first: np.ndarray
    nearer_second: np.ndarray
    distance_mm: float


def order_pairs(points_3d: np.ndarray, trusted: np.ndarray, place_mm: np.ndarray,
                midline: np.ndarray, min_gap_mm: float = MIN_GAP_MM,
                along_tolerance_mm: float = ALONG_TOLERANCE_MM,
                above_tolerance_mm: float = ABOVE_TOLERANCE_MM,
                max_distance_mm: float = MAX_PAIR_DISTANCE_MM) -> list[OrderPair]:
    """Pairs of ``midline`` keypoints whose places lie within one tolerance of each other, with their references.

    ``points_3d (n_frames, K, 3)`` and ``trusted (n_frames, K)`` of a run (the
    labels quality control left unflagged), ``place_mm (K, 2)`` each
    keypoint's place (along, above; NaN where unknown), ``midline (K,)``
    the keypoints without a left/right twin. A reference is another midline
    keypoint whose distance to the pair's two keypoints differs by at least
    ``min_gap_mm`` (median over the frames that trust all three). A pair
    needs references on both sides: with references on one side only
    (nothing ahead of the back top but the ears, which are twins), a bend
    of the body moves all of them the same way (at the landing from the
    platform in the shipped motion, back top and back middle were exchanged
    wrongly in 4 frames of every recording). A pair whose median distance
    exceeds ``max_distance_mm`` is left out (``MAX_PAIR_DISTANCE_MM``).
    """
    place_mm = check_shape("place_mm", place_mm, (None, 2))
    n_keypoints = place_mm.shape[0]
    points_3d = check_shape("points_3d", points_3d, (None, n_keypoints, 3))
    trusted = check_shape("trusted", trusted, points_3d.shape[:2]).astype(bool)
    midline = check_shape("midline", midline, (n_keypoints,)).astype(bool)
    scale = np.array([along_tolerance_mm, above_tolerance_mm])
    apart = np.linalg.norm((place_mm[:, None, :] - place_mm[None, :, :]) / scale, axis=2)
    pairs: list[OrderPair] = []
    close = np.triu(apart <= 1.0, k=1) & midline[:, None] & midline[None, :]
    candidates = np.flatnonzero(midline)
    for first, second in np.argwhere(close):
        references = candidates[(candidates != first) & (candidates != second)]
        gap = _median_gap(points_3d, trusted, int(first), int(second), references)
        nearer_first, nearer_second = references[gap >= min_gap_mm], references[gap <= -min_gap_mm]
        if nearer_first.size and nearer_second.size:
            distance = np.linalg.norm(points_3d[:, first] - points_3d[:, second], axis=1)
            both = trusted[:, first] & trusted[:, second] & np.isfinite(distance)
            median = float(np.median(distance[both]))
            if median <= max_distance_mm:
                pairs.append(OrderPair(int(first), int(second), nearer_first, nearer_second,
                                       median))
    return pairs


def agreeing_references(pairs: Sequence[OrderPair], points_3d: np.ndarray, trusted: np.ndarray,
                        min_gap_mm: float = MIN_GAP_MM) -> list[OrderPair]:
    """``pairs`` without the references other frames put on the other side; a pair left one-sided is dropped.

    ``points_3d (n_frames, K, 3)`` and ``trusted (n_frames, K)`` are those
    frames (the seed frames' hand labels): a reference whose median gap
    there (:func:`_median_gap`) is at least ``min_gap_mm`` the other way
    round contradicts the run's labels, which a tracker that kept the pair
    exchanged for most of the run taught the wrong order.
    """
    points_3d = check_shape("points_3d", points_3d, (None, None, 3))
    trusted = check_shape("trusted", trusted, points_3d.shape[:2]).astype(bool)
    agreeing = []
    for pair in pairs:
        gap_first = _median_gap(points_3d, trusted, pair.first, pair.second, pair.nearer_first)
        gap_second = _median_gap(points_3d, trusted, pair.first, pair.second, pair.nearer_second)
        nearer_first = pair.nearer_first[~(gap_first <= -min_gap_mm)]
        nearer_second = pair.nearer_second[~(gap_second >= min_gap_mm)]
        if nearer_first.size == pair.nearer_first.size and nearer_second.size == pair.nearer_second.size:
            agreeing.append(pair)
        elif nearer_first.size and nearer_second.size:
            agreeing.append(replace(pair, nearer_first=nearer_first, nearer_second=nearer_second))
    return agreeing


def _median_gap(points_3d: np.ndarray, trusted: np.ndarray, first: int, second: int,
                references: np.ndarray) -> np.ndarray:
    """``(n_references,)`` median of distance to ``second`` minus distance to ``first`` (NaN: never trusted together).

    ``points_3d (n_frames, K, 3)`` and ``trusted (n_frames, K)`` as for
    :func:`order_pairs`; ``references (n_references,)`` keypoint indices.
    """
    to_first = np.linalg.norm(points_3d[:, references] - points_3d[:, [first]], axis=2)
    to_second = np.linalg.norm(points_3d[:, references] - points_3d[:, [second]], axis=2)
    gap = to_second - to_first
    together = (trusted[:, references] & trusted[:, [first]] & trusted[:, [second]]
                & np.isfinite(gap))
    gap = np.where(together, gap, np.nan)
    counted = together.any(axis=0)
    median = np.full(references.size, np.nan)
    median[counted] = np.nanmedian(gap[:, counted], axis=0)
    return median


def order_exchanges(points_3d: np.ndarray, pairs: Sequence[OrderPair], margin_mm: float,
                    min_references: int = 2) -> np.ndarray:
    """A relabelling ``source (K,)`` of one frame's ``points_3d (K, 3)`` that exchanges each pair whose references put it the wrong way round.

    A pair with both points present, as far apart as usual (within the
    body's tolerance of ``distance_mm``: a label on a foreign dot says
    nothing of the order), is exchanged where, averaged over its references
    present in the frame (at least ``min_references``, and some on each
    side: references on one side only move together when the body bends),
    the distance to the keypoint a reference should be nearer exceeds the
    distance to the other by more than ``margin_mm``. Pairs are taken in
    order and judged on the frame's points as given; a keypoint already
    exchanged is not exchanged again.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3)).astype(np.float64)
    source = np.arange(points_3d.shape[0])
    present = np.all(np.isfinite(points_3d), axis=1)
    for pair in pairs:
        first, second = pair.first, pair.second
        if not (present[first] and present[second]) or source[first] != first \
                or source[second] != second:
            continue
        distance = np.linalg.norm(points_3d[first] - points_3d[second])
        if abs(distance - pair.distance_mm) > distance_spread(pair.distance_mm):
            continue
        references = np.concatenate([pair.nearer_first, pair.nearer_second])
        sign = np.r_[np.ones(pair.nearer_first.size), -np.ones(pair.nearer_second.size)]
        seen = present[references]
        if seen.sum() < min_references or not (seen[sign > 0].any() and seen[sign < 0].any()):
            continue
        to_first = np.linalg.norm(points_3d[references[seen]] - points_3d[first], axis=1)
        to_second = np.linalg.norm(points_3d[references[seen]] - points_3d[second], axis=1)
        if np.mean(sign[seen] * (to_second - to_first)) < -margin_mm:
            source[[first, second]] = second, first
    return source


def chain_end_reversed(points_3d: np.ndarray, chain: tuple[int, int, int], margin_mm: float
                       ) -> np.ndarray:
    """``(n_frames,)`` frames where a chain's end lies nearer its anchor than its neighbour does, by more than ``margin_mm``.

    ``points_3d (n_frames, K, 3)``; ``chain`` the keypoint indices
    ``(end, neighbour, anchor)`` of a chain's last three keypoints from its
    end (the tail tip, tail middle and tail base). Along a chain the end lies
    farther from the anchor than its neighbour does, unless the chain folds
    back on itself; where the end and its neighbour have exchanged dots, it
    is the other way round. Frames missing any of the three points: False.
    """
    points_3d = check_shape("points_3d", points_3d, (None, None, 3))
    end, neighbour, anchor = chain
    neighbour_to_anchor = np.linalg.norm(points_3d[:, neighbour] - points_3d[:, anchor], axis=1)
    end_to_anchor = np.linalg.norm(points_3d[:, end] - points_3d[:, anchor], axis=1)
    with np.errstate(invalid="ignore"):
        return neighbour_to_anchor > end_to_anchor + margin_mm


def pair_behind_axis_front(points_3d: np.ndarray, pair: tuple[int, int], axis: tuple[int, int],
                           up: np.ndarray, margin_mm: float, min_axis_mm: float = 10.0
                           ) -> np.ndarray:
    """``(n_frames,)`` frames where a pair's midpoint lies behind the body axis' front end by more than ``margin_mm``.

    ``points_3d (n_frames, K, 3)``; ``axis`` the keypoints ``(front, back)``
    of the body axis (the back's top and bottom); ``up (3,)`` the rig's unit
    up. Along the axis seen from above, the ears lie ahead of the back's top;
    where an ear and the back's top have taken each other's dots, their
    midpoint falls behind the false top. Frames missing any of the four
    points, or whose axis seen from above is shorter than ``min_axis_mm``
    (upright): False.
    """
    points_3d = check_shape("points_3d", points_3d, (None, None, 3))
    front, back = axis
    forward = points_3d[:, front] - points_3d[:, back]
    forward = forward - (forward @ up)[:, None] * up
    length = np.linalg.norm(forward, axis=1)
    midpoint = (points_3d[:, pair[0]] + points_3d[:, pair[1]]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ahead = np.einsum("ij,ij->i", midpoint - points_3d[:, front], forward) / length
        return (length >= min_axis_mm) & (ahead < -margin_mm)


def lasting(mask: np.ndarray, min_frames: int) -> np.ndarray:
    """``mask (n_frames,)`` with its runs of fewer than ``min_frames`` consecutive True left out."""
    mask = np.asarray(mask, dtype=bool)
    kept = np.zeros_like(mask)
    for start, end, value in zip(*label_runs(mask.astype(np.int64)), strict=True):
        if value and end - start >= min_frames:
            kept[start:end] = True
    return kept
