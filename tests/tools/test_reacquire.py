"""Tests of tools/reacquire.py: rigid fit of a keypoint layout."""

from __future__ import annotations

import numpy as np
import pytest

from tools.reacquire import fit_template, rigid_transforms


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _body(rng: np.random.Generator, n_keypoints: int = 12) -> np.ndarray:
    return rng.normal(0.0, 20.0, (n_keypoints, 3))


def test_rigid_transform_recovers_a_rotation_not_a_reflection(rng):
    source = _body(rng)
    rotation, shift = _rotation(rng), rng.normal(size=3)
    found_rotation, found_shift = rigid_transforms(source[None], (source @ rotation.T + shift)[None])
    assert np.allclose(found_rotation[0], rotation) and np.allclose(found_shift[0], shift)
    mirrored = source * [1, 1, -1]
    mirror_rotation, _ = rigid_transforms(source[None], mirrored[None])
    assert np.linalg.det(mirror_rotation[0]) == pytest.approx(1.0)


def test_rigidly_moved_template_is_recovered_despite_outliers_and_gaps(rng):
    template = _body(rng)
    moved = template @ _rotation(rng).T + rng.normal(0.0, 50.0, 3)
    observed = moved.copy()
    observed[[1, 7]] += 30.0  # two keypoints on the wrong dots
    observed[4] = np.nan
    fit = fit_template(template, observed, inlier_mm=5.0)
    assert np.allclose(fit.fitted, moved)
    assert fit.n_inliers == 9
    assert (fit.residual[[1, 7]] > 20).all() and np.isnan(fit.residual[4])


def test_too_few_keypoints_give_no_fit(rng):
    template = _body(rng, 4)
    observed = template.copy()
    observed[:2] = np.nan
    fit = fit_template(template, observed, inlier_mm=5.0)
    assert fit.n_inliers == 0 and np.isnan(fit.fitted).all()

