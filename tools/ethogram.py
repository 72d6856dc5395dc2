"""Ethogram: one timeline row per animal, a coloured bar per labelled segment.

Rendering is deterministic: fixed size and dpi, colours assigned in sorted
label order, and no timestamp or software tag in the PNG metadata, so the
same segments give byte-identical files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

Segment = tuple[str, int, int, str]

DPI = 100
FIGURE_WIDTH_IN = 12.0
ROW_HEIGHT_IN = 0.55
MARGIN_BOTTOM_IN, MARGIN_TOP_IN = 0.6, 0.45
LEGEND_ROW_IN = 0.2
# The axes span this share of the figure width; the legend sits to the right.
AXES_LEFT, AXES_RIGHT = 0.10, 0.80
_TAB10 = tuple(to_rgb(f"C{index}") for index in range(10))


def label_colors(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Fixed RGB colour in ``[0, 1]`` per label, assigned in sorted label order.

    Up to 10 labels use matplotlib's tab10, up to 20 tab20, beyond that evenly
    spaced hues of ``turbo``.
    """
    ordered = sorted(set(labels))
    if len(ordered) <= 10:
        palette = list(_TAB10)
    elif len(ordered) <= 20:
        palette = [tuple(colormaps["tab20"](index)[:3]) for index in range(20)]
    else:
        palette = [tuple(rgba[:3]) for rgba in colormaps["turbo"](np.linspace(0, 1, len(ordered)))]
    return {label: palette[index] for index, label in enumerate(ordered)}


def render_ethogram(
    segments: Sequence[Segment],
    animals: Sequence[str],
    n_frames: int,
    fps: float,
    title: str | None = None,
) -> bytes:
    """Render labelled segments as a PNG ethogram.

    Parameters
    ----------
    segments : Sequence[tuple[str, int, int, str]]
        ``(animal, start_frame, end_frame, label)``, ``end_frame`` exclusive.
    animals : Sequence[str]
        Row order, top to bottom; every segment's animal must be listed.
    n_frames : int
        Length of the timeline; segments must lie in ``[0, n_frames)``.
    fps : float
        Frames per second of the time axis (seconds).
    title : str, optional
        Figure title.

    Returns
    -------
    bytes
        The PNG file content.
    """
    _check_segments(segments, animals, n_frames, fps)
    colors = label_colors([label for *_, label in segments])
    height_in = MARGIN_BOTTOM_IN + MARGIN_TOP_IN + ROW_HEIGHT_IN * len(animals)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(
        left=AXES_LEFT,
        right=AXES_RIGHT,
        bottom=MARGIN_BOTTOM_IN / height_in,
        top=1 - MARGIN_TOP_IN / height_in,
    )
    axes = figure.add_subplot()
    rows = {animal: row for row, animal in enumerate(animals)}
    for (animal, label), bars in sorted(_bars_by_row_and_label(segments, fps).items()):
        axes.broken_barh(bars, (rows[animal] - 0.4, 0.8), facecolors=colors[label], linewidth=0)
    axes.set_xlim(0, n_frames / fps)
    axes.set_ylim(len(animals) - 0.5, -0.5)
    axes.set_yticks(range(len(animals)), list(animals))
    axes.set_xlabel("time (s)")
    if title:
        axes.set_title(title)
    handles = [Patch(facecolor=color, label=label) for label, color in colors.items()]
    if handles:
        rows_that_fit = max(1, int(height_in / LEGEND_ROW_IN))
        axes.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize="small",
            ncols=-(-len(handles) // rows_that_fit),
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _bars_by_row_and_label(
    segments: Sequence[Segment], fps: float
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """``(animal, label)`` -> ``[(start_s, duration_s), ...]`` for ``broken_barh``."""
    bars: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for animal, start, end, label in segments:
        bars.setdefault((animal, label), []).append((start / fps, (end - start) / fps))
    return bars


def _check_segments(
    segments: Sequence[Segment], animals: Sequence[str], n_frames: int, fps: float
) -> None:
    if fps <= 0 or n_frames <= 0:
        raise ValueError(f"need fps > 0 and n_frames > 0, got fps={fps}, n_frames={n_frames}")
    known = set(animals)
    for animal, start, end, label in segments:
        if animal not in known:
            raise ValueError(f"segment animal {animal!r} is not in animals {list(animals)}")
        if not 0 <= start < end <= n_frames:
            raise ValueError(
                f"segment ({animal}, {start}, {end}, {label}) is not inside [0, {n_frames})"
            )
