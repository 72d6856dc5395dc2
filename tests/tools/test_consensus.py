"""tools/consensus.py: consensus triangulation against aniposelib's triangulate_possible."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tools.test_geometry import make_rig, random_points, to_aniposelib
from tools.consensus import consensus_triangulate
from tools.geometry import CameraGroup, project


@pytest.fixture
def rig(rng: np.random.Generator) -> CameraGroup:
    return make_rig(rng)


def noisy_candidates(rig: CameraGroup, rng: np.random.Generator, points_3d: np.ndarray,
                     n_candidates: int, noise_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per camera and point, the true projection at a random slot among 1..n_candidates.

    The other slots hold spurious spots 30-150 px away or NaN padding.
    Returns candidates ``(C, N, K, 2)`` and the true slot ``(C, N)``.
    """
    true_px = project(rig, points_3d)
    n_cameras, n_points, _ = true_px.shape
    shape = (n_cameras, n_points, n_candidates)
    angle = rng.uniform(0, 2 * np.pi, size=shape)
    offset = rng.uniform(30, 150, size=shape)[..., None] * np.stack([np.cos(angle),
                                                                     np.sin(angle)], axis=-1)
    candidates = true_px[:, :, None, :] + offset
    n_present = rng.integers(1, n_candidates + 1, size=(n_cameras, n_points))
    candidates[np.arange(n_candidates) >= n_present[..., None]] = np.nan
    slot = rng.integers(0, n_present)
    cameras, points = np.indices((n_cameras, n_points))
    candidates[cameras, points, slot] = true_px + rng.normal(0, noise_px, size=true_px.shape)
    return candidates, slot


def test_consensus_matches_aniposelib_triangulate_possible(rig, rng):
    # aniposelib stops at the first combination under 0.5 px: with the true
    # candidate first in every camera that is the all-true one.
    points_3d = random_points(rng, 6)
    candidates, slot = noisy_candidates(rig, rng, points_3d, 3)
    cameras, points = np.indices(slot.shape)
    true_px = candidates[cameras, points, slot]
    candidates[cameras, points, slot] = candidates[:, :, 0]
    candidates[:, :, 0] = true_px
    ours = consensus_triangulate(rig, candidates, threshold_px=8.0)
    theirs, picked, _, _ = to_aniposelib(rig).triangulate_possible(candidates)
    np.testing.assert_allclose(ours.points_3d, theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours.chosen, np.where(picked.any(axis=2), picked.argmax(2), -1))


def test_consensus_finds_the_true_candidates(rig, rng):
    points_3d = random_points(rng, 400)
    candidates, slot = noisy_candidates(rig, rng, points_3d, 3, noise_px=0.3)
    result = consensus_triangulate(rig, candidates, threshold_px=8.0)
    assert np.mean(result.chosen == slot) > 0.995
    assert np.nanmax(np.abs(result.points_3d - points_3d)) < 1.0
    assert np.all(result.reprojection_error_px[result.chosen >= 0] < 8.0)
    np.testing.assert_array_equal(result.n_inliers, (result.chosen >= 0).sum(axis=0))


def test_shuffling_candidates_changes_no_answer(rig, rng):
    points_3d = random_points(rng, 200)
    candidates, _ = noisy_candidates(rig, rng, points_3d, 3, noise_px=0.5)
    permutation = np.argsort(rng.random(candidates.shape[:3]), axis=2)
    shuffled = np.take_along_axis(candidates, permutation[..., None], axis=2)
    before = consensus_triangulate(rig, candidates, 8.0)
    after = consensus_triangulate(rig, shuffled, 8.0)
    np.testing.assert_allclose(after.points_3d, before.points_3d, rtol=1e-12, atol=1e-9)
    mapped = np.take_along_axis(permutation, np.maximum(after.chosen, 0)[..., None], axis=2)[..., 0]
    np.testing.assert_array_equal(np.where(after.chosen >= 0, mapped, -1), before.chosen)


def test_consensus_is_nan_without_two_agreeing_cameras(rig, rng):
    candidates, _ = noisy_candidates(rig, rng, random_points(rng, 3), 2)
    candidates[1:, 0] = np.nan  # one camera only
    candidates[:, 1] = np.nan  # nothing at all
    result = consensus_triangulate(rig, candidates, 8.0)
    assert np.isnan(result.points_3d[:2]).all() and np.isfinite(result.points_3d[2]).all()
    np.testing.assert_array_equal(result.chosen[:, :2], -1)
    np.testing.assert_array_equal(result.n_inliers[:2], 0)
    assert np.isnan(result.reprojection_error_px[:, :2]).all()


def test_consensus_without_candidates_is_nan(rig):
    result = consensus_triangulate(rig, np.zeros((6, 4, 0, 2)), 8.0)
    assert np.isnan(result.points_3d).all() and np.isnan(result.reprojection_error_px).all()
    np.testing.assert_array_equal(result.chosen, -1)
    np.testing.assert_array_equal(result.n_inliers, 0)


def test_consensus_checks_its_input(rig):
    with pytest.raises(ValueError, match=r"\(6, n_points, n_candidates, 2\), got \(6, 4, 2\)"):
        consensus_triangulate(rig, np.zeros((6, 4, 2)), 8.0)
    with pytest.raises(ValueError, match="threshold_px"):
        consensus_triangulate(rig, np.zeros((6, 4, 1, 2)), 0.0)
