"""Frame streams: random access to frame ``t`` of a video file or an image folder.

A recording (FORMATS.md section 1) stores each camera's reflectance and
fluorescence stream either as a video (``.mp4``/``.avi``, any codec OpenCV
reads) or as a folder of images ordered by file name. :func:`open_stream`
hides the difference behind :class:`FrameStream`: ``read(t)`` returns frame
``t`` as a single-channel 2D array ``(height, width)``.

Reading is the hot path of the pose pipeline, so a video stays open, frames
read in order are decoded one after the other, and only a jump backwards or
far ahead costs a seek.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

import numpy as np

# FFmpeg prints decoder complaints about damaged files straight to stderr,
# which would break the CLI's one-line error contract: problems are reported
# as InputError instead. Set before cv2 opens its first capture; a user who
# wants the decoder's view can set the variable themselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402  (must follow the log-level setting above)

from agent.errors import InputError  # noqa: E402

VIDEO_SUFFIXES = (".mp4", ".avi")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
STREAM_KINDS = ("reflectance", "fluorescence")

# A jump ahead of at most this many frames is decoded through rather than
# seeked: one seek in OpenCV's FFmpeg backend costs about as much as decoding
# 15-20 frames, for mp4v and MJPG alike (bench/results/recording-io.md).
_MAX_FORWARD_GRAB = 16


def _to_gray(frame: np.ndarray) -> np.ndarray:
    """Reduce an OpenCV image (H, W), (H, W, 3) or (H, W, 4) to one channel, dtype kept."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


class FrameStream(ABC):
    """A sequence of single-channel frames with random access.

    Attributes
    ----------
    path : Path
        The video file or image folder.
    n_frames : int
        Number of frames.
    size : tuple[int, int]
        Frame ``(width, height)`` in pixels.

    Notes
    -----
    ``read`` is safe to call from several threads: calls on one stream are
    serialized by a lock, because an OpenCV capture is not thread-safe.
    """

    def __init__(self, path: Path, n_frames: int, size: tuple[int, int]) -> None:
        self.path = path
        self.n_frames = n_frames
        self.size = size
        self._lock = threading.Lock()

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as a 2D array ``(height, width)``, uint8 (or uint16 for 16-bit images).

        Raises
        ------
        IndexError
            ``t`` outside ``[0, n_frames)``.
        InputError
            The frame cannot be decoded or has the wrong size.
        """
        t = int(t)
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} out of range [0, {self.n_frames}) in {self.path}")
        with self._lock:
            frame = self._read(t)
        height_width = (self.size[1], self.size[0])
        if frame.shape != height_width:
            raise InputError(
                self.path,
                f"frame {t} has size {frame.shape[1]}x{frame.shape[0]}, "
                f"expected {self.size[0]}x{self.size[1]} like frame 0",
            )
        return frame

    @abstractmethod
    def _read(self, t: int) -> np.ndarray:
        """Decode frame ``t`` (already range-checked) to one channel."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying file handles (idempotent)."""

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, n_frames={self.n_frames}, size={self.size})"
        )


class VideoStream(FrameStream):
    """A video file read through one long-lived ``cv2.VideoCapture``.

    On open, the last declared frame is decoded, so a truncated file fails
    here rather than halfway through a run. Where the container declares no
    frame count, frames are counted by decoding them once.
    """

    def __init__(self, path: Path) -> None:
        self._capture = self._open_capture(path)
        self._next_index = 0
        try:
            declared = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
            n_frames = declared if declared > 0 else self._count_frames(path)
            if n_frames == 0:
                raise InputError(path, "video has no frames")
            last = self._decode_last(path, n_frames, declared)
        except InputError:
            self._capture.release()
            raise
        super().__init__(path, n_frames, (last.shape[1], last.shape[0]))

    @staticmethod
    def _open_capture(path: Path) -> cv2.VideoCapture:
        # FFmpeg alone: OpenCV's fallback readers print parse errors for a
        # damaged file to stderr, and FFmpeg's refusal is a logged warning.
        backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
        previous_level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            capture = cv2.VideoCapture(str(path), backend)
        finally:
            cv2.utils.logging.setLogLevel(previous_level)
        if not capture.isOpened():
            raise InputError(
                path, "cannot open video (unreadable or not a video OpenCV can decode)"
            )
        return capture

    def _count_frames(self, path: Path) -> int:
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while self._capture.grab():
            count += 1
        self._capture.release()
        self._capture = self._open_capture(path)
        return count

    def _decode_last(self, path: Path, n_frames: int, declared: int) -> np.ndarray:
        """Decode frame ``n_frames - 1`` and leave the capture positioned after it."""
        if self._seek(n_frames - 1):
            ok, frame = self._capture.read()
            if ok and frame is not None:
                self._next_index = n_frames
                return _to_gray(frame)
        readable = self._count_frames(path)
        if readable < declared:
            raise InputError(
                path,
                f"truncated video: declares {declared} frames but only {readable} can be decoded",
            )
        raise InputError(path, f"cannot decode frame {n_frames - 1} (the last frame)")

    def _seek(self, t: int) -> bool:
        """Position the capture so that the next ``read`` returns frame ``t``; False on failure."""
        known, gap = self._next_index >= 0, t - self._next_index
        self._next_index = -1  # unknown until the seek succeeds
        if known and 0 <= gap <= _MAX_FORWARD_GRAB:
            for _ in range(gap):
                if not self._capture.grab():
                    return False
        else:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, t)
            if int(self._capture.get(cv2.CAP_PROP_POS_FRAMES)) != t:
                # Inexact seek (some codecs land on a keyframe): decode from the start.
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                for _ in range(t):
                    if not self._capture.grab():
                        return False
        self._next_index = t
        return True

    def _read(self, t: int) -> np.ndarray:
        if t != self._next_index and not self._seek(t):
            raise InputError(self.path, f"cannot seek to frame {t}")
        ok, frame = self._capture.read()
        if not ok or frame is None:
            self._next_index = -1  # position unknown: the next read seeks explicitly
            raise InputError(self.path, f"cannot decode frame {t}")
        self._next_index = t + 1
        return _to_gray(frame)

    def close(self) -> None:
        self._capture.release()


def _natural_key(name: str) -> tuple:
    """Sort key of a file name with its digit runs compared as numbers.

    ``frame_2.png`` comes before ``frame_10.png``; zero-padded names sort as
    they do by plain name. Ties (``frame_01`` vs ``frame_1``) fall back to the name.
    """
    parts = re.split(r"(\d+)", name)  # the digit runs are the odd parts
    return tuple((0, int(part), "") if odd else (1, 0, part)
                 for odd, part in zip(itertools.cycle((False, True)), parts)), name


class ImageFolderStream(FrameStream):
    """A folder of images (``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg``), ordered by file name.

    16-bit images stay uint16; colour images are converted to gray.
    """

    def __init__(self, path: Path) -> None:
        self.files = sorted(
            (entry for entry in path.iterdir()
             if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")),
            key=lambda entry: _natural_key(entry.name),
        )
        if not self.files:
            raise InputError(path, f"image folder has no {'/'.join(IMAGE_SUFFIXES)} files")
        first = self._load(self.files[0])
        super().__init__(path, len(self.files), (first.shape[1], first.shape[0]))

    @staticmethod
    def _load(file: Path) -> np.ndarray:
        image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise InputError(file, "cannot read image")
        return _to_gray(image)

    def _read(self, t: int) -> np.ndarray:
        return self._load(self.files[t])

    def close(self) -> None:
        """Nothing to release: each read opens and closes its file."""


def open_stream(path: str | Path) -> FrameStream:
    """Open a video file or image folder, given with or without its suffix.

    ``videos/cam0-reflectance`` finds ``cam0-reflectance.mp4``,
    ``cam0-reflectance.avi`` or the folder ``cam0-reflectance/``.

    Raises
    ------
    InputError
        No such stream, several candidates, unreadable or truncated video,
        empty folder or unreadable first image.
    """
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        return VideoStream(path)
    if path.is_dir():
        return ImageFolderStream(path)
    found = _video_files(path)
    if len(found) > 1:
        raise InputError(path, f"ambiguous stream: both {found[0].name} and {found[1].name} exist")
    if found:
        return VideoStream(found[0])
    raise InputError(
        path, f"stream not found (expected a {' or '.join(VIDEO_SUFFIXES)} file or an image folder)"
    )


def resolve_stream(videos_dir: str | Path, camera: str, kind: str) -> Path:
    """Path of the stream ``CAMERA-KIND`` in ``videos_dir``: a video file or an image folder.

    Raises
    ------
    InputError
        ``kind`` unknown, the stream is absent, or both a file and a folder
        (or two files) claim the name.
    """
    if kind not in STREAM_KINDS:
        raise ValueError(f"kind must be one of {STREAM_KINDS}, got {kind!r}")
    stem = Path(videos_dir) / f"{camera}-{kind}"
    found = _video_files(stem)
    if stem.is_dir():
        found.append(stem)
    if not found:
        raise InputError(
            stem,
            f"stream not found: expected {stem.name}.mp4, {stem.name}.avi or a folder {stem.name}/",
        )
    if len(found) > 1:
        names = ", ".join(candidate.name for candidate in found)
        raise InputError(stem, f"ambiguous stream: {names} all exist")
    return found[0]


def _video_files(stem: Path) -> list[Path]:
    """The files ``STEM.mp4`` / ``STEM.avi`` next to ``stem``, the suffix in any case (``.MP4``)."""
    if not stem.parent.is_dir():
        return []
    found = [entry for entry in stem.parent.iterdir()
             if entry.name[:len(stem.name)] == stem.name
             and entry.name[len(stem.name):].lower() in VIDEO_SUFFIXES and entry.is_file()]
    return sorted(found, key=lambda entry: VIDEO_SUFFIXES.index(entry.suffix.lower()))
