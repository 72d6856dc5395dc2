"""Track animals as blobs in a top-view video, keeping identities (no keypoints needed).

Pipeline, per frame, on an image downsampled by ``params.downsample``:

1. Background (:mod:`tools.blob_segmentation`): per-pixel median of about
   ``background_samples`` frames spread over the whole video (a first pass,
   see :func:`track_blobs`). An animal that sat still through most of the
   video leaves a dark animal-sized hole in the median; holes that are
   compact and animal-sized are filled with a morphological closing of the
   background, so the animal is still found.
2. Foreground: background minus frame above ``threshold`` grey levels (dark
   animals; ``polarity`` "bright" or "any" for other rigs), cleaned by a
   morphological opening (which also drops thin tails), connected components
   of at least ``min_area_fraction`` of the image.
3. Assignment: each animal's position is predicted at constant velocity; a
   Hungarian assignment (``scipy.optimize.linear_sum_assignment``) gives every
   animal a component, where a component offers one cheap slot per animal
   its area can hold and costly extra slots, so touching animals that merged
   into one blob share it.
4. Split: a blob shared by k animals is split by k-means on its pixel
   coordinates, seeded from the k predicted positions (the seeds carry the
   identities). The default is a single k-means step (each pixel to the
   nearest prediction): more steps drift towards splitting the union along
   its long axis, which swaps animals passing side by side. While animals
   share a blob their positions follow their earlier velocity (fading by 3%
   a frame), pulled 30% of the way towards their part's centroid each frame.
5. Measure, from each animal's pixels: centroid, orientation (major axis,
   made continuous in time and pointed along the direction of travel),
   elongation (major / minor axis), body bend from the outline
   (:mod:`tools.blob_shape`), area, and motion energy (fraction of
   its pixels that changed by more than ``motion_threshold`` grey levels
   since the previous frame). Identities follow the animals' shades
   (:mod:`tools.track_identity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from tools.blob_segmentation import (
    TrackingParams,
    as_dark_animals,
    estimate_background,
    sample_frames,
    to_gray,
)
from tools.blob_shape import blob_shape, kmeans_labels
from tools.track_identity import appearance_order, orient_along_travel

FrameSource = Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]]
# TrackingParams is frozen, so one default instance can be shared by every call.
DEFAULT_PARAMS = TrackingParams()


@dataclass(frozen=True, eq=False)
class Tracks:
    """Blob tracks of ``n_animals`` animals over ``n_frames`` frames (full-resolution pixels).

    Attributes
    ----------
    centroid
        ``(n_frames, n_animals, 2)`` float64 x, y; NaN where the animal was not found.
    orientation
        ``(n_frames, n_animals)`` rad, direction of the body's major axis in
        image axes (x right, y down), continuous in time, pointing where the animal travels.
    elongation
        ``(n_frames, n_animals)`` major / minor axis length (>= 1).
    area
        ``(n_frames, n_animals)`` pixels.
    motion_energy
        ``(n_frames, n_animals)`` fraction of the animal's pixels that changed since the
        previous frame, in [0, 1].
    shared_blob
        ``(n_frames, n_animals)`` bool, the animal's blob was shared with another and split.
    bend
        ``(n_frames, n_animals)`` rad, signed angle between the front and rear halves of the
        blob (:func:`tools.blob_shape.blob_shape`), positive to the animal's right in image
        axes (y down) for the direction ``orientation`` points to; NaN where not found or
        where the blob was shared (a split part does not have the animal's outline).
    """

    centroid: np.ndarray
    orientation: np.ndarray
    elongation: np.ndarray
    area: np.ndarray
    motion_energy: np.ndarray
    shared_blob: np.ndarray
    bend: np.ndarray


def estimate_animal_area(
    samples: np.ndarray, background: np.ndarray, n_animals: int,
    params: TrackingParams = DEFAULT_PARAMS,
) -> float:
    """Typical area in pixels of one animal's blob, from ``samples (n_samples, height, width)``.

    The median blob area over the sampled frames where exactly ``n_animals``
    blobs are found (no animals touching); where there is none, the median
    of the foreground area divided by ``n_animals``.
    """
    tracker = _BlobTracker(background, n_animals, params)
    single, shared = [], []
    for frame in samples:
        tracker.previous = None
        areas = tracker.blob_areas(to_gray(frame))
        (single if len(areas) == n_animals else shared).append(areas)
    if single:
        return float(np.median(np.concatenate(single))) * tracker.factor**2
    return float(np.median([a.sum() for a in shared])) / n_animals * tracker.factor**2


def _frame_sources(frames: FrameSource) -> tuple[Callable[[], Iterable[np.ndarray]] | None, Iterable]:
    if callable(frames):
        return frames, frames()
    if iter(frames) is frames:  # a one-shot iterator cannot be read twice
        return None, frames
    return (lambda: frames), frames


def track_blobs(
    frames: FrameSource,
    n_animals: int,
    params: TrackingParams = DEFAULT_PARAMS,
    background: np.ndarray | None = None,
    animal_area: float | None = None,
) -> Tracks:
    """Track ``n_animals`` blobs through a video, keeping their identities.

    Parameters
    ----------
    frames
        Grayscale ``(height, width)`` or BGR frames. Either a callable
        returning a fresh iterable of the frames (for example ``lambda:
        iter_frames(path)``), or a re-iterable sequence (list or array), or a
        one-shot iterator. Without ``background`` the frames are read twice:
        a first pass samples ``params.background_samples`` frames spread over
        the video for the background; a one-shot iterator then needs
        ``background``.
    n_animals
        Number of animals (>= 1).
    params
        Tracking settings.
    background
        Optional ``(height, width)`` background from :func:`estimate_background`.
    animal_area
        Optional typical blob area of one animal in pixels
        (:func:`estimate_animal_area`); without it (and without
        ``background``) it is taken from the first frame.

    Returns
    -------
    Tracks
        Arrays of shape ``(n_frames, n_animals, ...)``.
    """
    if n_animals < 1:
        raise ValueError(f"n_animals must be >= 1, got {n_animals}")
    reopen, first = _frame_sources(frames)
    if background is None:
        if reopen is None:
            raise ValueError("a one-shot frame iterator needs a background; pass a callable instead")
        samples = sample_frames(first, params.background_samples)
        background = estimate_background(samples, params)
        animal_area = estimate_animal_area(samples, background, n_animals, params)
        first = reopen()
    tracker = _BlobTracker(background, n_animals, params, animal_area)
    for frame in first:
        tracker.step(to_gray(frame))
    return tracker.finish()


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class _BlobTracker:
    """Frame-by-frame state of :func:`track_blobs`; coordinates are in downsampled pixels."""

    def __init__(
        self, background: np.ndarray, n_animals: int, params: TrackingParams,
        animal_area: float | None = None,
    ) -> None:
        self.params = params
        self.factor = max(1, params.downsample)
        self.background = _downsample(background.astype(np.float32), self.factor)
        self.n_animals = n_animals
        self.min_area = params.min_area_fraction * self.background.size
        opening = max(3, (params.opening_px // self.factor) | 1)
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening))
        self.position: np.ndarray | None = None  # (A, 2) last estimate
        self.velocity = np.zeros((n_animals, 2))
        # Downsampled pixels; None: taken from the first frame.
        self.typical_area = None if animal_area is None else animal_area / self.factor**2
        self.previous: np.ndarray | None = None
        # Per frame (A, 9): x, y, angle, elong, area, motion, shared, median brightness, bend.
        self.rows: list[np.ndarray] = []

    def _foreground(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        small = _downsample(as_dark_animals(gray, self.params.polarity), self.factor)
        small = small.astype(np.float32)
        diff = self.background - small
        if self.params.polarity == "any":
            diff = np.abs(diff)
        mask = cv2.morphologyEx((diff > self.params.threshold).astype(np.uint8), cv2.MORPH_OPEN,
                                self.kernel)
        if self.previous is None:
            changed = np.zeros(small.shape, dtype=bool)
        else:
            changed = np.abs(small - self.previous) > self.params.motion_threshold
        self.previous = small
        return mask, changed

    def _blobs(self, gray: np.ndarray) -> tuple:
        mask, changed = self._foreground(gray)
        n_labels, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= self.min_area) + 1
        return n_labels, labels, stats, centroids, keep, changed

    def blob_areas(self, gray: np.ndarray) -> np.ndarray:
        """Areas (downsampled pixels) of the blobs large enough to be animals."""
        _, _, stats, _, keep, _ = self._blobs(gray)
        return stats[keep, cv2.CC_STAT_AREA].astype(np.float64)

    def step(self, gray: np.ndarray) -> None:
        n_labels, labels, stats, centroids, keep, changed = self._blobs(gray)
        row = np.full((self.n_animals, 9), np.nan)
        if len(keep) == 0:
            self._coast(np.ones(self.n_animals, dtype=bool))
            self.rows.append(row)
            return
        lookup = np.zeros(n_labels, dtype=np.int64)
        lookup[keep] = np.arange(1, len(keep) + 1)
        kept_labels = lookup[labels]
        ys, xs = np.nonzero(kept_labels)
        component = kept_labels[ys, xs] - 1
        points = np.column_stack([xs, ys]).astype(np.float64)
        areas = stats[keep, cv2.CC_STAT_AREA].astype(np.float64)
        if self.position is None:
            self._initialise(points, component, areas)
        owner = self._assign(centroids[keep], areas)
        predicted = self.position + self.velocity
        for comp in np.unique(owner[owner >= 0]):
            animals = np.flatnonzero(owner == comp)
            in_comp = np.flatnonzero(component == comp)
            if len(animals) == 1:
                parts = [in_comp]
            else:
                split = kmeans_labels(points[in_comp], predicted[animals], self.params.kmeans_iterations)
                parts = [in_comp[split == k] for k in range(len(animals))]
            for animal, part in zip(animals, parts, strict=True):
                if len(part):
                    shape = blob_shape(points[part])
                    motion = changed[ys[part], xs[part]].mean()
                    # self.previous holds this frame now (set by _foreground).
                    brightness = np.median(self.previous[ys[part], xs[part]])
                    # A part cut out of a shared blob does not have the animal's outline.
                    bend = shape.bend if len(animals) == 1 else np.nan
                    row[animal] = (*shape.centroid, shape.angle, shape.elongation, len(part), motion,
                                   len(animals) > 1, brightness, bend)
        self._update(row, areas, owner)
        self._adapt_background(kept_labels, owner, areas)
        self.rows.append(row)

    def _initialise(self, points: np.ndarray, component: np.ndarray, areas: np.ndarray) -> None:
        """First positions: animals shared out over components by area, then k-means inside.

        Animals go one at a time to the component with the largest area per
        animal already there (D'Hondt), so a blob twice an animal's size gets
        two animals and small debris gets none.
        """
        if self.typical_area is None:
            self.typical_area = float(areas.sum()) / self.n_animals
        # A first frame with (almost) nothing in the foreground: at least a pixel, never a division by 0.
        self.typical_area = max(self.typical_area, 1.0)
        shares = np.zeros(len(areas), dtype=np.int64)
        for _ in range(self.n_animals):
            # Prefer components with room for one more animal of the typical size.
            room = areas / self.typical_area - shares > 0.5
            shares[np.argmax(room * 1e9 + areas / (shares + 1))] += 1
        positions = []
        for comp in np.flatnonzero(shares):
            inside = points[component == comp]
            seeds = [inside.mean(axis=0)]
            for _ in range(1, shares[comp]):
                gaps = np.linalg.norm(inside[:, None] - np.array(seeds)[None], axis=-1).min(axis=1)
                seeds.append(inside[np.argmax(gaps)])
            labels = kmeans_labels(inside, np.array(seeds), 20)
            positions += [inside[labels == k].mean(axis=0) for k in range(shares[comp])]
        self.position = np.array(positions)

    def _assign(self, centroids: np.ndarray, areas: np.ndarray) -> np.ndarray:
        """Component index per animal (-1: lost), by Hungarian assignment on predicted positions."""
        n_animals, n_comps = self.n_animals, len(areas)
        body = np.sqrt(self.typical_area)
        predicted = self.position + self.velocity
        gap = np.linalg.norm(predicted[:, None] - centroids[None], axis=-1)
        gap = np.maximum(gap - np.sqrt(areas / np.pi)[None], 0.0)
        capacity = np.maximum(1, np.round(areas / self.typical_area))
        overflow = np.where(np.arange(n_animals)[None, :] < capacity[:, None], 0.0, 2 * body)
        slots = (gap[:, :, None] + overflow[None]).reshape(n_animals, n_comps * n_animals)
        lost = np.full((n_animals, n_animals), 4 * body)
        rows, cols = linear_sum_assignment(np.hstack([slots, lost]))
        owner = np.full(n_animals, -1)
        found = cols < n_comps * n_animals
        owner[rows[found]] = cols[found] // n_animals
        return self._claim_free_blobs(owner, gap, areas, capacity)

    def _claim_free_blobs(
        self, owner: np.ndarray, gap: np.ndarray, areas: np.ndarray, capacity: np.ndarray
    ) -> np.ndarray:
        """Lost animals, and animals crowding a blob too small for them all, take free blobs.

        A free blob is animal-sized and claimed by nobody; the jump may be
        long (an animal reappearing, or a wrong start corrected).
        """
        counts = np.bincount(owner[owner >= 0], minlength=len(areas))
        free = np.setdiff1d(np.flatnonzero(areas >= 0.5 * self.typical_area), owner)
        crowded = np.append(counts > capacity, False)  # index -1 (lost) maps to False
        movers = np.flatnonzero((owner < 0) | crowded[owner])
        if not len(movers) or not len(free):
            return owner
        rows, cols = linear_sum_assignment(gap[np.ix_(movers, free)])
        for i in np.argsort(gap[movers[rows], free[cols]], kind="stable"):
            animal = movers[rows[i]]
            if owner[animal] < 0 or counts[owner[animal]] > capacity[owner[animal]]:
                counts[owner[animal]] -= owner[animal] >= 0
                owner[animal] = free[cols[i]]
        return owner

    def _adapt_background(self, kept_labels: np.ndarray, owner: np.ndarray,
                          areas: np.ndarray) -> None:
        """Blend the frame into the background away from animal-sized blobs that animals hold.

        Bedding that the animals push around would otherwise stay foreground
        for the rest of the video and attract tracks; a blob much smaller than
        an animal is absorbed even when a track holds it, which frees the track.
        """
        if self.params.background_rate <= 0:
            return
        held = owner[owner >= 0]
        held = held[areas[held] >= 0.5 * self.typical_area]
        animal_blobs = np.isin(kept_labels, held + 1).astype(np.uint8)
        guard = cv2.dilate(animal_blobs, self.kernel, iterations=2)
        cv2.accumulateWeighted(self.previous, self.background, self.params.background_rate,
                               mask=(1 - guard))

    def _coast(self, lost: np.ndarray) -> None:
        if self.position is not None:
            self.velocity[lost] *= 0.5
            self.position[lost] += self.velocity[lost]

    def _update(self, row: np.ndarray, areas: np.ndarray, owner: np.ndarray) -> None:
        found = ~np.isnan(row[:, 0])
        alone = found & (row[:, 6] == 0)
        # A split blob's parts are biased towards each other: keep (and slowly
        # forget) the velocity measured before the animals touched.
        step = row[alone, :2] - self.position[alone]
        self.velocity[alone] = 0.5 * self.velocity[alone] + 0.5 * step
        self.position[alone] = row[alone, :2]
        # A split blob's parts are biased towards each other: the animals keep
        # moving as they did before they touched (the velocity slowly fades),
        # corrected a little towards their part's centroid, which is reported.
        shared = found & ~alone
        predicted = self.position[shared] + self.velocity[shared]
        self.position[shared] = predicted + 0.3 * (row[shared, :2] - predicted)
        self.velocity[shared] *= 0.97
        row[shared, :2] = self.position[shared]
        self._coast(~found)
        one_each = found.all() and len(np.unique(owner)) == self.n_animals
        if one_each:
            self.typical_area = 0.9 * self.typical_area + 0.1 * float(np.median(areas[owner]))

    def finish(self) -> Tracks:
        rows = np.array(self.rows).reshape(-1, self.n_animals, 9)
        rows = rows[np.arange(len(rows))[:, None], appearance_order(rows[..., 7], rows[..., 6] == 1)]
        scale = float(self.factor)
        centroid = (rows[..., :2] + 0.5) * scale - 0.5
        orientation = orient_along_travel(rows[..., 2], centroid)
        # The bend was measured along the major axis; pointing the axis the other way flips it.
        flipped = np.cos(orientation - rows[..., 2]) < 0
        return Tracks(
            centroid=centroid,
            orientation=orientation,
            elongation=rows[..., 3],
            area=rows[..., 4] * scale**2,
            motion_energy=rows[..., 5],
            shared_blob=rows[..., 6] == 1,
            bend=np.where(flipped, -rows[..., 8], rows[..., 8]),
        )
