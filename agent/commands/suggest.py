"""``python -m agent.run suggest DIR``: which frames of a finished pose run to label next.

Reads the run's ``qc.csv``, ``keypoints_3d.csv`` and ``keypoints_2d.csv``
(the seed frames are its rows with stage ``seed``) and prints the frames
:func:`tools.label_suggestions.suggest_label_frames` picks: the first calm
frames after the place where the tracker's flagged labels rose most. Label
them, add them to the recording's ``seeds.csv`` and run ``pose`` again.
``--template FILE`` writes the tracker's own labels of those frames in the
``seeds.csv`` layout, as a starting point to correct: they are the labels
that went wrong. Nothing in DIR changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from agent.atomic import write_text_atomic
from agent.errors import InputError
from agent.pose_frames import UNTRACKED
from agent.pose_results import parse_numbers, read_csv_table, read_keypoints_3d, read_qc
from tools.label_suggestions import (
    LabelSuggestion,
    body_speed,
    suggest_label_frames,
    too_short_to_search,
)

SEED_COLUMNS = ("frame", "camera", "keypoint", "x", "y")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, metavar="DIR", help="output folder of `pose`")
    parser.add_argument("--frames", type=int, default=3, help="consecutive frames to suggest (default 3)")
    parser.add_argument("--window", type=int, default=30,
                        help="frames averaged on each side of a rise in flagged labels "
                             "(default 30, a second at 30 fps)")
    parser.add_argument("--template", type=Path, metavar="FILE",
                        help="write the tracker's labels of the suggested frames here "
                             "(seeds.csv layout) to correct and add to seeds.csv")


def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.window < 1:
        raise InputError("--frames/--window", "must be positive")
    if args.template is not None and args.template.exists():
        raise InputError(args.template, "already exists; name a new file for the template")
    found = suggest_from_results(args.results, args.frames, args.window)
    suggestion, labels = found.suggestion, found.labels
    if suggestion is None:
        if too_short_to_search(found.total_frames, found.seed_frames, args.frames, args.window):
            print(f"nothing to suggest: no place in the run's {found.total_frames} frames has "
                  f"{args.window} frames (--window) before and {args.window} + {args.frames} "
                  f"(--frames) after it away from the seed frames "
                  f"({', '.join(map(str, found.seed_frames)) or 'none'}); try a smaller --window")
        else:
            print("no lasting rise in flagged labels: nothing to suggest")
        return 0
    frames = ", ".join(str(frame) for frame in suggestion.frames)
    where = ("these are the first calm frames after it" if suggestion.calm
             else "it does not calm down within a window, so these follow the rise")
    print(f"label frames {frames} next: flagged labels rise by {suggestion.rise:.1f} per frame "
          f"from frame {suggestion.onset}, the animal moves fastest at frame "
          f"{suggestion.fastest}, and {where}.")
    print("Add their labels to the recording's seeds.csv (frame,camera,keypoint,x,y) and run "
          "pose again with --overwrite.")
    if args.template is not None:
        rows = labels[labels["frame"].isin(suggestion.frames)
                      & (labels["x"] != "") & (labels["y"] != "")]
        lines = [",".join(SEED_COLUMNS)] + [",".join(map(str, row)) for row in
                                            rows[list(SEED_COLUMNS)].itertuples(index=False)]
        write_text_atomic(args.template, "\n".join(lines) + "\n")
        print(f"the tracker's labels of those frames ({len(rows)} rows, to correct): {args.template}")
    return 0


class ResultsSuggestion(NamedTuple):
    """What :func:`suggest_from_results` read and found."""

    suggestion: LabelSuggestion | None
    labels: pd.DataFrame  # keypoints_2d.csv's rows, ``frame`` as int, the rest strings
    total_frames: int  # frames in keypoints_3d.csv
    seed_frames: list[int]


def suggest_from_results(results: Path, n_frames: int = 3, window: int = 30) -> ResultsSuggestion:
    """The suggestion for the run in ``results``, with the tables it was read from.

    Raises
    ------
    InputError
        ``results`` is not a folder, or a results file is missing or malformed.
    """
    if not results.is_dir():
        raise InputError(results, "results folder not found")
    table_3d = read_keypoints_3d(results / "keypoints_3d.csv")
    qc = read_qc(results / "qc.csv", table_3d.keypoints, table_3d.frames)
    labels = read_csv_table(results / "keypoints_2d.csv", (*SEED_COLUMNS, "stage"))
    labels = labels.assign(frame=parse_numbers(results / "keypoints_2d.csv", labels, "frame",
                                               integer=True))
    seed_frames = sorted(set(labels.loc[labels["stage"] == "seed", "frame"].tolist()))
    if not np.array_equal(table_3d.frames, np.arange(table_3d.frames.size)):
        raise InputError(results / "keypoints_3d.csv", "needs every frame from 0 on, as pose writes it")
    # Frames the run never reached are flagged UNTRACKED: no sign of the tracker failing.
    flagged = qc.flagged & (qc.reason != UNTRACKED)
    suggestion = suggest_label_frames(flagged.sum(axis=1), body_speed(table_3d.points_3d),
                                      seed_frames, n_frames, window)
    return ResultsSuggestion(suggestion, labels, int(table_3d.frames.size), seed_frames)
