"""PNG overlays for the model path: numbered candidate spots and named region boxes.

The vision-language model sees these images in its prompts and answers with
the numbers and names drawn on them, so every mark must stay legible after
the provider downsizes the image: circle radius, font size and line width
grow with the image. Images are ``(H, W)`` grey or ``(H, W, 3)`` BGR (OpenCV's
order); coordinates are full-image pixels (FORMATS.md). Outputs are PNG bytes,
identical for identical inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tools.regions import Box, crop

# BGR colours. Spots: yellow for candidates, green for verified keypoints.
SPOT_COLOR = (0, 255, 255)
LABELLED_SPOT_COLOR = (0, 255, 0)
OUTLINE_COLOR = (0, 0, 0)
# Region boxes take these in the order the regions are given.
REGION_PALETTE = (
    (0, 165, 255),  # orange
    (255, 128, 0),  # blue
    (0, 200, 0),  # green
    (255, 0, 255),  # magenta
    (0, 255, 255),  # yellow
    (255, 255, 0),  # cyan
    (60, 60, 255),  # red
    (200, 200, 200),  # grey
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Sub-pixel drawing: OpenCV takes coordinates times 2**SHIFT_BITS.
SHIFT_BITS = 4


def draw_numbered_spots(
    image: np.ndarray,
    points_xy: np.ndarray,
    numbers: Sequence[int],
    labels: Sequence[str] | None = None,
    box: Box | None = None,
) -> bytes:
    """PNG of ``image`` (cropped to ``box``) with a circle and a number at each spot.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, 3)`` BGR frame; a non-uint8 crop is scaled so
        that its maximum becomes 255.
    points_xy : np.ndarray
        ``(n_points, 2)`` spot positions in full-image pixels. NaN points and
        points outside the crop are not drawn.
    numbers : Sequence[int]
        ``n_points`` numbers written beside the spots (e.g. centroid indices).
    labels : Sequence[str], optional
        ``n_points`` keypoint names written after the number for verified
        spots; an empty string marks an unverified spot. Labelled spots are
        green, the others yellow.
    box : Box, optional
        Crop to draw on; points are shifted into it. Must fit the image.

    Returns
    -------
    bytes
        PNG of the crop's size (the full image's without ``box``).
    """
    points_xy = np.asarray(points_xy, dtype=np.float64)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2:
        raise ValueError(f"points_xy must have shape (n_points, 2), got {points_xy.shape}")
    n_points = points_xy.shape[0]
    if len(numbers) != n_points or (labels is not None and len(labels) != n_points):
        raise ValueError(
            f"numbers and labels must have n_points={n_points} entries, got {len(numbers)} and "
            f"{None if labels is None else len(labels)}"
        )
    if box is not None:
        image = crop(image, box)
        points_xy = box.to_crop(points_xy)
    canvas = _bgr8(image)
    height, width = canvas.shape[:2]
    size = _mark_size(width, height)
    inside = Box(0, 0, width, height).contains(points_xy)
    for index in np.flatnonzero(inside):
        label = labels[index] if labels is not None else ""
        color = LABELLED_SPOT_COLOR if label else SPOT_COLOR
        text = f"{numbers[index]} {label}" if label else f"{numbers[index]}"
        _draw_spot(canvas, points_xy[index], text, color, size)
    return _png(canvas)


def draw_region_boxes(
    image: np.ndarray,
    boxes: Mapping[str, Box],
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> bytes:
    """PNG of ``image`` with each region's box outlined and named.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, 3)`` BGR frame.
    boxes : Mapping[str, Box]
        Region name -> box in full-image pixels (clipped to the image when drawn).
    colors : Mapping[str, tuple[int, int, int]], optional
        BGR colour per region name; a region without one takes the next
        colour of REGION_PALETTE in the order of ``boxes``.

    Returns
    -------
    bytes
        PNG of the image's size.
    """
    canvas = _bgr8(image)
    height, width = canvas.shape[:2]
    size = _mark_size(width, height)
    for order, (name, box) in enumerate(boxes.items()):
        color = (colors or {}).get(name, REGION_PALETTE[order % len(REGION_PALETTE)])
        top_left = (max(box.x0, 0), max(box.y0, 0))
        bottom_right = (min(box.x1, width) - 1, min(box.y1, height) - 1)
        cv2.rectangle(canvas, top_left, bottom_right, color, size.line, cv2.LINE_8)
        _put_text(canvas, name, (top_left[0], top_left[1] - size.line - 2), color, size)
    return _png(canvas)


@dataclass(frozen=True)
class _MarkSize:
    """Circle radius, font scale and line widths for one image."""

    radius: int
    font_scale: float
    line: int

    @property
    def outline(self) -> int:
        return self.line + 2


def _mark_size(width: int, height: int) -> _MarkSize:
    # Sized for a 1024-px frame (radius 6, font 0.8) and scaled with the image, with
    # floors that keep small crops readable after a model resizes them.
    scale = max(width, height) / 1024
    return _MarkSize(
        radius=max(4, round(6 * scale)),
        font_scale=max(0.5, 0.8 * scale),
        line=max(1, round(2 * scale)),
    )


def _draw_spot(
    canvas: np.ndarray, xy: np.ndarray, text: str, color: tuple[int, int, int], size: _MarkSize
) -> None:
    centre = tuple(int(v) for v in np.rint(xy * 2**SHIFT_BITS))
    radius = size.radius * 2**SHIFT_BITS
    cv2.circle(canvas, centre, radius, OUTLINE_COLOR, size.outline, cv2.LINE_AA, SHIFT_BITS)
    cv2.circle(canvas, centre, radius, color, size.line, cv2.LINE_AA, SHIFT_BITS)
    anchor = (int(round(xy[0])) + size.radius + 2, int(round(xy[1])) - size.radius - 2)
    _put_text(canvas, text, anchor, color, size)


def _put_text(
    canvas: np.ndarray, text: str, anchor: tuple[int, int], color: tuple[int, int, int],
    size: _MarkSize,
) -> None:
    """Write ``text`` with its baseline-left at ``anchor``, moved inside the canvas, outlined."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, size.font_scale, size.line)
    height, width = canvas.shape[:2]
    x = int(np.clip(anchor[0], 0, max(0, width - text_width - 1)))
    y = int(np.clip(anchor[1], text_height + 1, max(text_height + 1, height - baseline - 1)))
    cv2.putText(canvas, text, (x, y), FONT, size.font_scale, OUTLINE_COLOR, size.outline,
                cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), FONT, size.font_scale, color, size.line, cv2.LINE_AA)


def _bgr8(image: np.ndarray) -> np.ndarray:
    """A new uint8 BGR ``(H, W, 3)`` copy of a grey or BGR image."""
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        finite = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = max(float(finite.max()), 1e-12)
        image = np.clip(np.rint(finite * (255.0 / peak)), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image.copy()


def _png(canvas: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay as PNG")
    return encoded.tobytes()
