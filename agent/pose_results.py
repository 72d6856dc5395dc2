"""Write and read pose results (FORMATS.md section 2).

``keypoints_3d.csv`` follows Anipose's pose-3d layout, so the file loads in
Anipose's tools and in ``movement`` (``load_poses.from_anipose_file``);
``keypoints_2d.csv`` and ``qc.csv`` are long tables. Every writer renders
the whole file in memory with fixed formatting (4 decimals for coordinates,
errors and scores; empty cells for missing values; rows ordered by frame,
then camera and keypoint in manifest order) and writes it atomically, so the
same arrays always give the same bytes. Readers validate the whole file and
raise one :class:`~agent.errors.InputError` naming it.

The CSV helpers at the end (:func:`read_csv_table`, :func:`parse_numbers`,
:func:`lookup_names`, :func:`require_columns`) are shared with :mod:`agent.recording`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agent.atomic import write_text_atomic
from agent.errors import InputError

KEYPOINTS_2D_COLUMNS = ("frame", "camera", "keypoint", "x", "y", "centroid", "error_px", "stage")
QC_COLUMNS = ("frame", "keypoint", "error_px", "ncams", "flagged", "reason")
_SUFFIXES_3D = ("x", "y", "z", "error", "ncams", "score")
_FLOAT_FORMAT = "%.4f"


@dataclass(frozen=True, eq=False)
class Keypoints3D:
    """``keypoints_3d.csv``: ``points_3d (n_frames, n_keypoints, 3)``, NaN where untriangulated.

    ``error_px``, ``score`` are ``(n_frames, n_keypoints)`` floats (NaN where
    missing) and ``ncams`` the matching int array; ``frames (n_frames,)``.
    """

    keypoints: list[str]
    frames: np.ndarray
    points_3d: np.ndarray
    error_px: np.ndarray
    ncams: np.ndarray
    score: np.ndarray


@dataclass(frozen=True, eq=False)
class Keypoints2D:
    """``keypoints_2d.csv`` as arrays over ``(n_frames, n_cameras, n_keypoints)``.

    ``points_2d (..., 2)`` is NaN where unassigned, ``centroid`` is -1 there,
    ``error_px`` NaN and ``stage`` the empty string.
    """

    cameras: list[str]
    keypoints: list[str]
    frames: np.ndarray
    points_2d: np.ndarray
    centroid: np.ndarray
    error_px: np.ndarray
    stage: np.ndarray


@dataclass(frozen=True, eq=False)
class QualityControl:
    """``qc.csv`` as arrays over ``(n_frames, n_keypoints)``; rows absent from the file are unflagged."""

    keypoints: list[str]
    frames: np.ndarray
    error_px: np.ndarray
    ncams: np.ndarray
    flagged: np.ndarray
    reason: np.ndarray


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    return array


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 1:
        raise ValueError(f"frames must have shape (n_frames,), got {frames.shape}")
    if frames.size and (frames.min() < 0 or np.any(np.diff(frames) <= 0)):
        raise ValueError("frames must be non-negative and strictly increasing")
    return frames.astype(np.int64)


def _write_table(path: str | Path, columns: dict[str, np.ndarray],
                 float_format: str = _FLOAT_FORMAT) -> Path:
    """Write ``columns`` as a CSV table, the bytes pandas' ``to_csv(index=False)`` wrote.

    Cells are rendered a column at a time (:func:`_cells`) and rows written by
    the csv module with pandas' settings (minimal quoting, ``\\n`` line ends):
    pandas formatted every cell through a call of its own (the three files of
    a 500-frame, 6-camera run: 97 ms, now 60). The same bytes for float, int,
    bool and string columns; an object column holding None or NaN would
    render them as text (pandas wrote an empty cell), so callers pass strings.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*[_cells(values, float_format) for values in columns.values()],
                         strict=True))
    return write_text_atomic(path, buffer.getvalue())


def _cells(values: np.ndarray, float_format: str) -> list[str]:
    """One column's cells: floats in ``float_format`` and NaN empty, anything else as ``str``."""
    if values.dtype.kind == "f":
        return ["" if value != value else float_format % value for value in values.tolist()]
    return [str(value) for value in values.tolist()]


def write_keypoints_3d(
    path: str | Path,
    keypoints: Sequence[str],
    frames: np.ndarray,
    points_3d: np.ndarray,
    error_px: np.ndarray,
    ncams: np.ndarray,
    score: np.ndarray,
    decimals: int = 4,
) -> Path:
    """Write ``keypoints_3d.csv`` in Anipose's pose-3d layout.

    Parameters
    ----------
    path
        Output file, written atomically.
    keypoints
        Keypoint names in manifest order, ``n_keypoints`` of them.
    frames
        ``(n_frames,)`` strictly increasing frame indices (the ``fnum`` column).
    points_3d
        ``(n_frames, n_keypoints, 3)``; a point with any NaN coordinate is
        untriangulated and written with empty x, y, z, error, score and ncams 0.
    error_px, ncams, score
        ``(n_frames, n_keypoints)`` mean reprojection error (pixels), cameras
        used, and confidence in [0, 1].
    decimals
        Digits after the point (4 for millimetres: 0.1 um; more for metres).
    """
    frames = _check_frames(frames)
    shape = (frames.size, len(keypoints))
    points_3d = _check_shape("points_3d", points_3d, (*shape, 3)).astype(np.float64)
    error_px = _check_shape("error_px", error_px, shape).astype(np.float64)
    ncams = _check_shape("ncams", ncams, shape).astype(np.int64)
    score = _check_shape("score", score, shape).astype(np.float64)
    missing = ~np.all(np.isfinite(points_3d), axis=-1)
    points_3d = np.where(missing[..., None], np.nan, points_3d)
    error_px = np.where(missing, np.nan, error_px)
    score = np.where(missing, np.nan, score)
    ncams = np.where(missing, 0, ncams)
    columns: dict[str, np.ndarray] = {}
    for k, name in enumerate(keypoints):
        for axis, suffix in enumerate("xyz"):
            columns[f"{name}_{suffix}"] = points_3d[:, k, axis]
        columns[f"{name}_error"] = error_px[:, k]
        columns[f"{name}_ncams"] = ncams[:, k]
        columns[f"{name}_score"] = score[:, k]
    # Anipose appends the alignment transform; without alignment it is the identity.
    for i in range(3):
        for j in range(3):
            columns[f"M_{i}{j}"] = np.full(frames.size, float(i == j))
    for i in range(3):
        columns[f"center_{i}"] = np.zeros(frames.size)
    columns["fnum"] = frames
    return _write_table(path, columns, f"%.{int(decimals)}f")


def write_keypoints_2d(
    path: str | Path,
    cameras: Sequence[str],
    keypoints: Sequence[str],
    frames: np.ndarray,
    points_2d: np.ndarray,
    centroid: np.ndarray,
    error_px: np.ndarray,
    stage: np.ndarray,
) -> Path:
    """Write ``keypoints_2d.csv``: one row per assigned label.

    Parameters
    ----------
    frames
        ``(n_frames,)`` strictly increasing frame indices.
    points_2d
        ``(n_frames, n_cameras, n_keypoints, 2)`` pixels; a label is assigned
        where x and y are finite, and only assigned labels get a row.
    centroid
        ``(n_frames, n_cameras, n_keypoints)`` int index of the assigned
        fluorescence centroid; -1 (no centroid, e.g. a predicted position)
        is written as an empty cell.
    error_px
        ``(n_frames, n_cameras, n_keypoints)`` reprojection error of the final 3D point.
    stage
        ``(n_frames, n_cameras, n_keypoints)`` str, the step that set the label.

    Rows are ordered by frame, then camera and keypoint in the given order.
    """
    frames = _check_frames(frames)
    shape = (frames.size, len(cameras), len(keypoints))
    points_2d = _check_shape("points_2d", points_2d, (*shape, 2)).astype(np.float64)
    centroid = _check_shape("centroid", centroid, shape).astype(np.int64)
    error_px = _check_shape("error_px", error_px, shape).astype(np.float64)
    stage = _check_shape("stage", stage, shape)
    t, c, k = np.nonzero(np.all(np.isfinite(points_2d), axis=-1))
    columns = {
        "frame": frames[t],
        "camera": np.asarray(cameras, dtype=object)[c],
        "keypoint": np.asarray(keypoints, dtype=object)[k],
        "x": points_2d[t, c, k, 0],
        "y": points_2d[t, c, k, 1],
        "centroid": np.where(centroid[t, c, k] < 0, "", centroid[t, c, k].astype(str)),
        "error_px": error_px[t, c, k],
        "stage": stage[t, c, k].astype(str),
    }
    return _write_table(path, columns)


def write_qc(
    path: str | Path,
    keypoints: Sequence[str],
    frames: np.ndarray,
    error_px: np.ndarray,
    ncams: np.ndarray,
    flagged: np.ndarray,
    reason: np.ndarray,
) -> Path:
    """Write ``qc.csv``: one row per frame and keypoint (frame order, then manifest order).

    Parameters
    ----------
    frames
        ``(n_frames,)`` strictly increasing frame indices.
    error_px, ncams, flagged, reason
        ``(n_frames, n_keypoints)``: reprojection error (pixels, NaN -> empty),
        cameras used, whether to review the label, and a short
        machine-readable reason (empty where not flagged).
    """
    frames = _check_frames(frames)
    shape = (frames.size, len(keypoints))
    error_px = _check_shape("error_px", error_px, shape).astype(np.float64)
    ncams = _check_shape("ncams", ncams, shape).astype(np.int64)
    flagged = _check_shape("flagged", flagged, shape).astype(bool)
    reason = _check_shape("reason", reason, shape).astype(str)
    columns = {
        "frame": np.repeat(frames, len(keypoints)),
        "keypoint": np.tile(np.asarray(keypoints, dtype=object), frames.size),
        "error_px": error_px.ravel(),
        "ncams": ncams.ravel(),
        "flagged": flagged.ravel().astype(np.int64),
        "reason": reason.ravel(),
    }
    return _write_table(path, columns)


def read_keypoints_3d(path: str | Path, keypoints: Sequence[str] | None = None) -> Keypoints3D:
    """Read a pose-3d table (``keypoints_3d.csv`` or a recording's ``ground_truth.csv``).

    Parameters
    ----------
    keypoints
        Names to read, in this order; by default every ``{kp}_x`` column
        that has ``_y`` and ``_z`` partners, in file order. Only ``fnum`` and
        ``{kp}_x, _y, _z`` are required: absent ``_error``/``_score`` read as
        NaN, absent ``_ncams`` as 0.

    Raises
    ------
    InputError
        Missing file or column, non-numeric cell, duplicated or negative ``fnum``.
    """
    path = Path(path)
    table = read_csv_table(path, ["fnum"])
    if keypoints is None:
        keypoints = [
            column[:-2]
            for column in table.columns
            if column.endswith("_x")
            and {column[:-2] + "_y", column[:-2] + "_z"} <= set(table.columns)
        ]
        if not keypoints:
            raise InputError(path, "no keypoint columns ({kp}_x, {kp}_y, {kp}_z) found")
    require_columns(path, table, [f"{kp}_{axis}" for kp in keypoints for axis in "xyz"])
    frames = parse_numbers(path, table, "fnum", integer=True)
    order = np.argsort(frames, kind="stable")
    if frames.size and (frames.min() < 0 or np.any(np.diff(frames[order]) == 0)):
        raise InputError(path, "column fnum has a negative or repeated frame")

    def column(name: str, default: float) -> np.ndarray:
        if name not in table.columns:
            return np.full(len(table), default)
        return parse_numbers(path, table, name, allow_empty=True)

    points_3d = np.stack(
        [np.stack([column(f"{kp}_{axis}", np.nan) for axis in "xyz"], axis=-1) for kp in keypoints],
        axis=1,
    )
    error_px = np.stack([column(f"{kp}_error", np.nan) for kp in keypoints], axis=1)
    score = np.stack([column(f"{kp}_score", np.nan) for kp in keypoints], axis=1)
    ncams = np.stack([column(f"{kp}_ncams", 0.0) for kp in keypoints], axis=1)
    ncams = np.where(np.isfinite(ncams), ncams, 0).astype(np.int64)
    return Keypoints3D(
        list(keypoints),
        frames[order],
        points_3d[order],
        error_px[order],
        ncams[order],
        score[order],
    )


def _frame_rows(
    path: Path, table: pd.DataFrame, frames: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(frame column, frames, position of each row in frames, rows to keep)`` of a long table."""
    frame_column = parse_numbers(path, table, "frame", integer=True)
    if np.any(frame_column < 0):
        raise InputError(path, "column frame has a negative frame")
    if frames is None:
        frames = np.unique(frame_column)
    frames = _check_frames(frames)
    position = np.searchsorted(frames, frame_column)
    keep = position < frames.size
    keep[keep] = frames[position[keep]] == frame_column[keep]
    return frame_column, frames, position, keep


def read_keypoints_2d(
    path: str | Path,
    cameras: Sequence[str],
    keypoints: Sequence[str],
    frames: np.ndarray | None = None,
) -> Keypoints2D:
    """Read ``keypoints_2d.csv`` into arrays over ``(n_frames, n_cameras, n_keypoints)``.

    Parameters
    ----------
    cameras, keypoints
        Names in manifest order; a row naming another camera or keypoint is an error.
    frames
        ``(n_frames,)`` strictly increasing frames to fill; rows of other
        frames are left out. By default, the frames that have rows.
    """
    path = Path(path)
    table = read_csv_table(path, KEYPOINTS_2D_COLUMNS)
    frame_column, frames, t, keep = _frame_rows(path, table, frames)
    c = lookup_names(path, table, "camera", cameras)
    k = lookup_names(path, table, "keypoint", keypoints)
    check_unique_rows(path, np.stack([frame_column, c, k], axis=1))
    x = parse_numbers(path, table, "x")
    y = parse_numbers(path, table, "y")
    centroid = parse_numbers(path, table, "centroid", allow_empty=True)
    error_px = parse_numbers(path, table, "error_px", allow_empty=True)
    if np.any(centroid[np.isfinite(centroid)] % 1 != 0):
        raise InputError(path, "column centroid has a non-integer value")
    shape = (frames.size, len(cameras), len(keypoints))
    points_2d = np.full((*shape, 2), np.nan)
    centroid_array = np.full(shape, -1, dtype=np.int64)
    error_array = np.full(shape, np.nan)
    stage_array = np.full(shape, "", dtype=object)
    t, c, k = t[keep], c[keep], k[keep]
    points_2d[t, c, k] = np.stack([x[keep], y[keep]], axis=1)
    centroid_array[t, c, k] = np.where(np.isfinite(centroid[keep]), centroid[keep], -1)
    error_array[t, c, k] = error_px[keep]
    stage_array[t, c, k] = table["stage"].to_numpy(dtype=object)[keep]
    return Keypoints2D(
        list(cameras), list(keypoints), frames, points_2d, centroid_array, error_array, stage_array
    )


def read_qc(
    path: str | Path, keypoints: Sequence[str], frames: np.ndarray | None = None
) -> QualityControl:
    """Read ``qc.csv`` into arrays over ``(n_frames, n_keypoints)``.

    ``frames`` works as in :func:`read_keypoints_2d`. ``flagged`` must be 0
    or 1; pairs without a row are unflagged with NaN error and ncams 0.
    """
    path = Path(path)
    table = read_csv_table(path, QC_COLUMNS)
    frame_column, frames, t, keep = _frame_rows(path, table, frames)
    k = lookup_names(path, table, "keypoint", keypoints)
    check_unique_rows(path, np.stack([frame_column, k], axis=1))
    error_px = parse_numbers(path, table, "error_px", allow_empty=True)
    ncams = parse_numbers(path, table, "ncams", integer=True)
    flagged = parse_numbers(path, table, "flagged", integer=True)
    if not np.all(np.isin(flagged, (0, 1))):
        raise InputError(path, "column flagged must hold 0 or 1")
    shape = (frames.size, len(keypoints))
    error_array = np.full(shape, np.nan)
    ncams_array = np.zeros(shape, dtype=np.int64)
    flagged_array = np.zeros(shape, dtype=bool)
    reason_array = np.full(shape, "", dtype=object)
    t, k = t[keep], k[keep]
    error_array[t, k] = error_px[keep]
    ncams_array[t, k] = ncams[keep]
    flagged_array[t, k] = flagged[keep] == 1
    reason_array[t, k] = table["reason"].to_numpy(dtype=object)[keep]
    return QualityControl(
        list(keypoints), frames, error_array, ncams_array, flagged_array, reason_array
    )


def read_csv_table(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV with a header row as strings (cells stripped), checking ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is a folder, not a CSV file" if path.is_dir() else "file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(path, "file is empty (expected a header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a valid CSV file: {exc}") from None
    table.columns = [str(column).strip() for column in table.columns]
    table = table.apply(lambda values: values.str.strip())
    require_columns(path, table, required)
    return table


def csv_line(table: pd.DataFrame, row: int) -> int:
    """The file line (the header is line 1) of positional ``row`` of a :func:`read_csv_table` table.

    The table's index numbers its rows from 0 as read; a table filtered
    without resetting it still names each row's own line.
    """
    return int(table.index[row]) + 2


def require_columns(path: Path, table: pd.DataFrame, required: Sequence[str]) -> None:
    """Raise one InputError listing the ``required`` columns that ``table`` lacks."""
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")


def parse_numbers(
    path: Path,
    table: pd.DataFrame,
    column: str,
    *,
    integer: bool = False,
    allow_empty: bool = False,
) -> np.ndarray:
    """Column ``column`` as float64 (NaN for empty cells where allowed) or int64 (never empty).

    Raises
    ------
    InputError
        A non-numeric or infinite cell, an empty cell where not allowed, or a
        non-integer where ``integer``; the message gives the line number.
    """
    text = table[column].astype(str)
    empty = (text == "") | (text.str.lower() == "nan")
    values = pd.to_numeric(text.where(~empty, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    empty = empty.to_numpy()
    refuse_empty = integer or not allow_empty
    finite = np.isfinite(values)
    fraction = np.zeros_like(values)
    fraction[finite] = values[finite] % 1  # not of inf: numpy warns there
    problems = {
        "a non-numeric value": ~empty & ~finite,
        "an empty value": empty & refuse_empty,
        "a non-integer value": (fraction != 0) & integer,
    }
    for what, bad in problems.items():
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                path, f"column {column} has {what} {text.iloc[row]!r} on line {csv_line(table, row)}"
            )
    return values.astype(np.int64) if integer else values


def lookup_names(path: Path, table: pd.DataFrame, column: str, names: Sequence[str]) -> np.ndarray:
    """Index of each cell of ``column`` in ``names`` as int64; an unknown name is an InputError."""
    index = {name: i for i, name in enumerate(names)}
    positions = table[column].map(index)
    unknown = positions.isna().to_numpy()
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise InputError(
            path,
            f"unknown {column} {table[column].iloc[row]!r} on line {csv_line(table, row)} "
            f"(expected one of {', '.join(names)})",
        )
    return positions.to_numpy(dtype=np.int64)


def check_unique_rows(path: Path, keys: np.ndarray, lines: np.ndarray | None = None) -> None:
    """Raise an InputError naming the first line whose ``keys (n_rows, n_keys)`` repeat an earlier line.

    ``lines (n_rows,)``: each row's file line, where the rows are not the
    file's own from line 2 on (some left out); by default row + 2.
    """
    repeats = pd.DataFrame(keys).duplicated().to_numpy()
    if repeats.any():
        row = int(np.flatnonzero(repeats)[0])
        line = row + 2 if lines is None else int(lines[row])
        raise InputError(
            path, f"line {line} repeats the frame/camera/keypoint of an earlier line"
        )
