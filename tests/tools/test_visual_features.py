"""Tests for tools/visual_features.py on tracks with analytic motion."""

from __future__ import annotations

import numpy as np
import pytest

from tools.visual_features import visual_features
from tools.visual_tracking import Tracks

FPS = 25.0


def _tracks(n_frames: int = 50) -> Tracks:
    """Animal 0 walks +x at 3 px/frame along y=50; animals 1 and 2 sit 40 and 100 px below it."""
    t = np.arange(n_frames, dtype=np.float64)
    centroid = np.zeros((n_frames, 3, 2))
    centroid[:, 0] = np.stack([10 + 3 * t, np.full_like(t, 50.0)], axis=-1)
    centroid[:, 1] = np.stack([10 + 3 * t, np.full_like(t, 90.0)], axis=-1)
    centroid[:, 2] = np.stack([10 + 3 * t, np.full_like(t, 150.0)], axis=-1)
    centroid[:, 1, 0] = 10 + 3 * t
    shape = (n_frames, 3)
    return Tracks(
        centroid=centroid,
        orientation=np.zeros(shape),
        elongation=np.full(shape, 2.0),
        area=np.full(shape, 500.0),
        motion_energy=np.full(shape, 0.1),
        shared_blob=np.zeros(shape, dtype=bool),
        bend=np.zeros(shape),
    )


def test_constant_motion_gives_exact_features() -> None:
    features = visual_features(_tracks(), FPS, food_zone=(0, 0, 20, 20))
    column = {name: features.values[..., i] for i, name in enumerate(features.names)}
    np.testing.assert_allclose(column["speed"], 3 * FPS, rtol=1e-5)
    np.testing.assert_allclose(column["velocity_y"], 0.0, atol=1e-4)
    np.testing.assert_allclose(column["orientation_change"], 0.0, atol=1e-6)
    np.testing.assert_allclose(column["other1_distance"][:, 0], 40.0, rtol=1e-5)
    np.testing.assert_allclose(column["other2_distance"][:, 0], 100.0, rtol=1e-5)
    np.testing.assert_allclose(column["other1_distance"][:, 2], 60.0, rtol=1e-5)
    assert np.all(column["food_zone_distance"] >= 0)


def test_missing_frames_give_no_nan_and_keep_the_motion() -> None:
    base = _tracks()
    centroid = base.centroid.copy()
    centroid[20:25, 0] = np.nan  # animal 0 lost for 5 frames: interpolated
    orientation = base.orientation.copy()
    orientation[:, 2] = np.nan  # never measured: filled
    tracks = Tracks(centroid, orientation, base.elongation, base.area, base.motion_energy,
                    base.shared_blob, base.bend)
    features = visual_features(tracks, FPS)
    assert not np.isnan(features.values).any()
    speed = features.values[:, 0, features.names.index("speed")]
    np.testing.assert_allclose(speed, 3 * FPS, rtol=1e-5)


def test_turning_in_place_is_measured() -> None:
    base = _tracks()
    spin = np.linspace(0, 4 * np.pi, 50)  # two turns over 50 frames, wrapped below
    orientation = base.orientation.copy()
    orientation[:, 1] = np.angle(np.exp(1j * spin))
    tracks = Tracks(base.centroid, orientation, base.elongation, base.area, base.motion_energy,
                    base.shared_blob, base.bend)
    rate = visual_features(tracks, FPS).values[5:-5, 1, 3]
    np.testing.assert_allclose(rate, (4 * np.pi / 49) * FPS, rtol=1e-3)


def test_bad_fps_is_rejected() -> None:
    with pytest.raises(ValueError, match="fps"):
        visual_features(_tracks(), 0.0)
