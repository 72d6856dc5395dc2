"""Tests for tools/overlays.py: PNGs decode, have the crop's size and mark the spots."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tools.overlays import (
    LABELLED_SPOT_COLOR,
    REGION_PALETTE,
    draw_numbered_spots,
    draw_region_boxes,
)
from tools.regions import Box


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def grey_frame(rng: np.random.Generator, shape=(700, 1024)) -> np.ndarray:
    return rng.integers(20, 60, size=shape, dtype=np.uint8)


def changed_near(before: np.ndarray, after: np.ndarray, xy, radius: int = 12) -> bool:
    """Whether any pixel within ``radius`` of ``xy`` differs between two BGR images."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    window = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
    return bool(np.any(before[window] != after[window]))


def test_spots_are_drawn_on_the_full_frame(rng):
    frame = grey_frame(rng)
    points = np.array([[100.3, 200.7], [800.5, 50.2]])
    drawn = decode(draw_numbered_spots(frame, points, [0, 1]))
    plain = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    assert drawn.shape == (700, 1024, 3)
    for xy in points:
        assert changed_near(plain, drawn, xy)
    assert np.array_equal(drawn[600:, 300:700], plain[600:, 300:700])


def test_crop_has_the_box_size_and_shifts_the_spots(rng):
    frame = grey_frame(rng)
    box = Box(300, 200, 520, 360)
    points = np.array([[400.0, 250.0], [50.0, 50.0], [np.nan, 300.0]])
    drawn = decode(draw_numbered_spots(frame, points, [3, 4, 5], box=box))
    plain = cv2.cvtColor(frame[200:360, 300:520], cv2.COLOR_GRAY2BGR)
    assert drawn.shape == (box.height, box.width, 3)
    assert changed_near(plain, drawn, (100.0, 50.0))
    # Outside and NaN spots are skipped: far from the one drawn spot nothing changed.
    assert np.array_equal(drawn[100:, :], plain[100:, :])


def test_labelled_spots_are_green(rng):
    frame = grey_frame(rng, shape=(200, 300))
    points = np.array([[60.0, 100.0], [220.0, 100.0]])
    drawn = decode(draw_numbered_spots(frame, points, [0, 1], labels=["ear_L", ""]))
    green = np.all(drawn == LABELLED_SPOT_COLOR, axis=2)
    assert green[:, :150].any()
    assert not green[:, 170:].any()


def test_same_input_gives_identical_bytes(rng):
    frame = grey_frame(rng)
    points = rng.uniform(0.0, 700.0, size=(12, 2))
    box = Box(10, 20, 600, 500)
    first = draw_numbered_spots(frame, points, list(range(12)), box=box)
    second = draw_numbered_spots(frame.copy(), points.copy(), list(range(12)), box=box)
    assert first == second


def test_uint16_and_bgr_images_are_accepted(rng):
    frame16 = (grey_frame(rng, (120, 160)).astype(np.uint16) * 257)
    assert decode(draw_numbered_spots(frame16, np.array([[80.0, 60.0]]), [0])).shape == (
        120, 160, 3)
    bgr = np.dstack([grey_frame(rng, (120, 160))] * 3)
    assert decode(draw_numbered_spots(bgr, np.zeros((0, 2)), [])).shape == (120, 160, 3)


@pytest.mark.parametrize(
    ("points", "numbers", "labels", "match"),
    [
        (np.zeros((2, 3)), [0, 1], None, r"\(n_points, 2\).*\(2, 3\)"),
        (np.zeros((2, 2)), [0], None, "n_points=2"),
        (np.zeros((2, 2)), [0, 1], ["a"], "n_points=2"),
    ],
)
def test_mismatched_spot_inputs_are_rejected(rng, points, numbers, labels, match):
    with pytest.raises(ValueError, match=match):
        draw_numbered_spots(grey_frame(rng, (50, 50)), points, numbers, labels)


def test_region_boxes_are_outlined_in_palette_order(rng):
    frame = grey_frame(rng, (400, 600))
    boxes = {"ears": Box(50, 60, 200, 160), "tail": Box(300, 200, 550, 380)}
    drawn = decode(draw_region_boxes(frame, boxes))
    assert drawn.shape == (400, 600, 3)
    # Mid-edge pixels of each box carry its palette colour (away from the name text).
    assert tuple(drawn[110, 50]) == REGION_PALETTE[0]
    assert tuple(drawn[290, 549]) == REGION_PALETTE[1]
    plain = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(drawn[100:150, 80:180], plain[100:150, 80:180])


def test_region_box_colours_can_be_chosen_and_boxes_may_exceed_the_image(rng):
    frame = grey_frame(rng, (300, 400))
    boxes = {"paws": Box(-20, 100, 450, 200)}
    drawn = decode(draw_region_boxes(frame, boxes, colors={"paws": (10, 20, 250)}))
    assert tuple(drawn[150, 0]) == (10, 20, 250)
    assert tuple(drawn[150, 399]) == (10, 20, 250)
    assert draw_region_boxes(frame, boxes) == draw_region_boxes(frame.copy(), dict(boxes))
