"""The detection child of :class:`agent.pose_frames.CentroidPrefetch`: what runs in it.

With a directory, each frame's centroids are written there too
(:func:`save_centroids`, the format of the run's ``centroids/NNNNNN.npz``)
before they are answered: the child has time to spare, and writing them
cost the graph's process ~0.2 s per 500 frames.

The child is spawned and imports the module of the functions it runs. This
one imports only what detection needs (OpenCV, numpy, the streams and
:func:`tools.centroids.detect_centroids`): :mod:`agent.pose_frames` pulls in
pandas through the results writers, and the child's first answer came 0.31-0.40 s
after the spawn against 0.20-0.21 s, while the graph waited for its first frame.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.allocator import keep_freed_memory
from agent.streams import FrameStream, open_stream
from tools.centroids import detect_centroids

_OPENED: list[FrameStream] = []  # the child process's fluorescence streams, one per camera
_OPEN_ERROR: list[Exception] = []  # why the child could not open them, raised by each job


def serve_jobs(paths: list[str], connection: Any) -> None:
    """The child process: open the streams, then answer each job sent over ``connection`` in turn."""
    _open_fluorescence(paths)
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if job is None:
            return
        function, args = job
        try:
            answer = (True, function(*args), "")
        except Exception as exc:  # noqa: BLE001 - the parent raises it where it asks
            answer = (False, exc, traceback.format_exc())
        try:
            connection.send(answer)
        except OSError:  # the parent is gone (killed): nobody to answer
            return
        except Exception:  # noqa: BLE001 - an error that cannot be pickled: its text instead
            connection.send((False, RuntimeError(repr(answer[1])), answer[2]))


def _open_fluorescence(paths: list[str]) -> None:
    """The detection child's start: ``python -m agent.run``'s allocator setting, then the fluorescence streams, opened once.

    An error is kept and raised by every job, so that the parent reports it
    where it asks for a frame.
    """
    keep_freed_memory()
    cv2.setNumThreads(1)  # OpenCV's own threads would only compete with the graph's process
    try:
        _OPENED[:] = [open_stream(path) for path in paths]
    except Exception as exc:  # noqa: BLE001 - any error is the parent's to report
        _OPEN_ERROR[:] = [exc]


def detect_opened(frame: int, directory: str | None = None) -> list[np.ndarray]:
    """Centroids of ``frame`` in each stream the child process opened (saved in ``directory``, if given)."""
    if _OPEN_ERROR:
        raise _OPEN_ERROR[0]
    return saved(frame, [detect_centroids(stream.read(frame)).xy for stream in _OPENED], directory)


def detect_opened_many(frames: list[int], directory: str | None = None) -> list[list[np.ndarray]]:
    """:func:`detect_opened` of each of ``frames`` (increasing: the streams read on without seeking)."""
    return [detect_opened(frame, directory) for frame in frames]


def centroids_file(directory: str | Path, frame: int) -> Path:
    """The file of ``frame``'s centroids in ``directory``."""
    return Path(directory) / f"{frame:06d}.npz"


def saved(frame: int, centroids: list[np.ndarray], directory: str | None) -> list[np.ndarray]:
    """``centroids``, written to ``frame``'s file in ``directory`` first unless it is None."""
    if directory is not None:
        save_centroids(centroids_file(directory, frame), centroids)
    return centroids


def save_centroids(path: Path, centroids: list[np.ndarray]) -> None:
    """Write one ``(n_c, 2)`` array per camera to ``path``, atomically.

    Detection runs frames ahead of the graph: a run killed while a file is
    written leaves a temporary file, never a half-written ``path``. The
    temporary file is the process's own: the child of a killed run may still
    be finishing a job while ``--resume`` detects the same frames.
    """
    counts = np.array([len(c) for c in centroids])
    xy = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in centroids])
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:  # a file, not a name: savez would add ".npz"
        np.savez(handle, xy=xy, counts=counts)
    os.replace(temporary, path)
