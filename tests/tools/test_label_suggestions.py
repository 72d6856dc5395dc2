"""Tests of tools/label_suggestions.py: which frames to label next."""

from __future__ import annotations

import numpy as np
import pytest

from tools.label_suggestions import body_speed, suggest_label_frames, too_short_to_search

N_FRAMES = 300


def _event(onset: int = 150, burst: int = 10, before: float = 2.0, after: float = 6.0):
    """Flags per frame that rise for good at ``onset``; speed 2 except a burst of 20 from ``onset``."""
    flagged = np.where(np.arange(N_FRAMES) < onset, before, after)
    speed = np.full(N_FRAMES, 2.0)
    speed[0] = np.nan
    speed[onset:onset + burst] = 20.0
    return flagged, speed


def test_body_speed_is_the_median_step_of_the_keypoints_in_both_frames(rng):
    velocity = rng.normal(size=(4, 3))
    points = np.arange(6)[:, None, None] * velocity[None] + rng.normal(size=(1, 4, 3))
    points[3, 0] = np.nan  # keypoint 0 missing in frame 3: frames 3 and 4 use the other three
    points[5] = np.nan
    speed = body_speed(points)
    steps = np.linalg.norm(velocity, axis=1)
    assert np.isnan(speed[0]) and np.isnan(speed[5])
    np.testing.assert_allclose(speed[[1, 2]], np.median(steps))
    np.testing.assert_allclose(speed[[3, 4]], np.median(steps[1:]))


def test_body_speed_rejects_other_shapes():
    with pytest.raises(ValueError, match="n_frames, n_keypoints, 3"):
        body_speed(np.zeros((5, 4, 2)))


def test_the_first_calm_frames_after_the_fastest_motion_are_suggested():
    flagged, speed = _event()
    suggestion = suggest_label_frames(flagged, speed, labelled_frames=[0, 1, 2])
    assert suggestion is not None
    assert suggestion.onset == 150 and suggestion.rise == pytest.approx(4.0)
    assert 150 <= suggestion.fastest < 160
    assert suggestion.frames == [160, 161, 162] and suggestion.calm


def test_without_calm_frames_the_suggestion_follows_the_rise_and_says_so():
    flagged, speed = _event()
    speed[150:190] = 20.0  # the animal calms down only after more than a window
    suggestion = suggest_label_frames(flagged, speed, labelled_frames=[0, 1, 2])
    assert suggestion is not None and not suggestion.calm
    assert suggestion.frames == [165, 166, 167]  # half a window after the onset


def test_frames_tracked_backward_are_searched_backward():
    # Seeds at 297-299: frames 296 down to 0 are tracked in that order; met in that order,
    # they are _event's failure (tracking step r is frame 296 - r).
    flagged, speed = _event()
    backward_flagged = np.full(N_FRAMES, 2.0)
    backward_flagged[:297] = flagged[:297][::-1]
    backward_speed = np.full(N_FRAMES, 2.0)
    backward_speed[0] = np.nan
    backward_speed[1:298] = speed[:297][::-1]  # step r joins frames 297 - r and 296 - r
    suggestion = suggest_label_frames(backward_flagged, backward_speed, [297, 298, 299])
    assert suggestion is not None and suggestion.calm
    assert suggestion.onset == 296 - 150 and suggestion.fastest == 296 - 150
    assert suggestion.frames == [134, 135, 136]  # steps 160-162, before the failure in time


def test_labelled_frames_far_from_the_rise_change_nothing():
    flagged, speed = _event()
    near_start = suggest_label_frames(flagged, speed, labelled_frames=[0, 1, 2])
    also_later = suggest_label_frames(flagged, speed, labelled_frames=[0, 1, 2, 60, 260])
    assert near_start == also_later


@pytest.mark.parametrize("case", ["no rise", "a fall", "a seed frame at the rise",
                                  "labelled after the rise", "too short"])
def test_nothing_is_suggested_without_a_lasting_rise_away_from_the_seed_frames(case):
    flagged, speed = _event()
    labelled = [0, 1, 2]
    if case == "no rise":
        flagged = np.full(N_FRAMES, 5.0)
    elif case == "a fall":
        flagged = flagged[::-1].copy()
    elif case == "a seed frame at the rise":
        labelled = [0, 1, 2, 150]
    elif case == "labelled after the rise":  # what the last suggestion asked for
        labelled = [0, 1, 2, 160, 161, 162]
    else:
        flagged, speed = flagged[:40], speed[:40]
    assert suggest_label_frames(flagged, speed, labelled) is None


def test_a_blip_rises_less_than_a_lasting_change():
    flagged, speed = _event(onset=200)
    flagged[80:85] += 12.0  # five bad frames: +2 per frame over a 30-frame window
    suggestion = suggest_label_frames(flagged, speed, labelled_frames=[0, 1, 2])
    assert suggestion is not None and suggestion.onset == 200


@pytest.mark.parametrize("first_seed", [0, 4, 12, 30])
def test_too_short_to_search_is_exactly_where_no_rise_can_be_found(first_seed):
    window, n_frames = 5, 3
    for total in range(first_seed + 3, first_seed + 30):
        labelled = [first_seed, first_seed + 1, first_seed + 2]
        found = []
        for step in range(1, total):  # a lasting rise starting at each frame in turn
            flagged = np.where(np.arange(total) < step, 0.0, 5.0)
            if first_seed > 0:  # before the seeds, tracked backward: the rise runs toward frame 0
                flagged[:first_seed] = np.where(np.arange(first_seed) < first_seed - step, 5.0, 0.0)
            found.append(suggest_label_frames(flagged, np.ones(total), labelled, n_frames, window))
        too_short = too_short_to_search(total, labelled, n_frames, window)
        assert too_short == all(suggestion is None for suggestion in found), (total, too_short)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        suggest_label_frames(np.zeros(100), np.zeros(99), [])
    with pytest.raises(ValueError, match="positive"):
        suggest_label_frames(np.zeros(100), np.zeros(100), [], n_frames=0)
