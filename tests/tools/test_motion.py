"""Tests for tools/motion.py: repair of tracked motion, the walker, ping-pong looping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.motion import (
    QD_KEYPOINTS,
    fill_from_model,
    interpolate_gaps,
    pingpong_indices,
    remove_outliers,
    repair_motion,
    walk_procedural,
)

SHIPPED = Path(__file__).resolve().parents[2] / "tools" / "data" / "maushaus_qd12.npz"
INDEX = {name: i for i, name in enumerate(QD_KEYPOINTS)}
PAIRS = [
    (INDEX["ear_L"], INDEX["ear_R"]),
    (INDEX["forepaw_L"], INDEX["forepaw_R"]),
    (INDEX["hindpaw_L"], INDEX["hindpaw_R"]),
]
SPINE = (INDEX["back_top"], INDEX["back_middle"], INDEX["back_bottom"])
TAIL = [INDEX["tail_base"], INDEX["tail_middle"], INDEX["tail_tip"]]


def _bone_variation(points: np.ndarray, first: str, second: str) -> float:
    """Coefficient of variation of one bone's length over the frames."""
    length = np.linalg.norm(points[:, INDEX[first]] - points[:, INDEX[second]], axis=1)
    return float(length.std() / length.mean())


def test_shipped_motion_is_complete_smooth_and_keeps_bone_lengths():
    with np.load(SHIPPED) as archive:
        points = archive["points_mm"]
        assert list(archive["keypoints"]) == list(QD_KEYPOINTS)
    assert points.shape == (1000, 12, 3) and points.dtype == np.float32
    assert np.all(np.isfinite(points))
    assert points[..., 2].min() >= 0.0  # nothing under the floor
    step_mm = np.linalg.norm(np.diff(points, axis=0), axis=2)
    assert step_mm.max() < 35.0  # about 1 m/s: the tracker's jumps were tens of cm
    for first, second in (("tail_base", "tail_middle"), ("tail_middle", "tail_tip")):
        assert _bone_variation(points, first, second) < 0.05
    for first, second in (("back_top", "back_middle"), ("back_middle", "back_bottom")):
        assert _bone_variation(points, first, second) < 0.2  # a spine bends, a little


def _corrupt(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tracker-like damage: zeros for missing points, L/R swaps, jumps of tens of cm."""
    damaged = clean.copy()
    n_frames = len(clean)
    damaged[rng.random((n_frames, 12)) < 0.1] = 0.0
    damaged[rng.random(n_frames) < 0.8, INDEX["forepaw_R"]] = 0.0
    swapped = rng.random(n_frames) < 0.1
    damaged[np.ix_(swapped, [INDEX["ear_L"], INDEX["ear_R"]])] = damaged[
        np.ix_(swapped, [INDEX["ear_R"], INDEX["ear_L"]])
    ]
    jumps = (rng.random((n_frames, 12)) < 0.02) & (np.arange(12) != INDEX["back_middle"])
    damaged[jumps] += 250.0
    return damaged


def test_repair_recovers_damaged_walker_motion(rng):
    clean = walk_procedural(300, seed=4)
    repaired = repair_motion(_corrupt(clean, rng), spine=SPINE, pairs=PAIRS, tail_chain=TAIL)
    assert repaired.shape == clean.shape and np.all(np.isfinite(repaired))
    error_mm = np.linalg.norm(repaired - clean, axis=2)
    assert np.median(error_mm) < 3.0
    step_mm = np.linalg.norm(np.diff(repaired, axis=0), axis=2)
    clean_step_mm = np.linalg.norm(np.diff(clean, axis=0), axis=2)
    assert step_mm.max() < 1.5 * clean_step_mm.max()  # none of the 250 mm jumps survives
    ears = repaired[:, [INDEX["ear_L"]]] - clean[:, [INDEX["ear_L"], INDEX["ear_R"]]]
    closer_to_true_left = np.linalg.norm(ears[:, 0], axis=1) < np.linalg.norm(ears[:, 1], axis=1)
    assert closer_to_true_left.mean() > 0.97


def test_interpolate_gaps_fills_only_short_interior_runs():
    track = np.tile(np.arange(40.0)[:, None, None], (1, 1, 3))
    track[5:8] = np.nan  # 3 frames
    track[15:35] = np.nan  # 20 frames
    track[:2] = np.nan  # touches the start
    filled = interpolate_gaps(track, max_gap=5)
    np.testing.assert_allclose(filled[5:8, 0, 0], [5.0, 6.0, 7.0])
    assert np.all(np.isnan(filled[15:35])) and np.all(np.isnan(filled[:2]))
    everything = interpolate_gaps(track)
    np.testing.assert_allclose(everything[15:35, 0, 0], np.arange(15.0, 35.0))
    np.testing.assert_allclose(everything[:2, 0, 0], 2.0)  # held at the first value


def test_fill_from_model_is_continuous_at_gap_ends():
    frames = np.arange(50.0)
    truth = np.stack([frames, np.sin(frames / 5.0), np.zeros(50)], axis=1)[:, None, :]
    model = truth + np.array([3.0, -2.0, 1.0])  # right shape, wrong place
    observed = truth.copy()
    observed[10:40] = np.nan
    filled = fill_from_model(observed, model)
    np.testing.assert_allclose(filled, truth, atol=1e-12)


def test_remove_outliers_drops_jumps_and_keeps_smooth_motion():
    points = walk_procedural(60, seed=2)
    points[30, INDEX["tail_tip"]] += [0.0, 0.0, 300.0]
    cleaned = remove_outliers(points, INDEX["back_middle"], 150.0, 15.0)
    assert np.all(np.isnan(cleaned[30, INDEX["tail_tip"]]))
    assert np.isfinite(cleaned).mean() > 0.99


def test_pingpong_plays_forward_then_backward():
    indices = pingpong_indices(4, 11)
    np.testing.assert_array_equal(indices, [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2])
    assert np.all(np.abs(np.diff(pingpong_indices(1000, 2500))) == 1)


def test_walker_is_seeded_and_stays_in_arena():
    first, again, other = walk_procedural(400, 7), walk_procedural(400, 7), walk_procedural(400, 8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert np.abs(first[..., :2]).max() < 150.0 + 130.0  # body centre within the arena
    assert first[..., 2].min() >= 0.0
    assert np.linalg.norm(np.diff(first, axis=0), axis=2).max() < 40.0  # no teleporting


def test_a_rearing_walker_keeps_its_tail_base_behind_its_hips():
    points = walk_procedural(500, seed=53)  # rears several times in 500 frames
    ears_height = points[:, [INDEX["ear_L"], INDEX["ear_R"]], 2].mean(axis=1)
    assert ears_height.max() > 2.0 * np.median(ears_height)  # it does rear
    back = points[:, INDEX["back_bottom"]] - points[:, INDEX["back_middle"]]
    back /= np.linalg.norm(back, axis=1, keepdims=True)
    behind = np.einsum("ij,ij->i", points[:, INDEX["tail_base"]] - points[:, INDEX["back_bottom"]],
                       back)
    assert behind.min() > 5.0  # pitched about the floor instead, it came 14 mm ahead
    hind = points[:, [INDEX["hindpaw_L"], INDEX["hindpaw_R"]], 2]
    assert hind.max() < 20.0  # the hind paws stay on the floor


def test_bad_shape_names_expected_and_actual():
    with pytest.raises(ValueError, match=r"\(n_frames, n_keypoints, 3\).*\(5, 3\)"):
        interpolate_gaps(np.zeros((5, 3)))
