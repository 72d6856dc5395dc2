"""Tests of tools/blob_segmentation.py: frame sampling and the background model."""

from __future__ import annotations

import numpy as np
import pytest

from tools.blob_segmentation import TrackingParams, estimate_background, sample_frames, to_gray

FLOOR = 190


def test_sample_frames_spreads_evenly_over_an_unknown_length() -> None:
    n_frames, n_samples = 100, 10
    frames = (np.full((4, 6), index, dtype=np.uint8) for index in range(n_frames))
    kept = sample_frames(frames, n_samples)[:, 0, 0].astype(np.int64)
    stride = kept[1] - kept[0]
    assert kept[0] == 0
    assert np.all(np.diff(kept) == stride)
    assert n_samples <= len(kept) <= 2 * n_samples
    assert kept[-1] + stride >= n_frames  # the end of the video is sampled too


def test_to_gray_accepts_gray_and_bgr_and_names_a_bad_shape() -> None:
    bgr = np.full((5, 7, 3), 100, dtype=np.uint8)
    assert to_gray(bgr).shape == (5, 7)
    assert to_gray(bgr[..., 0]).shape == (5, 7)
    with pytest.raises(ValueError, match=r"\(2, 5, 7, 3\)"):
        to_gray(np.zeros((2, 5, 7, 3), dtype=np.uint8))


def test_estimate_background_fills_an_animal_that_never_moved(rng) -> None:
    samples = np.full((9, 120, 160), FLOOR, dtype=np.uint8)
    samples[:, 50:70, 70:90] = 40  # a still dark animal, in every sample
    noise = rng.integers(-3, 4, samples.shape)
    samples = np.clip(samples + noise, 0, 255).astype(np.uint8)
    background = estimate_background(samples)
    assert background.shape == (120, 160) and background.dtype == np.float32
    assert np.abs(background[50:70, 70:90] - FLOOR).max() < 10
    # Without hole filling the median keeps the animal.
    plain = estimate_background(samples, TrackingParams(fill_holes_px=0))
    assert np.abs(plain[50:70, 70:90] - 40).max() < 10


def test_estimate_background_rejects_a_single_frame() -> None:
    with pytest.raises(ValueError, match=r"\(n_samples, height, width\)"):
        estimate_background(np.zeros((4, 5), dtype=np.uint8))
