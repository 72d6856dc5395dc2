"""Stage 4 consensus triangulation: one candidate (or none) per camera.

:func:`consensus_triangulate` picks, per point, at most one candidate per
camera so that the most cameras agree: aniposelib's ``triangulate_possible``
batched. Every camera pair and candidate pair seeds a 3D hypothesis and all
hypotheses are scored in one array pass, so nothing loops over points or
hypotheses in Python and the answer does not depend on the candidates' order.

Shapes, camera axis first: ``candidates (n_cameras, n_points, n_candidates, 2)``
NaN-padded pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np

from tools.geometry import (
    CameraGroup,
    RigArrays,
    project_rig,
    rig_arrays,
    solve_inhomogeneous,
    triangulate_normalized,
    undistort_rig,
    view_entries,
)

# Seed hypotheses are evaluated in chunks of points holding about this many
# (camera, point, hypothesis, candidate) distances: 2 MB of float64 arrays
# stay near the cache (25% faster than 16 MB chunks, measured).
_CHUNK_ELEMENTS = 250_000


@dataclass(frozen=True)
class ConsensusResult:
    """What :func:`consensus_triangulate` chose.

    Attributes
    ----------
    points_3d : np.ndarray
        ``(n_points, 3)`` DLT on the chosen candidates; NaN where fewer than
        2 cameras agree.
    chosen : np.ndarray
        ``(n_cameras, n_points)`` int index into the candidate axis, -1 where
        the camera is not used.
    reprojection_error_px : np.ndarray
        ``(n_cameras, n_points)`` pixel error of ``points_3d`` in each chosen
        camera, NaN where none is chosen.
    n_inliers : np.ndarray
        ``(n_points,)`` number of cameras chosen (0 where NaN).
    """

    points_3d: np.ndarray
    chosen: np.ndarray
    reprojection_error_px: np.ndarray
    n_inliers: np.ndarray


def consensus_triangulate(group: CameraGroup, candidates: np.ndarray,
                          threshold_px: float) -> ConsensusResult:
    """Choose one candidate (or none) per camera so that most cameras agree.

    Every camera pair and candidate pair seeds a 3D hypothesis; each camera
    whose nearest candidate to the hypothesis' projection lies within
    ``threshold_px`` is an inlier. The hypothesis with the most inliers
    wins, ties going to the lower mean error; the point is re-triangulated
    on its inliers, the inliers are re-picked once from that point
    (keeping the larger set) and the point is triangulated again.

    Parameters
    ----------
    group : CameraGroup
        The calibrated cameras.
    candidates : np.ndarray
        ``(n_cameras, n_points, n_candidates, 2)`` pixels, NaN-padded.
    threshold_px : float
        Inlier reprojection error in pixels.

    Returns
    -------
    ConsensusResult
        On noiseless data with one consistent candidate per camera this is
        the choice aniposelib's ``triangulate_possible`` makes.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 4 or candidates.shape[0] != len(group) or candidates.shape[3] != 2:
        raise ValueError(f"candidates must have shape ({len(group)}, n_points, n_candidates, 2), "
                         f"got {candidates.shape}")
    if not threshold_px > 0:
        raise ValueError(f"threshold_px must be positive, got {threshold_px}")
    rig = rig_arrays(group)
    return consensus_normalized(rig, candidates, undistort_rig(rig, candidates), threshold_px)


def consensus_normalized(rig: RigArrays, pixels: np.ndarray, normalized: np.ndarray,
                         threshold_px: float) -> ConsensusResult:
    """:func:`consensus_triangulate` on candidates already undistorted.

    ``pixels`` and ``normalized`` are both ``(n_cameras, n_points,
    n_candidates, 2)``; inputs are not checked.
    """
    n_cameras, n_points, n_candidates, _ = pixels.shape
    chosen = np.full((n_cameras, n_points), -1)
    if n_candidates == 0:
        return ConsensusResult(np.full((n_points, 3), np.nan), chosen,
                               np.full(chosen.shape, np.nan), np.zeros(n_points, dtype=int))
    n_hypotheses = n_cameras * (n_cameras - 1) // 2 * n_candidates ** 2
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_cameras * n_hypotheses * n_candidates))
    for start in range(0, n_points, chunk):
        part = slice(start, start + chunk)
        chosen[:, part] = _best_seed(rig, pixels[:, part], normalized[:, part], threshold_px)
    points_3d = _triangulate_chosen(rig, normalized, chosen)
    projected = project_rig(rig, points_3d)  # (C, n, 2)
    repicked, _ = _nearest_within(projected, pixels, threshold_px)
    grows = (repicked >= 0).sum(axis=0) >= (chosen >= 0).sum(axis=0)
    final = np.where(grows & (chosen >= 0).any(axis=0), repicked, chosen)
    final[:, (final >= 0).sum(axis=0) < 2] = -1
    changed = (final != chosen).any(axis=0)  # usually few: only those are re-triangulated
    if changed.any():
        points_3d[changed] = _triangulate_chosen(rig, normalized[:, changed], final[:, changed])
        projected = project_rig(rig, points_3d)
    chosen = final
    observed = _take_candidates(pixels, chosen)
    errors = np.linalg.norm(projected - observed, axis=2)
    return ConsensusResult(points_3d, chosen, errors, (chosen >= 0).sum(axis=0))


def _best_seed(rig: RigArrays, pixels: np.ndarray, normalized: np.ndarray,
               threshold_px: float) -> np.ndarray:
    """Inlier choice ``(n_cameras, n_points)`` of the best two-view seed of each point."""
    n_cameras, n_points, n_candidates, _ = pixels.shape
    entries = view_entries(rig.dlt_basis, normalized)  # (10, C, n, K)
    first, second = _camera_pairs(n_cameras)
    seeds = solve_inhomogeneous(entries[:, first, :, :, None] + entries[:, second, :, None, :])
    seeds = seeds.swapaxes(0, 1).reshape(n_points, -1, 3)  # (n, pairs x K x K, 3)
    nearest, distance = _nearest_candidates(project_rig(rig, seeds), pixels)  # (C, n, H)
    inlier = distance < threshold_px
    count = inlier.sum(axis=0)
    mean_error = np.where(inlier, distance, 0.0).sum(axis=0) / np.maximum(count, 1)
    most = count.max(axis=1, keepdims=True)
    best = np.argmin(np.where(count == most, mean_error, np.inf), axis=1)
    rows = np.arange(n_points)
    chosen = np.where(inlier[:, rows, best], nearest[:, rows, best], -1)
    chosen[:, most[:, 0] < 2] = -1
    return chosen


@cache
def _camera_pairs(n_cameras: int) -> tuple[np.ndarray, np.ndarray]:
    """First and second camera of every camera pair, in ``combinations`` order.

    Built once per number of cameras: Stage 4 asks for them every frame.
    """
    pairs = np.array(list(combinations(range(n_cameras), 2)), dtype=np.int64).reshape(-1, 2)
    first, second = pairs.T
    first.setflags(write=False)
    second.setflags(write=False)
    return first, second


def _nearest_candidates(projected: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest candidate to each projection and its distance.

    ``projected (n_cameras, n_points, n_hypotheses, 2)`` (:func:`project_rig`
    of the hypotheses), ``pixels (n_cameras, n_points, n_candidates, 2)`` ->
    index and distance ``(n_cameras, n_points, n_hypotheses)``; distance
    inf where a camera has no candidate.
    """
    x, y = projected[..., 0], projected[..., 1]
    candidates = np.where(np.isnan(pixels), np.inf, pixels)[:, :, None]  # (C, n, 1, K, 2)
    nearest, closest = np.zeros(x.shape, dtype=np.int64), np.full(x.shape, np.inf)
    # One candidate slot at a time: contiguous (C, n, H) arrays instead of a
    # reduction over a short last axis; strict < keeps the first of equals,
    # and NaN hypotheses stay at inf.
    for slot in range(pixels.shape[2]):
        squared = (x - candidates[..., slot, 0]) ** 2 + (y - candidates[..., slot, 1]) ** 2
        closer = squared < closest
        closest = np.where(closer, squared, closest)
        nearest[closer] = slot
    return nearest, np.sqrt(closest)


def _nearest_within(projected: np.ndarray, pixels: np.ndarray,
                    threshold_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Each camera's nearest candidate to ``projected (n_cameras, n_points, 2)`` within threshold."""
    nearest, distance = _nearest_candidates(projected[:, :, None], pixels)
    inlier = distance[:, :, 0] < threshold_px
    return np.where(inlier, nearest[:, :, 0], -1), distance[:, :, 0]


def _take_candidates(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``values (n_cameras, n_points, n_candidates, d)`` at ``chosen`` -> ``(C, n_points, d)``."""
    n_cameras, n_points = chosen.shape
    taken = values[np.arange(n_cameras)[:, None], np.arange(n_points), np.maximum(chosen, 0)]
    taken[chosen < 0] = np.nan
    return taken


def _triangulate_chosen(rig: RigArrays, normalized: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    return triangulate_normalized(rig, _take_candidates(normalized, chosen))
