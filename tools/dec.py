"""Stage 2 of behavior segmentation: Deep Embedded Clustering (DEC) of pose features.

DEC (Xie, Girshick & Farhadi 2016) learns an embedding and a clustering together:

1. Features are standardized and each frame is given a short temporal context
   (the features at a few frame offsets around it), so clusters reflect short
   motifs rather than single postures.
2. An autoencoder is pretrained on these windows (mean squared error).
3. Centroids are initialized by k-means++ / Lloyd in the latent space.
4. Self-training: the soft assignment of frame ``i`` to cluster ``j`` is a
   Student's t kernel ``q_ij = (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2)``
   normalized over ``j``; the sharpened target is ``p_ij = q_ij^2 / f_j``
   normalized over ``j`` with the soft cluster frequency ``f_j = sum_i q_ij``.
   Encoder and centroids minimize ``KL(P || Q)`` plus, as in IDEC (Guo et al.
   2017), a weighted reconstruction term that keeps the embedding faithful.

All animals share one encoder and one set of ``K`` centroids, so cluster ``j``
means the same motif for every animal. The loss is the sum over animals of the
per-animal losses: for animal ``a``, ``f_j`` is computed over animal ``a``'s
training frames only, ``KL_a`` and ``MSE_a`` are means over animal ``a``'s frames
in the batch (every batch holds the same frames of every animal), and
``loss = sum_a (KL_a + reconstruction_weight * MSE_a)``.

Training runs on an evenly strided subset of frames (``max_train_frames``);
every frame is then embedded and assigned in one vectorized pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class DecInputError(ValueError):
    """The features cannot be clustered as asked (wrong shape, non-finite, too few frames)."""


@dataclass(frozen=True, kw_only=True)
class DecParams:
    """Settings of :func:`fit_dec`.

    Attributes
    ----------
    n_clusters : int
        ``K``, the number of clusters shared by all animals.
    latent_dim : int
        Size of the embedding.
    hidden_dims : tuple[int, ...]
        Encoder layer sizes; the decoder mirrors them.
    window_radius : int
        Context reaches this many frames before and after each frame.
    window_stride : int
        Step between context offsets: offsets are
        ``range(-window_radius, window_radius + 1, window_stride)``.
    pretrain_iters : int
        Autoencoder pretraining batches; counted in batches rather than epochs
        so that short sessions are trained as long as long ones.
    finetune_iters : int
        Most DEC self-training iterations (one batch each).
    batch_size : int
        Frames per batch, all animals together.
    lr : float
        Adam learning rate of both phases.
    alpha : float
        Degrees of freedom of the Student's t kernel.
    update_interval : int
        Iterations between recomputations of the target distribution.
    tolerance : float
        Self-training stops once fewer than this share of training labels
        change between two target updates.
    reconstruction_weight : float
        Weight of the reconstruction term during self-training (0: plain DEC).
    max_train_frames : int
        Most frames (all animals together) used for training.
    kmeans_iters : int
        Most Lloyd iterations of the centroid initialization.
    kmeans_restarts : int
        k-means++ initializations tried; the one with the lowest inertia
        wins (a single run often merges two motifs and splits a third).
    n_threads : int
        torch threads inside the call, fixed so results do not depend on the
        machine's default. One is fastest for these small layers: on a busy
        2-core machine two OpenMP threads made training 20 times slower.
    seed : int
        Seed of every random choice (weights, batches, k-means++).
    """

    n_clusters: int = 10
    latent_dim: int = 8
    hidden_dims: tuple[int, ...] = (64, 32)
    window_radius: int = 6
    window_stride: int = 3
    pretrain_iters: int = 500
    finetune_iters: int = 400
    batch_size: int = 2048
    lr: float = 1e-3
    alpha: float = 1.0
    update_interval: int = 20
    tolerance: float = 0.001
    reconstruction_weight: float = 1.0
    max_train_frames: int = 24_000
    kmeans_iters: int = 100
    kmeans_restarts: int = 10
    n_threads: int = 1
    seed: int = 0


@dataclass(frozen=True, eq=False)
class DecResult:
    """Output of :func:`fit_dec`.

    Attributes
    ----------
    labels : np.ndarray
        ``(n_frames, n_animals)`` int64 hard cluster of every frame, in ``[0, K)``.
    soft_assignments : np.ndarray
        ``(n_frames, n_animals, K)`` float32 Student's t assignments ``q``; rows sum to 1.
    centroids : np.ndarray
        ``(K, latent_dim)`` float32 cluster centres in the latent space.
    pretrain_losses : tuple[float, ...]
        Reconstruction loss of each pretraining batch.
    finetune_losses : tuple[float, ...]
        Loss of each self-training iteration.
    converged : bool
        Whether self-training stopped on ``tolerance`` before ``finetune_iters``.
    """

    labels: np.ndarray
    soft_assignments: np.ndarray
    centroids: np.ndarray
    pretrain_losses: tuple[float, ...]
    finetune_losses: tuple[float, ...]
    converged: bool


def fit_dec(features: np.ndarray, params: DecParams = DecParams()) -> DecResult:
    """Cluster every frame of every animal with DEC, jointly across animals.

    Parameters
    ----------
    features : np.ndarray
        ``(n_frames, n_animals, n_features)`` finite floats.
    params : DecParams
        Settings; ``params.seed`` makes the result reproducible: the same
        input and seed give identical labels on the same machine.

    Returns
    -------
    DecResult
        Labels ``(n_frames, n_animals)``, soft assignments ``(n_frames, n_animals, K)``,
        centroids ``(K, latent_dim)`` and loss histories.

    Raises
    ------
    DecInputError
        Wrong shape, non-finite values, or ``K`` larger than the number of
        frames or of distinct feature vectors.
    """
    _check_inputs(features, params)
    windows = _context_windows(_standardize(features), params.window_radius, params.window_stride)
    with _deterministic_torch(params.seed, params.n_threads):
        rng = np.random.default_rng(params.seed)
        train_frames = _train_frame_indices(windows.shape[0], windows.shape[1], params)
        train = torch.from_numpy(windows[train_frames])
        model = _Autoencoder(train.shape[-1], params.hidden_dims, params.latent_dim)
        pretrain_losses = _pretrain(model, train, params, rng)
        with torch.no_grad():
            latent_train = model.encode(train).reshape(-1, params.latent_dim).numpy()
        centroids = nn.Parameter(torch.from_numpy(_kmeans(latent_train, params, rng)))
        finetune_losses, converged = _self_train(model, centroids, train, params, rng)
        with torch.no_grad():
            soft = _soft_assign(model.encode(torch.from_numpy(windows)), centroids, params.alpha)
        soft_np = soft.numpy().astype(np.float32)
        centroids_np = centroids.detach().numpy().astype(np.float32).copy()
    return DecResult(
        labels=soft_np.argmax(axis=-1).astype(np.int64),
        soft_assignments=soft_np,
        centroids=centroids_np,
        pretrain_losses=tuple(pretrain_losses),
        finetune_losses=tuple(finetune_losses),
        converged=converged,
    )


def _check_inputs(features: np.ndarray, params: DecParams) -> None:
    if not isinstance(features, np.ndarray) or features.ndim != 3:
        shape = getattr(features, "shape", None)
        raise DecInputError(f"features must be (n_frames, n_animals, n_features), got {shape}")
    n_frames, n_animals, n_features = features.shape
    if n_frames == 0 or n_animals == 0 or n_features == 0:
        raise DecInputError(f"features must not be empty, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise DecInputError("features contain NaN or inf; fill missing values before clustering")
    if params.n_clusters < 1:
        raise DecInputError(f"n_clusters must be at least 1, got {params.n_clusters}")
    if params.n_clusters > n_frames:
        raise DecInputError(
            f"n_clusters={params.n_clusters} is larger than the number of frames ({n_frames})"
        )
    n_distinct = np.unique(features.reshape(-1, n_features), axis=0).shape[0]
    if params.n_clusters > n_distinct:
        raise DecInputError(
            f"n_clusters={params.n_clusters} is larger than the number of distinct "
            f"feature vectors ({n_distinct})"
        )


def _standardize(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature over all frames and animals (constant -> 0)."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    std = flat.std(axis=0)
    std[std == 0] = 1.0
    return ((features - flat.mean(axis=0)) / std).astype(np.float32)


def _context_windows(standardized: np.ndarray, radius: int, stride: int) -> np.ndarray:
    """``(T, A, D)`` -> ``(T, A, n_offsets * D)``: features at each offset, edges clamped."""
    n_frames = standardized.shape[0]
    offsets = np.arange(-radius, radius + 1, max(stride, 1))
    index = np.clip(np.arange(n_frames)[:, None] + offsets[None, :], 0, n_frames - 1)
    stacked = standardized[index]  # (T, n_offsets, A, D)
    return np.ascontiguousarray(
        stacked.transpose(0, 2, 1, 3).reshape(n_frames, standardized.shape[1], -1)
    )


def _train_frame_indices(n_frames: int, n_animals: int, params: DecParams) -> np.ndarray:
    """Evenly strided frames so that frames x animals stays within ``max_train_frames``."""
    n_train = max(params.n_clusters, min(n_frames, params.max_train_frames // n_animals))
    return np.unique(np.round(np.linspace(0, n_frames - 1, n_train)).astype(np.int64))


class _Autoencoder(nn.Module):
    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.encoder = _mlp((input_dim, *hidden_dims, latent_dim))
        self.decoder = _mlp((latent_dim, *reversed(hidden_dims), input_dim))

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        return self.encoder(windows)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(windows)
        return latent, self.decoder(latent)


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers with ReLU between them and a linear output (DEC's architecture)."""
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _endless_batches(
    n_items: int, batch_items: int, rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    """Index batches of a fresh permutation per epoch, forever."""
    while True:
        order = torch.from_numpy(rng.permutation(n_items))
        yield from order.split(batch_items)


def _pretrain(
    model: _Autoencoder, train: torch.Tensor, params: DecParams, rng: np.random.Generator
) -> list[float]:
    """Autoencoder pretraining on ``train (n_train, A, W)``; returns the loss per batch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    batches = _endless_batches(train.shape[0], max(1, params.batch_size // train.shape[1]), rng)
    losses = []
    for _ in range(params.pretrain_iters):
        windows = train[next(batches)]
        _, reconstruction = model(windows)
        loss = ((reconstruction - windows) ** 2).mean(dim=(0, 2)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _kmeans(points: np.ndarray, params: DecParams, rng: np.random.Generator) -> np.ndarray:
    """Best of ``kmeans_restarts`` seeded k-means on ``points (N, L)``: ``(K, L)`` float32."""
    points = points.astype(np.float64)
    candidates = [
        _lloyd(points, _kmeans_plus_plus(points, params.n_clusters, rng), params.kmeans_iters)
        for _ in range(max(1, params.kmeans_restarts))
    ]
    inertias = [_squared_distances(points, centres).min(axis=1).sum() for centres in candidates]
    return candidates[int(np.argmin(inertias))].astype(np.float32)


def _kmeans_plus_plus(points: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """``(K, L)`` seeds, each drawn with probability proportional to its squared distance."""
    chosen = [int(rng.integers(points.shape[0]))]
    closest_sq = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, n_clusters):
        total = closest_sq.sum()
        if total > 0:
            choice = int(rng.choice(points.shape[0], p=closest_sq / total))
        else:  # fewer distinct embeddings than clusters: any point will do
            choice = int(rng.integers(points.shape[0]))
        chosen.append(choice)
        closest_sq = np.minimum(closest_sq, ((points - points[choice]) ** 2).sum(axis=1))
    return points[chosen].copy()


def _lloyd(points: np.ndarray, centres: np.ndarray, n_iters: int) -> np.ndarray:
    """Lloyd iterations from ``centres (K, L)`` until assignments stop changing."""
    n_clusters = centres.shape[0]
    assignment = np.full(points.shape[0], -1)
    for _ in range(n_iters):
        distances = _squared_distances(points, centres)
        new_assignment = distances.argmin(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        counts = np.bincount(assignment, minlength=n_clusters)
        sums = np.zeros_like(centres)
        np.add.at(sums, assignment, points)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        # An emptied cluster restarts at the point worst served by its centre.
        worst = np.argsort(-distances[np.arange(points.shape[0]), assignment], kind="stable")
        centres[~filled] = points[worst[: int((~filled).sum())]]
    return centres


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)


def _soft_assign(latent: torch.Tensor, centroids: torch.Tensor, alpha: float) -> torch.Tensor:
    """Student's t ``q (..., K)`` of ``latent (..., L)`` against ``centroids (K, L)``."""
    squared = ((latent.unsqueeze(-2) - centroids) ** 2).sum(dim=-1)
    kernel = (1.0 + squared / alpha) ** (-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(dim=-1, keepdim=True)


def _target_distribution(soft: torch.Tensor) -> torch.Tensor:
    """DEC target for ``soft (N, A, K)``; ``f_j`` is summed per animal over its frames."""
    weight = soft**2 / soft.sum(dim=0, keepdim=True)
    return weight / weight.sum(dim=-1, keepdim=True)


def _self_train(
    model: _Autoencoder,
    centroids: nn.Parameter,
    train: torch.Tensor,
    params: DecParams,
    rng: np.random.Generator,
) -> tuple[list[float], bool]:
    """DEC self-training on ``train (n_train, A, W)``; returns losses and convergence."""
    optimizer = torch.optim.Adam([*model.parameters(), centroids], lr=params.lr)
    frames_per_batch = max(1, params.batch_size // train.shape[1])
    losses: list[float] = []
    previous_labels: torch.Tensor | None = None
    batches = _endless_batches(train.shape[0], frames_per_batch, rng)
    for iteration in range(params.finetune_iters):
        if iteration % params.update_interval == 0:
            with torch.no_grad():
                soft = _soft_assign(model.encode(train), centroids, params.alpha)
            target = _target_distribution(soft)
            labels = soft.argmax(dim=-1)
            if previous_labels is not None:
                changed = (labels != previous_labels).float().mean().item()
                if changed < params.tolerance:
                    return losses, True
            previous_labels = labels
        batch = next(batches)
        windows = train[batch]
        latent, reconstruction = model(windows)
        soft_batch = _soft_assign(latent, centroids, params.alpha)
        target_batch = target[batch]
        log_ratio = target_batch.clamp_min(1e-12).log() - soft_batch.clamp_min(1e-12).log()
        kl = (target_batch * log_ratio).sum(dim=-1)
        mse = ((reconstruction - windows) ** 2).mean(dim=-1)
        loss = (kl.mean(dim=0) + params.reconstruction_weight * mse.mean(dim=0)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, False


@contextmanager
def _deterministic_torch(seed: int, n_threads: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and fixed threads; restore all on exit."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(n_threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(previous_threads)
