"""Tests for agent/pose_steps.py: Stage 4 of one frame's labels with the body identity check."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agent import pose_steps as steps
from agent.pose_frames import FrameStore
from tools import qd_render
from tools.geometry import project
from tools.keypoint_names import mirror_groups, twin_indices
from tools.motion import QD_KEYPOINTS, walk_procedural
from tools.refine import RefineParams

INDEX = {name: i for i, name in enumerate(QD_KEYPOINTS)}
REGIONS = [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]


@pytest.fixture(scope="module")
def scene():
    """A 6-camera rig over a walking mouse; every camera sees every dot."""
    points = walk_procedural(90, seed=4)
    group = qd_render.make_rig(6, (640, 480), points.reshape(-1, 3), np.random.default_rng(2))
    return group, points


def _frame(group, points_3d):
    centroids = list(project(group, points_3d))  # centroid k of each camera is keypoint k's dot
    assignment = np.tile(np.arange(len(QD_KEYPOINTS)), (len(group), 1))
    stage = np.full(assignment.shape, "within_region", dtype=object)
    return centroids, assignment, stage


def test_a_paw_on_a_lost_paws_dot_in_every_camera_is_relabelled_by_the_body_check(scene):
    group, points = scene
    body = steps.seed_distance_model([{"points_3d": p} for p in points[:3]])
    centroids, assignment, stage = _frame(group, points[60])
    fore, hind = INDEX["forepaw_L"], INDEX["hindpaw_L"]
    assignment[:, fore] = assignment[:, hind]  # the forepaw took the hindpaw's dot everywhere
    assignment[:, hind] = -1  # and the hindpaw was lost: reprojection sees nothing wrong

    unchecked = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams())
    assert np.allclose(unchecked["points_3d"][fore], points[60, hind], atol=1e-6)

    checked = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                       body=body, regions=REGIONS)
    assert np.allclose(checked["points_3d"][hind], points[60, hind], atol=1e-6)
    assert np.isnan(checked["points_3d"][fore]).all() and checked["ncams"][fore] == 0
    assert np.array_equal(checked["assignment"][:, hind], np.full(len(group), hind))
    assert set(checked["stage"][:, hind]) == {"refine"}
    untouched = np.setdiff1d(np.arange(len(QD_KEYPOINTS)), [fore, hind])
    assert set(checked["stage"][:, untouched].ravel()) == {"within_region"}


def test_correct_labels_pass_the_body_check_unchanged(scene):
    group, points = scene
    body = steps.seed_distance_model([{"points_3d": p} for p in points[:3]])
    for frame in (10, 45, 80):
        centroids, assignment, stage = _frame(group, points[frame])
        plain = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams())
        checked = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                           body=body, regions=REGIONS)
        for key in ("assignment", "ncams", "stage"):
            assert np.array_equal(plain[key], checked[key])
        assert np.allclose(plain["points_3d"], checked["points_3d"], equal_nan=True)


def test_the_body_check_stops_judging_a_keypoint_that_deviated_in_most_frames(scene):
    _, points = scene
    body = steps.seed_distance_model([{"points_3d": p} for p in points[:3]])
    frame = points[40].copy()
    frame[INDEX["tail_tip"]] = frame[INDEX["back_top"]] + [0.0, 0.0, 1.0]  # far from its place
    first, known, counts = steps.body_check(frame, REGIONS, body, None, 1.2)
    assert first[INDEX["tail_tip"]] > 1.2 and known.all()
    assert counts[0] == [1] * 12 and counts[1][INDEX["tail_tip"]] == 1
    for _ in range(steps.BODY_FIT_MIN_FRAMES - 1):
        deviation, _, counts = steps.body_check(frame, REGIONS, body, counts, 1.2)
        assert np.array_equal(deviation, first, equal_nan=True)  # judged until enough frames
    deviation, _, counts = steps.body_check(frame, REGIONS, body, counts, 1.2)
    assert np.isnan(deviation[INDEX["tail_tip"]])  # now neither flagged nor vouched for
    others = np.arange(12) != INDEX["tail_tip"]
    assert np.array_equal(deviation[others], first[others])
    assert counts[0][INDEX["tail_tip"]] == steps.BODY_FIT_MIN_FRAMES + 1  # still counted


def test_twins_swapped_in_every_camera_are_put_back_on_their_sides(scene):
    group, points = scene
    seeds = [{"points_3d": p} for p in points[:3]]
    body = steps.seed_distance_model(seeds)
    sides = steps.seed_side_model(seeds, group, list(QD_KEYPOINTS), REGIONS)
    left, right = INDEX["hindpaw_L"], INDEX["hindpaw_R"]
    for frame in (30, 60):
        centroids, assignment, stage = _frame(group, points[frame])
        assignment[:, [left, right]] = assignment[:, [right, left]]  # identities swapped everywhere

        unsided = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                           body=body, regions=REGIONS)
        assert np.allclose(unsided["points_3d"][left], points[frame, right], atol=1e-6)

        sided = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                         body=body, regions=REGIONS, sides=sides)
        assert np.allclose(sided["points_3d"][[left, right]], points[frame, [left, right]],
                           atol=1e-6)
        assert np.array_equal(sided["assignment"][:, left], np.full(len(group), left))
        assert set(sided["stage"][:, [left, right]].ravel()) == {"refine"}


def test_correct_labels_pass_the_side_check_unchanged(scene):
    group, points = scene
    seeds = [{"points_3d": p} for p in points[:3]]
    sides = steps.seed_side_model(seeds, group, list(QD_KEYPOINTS), REGIONS)
    assert sides is not None and len(sides.pairs) == 2  # the paws; the ears are not sided
    assert steps.describe_side_model(sides, list(QD_KEYPOINTS)) == {
        "axis": ["back_top", "back_bottom"], "up": [round(float(v), 6) for v in sides.up],
        "pairs": [["forepaw_L", "forepaw_R"], ["hindpaw_L", "hindpaw_R"]],
        "vouching_pairs": [["ear_L", "ear_R"]]}
    assert steps.describe_side_model(None, list(QD_KEYPOINTS)) is None
    for frame in range(3, 90, 3):
        centroids, assignment, stage = _frame(group, points[frame])
        sided = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                         sides=sides)
        assert np.array_equal(sided["assignment"], assignment)


def test_the_ears_order_vouches_for_them_in_a_frame_unless_they_are_swapped(scene):
    _, points = scene
    sides = steps.seed_side_model([{"points_3d": p} for p in points[:3]], scene[0],
                                  list(QD_KEYPOINTS), REGIONS)
    ears = [INDEX["ear_L"], INDEX["ear_R"]]
    vouched = [steps.side_vouched(points[f], sides) for f in range(3, 90)]
    assert np.mean([v[ears].all() for v in vouched]) > 0.9  # the walk's ears lie 14 mm apart
    assert not np.array(vouched)[:, np.setdiff1d(np.arange(12), ears)].any()  # paws: enforced
    swapped = points[45].copy()
    swapped[ears] = swapped[ears[::-1]]
    assert not steps.side_vouched(swapped, sides).any()
    assert not steps.side_vouched(points[45], None).any()


def test_seed_keypoints_the_labels_cannot_triangulate_are_flagged(scene):
    group, points = scene
    centroids, _, _ = _frame(group, points[0])
    labels = np.stack(centroids).copy()  # every keypoint labelled in every camera
    fore, hind = INDEX["forepaw_R"], INDEX["hindpaw_L"]
    labels[1:, fore] = np.nan  # labelled in one camera only
    labels[:, hind] = np.nan  # labelled nowhere
    record = steps.seed_record(group, 0, labels, centroids)
    assert np.flatnonzero(record.flagged).tolist() == [fore, hind]
    assert record.reason[fore] == "few_cameras" and record.reason[hind] == "unassigned"
    assert record.ncams[fore] == 0 and np.isnan(record.points_3d[fore]).all()
    assert record.stage[0, fore] == "seed" and (record.centroid[:, hind] == -1).all()


def test_a_cross_region_exchange_held_for_ten_frames_is_undone(scene, tmp_path):
    group, points = scene
    body = steps.seed_distance_model([{"points_3d": p} for p in points[:3]])
    back, tail = INDEX["back_top"], INDEX["tail_base"]
    store = FrameStore(tmp_path, len(group), len(QD_KEYPOINTS))
    for frame in range(50, 59):  # the nine accepted frames before frame 59, exchanged
        swapped = points[frame].copy()
        swapped[[back, tail]] = swapped[[tail, back]]
        store.append(steps.seed_record(group, frame, project(group, swapped),
                                       list(project(group, points[frame]))))
    history = steps.recent_points(store, 59)
    assert history.shape == (steps.EXCHANGE_FRAMES - 1, len(QD_KEYPOINTS), 3)
    assert steps.recent_points(store, 58) is None  # frame 49 was never accepted
    centroids, assignment, stage = _frame(group, points[59])
    assignment[:, [back, tail]] = assignment[:, [tail, back]]
    kept = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                    body=body, regions=REGIONS)
    assert np.array_equal(kept["assignment"][:, back], np.full(len(group), tail))
    undone = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                      body=body, regions=REGIONS, history_3d=history)
    assert np.array_equal(undone["assignment"], np.tile(np.arange(len(QD_KEYPOINTS)), (len(group), 1)))
    assert np.allclose(undone["points_3d"][back], points[59, back], atol=1e-6)


def test_found_again_holds_from_the_frame_a_lost_keypoint_returns_until_it_is_lost_again():
    seen, lost = np.zeros((2, 3)), np.full((2, 3), np.nan)
    lost_frames, reacquired, flags = [0, 0], [False, False], []
    # keypoint 0 is lost for 3 frames, back for 2, lost 1, back 1; keypoint 1 always seen
    for visible in (True, False, False, False, True, True, False, True):
        points = np.stack([seen[0] if visible else lost[0], seen[1]])
        found = steps.found_again(lost_frames, reacquired, points, min_lost_frames=3)
        flags.append(bool(found[0]))
        assert not found[1]
        reacquired = found.tolist()
        lost_frames = steps.update_lost(lost_frames, points)
    assert flags == [False, False, False, False, True, True, False, False]


def test_a_forepaw_on_a_hindpaw_dot_moves_to_the_hind_pair_and_its_side_is_reported_a_guess(scene):
    group, points = scene
    seeds = points[:3].copy()
    fore, hind = INDEX["forepaw_L"], INDEX["hindpaw_L"]
    seeds[:, hind] = np.nan  # the seeds never triangulated hindpaw_L
    body = steps.seed_distance_model([{"points_3d": p} for p in seeds])
    mirror = mirror_groups(list(QD_KEYPOINTS))
    centroids, assignment, stage = _frame(group, points[60])
    assignment[:, fore] = assignment[:, hind]
    assignment[:, hind] = -1

    plain = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                     body=body, regions=REGIONS)
    assert np.allclose(plain["points_3d"][fore], points[60, hind], atol=1e-6)
    assert not plain["side_guessed"].any()

    paired = steps.triangulate_labels(group, centroids, assignment, stage, RefineParams(),
                                      body=body, regions=REGIONS, mirror=mirror)
    assert np.allclose(paired["points_3d"][hind], points[60, hind], atol=1e-6)
    assert np.isnan(paired["points_3d"][fore]).all()
    assert np.flatnonzero(paired["side_guessed"]).tolist() == [hind]


def test_a_pairs_sides_stay_a_guess_while_one_twin_stays_tracked():
    twin = twin_indices(mirror_groups(["paw_L", "paw_R", "back"]))
    seen, lost = np.zeros(3), np.full(3, np.nan)
    unsure, lost_frames, flags = None, [0, 0, 0], []
    # paw_L's side guessed at frame 1; paw_R lost at 2, back at 3; paw_L lost at 4; both back at 5
    guessed = [[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    visible = [(1, 1), (1, 1), (1, 0), (1, 1), (0, 1), (1, 1)]
    for guess, (left, right) in zip(guessed, visible, strict=True):
        points = np.stack([seen if left else lost, seen if right else lost, seen])
        unsure = steps.side_still_unsure(unsure, guess, lost_frames, points, twin, None).tolist()
        flags.append(unsure[:2])
        assert not unsure[2]  # the back has no twin
        lost_frames = steps.update_lost(lost_frames, points)
    # A lost twin's guess is kept for when it comes back (QC flags only triangulated ones).
    assert flags == [[False, False], [True, True], [True, True], [True, True], [True, True],
                     [True, True]]


def test_a_side_guess_outlives_a_short_loss_of_both_twins_but_not_a_long_one():
    twin = twin_indices(mirror_groups(["paw_L", "paw_R", "back"]))
    last_seen = [[0.0, 0.0, 0.0], [25.0, 0.0, 0.0], [10.0, 50.0, 0.0]]
    back = np.array([[1.0, 0.0, 0.0], [24.0, 0.0, 0.0], [10.0, 50.0, 0.0]])  # each near its own place
    gone = np.full((3, 3), np.nan)
    gone[2] = back[2]
    unsure = [True, True, False]
    for lost_frames in ([0, 0, 0], [3, 3, 0]):
        unsure = steps.side_still_unsure(unsure, [False] * 3, lost_frames, gone, twin,
                                         last_seen).tolist()
    assert unsure == [True, True, False]
    # Back where they were last seen, on the dots the guess gave them: still a guess.
    assert steps.side_still_unsure(unsure, [False] * 3, [5, 5, 0], back, twin,
                                   last_seen).tolist() == [True, True, False]
    # Lost for SIDE_GUESS_KEPT_FRAMES frames, the guess is gone; back near their own places
    # they keep their sides.
    long = steps.SIDE_GUESS_KEPT_FRAMES
    ended = steps.side_still_unsure(unsure, [False] * 3, [long, long, 0], gone, twin, last_seen)
    assert not ended.any()
    assert not steps.side_still_unsure(ended.tolist(), [False] * 3, [long + 1, long + 1, 0], back,
                                       twin, last_seen).any()


def test_a_twin_found_again_while_the_other_was_lost_makes_the_sides_a_guess():
    twin = twin_indices(mirror_groups(["ear_L", "ear_R", "back"]))
    points = np.zeros((3, 3))
    # ear_R comes back while ear_L stayed tracked: it cannot be on ear_L's dot.
    assert not steps.side_still_unsure(None, [False] * 3, [0, 4, 0], points, twin, None).any()
    # Both were lost: either may have taken the other's dot.
    assert steps.side_still_unsure(None, [False] * 3, [1, 4, 0], points, twin, None).tolist() == [
        True, True, False]


def test_a_twin_back_clearly_nearer_its_own_last_place_keeps_its_side():
    twin = twin_indices(mirror_groups(["paw_L", "paw_R", "back"]))
    last_seen = [[0.0, 0.0, 0.0], [25.0, 0.0, 0.0], [10.0, 50.0, 0.0]]
    both_lost = [1, 3, 0]
    near_own = np.array([[2.0, 0.0, 0.0], [24.0, 1.0, 0.0], [10.0, 50.0, 0.0]])
    assert not steps.side_still_unsure(None, [False] * 3, both_lost, near_own, twin,
                                       last_seen).any()
    # Back between the two places, or on the twin's: either paw may hold either dot.
    between = near_own.copy()
    between[0] = [10.0, 0.0, 0.0]
    assert steps.side_still_unsure(None, [False] * 3, both_lost, between, twin,
                                   last_seen).tolist() == [True, True, False]
    swapped = near_own[[1, 0, 2]]
    assert steps.side_still_unsure(None, [False] * 3, both_lost, swapped, twin,
                                   last_seen).tolist() == [True, True, False]
    # A point the keypoint was never seen near is a guess too.
    never = [[np.nan] * 3, *last_seen[1:]]
    assert steps.side_still_unsure(None, [False] * 3, both_lost, near_own, twin,
                                   never).tolist() == [True, True, False]


def test_a_twin_back_where_the_other_twin_just_left_is_a_guess():
    twin = twin_indices(mirror_groups(["paw_L", "paw_R", "back"]))
    last_seen = [[0.0, 0.0, 0.0], [25.0, 0.0, 0.0], [10.0, 50.0, 0.0]]
    # paw_R, lost for 5 frames, comes back on paw_L's last place as paw_L jumps onto paw_R's.
    points = np.array([[24.0, 0.0, 0.0], [1.0, 0.0, 0.0], [10.0, 50.0, 0.0]])
    assert steps.side_still_unsure(None, [False] * 3, [0, 5, 0], points, twin,
                                   last_seen).tolist() == [True, True, False]
    # paw_L steady: paw_R back at its own place keeps its side.
    steady = np.array([[1.0, 0.0, 0.0], [24.0, 0.0, 0.0], [10.0, 50.0, 0.0]])
    assert not steps.side_still_unsure(None, [False] * 3, [0, 5, 0], steady, twin,
                                       last_seen).any()


def test_a_twin_that_moves_far_while_the_other_is_lost_is_a_guess():
    twin = twin_indices(mirror_groups(["paw_L", "paw_R", "back"]))
    last_seen = [[0.0, 0.0, 0.0], [25.0, 0.0, 0.0], [10.0, 50.0, 0.0]]
    # paw_R lost for 3 frames; paw_L now on paw_R's last place, 24 mm from its own.
    thief = np.array([[24.0, 0.0, 0.0], [np.nan] * 3, [10.0, 50.0, 0.0]])
    assert steps.side_still_unsure(None, [False] * 3, [0, 3, 0], thief, twin,
                                   last_seen).tolist() == [True, False, False]
    # Lost in this frame only: the same.
    assert steps.side_still_unsure(None, [False] * 3, [0, 0, 0], thief, twin,
                                   last_seen).tolist() == [True, False, False]
    # paw_R's last seen place, carried with the body while it was lost, lies far away: a
    # move of 18 mm is a guess even though it leads away from that place.
    carried = [last_seen[0], [-60.0, 0.0, 0.0], last_seen[2]]
    moved = np.array([[18.0, 0.0, 0.0], [np.nan] * 3, [10.0, 50.0, 0.0]])
    assert steps.side_still_unsure(None, [False] * 3, [0, 3, 0], moved, twin,
                                   carried).tolist() == [True, False, False]
    # A step within SIDE_MARGIN_MM keeps the side.
    stepped = np.array([[8.0, 0.0, 0.0], [np.nan] * 3, [10.0, 50.0, 0.0]])
    assert not steps.side_still_unsure(None, [False] * 3, [0, 3, 0], stepped, twin,
                                       last_seen).any()
    # With the twin tracked a far move is no guess (Stage 4 orders the pair).
    both = np.array([[24.0, 0.0, 0.0], [40.0, 0.0, 0.0], [10.0, 50.0, 0.0]])
    assert not steps.side_still_unsure(None, [False] * 3, [0, 0, 0], both, twin,
                                       last_seen).any()


def test_labels_a_later_seed_frame_contradicts_are_flagged_in_the_results(scene):
    from agent.pose_frames import untracked_record

    _, points = scene
    records = []
    for frame in range(30):
        record = untracked_record(frame, 6, 12)
        frame_points = points[frame].copy()
        if frame == 9:  # both lost, then found again on each other's dots until seed frame 20
            frame_points[[4, 9]] = np.nan
        if 10 <= frame < 20:
            frame_points[[4, 9]] = frame_points[[9, 4]]
        flagged = np.zeros(12, bool)
        flagged[9] = frame in (12, 15)  # already flagged: its views, then its identity
        reason = np.where(flagged, "few_cameras" if frame == 12 else "body", "")
        records.append(replace(record, points_3d=frame_points, flagged=flagged, reason=reason,
                               score=np.ones(12)))
    reviewed = steps.review_against_seeds(records, frozenset({0, 20}))
    for record in reviewed:
        wrong = 10 <= record.frame < 20
        assert record.flagged[4] == wrong and record.reason[4] == ("seed_mismatch" if wrong else "")
        assert record.score[4] == (0.5 if wrong else 1.0)
        assert not record.flagged[np.setdiff1d(np.arange(12), [4, 9])].any()
    # tail_base's identity was in doubt in frame 15 (`body`), not in frame 12 (`few_cameras`):
    # the contradiction is traced back to frame 15.
    assert [record.reason[9] for record in reviewed[11:18]] == [
        "", "few_cameras", "", "", "body", "seed_mismatch", "seed_mismatch"]
    assert steps.review_against_seeds(records, frozenset({0})) == records  # no later seed frame


@pytest.fixture(scope="module")
def shipped_review():
    """The shipped real motion, its frames 0-2 as seed entries, a side model and the review they give."""
    from pathlib import Path

    from tools.body_side import SideModel

    motion = np.load(Path(__file__).resolve().parents[2] / "tools" / "data" / "maushaus_qd12.npz")
    points = motion["points_mm"].astype(np.float64)
    seeds = [{"points_3d": p} for p in points[:3]]
    sides = SideModel(up=np.array([0.0, 0.0, 1.0]), axis_from=INDEX["back_top"],
                      axis_to=INDEX["back_bottom"], pairs=())
    review = steps.template_review(seeds, sides, list(QD_KEYPOINTS), REGIONS,
                                   max_body_deviation=1.2, confirm_body_deviation=0.5)
    return points, seeds, sides, review


def test_the_results_put_a_tail_label_on_a_paws_dot_back_on_the_paw(shipped_review):
    from agent.pose_frames import untracked_record

    points, seeds, sides, review = shipped_review
    tail, paw = INDEX["tail_base"], INDEX["hindpaw_R"]
    record = untracked_record(360, 6, 12)
    taken = points[360].copy()
    taken[tail], taken[paw] = taken[paw], np.nan  # the tail base took the lost paw's dot
    centroid = np.tile(np.arange(12), (6, 1))
    centroid[:, paw] = -1
    record = replace(record, points_3d=taken, ncams=np.where(np.isnan(taken[:, 0]), 0, 6),
                     flagged=np.arange(12) == tail, reason=np.where(np.arange(12) == tail, "body", ""),
                     score=np.ones(12), centroid=centroid, stage=np.full((6, 12), "within_region"))
    seed_record = replace(record, frame=1)

    def tracked(frame: int):  # a right, unflagged label of every keypoint
        return replace(untracked_record(frame, 6, 12), points_3d=points[frame].copy(),
                       ncams=np.full(12, 6), flagged=np.zeros(12, bool), reason=np.full(12, ""),
                       score=np.ones(12), centroid=np.tile(np.arange(12), (6, 1)),
                       stage=np.full((6, 12), "within_region"))

    # The run: a seed frame holding the same mistake (never moved), frames 300-400 right but
    # for frame 360; the places come from the labels QC trusts.
    run = [seed_record, *[record if f == 360 else tracked(f) for f in range(300, 401)]]
    reviewed_run = steps.final_records(run, frozenset({0, 1, 2}), review)
    first, reviewed = reviewed_run[0], reviewed_run[61]
    assert first is seed_record  # hand labels are never moved
    assert all(after is before for after, before in zip(reviewed_run, run, strict=True)
               if before is not record)
    assert np.allclose(reviewed.points_3d[paw], points[360, paw]) and np.isnan(reviewed.points_3d[tail]).all()
    assert reviewed.centroid[:, paw].tolist() == [tail] * 6 and (reviewed.centroid[:, tail] == -1).all()
    assert set(reviewed.stage[:, paw]) == {"template"} and reviewed.ncams[paw] == 6
    assert not reviewed.flagged.any()  # the body flag doubted the tail base, not the paw
    assert reviewed.score[paw] == 1.0  # and the score it halved is restored
    assert steps.template_review(seeds, None, list(QD_KEYPOINTS), REGIONS, 1.2, 0.5) is None

    # The seeds hid the paw: its place and distances are its twin's, and the tracker's
    # `unchecked` flag (no reference for the keypoint the point left) goes with the move.
    hidden = [{"points_3d": np.where(np.arange(12)[:, None] == paw, np.nan, p)} for p in points[:3]]
    twin_review = steps.template_review(hidden, sides, list(QD_KEYPOINTS), REGIONS, 1.2, 0.5)
    assert np.isfinite(twin_review.template.place_mm[paw]).all()
    later = points[500].copy()
    later[tail], later[paw] = later[paw], np.nan
    unchecked = replace(record, frame=500, points_3d=later,
                        reason=np.where(np.arange(12) == tail, "unchecked", ""))
    moved = steps.relabel_by_template(unchecked, twin_review)
    assert np.allclose(moved.points_3d[paw], points[500, paw]) and not moved.flagged.any()

    # A template that puts the tail base where the paw is proposes moving true points; the
    # body's distances do not confirm it, so nothing moves.
    misleading = replace(review.template, place_mm=review.template.place_mm.copy())
    misleading.place_mm[[tail, paw]] = misleading.place_mm[[paw, tail]]
    truth = replace(record, points_3d=points[360].copy(), flagged=np.zeros(12, bool),
                    reason=np.full(12, ""))
    from tools.body_template import template_relabeling
    assert (template_relabeling(truth.points_3d, misleading) != np.arange(12)).any()
    assert steps.relabel_by_template(truth, replace(review, template=misleading)) is truth


def test_the_results_put_the_back_bottom_and_tail_base_back_in_their_order(shipped_review):
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    pair = [INDEX["back_bottom"], INDEX["tail_base"]]

    def tracked(frame: int):
        frame_points, flagged = points[frame].copy(), np.zeros(12, bool)
        if 540 <= frame < 560:  # found again after an occlusion, each on the other's dot
            frame_points[pair] = frame_points[pair[::-1]]
            flagged[pair] = True
        return replace(untracked_record(frame, 6, 12), points_3d=frame_points,
                       ncams=np.full(12, 6), flagged=flagged,
                       reason=np.where(flagged, "reacquired", ""), score=np.ones(12),
                       centroid=np.tile(np.arange(12), (6, 1)),
                       stage=np.full((6, 12), "within_region"))

    run = [tracked(frame) for frame in range(500, 601)]
    reviewed = steps.final_records(run, frozenset({0, 1, 2}), review)
    for before, after in zip(run, reviewed, strict=True):
        if not 540 <= before.frame < 560:
            assert after is before  # right labels stay where they are
            continue
        assert np.allclose(after.points_3d, points[before.frame])
        assert after.centroid[:, pair].tolist() == [pair[::-1]] * 6
        assert set(after.stage[:, pair].ravel()) == {"template"}
        # `reacquired` doubted the identities they left; the tracker and the order disagreed
        assert after.flagged.tolist() == [k in pair for k in range(12)]
        assert after.reason[pair].tolist() == [steps.ORDER_REASON] * 2


def test_a_pair_the_order_step_moves_against_the_tracker_is_flagged_for_review(shipped_review):
    """The tracker sure of a back bottom and tail base the order puts the other way round: moved,
    and flagged, since a true pair can pass each other (the walker's does)."""
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    pair = [INDEX["back_bottom"], INDEX["tail_base"]]

    def tracked(frame: int):
        frame_points = points[frame].copy()
        if 540 <= frame < 560:  # the other way round along the body, and nothing doubted
            frame_points[pair] = frame_points[pair[::-1]]
        return replace(untracked_record(frame, 6, 12), points_3d=frame_points,
                       ncams=np.full(12, 6), flagged=np.zeros(12, bool), reason=np.full(12, ""),
                       score=np.ones(12), centroid=np.tile(np.arange(12), (6, 1)),
                       stage=np.full((6, 12), "within_region"))

    run = [tracked(frame) for frame in range(500, 601)]
    reviewed = steps.final_records(run, frozenset({0, 1, 2}), review)
    for before, after in zip(run, reviewed, strict=True):
        if not 540 <= before.frame < 560:
            assert after is before
            continue
        assert after.centroid[:, pair].tolist() == [pair[::-1]] * 6
        assert after.flagged.tolist() == [k in pair for k in range(12)]
        assert after.reason[pair].tolist() == [steps.ORDER_REASON] * 2
        assert np.allclose(after.score[pair], 0.5)  # halved, as quality control's flags are


def test_the_results_leave_a_true_run_as_it_is(shipped_review):
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    run = [replace(untracked_record(frame, 6, 12), points_3d=points[frame].copy(),
                   ncams=np.full(12, 6), flagged=np.zeros(12, bool), reason=np.full(12, ""),
                   score=np.ones(12), centroid=np.tile(np.arange(12), (6, 1)),
                   stage=np.full((6, 12), "within_region"))
           for frame in range(3, points.shape[0])]
    reviewed = steps.final_records(run, frozenset({0, 1, 2}), review)
    assert all(after is before for after, before in zip(reviewed, run, strict=True))


def _seen_by_one_camera(points: np.ndarray, keypoints: list[int]) -> tuple:
    """A 4-camera rig and seed entries of frames 0-2 where camera 3 alone labels ``keypoints``."""
    group = qd_render.make_rig(4, (640, 480), points[:3].reshape(-1, 3), np.random.default_rng(5))
    window = []
    for frame in range(3):
        points_2d = project(group, points[frame])
        points_2d[np.ix_([0, 1, 2], keypoints)] = np.nan
        points_3d = points[frame].copy()
        points_3d[keypoints] = np.nan
        window.append({"frame": frame, "points_2d": points_2d, "points_3d": points_3d})
    return group, window


def test_a_midline_keypoint_the_seeds_saw_in_one_camera_is_placed_on_the_midplane(shipped_review):
    points, seeds, sides, _ = shipped_review
    tail, paw = INDEX["tail_base"], INDEX["hindpaw_L"]
    group, window = _seen_by_one_camera(points, [tail, paw])
    completed = steps.midline_from_one_view(window, group, sides, list(QD_KEYPOINTS))
    for entry, frame in zip(completed, range(3), strict=True):
        # The true tail base lies within a few mm of the midplane; its ray meets it near it.
        assert np.linalg.norm(entry["points_3d"][tail] - points[frame, tail]) < 6.0
        assert np.isnan(entry["points_3d"][paw]).all()  # a paw is off the midplane: left out
        untouched = np.arange(12) != tail
        np.testing.assert_array_equal(entry["points_3d"][untouched], window[frame]["points_3d"][untouched])
    # The body's models now know the tail base; the window passed in is unchanged.
    assert np.isfinite(steps.seed_distance_model(completed).median_mm[tail]).sum() > 1
    assert np.isnan(window[0]["points_3d"][tail]).all()
    # Triangulated in some seed frame, or no axis to find the midplane by: nothing added.
    window[0]["points_3d"] = points[0].copy()
    assert steps.midline_from_one_view(window, group, sides, list(QD_KEYPOINTS)) is window
    assert steps.midline_from_one_view(window, group, None, list(QD_KEYPOINTS)) is window
    window[0]["points_3d"][tail] = np.nan
    assert steps.midline_from_one_view(window, group, sides, list(QD_KEYPOINTS)) is not window
    # Names with no left/right pair cannot tell the midline from a paw: nothing is placed.
    unnamed = [f"dot{index}" for index in range(12)]
    assert steps.midline_from_one_view(window, group, sides, unnamed) is window


def test_the_results_ask_no_review_of_labels_three_cameras_agree_on_and_the_body_accepts(
        shipped_review):
    from agent.pose_frames import untracked_record
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    tail, paw, ear = INDEX["tail_middle"], INDEX["hindpaw_L"], INDEX["ear_L"]

    def tracked(frame: int):
        ncams = np.full(12, 4)
        ncams[[tail, ear]] = 3
        ncams[paw] = 2
        flagged = ncams < 4  # a 4-camera rig's review flags
        return replace(untracked_record(frame, 4, 12), points_3d=points[frame].copy(),
                       ncams=ncams, flagged=flagged, reason=np.where(flagged, "few_cameras", ""),
                       score=np.where(flagged, 0.5, 1.0), centroid=np.tile(np.arange(12), (4, 1)),
                       stage=np.full((4, 12), "within_region"))

    run = [tracked(frame) for frame in range(500, 560)]
    run[0] = replace(run[0], frame=1)  # a seed frame keeps its flags
    search = steps.FreeDotSearch(None, lambda frame: None, QualityParams(min_cameras=3))
    reviewed = steps.final_records(run, frozenset({0, 1, 2}), review, search)
    assert reviewed[0] is run[0]
    cleared = [not record.flagged[tail] for record in reviewed[1:]]
    assert np.mean(cleared) > 0.8  # true points fit the body (but for odd postures)
    for record in reviewed[1:]:
        assert record.flagged[paw] and record.reason[paw] == "few_cameras"  # two views: flagged
        assert record.score[tail] == (0.5 if record.flagged[tail] else 1.0)
    # Moved far from where the body puts it, a 3-camera label keeps its flag.
    wrong = run[30].points_3d.copy()
    wrong[ear] = wrong[INDEX["tail_tip"]] + 12.0
    moved = steps.final_records([*run[:30], replace(run[30], points_3d=wrong), *run[31:]],
                                frozenset({0, 1, 2}), review, search)[30]
    assert moved.flagged[ear]


def test_midline_keypoints_need_names_that_show_some_twins():
    twins = np.array([1, 0, 2, 3])
    assert steps.midline_keypoints(twins, 4).tolist() == [False, False, True, True]
    assert not steps.midline_keypoints(np.arange(4), 4).any()
    assert not steps.midline_keypoints(None, 4).any()


def test_a_cycle_of_moves_stands_when_the_body_fits_it_better_as_a_whole():
    # 0 <- 1 <- 2 <- 0 is one cycle, 3 <- 4 <- 3 another; 5 stays.
    source = np.array([1, 2, 0, 4, 3, 5])
    fits = np.ones(6, bool)
    judged = np.ones(6, bool)
    # The point keypoint 2 receives fits it a little worse than its old keypoint (-0.1),
    # the others much better: the first cycle stands; the second loses in sum.
    gain = np.array([0.5, 0.4, -0.1, 0.2, -0.3, 0.0])
    assert steps._confirmed_cycles(source, fits, gain, judged).tolist() == [1, 2, 0, 3, 4, 5]
    # A point the body does not fit as its new keypoint undoes its cycle, whatever the gain.
    unfit = fits.copy()
    unfit[1] = False
    assert steps._confirmed_cycles(source, unfit, gain, judged).tolist() == [0, 1, 2, 3, 4, 5]
    # Nothing judged either way (no reference for the keypoints): the places decide.
    assert steps._confirmed_cycles(source, fits, np.zeros(6), np.zeros(6, bool)).tolist() == [
        1, 2, 0, 4, 3, 5]


def test_a_point_the_review_moves_into_a_pair_goes_to_the_twin_on_its_side(scene):
    from tools.body_side import SidedPair, SideModel, lateral_direction

    _, points = scene
    frame = points[40].astype(np.float64)
    up = np.array([0.0, 0.0, 1.0])
    left, right, tail = INDEX["hindpaw_L"], INDEX["hindpaw_R"], INDEX["tail_base"]
    fore_left, fore_right = INDEX["forepaw_L"], INDEX["forepaw_R"]
    lateral = lateral_direction(frame, up, INDEX["back_top"], INDEX["back_bottom"], 0.8)
    assert abs((frame[left] - frame[right]) @ lateral) > steps.SIDE_ORDER_MARGIN_MM

    def sided(first, second):
        return (SidedPair(first, second) if (frame[first] - frame[second]) @ lateral > 0
                else SidedPair(second, first))

    sides = SideModel(up=up, axis_from=INDEX["back_top"], axis_to=INDEX["back_bottom"],
                      pairs=(sided(left, right), sided(fore_left, fore_right)))
    # The tracker put the left hind paw's label on the tail base's dot and the tail base's on
    # the right paw's dot; it had the forepaws the wrong way round too.
    tracked = frame.copy()
    tracked[[left, right, tail]] = frame[[tail, left, right]]
    tracked[[fore_left, fore_right]] = frame[[fore_right, fore_left]]
    # The review's places cannot tell twins apart: it gives the tail base its dot back and
    # hindpaw_L the tail base's point (the right paw's dot), leaving hindpaw_R on the left's.
    proposed = np.arange(12)
    proposed[[left, tail]] = tail, left
    source = steps._moved_pairs_by_side(tracked, proposed, sides)
    assert np.allclose(tracked[source][[left, right, tail]], frame[[left, right, tail]])
    # The forepaws, which the review did not touch, keep the tracker's order.
    assert source[fore_left] == fore_left and source[fore_right] == fore_right
    assert (steps._moved_pairs_by_side(tracked, proposed, None) == proposed).all()


def test_the_review_finds_the_body_axis_when_the_back_top_was_lost_to_the_tail_tip(shipped_review,
                                                                                   monkeypatch):
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    back_top, tip = INDEX["back_top"], INDEX["tail_tip"]

    def tracked(frame: int, flagged_back_top: bool = False):  # right labels
        flagged = np.arange(12) == back_top if flagged_back_top else np.zeros(12, bool)
        return replace(untracked_record(frame, 6, 12), points_3d=points[frame].copy(),
                       ncams=np.full(12, 6), flagged=flagged,
                       reason=np.where(flagged, "few_cameras", ""), score=np.ones(12),
                       centroid=np.tile(np.arange(12), (6, 1)),
                       stage=np.full((6, 12), "within_region"))

    # As a 4-camera run left them: back_top lost, its dot taken by the tail tip's label (the
    # body flags it); the tail tip's own dot unlabelled. No body frame on the labels' axis.
    scrambled = tracked(600)
    taken = points[600].copy()
    taken[tip], taken[back_top] = points[600, back_top], np.nan
    centroid = scrambled.centroid.copy()
    centroid[:, tip], centroid[:, back_top] = back_top, -1
    scrambled = replace(scrambled, points_3d=taken, centroid=centroid,
                        ncams=np.where(np.isnan(taken[:, 0]), 0, 6),
                        flagged=np.isin(np.arange(12), [back_top, tip]),
                        reason=np.where(np.arange(12) == back_top, "unassigned",
                                        np.where(np.arange(12) == tip, "body", "")))
    def lost_back_top(frame: int):
        record = tracked(frame)
        lost = record.points_3d.copy()
        lost[back_top] = np.nan
        centroid = record.centroid.copy()
        centroid[:, back_top] = -1
        doubted = INDEX["ear_L"] if frame % 2 else back_top  # right, but in doubt
        return replace(record, points_3d=lost, centroid=centroid, ncams=np.where(
            np.arange(12) == back_top, 0, 6), flagged=np.isin(np.arange(12), [back_top, doubted]),
            reason=np.where(np.arange(12) == back_top, "unassigned",
                            np.where(np.arange(12) == doubted, "low_margin", "")))

    run = [scrambled if f == 600 else lost_back_top(f) if f % 3 == 1
           else tracked(f, flagged_back_top=f % 3 == 0) for f in range(300, 701)]
    reviewed = steps.final_records(run, frozenset({0, 1, 2}), review)
    fixed = reviewed[300]
    assert np.allclose(fixed.points_3d[back_top], points[600, back_top])
    assert np.isnan(fixed.points_3d[tip]).all() and (fixed.centroid[:, tip] == -1).all()
    assert fixed.centroid[:, back_top].tolist() == [back_top] * 6
    assert set(fixed.stage[:, back_top]) == {"template"}
    # The body vouches for the moved point: the flag that doubted the tail tip goes.
    assert not fixed.flagged[back_top]
    # Right labels with back_top in doubt (every third frame, uprights included) stay as they
    # are; with back_top lost (a hidden dot), the labels QC trusts are never moved.
    for after, before in zip(reviewed, run, strict=True):
        if before is not scrambled:
            assert after is before or before.frame % 3 == 1, before.frame
            assert np.array_equal(after.points_3d[~before.flagged], before.points_3d[~before.flagged])

    from tools.body_template import trusted_template
    trusted = replace(review, template=trusted_template(
        points[300:701], np.ones((401, 12), bool), review.template, review.twins))
    # back_top's label on ear_R's dot, the tail tip's on back_top's, ear_R lost: the labels'
    # axis gives a body frame that fits badly, but not by the 3 per point a search must gain.
    framed = tracked(600)
    taken = points[600].copy()
    ear = INDEX["ear_R"]
    taken[back_top], taken[tip], taken[ear] = points[600, ear], points[600, back_top], np.nan
    framed = replace(framed, points_3d=taken, flagged=np.arange(12) == back_top,
                     reason=np.where(np.arange(12) == back_top, "body", ""))
    assert steps._axis_searched(framed, trusted) is framed
    # The same labelling frame after frame, QC doubting the tail tip too: the search proposes
    # the same relabelling each time, and on the AXIS_SEARCH_STREAK_FRAMES-th consecutive
    # frame its smaller gain stands. The moved labels are not flagged axis_search.
    framed = replace(framed, flagged=np.isin(np.arange(12), [back_top, tip]),
                     reason=np.where(np.isin(np.arange(12), [back_top, tip]), "body", ""))
    assert steps._axis_searched(framed, trusted) is framed
    streak = steps.AxisSearchStreak()
    frames = [replace(framed, frame=600 + i) for i in range(steps.AXIS_SEARCH_STREAK_FRAMES)]
    reviewed = [steps._axis_searched(record, trusted, streak) for record in frames]
    assert all(after is before for after, before in zip(reviewed[:-1], frames[:-1], strict=True))
    found = reviewed[-1]
    assert np.allclose(found.points_3d[ear], points[600, ear])
    assert np.allclose(found.points_3d[back_top], points[600, back_top])
    assert np.isnan(found.points_3d[tip]).all()  # its own dot was never labelled
    assert not found.flagged.any() and steps.AXIS_SEARCH_REASON not in found.reason
    # A frame missing from the run (or one the search does not win) starts the count again.
    streak = steps.AxisSearchStreak()
    gapped = [replace(framed, frame=600 + i + (i == steps.AXIS_SEARCH_STREAK_FRAMES - 1))
              for i in range(steps.AXIS_SEARCH_STREAK_FRAMES)]
    assert all(steps._axis_searched(record, trusted, streak) is record for record in gapped)
    # Twins share places: which ear the search gives which point may change from frame to
    # frame; the streak compares the midline's relabelling only.
    searched = steps.axis_search
    calls = []

    def ears_exchanged_every_other_call(*args):
        source, fit = searched(*args)
        calls.append(len(calls))
        if len(calls) % 2 == 0:
            source = source.copy()
            source[[INDEX["ear_L"], ear]] = source[[ear, INDEX["ear_L"]]]
        return source, fit

    monkeypatch.setattr(steps, "axis_search", ears_exchanged_every_other_call)
    streak = steps.AxisSearchStreak()
    reviewed = [steps._axis_searched(record, trusted, streak) for record in frames]
    assert all(after is before for after, before in zip(reviewed[:-1], frames[:-1], strict=True))
    assert np.allclose(reviewed[-1].points_3d[back_top], points[600, back_top])
    monkeypatch.undo()
    # A point the search moves where the body does not vouch for it is flagged axis_search
    # (score halved); one it vouches for loses the flag that doubted its old identity.
    ear_left = INDEX["ear_L"]
    source = np.arange(12)
    source[[ear_left, tip]] = tip, ear_left
    doubted = steps._moved(tracked(500), source, trusted, doubt=steps.AXIS_SEARCH_REASON)
    assert doubted.reason[[ear_left, tip]].tolist() == ["axis_search"] * 2
    assert doubted.flagged[[ear_left, tip]].all() and (doubted.score[[ear_left, tip]] == 0.5).all()
    assert not doubted.flagged[np.setdiff1d(np.arange(12), [ear_left, tip])].any()


def test_a_twin_pair_handed_back_its_own_points_keeps_the_trackers_order():
    twins = np.array([1, 0, 2, 4, 3])
    # The search put 0 and 1 the other way round and gave 3 the point of 2, 4 that of 3.
    source = np.array([1, 0, 4, 2, 3])
    kept = steps._twins_kept(source, twins)
    assert kept.tolist() == [0, 1, 4, 3, 2]  # 3 keeps its own point; 4 takes the other one
    assert steps._twins_kept(source, None) is source


def test_lost_keypoints_are_found_among_the_dots_no_label_holds(shipped_review):
    from agent.pose_frames import untracked_record
    from tools.body_distances import body_deviation
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    group = qd_render.make_rig(6, (640, 480), points[300:400].reshape(-1, 3),
                               np.random.default_rng(3))
    frame, lost = 360, [INDEX["hindpaw_L"], INDEX["tail_base"]]
    centroids = [np.vstack([xy, [[3.0, 3.0]]]) for xy in project(group, points[frame])]
    label = np.tile(np.arange(12), (6, 1))
    label[:, lost] = -1
    missing = np.isin(np.arange(12), lost)
    record = replace(untracked_record(frame, 6, 12),
                     points_3d=np.where(missing[:, None], np.nan, points[frame]),
                     ncams=np.where(missing, 0, 6), flagged=missing,
                     reason=np.where(missing, "unassigned", ""), score=np.where(missing, 0.0, 1.0),
                     centroid=label, stage=np.where(label >= 0, "within_region", ""))
    search = steps.FreeDotSearch(group, lambda f: centroids if f == frame else None, QualityParams())
    found = steps.found_in_free_dots(record, review, search)
    np.testing.assert_allclose(found.points_3d, points[frame], atol=1e-6)
    assert (found.centroid == np.tile(np.arange(12), (6, 1))).all()  # never the stray spot
    assert set(found.stage[:, lost].ravel()) == {steps.FREE_DOT_STAGE} and (found.ncams[lost] == 6).all()
    np.testing.assert_allclose(found.points_2d[:, lost], project(group, points[frame])[:, lost])
    assert np.all(found.error_px[lost] < 1e-6) and np.all(found.view_error_px[:, lost] < 1e-6)
    assert not found.flagged.any() and found.score[lost].tolist() == [1.0, 1.0]
    assert found.reason[lost].tolist() == ["", ""]

    # Seen by 3 cameras where quality control wants 4: taken only where the body vouches.
    three_views = [xy.copy() for xy in centroids]
    for camera in (0, 1, 2):
        three_views[camera][lost] = [-900.0, -900.0]
    few = steps.found_in_free_dots(record, review, replace(
        search, centroids_of=lambda f: three_views, quality=QualityParams(review_min_cameras=4)))
    vouched = body_deviation(found.points_3d, review.regions, review.body)[lost] < 0.5
    assert vouched.tolist() == [False, True]  # the paw is not, the tail base is
    paw, base = lost
    assert np.isnan(few.points_3d[paw]).all() and few.reason[paw] == "unassigned"
    assert few.ncams[base] == 3 and (few.centroid[:3, base] == -1).all()
    assert np.isnan(few.points_2d[:3, base]).all() and set(few.stage[:3, base]) == {""}
    assert not few.flagged[base] and few.score[base] == 1.0
    # Over the body's deviation limit: not taken, unless the body does not judge the keypoint.
    stiff = replace(review, max_body_deviation=0.0)
    assert steps.found_in_free_dots(record, stiff, search) is record
    misfit = np.isin(np.arange(12), lost)
    unjudged = steps.found_in_free_dots(record, stiff, search, misfit)
    np.testing.assert_allclose(unjudged.points_3d, points[frame], atol=1e-6)
    # Over quality control's mean reprojection error: not taken.
    strict = replace(search, quality=QualityParams(max_error_px=-1.0))
    assert steps.found_in_free_dots(record, review, strict) is record

    # Through the results' review: the same frame is found; without centroids it is left.
    reviewed = steps.final_records([record], frozenset({0, 1, 2}), review, search)[0]
    np.testing.assert_allclose(reviewed.points_3d[lost], points[frame, lost], atol=1e-6)
    assert steps.found_in_free_dots(replace(record, frame=361), review, search).points_3d is record.points_3d
    # The paw's dot is held by another label (the tail middle took it): only the tail base is found.
    taken = label.copy()
    taken[:, INDEX["tail_middle"]] = INDEX["hindpaw_L"]
    partly = steps.found_in_free_dots(replace(record, centroid=taken), review, search)
    assert np.isnan(partly.points_3d[INDEX["hindpaw_L"]]).all()
    assert partly.reason[INDEX["hindpaw_L"]] == "unassigned"
    np.testing.assert_allclose(partly.points_3d[INDEX["tail_base"]],
                               points[frame, INDEX["tail_base"]], atol=1e-6)
    # A dot whose place is far from every lost keypoint's (the tail tip in this frame, 50 mm
    # above where the seed frames hold it) is not taken.
    tip = INDEX["tail_tip"]
    far = replace(record, points_3d=np.where(np.arange(12)[:, None] == tip, np.nan, points[frame]),
                  centroid=np.where(np.arange(12)[None, :] == tip, -1, np.tile(np.arange(12), (6, 1))))
    assert np.isnan(steps.found_in_free_dots(far, review, search).points_3d[tip]).all()


def test_keypoints_deviating_from_the_body_in_most_frames_are_misfits(shipped_review):
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    tip = INDEX["tail_tip"]
    records = []
    for frame in range(300, 340):
        curled = points[frame].copy()
        if frame < 330:  # the tail tip held 40 mm off in 30 of 40 frames
            curled[tip] += [0.0, 0.0, 40.0]
        records.append(replace(untracked_record(frame, 6, 12), points_3d=curled))
    assert np.flatnonzero(steps.body_misfits(records, review)).tolist() == [tip]
    assert not steps.body_misfits(records[25:], review).any()  # too few frames to judge


def test_free_dots_leave_twins_lost_together_and_strays_on_taken_dots(shipped_review):
    from agent.pose_frames import untracked_record
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    group = qd_render.make_rig(6, (640, 480), points[300:400].reshape(-1, 3),
                               np.random.default_rng(3))
    frame = 360
    centroids = list(project(group, points[frame]))
    search = steps.FreeDotSearch(group, lambda f: centroids, QualityParams())

    def lost_record(lost, stage_dtype="<U13"):
        label = np.tile(np.arange(12), (6, 1))
        label[:, lost] = -1
        missing = np.isin(np.arange(12), lost)
        return replace(untracked_record(frame, 6, 12),
                       points_3d=np.where(missing[:, None], np.nan, points[frame]),
                       ncams=np.where(missing, 0, 6), flagged=missing,
                       reason=np.where(missing, "unassigned", ""),
                       score=np.where(missing, 0.0, 1.0), centroid=label,
                       points_2d=np.where(label[..., None] >= 0, project(group, points[frame]), np.nan),
                       stage=np.where(label >= 0, "seed", "").astype(stage_dtype))

    # Both hind paws lost: their dots are free, but which is which would be a guess.
    hind = [INDEX["hindpaw_L"], INDEX["hindpaw_R"]]
    both = lost_record(hind)
    assert steps.found_in_free_dots(both, review, search) is both
    never_seen = np.full((12, 3), np.nan)
    assert steps.found_in_free_dots(both, review, search, last_seen=never_seen) is both
    # Last seen a frame before, the left paw is 3.6 mm from its dot and 16.8 from its twin's:
    # it is taken, on its own dot whichever order the places gave; the right paw (5.2 and
    # 13.2 mm) is not clearly nearer its own, and stays lost.
    told = steps.found_in_free_dots(both, review, search, last_seen=points[frame - 1])
    np.testing.assert_allclose(told.points_3d[hind[0]], points[frame, hind[0]], atol=1e-6)
    assert np.isnan(told.points_3d[hind[1]]).all()
    # Last seen each on the other's dot: the last seen points, not the places' order, decide.
    crossed = points[frame].copy()
    crossed[hind] = points[frame, hind[::-1]]
    swapped = steps.found_in_free_dots(both, review, search, last_seen=crossed)
    np.testing.assert_allclose(swapped.points_3d[hind], points[frame, hind[::-1]], atol=1e-6)

    # The tail base is lost with stray labels in two cameras on the lost paw's dot, and its
    # own dot is hidden: the paw takes its dot and the tail base gives up the strays.
    paw, base = INDEX["hindpaw_L"], INDEX["tail_base"]
    record = lost_record([paw, base], stage_dtype="<U4")
    record.centroid[:2, base] = paw
    record.points_2d[:2, base] = record.points_2d[:2, paw] = project(group, points[frame])[:2, paw]
    hidden = [xy.copy() for xy in centroids]
    for xy in hidden:
        xy[base] = [-900.0, -900.0]
    found = steps.found_in_free_dots(record, review, replace(search, centroids_of=lambda f: hidden))
    np.testing.assert_allclose(found.points_3d[paw], points[frame, paw], atol=1e-6)
    assert (found.centroid[:, paw] == paw).all() and (found.centroid[:, base] == -1).all()
    assert np.isnan(found.points_2d[:, base]).all() and set(found.stage[:, base]) == {""}
    assert set(found.stage[:, paw]) == {steps.FREE_DOT_STAGE}  # not cut to "free" by a <U4 array
    assert found.reason[base] == "unassigned" and found.reason[paw] == ""


def test_the_results_exchange_ears_the_tracker_keeps_exchanged(shipped_review):
    from agent.pose_frames import untracked_record
    from tools.body_side import SidedPair

    points, _, sides, review = shipped_review
    ear_l, ear_r = INDEX["ear_L"], INDEX["ear_R"]
    with_ears = replace(review, sides=replace(sides, vouching_pairs=(SidedPair(ear_r, ear_l),)))
    records = []
    for frame in range(400, 500):
        frame_points = points[frame].copy()
        frame_points[[ear_l, ear_r]] = frame_points[[ear_r, ear_l]]  # exchanged from 400 on
        flagged = np.zeros(12, bool)
        flagged[ear_l] = frame == 450  # already flagged: the flag goes with its point
        records.append(replace(untracked_record(frame, 6, 12), points_3d=frame_points,
                               flagged=flagged, reason=np.where(flagged, "reprojection", ""),
                               score=np.ones(12)))
    records[0] = replace(records[0], frame=1)  # a seed frame stays as it is
    reviewed = steps.exchange_reversed_pairs(records, frozenset({0, 1, 2}), with_ears)
    assert reviewed[0] is records[0]
    put_back = [np.allclose(record.points_3d, points[record.frame]) for record in reviewed[1:]]
    assert np.mean(put_back) > 0.8  # the true ears lie 20 mm apart across the body here
    for record, original, back in zip(reviewed[1:], records[1:], put_back, strict=True):
        others = np.setdiff1d(np.arange(12), [ear_l, ear_r])
        assert not record.flagged[others].any()
        if back:
            assert record.reason[ear_r] == ("reprojection" if original.frame == 450 else "")
            assert not record.flagged[ear_l] and record.score[ear_l] == 1.0
        else:  # not reversed by the margin: left as it was
            assert record == original
    # An ear on a far dot: exchanging would give its twin's right label away; flagged instead.
    far = replace(records[10], points_3d=records[10].points_3d.copy())
    across = points[far.frame, ear_l] - points[far.frame, ear_r]
    far.points_3d[ear_l] = points[far.frame, ear_l]
    far.points_3d[ear_r] = points[far.frame, ear_l] + 100 * across / np.linalg.norm(across)
    (kept,) = steps.exchange_reversed_pairs([far], frozenset({0, 1, 2}), with_ears)
    np.testing.assert_array_equal(kept.points_3d, far.points_3d)
    assert kept.reason[ear_l] == kept.reason[ear_r] == "side"
    # The true ears are never moved or flagged; without vouching pairs nothing is.
    true = [replace(record, points_3d=points[record.frame if record.frame != 1 else 400])
            for record in records]
    assert steps.exchange_reversed_pairs(true, frozenset({0, 1, 2}), with_ears) == true
    assert steps.exchange_reversed_pairs(records, frozenset({0, 1, 2}), review) == records


def test_the_results_flag_a_tail_tip_and_middle_lying_the_wrong_way_round(shipped_review):
    from agent.pose_frames import untracked_record

    points, _, _, review = shipped_review
    tip, middle = INDEX["tail_tip"], INDEX["tail_middle"]
    assert review.tail == (tip, middle, INDEX["tail_base"])  # read from the names
    records = []
    for frame in range(100, 200):
        frame_points = points[frame].copy()
        if frame >= 150:  # the tracker took each for the other from frame 150 on
            frame_points[[tip, middle]] = frame_points[[middle, tip]]
        flagged = np.zeros(12, bool)
        flagged[tip] = frame == 160
        records.append(replace(untracked_record(frame, 6, 12), points_3d=frame_points, flagged=flagged,
                               reason=np.where(flagged, "reprojection", ""), score=np.ones(12)))
    records[-1] = replace(records[-1], frame=2)  # a seed frame stays as it is
    reviewed = steps.flag_reversed_tail(records, frozenset({0, 1, 2}), review)
    assert reviewed[:50] == records[:50] and reviewed[-1] is records[-1]
    others = np.setdiff1d(np.arange(12), [tip, middle])
    flagged_frames = [record.frame for record in reviewed if record.reason[middle] == steps.TAIL_ORDER_REASON]
    assert len(flagged_frames) > 40 and min(flagged_frames) >= 150
    for record, original in zip(reviewed[50:-1], records[50:-1], strict=True):
        assert not record.flagged[others].any()
        np.testing.assert_array_equal(record.points_3d, original.points_3d)  # flagged, not moved
        if record.flagged[middle]:
            assert record.score[middle] == 0.5
            assert record.reason[tip] == ("reprojection" if record.frame == 160 else steps.TAIL_ORDER_REASON)
    # Names that show no tail: nothing to check.
    assert steps.flag_reversed_tail(records, frozenset({0, 1, 2}), replace(review, tail=None)) == records


@pytest.mark.parametrize("n_cameras, agreeing, cleared", [
    (6, 3, True), (8, 3, False), (8, 4, True), (4, 3, True), (4, 2, False)])
def test_the_body_clears_a_few_cameras_flag_only_where_half_the_rig_agrees(
        shipped_review, n_cameras, agreeing, cleared):
    from agent.pose_frames import untracked_record
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    keypoint = INDEX["back_middle"]
    flagged = np.arange(12) == keypoint
    # A right label (frame 3 of the motion the seeds come from: it fits the body) that
    # fewer than review_min_cameras cameras agree on.
    record = replace(untracked_record(3, n_cameras, 12), points_3d=points[3].copy(),
                     ncams=np.where(flagged, agreeing, n_cameras), flagged=flagged,
                     reason=np.where(flagged, "few_cameras", ""), score=np.where(flagged, 0.5, 1.0))
    [after] = steps.accepted_by_body([record], frozenset({0, 1, 2}), review, np.zeros(12, bool),
                                     QualityParams())
    assert after.flagged[keypoint] == (not cleared)
    assert after.reason[keypoint] == ("" if cleared else "few_cameras")


@pytest.mark.parametrize("n_cameras, agreeing, name, cleared", [
    (6, 3, "tail_tip", True), (6, 2, "tail_tip", False), (8, 3, "tail_tip", False),
    (5, 3, "tail_tip", True), (4, 3, "tail_tip", False), (6, 3, "hindpaw_L", False)])
def test_a_midline_label_the_body_does_not_judge_needs_half_of_a_rig_of_five_or_more(
        shipped_review, n_cameras, agreeing, name, cleared):
    from agent.pose_frames import untracked_record
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    keypoint = INDEX[name]
    flagged = np.arange(12) == keypoint
    label = points[3].copy()
    label[keypoint] += [0.0, 0.0, 100.0]  # where the body judged it, it would doubt it
    record = replace(untracked_record(3, n_cameras, 12), points_3d=label,
                     ncams=np.where(flagged, agreeing, n_cameras), flagged=flagged,
                     reason=np.where(flagged, "few_cameras", ""), score=np.where(flagged, 0.5, 1.0))
    seeds = frozenset({0, 1, 2})
    [after] = steps.accepted_by_body([record], seeds, review, flagged, QualityParams())
    assert after.flagged[keypoint] == (not cleared)
    assert after.reason[keypoint] == ("" if cleared else "few_cameras")
    [judged] = steps.accepted_by_body([record], seeds, review, np.zeros(12, bool), QualityParams())
    assert judged.flagged[keypoint] and judged.reason[keypoint] == "few_cameras"


@pytest.mark.parametrize("reason, agreeing, deviation_factor, cleared", [
    ("body", 5, 1.0, True), ("body", 4, 1.0, False), ("body", 5, None, False),
    ("reacquired", 5, 1.0, True), ("reacquired", 4, 1.0, False),
    ("reprojection", 6, 1.0, False)])
def test_the_review_body_clears_body_and_reacquired_flags_of_labels_more_cameras_confirm(
        shipped_review, reason, agreeing, deviation_factor, cleared):
    from agent.pose_frames import untracked_record
    from tools.confidence import QualityParams

    points, _, _, review = shipped_review
    keypoint = INDEX["back_middle"]
    flagged = np.arange(12) == keypoint
    label = points[3].copy()  # frame 3 of the motion the seeds come from: it fits the body
    if deviation_factor is None:
        label[keypoint] += [0.0, 0.0, 40.0]  # 40 mm off: the body doubts it
    record = replace(untracked_record(3, 6, 12), points_3d=label,
                     ncams=np.where(flagged, agreeing, 6), flagged=flagged,
                     reason=np.where(flagged, reason, ""), score=np.where(flagged, 0.5, 1.0))
    quality = QualityParams(review_min_cameras=4)
    [after] = steps.accepted_by_body([record], frozenset({0, 1, 2}), review, np.zeros(12, bool),
                                     quality)
    assert after.flagged[keypoint] == (not cleared)
    assert after.reason[keypoint] == ("" if cleared else reason)
    assert after.score[keypoint] == (1.0 if cleared else 0.5)
    # Nothing is cleared for a keypoint the body does not judge, nor on a seed frame.
    misfit = np.arange(12) == keypoint
    [kept] = steps.accepted_by_body([record], frozenset({0, 1, 2}), review, misfit, quality)
    assert kept.flagged[keypoint]
    [seed] = steps.accepted_by_body([replace(record, frame=2)], frozenset({0, 1, 2}), review,
                                    np.zeros(12, bool), quality)
    assert seed.flagged[keypoint]


def test_the_seed_frames_order_a_pair_the_run_kept_exchanged_half_the_time():
    # Four midline keypoints along a line (mm): a, b, c, d; b and c share a place, so only
    # their order along the body tells them apart.
    true = np.array([[0.0, 0, 0], [10.0, 0, 0], [18.0, 0, 0], [30.0, 0, 0]])
    place = np.array([[-15.0, 0.0], [0.0, 0.0], [0.0, 0.0], [15.0, 0.0]])
    midline = np.ones(4, bool)
    run = np.repeat(true[None], 40, axis=0)
    run[::2, [1, 2]] = true[[2, 1]]  # b and c exchanged in every other frame
    trusted = np.ones((40, 4), bool)
    assert steps._order_pairs(run, trusted, None, place, midline) == ()
    [pair] = steps._order_pairs(run, trusted, true[None], place, midline)
    assert (pair.first, pair.second) == (1, 2)
    assert pair.nearer_first.tolist() == [0] and pair.nearer_second.tolist() == [3]



def test_a_lost_paw_takes_back_its_dot_from_its_twins_label(shipped_review):
    from agent.pose_frames import untracked_record
    from tools.body_side import lies_on_sides, side_model
    from tools.confidence import QualityParams
    from tools.geometry import reprojection_error, triangulate
    from tools.keypoint_names import left_twins

    points, _, _, review = shipped_review
    groups = mirror_groups(list(QD_KEYPOINTS))
    review = replace(review, sides=side_model(points[:3], twin_indices(groups),
                                              left_twins(list(QD_KEYPOINTS), groups), REGIONS,
                                              np.array([0.0, 0.0, 1.0])))
    group = qd_render.make_rig(6, (640, 480), points[300:400].reshape(-1, 3),
                               np.random.default_rng(3))
    frame, left, right = 380, INDEX["forepaw_L"], INDEX["forepaw_R"]
    true_2d = project(group, points[frame])
    # The left paw's label: its own dot in cameras 0-2, the lost right paw's in 3-5.
    label = np.tile(np.arange(12), (6, 1))
    label[:, right] = -1
    label[3:, left] = right
    points_2d = np.where(label[..., None] >= 0, true_2d[np.arange(6)[:, None], np.maximum(label, 0)],
                         np.nan)
    mixed = points[frame].copy()
    mixed[left] = triangulate(group, points_2d[:, [left]])[0]
    mixed[right] = np.nan
    lost = np.arange(12) == right
    record = replace(untracked_record(frame, 6, 12), points_3d=mixed, ncams=np.where(lost, 0, 6),
                     flagged=lost, reason=np.where(lost, "unassigned", ""),
                     score=np.where(lost, 0.0, 1.0), centroid=label, points_2d=points_2d,
                     view_error_px=reprojection_error(group, mixed, points_2d),
                     stage=np.where(label >= 0, "within_region", ""))
    assert np.nanmax(record.view_error_px[:, left]) > steps.SPLIT_JOINT_ERROR_PX
    search = steps.FreeDotSearch(group, lambda f: None, QualityParams())
    parted = steps.parted_twins(record, review, search, last_seen=points[frame - 1])
    np.testing.assert_allclose(parted.points_3d[[left, right]], points[frame, [left, right]],
                               atol=1e-6)
    assert parted.centroid[:3, left].tolist() == [left] * 3 and (parted.centroid[3:, left] == -1).all()
    assert parted.centroid[3:, right].tolist() == [right] * 3 and (parted.centroid[:3, right] == -1).all()
    assert set(parted.stage[3:, right]) == {steps.SPLIT_STAGE} and parted.ncams[[left, right]].tolist() == [3, 3]
    # The pair lies on its seed frames' sides here: unflagged, and the left paw's reprojection
    # flag (its views held two dots) goes with its own views alone.
    assert lies_on_sides(points[frame], review.sides, right, steps.SIDE_ORDER_MARGIN_MM)
    assert not parted.flagged[[left, right]].any() and parted.score[[left, right]].tolist() == [1.0, 1.0]
    doubted = replace(record, flagged=record.flagged | (np.arange(12) == left),
                      reason=np.where(np.arange(12) == left, "reprojection", record.reason))
    assert not steps.parted_twins(doubted, review, search, points[frame - 1]).flagged[left]
    # Reversed across the body (each paw last seen at the other's place, so each keeps the
    # other's part): put on its sides again.
    crossed = points[frame - 1].copy()
    crossed[[left, right]] = points[frame - 1, [right, left]]
    ordered = steps.parted_twins(record, review, search, last_seen=crossed)
    np.testing.assert_allclose(ordered.points_3d[[left, right]], points[frame, [left, right]],
                               atol=1e-6)
    # Where the pair lies too near the midline to tell, both labels' sides are a guess.
    unsided = replace(review, sides=replace(review.sides, pairs=()))
    guessed = steps.parted_twins(record, review=unsided, search=search, last_seen=points[frame - 1])
    assert guessed.reason[[left, right]].tolist() == ["side", "side"]
    # The twin's part needs neither review_min_cameras cameras nor the body's vouching: the
    # parts' own agreement is the evidence (a free dot would need one of them).
    unvouched = replace(review, confirm_body_deviation=0.0)
    demanding = replace(search, quality=QualityParams(review_min_cameras=6))
    np.testing.assert_allclose(
        steps.parted_twins(record, unvouched, demanding, points[frame - 1]).points_3d[[left, right]],
        points[frame, [left, right]], atol=1e-6)
    # Views over quality control's limits, or too few views to part (2 + 2): left as it is.
    strict = replace(search, quality=QualityParams(max_view_error_px=-1.0))
    assert steps.parted_twins(record, review, strict, last_seen=points[frame - 1]) is record
    three_views = replace(record, points_2d=np.where(np.arange(6)[:, None, None] < 3, np.nan, points_2d))
    assert steps.parted_twins(three_views, review, search, points[frame - 1]) is three_views
    # Never seen before: nothing tells which part is the paw's own.
    assert steps.parted_twins(record, review, search, np.full((12, 3), np.nan)) is record


class _SeedStore:
    """What pass_start reads of a FrameStore: the seed frames' window entries."""

    def __init__(self, points_3d: dict[int, np.ndarray]) -> None:
        self.points_3d = points_3d

    def window(self, frames):
        return [{"frame": frame, "points_3d": self.points_3d[frame]} for frame in frames]


def test_a_keypoint_no_seed_frame_triangulates_starts_from_the_bodys_estimate(shipped_review):
    points = shipped_review[0]
    tail, paw = INDEX["tail_base"], INDEX["hindpaw_L"]
    seeds = {frame: points[frame].copy() for frame in range(3)}
    for frame in range(3):
        seeds[frame][tail] = np.nan
    seeds[2][paw] = np.nan  # seen in an earlier seed frame: the track carries it already
    estimates = {frame: seeds[frame].copy() for frame in range(3)}
    for frame in range(3):
        estimates[frame][tail] = points[frame, tail] + frame  # the midplane's guess, frame by frame
    estimates[2][paw] = points[2, paw] + 50.0  # a guess where the track knows better
    store = _SeedStore(seeds)
    plain = np.array(steps.pass_start(store, [0, 1, 2], 12)["last_seen_3d"])
    assert np.isnan(plain[tail]).all()
    started = np.array(steps.pass_start(store, [0, 1, 2], 12, body_points=estimates)["last_seen_3d"])
    # From the last seed frame of the pass that has an estimate; the rest as without one.
    np.testing.assert_array_equal(started[tail], estimates[2][tail])
    others = np.arange(12) != tail
    np.testing.assert_array_equal(started[others], plain[others])
    assert np.isfinite(plain[paw]).all()  # carried from frames 0-1, kept over the guess
    assert steps.pass_start(store, [0, 1], 12, body_points={0: estimates[0]})["last_seen_3d"][tail] \
        == estimates[0][tail].tolist()
    # Backward from the first seed frame: its nearest seed frame's estimate.
    backward = steps.backward_start(store, frozenset({0, 1, 2}), 12, body_points=estimates)
    np.testing.assert_array_equal(backward["last_seen_3d"][tail], estimates[0][tail])


def test_the_results_flag_ears_and_the_backs_top_where_the_ears_lie_behind_it(shipped_review):
    from agent.pose_frames import untracked_record

    points, _, sides, review = shipped_review
    ear_l, ear_r, top = INDEX["ear_L"], INDEX["ear_R"], INDEX["back_top"]
    assert review.ears == (ear_l, ear_r)  # read from the names
    records = []
    for frame in range(100, 200):
        frame_points = points[frame].copy()
        if frame >= 150:  # an ear and the back's top on each other's dots from frame 150 on
            frame_points[[ear_r, top]] = frame_points[[top, ear_r]]
        records.append(replace(untracked_record(frame, 6, 12), points_3d=frame_points,
                               flagged=np.zeros(12, bool), reason=np.full(12, ""), score=np.ones(12)))
    records[-1] = replace(records[-1], frame=2)  # a seed frame stays as it is
    reviewed = steps.flag_head_behind_back(records, frozenset({0, 1, 2}), review)
    assert reviewed[:50] == records[:50] and reviewed[-1] is records[-1]
    flagged = [record for record in reviewed if record.reason[ear_l] == steps.HEAD_ORDER_REASON]
    assert len(flagged) >= 10 and min(record.frame for record in flagged) >= 150
    others = np.setdiff1d(np.arange(12), [ear_l, ear_r, top])
    for record in flagged:
        assert record.flagged[[ear_l, ear_r, top]].all() and not record.flagged[others].any()
        assert record.score[top] == 0.5
    # Names that show no ears, or no side model: nothing to check.
    assert steps.flag_head_behind_back(records, frozenset({0, 1, 2}), replace(review, ears=None)) == records
    assert steps.flag_head_behind_back(records, frozenset({0, 1, 2}), replace(review, sides=None)) == records


def test_a_paw_the_seeds_saw_in_one_camera_starts_at_its_twins_height(shipped_review):
    points, _, sides, _ = shipped_review
    paw, twin, tail = INDEX["hindpaw_L"], INDEX["hindpaw_R"], INDEX["tail_base"]
    group, window = _seen_by_one_camera(points, [paw, tail])
    started = steps.twins_at_twin_height(window, group, sides, list(QD_KEYPOINTS))
    for entry, frame in zip(started, range(3), strict=True):
        # Hind paws stand at about the same height: the ray cut there lies near the true paw.
        assert np.linalg.norm(entry["points_3d"][paw] - points[frame, paw]) < 6.0
        assert np.isnan(entry["points_3d"][tail]).all()  # a midline keypoint has no twin
        untouched = np.arange(12) != paw
        np.testing.assert_array_equal(entry["points_3d"][untouched], window[frame]["points_3d"][untouched])
    # Its twin not triangulated, or no side model: nothing is placed.
    window[0]["points_3d"][twin] = np.nan
    assert np.isnan(steps.twins_at_twin_height(window, group, sides, list(QD_KEYPOINTS))[0]["points_3d"][paw]).all()
    assert steps.twins_at_twin_height(window, group, None, list(QD_KEYPOINTS)) is window
