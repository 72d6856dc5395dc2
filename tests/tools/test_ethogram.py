"""Tests of tools/ethogram.py: a deterministic PNG whose bars carry the legend colours."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tools.ethogram import (
    AXES_LEFT,
    AXES_RIGHT,
    DPI,
    FIGURE_WIDTH_IN,
    label_colors,
    render_ethogram,
)

SEGMENTS = [
    ("mouse1", 0, 150, "huddle"),
    ("mouse1", 150, 300, "chase"),
    ("mouse2", 0, 300, "rest"),
]


def decode(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image[:, :, ::-1]  # RGB


def rgb255(color: tuple[float, float, float]) -> np.ndarray:
    return np.round(np.array(color) * 255).astype(int)


def column_has_color(image: np.ndarray, x_fraction: float, color: np.ndarray) -> bool:
    column = image[:, int(x_fraction * image.shape[1])].astype(int)
    return bool((np.abs(column - color).max(axis=1) <= 2).any())


def test_png_is_deterministic_and_sized():
    png = render_ethogram(SEGMENTS, ["mouse1", "mouse2"], 300, 30.0, title="session")
    assert png == render_ethogram(SEGMENTS, ["mouse1", "mouse2"], 300, 30.0, title="session")
    assert png.startswith(b"\x89PNG")
    assert decode(png).shape[1] == round(FIGURE_WIDTH_IN * DPI)


def test_bars_have_their_legend_colour_at_their_time():
    image = decode(render_ethogram(SEGMENTS, ["mouse1", "mouse2"], 300, 30.0))
    colors = {
        label: rgb255(color) for label, color in label_colors(["rest", "huddle", "chase"]).items()
    }
    quarter = AXES_LEFT + 0.25 * (AXES_RIGHT - AXES_LEFT)
    three_quarters = AXES_LEFT + 0.75 * (AXES_RIGHT - AXES_LEFT)
    assert column_has_color(image, quarter, colors["huddle"])
    assert not column_has_color(image, quarter, colors["chase"])
    assert column_has_color(image, three_quarters, colors["chase"])
    assert column_has_color(image, three_quarters, colors["rest"])
    # The legend (right of the axes) shows every label's colour.
    legend = image[:, int(AXES_RIGHT * image.shape[1]) + 5 :].astype(int)
    for color in colors.values():
        assert (np.abs(legend - color).max(axis=-1) <= 2).any()


def test_colours_follow_sorted_label_order():
    first = label_colors(["walk", "chase"])
    second = label_colors(["chase", "walk", "chase"])
    assert first == second
    assert list(first) == ["chase", "walk"]
    assert len(set(label_colors([f"label_{i}" for i in range(25)]).values())) == 25


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([("mouse9", 0, 10, "rest")], "not in animals"),
        ([("mouse1", 5, 400, "rest")], "not inside"),
        ([("mouse1", 5, 5, "rest")], "not inside"),
    ],
)
def test_rejects_bad_segments(segments, message):
    with pytest.raises(ValueError, match=message):
        render_ethogram(segments, ["mouse1"], 300, 30.0)
