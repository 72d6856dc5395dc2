"""Read a behavior session (FORMATS.md section 3), validating everything up front.

A session is a directory with ``session.toml``, a top-view video, and
optionally DeepLabCut keypoints, precomputed features and reference segments.
:func:`load_session` checks all of it before any analysis starts and raises
one :class:`~agent.errors.InputError` naming the file and the problem.

Frames analysed: the video and the keypoints (or features) may differ by
exactly one frame (the real MABe22 clip has 1801 video frames and 1800
keypoint rows, the usual off-by-one of a decoder flushing a last frame);
the session then analyses the first ``min(T_video, T_keypoints)`` frames.
A larger difference is an error.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from agent.errors import InputError
from agent.toml_files import read_toml
from tools.blob_segmentation import TrackingParams, estimate_background
from tools.visual_tracking import Tracks, estimate_animal_area, track_blobs

_COORDS = {"x", "y", "likelihood"}
_MAX_FRAME_MISMATCH = 1


@dataclass(frozen=True, eq=False)
class Session:
    """A validated behavior session; arrays cover the ``n_frames`` analysed frames.

    Attributes
    ----------
    root
        The session directory.
    fps
        Frames per second (> 0).
    video_path
        The top-view video.
    n_frames
        Frames analysed: the video's frame count, or ``min(T_video,
        T_keypoints, T_features)`` when they differ by one.
    frame_size
        ``(width, height)`` of the video in pixels.
    animals
        Animal names in ``session.toml`` order (the animal axis of every array).
    bodyparts
        Keypoint names in the keypoints file's order, ``[]`` without keypoints.
    keypoints
        ``(n_frames, n_animals, n_bodyparts, 2)`` float64 pixels, NaN missing; or None.
    likelihood
        ``(n_frames, n_animals, n_bodyparts)`` float64, or None when the table has none.
    features
        ``(n_frames, n_animals, n_features)`` float64 from ``features.npy``, or None.
    food_zone
        ``(x0, y0, x1, y1)`` pixels from ``[arena]``, or None.
    ground_truth
        ``(animal, start_frame, end_frame, label)`` rows of ``ground_truth.csv``, or None.
    """

    root: Path
    fps: float
    video_path: Path
    n_frames: int
    frame_size: tuple[int, int]
    animals: list[str]
    bodyparts: list[str]
    keypoints: np.ndarray | None
    likelihood: np.ndarray | None
    features: np.ndarray | None
    food_zone: tuple[float, float, float, float] | None
    ground_truth: list[tuple[str, int, int, str]] | None


def load_session(path: str | Path) -> Session:
    """Load and validate a session directory (or its ``session.toml``).

    Raises
    ------
    InputError
        Any missing, unreadable or inconsistent part, naming the file.
    """
    root = Path(path)
    toml_path = root if root.suffix == ".toml" else root / "session.toml"
    root = toml_path.parent
    manifest = _read_manifest(toml_path)
    video_path = root / manifest["video"]
    video_frames, frame_size = probe_video(video_path)
    animals = manifest["animals"]

    keypoints = likelihood = None
    bodyparts: list[str] = []
    counts = {video_path: video_frames}
    if manifest.get("keypoints"):
        kp_path = root / manifest["keypoints"]
        bodyparts, keypoints, likelihood = read_keypoints(kp_path, animals)
        counts[kp_path] = keypoints.shape[0]
    features = None
    if manifest.get("features"):
        feat_path = root / manifest["features"]
        features = _read_features(feat_path, len(animals))
        counts[feat_path] = features.shape[0]
    for other_path, count in counts.items():
        if abs(count - video_frames) > _MAX_FRAME_MISMATCH:
            raise InputError(
                other_path,
                f"has {count} frames but the video {video_path.name} has {video_frames} "
                f"(at most {_MAX_FRAME_MISMATCH} frame of difference is accepted)",
            )
    n_frames = min(counts.values())
    gt_path = root / "ground_truth.csv"
    return Session(
        root=root,
        fps=manifest["fps"],
        video_path=video_path,
        n_frames=n_frames,
        frame_size=frame_size,
        animals=animals,
        bodyparts=bodyparts,
        keypoints=None if keypoints is None else keypoints[:n_frames],
        likelihood=None if likelihood is None else likelihood[:n_frames],
        features=None if features is None else features[:n_frames],
        food_zone=manifest.get("food_zone"),
        ground_truth=_read_ground_truth(gt_path, animals) if gt_path.is_file() else None,
    )


def _read_manifest(path: Path) -> dict:
    data = read_toml(path)
    fps = data.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise InputError(path, f"fps must be a positive number, got {fps!r}")
    animals = data.get("animals")
    if (
        not isinstance(animals, list)
        or not animals
        or not all(isinstance(a, str) and a for a in animals)
        or len(set(animals)) != len(animals)
    ):
        raise InputError(path, f"animals must be a non-empty list of unique names, got {animals!r}")
    manifest = {"fps": float(fps), "animals": list(animals)}
    for key in ("video", "keypoints", "features"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(path, f"{key} must be a file name, got {value!r}")
        manifest[key] = value
    if manifest["video"] is None:
        # The layout names the video video.mp4: a manifest without the key means that file.
        if not (path.parent / "video.mp4").is_file():
            raise InputError(path, "video is required (a file name, or video.mp4 beside session.toml)")
        manifest["video"] = "video.mp4"
    arena = data.get("arena", {})
    if not isinstance(arena, dict):
        raise InputError(path, "[arena] must be a table")
    if "food_zone" in arena:
        manifest["food_zone"] = _parse_food_zone(path, arena["food_zone"])
    return manifest


def _parse_food_zone(path: Path, zone: object) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in zone)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(path, f"arena.food_zone must be [x0, y0, x1, y1], got {zone!r}") from None
    if not (x0 < x1 and y0 < y1):
        raise InputError(path, f"arena.food_zone needs x0 < x1 and y0 < y1, got {zone!r}")
    return x0, y0, x1, y1


def probe_video(path: Path) -> tuple[int, tuple[int, int]]:
    """Return ``(frame_count, (width, height))`` of a video, counted reliably.

    The container's frame count (``CAP_PROP_FRAME_COUNT``) may be wrong, so it
    is checked by reading the last frame it announces and trying one more;
    where that fails, frames are counted by decoding them all. A video that
    decodes fewer frames than its header announces is truncated: an error.
    """
    if not path.is_file():
        raise InputError(path, "video file not found")
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            raise InputError(path, "OpenCV cannot decode this video (corrupt or unsupported codec)")
        frame_size = (int(frame.shape[1]), int(frame.shape[0]))
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if announced > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, announced - 1)
            last_ok = capture.read()[0]
            if last_ok and not capture.read()[0]:
                return announced, frame_size
        decoded = _count_by_decoding(path)
    finally:
        capture.release()
    if 0 < decoded < announced:
        raise InputError(
            path, f"video is truncated or corrupt: header says {announced} frames, {decoded} decode"
        )
    return decoded, frame_size


def _count_by_decoding(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def iter_frames(
    video_path: str | Path, start: int = 0, stop: int | None = None, step: int = 1
) -> Iterator[np.ndarray]:
    """Yield grayscale frames ``start, start + step, ...`` before ``stop`` (uint8, (height, width)).

    Frames are decoded in order; skipped frames are only grabbed (decoded
    without the colour conversion, about 6x cheaper), which is exact where
    seeking in compressed video is not.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    capture = cv2.VideoCapture(str(video_path))
    try:
        index = 0
        while index < start and capture.grab():
            index += 1
        while stop is None or index < stop:
            if (index - start) % step:
                if not capture.grab():
                    return
            else:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            index += 1
    finally:
        capture.release()


def track_session_video(session: Session, params: TrackingParams | None = None) -> Tracks:
    """Blob tracks of the session's animals over its ``n_frames`` analysed frames.

    Two passes over the video: ``params.background_samples`` frames spread
    over it (only those are colour-converted) give the background and the
    typical animal area, then every frame is tracked.
    """
    params = params or TrackingParams()
    step = max(1, session.n_frames // params.background_samples)
    samples = np.stack(list(iter_frames(session.video_path, 0, session.n_frames, step)))
    background = estimate_background(samples, params)
    area = estimate_animal_area(samples, background, len(session.animals), params)
    frames = iter_frames(session.video_path, 0, session.n_frames)
    return track_blobs(frames, len(session.animals), params, background, area)


def read_keypoints(
    path: Path, animals: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Read a DeepLabCut table (.h5 or .csv) into arrays for ``animals``.

    Accepts the multi-animal layout (``scorer / individuals / bodyparts /
    coords``) and, for a single animal, the single-animal layout (``scorer /
    bodyparts / coords``). A point stored as exactly ``(0, 0)`` is treated as
    missing (some trackers, including the MABe22 export, write missing
    points as zeros).

    Returns
    -------
    bodyparts
        Bodypart names in the table's order.
    keypoints
        ``(n_frames, n_animals, n_bodyparts, 2)`` float64, NaN missing.
    likelihood
        ``(n_frames, n_animals, n_bodyparts)`` float64, or None without a likelihood column.
    """
    table = _read_table(path)
    columns = table.columns
    coords = set(columns.get_level_values(-1))
    if columns.nlevels == 4 and {"x", "y"} <= coords <= _COORDS:
        individuals = list(dict.fromkeys(columns.get_level_values(1)))
        missing = [a for a in animals if a not in individuals]
        if missing:
            raise InputError(
                path, f"animal(s) {', '.join(missing)} not among the individuals {individuals}"
            )
        table = table.droplevel(0, axis=1)
    elif columns.nlevels == 3 and {"x", "y"} <= coords <= _COORDS and len(animals) == 1:
        table = pd.concat({animals[0]: table.droplevel(0, axis=1)}, axis=1)
    else:
        raise InputError(
            path,
            f"unknown keypoint layout: {columns.nlevels} header levels {list(columns.names)} with "
            f"coords {sorted(map(str, coords))}; expected DeepLabCut scorer/individuals/"
            "bodyparts/coords (or scorer/bodyparts/coords for one animal) with coords x, y"
            "[, likelihood]",
        )
    if len(set(columns.get_level_values(0))) > 1:
        raise InputError(path, "the table holds more than one scorer")
    bodyparts = list(dict.fromkeys(table.columns.get_level_values(1)))
    has_likelihood = "likelihood" in coords
    wanted = ["x", "y", "likelihood"] if has_likelihood else ["x", "y"]
    index = pd.MultiIndex.from_product([animals, bodyparts, wanted])
    try:
        values = table.reindex(columns=index).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"non-numeric keypoint values: {exc}") from None
    infinite = np.isinf(values)
    if infinite.any():  # NaN is a missing point; infinity is not a place
        row, column = (int(i) for i in np.argwhere(infinite)[0])
        raise InputError(path, f"infinite value at frame {row}, column {'/'.join(map(str, index[column]))} "
                               "(missing points are NaN)")
    values = values.reshape(len(table), len(animals), len(bodyparts), len(wanted))
    keypoints = values[..., :2].copy()
    keypoints[np.all(keypoints == 0.0, axis=-1)] = np.nan
    likelihood = values[..., 2].copy() if has_likelihood else None
    return bodyparts, keypoints, likelihood


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "keypoints file not found")
    try:
        if path.suffix.lower() == ".csv":
            return _read_dlc_csv(path)
        if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
            with pd.HDFStore(path, mode="r") as store:
                keys = store.keys()
                if "/df_with_missing" in keys:  # DeepLabCut's key
                    keys = ["/df_with_missing"]
                if len(keys) != 1:
                    raise InputError(path, f"expected one table in the HDF5 file, found {keys}")
                table = store[keys[0]]
        else:
            raise InputError(path, f"keypoints must be .h5 or .csv, got {path.suffix!r}")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas/tables raise many types on bad files
        if type(exc).__name__.startswith("HDF5"):  # PyTables appends HDF5's whole back trace
            raise InputError(path, "cannot read keypoint table: not a readable HDF5 file") from None
        first_line = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise InputError(path, f"cannot read keypoint table: {type(exc).__name__}: {first_line}") from None
    if not isinstance(table, pd.DataFrame) or not isinstance(table.columns, pd.MultiIndex):
        raise InputError(path, "unknown keypoint layout: not a table with a multi-row header")
    return table


def _read_dlc_csv(path: Path) -> pd.DataFrame:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(itertools.islice(csv.reader(handle), 4))
    first_cells = [row[0].strip().lower() if row else "" for row in rows]
    n_header = 4 if len(first_cells) == 4 and first_cells[3] == "coords" else 3
    # A prediction table has one index column (the frame); a DeepLabCut 2.2+ label table
    # (CollectedData_*.csv) three (folder, video, image), left blank in the header rows.
    scorer_row = rows[0] if rows else []
    n_index = 1
    while n_index < len(scorer_row) and not scorer_row[n_index].strip():
        n_index += 1
    table = pd.read_csv(path, header=list(range(n_header)), index_col=list(range(n_index)))
    if n_header == 3 and not isinstance(table.columns, pd.MultiIndex):
        raise InputError(path, "unknown keypoint layout: no multi-row header")
    return table


def _read_features(path: Path, n_animals: int) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "features file not found")
    try:
        features = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        if "pickle" in str(exc):  # numpy's advice to load it unsafely is not ours to give
            raise InputError(path, "holds Python objects, not a numeric array (np.save a float array)") from None
        raise InputError(path, f"not a readable .npy array: {exc}") from None
    if features.ndim != 3 or features.shape[1] != n_animals or features.shape[2] == 0:
        raise InputError(
            path, f"expected shape (T, {n_animals}, D) with D >= 1, got {features.shape}"
        )
    if not np.issubdtype(features.dtype, np.number):
        raise InputError(path, f"expected a numeric array, got dtype {features.dtype}")
    features = features.astype(np.float64)
    # NaN marks a missing value (FORMATS.md); infinity is not a value anything could mean.
    n_infinite = int(np.count_nonzero(np.isinf(features)))
    if n_infinite:
        raise InputError(path, f"{n_infinite} values are infinite (missing values are NaN)")
    if features.size and np.isnan(features).all():
        raise InputError(path, "every value is NaN (missing)")
    return features


def _line(rows: np.ndarray) -> int:
    """The CSV line (header = line 1) of the first row ``rows (n_rows,)`` marks."""
    return int(np.flatnonzero(rows)[0]) + 2


def _read_ground_truth(path: Path, animals: list[str]) -> list[tuple[str, int, int, str]]:
    try:
        table = pd.read_csv(path, dtype={"animal": str, "label": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(path, f"not a readable CSV: {exc}") from None
    required = ["animal", "start_frame", "end_frame", "label"]
    if [c for c in required if c not in table.columns]:
        raise InputError(path, f"expected columns {required}, got {list(table.columns)}")
    unknown = sorted(set(table["animal"]) - set(animals))
    if unknown:
        raise InputError(path, f"unknown animal(s) {unknown}; session animals are {animals}")
    if table.empty:
        raise InputError(path, "holds no reference segments (a header only)")
    bounds = table[["start_frame", "end_frame"]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    not_integer = ~np.isfinite(bounds).all(axis=1) | (bounds != np.round(bounds)).any(axis=1)
    if not_integer.any():
        raise InputError(path, f"start_frame and end_frame must be integers (line {_line(not_integer)})")
    starts, ends = bounds.astype(np.int64).T
    if np.any(starts < 0) or np.any(ends <= starts):
        raise InputError(path, f"every row needs 0 <= start_frame < end_frame (line {_line((starts < 0) | (ends <= starts))})")
    labels = table["label"].fillna("").astype(str).str.strip()
    if (labels == "").any():
        raise InputError(path, f"label is empty on line {_line((labels == '').to_numpy())}")
    order = np.lexsort((starts, table["animal"].to_numpy(dtype=str)))
    same_animal = table["animal"].to_numpy(dtype=str)[order][1:] == table["animal"].to_numpy(dtype=str)[order][:-1]
    overlap = same_animal & (starts[order][1:] < ends[order][:-1])
    if overlap.any():
        first = int(np.flatnonzero(overlap)[0])
        rows = sorted(int(order[i]) + 2 for i in (first, first + 1))
        raise InputError(path, f"segments of {table['animal'].iloc[order[first]]} overlap on lines {rows[0]} and {rows[1]}")
    return [
        (str(a), int(s), int(e), str(lab))
        for a, s, e, lab in zip(table["animal"], starts, ends, table["label"], strict=True)
    ]
