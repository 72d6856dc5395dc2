"""Tests of tools/dec.py: DEC recovers planted motifs, is reproducible and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.dec import DecInputError, DecParams, fit_dec

FAST = DecParams(n_clusters=4, pretrain_iters=150, finetune_iters=80, max_train_frames=3000, seed=3)


def planted_motifs(
    rng: np.random.Generator, n_frames: int = 1200, n_animals: int = 3, n_motifs: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(T, A, 6)``: each animal cycles through the motifs, 40-80 frames each.

    A motif is a fixed mean feature vector plus small noise, the same for every
    animal. Returns the features and the motif of every frame ``(T, A)``.
    """
    means = rng.normal(0.0, 3.0, size=(n_motifs, 6))
    motifs = np.zeros((n_frames, n_animals), dtype=np.int64)
    for animal in range(n_animals):
        order = rng.permutation(n_motifs)
        frame, run = 0, 0
        while frame < n_frames:
            length = int(rng.integers(40, 80))
            motifs[frame : frame + length, animal] = order[run % n_motifs]
            frame, run = frame + length, run + 1
    features = means[motifs] + rng.normal(0.0, 0.3, size=(n_frames, n_animals, 6))
    return features.astype(np.float32), motifs


def majority_cluster(labels: np.ndarray, motifs: np.ndarray, motif: int) -> int:
    return int(np.bincount(labels[motifs == motif]).argmax())


def test_recovers_planted_motifs_with_clusters_shared_across_animals(rng):
    features, motifs = planted_motifs(rng)
    result = fit_dec(features, FAST)
    assert result.labels.shape == motifs.shape
    assert result.soft_assignments.shape == (*motifs.shape, 4)
    np.testing.assert_allclose(result.soft_assignments.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.labels, result.soft_assignments.argmax(axis=-1))
    # The same motif maps to the same cluster in every animal, and clusters are pure.
    for motif in range(4):
        per_animal = {majority_cluster(result.labels[:, a], motifs[:, a], motif) for a in range(3)}
        assert len(per_animal) == 1
    mapping = np.array([majority_cluster(result.labels, motifs, motif) for motif in range(4)])
    assert len(set(mapping.tolist())) == 4
    assert (mapping[motifs] == result.labels).mean() > 0.9


def test_same_input_and_seed_give_identical_results(rng):
    features, _ = planted_motifs(rng, n_frames=400)
    first = fit_dec(features, FAST)
    second = fit_dec(features, FAST)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.soft_assignments, second.soft_assignments)
    assert first.finetune_losses == second.finetune_losses


def test_leaves_global_torch_state_as_it_found_it(rng):
    features, _ = planted_motifs(rng, n_frames=300)
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fit_dec(features, FAST)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    torch.testing.assert_close(torch.rand(3), expected_next)


def test_pretraining_reduces_reconstruction_loss(rng):
    features, _ = planted_motifs(rng, n_frames=400)
    result = fit_dec(features, FAST)
    assert result.pretrain_losses[-1] < 0.5 * result.pretrain_losses[0]


@pytest.mark.parametrize(
    ("make_features", "n_clusters", "message"),
    [
        (lambda rng: rng.normal(size=(5, 2, 3)), 6, "larger than the number of frames"),
        (lambda rng: np.tile([[[0.0, 1.0]], [[1.0, 0.0]]], (20, 3, 1)), 3, "distinct feature"),
        (lambda rng: np.full((30, 2, 3), np.nan), 2, "NaN"),
        (lambda rng: rng.normal(size=(30, 3)), 2, r"\(n_frames, n_animals, n_features\)"),
        (lambda rng: np.zeros((0, 2, 3)), 2, "empty"),
    ],
)
def test_rejects_inputs_it_cannot_cluster(rng, make_features, n_clusters, message):
    features = make_features(rng).astype(np.float32)
    with pytest.raises(DecInputError, match=message):
        fit_dec(features, DecParams(n_clusters=n_clusters))
    assert issubclass(DecInputError, ValueError)


def test_k_equal_to_distinct_vectors_is_allowed():
    features = np.tile(np.array([[[0.0, 1.0]], [[1.0, 0.0]]], dtype=np.float32), (20, 2, 1))
    result = fit_dec(features, DecParams(n_clusters=2, pretrain_iters=5, finetune_iters=5))
    assert result.labels.shape == (40, 2)
