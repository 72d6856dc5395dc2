"""``python -m agent.run eval-behavior SESSION DIR``: score behavior results against ground_truth.csv.

Prints clip boundary recall (reference boundaries with a clip boundary
within 0.5 s), frame accuracy after mapping each predicted label to the
reference label it overlaps most (many-to-one), macro F1 over reference
labels after that mapping, segment boundary F1 (0.5 s) and the ratio of
predicted to reference segment counts; ``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from agent.behavior_results import CLIPS_FILE, SEGMENTS_FILE, read_clips_csv, read_segments_csv
from agent.errors import InputError
from agent.rundir import made_from_other_input
from agent.session import Session, load_session
from tools.behavior_metrics import BehaviorMetrics, evaluate_behavior

_LINES = (
    ("clip_boundary_recall", "clip boundary recall (0.5 s)"),
    ("frame_accuracy", "frame accuracy (many-to-one)"),
    ("macro_f1", "macro F1 (many-to-one)"),
    ("segment_boundary_f1", "segment boundary F1 (0.5 s)"),
    ("segment_count_ratio", "segments / reference segments"),
    ("coverage", "reference frames covered"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", type=Path, help="session directory with ground_truth.csv")
    parser.add_argument("results", type=Path, help="output directory of a behavior run")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def score_results(session_dir: Path, results_dir: Path) -> BehaviorMetrics:
    """Scores of the run in ``results_dir`` against the session's ``ground_truth.csv``.

    Raises
    ------
    InputError
        No ground truth, unreadable results, or results outside the session's frames.
    """
    return score_session(load_session(session_dir), results_dir)


def score_session(session: Session, results_dir: Path) -> BehaviorMetrics:
    """:func:`score_results` for a session already loaded."""
    if session.ground_truth is None:
        raise InputError(session.root / "ground_truth.csv", "file not found: the session has no reference segments")
    clips = [(c.animal, c.start_frame, c.end_frame, c.label) for c in read_clips_csv(results_dir / CLIPS_FILE)]
    segments = [(s.animal, s.start_frame, s.end_frame, s.label)
                for s in read_segments_csv(results_dir / SEGMENTS_FILE)]
    reference = [(a, s, min(e, session.n_frames), lab) for a, s, e, lab in session.ground_truth
                 if s < session.n_frames]
    n_frames = {animal: session.n_frames for animal in session.animals}
    unknown = sorted({row[0] for row in clips + segments} - set(session.animals))
    if unknown:
        raise InputError(results_dir / SEGMENTS_FILE, f"animal(s) {unknown} are not in the session {session.animals}")
    try:
        return evaluate_behavior(reference, segments, clips, n_frames, session.fps)
    except ValueError as exc:
        raise InputError(results_dir, f"results do not fit the session: {exc}") from None


def ground_truth_past_end(session: Session) -> str | None:
    """A warning where reference segments reach past the session's frames, else None.

    :func:`score_session` clips them to the session's ``n_frames`` frames and
    leaves out those that start after its last frame, as it must to score
    at all; a reference cut against a longer video (or another session) is
    named rather than shortened in silence.
    """
    past = [(a, s, e) for a, s, e, _ in session.ground_truth or [] if e > session.n_frames]
    if not past:
        return None
    animal, _, end = max(past, key=lambda row: row[2])
    dropped = sum(s >= session.n_frames for _, s, _ in past)
    return (f"{session.root / 'ground_truth.csv'}: {len(past)} reference segment(s) end after the "
            f"session's {session.n_frames} frames (the latest, of {animal}, at end_frame {end}); "
            f"scored only within frames 0-{session.n_frames - 1}"
            + (f", {dropped} of them left out as they start after it" if dropped else ""))


def format_metrics(metrics: BehaviorMetrics) -> list[str]:
    """One line per score, aligned."""
    def number(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    lines = [f"{title:32s} {number(getattr(metrics, key))}" for key, title in _LINES]
    lines.append(f"{'segments (reference)':32s} {metrics.n_predicted_segments} ({metrics.n_reference_segments})")
    return lines


def run(args: argparse.Namespace) -> int:
    session = load_session(args.session)
    metrics = score_session(session, args.results)
    for warning in (ground_truth_past_end(session), made_from_other_input(args.results, args.session)):
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        payload = {key: (None if isinstance(v, float) and math.isnan(v) else v)
                   for key, v in dataclasses.asdict(metrics).items()}
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print("\n".join(format_metrics(metrics)))
    return 0
