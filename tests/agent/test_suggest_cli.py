"""End-to-end test of ``python -m agent.run suggest DIR`` on written pose results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.pose_results import write_keypoints_2d, write_keypoints_3d, write_qc
from agent.run import main

N_FRAMES = 200
KEYPOINTS = ["a", "b", "c"]
CAMERAS = ["cam0", "cam1"]


def _write_results(out: Path, bad_from: int | None = 100, untracked_from: int | None = None) -> None:
    """Keypoints moving 1 unit per frame, 10 per frame over frames 100-105; from ``bad_from``
    on two of three labels are flagged; from ``untracked_from`` on nothing is tracked."""
    out.mkdir(parents=True)
    frames = np.arange(N_FRAMES)
    step = np.where((frames >= 100) & (frames < 106), 10.0, 1.0)
    travel = np.cumsum(step) - step[0]
    points_3d = np.stack([travel, np.zeros(N_FRAMES), np.zeros(N_FRAMES)], axis=1)[:, None, :] \
        + np.arange(3)[None, :, None] * 20.0
    flagged = np.zeros((N_FRAMES, 3), dtype=bool)
    reason = np.full((N_FRAMES, 3), "", dtype=object)
    if bad_from is not None:
        flagged[bad_from:, :2], reason[bad_from:, :2] = True, "body"
    if untracked_from is not None:
        points_3d[untracked_from:] = np.nan
        flagged[untracked_from:], reason[untracked_from:] = True, "untracked"
    shape = (N_FRAMES, 3)
    write_keypoints_3d(out / "keypoints_3d.csv", KEYPOINTS, frames, points_3d, np.zeros(shape),
                       np.full(shape, 2), np.ones(shape))
    write_qc(out / "qc.csv", KEYPOINTS, frames, np.zeros(shape), np.full(shape, 2), flagged, reason)
    points_2d = np.broadcast_to(points_3d[:, None, :, :2], (N_FRAMES, 2, 3, 2)).copy()
    stage = np.full((N_FRAMES, 2, 3), "within_region", dtype=object)
    stage[:3] = "seed"
    write_keypoints_2d(out / "keypoints_2d.csv", CAMERAS, KEYPOINTS, frames, points_2d,
                       np.zeros((N_FRAMES, 2, 3), dtype=np.int64), np.zeros((N_FRAMES, 2, 3)), stage)


def test_suggests_the_calm_frames_after_the_failure_and_writes_a_template(tmp_path, capsys):
    _write_results(tmp_path / "out")
    template = tmp_path / "to_label.csv"
    assert main(["suggest", str(tmp_path / "out"), "--template", str(template)]) == 0
    printed = capsys.readouterr().out
    assert "label frames 106, 107, 108 next" in printed
    assert "from frame 100" in printed
    rows = pd.read_csv(template)
    assert list(rows.columns) == ["frame", "camera", "keypoint", "x", "y"]
    assert sorted(set(rows["frame"])) == [106, 107, 108] and len(rows) == 3 * 2 * 3
    labels = pd.read_csv(tmp_path / "out" / "keypoints_2d.csv")
    expected = labels[labels["frame"].isin([106, 107, 108])][["frame", "camera", "keypoint", "x", "y"]]
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected.reset_index(drop=True))


@pytest.mark.parametrize("case", ["never worse", "only untracked at the end"])
def test_nothing_to_suggest(tmp_path, capsys, case):
    if case == "never worse":
        _write_results(tmp_path / "out", bad_from=None)
    else:
        _write_results(tmp_path / "out", bad_from=None, untracked_from=150)
    assert main(["suggest", str(tmp_path / "out")]) == 0
    assert "nothing to suggest" in capsys.readouterr().out


def test_a_run_too_short_for_two_windows_says_so_and_names_the_option(tmp_path, capsys):
    _write_results(tmp_path / "out")
    assert main(["suggest", str(tmp_path / "out"), "--window", "120"]) == 0
    printed = capsys.readouterr().out
    assert "nothing to suggest: no place in the run's 200 frames has 120 frames" in printed
    assert "seed frames (0, 1, 2)" in printed and "--window" in printed
    assert main(["suggest", str(tmp_path / "out"), "--window", "90"]) == 0
    assert "label frames" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["suggest", str(tmp_path / "missing")]) == 2
    assert "results folder not found" in capsys.readouterr().err
    _write_results(tmp_path / "out")
    existing = tmp_path / "seeds.csv"
    existing.write_text("frame,camera,keypoint,x,y\n")
    assert main(["suggest", str(tmp_path / "out"), "--template", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert existing.read_text() == "frame,camera,keypoint,x,y\n"
    labels = tmp_path / "out" / "keypoints_2d.csv"
    good = labels.read_text()
    labels.write_text(good.replace("\n5,", "\nfive,", 1))
    assert main(["suggest", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "keypoints_2d.csv" in err and "Traceback" not in err
    labels.write_text(good)
    (tmp_path / "out" / "qc.csv").unlink()
    assert main(["suggest", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "qc.csv" in err and "Traceback" not in err
