"""Stage 3 of behavior segmentation: cut per-animal cluster labels into short clips.

DEC labels frames; this module turns each animal's label sequence into
over-segmented clips of about ``min_clip_s`` to ``max_clip_s`` seconds, which
:mod:`tools.clip_video` renders as short videos for captioning.
Over-segmentation is the point: clips that a later stage finds alike are merged
again, while a boundary removed here is lost for good.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipSpan:
    """Frames ``[start_frame, end_frame)`` of one animal, mostly in ``cluster``."""

    start_frame: int
    end_frame: int
    cluster: int


def label_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels.

    Parameters
    ----------
    labels : np.ndarray
        ``(n_frames,)`` integer labels.

    Returns
    -------
    starts, ends, values : np.ndarray
        ``(n_runs,)`` each: run ``r`` covers ``[starts[r], ends[r])`` with label ``values[r]``.
    """
    _check_labels(labels)
    if labels.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [labels.size]]).astype(np.int64)
    return starts, ends, labels[starts].astype(np.int64)


def _check_labels(labels: np.ndarray) -> None:
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        raise ValueError(f"labels must be (n_frames,), got {getattr(labels, 'shape', None)}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError(f"labels must be non-negative integers, got dtype {labels.dtype}")


def smooth_labels(labels: np.ndarray, soft: np.ndarray | None, min_run_frames: int) -> np.ndarray:
    """Merge runs shorter than ``min_run_frames`` into their better neighbour.

    Runs of at least ``min_run_frames`` frames are never touched, so every
    boundary between two such runs survives. The shortest short run is merged
    first; it joins the neighbour whose cluster has the higher mean soft
    assignment over the run's frames (without ``soft``: the longer neighbour;
    ties go left). Merging can make the neighbour's run long again.

    Parameters
    ----------
    labels : np.ndarray
        ``(n_frames,)`` integer cluster labels.
    soft : np.ndarray or None
        ``(n_frames, n_clusters)`` soft assignments, or None.
    min_run_frames : int
        Runs shorter than this are flicker.

    Returns
    -------
    np.ndarray
        ``(n_frames,)`` int64 smoothed labels.
    """
    starts, ends, values = label_runs(labels)
    cumulative = None
    if soft is not None:
        if soft.ndim != 2 or soft.shape[0] != labels.shape[0] or soft.shape[1] <= labels.max():
            raise ValueError(
                f"soft must be (n_frames={labels.shape[0]}, n_clusters > {labels.max()}), "
                f"got {soft.shape}"
            )
        cumulative = np.concatenate([np.zeros((1, soft.shape[1])), np.cumsum(soft, axis=0)])
    if starts.size <= 1 or min_run_frames <= 1:
        return labels.astype(np.int64)
    kept = _merge_short_runs(starts, ends, values, min_run_frames, cumulative)
    return np.repeat(values[kept], ends[kept] - starts[kept]).astype(np.int64)


def _merge_short_runs(
    starts: np.ndarray,
    ends: np.ndarray,
    values: np.ndarray,
    min_run_frames: int,
    cumulative_soft: np.ndarray | None,
) -> np.ndarray:
    """Merge short runs in place, shortest first, over a linked list of runs.

    ``cumulative_soft (n_frames + 1, n_clusters)`` gives the soft mass of any
    cluster over any run in O(1). Returns the indices of the surviving runs.
    """
    n_runs = starts.size
    previous = np.arange(-1, n_runs - 1)
    following = np.arange(1, n_runs + 1)
    following[-1] = -1
    alive = np.ones(n_runs, dtype=bool)
    heap = [(int(e - s), int(s), r) for r, (s, e) in enumerate(zip(starts, ends, strict=True))]
    heap = [item for item in heap if item[0] < min_run_frames]
    heapq.heapify(heap)

    def preference(run: int, neighbour: int) -> tuple[float, int]:
        mass = 0.0
        if cumulative_soft is not None:
            column = cumulative_soft[:, values[neighbour]]
            mass = float(column[ends[run]] - column[starts[run]])
        return (mass, int(ends[neighbour] - starts[neighbour]))

    while heap:
        length, _, run = heapq.heappop(heap)
        if not alive[run] or ends[run] - starts[run] != length:
            continue  # stale entry: the run was merged or grew since it was queued
        left, right = int(previous[run]), int(following[run])
        if left < 0 and right < 0:
            break  # a single run is left: the whole sequence is shorter than min_run_frames
        if right < 0 or (left >= 0 and preference(run, left) >= preference(run, right)):
            values[run] = values[left]
        else:
            values[run] = values[right]
        merged = [r for r in (left, run, right) if r >= 0 and values[r] == values[run]]
        keep = merged[0]
        ends[keep] = ends[merged[-1]]
        alive[merged[1:]] = False
        following[keep] = following[merged[-1]]
        if following[keep] >= 0:
            previous[following[keep]] = keep
        if ends[keep] - starts[keep] < min_run_frames:
            heapq.heappush(heap, (int(ends[keep] - starts[keep]), int(starts[keep]), keep))
    return np.flatnonzero(alive)


def change_scores(features: np.ndarray, window: int) -> np.ndarray:
    """How sharply one animal's state changes at each frame (a two-window detector).

    The score of frame ``t`` is the Euclidean distance between the mean of the
    z-scored features over ``[t - window, t)`` and over ``[t, t + window)``
    (windows clipped at the ends; NaN features count as the feature mean).
    A change in speed, in the distance to a partner or in contact makes a peak.

    Parameters
    ----------
    features : np.ndarray
        ``(n_frames, n_features)`` features of one animal.
    window : int
        Frames on each side, >= 1.

    Returns
    -------
    np.ndarray
        ``(n_frames,)`` float64 scores, >= 0.
    """
    if features.ndim != 2 or window < 1:
        raise ValueError(f"features must be (n_frames, n_features) and window >= 1, "
                         f"got {features.shape} and {window}")
    values = np.asarray(features, dtype=np.float64)
    finite = np.isfinite(values)
    counts = np.maximum(finite.sum(axis=0), 1)
    centred = np.where(finite, values - np.where(finite, values, 0.0).sum(axis=0) / counts, 0.0)
    spread = np.sqrt((centred**2).sum(axis=0) / counts)
    z = centred / np.where(spread > 0, spread, 1.0)
    cumulative = np.concatenate([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
    frames = np.arange(z.shape[0])
    before_start, after_end = np.maximum(frames - window, 0), np.minimum(frames + window, z.shape[0])
    before = (cumulative[frames] - cumulative[before_start]) / np.maximum(frames - before_start, 1)[:, None]
    after = (cumulative[after_end] - cumulative[frames]) / np.maximum(after_end - frames, 1)[:, None]
    scores = np.linalg.norm(after - before, axis=1)
    scores[0] = 0.0  # frame 0 is the start of the sequence, never a change
    return scores


def cut_clips(
    labels: np.ndarray,
    fps: float,
    min_clip_s: float = 1.0,
    max_clip_s: float = 5.0,
    change_score: np.ndarray | None = None,
) -> list[ClipSpan]:
    """Cut one animal's label sequence into clips that tile ``[0, n_frames)``.

    1. Runs of equal labels are the candidate clips.
    2. Consecutive runs shorter than ``min_clip_s`` are grouped; a group that
       reaches ``min_clip_s`` becomes a clip of its own (a burst of flicker is
       a motif of its own), a shorter group joins the shorter neighbouring
       clip (ties: the left one), which keeps one of its two boundaries.
    3. Clips longer than ``max_clip_s`` are split into the fewest equal parts
       that fit; with ``change_score``, each split instead goes to the frame
       of the highest score at least ``min_clip_s`` from both ends (the
       state change DEC did not label), until every part fits.

    Every boundary between two runs of at least ``min_clip_s`` survives. A
    clip's cluster is the label covering most of its frames (ties: the lower).

    Parameters
    ----------
    labels : np.ndarray
        ``(n_frames,)`` integer cluster labels of one animal.
    fps : float
        Frames per second.
    min_clip_s, max_clip_s : float
        Clip length bounds in seconds; only a sequence shorter than
        ``min_clip_s``, or the parts of a split when ``max_clip_s < 2 *
        min_clip_s``, can be shorter than ``min_clip_s``.
    change_score : np.ndarray or None
        ``(n_frames,)`` scores of :func:`change_scores`, or None for equal splits.

    Returns
    -------
    list[ClipSpan]
        Clips in time order, contiguous, covering every frame once.
    """
    if fps <= 0 or min_clip_s <= 0 or max_clip_s < min_clip_s:
        raise ValueError(
            f"need fps > 0 and 0 < min_clip_s <= max_clip_s, got fps={fps}, "
            f"min_clip_s={min_clip_s}, max_clip_s={max_clip_s}"
        )
    starts, ends, _ = label_runs(labels)
    if starts.size == 0:
        return []
    if change_score is not None and change_score.shape != labels.shape:
        raise ValueError(f"change_score must be {labels.shape}, got {change_score.shape}")
    min_frames = max(1, round(min_clip_s * fps))
    max_frames = max(min_frames, int(max_clip_s * fps))
    edges = _absorb_short_runs(starts, ends, min_frames)
    clips = []
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        cuts = _split_long(start, end, min_frames, max_frames, change_score)
        for part_start, part_end in zip(cuts[:-1], cuts[1:], strict=True):
            cluster = int(np.bincount(labels[part_start:part_end]).argmax())
            clips.append(ClipSpan(int(part_start), int(part_end), cluster))
    return clips


def _split_long(
    start: int, end: int, min_frames: int, max_frames: int, change_score: np.ndarray | None
) -> list[int]:
    """Cut frames ``[start, ..., end]`` splitting ``[start, end)`` into parts of at most ``max_frames``."""
    n_parts = -(-(end - start) // max_frames)
    if change_score is None or n_parts <= 1 or end - start < 2 * min_frames:
        return (start + np.round(np.arange(n_parts + 1) * (end - start) / n_parts).astype(np.int64)).tolist()
    cut = start + min_frames + int(np.argmax(change_score[start + min_frames:end - min_frames + 1]))
    return (_split_long(start, cut, min_frames, max_frames, change_score)[:-1]
            + _split_long(cut, end, min_frames, max_frames, change_score))


def _absorb_short_runs(starts: np.ndarray, ends: np.ndarray, min_frames: int) -> list[int]:
    """Clip edges ``[0, ..., n_frames]`` after grouping and absorbing short runs."""
    pieces: list[list[int]] = []  # [start, end] of long runs and of groups of short runs
    growing_group = False
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if end - start >= min_frames:
            pieces.append([start, end])
            growing_group = False
        elif growing_group:
            pieces[-1][1] = end
        else:
            pieces.append([start, end])
            growing_group = True
        if growing_group and pieces[-1][1] - pieces[-1][0] >= min_frames:
            growing_group = False  # the group is a clip of its own; start the next one
    # A short piece sits between long ones: it joins the shorter neighbour.
    clips: list[list[int]] = []
    for index, (start, end) in enumerate(pieces):
        if end - start >= min_frames or len(pieces) == 1:
            clips.append([start, end])
            continue
        left_length = clips[-1][1] - clips[-1][0] if clips else None
        has_right = index + 1 < len(pieces)
        right_length = pieces[index + 1][1] - pieces[index + 1][0] if has_right else None
        if left_length is not None and (right_length is None or left_length <= right_length):
            clips[-1][1] = end
        else:
            pieces[index + 1][0] = start
    return [clip[0] for clip in clips] + [clips[-1][1]]
