"""Tests of tools/track_identity.py: identities by shade and headings along travel."""

from __future__ import annotations

import numpy as np

from tools.track_identity import appearance_order, orient_along_travel


def test_orientation_points_along_travel() -> None:
    t = np.arange(20, dtype=np.float64)
    centroid = np.stack([100 - 3 * t, np.full_like(t, 50.0)], axis=-1)[:, None]  # walks -x
    axis = np.zeros((20, 1))  # moments give the axis only: 0 or pi
    np.testing.assert_allclose(np.abs(orient_along_travel(axis, centroid)), np.pi)


def test_appearance_order_names_shades_darkest_first_and_undoes_swaps_at_touches(rng) -> None:
    n_frames = 90
    shades = np.array([60.0, 45.0, 75.0])  # track 1 is the darkest animal
    brightness = np.tile(shades, (n_frames, 1)) + rng.normal(0, 0.5, (n_frames, 3))
    shared = np.zeros((n_frames, 3), dtype=bool)
    shared[40:45, :2] = True  # tracks 0 and 1 touch and come apart swapped
    brightness[45:, :2] = brightness[45:, 1::-1]
    order = appearance_order(brightness, shared)
    named = brightness[np.arange(n_frames)[:, None], order]
    assert (np.abs(named - [45.0, 60.0, 75.0]) < 3).all(axis=1)[~shared.any(axis=1)].all()
    # Animals that look alike keep the tracker's order.
    alike = 50.0 + rng.normal(0, 0.5, (n_frames, 3))
    np.testing.assert_array_equal(appearance_order(alike, shared), np.tile(np.arange(3), (n_frames, 1)))
