"""``python -m agent.run eval RECORDING DIR``: score pose results against ground truth.

Reads the recording (which must have ``ground_truth.csv``; ``ground_truth_2d.csv``
adds the 2D scores) and the results in DIR (``keypoints_3d.csv``, and where
present ``keypoints_2d.csv`` and ``qc.csv``), scores every frame of
``keypoints_3d.csv`` with :func:`tools.pose_metrics.evaluate_pose` and prints
the metrics, as text or with ``--json`` as one JSON object; ``--by-keypoint``
adds each keypoint's share within 5 mm, missing, and on another keypoint's
place (:func:`tools.pose_metrics.keypoint_scores`). Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import InputError
from agent.pose_results import read_keypoints_2d, read_keypoints_3d, read_qc
from agent.recording import Recording, load_recording
from agent.rundir import made_from_other_input
from tools.pose_metrics import (
    LABEL_TOLERANCE_PX,
    WRONG_3D_MM,
    KeypointScore,
    PoseMetrics,
    evaluate_pose,
    keypoint_scores,
)

if TYPE_CHECKING:
    import numpy as np

    # evaluate_pose's arguments: points and truth (mm), then flags and the 2D arrays (or None).
    ScoredArrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                         np.ndarray | None, np.ndarray | None]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="recording folder with ground_truth.csv")
    parser.add_argument("results", type=Path, metavar="DIR", help="output folder of `pose`")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--by-keypoint", action="store_true",
                        help="also score each keypoint: within 5 mm, missing, on another's place")


def score_results(recording: Recording, results: Path) -> PoseMetrics:
    """Score the results in ``results`` over every frame of its ``keypoints_3d.csv``.

    Raises
    ------
    InputError
        As :func:`_read_results`.
    """
    return evaluate_pose(*_read_results(recording, results))


def _read_results(recording: Recording, results: Path) -> ScoredArrays:
    """What :func:`tools.pose_metrics.evaluate_pose` takes, for every frame of ``keypoints_3d.csv``.

    Raises
    ------
    InputError
        The recording has no ``ground_truth.csv``, or a results file is
        missing, malformed or names frames outside the recording.
    """
    if recording.ground_truth_3d is None:
        raise InputError(
            recording.root / "ground_truth.csv",
            "the recording has no ground_truth.csv to score against",
        )
    if not results.is_dir():
        raise InputError(results, "results folder not found")
    table_3d = read_keypoints_3d(results / "keypoints_3d.csv", recording.keypoints)
    frames = table_3d.frames
    if frames.size == 0:
        raise InputError(results / "keypoints_3d.csv", "has no frames to score")
    if frames[-1] >= recording.n_frames:
        raise InputError(
            results / "keypoints_3d.csv",
            f"frame {frames[-1]} is outside the recording's 0..{recording.n_frames - 1}",
        )
    flagged = None
    if (results / "qc.csv").exists():
        flagged = read_qc(results / "qc.csv", recording.keypoints, frames).flagged
    labels_2d = true_2d = visible = None
    if (results / "keypoints_2d.csv").exists() and recording.ground_truth_2d is not None:
        labels_2d = read_keypoints_2d(
            results / "keypoints_2d.csv", recording.cameras, recording.keypoints, frames
        ).points_2d
        true_2d = recording.ground_truth_2d[frames]
        visible = recording.ground_truth_visible[frames]
    # The recording holds its truth in millimetres; results are in calibration units.
    return (table_3d.points_3d * recording.mm_per_unit, recording.ground_truth_3d[frames],
            flagged, labels_2d, true_2d, visible)


def _percent(share: float | None) -> str:
    return "n/a" if share is None or math.isnan(share) else f"{100 * share:.1f}%"


def format_metrics(metrics: PoseMetrics) -> str:
    """The metrics as a few human-readable lines (3D in millimetres, whatever the recording's units)."""
    m = metrics
    lines = [
        f"frames scored: {m.n_frames} ({m.n_keypoint_frames} keypoint-frames with truth, "
        f"{m.n_triangulated} triangulated)",
        f"3D error (mm): mean {m.mean_error_mm:.3f}, median {m.median_error_mm:.3f}",
        f"within 5 mm: {_percent(m.share_within_5mm)} ({m.n_within_5mm}/{m.n_keypoint_frames}), "
        f"within 10 mm: {_percent(m.share_within_10mm)} ({m.n_within_10mm}/{m.n_keypoint_frames})",
    ]
    if m.n_visible is None:
        lines.append("2D assignment accuracy: n/a (needs keypoints_2d.csv and ground_truth_2d.csv)")
    else:
        lines.append(
            f"2D assignment accuracy: {_percent(m.assignment_accuracy)} "
            f"({m.n_correct_labels} correct of {m.n_visible} visible; {m.n_missing_labels} missing, "
            f"{m.n_misplaced_labels} more than {LABEL_TOLERANCE_PX:g} px off, "
            f"{m.n_labels_on_invisible} on invisible keypoints)"
        )
        lines.append(
            f"triangulable (dot in >= 2 cameras): {_percent(m.share_triangulable)} "
            f"({m.n_triangulable}/{m.n_keypoint_frames}; the most that can be within 5 mm: "
            f"the others stay empty), within 5 mm of those: "
            f"{_percent(m.share_within_5mm_of_triangulable)}"
        )
    lines.append(
        f"really wrong keypoint-frames: {m.n_really_wrong} (3D missing or > {WRONG_3D_MM:g} mm "
        f"off, or a 2D label > {LABEL_TOLERANCE_PX:g} px off or on an invisible keypoint)"
    )
    if m.n_flagged is None:
        lines.append("QC flags: n/a (no qc.csv)")
    else:
        lines.append(
            f"QC flags: precision {_percent(m.qc_precision)} ({m.n_flagged_really_wrong}/{m.n_flagged} "
            f"flagged are really wrong), recall {_percent(m.qc_recall)} "
            f"({m.n_flagged_really_wrong}/{m.n_really_wrong} really wrong are flagged)"
        )
    return "\n".join(lines)


def format_keypoint_scores(scores: list[KeypointScore]) -> str:
    """One line per keypoint: within 5 mm, missing, on another keypoint's place (the most taken)."""
    width = max(len(score.keypoint) for score in scores)
    lines = [f"by keypoint (3D): {'keypoint':<{width}}  within 5 mm  missing  "
             "on another keypoint's place (most often)"]
    for s in scores:
        taken = f" ({s.most_taken} {_percent(s.most_taken_share)})" if s.most_taken else ""
        lines.append(f"                  {s.keypoint:<{width}}  {_percent(s.share_within_5mm):>11}  "
                     f"{_percent(s.share_missing):>7}  {_percent(s.share_on_other)}{taken}")
    return "\n".join(lines)


def _no_nan(payload: dict) -> dict:
    return {key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in payload.items()}


def metrics_to_json(metrics: PoseMetrics, by_keypoint: list[KeypointScore] | None = None) -> str:
    """Stable JSON (sorted keys); NaN becomes null; ``by_keypoint`` adds a list of per-keypoint scores."""
    payload = _no_nan(dataclasses.asdict(metrics))
    if by_keypoint is not None:
        payload["by_keypoint"] = [_no_nan(dataclasses.asdict(score)) for score in by_keypoint]
    return json.dumps(payload, indent=2, sort_keys=True)


def run(args: argparse.Namespace) -> int:
    recording = load_recording(args.recording)
    warning = made_from_other_input(args.results, args.recording)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        scored = _read_results(recording, args.results)  # read once for both scores
        metrics = evaluate_pose(*scored)
        by_keypoint = (keypoint_scores(scored[0], scored[1], list(recording.keypoints))
                       if args.by_keypoint else None)
    finally:
        recording.close()
    if args.json:
        print(metrics_to_json(metrics, by_keypoint))
    else:
        print(format_metrics(metrics))
        if by_keypoint is not None:
            print(format_keypoint_scores(by_keypoint))
    return 0
