"""Tests of tools/clips.py: label smoothing and clip cutting."""

from __future__ import annotations

import numpy as np
import pytest

from tools.clips import (
    ClipSpan,
    change_scores,
    cut_clips,
    label_runs,
    smooth_labels,
)


def random_labels(rng: np.random.Generator, n_runs: int, max_run: int, n_clusters: int = 4):
    """Labels made of ``n_runs`` runs of 1..max_run frames with random clusters."""
    lengths = rng.integers(1, max_run + 1, size=n_runs)
    values = rng.integers(0, n_clusters, size=n_runs)
    return np.repeat(values, lengths)


def long_run_boundaries(labels: np.ndarray, min_frames: int) -> set[int]:
    """Frames where a run of at least ``min_frames`` directly follows another one."""
    starts, ends, _ = label_runs(labels)
    is_long = ends - starts >= min_frames
    return {int(starts[r]) for r in range(1, starts.size) if is_long[r - 1] and is_long[r]}


def test_label_runs():
    starts, ends, values = label_runs(np.array([2, 2, 0, 0, 0, 2]))
    np.testing.assert_array_equal(starts, [0, 2, 5])
    np.testing.assert_array_equal(ends, [2, 5, 6])
    np.testing.assert_array_equal(values, [2, 0, 2])


def test_smooth_labels_properties(rng):
    for _ in range(100):
        labels = random_labels(rng, n_runs=int(rng.integers(1, 40)), max_run=12)
        min_run = int(rng.integers(2, 8))
        smoothed = smooth_labels(labels, None, min_run)
        starts, ends, _ = label_runs(smoothed)
        if starts.size > 1:
            assert (ends - starts).min() >= min_run
        # Frames of long runs keep their label, and boundaries between long runs survive.
        run_starts, run_ends, run_values = label_runs(labels)
        for start, end, value in zip(run_starts, run_ends, run_values, strict=True):
            if end - start >= min_run:
                assert (smoothed[start:end] == value).all()
        assert long_run_boundaries(labels, min_run) <= set(starts.tolist())


def test_smooth_labels_sends_a_flicker_to_the_neighbour_the_soft_assignment_prefers():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    soft = np.full((22, 3), 1 / 3)
    soft[10:12] = [0.1, 0.3, 0.6]
    np.testing.assert_array_equal(smooth_labels(labels, soft, 3), [0] * 10 + [2] * 12)
    np.testing.assert_array_equal(smooth_labels(labels, None, 3), [0] * 12 + [2] * 10)


def test_smooth_labels_of_a_sequence_shorter_than_min_run_is_one_run():
    smoothed = smooth_labels(np.array([0, 1, 0, 2]), None, 5)
    assert np.unique(smoothed).size == 1


def test_smooth_labels_does_not_swap_alternating_flicker():
    labels = np.array([0, 1] * 10 + [2] * 10)
    smoothed = smooth_labels(labels, None, 3)
    starts, ends, _ = label_runs(smoothed)
    assert (ends - starts).min() >= 3
    assert (smoothed[20:] == 2).all()


def test_cut_clips_tile_the_sequence_and_keep_real_boundaries(rng):
    fps = 10.0
    for _ in range(200):
        labels = random_labels(rng, n_runs=int(rng.integers(1, 30)), max_run=40)
        min_clip_s, max_clip_s = float(rng.choice([0.5, 1.0])), float(rng.choice([2.0, 3.0]))
        clips = cut_clips(labels, fps, min_clip_s, max_clip_s)
        edges = [clip.start_frame for clip in clips] + [clips[-1].end_frame]
        assert edges[0] == 0 and edges[-1] == labels.size
        assert all(
            a.end_frame == b.start_frame for a, b in zip(clips[:-1], clips[1:], strict=False)
        )
        lengths = np.diff(edges)
        assert lengths.max() <= max_clip_s * fps
        if labels.size >= min_clip_s * fps:
            assert lengths.min() >= min_clip_s * fps
        assert long_run_boundaries(labels, round(min_clip_s * fps)) <= set(edges)
        for clip in clips:
            counts = np.bincount(labels[clip.start_frame : clip.end_frame])
            assert counts[clip.cluster] == counts.max()


def test_cut_clips_by_hand():
    labels = np.array([0] * 25 + [1] * 5 + [2] * 12 + [1] * 70)
    clips = cut_clips(labels, fps=10.0, min_clip_s=1.0, max_clip_s=5.0)
    # The 5-frame run joins its shorter neighbour (the 12-frame run); 70 frames split in two.
    assert clips == [
        ClipSpan(0, 25, 0),
        ClipSpan(25, 42, 2),
        ClipSpan(42, 77, 1),
        ClipSpan(77, 112, 1),
    ]


def test_cut_clips_of_a_short_sequence_is_one_clip():
    assert cut_clips(np.array([3, 3, 1]), fps=30.0) == [ClipSpan(0, 3, 3)]
    assert cut_clips(np.zeros(0, dtype=np.int64), fps=30.0) == []


def test_change_scores_peak_where_the_state_steps():
    features = np.zeros((60, 3))
    features[37:, 1] = 4.0  # e.g. the animal starts running at frame 37
    features[:, 2] = np.nan  # a missing feature adds nothing
    scores = change_scores(features, window=5)
    assert scores.shape == (60,) and (scores >= 0).all()
    assert int(np.argmax(scores)) == 37
    np.testing.assert_array_equal(change_scores(np.ones((20, 2)), window=3), 0.0)


def test_cut_clips_split_long_runs_where_the_state_changes(rng):
    labels = np.zeros(100, dtype=np.int64)
    change = np.zeros(100)
    change[63] = 1.0
    clips = cut_clips(labels, fps=10.0, min_clip_s=1.0, max_clip_s=7.0, change_score=change)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(0, 63), (63, 100)]
    for _ in range(50):  # any scores: clips still tile, fit max_clip_s and keep min_clip_s
        labels = random_labels(rng, n_runs=int(rng.integers(1, 10)), max_run=80)
        clips = cut_clips(labels, 10.0, 1.0, 2.0, change_score=rng.random(labels.size))
        assert clips[0].start_frame == 0 and clips[-1].end_frame == labels.size
        assert all(a.end_frame == b.start_frame for a, b in zip(clips[:-1], clips[1:], strict=False))
        assert all(c.end_frame - c.start_frame <= 20 for c in clips)
        assert long_run_boundaries(labels, 10) <= {c.start_frame for c in clips}


def test_cut_clips_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_clip_s <= max_clip_s"):
        cut_clips(np.zeros(10, dtype=np.int64), fps=10.0, min_clip_s=2.0, max_clip_s=1.0)
    with pytest.raises(ValueError, match=r"\(n_frames,\)"):
        cut_clips(np.zeros((10, 2), dtype=np.int64), fps=10.0)
