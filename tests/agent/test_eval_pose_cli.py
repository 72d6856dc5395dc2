"""End-to-end test of ``python -m agent.run eval RECORDING DIR`` on a tiny recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.pose_results import write_keypoints_2d, write_keypoints_3d, write_qc
from agent.recording import load_recording
from agent.run import main
from tests.fixtures.tiny_recording import make_tiny_recording

N_FRAMES = 8


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    return make_tiny_recording(tmp_path / "rec", n_frames=N_FRAMES)


def _write_results(recording_dir: Path, out: Path, frames: np.ndarray) -> None:
    """Results equal to the truth except: (frame 1, kp 0) 8 mm off and flagged, (frame 2, kp 3)
    missing and unflagged, a label on the hidden (frame 2, cam0, kp 1), and a false alarm on
    (frame 4, kp 2)."""
    recording = load_recording(recording_dir)
    cameras, keypoints = recording.cameras, recording.keypoints
    points_3d = recording.ground_truth_3d[frames].copy()
    points_3d[1, 0, 0] += 8.0
    points_3d[2, 3] = np.nan
    shape = points_3d.shape[:2]
    write_keypoints_3d(
        out / "keypoints_3d.csv",
        keypoints,
        frames,
        points_3d,
        np.zeros(shape),
        np.full(shape, 3),
        np.ones(shape),
    )
    visible = recording.ground_truth_visible[frames]
    labels = np.where(visible[..., None], recording.ground_truth_2d[frames], np.nan)
    labels[2, 0, 1] = recording.ground_truth_2d[2, 0, 1]  # labels a hidden keypoint
    shape_2d = labels.shape[:3]
    write_keypoints_2d(
        out / "keypoints_2d.csv",
        cameras,
        keypoints,
        frames,
        labels,
        np.zeros(shape_2d, int),
        np.zeros(shape_2d),
        np.full(shape_2d, "seed"),
    )
    flagged = np.zeros(shape, bool)
    flagged[1, 0] = flagged[4, 2] = True
    reason = np.where(flagged, "reprojection", "")
    write_qc(out / "qc.csv", keypoints, frames, np.zeros(shape), np.full(shape, 3), flagged, reason)


def test_eval_json_reports_the_constructed_errors(
    recording_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _write_results(recording_dir, out, np.arange(N_FRAMES))
    assert main(["eval", str(recording_dir), str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    n_keypoint_frames = N_FRAMES * 4
    assert metrics["n_frames"] == N_FRAMES and metrics["n_keypoint_frames"] == n_keypoint_frames
    assert metrics["n_triangulated"] == n_keypoint_frames - 1
    assert metrics["mean_error_mm"] == pytest.approx(8.0 / (n_keypoint_frames - 1), abs=1e-3)
    assert metrics["median_error_mm"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["n_within_5mm"] == n_keypoint_frames - 2
    assert metrics["n_within_10mm"] == n_keypoint_frames - 1
    n_visible = N_FRAMES * 3 * 4 - 2  # the fixture hides two (frame, camera, keypoint)
    assert metrics["n_visible"] == n_visible and metrics["n_labels_on_invisible"] == 1
    assert metrics["assignment_accuracy"] == pytest.approx(n_visible / (n_visible + 1))
    # Really wrong: the 8 mm point, the missing point, the label on the hidden keypoint.
    assert metrics["n_really_wrong"] == 3
    assert (metrics["n_flagged"], metrics["n_flagged_really_wrong"]) == (2, 1)
    assert metrics["qc_precision"] == pytest.approx(0.5)
    assert metrics["qc_recall"] == pytest.approx(1 / 3)


def test_eval_text_scores_only_the_result_frames(
    recording_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _write_results(recording_dir, out, np.arange(5))
    (out / "keypoints_2d.csv").unlink()
    assert main(["eval", str(recording_dir), str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("frames scored: 5 (20 keypoint-frames with truth, 19 triangulated)")
    assert "2D assignment accuracy: n/a" in text
    assert "really wrong keypoint-frames: 2 " in text
    assert "QC flags: precision 50.0% (1/2 flagged are really wrong), recall 50.0% (1/2 " in text


def test_eval_without_ground_truth_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tiny_recording(tmp_path / "rec", n_frames=N_FRAMES, ground_truth=False)
    assert main(["eval", str(root), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no ground_truth.csv" in err


def test_eval_refuses_frames_outside_the_recording(
    recording_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _write_results(recording_dir, out, np.arange(N_FRAMES))
    text = (
        (out / "keypoints_3d.csv").read_text().replace(f",{N_FRAMES - 1}\n", f",{N_FRAMES + 5}\n")
    )
    (out / "keypoints_3d.csv").write_text(text)
    assert main(["eval", str(recording_dir), str(out)]) == 2
    assert f"frame {N_FRAMES + 5} is outside" in capsys.readouterr().err


def test_eval_needs_keypoints_3d(
    recording_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    assert main(["eval", str(recording_dir), str(tmp_path / "out")]) == 2
    assert "keypoints_3d.csv: file not found" in capsys.readouterr().err


def test_eval_by_keypoint_names_each_keypoints_share_right_and_missing(
    recording_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _write_results(recording_dir, out, np.arange(N_FRAMES))
    keypoints = load_recording(recording_dir).keypoints
    assert main(["eval", str(recording_dir), str(out), "--json", "--by-keypoint"]) == 0
    scores = {s["keypoint"]: s for s in json.loads(capsys.readouterr().out)["by_keypoint"]}
    assert list(scores) == list(keypoints)
    # Keypoint 0 is 8 mm off in one frame, keypoint 3 missing in one; the others all right.
    assert scores[keypoints[0]]["share_within_5mm"] == pytest.approx(1 - 1 / N_FRAMES)
    assert scores[keypoints[3]]["share_missing"] == pytest.approx(1 / N_FRAMES)
    assert scores[keypoints[1]]["share_within_5mm"] == 1.0
    assert all(s["share_on_other"] == 0.0 and s["most_taken"] is None for s in scores.values())
    assert main(["eval", str(recording_dir), str(out), "--by-keypoint"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-5].startswith("by keypoint (3D):")
    assert lines[-4].split()[:3] == [keypoints[0], "87.5%", "0.0%"]


def test_scoring_a_run_against_another_recording_warns(recording_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pose", str(recording_dir), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(recording_dir), str(out)]) == 0
    assert capsys.readouterr().err == ""
    other = make_tiny_recording(tmp_path / "other", n_frames=12, seed_frames=(0, 1, 2))
    assert main(["eval", str(other), str(out)]) == 0
    assert capsys.readouterr().err.startswith(f"warning: {out} was made from {recording_dir}")
