"""End-to-end tests of ``python -m agent.run pose``: results, refusals, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.pose_pipeline import _Progress
from agent.run import main
from tests.fixtures.tiny_recording import make_tiny_recording

RESULT_FILES = ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_recording(tmp_path_factory.mktemp("cli") / "rec", n_frames=12,
                               seed_frames=(0, 1, 2))


def test_pose_writes_the_results_of_formats_section_2(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet"]) == 0
    assert "mean 3D error" in capsys.readouterr().out
    header = (out / "keypoints_3d.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["ear_L_x", "ear_L_y", "ear_L_z", "ear_L_error", "ear_L_ncams", "ear_L_score"]
    assert header[-1] == "fnum"
    qc = pd.read_csv(out / "qc.csv")
    assert list(qc.columns) == ["frame", "keypoint", "error_px", "ncams", "flagged", "reason"]
    assert len(qc) == 12 * 4
    # Its seeds (keypoints on circles) settle no left/right handedness: no side check, and
    # run.json says so.
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["side_check"] is None
    # FORMATS.md: "what ran: config, versions, model, prompt hashes, counts, timings, summary".
    assert {"config", "versions", "model", "prompts", "counts", "timings", "summary"} <= set(run_json)
    assert run_json["model"]["backend"] == "classical" and run_json["prompts"] == {}
    # The tiny rig shows the animal at about 0.5 px per mm: the gate stays gate_px.
    assert run_json["tracker_gate_px"] == 12.0


def _in_metres(recording: Path, copy: Path) -> Path:
    """A copy of ``recording`` whose calibration, manifest and ground truth are in metres."""
    import shutil
    import tomllib

    import tomli_w

    shutil.copytree(recording, copy)
    manifest = tomllib.loads((copy / "recording.toml").read_text())
    (copy / "recording.toml").write_text(tomli_w.dumps({**manifest, "units": "m"}))
    calibration = tomllib.loads((copy / "calibration.toml").read_text())
    for table in calibration.values():
        if isinstance(table, dict) and "translation" in table:
            table["translation"] = [value / 1000.0 for value in table["translation"]]
    (copy / "calibration.toml").write_text(tomli_w.dumps(calibration))
    truth = pd.read_csv(copy / "ground_truth.csv")
    coordinates = [c for c in truth.columns if c[-2:] in ("_x", "_y", "_z")]
    truth[coordinates] = truth[coordinates] / 1000.0
    truth.to_csv(copy / "ground_truth.csv", index=False, float_format="%.9f")
    return copy


def test_a_recording_in_metres_is_tracked_as_in_millimetres_and_written_in_metres(
        tiny, tmp_path, capsys):
    # The tracker's tolerances are in millimetres: a recording in metres is converted on
    # load, tracked the same, and its 3D results are written back in metres.
    metres = _in_metres(tiny, tmp_path / "rec_m")
    for recording, out in ((tiny, tmp_path / "mm"), (metres, tmp_path / "m")):
        assert main(["pose", str(recording), "--out", str(out), "--quiet"]) == 0
    mm, m = (pd.read_csv(tmp_path / name / "keypoints_3d.csv") for name in ("mm", "m"))
    xyz = [c for c in mm.columns if c[-2:] in ("_x", "_y", "_z")]
    assert mm[xyz].notna().to_numpy().any()
    np.testing.assert_allclose(m[xyz].to_numpy() * 1000.0, mm[xyz].to_numpy(), atol=1e-3)
    for name in ("qc.csv", "keypoints_2d.csv"):
        assert (tmp_path / "m" / name).read_text() == (tmp_path / "mm" / name).read_text()
    capsys.readouterr()
    scores = []
    for recording, out in ((tiny, tmp_path / "mm"), (metres, tmp_path / "m")):
        assert main(["eval", str(recording), str(out), "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["share_within_5mm"] == scores[1]["share_within_5mm"]
    assert scores[1]["mean_error_mm"] == pytest.approx(scores[0]["mean_error_mm"], abs=1e-3)


def _in_another_world_frame(recording: Path, copy: Path, rotation: np.ndarray,
                            shift: np.ndarray) -> Path:
    """A copy of ``recording`` whose world points are ``rotation @ X + shift`` (extrinsics and truth)."""
    import shutil
    import tomllib

    import cv2
    import tomli_w

    shutil.copytree(recording, copy)
    calibration = tomllib.loads((copy / "calibration.toml").read_text())
    for table in calibration.values():
        if isinstance(table, dict) and "rotation" in table:
            camera_rotation = cv2.Rodrigues(np.array(table["rotation"], dtype=np.float64))[0]
            moved = camera_rotation @ rotation.T
            table["rotation"] = cv2.Rodrigues(moved)[0].ravel().tolist()
            table["translation"] = (np.array(table["translation"]) - moved @ shift).tolist()
    (copy / "calibration.toml").write_text(tomli_w.dumps(calibration))
    truth = pd.read_csv(copy / "ground_truth.csv")
    for name in [c[:-2] for c in truth.columns if c.endswith("_x")]:
        columns = [f"{name}_x", f"{name}_y", f"{name}_z"]
        truth[columns] = truth[columns].to_numpy() @ rotation.T + shift
    truth.to_csv(copy / "ground_truth.csv", index=False, float_format="%.9f")
    return copy


def test_the_calibrations_world_frame_does_not_change_the_labels(tiny, tmp_path):
    # FORMATS.md fixes no world axes: up, the floor and the origin are wherever the
    # calibration puts them (the tracker takes up from the rig). Tilted and shifted, the
    # same recording gets the same labels and flags, and 3D points moved with the frame.
    import cv2

    rotation = cv2.Rodrigues(np.array([1.1, -0.4, 0.7]))[0]
    shift = np.array([250.0, -1300.0, 77.0])
    moved = _in_another_world_frame(tiny, tmp_path / "rec_moved", rotation, shift)
    for recording, out in ((tiny, tmp_path / "base"), (moved, tmp_path / "moved")):
        assert main(["pose", str(recording), "--out", str(out), "--quiet"]) == 0
    base, other = (pd.read_csv(tmp_path / name / "keypoints_3d.csv") for name in ("base", "moved"))
    names = [c[:-2] for c in base.columns if c.endswith("_x")]
    xyz = lambda table: np.stack([table[[f"{n}_x", f"{n}_y", f"{n}_z"]].to_numpy()  # noqa: E731
                                  for n in names], axis=1)
    assert np.isfinite(xyz(base)).any()
    # Linear DLT (as aniposelib's) minimises an algebraic error that depends on the world
    # frame: points from noisy views move by a few hundredths of a millimetre.
    np.testing.assert_allclose(xyz(other), xyz(base) @ rotation.T + shift, atol=0.1)
    labels = [pd.read_csv(tmp_path / name / "keypoints_2d.csv") for name in ("base", "moved")]
    columns = ["frame", "camera", "keypoint", "centroid", "stage"]
    assert labels[0][columns].equals(labels[1][columns])
    flags = [pd.read_csv(tmp_path / name / "qc.csv") for name in ("base", "moved")]
    assert flags[0][["flagged", "reason"]].equals(flags[1][["flagged", "reason"]])


def test_pose_names_frames_to_label_where_flags_rise(tiny, tmp_path, capsys, monkeypatch):
    from agent.commands import pose
    from agent.commands.suggest import ResultsSuggestion
    from tools.label_suggestions import LabelSuggestion

    seen = []

    def suggest(results):
        seen.append(results)
        return ResultsSuggestion(LabelSuggestion(frames=[7, 8, 9], onset=5, rise=2.0, fastest=6, calm=True),
                                 None, 10, [0, 1, 2])

    monkeypatch.setattr(pose, "suggest_from_results", suggest)
    assert main(["pose", str(tiny), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert seen == [tmp_path / "out"]
    assert "labelling frames 7 8 9 would re-anchor the tracker" in capsys.readouterr().out


def test_model_options_reach_the_run_settings(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--max-frames", "4",
                 "--structured", "function_calling", "--max-model-retries", "5",
                 "--model", "qwen-vl", "--base-url", "http://localhost:1/v1"]) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["structured"] == "function_calling"
    assert config["max_model_retries"] == 5
    assert (config["vlm_model"], config["base_url"]) == ("qwen-vl", "http://localhost:1/v1")


def test_a_model_backend_without_a_server_is_one_error_line(tiny, tmp_path, capsys):
    assert main(["pose", str(tiny), "--out", str(tmp_path / "out"), "--backend", "openai",
                 "--model", "qwen-vl"]) == 2
    assert capsys.readouterr().err.startswith("error: --base-url:")
    assert not (tmp_path / "out").exists()


def test_an_occupied_output_is_refused_without_resume_or_overwrite(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["pose", str(tiny), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_a_resume_with_other_settings_or_another_recording_is_refused(tiny, tmp_path, capsys):
    """A resume continues the run it finds; it does not mix in another recording or settings."""
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--max-frames", "6"]) == 0
    before = {name: (out / name).read_bytes() for name in (*RESULT_FILES, "run.json")}
    capsys.readouterr()
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--resume", "--max-frames", "8"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {out}: --max-frames 8: this run started with max_frames = 6")
    other = make_tiny_recording(tmp_path / "other", n_frames=12, seed_frames=(0, 1, 2))
    assert main(["pose", str(other), "--out", str(out), "--quiet", "--resume"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out}: holds a run of {tiny}, not of {other}")
    assert {name: (out / name).read_bytes() for name in before} == before
    # How the run talks to its server may change on a resume.
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--resume",
                 "--max-concurrency", "2"]) == 0
    assert json.loads((out / "run.json").read_text())["summary"]["n_frames"] == 6


def test_a_resume_refuses_a_recording_edited_since_the_run_started(tiny, tmp_path, capsys):
    """New seed labels need a new run (``suggest``'s workflow): a resume would mix the two."""
    recording = Path(shutil.copytree(tiny, tmp_path / "rec"))
    out = tmp_path / "out"
    assert main(["pose", str(recording), "--out", str(out), "--quiet", "--max-frames", "6"]) == 0
    before = (out / "run.json").read_bytes()
    seeds = recording / "seeds.csv"
    seeds.write_text("\n".join(seeds.read_text().splitlines()[:-1]) + "\n")  # one label fewer
    capsys.readouterr()
    assert main(["pose", str(recording), "--out", str(out), "--quiet", "--resume"]) == 2
    assert "changed since the run started" in capsys.readouterr().err
    assert (out / "run.json").read_bytes() == before


def test_a_resume_of_a_finished_run_changes_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--max-frames", "6"]) == 0
    before = {name: (out / name).read_bytes() for name in (*RESULT_FILES, "run.json")}
    capsys.readouterr()
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--resume"]) == 0
    assert {name: (out / name).read_bytes() for name in before} == before  # timings included
    assert "frames: 6 " in capsys.readouterr().out


@pytest.mark.parametrize("damage", [b"not a database " * 100, "truncated"])
def test_a_resume_from_damaged_checkpoints_is_one_error_line(tiny, tmp_path, capsys, damage):
    out = tmp_path / "out"
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--max-frames", "6"]) == 0
    before = {name: (out / name).read_bytes() for name in (*RESULT_FILES, "run.json")}
    database = out / ".bvlm" / "checkpoints.sqlite"
    database.write_bytes(database.read_bytes()[:6000] if damage == "truncated" else damage)
    capsys.readouterr()
    assert main(["pose", str(tiny), "--out", str(out), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {database}: damaged checkpoint database")
    assert {name: (out / name).read_bytes() for name in before} == before


def test_ground_truth_that_does_not_fit_is_named_and_left_out_of_tracking(tiny, tmp_path, capsys):
    recording = Path(shutil.copytree(tiny, tmp_path / "rec"))
    truth = recording / "ground_truth_2d.csv"
    truth.write_text(truth.read_text() + "0,cam9,ear_L,1.0,1.0,1\n")
    out = tmp_path / "out"
    assert main(["pose", str(recording), "--out", str(out), "--quiet", "--max-frames", "6"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"warning: {truth}: unknown camera 'cam9'")
    assert "mean 3D error" not in captured.out and (out / "qc.csv").is_file()
    assert main(["eval", str(recording), str(out)]) == 2  # scoring needs the file fixed
    assert "unknown camera 'cam9'" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["", "videos"])
def test_overwrite_never_empties_a_recording(tiny, tmp_path, capsys, inside):
    recording = Path(shutil.copytree(tiny, tmp_path / "rec"))
    files = sorted(path.relative_to(recording) for path in recording.rglob("*"))
    out = recording / inside
    assert main(["pose", str(recording), "--out", str(out), "--quiet", "--overwrite"]) == 2
    assert "not a run of this tool" in capsys.readouterr().err
    assert sorted(path.relative_to(recording) for path in recording.rglob("*")) == files


def test_a_setting_out_of_range_stops_before_any_output(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BVLM_MAX_CONCURRENCY", "0")
    assert main(["pose", str(tiny), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: max_concurrency: must be at least 1")
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_error_line(tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    assert main(["pose", str(tmp_path / "rec"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_image_that_fails_mid_run_is_one_error_line_after_the_progress(tiny, tmp_path, capsys,
                                                                          monkeypatch):
    """A frame that cannot be read stops the run; its error starts a line of its own (not the bar's)."""
    recording = Path(shutil.copytree(tiny, tmp_path / "rec"))
    images = sorted((recording / "videos" / "cam0-fluorescence").iterdir())
    images[8].write_bytes(b"not an image")
    monkeypatch.setattr(_Progress, "MIN_INTERVAL_S", 0.0)
    assert main(["pose", str(recording), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "\rpose " in err  # the progress was drawn before the failure
    lines = err.split("\n")
    (error_line,) = [line for line in lines if "error: " in line]
    assert error_line.startswith("error: ") and images[8].name in error_line and "Traceback" not in err


def _pose_process(recording: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent.run", "pose", str(recording), "--out",
                             str(out), "--quiet", *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# The classical tracker fanned out as a model backend is: a subgraph per camera.
PER_VIEW_RUN = """
import sys
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.pose_context import PoseContext
from agent.pose_pipeline import run_pose
recording, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
run_pose(recording, out, PoseContext(), resume=resume, overwrite=not resume, quiet=True,
         backend=ClassicalPoseBackend(fan_out="per_view"))
"""


def _per_view_process(recording: Path, out: Path, *extra: str) -> subprocess.Popen:
    mode = "resume" if "--resume" in extra else "new"
    return subprocess.Popen([sys.executable, "-c", PER_VIEW_RUN, str(recording), str(out), mode],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _logged_frames(out: Path, record_size: int) -> int:
    log = out / ".bvlm" / "cache" / "frames.bin"
    return log.stat().st_size // (8 * record_size) if log.exists() else 0


@pytest.mark.parametrize(("start", "seed_frames", "kill_after"), [
    (_pose_process, (0, 1, 2), 20),
    (_per_view_process, (0, 1, 2), 20),
    (_pose_process, (60, 61, 62), 55),  # killed while tracking backward from frame 59
], ids=["per_stage", "per_view", "backward"])
def test_a_killed_run_resumes_to_identical_results(tmp_path, start, seed_frames, kill_after):
    recording = make_tiny_recording(tmp_path / "rec", n_frames=100, seed_frames=seed_frames)
    assert main(["pose", str(recording), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    record_size = 1 + 8 * 4 + 5 * 3 * 4
    killed = tmp_path / "killed"
    process = start(recording, killed)
    deadline = time.monotonic() + 60
    while _logged_frames(killed, record_size) < kill_after and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = _logged_frames(killed, record_size)
    assert kill_after <= done_at_kill < 100, "the run should be killed mid-way"
    resumed = start(recording, killed, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    for name in RESULT_FILES:
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    frames = np.fromfile(killed / ".bvlm" / "cache" / "frames.bin").reshape(-1, record_size)[:, 0]
    assert len(frames) - len(set(frames)) <= 1, "at most the frame in flight is redone"
    # run.json times the frames each invocation tracked: all but the seed frames, or those after the kill.
    whole = json.loads((tmp_path / "whole" / "run.json").read_text())["timings"]
    assert not whole["from_checkpoint"] and 100 - len(seed_frames) <= whole["frames_timed"] <= 99
    after = json.loads((killed / "run.json").read_text())["timings"]
    assert after["from_checkpoint"] and 1 <= after["frames_timed"] <= 100 - done_at_kill + 1


def test_run_json_counts_the_rows_of_a_run_stopped_before_a_later_seed_frame(tmp_path):
    recording = make_tiny_recording(tmp_path / "rec", n_frames=12, seed_frames=(0, 1, 10))
    out = tmp_path / "out"
    assert main(["pose", str(recording), "--out", str(out), "--quiet", "--max-frames", "5"]) == 0
    qc = pd.read_csv(out / "qc.csv", keep_default_na=False)
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["frames"] == qc.frame.nunique() == 11  # frames 5-9 written untracked
    assert counts["flagged"] == int(qc.flagged.sum())
    assert counts["flagged_by_reason"]["untracked"] == 5 * 4
