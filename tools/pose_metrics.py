"""Score pose results against ground truth: arrays in, numbers out.

Three questions, each over every evaluated frame (seed frames included):

1. How far are the 3D points from the truth? Mean and median error in
   calibration units (mm) over the triangulated keypoint-frames, and the
   share of keypoint-frames with truth that lie within 5 and 10 mm (a
   missing point counts as outside).
   With 2D visibility, also the ceiling of that share: the keypoint-frames
   whose dot at least 2 cameras show (**triangulable**). FORMATS.md leaves a
   keypoint empty when it cannot be triangulated, so no result has more
   keypoint-frames within 5 mm than this; the share within 5 mm of the
   triangulable ones separates identity errors from what no camera pair saw.
2. Are the 2D labels on the right spots? Assignment accuracy is
   ``correct / (visible + labels_on_invisible)``: a visible true keypoint
   counts as correct when its label lies within ``label_tolerance_px`` (3 px)
   of the true position; a label given where the keypoint is invisible
   counts as wrong.
3. Do the QC flags point at the bad labels? A keypoint-frame is **really
   wrong** when its 3D point is missing or more than ``wrong_3d_mm`` (5 mm)
   from the truth, or when its 2D label in any camera is more than
   ``label_tolerance_px`` (3 px) from the true position or labels an
   invisible keypoint. Precision is the share of flagged keypoint-frames
   that are really wrong, recall the share of really wrong ones that are
   flagged. Keypoint-frames without 3D truth are judged on their 2D labels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_TOLERANCE_PX = 3.0
WRONG_3D_MM = 5.0


@dataclass(frozen=True)
class PoseMetrics:
    """Evaluation of one result; 2D fields are None without 2D data, QC ratios without flags.

    Shares and ratios are in [0, 1] and NaN where their denominator is 0;
    errors are in calibration units (mm).
    """

    n_frames: int
    n_keypoint_frames: int
    n_triangulated: int
    mean_error_mm: float
    median_error_mm: float
    n_within_5mm: int
    n_within_10mm: int
    share_within_5mm: float
    share_within_10mm: float
    n_visible: int | None
    n_correct_labels: int | None
    n_missing_labels: int | None
    n_misplaced_labels: int | None
    n_labels_on_invisible: int | None
    assignment_accuracy: float | None
    n_triangulable: int | None
    share_triangulable: float | None
    share_within_5mm_of_triangulable: float | None
    n_really_wrong: int
    n_flagged: int | None
    n_flagged_really_wrong: int | None
    qc_precision: float | None
    qc_recall: float | None


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


def _check(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def label_errors_px(labels_2d: np.ndarray, true_2d: np.ndarray) -> np.ndarray:
    """Distance in pixels between labels and truth, ``(..., 2)`` -> ``(...)``; NaN where either is missing."""
    return np.linalg.norm(np.asarray(labels_2d, float) - np.asarray(true_2d, float), axis=-1)


def _error_3d_fields(
    points_3d: np.ndarray, true_3d: np.ndarray, wrong_3d_mm: float
) -> tuple[dict, np.ndarray]:
    """3D error fields and the ``(n_frames, n_keypoints)`` mask of really wrong 3D points."""
    error_mm = np.linalg.norm(points_3d - true_3d, axis=-1)
    has_truth = np.all(np.isfinite(true_3d), axis=-1)
    measured = error_mm[has_truth & np.isfinite(error_mm)]
    n_truth = int(has_truth.sum())
    within = {limit: int(np.sum(measured <= limit)) for limit in (5.0, 10.0)}
    fields = {
        "n_keypoint_frames": n_truth,
        "n_triangulated": int(measured.size),
        "mean_error_mm": float(measured.mean()) if measured.size else float("nan"),
        "median_error_mm": float(np.median(measured)) if measured.size else float("nan"),
        "n_within_5mm": within[5.0],
        "n_within_10mm": within[10.0],
        "share_within_5mm": _share(within[5.0], n_truth),
        "share_within_10mm": _share(within[10.0], n_truth),
    }
    # A missing point has NaN error, and NaN <= limit is False: it counts as wrong.
    return fields, has_truth & ~(error_mm <= wrong_3d_mm)


def _label_fields(
    labels_2d: np.ndarray, true_2d: np.ndarray, visible: np.ndarray, tolerance_px: float
) -> tuple[dict, np.ndarray]:
    """2D assignment fields and the ``(n_frames, n_keypoints)`` mask of really wrong labels."""
    labelled = np.all(np.isfinite(labels_2d), axis=-1)
    judged = visible & np.all(np.isfinite(true_2d), axis=-1)
    error_px = label_errors_px(labels_2d, true_2d)
    misplaced = judged & labelled & (error_px > tolerance_px)
    on_invisible = ~visible & labelled
    n_correct = int(np.sum(judged & labelled & (error_px <= tolerance_px)))
    fields = {
        "n_visible": int(judged.sum()),
        "n_correct_labels": n_correct,
        "n_missing_labels": int(np.sum(judged & ~labelled)),
        "n_misplaced_labels": int(misplaced.sum()),
        "n_labels_on_invisible": int(on_invisible.sum()),
        "assignment_accuracy": _share(n_correct, int(judged.sum()) + int(on_invisible.sum())),
    }
    return fields, np.any(misplaced | on_invisible, axis=1)


def _triangulable_fields(points_3d: np.ndarray, true_3d: np.ndarray, visible: np.ndarray
                         ) -> dict:
    """The ceiling fields: keypoint-frames with 3D truth whose dot >= 2 cameras show, and how many are within 5 mm."""
    has_truth = np.all(np.isfinite(true_3d), axis=-1)
    triangulable = has_truth & (visible.sum(axis=1) >= 2)
    within = triangulable & (np.linalg.norm(points_3d - true_3d, axis=-1) <= 5.0)
    return {
        "n_triangulable": int(triangulable.sum()),
        "share_triangulable": _share(int(triangulable.sum()), int(has_truth.sum())),
        "share_within_5mm_of_triangulable": _share(int(within.sum()), int(triangulable.sum())),
    }


def _qc_fields(flagged: np.ndarray, really_wrong: np.ndarray) -> dict:
    hits = int(np.sum(flagged & really_wrong))
    return {
        "n_flagged": int(flagged.sum()),
        "n_flagged_really_wrong": hits,
        "qc_precision": _share(hits, int(flagged.sum())),
        "qc_recall": _share(hits, int(really_wrong.sum())),
    }


def evaluate_pose(
    points_3d: np.ndarray,
    true_3d: np.ndarray,
    flagged: np.ndarray | None = None,
    labels_2d: np.ndarray | None = None,
    true_2d: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    *,
    label_tolerance_px: float = LABEL_TOLERANCE_PX,
    wrong_3d_mm: float = WRONG_3D_MM,
) -> PoseMetrics:
    """Score results over the same frames as the truth.

    Parameters
    ----------
    points_3d, true_3d
        ``(n_frames, n_keypoints, 3)`` result and truth; NaN = missing.
    flagged
        ``(n_frames, n_keypoints)`` bool QC flags, or None (no QC scores).
    labels_2d, true_2d
        ``(n_frames, n_cameras, n_keypoints, 2)`` assigned labels (NaN where
        unassigned) and true positions; all three 2D arrays None for no 2D scores.
    visible
        ``(n_frames, n_cameras, n_keypoints)`` bool, the keypoint shows in that camera.
    label_tolerance_px, wrong_3d_mm
        A label within ``label_tolerance_px`` of the truth is correct; a 3D
        point more than ``wrong_3d_mm`` away is really wrong.

    Returns
    -------
    PoseMetrics
        See the module docstring for each definition.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    if points_3d.ndim != 3 or points_3d.shape[2] != 3:
        raise ValueError(
            f"points_3d must have shape (n_frames, n_keypoints, 3), got {points_3d.shape}"
        )
    n_frames, n_keypoints = points_3d.shape[:2]
    true_3d = _check("true_3d", true_3d, points_3d.shape).astype(np.float64)
    fields, really_wrong = _error_3d_fields(points_3d, true_3d, wrong_3d_mm)
    given_2d = [array is not None for array in (labels_2d, true_2d, visible)]
    fields |= dict.fromkeys(
        ["n_visible", "n_correct_labels", "n_missing_labels", "n_misplaced_labels"]
        + ["n_labels_on_invisible", "assignment_accuracy", "n_triangulable"]
        + ["share_triangulable", "share_within_5mm_of_triangulable"]
    )
    if any(given_2d):
        if not all(given_2d):
            raise ValueError("labels_2d, true_2d and visible must be given together")
        shape = (n_frames, np.shape(labels_2d)[1] if np.ndim(labels_2d) == 4 else -1, n_keypoints)
        visible = _check("visible", visible, shape).astype(bool)
        label_fields, wrong_labels = _label_fields(
            _check("labels_2d", labels_2d, (*shape, 2)).astype(np.float64),
            _check("true_2d", true_2d, (*shape, 2)).astype(np.float64),
            visible,
            label_tolerance_px,
        )
        fields |= label_fields | _triangulable_fields(points_3d, true_3d, visible)
        really_wrong = really_wrong | wrong_labels
    fields |= dict.fromkeys(["n_flagged", "n_flagged_really_wrong", "qc_precision", "qc_recall"])
    if flagged is not None:
        fields |= _qc_fields(
            _check("flagged", flagged, (n_frames, n_keypoints)).astype(bool), really_wrong
        )
    return PoseMetrics(n_frames=n_frames, n_really_wrong=int(really_wrong.sum()), **fields)


@dataclass(frozen=True)
class KeypointScore:
    """One keypoint's 3D results against the truth (:func:`keypoint_scores`).

    Shares are over the frames with the keypoint's 3D truth (NaN where none).
    ``on_other`` is the share whose point is more than ``wrong_3d_mm`` from
    its own truth but within it of another keypoint's (an exchanged or taken
    dot); ``most_taken`` names the keypoint it sits on most often (None where
    it never does), ``most_taken_share`` that share.
    """

    keypoint: str
    n_frames: int
    share_within_5mm: float
    share_missing: float
    share_on_other: float
    most_taken: str | None
    most_taken_share: float


def keypoint_scores(points_3d: np.ndarray, true_3d: np.ndarray, keypoints: list[str],
                    wrong_3d_mm: float = WRONG_3D_MM) -> list[KeypointScore]:
    """Per keypoint of ``points_3d`` and ``true_3d`` ``(n_frames, n_keypoints, 3)``: right, missing, or on another's place.

    Tells a tracker that lost a keypoint from one that put it on another
    keypoint's dot, and which: an exchange of two keypoints shows as each
    sitting on the other.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    true_3d = _check("true_3d", true_3d, points_3d.shape).astype(np.float64)
    if len(keypoints) != points_3d.shape[1]:
        raise ValueError(f"{len(keypoints)} keypoint names for {points_3d.shape[1]} keypoints")
    has_truth = np.all(np.isfinite(true_3d), axis=-1)
    # (frames, result keypoint, true keypoint) distances; NaN where either is missing.
    distance = np.linalg.norm(points_3d[:, :, None] - true_3d[:, None], axis=-1)
    near = distance <= wrong_3d_mm
    own = np.diagonal(near, axis1=1, axis2=2)
    missing = ~np.all(np.isfinite(points_3d), axis=-1)
    scores = []
    for k, name in enumerate(keypoints):
        frames = has_truth[:, k]
        n = int(frames.sum())
        others = near[frames, k] & (np.arange(len(keypoints)) != k)
        on_other = others.any(axis=1) & ~own[frames, k]
        counts = (others & on_other[:, None]).sum(axis=0)
        taken = int(np.argmax(counts)) if counts.any() else None
        scores.append(KeypointScore(
            keypoint=name, n_frames=n, share_within_5mm=_share(int(own[frames, k].sum()), n),
            share_missing=_share(int(missing[frames, k].sum()), n),
            share_on_other=_share(int(on_other.sum()), n),
            most_taken=None if taken is None else keypoints[taken],
            most_taken_share=_share(int(counts[taken]) if taken is not None else 0, n)))
    return scores
