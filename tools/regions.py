"""The animal's mask and box in a reflectance frame, and the method's padded crop.

Boxes are integer pixel rectangles ``(x0, y0, x1, y1)``, inclusive-exclusive:
they hold the pixels with ``x0 <= col < x1`` and ``y0 <= row < y1``, so
``image[y0:y1, x0:x1]`` is the crop. Pixel coordinates follow FORMATS.md (origin
at the top-left pixel centre), so pixel ``col`` covers ``[col - 0.5, col + 0.5)``
and a point belongs to the box when it falls inside one of its pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

# The method's crop padding: a fixed margin plus a fraction of the box's size, per side.
PAD_FIXED_PX = 16
PAD_FRACTION = 0.05
# A robust sigma from the median absolute deviation of Gaussian noise.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Box:
    """Integer pixel rectangle ``[x0, x1) x [y0, y1)`` in full-image pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"box must have x0 < x1 and y0 < y1, got {self}")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each of ``points (n, 2)`` lies in one of the box's pixels -> ``(n,)`` bool.

        NaN points are outside.
        """
        points = _checked_points(points)
        x, y = points[:, 0], points[:, 1]
        return (
            (x >= self.x0 - 0.5) & (x < self.x1 - 0.5) & (y >= self.y0 - 0.5) & (y < self.y1 - 0.5)
        )

    def holds(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` lies in one of the box's pixels (:meth:`contains` of one)."""
        return self.x0 - 0.5 <= x < self.x1 - 0.5 and self.y0 - 0.5 <= y < self.y1 - 0.5

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Full-image ``points (n, 2)`` -> coordinates in the crop ``image[y0:y1, x0:x1]``."""
        return _checked_points(points) - np.array([self.x0, self.y0], dtype=np.float64)

    def from_crop(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates ``points (n, 2)`` -> full-image coordinates (inverse of to_crop)."""
        return _checked_points(points) + np.array([self.x0, self.y0], dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class MaskParams:
    """Configuration of :func:`animal_mask`; intensities in the frame's units."""

    blur_sigma_px: float = field(
        default=1.5,
        metadata={"description": "Gaussian sigma applied to the difference image before "
                  "thresholding (suppresses texture and noise); against a low threshold the "
                  "mask's edge moves outward by up to about this much."},
    )
    threshold_k_sigma: float = field(
        default=5.0,
        metadata={"description": "A pixel is animal when its smoothed difference from the "
                  "background exceeds k robust noise sigmas (1.4826 * MAD)."},
    )
    threshold_floor: float = field(
        default=15.0,
        metadata={"description": "Lowest difference threshold, for clean frames whose MAD "
                  "is ~0."},
    )
    open_radius_px: int = field(
        default=2,
        metadata={"description": "Morphological opening radius: removes specks and thin "
                  "texture edges."},
    )
    close_radius_px: int = field(
        default=5,
        metadata={"description": "Morphological closing radius: bridges gaps where the "
                  "animal matches the background."},
    )
    min_area_px: int = field(
        default=200,
        metadata={"description": "A largest component smaller than this is no animal: the "
                  "mask is then empty."},
    )


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """Per-pixel median of ``frames (n_frames, H, W)`` -> ``(H, W)`` float32 background.

    A moving animal covers each pixel in a minority of frames, so the median
    is the empty scene. Colour stacks ``(n_frames, H, W, 3)`` give ``(H, W, 3)``.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"frames must have shape (n_frames, H, W) with n_frames >= 1, "
                         f"got {frames.shape}")
    return np.median(frames, axis=0).astype(np.float32)


def animal_mask(
    reflectance: np.ndarray,
    background: np.ndarray | None = None,
    params: MaskParams = MaskParams(),
) -> np.ndarray:
    """Boolean mask ``(H, W)`` of the animal in one reflectance frame.

    This is the contract that a learned segmentation model may later fill:
    take one reflectance frame ``(H, W)`` or ``(H, W, 3)`` (BGR) and an
    optional background of the same shape, and return a ``(H, W)`` bool mask
    that is True on the animal, holds a single connected, hole-free region,
    and is all False when no animal is found. Callers only rely on that.

    Parameters
    ----------
    reflectance : np.ndarray
        ``(H, W)`` or ``(H, W, 3)`` frame, any numeric dtype.
    background : np.ndarray, optional
        Same shape as ``reflectance``, e.g. from :func:`estimate_background`.
        Without it the background is the frame's median grey level, which only
        works when the animal contrasts with a uniform scene.
    params : MaskParams
        Threshold and morphology; see its field descriptions.

    Returns
    -------
    np.ndarray
        ``(H, W)`` bool: the largest connected component of the thresholded,
        cleaned difference, with its holes filled.
    """
    gray = _gray(reflectance, "reflectance")
    if background is None:
        reference: np.ndarray | float = float(np.median(gray))
    else:
        if np.shape(background) != np.shape(reflectance):
            raise ValueError(f"background must have the reflectance's shape "
                             f"{np.shape(reflectance)}, got {np.shape(background)}")
        reference = _gray(background, "background")
    difference = np.abs(gray - reference)
    if params.blur_sigma_px > 0:
        difference = cv2.GaussianBlur(difference, (0, 0), params.blur_sigma_px)
    # Every 4th row and column: the median of ~1/16 of the pixels is as good and 16x cheaper.
    sample = difference[::4, ::4]
    level = float(np.median(sample))
    noise_sigma = MAD_TO_SIGMA * float(np.median(np.abs(sample - level)))
    threshold = level + max(params.threshold_floor, params.threshold_k_sigma * noise_sigma)
    foreground = (difference > threshold).astype(np.uint8)
    foreground = _morphology(foreground, cv2.MORPH_OPEN, params.open_radius_px)
    foreground = _morphology(foreground, cv2.MORPH_CLOSE, params.close_radius_px)
    return _largest_filled_region(foreground, params.min_area_px)


def tight_box(mask: np.ndarray) -> Box | None:
    """Smallest box holding every True pixel of ``mask (H, W)``; None for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_of_points(points: np.ndarray) -> Box | None:
    """Smallest box whose pixels hold every finite point of ``points (n, 2)``; None if none."""
    return box_of_xy(_checked_points(points).tolist())


def box_of_xy(points: Iterable[Sequence[float]]) -> Box | None:
    """:func:`box_of_points` of ``(x, y)`` pairs, in plain Python.

    The tracker boxes a region's 1-4 points thousands of times per run, where
    numpy's per-call overhead is most of the cost; the floats are the same.
    """
    finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        return None
    xs, ys = zip(*finite, strict=True)
    # Pixel k covers [k - 0.5, k + 0.5): the pixel of a coordinate is floor(c + 0.5).
    return Box(math.floor(min(xs) + 0.5), math.floor(min(ys) + 0.5),
               math.floor(max(xs) + 0.5) + 1, math.floor(max(ys) + 0.5) + 1)


def pad_box(box: Box, image_size: tuple[int, int]) -> Box:
    """The method's crop: ``box`` grown by 16 px + 5% of its width (height) per side.

    Fractional margins round outward (the crop never loses a pixel), and the
    result is clipped to the image ``image_size = (width, height)``.
    """
    width, height = image_size
    pad_x = PAD_FIXED_PX + PAD_FRACTION * box.width
    pad_y = PAD_FIXED_PX + PAD_FRACTION * box.height
    return Box(
        max(0, math.floor(box.x0 - pad_x)),
        max(0, math.floor(box.y0 - pad_y)),
        min(width, math.ceil(box.x1 + pad_x)),
        min(height, math.ceil(box.y1 + pad_y)),
    )


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """View ``image[y0:y1, x0:x1]`` of an ``(H, W)`` or ``(H, W, C)`` image; box must fit."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    height, width = image.shape[:2]
    if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
        raise ValueError(f"box {box} does not fit the image of (width, height) "
                         f"{(width, height)}")
    return image[box.y0:box.y1, box.x0:box.x1]


def _checked_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {points.shape}")
    return points


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    """``(H, W)`` or BGR ``(H, W, 3)`` -> ``(H, W)`` float32."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image.astype(np.float32), cv2.COLOR_BGR2GRAY)
    if image.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 3), got {image.shape}")
    return image.astype(np.float32)


def _morphology(mask: np.ndarray, operation: int, radius_px: int) -> np.ndarray:
    if radius_px <= 0:
        return mask
    size = 2 * radius_px + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.morphologyEx(mask, operation, kernel)


def _largest_filled_region(foreground: np.ndarray, min_area_px: int) -> np.ndarray:
    """The largest 8-connected component of ``foreground (H, W)`` uint8, holes filled."""
    n_labels, labels = cv2.connectedComponents(foreground, connectivity=8, ltype=cv2.CV_32S)
    if n_labels < 2:
        return np.zeros(foreground.shape, dtype=bool)
    areas = np.bincount(labels.ravel(), minlength=n_labels)
    areas[0] = 0
    largest = int(np.argmax(areas))
    if areas[largest] < min_area_px:
        return np.zeros(foreground.shape, dtype=bool)
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, color=1, thickness=cv2.FILLED)
    return filled.astype(bool)
