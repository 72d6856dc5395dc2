"""Tests of tools/behavior_metrics.py on hand-made segments with hand-computed scores."""

from __future__ import annotations

import math

import pytest

from tools.behavior_metrics import (
    clip_boundary_recall,
    evaluate_behavior,
    frame_accuracy_many_to_one,
    macro_f1,
    many_to_one_mapping,
    segment_boundary_f1,
    segment_count_ratio,
)

# One animal, 100 frames at 10 fps; the reference changes label at frame 40.
REFERENCE = [("m1", 0, 40, "a"), ("m1", 40, 100, "b")]
# x and y overlap a most (30 and 10 frames), z overlaps b (55 frames):
# mapped, frames 0-45 say a and 45-100 say b, so frames 40-45 are wrong.
PREDICTED = [("m1", 0, 30, "x"), ("m1", 30, 45, "y"), ("m1", 45, 100, "z")]


def test_many_to_one_mapping():
    assert many_to_one_mapping(REFERENCE, PREDICTED) == {"x": "a", "y": "a", "z": "b"}


def test_frame_accuracy_and_macro_f1_by_hand():
    assert frame_accuracy_many_to_one(REFERENCE, PREDICTED) == pytest.approx(95 / 100)
    # a: tp 40, fp 5, fn 0; b: tp 55, fp 0, fn 5.
    expected = (2 * 40 / (2 * 40 + 5) + 2 * 55 / (2 * 55 + 5)) / 2
    assert macro_f1(REFERENCE, PREDICTED) == pytest.approx(expected)


def test_boundary_scores_by_hand():
    # Predicted boundaries 30 and 45; only 45 is within 0.5 s (5 frames) of 40.
    assert segment_boundary_f1(REFERENCE, PREDICTED, fps=10.0) == pytest.approx(2 * 1 / (1 + 2))
    assert clip_boundary_recall(REFERENCE, PREDICTED, fps=10.0) == 1.0
    assert clip_boundary_recall(REFERENCE, PREDICTED, fps=10.0, tolerance_s=0.4) == 0.0
    assert segment_count_ratio(REFERENCE, PREDICTED) == 1.5


def test_boundary_matching_is_one_to_one_and_closest_first():
    reference = [("m1", 0, 10, "a"), ("m1", 10, 16, "b"), ("m1", 16, 40, "a")]
    predicted = [("m1", 0, 13, "a"), ("m1", 13, 20, "b"), ("m1", 20, 40, "a")]
    # Pairs within 4 frames: (10, 13) d=3, (16, 13) d=3, (16, 20) d=4. Greedy takes
    # (10, 13) first (earlier reference on a tie), then (16, 20): two matches.
    assert segment_boundary_f1(reference, predicted, fps=10.0, tolerance_s=0.4) == 1.0
    # One predicted boundary between two reference ones serves only one of them.
    single = [("m1", 0, 13, "a"), ("m1", 13, 40, "b")]
    assert segment_boundary_f1(reference, single, fps=10.0, tolerance_s=0.4) == pytest.approx(
        2 * 1 / (2 + 1)
    )
    # Clip recall is not one-to-one: the same clip edge covers both.
    assert clip_boundary_recall(reference, single, fps=10.0, tolerance_s=0.4) == 1.0


def test_same_label_neighbours_make_no_boundary_but_gaps_do():
    reference = [("m1", 0, 10, "a"), ("m1", 10, 20, "a"), ("m1", 30, 40, "a")]
    clips = [("m1", 0, 10, "0"), ("m1", 10, 25, "0"), ("m1", 25, 40, "1")]
    # Reference boundaries are 20 and 30 (the gap's edges); clip edges 10 and 25.
    assert clip_boundary_recall(reference, clips, fps=10.0, tolerance_s=0.5) == 1.0
    assert clip_boundary_recall(reference, clips, fps=10.0, tolerance_s=0.4) == 0.0


def test_unpredicted_frames_and_unmatched_labels_count_as_wrong():
    reference = [("m1", 0, 50, "a"), ("m2", 0, 50, "b")]
    predicted = [("m1", 0, 25, "x"), ("m2", 0, 50, "x")]
    # x overlaps b on 50 frames and a on 25: x -> b for both animals.
    assert frame_accuracy_many_to_one(reference, predicted) == pytest.approx(50 / 100)
    # a: tp 0 -> F1 0; b: tp 50, fp 25, fn 0.
    assert macro_f1(reference, predicted) == pytest.approx((0 + 100 / 125) / 2)


def test_evaluate_behavior_collects_every_score():
    clips = [("m1", 0, 20, "0"), ("m1", 20, 44, "1"), ("m1", 44, 100, "1")]
    metrics = evaluate_behavior(REFERENCE, PREDICTED, clips, {"m1": 100}, fps=10.0)
    assert metrics.frame_accuracy == pytest.approx(0.95)
    assert metrics.clip_boundary_recall == 1.0
    assert metrics.segment_boundary_f1 == pytest.approx(2 / 3)
    assert metrics.segment_count_ratio == 1.5
    assert metrics.coverage == 1.0
    assert (metrics.n_reference_segments, metrics.n_predicted_segments, metrics.n_clips) == (
        2,
        3,
        3,
    )
    assert metrics.label_mapping == (("x", "a"), ("y", "a"), ("z", "b"))


def test_undefined_scores_are_nan():
    one_segment = [("m1", 0, 100, "a")]
    assert math.isnan(clip_boundary_recall(one_segment, one_segment, fps=10.0))
    assert math.isnan(segment_boundary_f1(one_segment, one_segment, fps=10.0))
    assert math.isnan(segment_count_ratio([], one_segment))


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ([("m1", 0, 120, "a")], "not inside"),
        ([("m9", 0, 10, "a")], "no frame count"),
        ([("m1", 0, 50, "a"), ("m1", 40, 60, "b")], "overlap"),
    ],
)
def test_rejects_bad_segments(reference, message):
    with pytest.raises(ValueError, match=message):
        evaluate_behavior(reference, PREDICTED, [], {"m1": 100}, fps=10.0)
