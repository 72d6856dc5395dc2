"""Blob segmentation settings and the background model of :mod:`tools.visual_tracking`.

The background is the per-pixel median of frames sampled over the whole
video (:func:`sample_frames`, :func:`estimate_background`); animals are what
is darker than it by more than ``TrackingParams.threshold`` grey levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np


@dataclass(frozen=True)
class TrackingParams:
    """Settings of :func:`~tools.visual_tracking.track_blobs`; the defaults suit dark mice on a light floor."""

    downsample: int = 2
    polarity: Literal["dark", "bright", "any"] = "dark"
    threshold: float = 30.0
    min_area_fraction: float = 0.0005
    background_samples: int = 50
    fill_holes_px: int = 61
    background_rate: float = 0.02
    opening_px: int = 9
    motion_threshold: float = 12.0
    kmeans_iterations: int = 1


def to_gray(frame: np.ndarray) -> np.ndarray:
    """Grayscale ``(height, width)`` of a grayscale or BGR ``(height, width, 3)`` frame."""
    if frame.ndim == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim != 2:
        raise ValueError(f"frames must be (height, width) or (height, width, 3), got {frame.shape}")
    return frame


def as_dark_animals(gray: np.ndarray, polarity: str) -> np.ndarray:
    """Invert bright-animal videos so the rest of the pipeline sees dark animals."""
    return 255 - gray if polarity == "bright" else gray


def sample_frames(frames: Iterable[np.ndarray], n_samples: int) -> np.ndarray:
    """About ``n_samples`` grayscale frames evenly spread over ``frames``, in one pass.

    Keeps every ``stride``-th frame and doubles ``stride`` (dropping every
    other kept frame) whenever more than ``2 * n_samples`` are held, so the
    length need not be known. Returns ``(n_kept, height, width)`` uint8.
    """
    kept: list[np.ndarray] = []
    stride = 1
    for index, frame in enumerate(frames):
        if index % stride:
            continue
        kept.append(to_gray(frame))
        if len(kept) > 2 * n_samples:
            kept = kept[::2]
            stride *= 2
    if not kept:
        raise ValueError("no frames to sample")
    return np.stack(kept)


def estimate_background(samples: np.ndarray, params: TrackingParams = TrackingParams()) -> np.ndarray:
    """Background image ``(height, width)`` float32 from ``samples (n_samples, height, width)``.

    The per-pixel median, where compact, animal-sized dark holes (animals that
    rarely moved) are replaced by a morphological closing of the median.
    """
    if samples.ndim != 3:
        raise ValueError(f"samples must be (n_samples, height, width), got {samples.shape}")
    samples = as_dark_animals(samples, params.polarity)
    if params.polarity == "any" or params.fill_holes_px < 3:
        return np.median(samples, axis=0).astype(np.float32)
    median, bright = np.percentile(samples, [50, 90], axis=0).astype(np.float32)
    size = params.fill_holes_px | 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    hole = ((cv2.morphologyEx(median, cv2.MORPH_CLOSE, disk) - median) > params.threshold)
    hole = hole.astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(hole, connectivity=8)
    min_area = params.min_area_fraction * median.size
    width, height, area = stats[:, 2], stats[:, 3], stats[:, 4]
    animal_like = (
        (area >= min_area)
        & (np.maximum(width, height) <= size)
        & (area >= 0.3 * width * height)  # compact: not a long thin edge of the arena
    )
    animal_like[0] = False
    # Inside a hole the floor shows in the brightest samples, the animal having
    # shifted a little; the closing of that image fills what it never uncovered.
    filled = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, disk)
    return np.where(animal_like[labels], filled, median).astype(np.float32)
