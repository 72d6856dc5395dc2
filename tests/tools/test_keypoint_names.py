"""Tests for tools/keypoint_names.py: left/right twins and the tail's chain found by name."""

from __future__ import annotations

import numpy as np
import pytest

from tools.keypoint_names import ear_pair, left_twins, mirror_groups, tail_chain, twin_indices
from tools.motion import QD_KEYPOINTS


def _pairs(names: list[str]) -> set[frozenset[str]]:
    groups = mirror_groups(names)
    return {frozenset(names[i] for i in np.flatnonzero(groups == g))
            for g in np.unique(groups) if np.sum(groups == g) == 2}


def test_the_quantum_dot_rig_has_three_pairs_and_six_midline_keypoints():
    groups = mirror_groups(list(QD_KEYPOINTS))
    assert _pairs(list(QD_KEYPOINTS)) == {frozenset({"ear_L", "ear_R"}),
                                          frozenset({"forepaw_L", "forepaw_R"}),
                                          frozenset({"hindpaw_L", "hindpaw_R"})}
    assert np.unique(groups).size == 9
    # A group is named by its first keypoint, so the groups are valid indices.
    assert np.all(groups <= np.arange(len(QD_KEYPOINTS)))


@pytest.mark.parametrize("left, right", [
    ("left ear", "right ear"), ("LeftForepaw", "RightForepaw"), ("l_hip", "R-Hip"),
    ("paw.left", "paw.right"), ("Ear_L", "ear_r"), ("hind paw L", "hindpaw R"),
])
def test_common_naming_conventions_pair(left, right):
    names = ["nose", right, "tail_base", left]
    assert _pairs(names) == {frozenset({left, right})}


@pytest.mark.parametrize("names", [
    ["tail", "trail", "ear", "real"],  # a trailing l or r without a separator is no side
    ["ear_L", "leftear", "ear_R"],  # the left side named twice: no pair is certain
    ["forepaw_L", "hindpaw_R"],  # sides of different body parts
    ["left", "right"],  # a side with no body part
])
def test_names_that_are_not_pairs_stay_alone(names):
    assert np.array_equal(mirror_groups(names), np.arange(len(names)))


def test_order_does_not_change_which_names_pair():
    names = list(QD_KEYPOINTS)
    order = np.random.default_rng(0).permutation(len(names))
    assert _pairs([names[i] for i in order]) == _pairs(names)


def test_twins_point_at_each_other_and_midline_keypoints_at_themselves():
    names = list(QD_KEYPOINTS)
    twin = twin_indices(mirror_groups(names))
    assert np.array_equal(twin[twin], np.arange(len(names)))
    assert {names[k]: names[twin[k]] for k in range(len(names)) if twin[k] != k} == {
        "ear_L": "ear_R", "ear_R": "ear_L", "forepaw_L": "forepaw_R", "forepaw_R": "forepaw_L",
        "hindpaw_L": "hindpaw_R", "hindpaw_R": "hindpaw_L"}


@pytest.mark.parametrize(("names", "left"), [
    (["ear_L", "ear_R", "back", "Left Paw", "right_paw"], [True, False, False, True, False]),
    (["R_hip", "L_hip", "paw_L"], [False, True, False]),  # paw_L has no twin
])
def test_left_twins_marks_the_left_keypoint_of_each_pair_only(names, left):
    assert left_twins(names, mirror_groups(names)).tolist() == left


@pytest.mark.parametrize("names, chain", [
    (list(QD_KEYPOINTS), (11, 10, 9)),
    (["Tail Tip", "nose", "tail_mid", "TailBase"], (0, 2, 3)),
    (["base_tail", "middle_tail", "end_tail"], (2, 1, 0)),
    # Names that are not the tail's places are left alone beside a complete chain.
    (["tail", "tailbone", "detail_tip", "tail-base", "tail.mid", "TailTip"], (5, 4, 3)),
])
def test_the_tail_chain_is_read_from_the_names(names, chain):
    assert tail_chain(names) == chain


@pytest.mark.parametrize("names", [
    ["tail_base", "tail_tip"],  # no middle
    ["tail_base", "tail_middle", "tail_tip", "tail_end"],  # two tips
    ["tail1", "tail2", "tail3"],  # numbered: which end is the tip is not said
    ["tailbase_x", "tail_middle", "tail_tip"],
    ["tails_base", "tail_middle", "tail_tip"],
    ["detail_base", "tail_middle", "tail_tip"],
])
def test_names_that_do_not_show_one_base_middle_and_tip_give_no_chain(names):
    assert tail_chain(names) is None


@pytest.mark.parametrize("names, ears", [
    (list(QD_KEYPOINTS), (0, 1)),
    (["nose", "right ear", "Left Ear"], (2, 1)),
    (["R_ear", "L_ear", "L_hip", "R_hip"], (1, 0)),
    # No pair, one side only, or an ear-like word that is not an ear: none.
    (["ear", "back"], None),
    (["ear_L", "back"], None),
    (["left_year", "right_year"], None),
])
def test_the_ears_are_read_from_the_names(names, ears):
    assert ear_pair(names) == ears
