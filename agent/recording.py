"""Load a pose recording (FORMATS.md section 1), validating everything up front.

:func:`load_recording` reads the manifest, the calibration, the seeds and
the optional ground truth, and opens every stream once to check its frame
count and size, so that a bad input fails with one
:class:`~agent.errors.InputError` before any work or output exists.
Cameras are matched to calibration tables and streams by name.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from agent.calibration import load_calibration, select_cameras
from agent.errors import InputError
from agent.pose_results import (
    check_unique_rows,
    csv_line,
    lookup_names,
    parse_numbers,
    read_csv_table,
    read_keypoints_3d,
)
from agent.streams import STREAM_KINDS, FrameStream, open_stream, resolve_stream
from agent.toml_files import read_toml
from tools.geometry import CameraGroup

MIN_SEED_FRAMES = 3

# Millimetres per calibration unit. The tracker's 3D tolerances (jump, body
# distances, shape carry, recovery) are in millimetres, so a recording in other
# units is converted to millimetres on load and its results back on writing.
_MM_PER_UNIT = {
    "mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "millimetre": 1.0, "millimetres": 1.0,
    "cm": 10.0, "centimeter": 10.0, "centimeters": 10.0, "centimetre": 10.0, "centimetres": 10.0,
    "m": 1000.0, "meter": 1000.0, "meters": 1000.0, "metre": 1000.0, "metres": 1000.0,
    "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "micrometer": 1e-3, "micrometers": 1e-3,
    "micrometre": 1e-3, "micrometres": 1e-3, "micron": 1e-3, "microns": 1e-3,
    "in": 25.4, "inch": 25.4, "inches": 25.4,
}


def mm_per_unit(units: str) -> float | None:
    """Millimetres per ``units``; None for a name this tool does not know."""
    return _MM_PER_UNIT.get(units.strip().lower())


def _scaled_group(group: CameraGroup, factor: float) -> CameraGroup:
    """``group`` with its translations multiplied by ``factor`` (a change of length unit)."""
    if factor == 1.0:
        return group
    return CameraGroup(tuple(dataclasses.replace(camera, tvec=camera.tvec * factor)
                             for camera in group.cameras))


@dataclass(frozen=True, eq=False)
class Seeds:
    """Manual labels from ``seeds.csv``.

    Attributes
    ----------
    frames : np.ndarray
        ``(n_seed_frames,)`` int64, sorted, the labelled frames.
    points_2d : np.ndarray
        ``(n_seed_frames, n_cameras, n_keypoints, 2)`` pixels, NaN where
        the keypoint has no row (not visible in that camera).
    """

    frames: np.ndarray
    points_2d: np.ndarray


@dataclass(frozen=True, eq=False)
class Recording:
    """A validated recording; streams open lazily on first use and stay open (thread-safe).

    Attributes
    ----------
    root : Path
        The recording folder.
    fps : float
        Frames per second.
    units : str
        3D units of the calibration (``"mm"``) and of the written results.
    mm_per_unit : float
        Millimetres per calibration unit. ``group`` and ``ground_truth_3d``
        are held in millimetres (converted on load); results are divided by
        this factor when written.
    cameras, keypoints : list[str]
        Names in manifest order; every array is stacked in this order.
    regions : dict[str, list[str]]
        Region name -> its keypoints, in manifest order; each keypoint is in
        exactly one region.
    group : CameraGroup
        The calibration, cameras in manifest order.
    n_frames : int
        Frames in every stream.
    seeds : Seeds
        The manual labels.
    ground_truth_3d : np.ndarray or None
        ``(n_frames, n_keypoints, 3)`` from ``ground_truth.csv``, NaN where absent.
    ground_truth_2d : np.ndarray or None
        ``(n_frames, n_cameras, n_keypoints, 2)`` from ``ground_truth_2d.csv``.
    ground_truth_visible : np.ndarray or None
        ``(n_frames, n_cameras, n_keypoints)`` bool; False where the file has no row.
    """

    root: Path
    fps: float
    units: str
    cameras: list[str]
    keypoints: list[str]
    regions: dict[str, list[str]]
    group: CameraGroup
    n_frames: int
    seeds: Seeds
    ground_truth_3d: np.ndarray | None = None
    ground_truth_2d: np.ndarray | None = None
    ground_truth_visible: np.ndarray | None = None
    mm_per_unit: float = 1.0
    _streams: dict[tuple[str, str], FrameStream] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _streams_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def stream_path(self, camera: str, kind: str) -> Path:
        """Path of the ``kind`` (``reflectance`` or ``fluorescence``) stream of ``camera``."""
        if camera not in self.cameras:
            raise KeyError(f"unknown camera {camera!r}; the recording has {self.cameras}")
        return resolve_stream(self.root / "videos", camera, kind)

    def _stream(self, camera: str, kind: str) -> FrameStream:
        key = (camera, kind)
        with self._streams_lock:
            if key not in self._streams:
                self._streams[key] = open_stream(self.stream_path(camera, kind))
            return self._streams[key]

    def reflectance(self, camera: str) -> FrameStream:
        """The open reflectance stream of ``camera`` (shows the animal)."""
        return self._stream(camera, "reflectance")

    def fluorescence(self, camera: str) -> FrameStream:
        """The open fluorescence stream of ``camera`` (quantum dots as bright spots)."""
        return self._stream(camera, "fluorescence")

    def close(self) -> None:
        """Close every stream opened so far; later calls reopen them."""
        with self._streams_lock:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()


def _load_manifest(path: Path) -> dict:
    manifest = read_toml(path)
    missing = [key for key in ("fps", "cameras", "keypoints", "regions") if key not in manifest]
    if missing:
        raise InputError(path, f"missing key(s) {', '.join(missing)}")
    fps = manifest["fps"]
    if (
        isinstance(fps, bool)
        or not isinstance(fps, int | float)
        or not math.isfinite(fps)
        or fps <= 0
    ):
        raise InputError(path, f"fps must be a positive number, got {fps!r}")
    units = manifest.get("units", "mm")
    if not isinstance(units, str) or not units:
        raise InputError(path, f"units must be a non-empty string, got {units!r}")
    for key in ("cameras", "keypoints"):
        names = manifest[key]
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise InputError(path, f"{key} must be a non-empty list of names")
        if len(set(names)) != len(names):
            raise InputError(path, f"{key} has a repeated name")
    if len(manifest["cameras"]) < 2:
        raise InputError(path, "cameras must name at least 2 cameras: one view cannot triangulate")
    return {
        "fps": float(fps),
        "units": units,
        "cameras": list(manifest["cameras"]),
        "keypoints": list(manifest["keypoints"]),
        "regions": check_regions(path, manifest["regions"], manifest["keypoints"]),
    }


def check_regions(path: str | Path, regions: object, keypoints: list[str]) -> dict[str, list[str]]:
    """Regions with their keypoints in ``keypoints`` order; each keypoint in exactly one region.

    Raises :class:`InputError` naming ``path`` otherwise (also used by ``synth pose --regions``).
    """
    if not isinstance(regions, dict) or not regions:
        raise InputError(path, "[regions] must be a table of region = [keypoints]")
    owner: dict[str, str] = {}
    for region, members in regions.items():
        if not isinstance(members, list) or not members:
            raise InputError(path, f"region {region!r} must be a non-empty list of keypoints")
        for keypoint in members:
            if keypoint not in keypoints:
                raise InputError(path, f"region {region!r} names unknown keypoint {keypoint!r}")
            if owner.get(keypoint) == region:
                raise InputError(path, f"keypoint {keypoint!r} is listed twice in region {region!r}")
            if keypoint in owner:
                raise InputError(
                    path,
                    f"keypoint {keypoint!r} is in two regions, {owner[keypoint]!r} and {region!r}",
                )
            owner[keypoint] = region
    orphans = [keypoint for keypoint in keypoints if keypoint not in owner]
    if orphans:
        raise InputError(path, f"keypoint(s) {', '.join(orphans)} belong to no region")
    return {region: [kp for kp in keypoints if owner[kp] == region] for region in regions}


def _check_streams(root: Path, group: CameraGroup) -> int:
    """Open every stream once; return the common frame count."""
    counts: dict[Path, int] = {}
    for camera in group.cameras:
        for kind in STREAM_KINDS:
            with open_stream(resolve_stream(root / "videos", camera.name, kind)) as stream:
                if tuple(stream.size) != tuple(camera.size):
                    raise InputError(
                        stream.path,
                        f"frames are {stream.size[0]}x{stream.size[1]} but calibration.toml gives "
                        f"camera {camera.name} size {camera.size[0]}x{camera.size[1]}",
                    )
                counts[stream.path] = stream.n_frames
    (first_path, first_count), *others = counts.items()
    for other_path, other_count in others:
        if other_count != first_count:
            raise InputError(
                other_path,
                f"has {other_count} frames but {first_path.name} has {first_count}; "
                "all streams must have the same frame count",
            )
    return first_count


def _load_seeds(path: Path, cameras: list[str], keypoints: list[str], n_frames: int,
                sizes: list[tuple[int, int]], left_out: set[str]) -> Seeds:
    table = _without_cameras(read_csv_table(path, ("frame", "camera", "keypoint", "x", "y")), left_out)
    frame = parse_numbers(path, table, "frame", integer=True)
    camera = lookup_names(path, table, "camera", cameras)
    keypoint = lookup_names(path, table, "keypoint", keypoints)
    points = np.stack([parse_numbers(path, table, axis, allow_empty=True) for axis in "xy"], axis=1)
    half_empty = np.isnan(points).any(axis=1) & ~np.isnan(points).all(axis=1)
    if half_empty.any():
        line = csv_line(table, int(np.flatnonzero(half_empty)[0]))
        raise InputError(path, f"x or y is empty on line {line} (a keypoint not labelled has no row, "
                               "or both cells empty)")
    # Both cells empty is a missing value (FORMATS.md's convention for CSV): the same as no row.
    labelled = ~np.isnan(points[:, 0])
    frame, camera, keypoint, points = frame[labelled], camera[labelled], keypoint[labelled], points[labelled]
    _check_frame_range(path, frame, n_frames)
    # Pixel centres lie in [0, size - 1]; a click half a pixel past the edge is still on the image.
    limits = np.asarray(sizes, dtype=np.float64)[camera] - 0.5
    outside = np.any((points < -0.5) | (points > limits), axis=1)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        width, height = sizes[camera[index]]
        raise InputError(path, f"x, y = {points[index, 0]:g}, {points[index, 1]:g} on line "
                               f"{csv_line(table, int(np.flatnonzero(labelled)[index]))} is outside camera {cameras[camera[index]]}'s "
                               f"{width}x{height} image")
    frames, row = np.unique(frame, return_inverse=True)
    if frames.size < MIN_SEED_FRAMES:
        raise InputError(
            path, f"labels {frames.size} distinct frame(s); at least {MIN_SEED_FRAMES} are needed"
        )
    check_unique_rows(path, np.stack([row, camera, keypoint], axis=1), table.index[labelled] + 2)
    points_2d = np.full((frames.size, len(cameras), len(keypoints), 2), np.nan)
    points_2d[row, camera, keypoint] = points
    return Seeds(frames.astype(np.int64), points_2d)


def _without_cameras(table: pd.DataFrame, left_out: set[str]) -> pd.DataFrame:
    """``table`` without the rows of ``left_out``: cameras the calibration holds and the manifest
    does not use (a recording of some of a rig's cameras); any other unknown name stays an error.
    The index is kept, so errors still name each row's line (:func:`csv_line`)."""
    if not left_out:
        return table
    return table[~table["camera"].isin(left_out)]


def _check_frame_range(path: Path, frame: np.ndarray, n_frames: int) -> None:
    outside = (frame < 0) | (frame >= n_frames)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise InputError(
            path,
            f"frame {frame[row]} on line {row + 2} is outside the recording's 0..{n_frames - 1}",
        )


def _load_ground_truth_3d(path: Path, keypoints: list[str], n_frames: int) -> np.ndarray:
    table = read_keypoints_3d(path, keypoints)
    _check_frame_range(path, table.frames, n_frames)
    points_3d = np.full((n_frames, len(keypoints), 3), np.nan)
    points_3d[table.frames] = table.points_3d
    return points_3d


def _load_ground_truth_2d(
    path: Path, cameras: list[str], keypoints: list[str], n_frames: int, left_out: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    table = _without_cameras(read_csv_table(path, ("frame", "camera", "keypoint", "x", "y", "visible")),
                             left_out)
    frame = parse_numbers(path, table, "frame", integer=True)
    _check_frame_range(path, frame, n_frames)
    camera = lookup_names(path, table, "camera", cameras)
    keypoint = lookup_names(path, table, "keypoint", keypoints)
    check_unique_rows(path, np.stack([frame, camera, keypoint], axis=1), table.index + 2)
    visible = parse_numbers(path, table, "visible", integer=True)
    if not np.all(np.isin(visible, (0, 1))):
        raise InputError(path, "column visible must hold 0 or 1")
    points_2d = np.full((n_frames, len(cameras), len(keypoints), 2), np.nan)
    points_2d[frame, camera, keypoint] = np.stack(
        [parse_numbers(path, table, axis, allow_empty=True) for axis in "xy"], axis=1
    )
    visible_array = np.zeros((n_frames, len(cameras), len(keypoints)), dtype=bool)
    visible_array[frame, camera, keypoint] = visible == 1
    return points_2d, visible_array


def load_recording(path: str | Path, *,
                   on_bad_ground_truth: Callable[[InputError], None] | None = None) -> Recording:
    """Load and validate the recording folder ``path`` (FORMATS.md section 1).

    ``on_bad_ground_truth``: where given, a ground truth file (for
    evaluation only) that does not fit is handed to it and the recording
    loads without ground truth, instead of raising.

    Raises
    ------
    InputError
        The first problem found, naming its file: a missing or malformed
        file, a manifest camera absent from the calibration, a missing,
        unreadable or truncated stream, streams whose frame counts differ, a
        frame size other than the calibration's, a seed row with an unknown
        camera or keypoint or a frame out of range, fewer than 3 seed frames,
        a keypoint in two regions or in none, or bad ground truth.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "recording folder not found")
    manifest = _load_manifest(root / "recording.toml")
    cameras, keypoints = manifest["cameras"], manifest["keypoints"]
    rig = load_calibration(root / "calibration.toml")
    group = select_cameras(rig, cameras, root / "calibration.toml")
    left_out = {camera.name for camera in rig.cameras} - set(cameras)
    n_frames = _check_streams(root, group)
    scale = mm_per_unit(manifest["units"])
    if scale is None:
        # Every 3D tolerance is physical: a unit guessed wrong would mis-scale them all.
        raise InputError(root / "recording.toml",
                         f"units {manifest['units']!r} is not a length unit this tool knows "
                         "(mm, cm, m, um, in)")
    group = _scaled_group(group, scale)
    seeds = _load_seeds(root / "seeds.csv", cameras, keypoints, n_frames,
                        [camera.size for camera in group.cameras], left_out)
    ground_truth_3d = ground_truth_2d = ground_truth_visible = None
    try:
        if (root / "ground_truth.csv").exists():
            ground_truth_3d = scale * _load_ground_truth_3d(root / "ground_truth.csv", keypoints,
                                                            n_frames)
        if (root / "ground_truth_2d.csv").exists():
            ground_truth_2d, ground_truth_visible = _load_ground_truth_2d(
                root / "ground_truth_2d.csv", cameras, keypoints, n_frames, left_out
            )
    except InputError as problem:
        if on_bad_ground_truth is None:
            raise
        on_bad_ground_truth(problem)
        ground_truth_3d = ground_truth_2d = ground_truth_visible = None
    return Recording(
        root=root,
        fps=manifest["fps"],
        units=manifest["units"],
        cameras=cameras,
        keypoints=keypoints,
        regions=manifest["regions"],
        group=group,
        n_frames=n_frames,
        seeds=seeds,
        ground_truth_3d=ground_truth_3d,
        ground_truth_2d=ground_truth_2d,
        ground_truth_visible=ground_truth_visible,
        mm_per_unit=scale,
    )
