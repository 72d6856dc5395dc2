"""Tests for tools/blob_shape.py: drawn bars and arcs with known axis, elongation and bend."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tools.blob_shape import blob_shape, kmeans_labels


def _arc_pixels(total_turn: float, axis_angle: float, half_length: float = 24.0, width: int = 9) -> np.ndarray:
    """Pixels ``(n, 2)`` of a thick circular arc whose chord lies along ``axis_angle``.

    The arc turns by ``total_turn`` rad from end to end; positive bulges to
    ``-v`` (its ends curl towards ``+v``, the chord direction turned by +90 degrees).
    """
    s = np.linspace(-half_length, half_length, 80)
    curvature = total_turn / (2 * half_length)
    u = np.sin(curvature * s) / curvature if curvature else s
    v = (1 - np.cos(curvature * s)) / curvature if curvature else 0 * s
    along = np.array([np.cos(axis_angle), np.sin(axis_angle)])
    across = np.array([-along[1], along[0]])
    path = 100 + np.outer(u, along) + np.outer(v, across)
    image = np.zeros((200, 200), dtype=np.uint8)
    cv2.polylines(image, [np.round(path * 16).astype(np.int32)], False, 255, width, cv2.LINE_8, 4)
    ys, xs = np.nonzero(image)
    return np.column_stack([xs, ys]).astype(np.float64)


@pytest.mark.parametrize("axis_angle", [0.0, 0.7, -1.2])
def test_straight_bar_has_no_bend(axis_angle):
    shape = blob_shape(_arc_pixels(0.0, axis_angle))
    assert abs(shape.bend) < np.radians(3)
    assert abs(np.angle(np.exp(2j * (shape.angle - axis_angle)))) < 0.05  # axes compared mod pi
    assert shape.elongation > 3


@pytest.mark.parametrize("axis_angle", [0.0, 0.7, 2.0])
def test_arc_bend_is_half_its_turn_and_signed(axis_angle):
    """Front and rear halves of a circular arc turning by theta differ by theta / 2."""
    bends = [blob_shape(_arc_pixels(turn, axis_angle)).bend for turn in (1.2, -1.2)]
    flipped = np.cos(blob_shape(_arc_pixels(1.2, axis_angle)).angle - axis_angle) < 0
    measured = -bends[0] if flipped else bends[0]
    assert measured == pytest.approx(0.6, rel=0.3)
    assert bends[1] == pytest.approx(-bends[0], rel=0.1)


def test_order_of_pixels_does_not_matter(rng):
    points = _arc_pixels(0.9, 0.3)
    shuffled = points[rng.permutation(len(points))]
    a, b = blob_shape(points), blob_shape(shuffled)
    np.testing.assert_allclose([a.angle, a.elongation, a.bend], [b.angle, b.elongation, b.bend], atol=1e-9)


def test_tiny_blob_has_no_shape():
    shape = blob_shape(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert np.isnan(shape.angle) and np.isnan(shape.bend)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        blob_shape(np.zeros((5, 3)))


def test_kmeans_keeps_seed_order():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    labels = kmeans_labels(points, np.array([[12.0, 0.0], [-1.0, 0.0]]), 5)
    np.testing.assert_array_equal(labels, [1, 1, 0, 0])
