"""Per-frame data of a pose run outside the graph state.

Graph state stays small (frame indices, counters, short lists); arrays live
here, in the run's cache directory, referenced by path:

* ``centroids/NNNNNN.npz``: the centroids of every camera of one frame;
* ``frames.bin``: one fixed-size float64 record per accepted frame, appended
  with a single ``write``. A run killed mid-frame leaves at most a partial
  record at the end, which is cut when the store is reopened; a frame written
  twice (redone after a resume) keeps its last record, identical to the first
  because the pipeline is deterministic.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
import types
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent import centroid_child
from agent.pose_results import write_keypoints_2d, write_keypoints_3d, write_qc
from agent.recording import Recording
from tools.centroids import detect_centroids

STAGES = ("", "seed", "within_region", "reconcile", "refine")
MODEL_REASON = "model"  # qc.csv reason of a label whose model answer stayed invalid after retries
# The frame log stores reasons by index in this table: new reasons go at the end, so
# that a run resumed by a newer version still reads the frames it logged.
REASON_CODES = ("", "unassigned", "few_cameras", "reprojection", "low_margin", "jump", "body",
                "unchecked", "reacquired", MODEL_REASON, "side")


@dataclass(frozen=True)
class FrameRecord:
    """Everything the results files need about one accepted frame.

    Shapes: ``points_3d (n_keypoints, 3)``; ``error_px``, ``ncams``, ``score``,
    ``flagged``, ``reason`` ``(n_keypoints,)``; ``points_2d (n_cameras,
    n_keypoints, 2)``; ``centroid``, ``view_error_px``, ``stage``
    ``(n_cameras, n_keypoints)``.
    """

    frame: int
    points_3d: np.ndarray
    error_px: np.ndarray
    ncams: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    reason: np.ndarray
    points_2d: np.ndarray
    centroid: np.ndarray
    view_error_px: np.ndarray
    stage: np.ndarray


def untracked_record(frame: int, n_cameras: int, n_keypoints: int) -> FrameRecord:
    """The record of a frame the pipeline did not track: no labels, every keypoint flagged ``untracked``."""
    missing = np.full(n_keypoints, np.nan)
    return FrameRecord(
        frame=frame, points_3d=np.full((n_keypoints, 3), np.nan), error_px=missing.copy(),
        ncams=np.zeros(n_keypoints, np.int64), score=np.zeros(n_keypoints),
        flagged=np.ones(n_keypoints, bool), reason=np.full(n_keypoints, UNTRACKED),
        points_2d=np.full((n_cameras, n_keypoints, 2), np.nan),
        centroid=np.full((n_cameras, n_keypoints), -1, np.int64),
        view_error_px=np.full((n_cameras, n_keypoints), np.nan),
        stage=np.full((n_cameras, n_keypoints), ""))


class FrameStore:
    """Centroid files and the append-only frame log of one run (thread-safe)."""

    def __init__(self, cache_dir: str | Path, n_cameras: int, n_keypoints: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.centroids_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.cache_dir / "frames.bin"
        self.n_cameras, self.n_keypoints = n_cameras, n_keypoints
        self._lock = threading.Lock()
        self._recent: dict[str, list[np.ndarray]] = {}
        self._records: dict[int, FrameRecord] = {}
        self._drop_partial_record()

    def _drop_partial_record(self) -> None:
        """Cut a record that a killed run left half-written, so later appends stay aligned."""
        if self.log_path.exists():
            record_bytes = 8 * self.record_size
            size = self.log_path.stat().st_size
            if size % record_bytes:
                os.truncate(self.log_path, size - size % record_bytes)

    @property
    def record_size(self) -> int:
        return 1 + 8 * self.n_keypoints + 5 * self.n_cameras * self.n_keypoints

    @property
    def centroids_dir(self) -> Path:
        """Where each frame's centroids are saved (:func:`agent.centroid_child.save_centroids`)."""
        return self.cache_dir / "centroids"

    def saved_centroids(self, frame: int, centroids: list[np.ndarray]) -> str:
        """The path of ``frame``'s centroid file, which detection wrote; ``centroids`` are kept in memory for the frame.

        The detection that gave ``centroids`` saved them in :attr:`centroids_dir`
        (:class:`CentroidPrefetch` with ``centroids_dir``) before answering.
        """
        path = str(centroid_child.centroids_file(self.centroids_dir, frame))
        if not os.path.exists(path):  # a resume and the results' free-dot search read the file
            raise RuntimeError(f"{path}: detection did not save frame {frame}'s centroids "
                               "(CentroidPrefetch needs the store's centroids_dir)")
        with self._lock:
            self._recent = {path: centroids}
        return path

    def load_centroids(self, path: str) -> list[np.ndarray]:
        """The per-camera ``(n_c, 2)`` centroids saved at ``path`` (memoised for the current frame)."""
        with self._lock:
            if path in self._recent:
                return self._recent[path]
        centroids = _read_centroids(path)
        with self._lock:
            self._recent = {path: centroids}
        return centroids

    def centroids_of(self, frame: int) -> list[np.ndarray] | None:
        """The centroids saved for ``frame``, None if there are none."""
        path = centroid_child.centroids_file(self.centroids_dir, frame)
        return _read_centroids(path) if path.exists() else None

    def append(self, record: FrameRecord) -> None:
        """Append one frame's record to the log with a single write."""
        parts = [
            np.array([record.frame], dtype=np.float64), record.points_3d, record.error_px,
            record.ncams, record.score, record.flagged, _codes(record.reason, REASON_CODES),
            record.points_2d, record.centroid, record.view_error_px, _codes(record.stage, STAGES),
        ]
        data = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]).tobytes()
        with self._lock:
            self._records[record.frame] = record
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        descriptor = os.open(self.log_path, flags, 0o644)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)

    def read_all(self) -> list[FrameRecord]:
        """Every accepted frame once (its last record), by frame."""
        if not self.log_path.exists():
            return []
        values = np.fromfile(self.log_path, dtype=np.float64)
        values = values[: values.size - values.size % self.record_size].reshape(-1, self.record_size)
        latest = {int(row[0]): row for row in values}
        records = [self._unpack(latest[frame]) for frame in sorted(latest)]
        with self._lock:
            self._records.update({record.frame: record for record in records})
        return records

    def has(self, frames: list[int]) -> bool:
        """Whether every one of ``frames`` is accepted (the log is read when some are not in memory)."""
        with self._lock:
            missing = any(frame not in self._records for frame in frames)
        if missing:
            self.read_all()
            with self._lock:
                return all(frame in self._records for frame in frames)
        return True

    def window(self, frames: list[int]) -> list[dict]:
        """Rolling-window entries of accepted ``frames``: ``frame``, ``points_2d (C, K, 2)``, ``points_3d (K, 3)``."""
        with self._lock:
            missing = [frame for frame in frames if frame not in self._records]
        if missing:
            self.read_all()
        with self._lock:
            return [{"frame": frame, "points_2d": self._records[frame].points_2d,
                     "points_3d": self._records[frame].points_3d} for frame in frames]

    def _unpack(self, row: np.ndarray) -> FrameRecord:
        n_k, n_ck = self.n_keypoints, self.n_cameras * self.n_keypoints
        sizes = [1, 3 * n_k, n_k, n_k, n_k, n_k, n_k, 2 * n_ck, n_ck, n_ck, n_ck]
        parts = np.split(row, np.cumsum(sizes)[:-1])
        views = (self.n_cameras, self.n_keypoints)
        return FrameRecord(
            frame=int(parts[0][0]), points_3d=parts[1].reshape(n_k, 3), error_px=parts[2],
            ncams=parts[3].astype(np.int64), score=parts[4], flagged=parts[5].astype(bool),
            reason=np.array(REASON_CODES)[parts[6].astype(int)],
            points_2d=parts[7].reshape(*views, 2), centroid=parts[8].astype(np.int64).reshape(views),
            view_error_px=parts[9].reshape(views),
            stage=np.array(STAGES)[parts[10].astype(int)].reshape(views),
        )


def _read_centroids(path: str | Path) -> list[np.ndarray]:
    """The per-camera ``(n_c, 2)`` centroids of a :func:`agent.centroid_child.save_centroids` file."""
    with np.load(path) as archive:
        xy, counts = archive["xy"], archive["counts"]
    return np.split(xy, np.cumsum(counts)[:-1])


class FrameMemo:
    """Results of pure computations on the current frame, kept in memory (never checkpointed).

    Several graph steps of one frame need the same motion prediction and
    Stage 1 views; computing them once per frame saves their cost. When
    parallel tasks ask for the same value at once (a model backend's cameras
    start together), one computes it and the others wait for it. Only the
    latest frame's entries are kept (the reviewed records at the end of a run
    use a slot of their own, :data:`graphs.pose.RESULTS_MEMO_FRAME`). An empty memo (a resumed run) simply
    recomputes, so results never depend on it. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: int | None = None
        self._values: dict[Hashable, Future[Any]] = {}

    def get(self, frame: int, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` for ``key`` of ``frame``, computed at most once while ``frame`` is current."""
        with self._lock:
            if frame != self._frame:
                self._frame, self._values = frame, {}
            entry = self._values.get(key)
            owner = entry is None
            if owner:
                entry = self._values[key] = Future()
        if not owner:
            return entry.result()
        try:
            entry.set_result(compute())
        except BaseException as error:
            entry.set_exception(error)
            with self._lock:  # a later call tries again
                if self._values.get(key) is entry:
                    del self._values[key]
        return entry.result()


BACKWARD_BLOCK_FRAMES = 16  # frames a backward run detects per job, read forward after one seek


class CentroidPrefetch:
    """Centroids of every camera's fluorescence frame, detected ahead of the graph.

    :meth:`get` returns frame ``t``'s centroids and has the next frames
    started, so decoding and detection overlap the graph's work on frame
    ``t``. Detection is a pure function of the frame, so results do not
    depend on where or when it runs. Only fluorescence is decoded.

    With ``processes`` the work runs in one child process, ``read_ahead``
    frames ahead: in a thread it shares the interpreter lock with the graph,
    and a 300-frame run took 12.2 s against 8.6 s with every frame's
    centroids ready (bench/results/pose-speed.md). The child is spawned, not
    forked: OpenCV's thread pool does not survive a fork (opencv/opencv#5150),
    and a child forked after the parent had run OpenCV could hang in its first
    call. It starts here and imports :mod:`agent.centroid_child` (~0.2 s)
    while the parent prepares its graph, and holds the streams open twice; short runs use a
    thread (``processes`` False, one frame ahead). It does not import the
    caller's main module (:func:`_main_module_hidden`), so a script calling
    the pipeline needs no ``if __name__ == "__main__"`` guard. An error in the
    child (a stream that cannot be opened or a frame that cannot be read) is
    raised by :meth:`get` as in a thread. With ``centroids_dir`` each frame's
    centroids are saved there (:func:`agent.centroid_child.save_centroids`)
    before :meth:`get` has them, by the child or the thread.
    """

    def __init__(self, recording: Recording, processes: bool = False, read_ahead: int = 4,
                 centroids_dir: str | Path | None = None) -> None:
        self.recording = recording
        # Where the worker saves each frame's centroids before answering (None: nowhere).
        self._directory = None if centroids_dir is None else str(centroids_dir)
        self.read_ahead = read_ahead if processes else 1
        if processes:
            self._pool: ThreadPoolExecutor | _ChildWorker = _ChildWorker(
                [str(recording.stream_path(camera, "fluorescence")) for camera in recording.cameras])
            self._detect: Callable[[int, str | None], list[np.ndarray]] = (
                centroid_child.detect_opened)
            self._detect_many: Callable[[list[int], str | None], list] = (
                centroid_child.detect_opened_many)
        else:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="centroids")
            self._detect = self._detect_here
            self._detect_many = self._detect_many_here
        # Frame -> its job, and its place in the job's answer (None: the job is that frame alone).
        self._pending: dict[int, tuple[Future, int | None]] = {}

    def _detect_here(self, frame: int, directory: str | None) -> list[np.ndarray]:
        return centroid_child.saved(frame, [
            detect_centroids(self.recording.fluorescence(camera).read(frame)).xy
            for camera in self.recording.cameras], directory)

    def _detect_many_here(self, frames: list[int], directory: str | None
                          ) -> list[list[np.ndarray]]:
        return [self._detect_here(frame, directory) for frame in frames]

    def get(self, frame: int, step: int = 1) -> list[np.ndarray]:
        """One ``(n_c, 2)`` array of centroids per camera of ``frame``, in detection order.

        ``step`` is the direction tracking runs in (1 forward, -1 backward):
        the frames after ``frame`` in that direction are detected ahead.
        """
        if step < 0:
            return self._get_backward(frame)
        current = self._pending.pop(frame, None) or (
            self._pool.submit(self._detect, frame, self._directory), None)
        # Frames behind the one asked for are never asked for again (a resume starts anew).
        self._pending = {t: job for t, job in self._pending.items() if t > frame}
        for following in range(frame + 1, min(frame + 1 + self.read_ahead, self.recording.n_frames)):
            if following not in self._pending:
                self._pending[following] = (
                    self._pool.submit(self._detect, following, self._directory), None)
        return _answer(current)

    def _get_backward(self, frame: int) -> list[np.ndarray]:
        """``get`` while tracking backward: frames are decoded in forward blocks (a backward read is a seek)."""
        if frame not in self._pending:
            self._submit_block(frame)
        current = self._pending.pop(frame)
        self._pending = {t: job for t, job in self._pending.items() if t < frame}
        ahead = frame - self.read_ahead
        if ahead >= 0 and ahead not in self._pending:
            self._submit_block(ahead)
        return _answer(current)

    def _submit_block(self, last: int) -> None:
        """Detect ``BACKWARD_BLOCK_FRAMES`` frames up to ``last`` in one job, reading them in order."""
        frames = [t for t in range(max(0, last - BACKWARD_BLOCK_FRAMES + 1), last + 1)
                  if t not in self._pending]
        job = self._pool.submit(self._detect_many, frames, self._directory)
        self._pending.update({frame: (job, index) for index, frame in enumerate(frames)})

    def close(self) -> None:
        """Stop the worker (pending frames are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _answer(pending: tuple[Future, int | None]) -> list[np.ndarray]:
    """A pending frame's centroids: its job's answer, or its place in a block's answer."""
    job, index = pending
    return job.result() if index is None else job.result()[index]


class _ChildWorker:
    """One spawned child process that runs the jobs sent to it over a pipe, in order.

    The caller's thread sends each job and reads the answers itself (a job's
    future reads answers up to its own when its result is asked for), so no
    helper thread competes with the graph for the interpreter lock: a
    ``ProcessPoolExecutor`` wakes two such threads per job, which cost the
    graph's thread ~2.5 ms a frame. The child opens the fluorescence
    ``paths`` once (:mod:`agent.centroid_child`); it ends at :meth:`shutdown`
    or when the parent's end of the pipe closes.
    """

    def __init__(self, paths: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        with _main_module_hidden():
            self._process = context.Process(target=centroid_child.serve_jobs,
                                            args=(paths, child_end), daemon=True, name="centroids")
            self._process.start()
        child_end.close()
        self._unanswered: deque[_ChildFuture] = deque()

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Send ``function(*args)`` (a module-level function) to the child; its answer's future."""
        future = _ChildFuture(self)
        future.set_running_or_notify_cancel()
        self._connection.send((function, args))
        self._unanswered.append(future)
        return future

    def read_answer(self) -> None:
        """Settle the oldest unanswered job's future with the child's answer."""
        future = self._unanswered.popleft()
        try:
            succeeded, value, remote_traceback = self._connection.recv()
        except (EOFError, OSError):
            future.set_exception(RuntimeError(
                f"the centroid detection process ended (exit code {self._process.exitcode})"))
            return
        except Exception as exc:  # noqa: BLE001 - an answer that cannot be unpickled
            future.set_exception(exc)
            return
        if succeeded:
            future.set_result(value)
        else:
            # As ProcessPoolExecutor does: the child's traceback as the error's cause.
            value.__cause__ = RuntimeError(f"in the centroid detection process:\n{remote_traceback}")
            future.set_exception(value)

    def shutdown(self, wait: bool = True, cancel_futures: bool = True) -> None:
        """Stop the child; jobs not yet answered are dropped (``ThreadPoolExecutor.shutdown``'s
        signature: ``cancel_futures`` changes nothing, and without ``wait`` the child is
        killed at once)."""
        try:
            self._connection.send(None)
        except OSError:
            pass
        self._connection.close()
        if wait:
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class _ChildFuture(Future):
    """A :class:`_ChildWorker` job's future: asking for its result reads the answers up to it.

    Only :meth:`result` reads answers (``timeout`` is not honoured while it
    does): ``exception()``, callbacks and ``concurrent.futures.wait`` would
    wait for a reader that never comes. :class:`CentroidPrefetch` asks for
    results only.
    """

    def __init__(self, worker: _ChildWorker) -> None:
        super().__init__()
        self._worker = worker

    def result(self, timeout: float | None = None) -> Any:
        while not self.done():
            self._worker.read_answer()
        return super().result(timeout)


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawn children that do not import the parent's ``__main__``.

    A spawned child runs the parent's main script again (all but its
    ``if __name__ == "__main__"`` block) before its first job; an unguarded
    script calling ``run_pose`` would start a second run in the child. The
    child's jobs live in this module, so it is started while ``__main__`` is a
    bare module with neither a file nor a spec, which multiprocessing leaves
    alone.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def model_flags(previous: dict[str, str], redone: list[str], answers: list[dict]) -> dict[str, str]:
    """One camera's ``{keypoint: reason}`` of labels whose model answer stayed invalid.

    ``previous`` minus the ``redone`` keypoints, plus every keypoint of a
    flagged answer (Stage 2 or 3 dumps with ``labels``, ``flagged``, ``reason``)
    whose reason is a model failure (``model_*``). Other reasons (nothing in
    the box, unassigned) are left to quality control, which sees them anyway.
    """
    flags = {keypoint: reason for keypoint, reason in previous.items() if keypoint not in redone}
    for answer in answers:
        if answer["flagged"] and answer["reason"].startswith(MODEL_REASON):
            flags.update({label["keypoint"]: answer["reason"] for label in answer["labels"]})
    return flags


def flag_model_labels(keypoints: list[str], flagged: list[bool], reason: list[str],
                      flags_by_camera: dict[str, dict[str, str]]) -> tuple[list[bool], list[str]]:
    """Quality control's ``flagged`` and ``reason`` per keypoint, with model-flagged labels added.

    A keypoint labelled from an invalid model answer in any camera is flagged
    with :data:`MODEL_REASON` unless quality control flagged it already.
    """
    by_model = {keypoint for flags in flags_by_camera.values() for keypoint in flags}
    flagged, reason = list(flagged), list(reason)
    for i, keypoint in enumerate(keypoints):
        if keypoint in by_model and not flagged[i]:
            flagged[i], reason[i] = True, MODEL_REASON
    return flagged, reason


def _codes(values: np.ndarray, table: tuple[str, ...]) -> np.ndarray:
    lookup = {name: code for code, name in enumerate(table)}
    return np.array([lookup[str(v)] for v in np.ravel(values)], dtype=np.float64)


UNTRACKED = "untracked"  # qc.csv reason of a frame the run did not reach


def padded_records(records: list[FrameRecord], n_cameras: int, n_keypoints: int
                   ) -> list[FrameRecord]:
    """One record per frame from frame 0 to the last of ``records``.

    A frame without a record (the run did not reach it: ``--max-frames``
    stopped before a later seed frame) gets an empty one flagged ``untracked``.
    """
    logged = {r.frame: r for r in records}
    return [logged.get(frame) or untracked_record(frame, n_cameras, n_keypoints)
            for frame in range(max(logged, default=-1) + 1)]


def write_results_files(out: str | Path, cameras: list[str], keypoints: list[str],
                        records: list[FrameRecord], mm_per_unit: float = 1.0) -> None:
    """``keypoints_3d.csv``, ``keypoints_2d.csv`` and ``qc.csv`` of FORMATS.md section 2.

    One row per frame from frame 0 on (:func:`padded_records`).
    """
    out = Path(out)
    records = padded_records(records, len(cameras), len(keypoints))
    frames = np.array([r.frame for r in records], dtype=np.int64)

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(r, name) for r in records])

    points_3d, error, ncams = stack("points_3d"), stack("error_px"), stack("ncams")
    # Points are tracked in millimetres; results are in the calibration's units.
    write_keypoints_3d(out / "keypoints_3d.csv", keypoints, frames, points_3d / mm_per_unit,
                       error, ncams, stack("score"),
                       decimals=4 + max(0, math.ceil(math.log10(mm_per_unit))))
    write_keypoints_2d(out / "keypoints_2d.csv", cameras, keypoints, frames, stack("points_2d"),
                       stack("centroid"), stack("view_error_px"), stack("stage"))
    write_qc(out / "qc.csv", keypoints, frames, error, ncams, stack("flagged"), stack("reason"))
