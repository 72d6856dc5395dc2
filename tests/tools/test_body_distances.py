"""Tests for tools/body_distances.py: the identity check by distances to other regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.body_distances import (
    body_deviation,
    count_deviating,
    distance_model,
    known_keypoints,
    misfit_keypoints,
    pair_exchange,
    region_relabeling,
)
from tools.confidence import QualityParams
from tools.keypoint_names import mirror_groups, twin_indices
from tools.motion import QD_KEYPOINTS, walk_procedural

INDEX = {name: i for i, name in enumerate(QD_KEYPOINTS)}
REGIONS = [
    [INDEX["ear_L"], INDEX["ear_R"]],
    [INDEX["back_top"], INDEX["back_middle"], INDEX["back_bottom"]],
    [INDEX["forepaw_L"], INDEX["forepaw_R"], INDEX["hindpaw_L"], INDEX["hindpaw_R"]],
    [INDEX["tail_base"], INDEX["tail_middle"], INDEX["tail_tip"]],
]
IDENTITY = np.arange(len(QD_KEYPOINTS))
MIRROR = mirror_groups(list(QD_KEYPOINTS))


SHIPPED_MOTION = Path(__file__).resolve().parents[2] / "tools" / "data" / "maushaus_qd12.npz"
SEED_STARTS = range(0, 990, 200)


@pytest.fixture(scope="module")
def walk() -> np.ndarray:
    return walk_procedural(120, seed=4)


@pytest.fixture(scope="module")
def real_motion() -> np.ndarray:
    """The shipped real mouse motion, ``(1000, 12, 3)`` mm."""
    return np.load(SHIPPED_MOTION)["points_mm"].astype(np.float64)


def _rotated(points: np.ndarray, angle: float) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                         [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return points @ rotation.T + [40.0, -25.0, 0.0]


def test_correct_labels_are_never_relabelled_whatever_the_posture(real_motion):
    # Seeds from one moment, frames from the whole recording (climbing, sitting, turning).
    for start in SEED_STARTS:
        model = distance_model(real_motion[start:start + 3])
        for frame in range(0, 1000, 40):
            source = region_relabeling(_rotated(real_motion[frame], 0.01 * frame), REGIONS, model)
            assert np.array_equal(source, IDENTITY), (start, frame)


def test_a_paw_that_took_a_lost_paws_dot_gives_it_back(walk):
    # The walker holds one posture: the distances of its seed frames fit every frame.
    model = distance_model(walk[:3])
    points = walk[60].copy()
    fore, hind = INDEX["forepaw_L"], INDEX["hindpaw_L"]
    points[fore] = points[hind]  # the forepaw's dot is hidden; it took the hindpaw's
    points[hind] = np.nan  # and the hindpaw is lost
    source = region_relabeling(points, REGIONS, model)
    assert source[hind] == fore and source[fore] == hind
    others = np.setdiff1d(IDENTITY, [fore, hind])
    assert np.array_equal(source[others], others)


def test_mirror_pairs_are_not_decided_by_distances(real_motion):
    model = distance_model(real_motion[300:303])
    points = real_motion[305].copy()
    left, right = INDEX["ear_L"], INDEX["ear_R"]
    points[[left, right]] = points[[right, left]]
    assert np.array_equal(region_relabeling(points, REGIONS, model), IDENTITY)


def test_with_mirror_groups_a_forepaw_on_a_hindpaw_dot_joins_the_hind_pair_the_seeds_half_saw(walk):
    seeds = walk[:3].copy()
    fore, hind, hind_twin = INDEX["forepaw_L"], INDEX["hindpaw_L"], INDEX["hindpaw_R"]
    seeds[:, hind] = np.nan  # no seed frame triangulated hindpaw_L
    model = distance_model(seeds)
    points = walk[60].copy()
    points[fore] = points[hind]  # the forepaw took hindpaw_L's dot, and hindpaw_L is lost
    points[hind] = np.nan
    # Without a reference for hindpaw_L the plain check cannot give the point to it...
    assert region_relabeling(points, REGIONS, model, min_gain=0.1)[hind] == hind
    # ...its twin's distances say the point is a hindpaw; hindpaw_R keeps its own point.
    source = region_relabeling(points, REGIONS, model, min_gain=0.1, groups=MIRROR)
    assert source[hind] == fore and source[fore] == hind and source[hind_twin] == hind_twin
    assert np.array_equal(np.delete(source, [fore, hind]), np.delete(IDENTITY, [fore, hind]))


def test_with_mirror_groups_twins_keep_their_sides_in_a_calm_posture(real_motion):
    model = distance_model(real_motion[300:303])
    for frame in (305, 320):
        assert np.array_equal(region_relabeling(real_motion[frame], REGIONS, model,
                                                min_gain=0.1, groups=MIRROR), IDENTITY)
        swapped = real_motion[frame].copy()
        for left, right in (("ear_L", "ear_R"), ("forepaw_L", "forepaw_R"),
                            ("hindpaw_L", "hindpaw_R")):
            swapped[[INDEX[left], INDEX[right]]] = swapped[[INDEX[right], INDEX[left]]]
        assert np.array_equal(region_relabeling(swapped, REGIONS, model, min_gain=0.1,
                                                groups=MIRROR), IDENTITY)


def test_with_mirror_groups_correct_labels_are_rarely_moved_whatever_the_seeds(real_motion):
    # The small gain the pipeline uses costs a few crouching frames (documented in the module).
    moved = []
    for start in SEED_STARTS:
        model = distance_model(real_motion[start:start + 3])
        moved += [not np.array_equal(region_relabeling(real_motion[frame], REGIONS, model,
                                                       min_gain=0.1, groups=MIRROR), IDENTITY)
                  for frame in range(0, 1000, 10)]
    assert np.mean(moved) < 0.05


def test_with_mirror_groups_regions_without_a_pair_are_left_to_the_plain_check(real_motion):
    model = distance_model(real_motion[300:303])
    points = real_motion[305].copy()
    top, bottom = INDEX["back_top"], INDEX["back_bottom"]
    points[[top, bottom]] = points[[bottom, top]]
    assert not np.array_equal(region_relabeling(points, REGIONS, model, min_gain=0.1), IDENTITY)
    assert np.array_equal(region_relabeling(points, REGIONS, model, min_gain=0.1, groups=MIRROR),
                          IDENTITY)


def test_with_mirror_groups_a_keypoint_without_a_twin_keeps_its_point_beside_a_lost_paw(real_motion):
    # 8 keypoints in 3 regions, the back bottom in one region with the hind paws: on the small
    # gain a lost hind paw took the back bottom's dot in the pipeline (both sit near the tail).
    used = ["ear_L", "ear_R", "back_top", "back_bottom", "hindpaw_L", "hindpaw_R", "tail_base",
            "tail_tip"]
    regions = [[INDEX[k] for k in ("ear_L", "ear_R", "back_top")],
               [INDEX[k] for k in ("back_bottom", "hindpaw_L", "hindpaw_R")],
               [INDEX["tail_base"], INDEX["tail_tip"]]]
    unused = [INDEX[k] for k in QD_KEYPOINTS if k not in used]
    bottom = INDEX["back_bottom"]
    for start in SEED_STARTS:
        seeds = real_motion[start:start + 3].copy()
        seeds[:, unused] = np.nan
        model = distance_model(seeds)
        for frame in range(0, 1000, 10):
            for lost in ("hindpaw_L", "hindpaw_R"):
                points = real_motion[frame].copy()
                points[unused + [INDEX[lost]]] = np.nan
                source = region_relabeling(points, regions, model, min_gain=0.1, groups=MIRROR)
                assert source[bottom] == bottom and source[INDEX[lost]] == INDEX[lost], (start, frame)


def test_too_few_anchors_change_nothing(real_motion):
    model = distance_model(real_motion[600:603])
    points = np.full((len(QD_KEYPOINTS), 3), np.nan)
    paws = REGIONS[2]
    points[paws] = real_motion[604, paws[::-1]]  # wrong, but only 2 anchors to tell
    both_ends = [INDEX["back_top"], INDEX["back_bottom"]]
    points[both_ends] = real_motion[604, both_ends]
    assert np.array_equal(region_relabeling(points, [paws], model), IDENTITY)
    assert not np.array_equal(region_relabeling(points, [paws], model, min_anchors=2), IDENTITY)


def test_shapes_are_checked(walk):
    model = distance_model(walk[:3])
    with pytest.raises(ValueError, match="points_3d must have shape"):
        region_relabeling(walk[:2], REGIONS, model)
    with pytest.raises(ValueError, match="n_frames, n_keypoints, 3"):
        distance_model(walk[0])
    with pytest.raises(ValueError, match="groups must have shape"):
        region_relabeling(walk[0], REGIONS, model, groups=MIRROR[:5])


def test_body_deviation_is_small_for_the_true_body_and_large_for_a_taken_dot(real_motion):
    review_above = QualityParams().max_body_deviation  # QC's review threshold
    for start in SEED_STARTS:
        model = distance_model(real_motion[start:start + 3])
        true_deviation = np.array([body_deviation(real_motion[f], REGIONS, model)
                                   for f in range(0, 1000, 10)])
        assert np.mean(true_deviation > review_above) < 0.1, start
        fore, tail = INDEX["forepaw_L"], INDEX["tail_base"]
        taken = []
        for frame in range(0, 1000, 25):
            points = real_motion[frame].copy()
            points[fore] = points[tail] + [0.0, 0.0, 1.0]  # the forepaw took the tail base's dot
            taken.append(body_deviation(points, REGIONS, model)[fore])
        assert np.mean(np.array(taken) > review_above) > 0.9, start


def test_a_keypoint_the_seeds_caught_in_a_rare_pose_is_found_misfit_and_a_swap_is_not(real_motion):
    # Seeds 0-2 of the shipped motion hold the tail tip curled one way: its true distances
    # deviate in most later frames, so its deviation says nothing about its labels.
    review_above = QualityParams().max_body_deviation
    model = distance_model(real_motion[:3])
    fore, tail = INDEX["forepaw_L"], INDEX["tail_base"]
    counts = None
    for frame in range(3, 500):
        points = real_motion[frame].copy()
        if frame % 5 < 2:  # the forepaw on the tail base's dot in 40% of frames
            points[fore] = points[tail] + [0.0, 0.0, 1.0]
        counts = count_deviating(counts, body_deviation(points, REGIONS, model), review_above)
        if frame == 20:
            assert not misfit_keypoints(counts, min_frames=30, max_share=0.5).any()  # too few frames
    assert counts[0].max() == 497 and (counts[1] <= counts[0]).all()
    misfit = misfit_keypoints(counts, min_frames=30, max_share=0.5)
    assert misfit.tolist() == [k == INDEX["tail_tip"] for k in range(12)]


def test_deviating_frames_count_only_judged_points():
    counts = count_deviating(None, np.array([0.5, 2.0, np.nan]), 1.2)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0]]
    counts = count_deviating(counts, np.array([1.3, np.nan, np.nan]), 1.2)
    assert counts.tolist() == [[2, 1, 0], [1, 1, 0]]
    assert misfit_keypoints(counts, min_frames=1, max_share=0.5).tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"counts must have shape \(2, 3\)"):
        count_deviating(np.zeros((2, 4)), np.zeros(3), 1.2)
    # Many frames at once count as one frame at a time.
    frames = np.array([[0.5, 2.0, np.nan], [1.3, np.nan, np.nan]])
    assert count_deviating(None, frames, 1.2).tolist() == counts.tolist()


def test_body_deviation_is_unknown_without_anchors_or_a_reference(walk):
    model = distance_model(walk[:3])
    points = walk[50].copy()
    assert np.isfinite(body_deviation(points, REGIONS, model)).all()
    points[INDEX["back_top"]] = np.nan  # missing point: no deviation
    deviation = body_deviation(points, REGIONS, model)
    assert np.isnan(deviation[INDEX["back_top"]]) and np.isfinite(deviation[INDEX["ear_L"]])
    only_ears = np.full_like(points, np.nan)
    only_ears[REGIONS[0]] = walk[50, REGIONS[0]]  # ears anchor each other's region only
    assert np.isnan(body_deviation(only_ears, REGIONS, model)).all()
    seeds = walk[:3].copy()
    seeds[:, INDEX["hindpaw_R"]] = np.nan  # the seeds never triangulated it
    unseen = distance_model(seeds)
    assert known_keypoints(unseen).tolist() == [k != INDEX["hindpaw_R"] for k in range(12)]
    assert np.isnan(body_deviation(walk[50], REGIONS, unseen)[INDEX["hindpaw_R"]])


def test_correct_labels_are_never_exchanged_across_regions_whatever_the_posture(real_motion):
    for start in SEED_STARTS:
        model = distance_model(real_motion[start:start + 3])
        for frame in range(0, 990, 30):
            recent = _rotated(real_motion[frame:frame + 10], 0.01 * frame)
            assert np.array_equal(pair_exchange(recent, REGIONS, model), IDENTITY), (start, frame)


def test_a_back_and_tail_exchange_that_persists_is_undone(real_motion):
    model = distance_model(real_motion[400:403])
    back, tail = INDEX["back_top"], INDEX["tail_base"]
    recent = real_motion[500:510].copy()
    recent[:, [back, tail]] = recent[:, [tail, back]]  # each took the other's dot
    source = pair_exchange(recent, REGIONS, model)
    assert source[back] == tail and source[tail] == back
    assert np.array_equal(np.delete(source, [back, tail]), np.delete(IDENTITY, [back, tail]))
    # A posture that fits the exchange in only some of the frames exchanges nothing.
    passing = recent.copy()
    passing[:5, [back, tail]] = passing[:5, [tail, back]]
    assert np.array_equal(pair_exchange(passing, REGIONS, model), IDENTITY)


def test_an_exchange_needs_both_points_to_fit_better(real_motion):
    model = distance_model(real_motion[400:403])
    ear, back = INDEX["ear_L"], INDEX["back_bottom"]
    recent = real_motion[500:510].copy()
    # The back's label sits on a spurious spot far from the body: it fits the ear's place
    # better than its own, but the (correct) ear fits the back's place worse than its own.
    recent[:, back] = recent[:, ear] + [-94.6, 49.1, 13.6]
    assert np.array_equal(pair_exchange(recent, REGIONS, model), IDENTITY)
    with pytest.raises(ValueError, match="n_frames"):
        pair_exchange(recent[0], REGIONS, model)


def test_a_paw_hidden_in_every_seed_frame_is_judged_by_its_twins_distances(real_motion):
    twins = twin_indices(MIRROR)
    review_above = QualityParams().max_body_deviation
    fore_r, tail = INDEX["forepaw_R"], INDEX["tail_base"]
    seeds = real_motion[0:3].copy()
    seeds[:, fore_r] = np.nan
    assert np.isnan(body_deviation(real_motion[100], REGIONS, distance_model(seeds))[fore_r])
    model = distance_model(seeds, twins)
    seen = distance_model(seeds).median_mm
    assert np.array_equal(model.median_mm[np.isfinite(seen)], seen[np.isfinite(seen)])
    assert model.median_mm[fore_r, INDEX["ear_L"]] == seen[INDEX["forepaw_L"], INDEX["ear_R"]]
    true_deviation, taken = [], []
    for frame in range(0, 1000, 10):
        true_deviation.append(body_deviation(real_motion[frame], REGIONS, model)[fore_r])
        points = real_motion[frame].copy()
        points[fore_r] = points[tail] + [0.0, 0.0, 1.0]  # the forepaw took the tail base's dot
        taken.append(body_deviation(points, REGIONS, model)[fore_r])
    assert np.mean(np.array(true_deviation) > review_above) < 0.1
    assert np.mean(np.array(taken) > review_above) > 0.9
