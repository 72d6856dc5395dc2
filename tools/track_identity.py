"""Identities by shade and headings along travel for the blob tracks of tools.visual_tracking."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.features import smooth


def appearance_order(brightness: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """Track to report in each identity slot, so that identities follow the animals' shades.

    Animals of distinct shades (a clear gap between the per-frame sorted
    median brightnesses, over 4x the frame-to-frame noise) are named darkest
    first, and a swap of two tracks while they touched is undone: between two
    touches (frames where any blob is shared) the tracks are matched to the
    shade levels by Hungarian assignment. Animals that look alike keep the
    tracker's order.

    Parameters
    ----------
    brightness : np.ndarray
        ``(n_frames, n_animals)`` median brightness of each track's pixels (NaN: lost).
    shared : np.ndarray
        ``(n_frames, n_animals)`` bool, the track's blob was shared.

    Returns
    -------
    np.ndarray
        ``(n_frames, n_animals)`` int64 track index per frame and identity.
    """
    n_frames, n_animals = brightness.shape
    order = np.tile(np.arange(n_animals), (n_frames, 1))
    apart = ~shared.any(axis=1) & np.isfinite(brightness).all(axis=1)
    if n_animals < 2 or apart.sum() < 2:
        return order
    levels = np.median(np.sort(brightness[apart], axis=1), axis=0)
    noise = np.nanmedian(np.abs(np.diff(brightness[apart], axis=0)))
    if np.diff(levels).min() <= 4 * max(float(noise), 1e-6):
        return order
    starts = np.flatnonzero(apart & ~np.concatenate([[False], apart[:-1]]))
    ends = np.flatnonzero(apart & ~np.concatenate([apart[1:], [False]])) + 1
    current = np.arange(n_animals)
    for start, end, next_start in zip(starts, ends, [*starts[1:], n_frames], strict=True):
        epoch = np.median(brightness[start:end], axis=0)
        tracks, identities = linear_sum_assignment(np.abs(epoch[:, None] - levels[None]))
        current = tracks[np.argsort(identities)]
        order[start:next_start] = current  # touching frames keep the last separation's order
    order[:starts[0]] = order[starts[0]]
    return order


def orient_along_travel(
    axis_angle: np.ndarray, centroid: np.ndarray, min_speed_px: float = 1.5
) -> np.ndarray:
    """Turn major-axis angles (mod pi) into directions (mod 2 pi) that follow the animal.

    Each frame picks ``angle`` or ``angle + pi``: the one closest to the
    previous direction, weighted towards the direction of travel while the
    animal moves faster than ``min_speed_px`` per frame (animals walk head
    first). ``axis_angle`` is ``(T, A)``, ``centroid`` ``(T, A, 2)``; NaN stays NaN.
    """
    n_frames, n_animals = axis_angle.shape
    if n_frames == 0:
        return axis_angle.copy()
    travel = np.gradient(smooth(centroid, 5), axis=0) if n_frames > 1 else np.zeros_like(centroid)
    moving = np.linalg.norm(travel, axis=-1) > min_speed_px
    travel_angle = np.arctan2(travel[..., 1], travel[..., 0])
    out = np.full_like(axis_angle, np.nan)
    previous = np.full(n_animals, np.nan)
    for t in range(n_frames):
        candidates = np.stack([axis_angle[t], axis_angle[t] + np.pi])
        score = np.nan_to_num(np.cos(candidates - previous))
        score += np.where(moving[t], 1.5 * np.nan_to_num(np.cos(candidates - travel_angle[t])), 0.0)
        chosen = candidates[np.argmax(score, axis=0), np.arange(n_animals)]
        out[t] = (chosen + np.pi) % (2 * np.pi) - np.pi
        previous = np.where(np.isnan(out[t]), previous, out[t])
    return out
