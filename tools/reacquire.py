"""The body's shape: a keypoint layout fitted rigidly to a frame, to carry hidden keypoints along.

A mouse is not rigid, but between two frames most of its keypoints move
nearly together: a reference layout of the keypoints (for the tracker, the
last seen point of each) fitted to the keypoints a frame does see (Kabsch,
RANSAC over triples of them) says where the unseen ones have gone, and a
keypoint far from its fitted position is an outlier of the fit. Pure
arrays; NaN means missing. Shapes: ``points_3d (n_keypoints, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class TemplateFit:
    """Result of :func:`fit_template`.

    Attributes
    ----------
    fitted : np.ndarray
        ``(n_keypoints, 3)`` the template moved onto the frame; NaN where no fit
        was possible (fewer than 3 keypoints known in both) or the template lacks the keypoint.
    residual : np.ndarray
        ``(n_keypoints,)`` distance from each known keypoint to its fitted
        template position, NaN where either is missing.
    n_inliers : int
        Keypoints within the inlier distance of the chosen fit (0 without a fit).
    """

    fitted: np.ndarray
    residual: np.ndarray
    n_inliers: int


def rigid_transforms(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotations and translations taking ``source`` onto ``target`` (Kabsch).

    ``source``, ``target`` ``(n_fits, n_points, 3)`` -> rotations ``(n_fits, 3, 3)``
    and translations ``(n_fits, 3)`` with ``target ~ source @ R.T + t``.
    """
    source_mean, target_mean = source.mean(axis=1), target.mean(axis=1)
    covariance = np.einsum("fni,fnj->fij", source - source_mean[:, None],
                           target - target_mean[:, None])
    u, _, vt = np.linalg.svd(covariance)
    # A reflection is never a body motion: flip the last axis where the SVD gives one.
    sign = np.sign(np.linalg.det(np.einsum("fji,fkj->fik", vt, u)))
    sign = np.where(sign == 0, 1.0, sign)
    vt = vt * np.stack([np.ones_like(sign), np.ones_like(sign), sign], axis=1)[:, :, None]
    rotation = np.einsum("fji,fkj->fik", vt, u)
    translation = target_mean - np.einsum("fij,fj->fi", rotation, source_mean)
    return rotation, translation


def fit_template(template: np.ndarray, points_3d: np.ndarray, inlier_mm: float
                 ) -> TemplateFit:
    """Fit the layout ``template (K, 3)`` rigidly to ``points_3d (K, 3)`` by RANSAC over keypoint triples.

    Every triple of keypoints known in both seeds a rigid fit; the fit with the
    most keypoints within ``inlier_mm`` wins (ties: lower summed inlier
    residual, then the first triple) and is refitted on its inliers. Keypoint
    order is the identity: a keypoint that took another's dot is an outlier
    as long as most keypoints are right.
    """
    template = np.asarray(template, dtype=np.float64)
    points_3d = np.asarray(points_3d, dtype=np.float64)
    if template.ndim != 2 or template.shape[1] != 3 or points_3d.shape != template.shape:
        raise ValueError(f"template and points_3d must both have shape (n_keypoints, 3), got "
                         f"{template.shape} and {points_3d.shape}")
    if not inlier_mm > 0:
        raise ValueError(f"inlier_mm must be positive, got {inlier_mm}")
    known = np.flatnonzero(np.all(np.isfinite(template), axis=1)
                           & np.all(np.isfinite(points_3d), axis=1))
    n_keypoints = template.shape[0]
    if known.size < 3:
        return TemplateFit(np.full((n_keypoints, 3), np.nan), np.full(n_keypoints, np.nan), 0)
    triples = np.array(list(combinations(known.tolist(), 3)))
    rotation, translation = rigid_transforms(template[triples], points_3d[triples])
    moved = np.einsum("fij,kj->fki", rotation, template[known]) + translation[:, None]
    residual = np.linalg.norm(moved - points_3d[known], axis=2)  # (n_triples, n_known)
    inlier = residual < inlier_mm
    count = inlier.sum(axis=1)
    spread = np.where(inlier, residual, 0.0).sum(axis=1)
    best = np.lexsort((np.arange(len(triples)), spread, -count))[0]
    chosen = known[inlier[best]] if count[best] >= 3 else triples[best]
    rotation, translation = rigid_transforms(template[chosen][None], points_3d[chosen][None])
    fitted = template @ rotation[0].T + translation[0]
    residual_all = np.linalg.norm(fitted - points_3d, axis=1)
    return TemplateFit(fitted, residual_all, int(np.sum(residual_all < inlier_mm)))

