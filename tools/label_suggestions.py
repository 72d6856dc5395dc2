"""Which frames to label next: where the tracker lost the animal and the animal is calm again.

Three seed frames carry the tracker until something it cannot follow: in the
shipped real motion the mouse rears and drops 90 mm in ten frames, and in most
simulated recordings labels move onto neighbours' dots there and stay there.
More seed frames re-anchor the tracker (the pipeline treats every seed frame
as an accepted frame), but only where they are placed well: on two simulated
real-motion recordings where the tracker had failed there, three more seed
frames just after the drop raised the share within 5 mm by 15.4 and 9.9
points, three during it by 9.5 and 3.4, three just before it by -1.7 and 0.7
(bench/results/pose-suggest.md).

:func:`suggest_label_frames` finds that place from a finished run alone, the
way DeepLabCut's outlier-frame extraction does for its networks: the frame
where the count of labels quality control flags rises most (a lasting rise,
not a blip), then the fastest motion around it, then the first frames after
it where the animal moves no faster than usual. Frames before the first seed
frame are tracked backward, so they are searched backward (their suggestion
lies before the failure in time); a failure within ``window`` frames of where
tracking starts has no window before it and is not found. Pure arrays; NaN
marks a missing point. Shapes: ``points_3d (n_frames, n_keypoints, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelSuggestion:
    """Frames to label, and why.

    Attributes
    ----------
    frames : list[int]
        Consecutive frames to label (add them to ``seeds.csv``).
    onset : int
        First frame of the window whose flagged labels per frame rose most.
    rise : float
        That rise: mean flagged labels per frame in the ``window`` frames
        from ``onset`` minus in the ``window`` frames before it.
    fastest : int
        Frame of the fastest body motion near ``onset``.
    calm : bool
        True: ``frames`` are the first calm ones after ``fastest``; False: no
        calm run was found within a window of it, and ``frames`` start half a
        window after ``onset``.
    """

    frames: list[int]
    onset: int
    rise: float
    fastest: int
    calm: bool


def body_speed(points_3d: np.ndarray) -> np.ndarray:
    """Median displacement of the keypoints since the previous frame -> ``(n_frames,)``.

    Over the keypoints triangulated in both frames; NaN for frame 0 and
    where no keypoint is in both. Units of ``points_3d`` per frame.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    if points_3d.ndim != 3 or points_3d.shape[2] != 3:
        raise ValueError(f"points_3d must have shape (n_frames, n_keypoints, 3), got {points_3d.shape}")
    step = np.linalg.norm(points_3d[1:] - points_3d[:-1], axis=2)
    speed = np.full(points_3d.shape[0], np.nan)
    moved = np.isfinite(step).any(axis=1)
    speed[1:][moved] = np.nanmedian(step[moved], axis=1)
    return speed


def suggest_label_frames(flagged_per_frame: np.ndarray, speed: np.ndarray,
                         labelled_frames: Sequence[int], n_frames: int = 3, window: int = 30,
                         min_rise: float = 1.0, calm_factor: float = 1.5
                         ) -> LabelSuggestion | None:
    """The ``n_frames`` consecutive frames whose labels would help the tracker most, or None.

    Parameters
    ----------
    flagged_per_frame : np.ndarray
        ``(n_frames_total,)`` labels flagged for review in each frame (``qc.csv``).
    speed : np.ndarray
        ``(n_frames_total,)`` :func:`body_speed` of the run's 3D keypoints.
    labelled_frames : Sequence[int]
        Frames labelled already (the seed frames): an onset with one from
        ``window`` frames before it to where its suggestion could end (``2 *
        window + n_frames`` after it) is labelled already and not considered.
    n_frames : int
        How many consecutive frames to suggest.
    window : int
        Frames on each side of a candidate onset over which flags are
        averaged (about a second of video).
    min_rise : float
        Smallest rise in flagged labels per frame worth a suggestion.
    calm_factor : float
        A frame is calm when its speed is at most this times the median speed.

    Returns
    -------
    LabelSuggestion or None
        None when the recording is too short for two windows or no lasting
        rise of at least ``min_rise`` flagged labels per frame exists.
    """
    flagged = np.asarray(flagged_per_frame, dtype=np.float64)
    speed = np.asarray(speed, dtype=np.float64)
    if flagged.ndim != 1 or speed.shape != flagged.shape:
        raise ValueError(f"flagged_per_frame and speed must have the same shape (n_frames,), "
                         f"got {flagged.shape} and {speed.shape}")
    if n_frames < 1 or window < 1:
        raise ValueError(f"n_frames and window must be positive, got {n_frames} and {window}")
    labelled = np.asarray(sorted(set(labelled_frames)), dtype=np.int64)
    first = int(labelled[0]) if labelled.size else 0
    settings = (n_frames, window, min_rise, calm_factor)
    # Tracking runs forward from the first seed frame and backward from it to frame 0:
    # the frames before it are searched in the order they were tracked.
    found = [_forward_suggestion(flagged, speed, labelled, first, *settings)]
    if first > 0:
        backward = _forward_suggestion(flagged[:first][::-1], speed[1:first + 1][::-1],
                                       np.array([-1]), 0, *settings)
        if backward is not None:
            found.append(LabelSuggestion(
                frames=sorted(first - 1 - frame for frame in backward.frames),
                onset=first - 1 - backward.onset, rise=backward.rise,
                fastest=first - 1 - backward.fastest, calm=backward.calm))
    found = [suggestion for suggestion in found if suggestion is not None]
    return max(found, key=lambda suggestion: suggestion.rise) if found else None


def too_short_to_search(n_frames_total: int, labelled_frames: Sequence[int], n_frames: int = 3,
                        window: int = 30) -> bool:
    """Whether :func:`suggest_label_frames` has no onset to weigh, whatever the flags.

    An onset needs ``window`` frames on each side and no labelled frame near
    it, forward from the first labelled frame or backward before it.
    """
    labelled = np.asarray(sorted(set(labelled_frames)), dtype=np.int64)
    first = int(labelled[0]) if labelled.size else 0
    backward = _onsets(first, np.array([-1]), 0, n_frames, window) if first > 0 else np.empty(0)
    return _onsets(n_frames_total, labelled, first, n_frames, window).size == 0 and backward.size == 0


def _onsets(total: int, labelled: np.ndarray, start: int, n_frames: int, window: int) -> np.ndarray:
    """The onsets a forward search over ``total`` frames weighs: a window on each side, from
    ``start`` on, and no labelled frame from a window before to where a suggestion could end
    (``2 * window + n_frames`` after): such a place is labelled already."""
    if total < 2 * window + n_frames:
        return np.empty(0, dtype=np.int64)
    onsets = np.arange(max(window, start), total - window + 1)
    if labelled.size:
        offset = labelled[None, :] - onsets[:, None]
        onsets = onsets[~((offset >= -window) & (offset < 2 * window + n_frames)).any(axis=1)]
    return onsets


def _forward_suggestion(flagged: np.ndarray, speed: np.ndarray, labelled: np.ndarray,
                        start: int, n_frames: int, window: int, min_rise: float,
                        calm_factor: float) -> LabelSuggestion | None:
    """:func:`suggest_label_frames` over frames tracked forward, with onsets from ``start`` on."""
    total = flagged.size
    onsets = _onsets(total, labelled, start, n_frames, window)
    if onsets.size == 0:
        return None
    cumulative = np.concatenate([[0.0], np.cumsum(flagged)])
    rise = ((cumulative[onsets + window] - cumulative[onsets])
            - (cumulative[onsets] - cumulative[onsets - window])) / window
    best = int(np.argmax(rise))  # the earliest of equal rises
    if not rise[best] >= min_rise:
        return None
    onset = int(onsets[best])
    around = np.arange(max(1, onset - window // 2), min(total, onset + window))
    known = np.isfinite(speed[around])
    fastest = int(around[known][np.argmax(speed[around][known])]) if known.any() else onset
    frames = _calm_frames(speed, fastest, n_frames, window, calm_factor)
    if frames is None:
        first = min(onset + window // 2, total - n_frames)
        return LabelSuggestion(frames=list(range(first, first + n_frames)), onset=onset,
                               rise=float(rise[best]), fastest=fastest, calm=False)
    return LabelSuggestion(frames=frames, onset=onset, rise=float(rise[best]), fastest=fastest,
                           calm=True)


def _calm_frames(speed: np.ndarray, fastest: int, n_frames: int, window: int,
                 calm_factor: float) -> list[int] | None:
    """The first ``n_frames`` consecutive calm frames after ``fastest`` (within ``window``), or None."""
    calm = speed <= calm_factor * np.nanmedian(speed)
    last_start = min(speed.size - n_frames, fastest + window)
    for start in range(fastest + 1, last_start + 1):
        if calm[start:start + n_frames].all():
            return list(range(start, start + n_frames))
    return None
