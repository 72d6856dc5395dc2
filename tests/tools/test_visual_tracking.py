"""Tests for tools/visual_tracking.py: synthetic ellipses with known paths, and a real video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tools.blob_segmentation import TrackingParams, estimate_background, sample_frames
from tools.visual_tracking import track_blobs

N_FRAMES = 120
SIZE = (320, 240)  # width, height


def _paths() -> np.ndarray:
    """True centres (n_frames, 3, 2) of three mice-sized ellipses whose paths cross.

    Animal 0 walks right along y=100 and animal 1 walks left along y=120: their
    sides touch (one merged blob) while they pass, around frame 60. Animal 2
    walks down x=80 and crosses both paths away from the others.
    """
    t = np.arange(N_FRAMES, dtype=np.float64)
    return np.stack([
        np.stack([40 + 2 * t, np.full_like(t, 100.0)], axis=-1),
        np.stack([280 - 2 * t, np.full_like(t, 120.0)], axis=-1),
        np.stack([np.full_like(t, 80.0), 20 + 1.6 * t], axis=-1),
    ], axis=1)


def _render(paths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ellipses (semi-axes 24 x 10 px, along the direction of travel) on a noisy light floor."""
    angles_deg = [0.0, 180.0, 90.0]
    frames = np.empty((len(paths), SIZE[1], SIZE[0]), dtype=np.uint8)
    for index, centres in enumerate(paths):
        image = np.full((SIZE[1], SIZE[0]), 190, dtype=np.uint8)
        for centre, angle in zip(centres, angles_deg, strict=True):
            cv2.ellipse(image, (centre * 16).astype(int).tolist(), (24 * 16, 10 * 16), angle, 0, 360,
                        40, -1, cv2.LINE_AA, 4)
        noise = rng.normal(0, 6, image.shape)
        frames[index] = np.clip(image + noise, 0, 255).astype(np.uint8)
    return frames


def _match_identities(tracked: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Track index of each true animal, from frame 0 only."""
    cost = np.linalg.norm(tracked[0][:, None] - truth[0][None], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return rows[np.argsort(cols)]


def test_identities_survive_crossings(rng: np.random.Generator) -> None:
    truth = _paths()
    frames = _render(truth, rng)
    tracks = track_blobs(frames, 3)
    assert tracks.centroid.shape == (N_FRAMES, 3, 2)
    assert not np.isnan(tracks.centroid).any()
    error = np.linalg.norm(tracks.centroid[:, _match_identities(tracks.centroid, truth)] - truth, axis=-1)
    assert np.median(error) < 1.5
    assert error.max() < 6.0  # identities never swap: a swap costs tens of px
    assert tracks.shared_blob.any()  # the crossing did merge two blobs


def test_callable_source_equals_sequence_and_one_shot_needs_background(rng) -> None:
    frames = _render(_paths()[:40], rng)
    from_list = track_blobs(list(frames), 3)
    from_callable = track_blobs(lambda: iter(frames), 3)
    np.testing.assert_array_equal(from_list.centroid, from_callable.centroid)
    with pytest.raises(ValueError, match="background"):
        track_blobs(iter(frames), 3)
    background = estimate_background(sample_frames(frames, 20))
    one_shot = track_blobs(iter(frames), 3, background=background)
    assert one_shot.centroid.shape == (40, 3, 2)


def test_measures_follow_the_ellipse(rng) -> None:
    frames = _render(_paths()[:30], rng)
    tracks = track_blobs(frames, 3, TrackingParams(downsample=1))
    # Away from each other, each blob is a filled ellipse of semi-axes about 24.5 x 10.5 px.
    np.testing.assert_allclose(tracks.area[:10], np.pi * 24.5 * 10.5, rtol=0.1)
    np.testing.assert_allclose(tracks.elongation[:10], 24.5 / 10.5, rtol=0.1)
    order = _match_identities(tracks.centroid, _paths())
    heading = tracks.orientation[5:25, order]
    expected = np.array([0.0, np.pi, np.pi / 2])
    assert np.all(np.abs(np.angle(np.exp(1j * (heading - expected)))) < 0.1)
    assert np.all(tracks.motion_energy[1:] > 0) and np.all(tracks.motion_energy <= 1)
    # A straight ellipse is not bent; a blob split out of a shared one has no bend.
    assert np.all(np.abs(tracks.bend[:10]) < np.radians(5))
    assert np.all(np.isnan(tracks.bend[tracks.shared_blob]))


def test_real_openfield_track_is_continuous(shared_data: Path) -> None:
    from agent.session import iter_frames

    video = shared_data / "openfield-single-mouse" / "video.mp4"
    if not video.is_file():
        pytest.skip("openfield video absent")
    tracks = track_blobs(lambda: iter_frames(video, 0, 400), 1)
    step = np.linalg.norm(np.diff(tracks.centroid[:, 0], axis=0), axis=-1)
    assert np.isnan(tracks.centroid).mean() < 0.01
    assert np.mean(step[~np.isnan(step)] <= 50) > 0.99
