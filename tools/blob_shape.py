"""Shape of one animal's blob: centroid, major axis, elongation and body bend (tools.visual_tracking).

A top-view blob has no spine, but its pixels still show how the body
curls: in the frame of the blob's principal axes (``u`` along the major
axis, ``v`` across it) a bent body is a banana, ``v ~ c u**2``. The fitted
``c`` and the blob's half length ``h`` give the angle between the front
and rear halves of a parabola, ``2 arctan(c h)``: the same quantity as the
keypoint ``bend`` of :func:`tools.features.kinematics` (signed angle
between the rear and front halves), here with the sign of the major axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlobShape:
    """Moments of one blob (downsampled pixels); ``angle`` in (-pi/2, pi/2], ``bend`` rad (NaN: too small)."""

    centroid: np.ndarray
    angle: float
    elongation: float
    bend: float


def kmeans_labels(points: np.ndarray, seeds: np.ndarray, iterations: int) -> np.ndarray:
    """Cluster labels of ``points (n, 2)`` by Lloyd's k-means from ``seeds (k, 2)``; seed i -> label i."""
    centres = seeds.astype(np.float64).copy()
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        squared = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
        labels = np.argmin(squared, axis=1)
        counts = np.bincount(labels, minlength=len(centres))
        for axis in range(2):
            sums = np.bincount(labels, weights=points[:, axis], minlength=len(centres))
            centres[:, axis] = np.where(counts > 0, sums / np.maximum(counts, 1), centres[:, axis])
    return labels


def blob_shape(points: np.ndarray) -> BlobShape:
    """Centroid, major-axis angle, elongation (major / minor) and bend of the pixels ``points (n, 2)`` (x, y).

    ``bend`` is positive when the ends curl towards ``+v``, the major axis
    turned by +90 degrees (image axes, y down); it flips sign with the axis.
    """
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got {points.shape}")
    centroid = points.mean(axis=0)
    if len(points) < 3:
        return BlobShape(centroid, np.nan, 1.0, np.nan)
    cov = np.cov(points, rowvar=False)
    angle = 0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])
    eigen = np.linalg.eigvalsh(cov)
    elongation = float(np.sqrt(eigen[1] / eigen[0])) if eigen[0] > 1e-9 else 1.0
    offset = points - centroid
    along = np.array([np.cos(angle), np.sin(angle)])
    u = offset @ along
    v = offset @ np.array([-along[1], along[0]])
    # Least squares v = a + b u + c u**2; b absorbs what the principal axes leave.
    design = np.column_stack([np.ones_like(u), u, u * u])
    coefficients, *_ = np.linalg.lstsq(design, v, rcond=None)
    half_length = np.sqrt(3.0 * max(float(eigen[1]), 0.0))  # a uniform bar's half length is sqrt(3) sd
    bend = 2.0 * np.arctan(coefficients[2] * half_length)
    return BlobShape(centroid, float(angle), elongation, float(bend))
