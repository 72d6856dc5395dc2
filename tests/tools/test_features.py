"""Tests for tools/features.py on analytic motion (exact expected values)."""

from __future__ import annotations

import numpy as np
import pytest

from tools.features import (
    interpolate_gaps,
    keypoint_features,
    kinematics,
    match_bodyparts,
    rank_others,
)

FPS = 30.0
BODYPARTS = ["nose", "neck", "center back", "tail base"]
OFFSETS = np.array([[20.0, 0.0], [10.0, 0.0], [0.0, 0.0], [-20.0, 0.0]])  # along +x, body 40 px


def _walkers(n_frames: int = 60, speed_px_per_frame: float = 2.0) -> np.ndarray:
    """Three straight mice: 0 walks +x along y=100, 1 walks -x along y=200, 2 sits at (400, 400).

    Animal 2 faces +y (down). Returns (n_frames, 3, 4, 2).
    """
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    centre0 = np.hstack([50 + speed_px_per_frame * t, np.full_like(t, 100.0)])
    centre1 = np.hstack([300 - speed_px_per_frame * t, np.full_like(t, 200.0)])
    keypoints = np.empty((n_frames, 3, 4, 2))
    keypoints[:, 0] = centre0[:, None] + OFFSETS
    keypoints[:, 1] = centre1[:, None] - OFFSETS
    keypoints[:, 2] = np.array([400.0, 400.0]) + OFFSETS[:, ::-1]
    return keypoints


def test_straight_walk_gives_exact_kinematics() -> None:
    kin = kinematics(_walkers(), BODYPARTS, FPS)
    inner = slice(5, -5)  # away from the edges of smoothing and differentiation
    np.testing.assert_allclose(kin["speed"][inner, :2], 2.0 * FPS)
    np.testing.assert_allclose(kin["speed"][inner, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(kin["heading"][inner, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(kin["heading"][inner, 1]), np.pi, atol=1e-9)
    np.testing.assert_allclose(kin["heading"][inner, 2], np.pi / 2, atol=1e-9)
    np.testing.assert_allclose(kin["body_length"], 40.0)
    np.testing.assert_allclose(kin["bend"], 0.0, atol=1e-9)
    np.testing.assert_allclose(kin["turning"], 0.0, atol=1e-9)
    # Mice 0 and 1 walk towards each other on parallel lines 100 px apart.
    np.testing.assert_allclose(kin["relative_speed"][inner, 0, 1], 4.0 * FPS)
    assert np.all(kin["approach_speed"][5:20, 0, 1] > 0)
    assert np.isnan(kin["distance"][:, [0, 1, 2], [0, 1, 2]]).all()


def test_nose_tailbase_and_in_front() -> None:
    keypoints = _walkers(n_frames=10)
    kin = kinematics(keypoints, BODYPARTS, FPS)
    expected = np.linalg.norm(keypoints[:, 0, 0] - keypoints[:, 1, 3], axis=-1)
    np.testing.assert_allclose(kin["nose_tailbase"][3:-3, 0, 1], expected[3:-3], atol=1e-9)
    # Mouse 2 sits below and to the right of mouse 0, which walks +x: in front early on.
    assert kin["other_in_front"][0, 0, 2]
    # Mouse 0 is above mouse 2, which faces down (+y): behind it.
    assert not kin["other_in_front"][0, 2, 0]


def test_features_have_no_nan_and_fixed_width_despite_missing_points(rng) -> None:
    keypoints = _walkers()
    holes = rng.uniform(size=keypoints.shape[:3]) < 0.2
    keypoints[holes] = np.nan
    keypoints[:, 1, 0] = np.nan  # mouse 1 never shows its nose
    keypoints[20:40, 2] = np.nan  # mouse 2 vanishes for 20 frames
    features = keypoint_features(keypoints, BODYPARTS, FPS, food_zone=(0, 0, 50, 50))
    assert features.values.shape == (60, 3, len(features.names))
    assert features.values.dtype == np.float32
    assert not np.isnan(features.values).any()
    assert "food_zone_distance" in features.names and "other2_distance" in features.names
    speed = features.values[10:50, 0, features.names.index("speed")]
    np.testing.assert_allclose(speed, 2.0 * FPS, rtol=0.15)


def test_shuffling_animals_permutes_features() -> None:
    keypoints = _walkers()
    order = [2, 0, 1]
    base = keypoint_features(keypoints, BODYPARTS, FPS)
    shuffled = keypoint_features(keypoints[:, order], BODYPARTS, FPS)
    np.testing.assert_allclose(shuffled.values, base.values[:, order], atol=1e-4)


def test_others_are_ranked_nearest_first() -> None:
    features = keypoint_features(_walkers(), BODYPARTS, FPS)
    first = features.values[..., features.names.index("other1_distance")]
    second = features.values[..., features.names.index("other2_distance")]
    assert np.all(first <= second)
    distance = np.array([[[np.nan, 5.0, np.nan, 1.0]] * 4])
    assert rank_others(distance)[0, 0].tolist() == [3, 1, 2]


def test_interpolate_gaps_fills_short_gaps_linearly_only() -> None:
    series = np.arange(30, dtype=np.float64)
    series[3:6] = np.nan  # 3-frame gap: filled
    series[10:25] = np.nan  # 15-frame gap: kept
    series[0] = np.nan  # leading: kept
    out = interpolate_gaps(series, max_gap=10)
    np.testing.assert_allclose(out[3:6], [3, 4, 5])
    assert np.isnan(out[10:25]).all() and np.isnan(out[0])


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["nose", "left ear", "right ear", "neck", "center back", "tail base", "tail tip"],
         {"nose": 0, "left_ear": 1, "right_ear": 2, "neck": 3, "centre": 4, "tail_base": 5}),
        (["snout", "leftear", "rightear", "tailbase"],
         {"nose": 0, "left_ear": 1, "right_ear": 2, "tail_base": 3}),
        (["Nose", "ear_L", "ear_R", "Tail_Base", "tail_end"],
         {"nose": 0, "left_ear": 1, "right_ear": 2, "tail_base": 3}),
    ],
)
def test_match_bodyparts(names: list[str], expected: dict[str, int]) -> None:
    assert match_bodyparts(names) == expected


def test_wrong_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(n_frames, n_animals, 4, 2\)"):
        kinematics(np.zeros((5, 2, 3, 2)), BODYPARTS, FPS)
