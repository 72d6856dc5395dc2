"""Tests for tools/body_order.py: close midline keypoints told apart by their order along the body."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.body_order import (
    MAX_PAIR_DISTANCE_MM,
    agreeing_references,
    chain_end_reversed,
    lasting,
    order_exchanges,
    order_pairs,
    pair_behind_axis_front,
)
from tools.body_template import template_model, trusted_template
from tools.keypoint_names import mirror_groups, twin_indices
from tools.motion import QD_KEYPOINTS

INDEX = {name: i for i, name in enumerate(QD_KEYPOINTS)}
SHIPPED_MOTION = Path(__file__).resolve().parents[2] / "tools" / "data" / "maushaus_qd12.npz"
IDENTITY = np.arange(len(QD_KEYPOINTS))
TWINS = twin_indices(mirror_groups(list(QD_KEYPOINTS)))
MIDLINE = TWINS == IDENTITY
MARGIN_MM = 5.0
PAIR = [INDEX["back_bottom"], INDEX["tail_base"]]


@pytest.fixture(scope="module")
def real_motion() -> np.ndarray:
    return np.load(SHIPPED_MOTION)["points_mm"].astype(np.float64)


def _pairs(points_3d: np.ndarray, trusted: np.ndarray | None = None):
    trusted = np.ones(points_3d.shape[:2], bool) if trusted is None else trusted
    seeds = template_model(points_3d[:3], np.array([0.0, 0.0, 1.0]), INDEX["back_top"],
                           INDEX["back_bottom"], twins=TWINS)
    places = trusted_template(points_3d, trusted, seeds, TWINS).place_mm
    return order_pairs(points_3d, trusted, places, MIDLINE)


def test_the_back_bottom_and_tail_base_are_the_pair_the_places_cannot_separate(real_motion):
    pairs = _pairs(real_motion)
    assert [(pair.first, pair.second) for pair in pairs] == [tuple(PAIR)]
    pair = pairs[0]
    assert {INDEX["back_top"], INDEX["back_middle"]} <= set(pair.nearer_first.tolist())
    assert INDEX["tail_middle"] in pair.nearer_second
    assert 8.0 < pair.distance_mm < 12.0
    # Twins (ears, paws) are never references: mirrored, they say nothing of the order.
    assert MIDLINE[np.concatenate([pair.nearer_first, pair.nearer_second])].all()


def test_true_points_are_never_exchanged(real_motion):
    pairs = _pairs(real_motion)
    exchanged = [frame for frame in range(real_motion.shape[0])
                 if not np.array_equal(order_exchanges(real_motion[frame], pairs, MARGIN_MM),
                                       IDENTITY)]
    assert exchanged == []


def test_exchanged_labels_are_put_back(real_motion):
    pairs = _pairs(real_motion)
    swapped = real_motion.copy()
    swapped[:, PAIR] = swapped[:, PAIR[::-1]]
    expected = IDENTITY.copy()
    expected[PAIR] = PAIR[::-1]
    put_back = [np.array_equal(order_exchanges(swapped[frame], pairs, MARGIN_MM), expected)
                for frame in range(swapped.shape[0])]
    assert np.mean(put_back) > 0.75  # the rest: tail base tucked ahead, or a fold


def test_a_label_on_a_foreign_dot_is_not_exchanged(real_motion):
    pairs = _pairs(real_motion)
    frame = real_motion[600].copy()
    # The tail base's label on the tail middle's dot: the pair is not as far apart as usual.
    frame[INDEX["tail_base"]] = frame[INDEX["tail_middle"]]
    frame[PAIR] = frame[PAIR[::-1]]
    assert np.array_equal(order_exchanges(frame, pairs, MARGIN_MM), IDENTITY)


def test_too_few_references_in_the_frame_leave_the_pair_alone(real_motion):
    pairs = _pairs(real_motion)
    frame = real_motion[600].copy()
    frame[PAIR] = frame[PAIR[::-1]]
    assert not np.array_equal(order_exchanges(frame, pairs, MARGIN_MM), IDENTITY)
    references = np.concatenate([pairs[0].nearer_first, pairs[0].nearer_second])
    frame[references[1:]] = np.nan
    assert np.array_equal(order_exchanges(frame, pairs, MARGIN_MM), IDENTITY)


def test_references_on_one_side_only_in_the_frame_leave_the_pair_alone(real_motion):
    pairs = _pairs(real_motion)
    frame = real_motion[600].copy()
    frame[PAIR] = frame[PAIR[::-1]]
    ahead = pairs[0].nearer_first
    with_one_side = frame.copy()
    with_one_side[ahead] = np.nan  # only the tail's references left: a bend moves them together
    assert np.array_equal(order_exchanges(with_one_side, pairs, MARGIN_MM), IDENTITY)
    # One reference on each side is enough.
    two = frame.copy()
    two[ahead[1:]] = np.nan
    two[pairs[0].nearer_second[1:]] = np.nan
    expected = IDENTITY.copy()
    expected[PAIR] = PAIR[::-1]
    assert np.array_equal(order_exchanges(two, pairs, MARGIN_MM), expected)


def test_a_pair_farther_apart_than_the_bodys_tolerance_is_left_alone(real_motion):
    from tools.body_distances import SPREAD_FLOOR_MM, SPREAD_SHARE

    pairs = _pairs(real_motion)
    usual = pairs[0].distance_mm
    tolerance = SPREAD_FLOOR_MM + SPREAD_SHARE * usual
    frame = real_motion[600].copy()
    frame[PAIR] = frame[PAIR[::-1]]
    # Move the point now labelled tail base along the pair's line to the tolerance's edge.
    direction = frame[PAIR[1]] - frame[PAIR[0]]
    direction /= np.linalg.norm(direction)
    for extra_mm, exchanged in ((tolerance - 0.5, True), (tolerance + 0.5, False)):
        stretched = frame.copy()
        stretched[PAIR[1]] = stretched[PAIR[0]] + direction * (usual + extra_mm)
        source = order_exchanges(stretched, pairs, MARGIN_MM)
        assert (not np.array_equal(source, IDENTITY)) == exchanged, extra_mm


def test_a_pair_with_references_on_one_side_only_is_left_out(real_motion):
    # Without the tail, nothing lies behind the back bottom: the pair has no order to check.
    tailless = real_motion.copy()
    tailless[:, [INDEX["tail_middle"], INDEX["tail_tip"]]] = np.nan
    assert _pairs(tailless) == []


def test_untrusted_labels_teach_nothing(real_motion):
    trusted = np.ones(real_motion.shape[:2], bool)
    trusted[:, INDEX["tail_base"]] = False
    assert _pairs(real_motion, trusted) == []


def test_a_pair_farther_apart_than_the_limit_is_not_ordered(real_motion):
    # The tail's middle and tip (41 mm apart) with coinciding places: the tail swung sideways.
    # The tip trusted only while the tail curls forward (nearer the back than the middle is),
    # as a four-camera run trusted it: the back keypoints then lie nearer the tip.
    seeds = template_model(real_motion[:3], np.array([0.0, 0.0, 1.0]), INDEX["back_top"],
                           INDEX["back_bottom"], twins=TWINS)
    tail = (INDEX["tail_middle"], INDEX["tail_tip"])
    back = real_motion[:, INDEX["back_middle"]]
    curled = (np.linalg.norm(real_motion[:, tail[1]] - back, axis=1)
              < np.linalg.norm(real_motion[:, tail[0]] - back, axis=1))
    trusted = np.ones(real_motion.shape[:2], bool)
    trusted[:, tail[1]] = curled
    places = trusted_template(real_motion, trusted, seeds, TWINS).place_mm.copy()
    places[tail[1]] = places[tail[0]]
    unlimited = order_pairs(real_motion, trusted, places, MIDLINE, max_distance_mm=np.inf)
    assert tail in [(pair.first, pair.second) for pair in unlimited]
    assert next(p for p in unlimited if (p.first, p.second) == tail).distance_mm > MAX_PAIR_DISTANCE_MM
    kept = [(pair.first, pair.second) for pair in order_pairs(real_motion, trusted, places, MIDLINE)]
    assert tail not in kept and tuple(PAIR) in kept


def test_references_the_seed_frames_contradict_are_dropped(real_motion):
    seed_points = real_motion[:3]
    seed_known = np.ones(seed_points.shape[:2], bool)
    pairs = _pairs(real_motion)
    assert all(kept is pair for kept, pair in
               zip(agreeing_references(pairs, seed_points, seed_known), pairs, strict=True))
    # A run that kept the pair exchanged learned its references the wrong way round.
    exchanged = real_motion.copy()
    exchanged[:, PAIR] = exchanged[:, PAIR[::-1]]
    taught = _pairs(exchanged)
    assert INDEX["tail_middle"] in taught[0].nearer_first
    assert agreeing_references(taught, seed_points, seed_known) == []



TAIL_END = (INDEX["tail_tip"], INDEX["tail_middle"], INDEX["tail_base"])


def test_the_true_tail_never_lies_reversed_and_an_exchanged_one_does(real_motion):
    assert not chain_end_reversed(real_motion, TAIL_END, MARGIN_MM).any()
    exchanged = real_motion.copy()
    exchanged[:, [INDEX["tail_tip"], INDEX["tail_middle"]]] = exchanged[:, [INDEX["tail_middle"], INDEX["tail_tip"]]]
    assert chain_end_reversed(exchanged, TAIL_END, MARGIN_MM).mean() > 0.9
    exchanged[::2, INDEX["tail_base"]] = np.nan
    assert not chain_end_reversed(exchanged, TAIL_END, MARGIN_MM)[::2].any()


def test_true_ears_lie_behind_the_backs_top_only_in_the_landing_and_exchanged_ones_do(real_motion):
    ears, axis, up = (INDEX["ear_L"], INDEX["ear_R"]), (INDEX["back_top"], INDEX["back_bottom"]), np.array([0, 0, 1.0])
    behind = pair_behind_axis_front(real_motion, ears, axis, up, 10.0)
    assert set(np.flatnonzero(behind)) <= set(range(330, 341))  # the head tucked in the landing
    exchanged = real_motion.copy()
    exchanged[:, [INDEX["ear_R"], INDEX["back_top"]]] = exchanged[:, [INDEX["back_top"], INDEX["ear_R"]]]
    assert pair_behind_axis_front(exchanged, ears, axis, up, 10.0).mean() > 0.5
    # A missing point, or an axis seen end-on from above (upright): no judgement.
    exchanged[::2, INDEX["ear_L"]] = np.nan
    assert not pair_behind_axis_front(exchanged, ears, axis, up, 10.0)[::2].any()
    upright = exchanged.copy()
    upright[:, INDEX["back_bottom"]] = upright[:, INDEX["back_top"]] - [0, 0, 40.0]
    assert not pair_behind_axis_front(upright, ears, axis, up, 10.0).any()


def test_lasting_keeps_only_runs_of_enough_frames():
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    assert lasting(mask, 3).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert not lasting(mask, 5).any() and lasting(mask, 1).tolist() == mask.tolist()
