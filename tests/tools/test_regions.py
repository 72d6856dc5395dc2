"""Tests for tools/regions.py: a synthetic ellipse animal on a textured, noisy background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tools.regions import (
    Box,
    MaskParams,
    animal_mask,
    box_of_points,
    crop,
    estimate_background,
    pad_box,
    tight_box,
)

SHAPE = (240, 320)


def textured_background(rng: np.random.Generator) -> np.ndarray:
    """Bedding-like texture: smoothed noise around grey 110, float32 ``(H, W)``."""
    texture = cv2.GaussianBlur(rng.normal(0.0, 25.0, SHAPE).astype(np.float32), (0, 0), 1.5)
    return 110.0 + texture


def ellipse_mask(centre=(170, 120), axes=(60, 25), angle=30.0) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, color=1, thickness=cv2.FILLED)
    return mask.astype(bool)


def frame_with_animal(
    rng: np.random.Generator, background: np.ndarray, animal: np.ndarray, grey: float = 40.0
) -> np.ndarray:
    frame = np.where(animal, grey, background) + rng.normal(0.0, 3.0, SHAPE)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def iou(first: np.ndarray, second: np.ndarray) -> float:
    return float((first & second).sum() / (first | second).sum())


def test_estimate_background_removes_a_moving_animal(rng):
    background = textured_background(rng)
    # Seven positions 45 px apart: each pixel shows the animal in at most one frame.
    frames = np.stack([
        frame_with_animal(rng, background, ellipse_mask(centre=(30 + 45 * i, 120), axes=(20, 10)))
        for i in range(7)
    ])
    estimate = estimate_background(frames)
    assert estimate.shape == SHAPE and estimate.dtype == np.float32
    assert np.abs(estimate - background).max() < 15.0


def test_mask_matches_the_animal_on_textured_background(rng):
    background = textured_background(rng)
    animal = ellipse_mask()
    frame = frame_with_animal(rng, background, animal)
    mask = animal_mask(frame, background)
    assert mask.shape == SHAPE and mask.dtype == bool
    assert iou(mask, animal) > 0.9


def test_mask_is_one_region_without_holes(rng):
    background = textured_background(rng)
    animal = ellipse_mask()
    # Paint a background-coloured patch inside and a small blob far away.
    frame = frame_with_animal(rng, background, animal).astype(np.float64)
    frame[115:125, 165:175] = background[115:125, 165:175]
    frame[20:28, 20:28] = 0.0
    mask = animal_mask(frame.astype(np.uint8), background)
    n_labels, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    assert n_labels == 2
    assert mask[120, 170] and not mask[24, 24]


def test_mask_accepts_bgr_frames(rng):
    background = textured_background(rng)
    animal = ellipse_mask()
    frame = frame_with_animal(rng, background, animal)
    bgr = np.repeat(frame[:, :, None], 3, axis=2)
    bgr_background = np.repeat(background[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(animal_mask(bgr, bgr_background), animal_mask(frame, background))


def test_mask_without_background_on_a_uniform_scene(rng):
    animal = ellipse_mask()
    frame = frame_with_animal(rng, np.full(SHAPE, 180.0), animal)
    assert iou(animal_mask(frame), animal) > 0.85


def test_mask_is_empty_without_an_animal(rng):
    background = textured_background(rng)
    frame = frame_with_animal(rng, background, np.zeros(SHAPE, bool))
    assert not animal_mask(frame, background).any()


def test_mask_is_empty_when_the_animal_is_smaller_than_min_area(rng):
    background = textured_background(rng)
    frame = frame_with_animal(rng, background, ellipse_mask(axes=(6, 4)))
    assert not animal_mask(frame, background, MaskParams(min_area_px=200)).any()


def test_tight_box_is_inclusive_exclusive():
    mask = np.zeros(SHAPE, bool)
    mask[10:21, 30:51] = True
    mask[15, 60] = True
    assert tight_box(mask) == Box(30, 10, 61, 21)
    assert crop(mask, tight_box(mask)).shape == (11, 31)


def test_tight_box_of_empty_mask_is_none():
    assert tight_box(np.zeros(SHAPE, bool)) is None


def test_tight_box_of_the_animal_contains_its_mask(rng):
    background = textured_background(rng)
    frame = frame_with_animal(rng, background, ellipse_mask())
    mask = animal_mask(frame, background)
    box = tight_box(mask)
    assert crop(mask, box).sum() == mask.sum()
    rows, cols = np.nonzero(mask)
    assert box.contains(np.column_stack([cols, rows]).astype(float)).all()


def test_box_of_points_holds_each_point_in_one_of_its_pixels():
    points = np.array([[10.4, 20.6], [30.5, 5.2], [np.nan, 1.0]])
    box = box_of_points(points)
    assert box == Box(10, 5, 32, 22)
    assert box.contains(points[:2]).all()
    assert box_of_points(np.full((2, 2), np.nan)) is None


def test_contains_uses_pixel_edges_and_rejects_nan():
    box = Box(10, 20, 30, 40)
    points = np.array([[9.5, 20.0], [9.49, 20.0], [29.49, 39.49], [29.5, 30.0], [np.nan, 30.0]])
    np.testing.assert_array_equal(box.contains(points), [True, False, True, False, False])
    # One point at a time, as the tracker asks: the same answers.
    assert [box.holds(x, y) for x, y in points] == box.contains(points).tolist()


def test_crop_coordinates_round_trip(rng):
    box = Box(12, 7, 50, 40)
    points = rng.uniform(0.0, 60.0, size=(5, 2))
    np.testing.assert_allclose(box.from_crop(box.to_crop(points)), points)
    image = np.arange(60 * 80).reshape(60, 80)
    assert crop(image, box)[3, 4] == image[7 + 3, 12 + 4]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        # width 200 -> 16 + 10 = 26 px; height 60 -> 16 + 3 = 19 px.
        (Box(100, 200, 300, 260), Box(74, 181, 326, 279)),
        # width 110 -> 21.5 px, height 30 -> 17.5 px: rounded outward.
        (Box(100, 100, 210, 130), Box(78, 82, 232, 148)),
    ],
)
def test_pad_box_adds_16_px_plus_5_percent_per_side(box, expected):
    assert pad_box(box, (1024, 700)) == expected


def test_pad_box_clips_at_the_image_border():
    assert pad_box(Box(5, 3, 1020, 690), (1024, 700)) == Box(0, 0, 1024, 700)
    assert pad_box(Box(0, 680, 40, 700), (1024, 700)) == Box(0, 663, 58, 700)


def test_box_width_height_and_validation():
    box = Box(3, 4, 13, 24)
    assert (box.width, box.height) == (10, 20)
    with pytest.raises(ValueError, match="x0 < x1"):
        Box(5, 0, 5, 10)


def test_crop_rejects_a_box_outside_the_image():
    with pytest.raises(ValueError, match="does not fit"):
        crop(np.zeros((10, 10)), Box(-1, 0, 5, 5))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: estimate_background(np.zeros((4, 5))), r"\(n_frames, H, W\).*\(4, 5\)"),
        (lambda: animal_mask(np.zeros((4, 5, 2))), r"\(H, W\).*\(4, 5, 2\)"),
        (lambda: animal_mask(np.zeros((4, 5)), np.zeros((5, 4))), r"\(4, 5\).*\(5, 4\)"),
        (lambda: tight_box(np.zeros((2, 3, 4))), r"\(H, W\).*\(2, 3, 4\)"),
        (lambda: box_of_points(np.zeros((3, 3))), r"\(n, 2\).*\(3, 3\)"),
    ],
)
def test_bad_shapes_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
