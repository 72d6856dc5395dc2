"""Render clips of the behavior segmentation as short annotated videos for captioning.

The only file access in ``tools/`` is here: :func:`cut_clip_videos` reads the
session video once and writes one short mp4 per clip to the paths it is given.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

MAX_VIDEO_SIDE_PX = 512
# Beyond this many frames between two needed frames, seeking beats grabbing.
SEEK_GAP_FRAMES = 300
FOCAL_COLOR_BGR = (0, 165, 255)
OTHER_COLOR_BGR = (255, 255, 0)


@dataclass(frozen=True, eq=False)
class ClipVideoRequest:
    """One clip video to cut: frames ``[start_frame, end_frame)`` around one focal animal.

    Attributes
    ----------
    clip_id : str
        Written as ``<out_dir>/<clip_id>.mp4``.
    start_frame, end_frame : int
        Frames of the session video, ``end_frame`` exclusive.
    focal_track : np.ndarray
        ``(end_frame - start_frame, 2)`` focal centroid ``x, y`` or
        ``(end_frame - start_frame, 4)`` box ``x0, y0, x1, y1`` per frame, in
        pixels of the full video; NaN rows are not drawn.
    focal_name : str
        Drawn beside the focal marker.
    other_tracks : Mapping[str, np.ndarray]
        Name to ``(end_frame - start_frame, 2)`` centroids of the other animals,
        drawn thin for social context.
    label : str
        Caption line at the top of the clip.
    """

    clip_id: str
    start_frame: int
    end_frame: int
    focal_track: np.ndarray
    focal_name: str = ""
    other_tracks: Mapping[str, np.ndarray] = field(default_factory=dict)
    label: str = ""


def write_clip_video(
    video_path: str | Path,
    out_path: str | Path,
    start_frame: int,
    end_frame: int,
    fps_in: float,
    fps_out: float = 10.0,
    *,
    focal_track: np.ndarray,
    focal_name: str = "",
    other_tracks: Mapping[str, np.ndarray] | None = None,
    label: str = "",
) -> Path:
    """Write frames ``[start_frame, end_frame)`` of a video as a short annotated mp4.

    The clip is resampled to ``fps_out`` (never above ``fps_in``), downscaled to
    at most 512 px, the focal animal marked in colour with its name, the others
    thin. The file appears atomically. Tracks are as in :class:`ClipVideoRequest`.
    To cut many clips, :func:`cut_clip_videos` decodes the video only once.

    Returns
    -------
    Path
        ``out_path``.
    """
    request = ClipVideoRequest(
        clip_id=Path(out_path).stem,
        start_frame=start_frame,
        end_frame=end_frame,
        focal_track=focal_track,
        focal_name=focal_name,
        other_tracks=other_tracks or {},
        label=label,
    )
    _cut_videos(Path(video_path), [(request, Path(out_path))], fps_in, fps_out)
    return Path(out_path)


def cut_clip_videos(
    video_path: str | Path,
    out_dir: str | Path,
    clips: Sequence[ClipVideoRequest],
    fps_in: float,
    fps_out: float = 10.0,
) -> list[Path]:
    """Cut many clip videos in one sequential pass over the session video.

    Each needed frame is decoded once and written to every clip that samples
    it; frames no clip needs are skipped with ``grab`` (or a seek over long
    gaps). Clips may overlap and come in any order.

    Parameters
    ----------
    video_path : str or Path
        Session video (any format OpenCV reads).
    out_dir : str or Path
        Receives ``<clip_id>.mp4`` per clip, each written atomically.
    clips : Sequence[ClipVideoRequest]
        The clips; ids must be unique.
    fps_in, fps_out : float
        Video frame rate and clip frame rate (``fps_out`` is capped at ``fps_in``).

    Returns
    -------
    list[Path]
        The written files, in the order of ``clips``.
    """
    ids = [clip.clip_id for clip in clips]
    if len(set(ids)) != len(ids):
        raise ValueError("clip ids must be unique")
    jobs = [(clip, Path(out_dir) / f"{clip.clip_id}.mp4") for clip in clips]
    _cut_videos(Path(video_path), jobs, fps_in, fps_out)
    return [path for _, path in jobs]


def _sample_frames(clip: ClipVideoRequest, fps_in: float, fps_out: float) -> np.ndarray:
    step = max(1.0, fps_in / fps_out)
    n_samples = int(np.ceil((clip.end_frame - clip.start_frame) / step))
    return clip.start_frame + np.floor(np.arange(n_samples) * step).astype(np.int64)


def _check_request(clip: ClipVideoRequest, n_video_frames: int) -> None:
    n_frames = clip.end_frame - clip.start_frame
    if clip.start_frame < 0 or n_frames <= 0 or clip.end_frame > n_video_frames:
        raise ValueError(
            f"clip {clip.clip_id}: frames [{clip.start_frame}, {clip.end_frame}) are not "
            f"inside the video's {n_video_frames} frames"
        )
    if clip.focal_track.shape not in ((n_frames, 2), (n_frames, 4)):
        raise ValueError(
            f"clip {clip.clip_id}: focal_track must be ({n_frames}, 2) or ({n_frames}, 4), "
            f"got {clip.focal_track.shape}"
        )
    for name, track in clip.other_tracks.items():
        if track.shape != (n_frames, 2):
            raise ValueError(
                f"clip {clip.clip_id}: track of {name} must be ({n_frames}, 2), got {track.shape}"
            )


def _cut_videos(
    video_path: Path, jobs: list[tuple[ClipVideoRequest, Path]], fps_in: float, fps_out: float
) -> None:
    """Decode each needed frame once and feed it to every clip sampling it."""
    if fps_in <= 0 or fps_out <= 0:
        raise ValueError(f"fps must be positive, got fps_in={fps_in}, fps_out={fps_out}")
    # One decoder thread: on a shared machine extra threads cost more than they give.
    capture = cv2.VideoCapture(str(video_path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        raise ValueError(f"{video_path}: cannot be opened as a video")
    n_video_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    for clip, _ in jobs:
        _check_request(clip, n_video_frames)
    samples = [_sample_frames(clip, fps_in, fps_out) for clip, _ in jobs]
    users: dict[int, list[int]] = {}
    for job_index, frames in enumerate(samples):
        for frame in frames.tolist():
            users.setdefault(frame, []).append(job_index)
    writers: dict[int, cv2.VideoWriter] = {}
    tmp_names: dict[int, str] = {}
    position = -1
    try:
        for frame_index in sorted(users):
            if position < 0 or frame_index - position > SEEK_GAP_FRAMES:
                capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
                position = frame_index
            while position < frame_index:
                capture.grab()
                position += 1
            ok, image = capture.read()
            position += 1
            if not ok:
                raise ValueError(f"{video_path}: frame {frame_index} cannot be read")
            image, scale = _downscale(image)
            for job_index in users[frame_index]:
                clip, out_path = jobs[job_index]
                if job_index not in writers:
                    tmp_names[job_index] = _temporary_path(out_path)
                    writers[job_index] = _open_writer(
                        tmp_names[job_index], image, min(fps_in, fps_out)
                    )
                writers[job_index].write(_annotate(image, scale, clip, frame_index, fps_in))
                if frame_index == samples[job_index][-1]:
                    writers.pop(job_index).release()
        for job_index, tmp_name in tmp_names.items():
            os.replace(tmp_name, jobs[job_index][1])
    except BaseException:
        for writer in writers.values():
            writer.release()
        for tmp_name in tmp_names.values():
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        raise
    finally:
        capture.release()


def _downscale(image: np.ndarray) -> tuple[np.ndarray, float]:
    scale = min(1.0, MAX_VIDEO_SIDE_PX / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _temporary_path(out_path: Path) -> str:
    """A fresh file beside ``out_path``, ending in ``.mp4`` so OpenCV picks the container."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{out_path.stem}.", suffix=".mp4", dir=out_path.parent
    )
    os.close(handle)
    return tmp_name


def _open_writer(tmp_name: str, image: np.ndarray, fps: float) -> cv2.VideoWriter:
    size = (image.shape[1], image.shape[0])
    writer = cv2.VideoWriter(tmp_name, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise ValueError(f"{tmp_name}: cannot open an mp4v video writer")
    return writer


def _annotate(
    image: np.ndarray, scale: float, clip: ClipVideoRequest, frame_index: int, fps_in: float
) -> np.ndarray:
    """A copy of ``image`` with the focal animal, the others and the caption drawn."""
    canvas = image.copy()
    row = frame_index - clip.start_frame
    for name, track in clip.other_tracks.items():
        _draw_marker(canvas, track[row] * scale, name, OTHER_COLOR_BGR, thickness=1)
    _draw_marker(canvas, clip.focal_track[row] * scale, clip.focal_name, FOCAL_COLOR_BGR, 2)
    caption = f"{clip.label}  {frame_index / fps_in:.1f}s".strip()
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1], 22), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, FOCAL_COLOR_BGR, 1)
    return canvas


def _draw_marker(
    canvas: np.ndarray, position: np.ndarray, name: str, color: tuple[int, int, int], thickness: int
) -> None:
    """Box ``(4,)`` or circle at centroid ``(2,)``; nothing where the position is NaN."""
    if not np.all(np.isfinite(position)):
        return
    if position.shape[0] == 4:
        x0, y0, x1, y1 = (round(value) for value in position)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        anchor = (x0, max(y0 - 4, 30))
    else:
        x, y = round(position[0]), round(position[1])
        cv2.circle(canvas, (x, y), 6 + 4 * thickness, color, thickness, cv2.LINE_AA)
        anchor = (x + 10 + 4 * thickness, y)
    if name:
        cv2.putText(canvas, name, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
