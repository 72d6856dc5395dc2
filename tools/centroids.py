"""Stage detect_centroids: sub-pixel quantum-dot centroids in one fluorescence frame.

A fluorescence frame shows the quantum dots as small bright spots on a dark,
slowly varying background. :func:`detect_centroids` removes the background,
thresholds at ``k`` robust noise sigmas, labels connected components, splits
components that hold two well-separated peaks, and returns intensity-weighted
centroids. It runs on every fluorescence frame of every camera, so it works
on a few whole-frame OpenCV operations and on the few candidate pixels only:
the float32 residual is computed exactly where it is read (a noise sample,
the pixels bright enough to pass the threshold, the box around the spots), no
Python loop runs over pixels, and the only loop runs over components that
hold more than one peak.

Coordinates follow FORMATS.md: origin at the top-left pixel centre of the full
image, x to the right, y down, so pixel ``(row, col)`` is the point
``(x=col, y=row)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

# A robust sigma from the median absolute deviation of Gaussian noise.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, kw_only=True)
class CentroidParams:
    """Configuration of :func:`detect_centroids`; every field is documented in its metadata.

    Intensities are in the units of the input frame (0-255 for uint8,
    0-65535 for uint16), distances and areas in full-image pixels.
    """

    background_scale_px: int = field(
        default=32,
        metadata={
            "description": "Structures wider than this are background: when no background "
            "frame is given, it is estimated by a morphological opening of this size (on a "
            "frame downsampled by background_scale_px // 8). 0 disables the estimate."
        },
    )
    threshold_k_sigma: float = field(
        default=6.0,
        metadata={
            "description": "A pixel is foreground when it exceeds the background level by "
            "threshold_k_sigma robust noise sigmas (1.4826 * MAD over a pixel sample)."
        },
    )
    threshold_floor: float = field(
        default=12.0,
        metadata={
            "description": "Lowest foreground threshold above the background level, in "
            "grey-level steps of the frame (intensity units for uint8 and native 16-bit "
            "data; 257 or 16 units for 8- or 12-bit data stored as uint16); it matters on "
            "clean or quantized frames whose MAD is ~0."
        },
    )
    noise_sample_step: int = field(
        default=8,
        metadata={"description": "Background level and noise are estimated on every "
                  "noise_sample_step-th row and column (speed)."},
    )
    min_area_px: int = field(
        default=3,
        metadata={"description": "Spots (and components before splitting) with fewer "
                  "foreground pixels are dropped as noise."},
    )
    max_area_px: int = field(
        default=600,
        metadata={"description": "Spots with more foreground pixels are dropped (reflections, "
                  "saturated blobs)."},
    )
    split_merged: bool = field(
        default=True,
        metadata={"description": "Split a component holding several well-separated peaks, "
                  "assigning each of its pixels to the nearest peak."},
    )
    saturation_level: int | None = field(
        default=None,
        metadata={"description": "Pixel value at which the camera saturates (None: the "
                  "dtype's maximum). A component with a saturated pixel is never split: "
                  "its flat top shows a ring of false peaks."},
    )
    peak_smoothing_sigma_px: float = field(
        default=1.0,
        metadata={"description": "Peaks are searched in the negative Laplacian of the "
                  "residual smoothed by a Gaussian of this sigma (a blob detector); larger "
                  "values resist noise, smaller ones separate closer spots."},
    )
    min_peak_distance_px: float = field(
        default=3.0,
        metadata={"description": "Two peaks closer than this are one spot."},
    )
    max_saddle_ratio: float = field(
        default=0.92,
        metadata={"description": "Two peaks are separate spots only when the blob "
                  "response dips below max_saddle_ratio times the lower peak on the "
                  "segment between them."},
    )

    def __post_init__(self) -> None:
        if self.background_scale_px < 0 or self.noise_sample_step < 1:
            raise ValueError("background_scale_px must be >= 0 and noise_sample_step >= 1")
        if not 1 <= self.min_area_px <= self.max_area_px:
            raise ValueError(
                f"need 1 <= min_area_px <= max_area_px, got {self.min_area_px}, {self.max_area_px}"
            )
        if not 0.0 < self.max_saddle_ratio <= 1.0:
            raise ValueError(f"max_saddle_ratio must be in (0, 1], got {self.max_saddle_ratio}")


@dataclass(frozen=True, eq=False)
class Centroids:
    """Spots of one frame, numbered in reading order.

    Spot ``i`` is row ``i`` of every array. The order sorts by ``y`` and then
    ``x``, both rounded to 0.01 px, so it is stable under re-runs and under
    sub-0.005 px jitter; this index is the ``centroid`` column of
    ``keypoints_2d.csv``.

    Attributes
    ----------
    xy : np.ndarray
        ``(n_spots, 2)`` float64 intensity-weighted centroids, full-image pixels.
    intensity : np.ndarray
        ``(n_spots,)`` float64 total background-subtracted intensity of the
        spot's foreground pixels.
    area : np.ndarray
        ``(n_spots,)`` int64 number of foreground pixels.
    """

    xy: np.ndarray
    intensity: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return int(self.xy.shape[0])


def detect_centroids(
    frame: np.ndarray,
    params: CentroidParams = CentroidParams(),
    background: np.ndarray | None = None,
) -> Centroids:
    """Detect quantum-dot spots in ``frame (H, W)`` and return their sub-pixel centroids.

    Parameters
    ----------
    frame : np.ndarray
        ``(H, W)`` uint8 or uint16 fluorescence frame.
    params : CentroidParams
        Thresholds, areas and splitting; see its field descriptions.
    background : np.ndarray, optional
        ``(H, W)`` per-camera background (for example the median of many
        frames). When given it is subtracted instead of the opening estimate.

    Returns
    -------
    Centroids
        ``xy (n_spots, 2)``, ``intensity (n_spots,)``, ``area (n_spots,)``,
        sorted by ``(y, x)`` rounded to 0.01 px.

    Notes
    -----
    Centroids are weighted by the intensity above the threshold rather than
    above the background: a pixel then enters with weight ~0 as it crosses
    the threshold, so the centroid moves continuously with the spot instead
    of jumping as edge pixels appear and disappear.

    Examples
    --------
    >>> frame = np.zeros((32, 32), np.uint8)
    >>> frame[9:12, 19:22] = [[40, 80, 40], [80, 200, 80], [40, 80, 40]]
    >>> detect_centroids(frame).xy
    array([[20., 10.]])
    """
    frame = _checked_frame(frame)
    background_image = _background_of(frame, background, params)
    step = params.noise_sample_step
    every_step = slice(None, None, step)
    sample = _residual_in(frame, background_image, (every_step, every_step))
    level = float(_median(sample))
    noise_sigma = MAD_TO_SIGMA * float(_median(np.abs(sample - level)))
    # The floor is in grey levels of the frame's quantization: a 16-bit frame
    # scaled up from 8 or 12 bits (steps of 257 or 16) has MAD 0 like a clean
    # 8-bit one, and a floor of 12 raw units would turn every noise step into a spot.
    floor = params.threshold_floor * _quantization_step(frame, step)
    if frame.dtype == np.uint16:
        # Native 16-bit data with a little noise has steps of 1, and 12 raw units let a
        # faint glow through: there a grey level is 1/255 of the bright range, as in 8 bits.
        floor = max(floor, params.threshold_floor / 255.0 * (float(frame.max()) - level))
    threshold = level + max(floor, params.threshold_k_sigma * noise_sigma)

    flat_index, values = _foreground_pixels(frame, background_image, threshold)
    rows, cols = np.divmod(flat_index, frame.shape[1])
    n_labels, component = _label_components(rows, cols)
    kept = (np.bincount(component, minlength=n_labels) >= params.min_area_px)[component]
    flat_index, component, values = flat_index[kept], component[kept], values[kept]
    rows, cols = rows[kept], cols[kept]
    if params.split_merged and rows.size:
        saturation = params.saturation_level or np.iinfo(frame.dtype).max
        saturated = frame.ravel()[flat_index] >= saturation
        unsplittable = np.bincount(component, weights=saturated, minlength=n_labels) > 0
        response = _blob_response_rows(frame, background_image, rows, cols, params)
        component = _split_merged(response, rows, cols, component, unsplittable, params)
    return _weighted_centroids(values, rows, cols, component, level, threshold, params)


def _median(values: np.ndarray) -> np.floating:
    """``np.median(values)`` of a float array: the same float, ~3x faster on a frame's sample.

    np.median partitions all values, slowly on the many ties of a dark frame. Here a
    sorted subsample brackets the middle, the values below, at and above its ends are
    counted, and only those strictly inside are partitioned; the counts prove that both
    middle order statistics are found (else, or with NaNs, which no comparison counts,
    np.median of all runs). np.median ends with np.mean of those one or two values (then
    a NaN check), so the same np.mean gives the same float.
    """
    flat = values.ravel()
    size = flat.size
    if size < 1024:
        return np.median(values)
    subsample = np.sort(flat[:: size // 512])
    middle, reach = subsample.size // 2, 2 * math.isqrt(subsample.size)
    low = subsample[max(0, middle - reach)]
    high = subsample[min(subsample.size - 1, middle + reach)]
    below, at_low = np.count_nonzero(flat < low), np.count_nonzero(flat == low)
    at_high = np.count_nonzero(flat == high) if high != low else 0
    above = np.count_nonzero(flat > high)
    inside = flat[(flat > low) & (flat < high)]
    ranks = [rank - below - at_low for rank in sorted({(size - 1) // 2, size // 2})]
    if (below + at_low + inside.size + at_high + above != size
            or ranks[0] < -at_low or ranks[-1] >= inside.size + at_high):
        return np.median(values)
    inner = [rank for rank in ranks if 0 <= rank < inside.size]
    if inner:
        inside = np.partition(inside, inner)
    picked = [low if rank < 0 else high if rank >= inside.size else inside[rank] for rank in ranks]
    return np.mean(np.array(picked, dtype=flat.dtype), axis=0)


def _quantization_step(frame: np.ndarray, step: int) -> float:
    """Smallest gap between distinct grey levels of a pixel sample (1 for uint8; 257 or 16 for
    8- or 12-bit data stored as uint16).

    1 unless that common gap is one a lower bit depth gives (at most 257): a clean frame of
    a few levels (background 0 and saturated spots) says nothing about its quantization.
    Dark 8-bit data scaled to 16 bits may show only a handful of levels, so their number
    is not required to be large.
    """
    if frame.dtype == np.uint8:
        return 1.0
    values = np.unique(frame[::step, ::step])
    if values.size < 2:
        return 1.0
    gap = int(np.gcd.reduce(np.diff(values).astype(np.int64)))
    return float(gap) if 1 < gap <= 257 else 1.0


def _checked_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"frame must have shape (H, W), got {frame.shape}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frame must be uint8 or uint16, got {frame.dtype}")
    return np.ascontiguousarray(frame)  # flat pixel indices below need one C-ordered block


class _Background(NamedTuple):
    """What is subtracted from a frame: a float32 ``(H, W)`` image (None: nothing) and a
    lower bound of its values (within float32 rounding), which bounds the candidates:
    ``minimum`` over the frame and, where known, ``block_minimum (H / f, W / f)`` per
    ``f x f`` block of a frame made of whole blocks."""

    image: np.ndarray | None
    minimum: float
    block_minimum: np.ndarray | None = None


def _background_of(
    frame: np.ndarray, background: np.ndarray | None, params: CentroidParams
) -> _Background:
    """The background to subtract from ``frame``: the given one, none, or the opening estimate."""
    if background is not None:
        background = np.ascontiguousarray(background, dtype=np.float32)
        if background.shape != frame.shape:
            raise ValueError(
                f"background must have the frame's shape {frame.shape}, got {background.shape}"
            )
        return _Background(background, float(background.min()) if background.size else 0.0)
    if params.background_scale_px == 0:
        return _Background(None, 0.0)
    return _opening_background(frame, params.background_scale_px)


def _residual_in(
    frame: np.ndarray, background: _Background, region: tuple[slice | np.ndarray, slice]
) -> np.ndarray:
    """``frame`` minus its background in ``region``, contiguous float32: the very floats of
    the whole-frame difference, which is never materialised (elementwise, so equal)."""
    image = frame[region].astype(np.float32)
    if background.image is not None:
        image = image - background.image[region]
    return np.ascontiguousarray(image)


def _residual_at(frame: np.ndarray, background: _Background, flat_index: np.ndarray) -> np.ndarray:
    """:func:`_residual_in` at the flat pixel indices ``flat_index``, float32."""
    values = frame.ravel()[flat_index].astype(np.float32)
    if background.image is not None:
        values = values - background.image.ravel()[flat_index]
    return values


def _opening_background(frame: np.ndarray, scale_px: int) -> _Background:
    """Morphological opening of size ``scale_px``, computed on a downsampled frame for speed.

    The opening removes every bright structure narrower than ``scale_px``
    (the spots) and keeps the slowly varying background; a box blur of the
    same size smooths its blocky minima before upsampling. The upsampling is
    linear, so no pixel of the result is below the smallest downsampled value
    (up to float32 rounding): that is the estimate's lower bound.
    """
    height, width = frame.shape
    factor = max(1, scale_px // 8)
    kernel_px = 2 * (scale_px // (2 * factor)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_px, kernel_px))
    opened = _opened_downsample(frame, factor, kernel)
    smoothed = cv2.blur(opened, (kernel_px, kernel_px), borderType=cv2.BORDER_REPLICATE)
    image = cv2.resize(smoothed, (width, height), interpolation=cv2.INTER_LINEAR)
    if smoothed.shape != (height // factor, width // factor) or height % factor or width % factor:
        return _Background(image, float(smoothed.min()))
    # With the frame a whole number of blocks, a pixel of block (i, j) interpolates between
    # downsampled pixels i-1..i+1 and j-1..j+1 (clamped): their minimum bounds the block,
    # which keeps the candidates few under a vignetted or uneven background.
    block_minimum = cv2.erode(smoothed, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return _Background(image, float(smoothed.min()), block_minimum)


def _opened_downsample(frame: np.ndarray, factor: int, kernel: np.ndarray) -> np.ndarray:
    """Opening by ``kernel`` (replicated border) of ``frame`` as float32 downsampled by
    ``1 / factor`` with INTER_AREA, float32.

    INTER_AREA by a power-of-two factor that divides both sides is the mean of each
    ``factor x factor`` block: an integer block sum (exact in float32, below 2**24, in
    any order) times an exact power of two. Min and max commute with that exact,
    increasing scaling, so opening the integer sums of a uint8 frame (uint16, ~2x
    faster than float32) and scaling afterwards gives the same floats, without
    converting the whole frame to float32 either.
    """
    sums = _block_sums(frame, factor)
    if sums is None:
        height, width = frame.shape
        small_size = (max(1, width // factor), max(1, height // factor))
        small = cv2.resize(frame.astype(np.float32), small_size, interpolation=cv2.INTER_AREA)
        return cv2.morphologyEx(small, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    opened = cv2.morphologyEx(sums, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    return opened.astype(np.float32) * np.float32(1.0 / (factor * factor))


def _block_sums(frame: np.ndarray, factor: int) -> np.ndarray | None:
    """uint16 sums of the ``factor x factor`` blocks of a uint8 frame; None where INTER_AREA
    is not their mean (a factor not a power of two or not dividing the frame) or a sum
    could overflow (uint16 frames, factors above 16)."""
    height, width = frame.shape
    if frame.dtype != np.uint8 or factor not in (2, 4, 8, 16) or height % factor or width % factor:
        return None
    row_sums = np.add.reduce(frame.reshape(height // factor, factor, width), axis=1,
                             dtype=np.uint16)
    sums = row_sums[:, 0::factor].copy()
    for offset in range(1, factor):
        sums += row_sums[:, offset::factor]
    return sums


def _foreground_pixels(
    frame: np.ndarray, background: _Background, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (increasing) and float32 residuals of the pixels whose residual exceeds
    ``threshold``.

    The residual is computed at the candidates only: most of a frame is dark, and a pixel
    can pass only where the frame itself exceeds the threshold plus the background's lower
    bound. Where that leaves too many candidates, the whole residual is cheaper.
    """
    candidates = _candidates(frame, background, threshold)
    if candidates is None:
        residual = _residual_in(frame, background, (slice(None), slice(None)))
        flat_index = np.flatnonzero(residual > threshold)
        return flat_index, residual.ravel()[flat_index]
    values = _residual_at(frame, background, candidates)
    above = values > threshold
    return candidates[above], values[above]


def _candidates(frame: np.ndarray, background: _Background, threshold: float) -> np.ndarray | None:
    """Flat indices (increasing) of a superset of the foreground pixels, None when too many.

    A float32 residual ``frame - background > threshold`` needs ``frame > threshold +``
    the background's lower bound (per block where known, else over the frame) up to
    float32 rounding, which the margin covers many times over: the integer frame is
    compared with the integer below that bound.
    """
    maximum = np.iinfo(frame.dtype).max
    bound = threshold + background.minimum
    if not math.isfinite(bound):
        return None
    margin = 1e-4 * (1.0 + abs(threshold) + abs(background.minimum) + maximum)
    if background.block_minimum is not None and frame.dtype == np.uint8:
        limits = np.floor(threshold + background.block_minimum - margin)
        if limits.min() < 0:
            return None
        # Each block's limit on its pixels: a nearest-neighbour resize by the whole factor
        # repeats every value over its block (one call, cheaper than np.repeat twice).
        limit_map = cv2.resize(np.clip(limits, 0, maximum).astype(np.uint8),
                               (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
        above = cv2.compare(frame, limit_map, cv2.CMP_GT)
    else:
        limit = math.floor(bound - margin)
        if limit < 0:
            return None
        if limit >= maximum:
            return np.zeros(0, np.intp)
        above = cv2.compare(frame, limit, cv2.CMP_GT)
    # findNonZero scans in reading order and costs less than flatnonzero of a bool frame.
    points = cv2.findNonZero(above)
    if points is None or points.size == 0:
        return np.zeros(0, np.intp)
    if points.shape[0] > frame.size // 16:
        return None
    points = points.reshape(-1, 2).astype(np.intp)
    return points[:, 1] * frame.shape[1] + points[:, 0]


def _label_components(rows: np.ndarray, cols: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected components of the pixels ``(rows, cols)``: ``n_labels`` (label 0 is the
    background) and the int32 label of each pixel, as ``cv2.connectedComponents`` gives.

    Labelled on a compacted grid that drops the empty rows and columns between the pixels
    (labelling the whole, mostly dark frame costs ~10x more). Between two occupied rows
    (columns) that are not adjacent one or two empty ones stay, so pixels touch on the grid
    exactly when they touch on the frame, and every row and column keeps its parity, so
    OpenCV's 2x2-block scan meets the pixels in the same order and numbers the components
    alike. The numbering matters only for ties of the final (y, x) order anyway.
    """
    if rows.size == 0:
        return 1, np.zeros(0, np.int32)
    grid_rows, n_grid_rows = _compacted(rows)
    grid_cols, n_grid_cols = _compacted(cols)
    grid = np.zeros((n_grid_rows, n_grid_cols), np.uint8)
    grid[grid_rows, grid_cols] = 1
    n_labels, labels = cv2.connectedComponents(grid, connectivity=8, ltype=cv2.CV_32S)
    return n_labels, labels[grid_rows, grid_cols]


def _compacted(coords: np.ndarray) -> tuple[np.ndarray, int]:
    """Coordinates on an axis without its empty stretches -> (new coordinates, axis length).

    Adjacent occupied coordinates stay adjacent, others stay 2 or 3 apart, and each keeps
    its parity.
    """
    occupied = np.flatnonzero(np.bincount(coords))
    steps = np.diff(occupied)
    first = int(occupied[0]) % 2
    position = np.zeros(int(occupied[-1]) + 1, np.intp)
    position[occupied[0]] = first
    position[occupied[1:]] = first + np.cumsum(np.where(steps == 1, 1, 2 + steps % 2))
    return position[coords], int(position[occupied[-1]]) + 1


def _peak_radius(params: CentroidParams) -> int:
    """Half the peak distance: the reach of the local-maximum test."""
    return max(1, int(params.min_peak_distance_px // 2))


def _split_merged(
    response: _ResponseRows,
    rows: np.ndarray,
    cols: np.ndarray,
    component: np.ndarray,
    unsplittable: np.ndarray,
    params: CentroidParams,
) -> np.ndarray:
    """New spot label per foreground pixel, splitting components with separate peaks.

    Peaks are local maxima of the blob ``response`` (from
    :func:`_blob_response_rows`) inside kept components.
    ``unsplittable (n_labels,)`` marks components never to split. Split
    components get labels from ``n_labels`` up; every pixel of one goes to
    its nearest accepted peak.
    """
    radius = _peak_radius(params)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    response_rows = response.row_index[rows]
    pixel_response = response.values[response_rows, cols - response.first_col]
    # Dilate only around the foreground: the peak test reads it at foreground pixels alone.
    # Each foreground row is within its band of rows with `radius` rows to spare (or
    # at the frame's edge, where the crop's -inf border is the bands' border too).
    x0, x1 = max(0, int(cols.min()) - radius), int(cols.max()) + radius + 1
    dilated = cv2.dilate(
        response.values[:, x0 - response.first_col:x1 - response.first_col], kernel,
        borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf,
    )
    is_peak = (pixel_response >= dilated[response_rows, cols - x0]) & (pixel_response > 0)
    peak_component = component[is_peak]
    n_peaks = np.bincount(peak_component, minlength=unsplittable.size)
    multi = np.flatnonzero((n_peaks >= 2) & ~unsplittable)
    if multi.size == 0:
        return component
    peak_xy = np.column_stack([cols[is_peak], rows[is_peak]]).astype(np.float64)
    peak_response = pixel_response[is_peak]
    new_label = component.copy()
    next_label = unsplittable.size
    for label in multi:
        in_component = peak_component == label
        accepted = _separate_peaks(
            peak_xy[in_component], peak_response[in_component], response, params
        )
        if accepted.shape[0] < 2:
            continue
        pixels = component == label
        pixel_xy = np.column_stack([cols[pixels], rows[pixels]]).astype(np.float64)
        squared = ((pixel_xy[:, None, :] - accepted[None, :, :]) ** 2).sum(axis=2)
        new_label[pixels] = next_label + np.argmin(squared, axis=1)
        next_label += accepted.shape[0]
    return new_label


class _ResponseRows(NamedTuple):
    """Blob response on some rows of a box: ``values[row_index[row], col - first_col]``."""

    values: np.ndarray
    row_index: np.ndarray
    first_col: int


def _blob_response_rows(
    frame: np.ndarray, background: _Background, rows: np.ndarray, cols: np.ndarray,
    params: CentroidParams,
) -> _ResponseRows:
    """:func:`_blob_response` of the residual on the rows of the :func:`_response_box` that
    lie within its padding of a foreground row (~half of them): the same floats there.

    The rows are stacked and filtered together. OpenCV's filters compute each row from
    the rows around it alike whatever the image height, with vector loops along the row,
    and the box's columns are kept, so a row whose filters' reach stays inside its band
    (the padding leaves two spare rows beyond the peak test's) or meets the box's edge
    as the box does gets the box's floats; the junctions of the bands are never read.
    """
    sigma_px, radius = params.peak_smoothing_sigma_px, _peak_radius(params)
    box_rows, box_cols = _response_box(frame.shape, rows, cols, sigma_px, radius)
    pad = _response_pad(sigma_px, radius)
    near = np.zeros(box_rows.stop - box_rows.start, np.intp)
    near[rows - box_rows.start] = 1
    # "full" then cut: "same" would return the kernel's length when the box is shorter.
    near = np.convolve(near, np.ones(2 * pad + 1, np.intp), mode="full")[pad:pad + near.size] > 0
    band_rows = box_rows.start + np.flatnonzero(near)
    values = _blob_response(_residual_in(frame, background, (band_rows, box_cols)), sigma_px)
    row_index = np.full(frame.shape[0], -1, np.intp)
    row_index[band_rows] = np.arange(band_rows.size)
    return _ResponseRows(values, row_index, box_cols.start)


def _response_pad(sigma_px: float, reach_px: int) -> int:
    """Rows and columns the blob response needs around the pixels where it is read
    within ``reach_px``."""
    sigma_reach = math.ceil(2 * sigma_px) if sigma_px > 0 else 0
    return reach_px + sigma_reach + 2  # dilation, Gaussian half-width, Laplacian, one spare


def _response_box(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray,
                  sigma_px: float, reach_px: int) -> tuple[slice, slice]:
    """The box around the pixels ``(rows, cols)`` where :func:`_blob_response` is needed.

    Filtering only this box (most of a frame is dark) gives the same values within
    ``reach_px`` of the pixels, up to float32 rounding (OpenCV's vector loops may sum in
    another order): the box is padded by the filters' reach, and where the padding meets
    the image edge both see the same border.
    """
    pad = _response_pad(sigma_px, reach_px)
    height, width = shape
    y0, x0 = max(0, int(rows.min()) - pad), max(0, int(cols.min()) - pad)
    y1, x1 = min(height, int(rows.max()) + pad + 1), min(width, int(cols.max()) + pad + 1)
    return slice(y0, y1), slice(x0, x1)


def _blob_response(residual: np.ndarray, sigma_px: float) -> np.ndarray:
    """Negative Laplacian of the Gaussian-smoothed residual, float32 ``(H, W)``.

    Unlike the intensity, whose two peaks fuse into one flat top below ~2.5
    spot sigmas, this blob response keeps a peak per spot down to ~2.5 spot
    sigmas, including the shoulder that a weaker neighbour makes.
    """
    if sigma_px > 0:
        # A +-2 sigma kernel: half the cost of OpenCV's default +-4 sigma, same peaks.
        kernel_px = 2 * math.ceil(2 * sigma_px) + 1
        residual = cv2.GaussianBlur(residual, (kernel_px, kernel_px), sigma_px)
    return cv2.Laplacian(residual, cv2.CV_32F, ksize=3, scale=-1.0)


def _separate_peaks(
    peak_xy: np.ndarray,
    peak_response: np.ndarray,
    response: _ResponseRows,
    params: CentroidParams,
) -> np.ndarray:
    """Greedy, strongest first: keep a peak that is separate from every peak kept so far.

    ``peak_xy (n_peaks, 2)`` of one component -> ``(n_kept, 2)``.
    """
    kept: list[int] = []
    for candidate in np.argsort(-peak_response, kind="stable"):
        if all(_separated(peak_xy[candidate], peak_xy[other], response, params)
               for other in kept):
            kept.append(int(candidate))
    return peak_xy[kept]


def _separated(
    first: np.ndarray,
    second: np.ndarray,
    response: _ResponseRows,
    params: CentroidParams,
) -> bool:
    """Whether two peaks ``(x, y)`` are far enough apart and the response dips between them.

    The segment stays within the rows of its component, which ``response`` holds.
    """
    distance = float(np.hypot(*(second - first)))
    if distance < params.min_peak_distance_px:
        return False
    steps = np.linspace(0.0, 1.0, math.ceil(distance) * 2 + 1)
    line = first[None, :] + steps[:, None] * (second - first)[None, :]
    on_line = response.values[response.row_index[np.rint(line[:, 1]).astype(int)],
                              np.rint(line[:, 0]).astype(int) - response.first_col]
    return bool(on_line.min() < params.max_saddle_ratio * min(on_line[0], on_line[-1]))


def _weighted_centroids(
    values: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    spot_label: np.ndarray,
    level: float,
    threshold: float,
    params: CentroidParams,
) -> Centroids:
    """Weighted sums per label with ``np.bincount``, area filter, reading order.

    ``values`` is the float32 residual of each foreground pixel.
    """
    labels, spot_index = np.unique(spot_label, return_inverse=True)
    n_spots = labels.size
    values = values.astype(np.float64)
    weights = values - threshold
    total_weight = np.bincount(spot_index, weights=weights, minlength=n_spots)
    x = np.bincount(spot_index, weights=weights * cols, minlength=n_spots) / total_weight
    y = np.bincount(spot_index, weights=weights * rows, minlength=n_spots) / total_weight
    intensity = np.bincount(spot_index, weights=values - level, minlength=n_spots)
    area = np.bincount(spot_index, minlength=n_spots).astype(np.int64)
    valid = (area >= params.min_area_px) & (area <= params.max_area_px)
    xy = np.column_stack([x, y])[valid]
    intensity, area = intensity[valid], area[valid]
    order = np.lexsort((np.round(xy[:, 0], 2), np.round(xy[:, 1], 2)))
    return Centroids(xy=xy[order], intensity=intensity[order], area=area[order])
