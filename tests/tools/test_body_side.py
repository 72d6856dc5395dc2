"""Tests for tools/body_side.py: left and right by the order of a pair across the body."""

from __future__ import annotations

import numpy as np
import pytest

from tools.body_side import order_by_side, order_vouches, rig_up, side_model
from tools.keypoint_names import left_twins, mirror_groups, twin_indices

NAMES = ["ear_L", "ear_R", "back_top", "back_bottom", "forepaw_L", "forepaw_R", "hindpaw_L",
         "hindpaw_R", "tail_base", "tail_tip"]
REGIONS = [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9]]
GROUPS = mirror_groups(NAMES)
TWIN, LEFT = twin_indices(GROUPS), left_twins(NAMES, GROUPS)
UP = np.array([0.0, 0.0, 1.0])


def _mouse(heading_deg: float = 0.0, mirrored: bool = False) -> np.ndarray:
    """``(10, 3)`` points of a mouse on the floor heading along ``heading_deg``; left is +y when heading +x."""
    body = np.array([
        [15.0, 8.0, 35.0], [15.0, -8.0, 35.0],  # ears
        [0.0, 0.0, 30.0], [-40.0, 0.0, 28.0],  # back
        [-5.0, 7.0, 2.0], [-5.0, -7.0, 2.0],  # forepaws
        [-35.0, 14.0, 2.0], [-35.0, -14.0, 2.0],  # hind paws
        [-55.0, 0.0, 20.0], [-120.0, 10.0, 2.0],  # tail
    ])
    if mirrored:  # the same animal in a left-handed world frame
        body[:, 1] *= -1
    angle = np.deg2rad(heading_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                         [0.0, 0.0, 1.0]])
    return body @ rotation.T


def _model(seeds: np.ndarray):
    return side_model(seeds, TWIN, LEFT, REGIONS, UP)


def test_the_seeds_give_the_back_as_axis_and_the_rigs_handedness():
    model = _model(np.stack([_mouse(0), _mouse(10), _mouse(20)]))
    assert (NAMES[model.axis_from], NAMES[model.axis_to]) == ("back_top", "back_bottom")
    # Heading +x with z up, up x (back_bottom - back_top) points to -y: the right side.
    # The ears, alone in their region, are not put on their sides; their order vouches.
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L"), ("hindpaw_R", "hindpaw_L")]
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.vouching_pairs] == [
        ("ear_R", "ear_L")]
    mirrored = _model(np.stack([_mouse(0, mirrored=True), _mouse(10, mirrored=True)]))
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in mirrored.pairs] == [
        ("forepaw_L", "forepaw_R"), ("hindpaw_L", "hindpaw_R")]


def test_a_pair_the_seeds_never_show_is_sided_by_the_others():
    seeds = np.stack([_mouse(0), _mouse(15)])
    seeds[:, NAMES.index("forepaw_R")] = np.nan
    model = _model(seeds)
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L"), ("hindpaw_R", "hindpaw_L")]


def test_the_ears_tell_which_side_is_left_when_the_seeds_show_no_paw_pair():
    seeds = np.stack([_mouse(0), _mouse(15)])
    seeds[:, [NAMES.index("forepaw_R"), NAMES.index("hindpaw_L")]] = np.nan
    model = _model(seeds)
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L"), ("hindpaw_R", "hindpaw_L")]
    # With the ears alone (no pair shares a region with other keypoints) nothing is put on
    # its sides, but the ears' order still vouches for them.
    names = NAMES[:4]
    groups = mirror_groups(names)
    ears_only = side_model(seeds[:, :4], twin_indices(groups), left_twins(names, groups),
                           [[0, 1], [2, 3]], UP)
    assert ears_only.pairs == () and [(p.positive, p.negative) for p in ears_only.vouching_pairs] == [
        (1, 0)]


def test_seeds_that_disagree_on_the_handedness_give_no_model():
    seeds = np.stack([_mouse(0), _mouse(10)])
    seeds[:, [4, 5]] = seeds[:, [5, 4]]  # forepaws labelled the other way round in the seeds
    assert _model(seeds) is None
    assert side_model(seeds, TWIN, LEFT, REGIONS, None) is None


@pytest.mark.parametrize("heading", [0.0, 75.0, 200.0])
def test_a_reversed_pair_is_put_back_and_an_ordered_one_left_alone(heading):
    model = _model(np.stack([_mouse(0), _mouse(10)]))
    frame = _mouse(heading)
    assert order_by_side(frame, model, margin=6.0).tolist() == list(range(10))
    swapped = frame.copy()
    swapped[[6, 7]] = swapped[[7, 6]]
    source = order_by_side(swapped, model, margin=6.0)
    assert source.tolist() == [0, 1, 2, 3, 4, 5, 7, 6, 8, 9]
    assert np.allclose(swapped[source], frame)


def test_a_pair_within_the_margin_an_upright_spine_or_a_missing_twin_is_left_alone():
    model = _model(np.stack([_mouse(0), _mouse(10)]))
    close = _mouse(0)
    close[[6, 7], 1] = [-2.0, 2.0]  # reversed by 4 mm only
    assert order_by_side(close, model, margin=6.0).tolist() == list(range(10))

    rearing = _mouse(0)
    rearing[NAMES.index("back_top")] = rearing[NAMES.index("back_bottom")] + [5.0, 0.0, 60.0]
    rearing[[6, 7]] = rearing[[7, 6]]
    assert order_by_side(rearing, model, margin=6.0).tolist() == list(range(10))

    missing = _mouse(0)
    missing[[6, 7]] = missing[[7, 6]]
    missing[6] = np.nan
    assert order_by_side(missing, model, margin=6.0).tolist() == list(range(10))


def test_rig_up_points_from_the_animal_to_a_ring_of_cameras():
    angles = np.deg2rad(np.arange(0, 360, 60) + 7)
    ring = np.column_stack([500 * np.cos(angles), 500 * np.sin(angles), np.full(6, 600.0)])
    assert np.allclose(rig_up(ring, np.array([-150.0, 120.0, 40.0])), UP)
    below = ring * [1, 1, -1]
    assert np.allclose(rig_up(below, np.zeros(3)), -UP)
    pair = np.array([[300.0, 0.0, 400.0], [-300.0, 0.0, 400.0]])
    assert np.allclose(rig_up(pair, np.zeros(3)), UP)
    assert rig_up(np.array([[100.0, 0, 0], [-100.0, 0, 0]]), np.zeros(3)) is None


@pytest.mark.parametrize("regions", [
    [[0, 1], [2, 3], [4, 6, 8], [5, 7, 9]],  # each pair split over two regions
    [[5, 7, 9], [4, 6, 8], [2, 3], [0, 1]],  # the same in another order
])
def test_a_pair_split_over_regions_is_sided_whatever_the_order(regions):
    model = side_model(np.stack([_mouse(0), _mouse(10)]), TWIN, LEFT, regions, UP)
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L"), ("hindpaw_R", "hindpaw_L")]


def test_a_region_with_one_midline_keypoint_takes_the_axis_from_all_of_them():
    regions = [[0, 1, 2], [4, 5, 6, 7, 3], [8, 9]]  # back_top with the ears, back_bottom with the paws
    model = side_model(np.stack([_mouse(0), _mouse(10)]), TWIN, LEFT, regions, UP)
    assert (NAMES[model.axis_from], NAMES[model.axis_to]) == ("back_top", "tail_tip")
    # The ears share their region with back_top, but with no other pair: their order only vouches.
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L"), ("hindpaw_R", "hindpaw_L")]
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.vouching_pairs] == [
        ("ear_R", "ear_L")]


@pytest.mark.parametrize("heading", [0.0, 130.0, 250.0])
def test_the_ears_order_vouches_for_their_sides_only_when_clearly_right(heading):
    model = _model(np.stack([_mouse(0), _mouse(10)]))
    ears = [NAMES.index("ear_L"), NAMES.index("ear_R")]
    frame = _mouse(heading)
    assert np.flatnonzero(order_vouches(frame, model, margin=6.0)).tolist() == ears
    assert not order_vouches(frame, model, margin=20.0).any()  # 16 mm apart: not by 20
    swapped = frame.copy()
    swapped[ears] = swapped[ears[::-1]]
    assert not order_vouches(swapped, model, margin=6.0).any()
    upright = frame.copy()
    upright[NAMES.index("back_bottom")] = upright[NAMES.index("back_top")] - [0.0, 0.0, 40.0]
    assert not order_vouches(upright, model, margin=6.0).any()  # across the body unknown
    frame[ears[0]] = np.nan
    assert not order_vouches(frame, model, margin=6.0).any()


def test_rig_up_of_a_ring_level_with_the_animal_is_its_axis():
    angles = np.deg2rad(np.arange(0, 360, 90))
    ring = np.column_stack([500 * np.cos(angles), 500 * np.sin(angles), np.zeros(4)])
    assert np.allclose(np.abs(rig_up(ring, np.zeros(3))), UP)


def test_shape_errors_name_expected_and_actual_shapes():
    with pytest.raises(ValueError, match=r"seed_points_3d must have shape \(n, 10, 3\), got \(2, 9, 3\)"):
        side_model(np.zeros((2, 9, 3)), TWIN, LEFT, REGIONS, UP)
    model = _model(np.stack([_mouse(0), _mouse(10)]))
    with pytest.raises(ValueError, match=r"points_3d must have shape \(n, 3\), got \(10, 2\)"):
        order_by_side(np.zeros((10, 2)), model, margin=6.0)
    with pytest.raises(ValueError, match=r"points_3d must have shape \(n, 3\), got \(10, 2\)"):
        order_vouches(np.zeros((10, 2)), model, margin=6.0)


def test_a_pair_split_over_regions_is_ordered_only_when_each_twins_region_holds_another_pair():
    # ear_L beside the forepaws, ear_R beside the back only: only ear_L's region holds another
    # pair, so the ears vouch; the hind paws, alone in their region, vouch too.
    regions = [[0, 4, 5], [1, 2, 3], [6, 7], [8, 9]]
    model = side_model(np.stack([_mouse(0), _mouse(10)]), TWIN, LEFT, regions, UP)
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.pairs] == [
        ("forepaw_R", "forepaw_L")]
    assert [(NAMES[p.positive], NAMES[p.negative]) for p in model.vouching_pairs] == [
        ("ear_R", "ear_L"), ("hindpaw_R", "hindpaw_L")]


def test_an_exchanged_vouching_pair_shows_reversed_and_the_true_pair_never_by_12_mm():
    from pathlib import Path

    from tools.body_side import order_vouches, reversed_vouching_pairs
    from tools.motion import QD_KEYPOINTS, QD_REGIONS

    points = np.load(Path(__file__).resolve().parents[2] / "tools" / "data" /
                     "maushaus_qd12.npz")["points_mm"].astype(np.float64)
    names = list(QD_KEYPOINTS)
    groups = mirror_groups(names)
    regions = [[names.index(k) for k in members] for members in QD_REGIONS.values()]
    model = side_model(points[:3], twin_indices(groups), left_twins(names, groups), regions, UP)
    ears = [names.index("ear_L"), names.index("ear_R")]
    assert {(p.positive, p.negative) for p in model.vouching_pairs} == {(ears[1], ears[0])}
    # True ears lie reversed by at most 11.8 mm over the 1,000 frames.
    assert not reversed_vouching_pairs(points, model, 12.0).any()
    exchanged = points.copy()
    exchanged[:, ears] = exchanged[:, ears[::-1]]
    flagged = reversed_vouching_pairs(exchanged, model, 12.0)
    on_sides = np.array([order_vouches(frame, model, 12.0)[ears[0]] for frame in points])
    assert np.array_equal(flagged[:, ears[0]], on_sides) and on_sides.sum() > 300
    assert np.array_equal(flagged[:, ears[1]], on_sides)
    assert not np.delete(flagged, ears, axis=1).any()
    exchanged[:, ears[0]] = np.nan  # a twin missing: no evidence
    assert not reversed_vouching_pairs(exchanged, model, 12.0).any()
