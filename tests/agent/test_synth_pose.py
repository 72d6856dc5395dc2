"""End-to-end tests of ``python -m agent.run synth pose`` (agent/synth_pose.py)."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.calibration import load_calibration
from agent.errors import InputError
from agent.recording import load_recording
from agent.run import main
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording
from tools.geometry import project
from tools.motion import QD_KEYPOINTS

SMALL = ["--frames", "8", "--cameras", "4", "--width", "320", "--height", "240"]
TEXT_FILES = (
    "recording.toml",
    "calibration.toml",
    "seeds.csv",
    "ground_truth.csv",
    "ground_truth_2d.csv",
    "synth.json",
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "rec"
    assert main(["synth", "pose", "--out", str(out), *SMALL]) == 0
    return out


def test_cli_writes_a_complete_recording(recording):
    manifest = tomllib.loads((recording / "recording.toml").read_text())
    cameras = [f"cam{i}" for i in range(4)]
    assert manifest["fps"] == 30.0 and manifest["units"] == "mm"
    assert manifest["cameras"] == cameras and manifest["keypoints"] == list(QD_KEYPOINTS)
    assert sorted(sum(manifest["regions"].values(), [])) == sorted(QD_KEYPOINTS)
    group = load_calibration(recording / "calibration.toml", cameras)
    assert all(camera.size == (320, 240) for camera in group.cameras)
    for camera in cameras:
        for kind in ("reflectance", "fluorescence"):
            capture = cv2.VideoCapture(str(recording / "videos" / f"{camera}-{kind}.mp4"))
            frames = []
            while (frame := capture.read()[1]) is not None:
                frames.append(frame)
            assert len(frames) == 8 and frames[0].shape[:2] == (240, 320)
    assert not list((recording / "videos").glob(".*"))  # no temporary leftovers


def test_ground_truth_2d_is_the_projection_of_ground_truth_3d(recording):
    cameras = [f"cam{i}" for i in range(4)]
    group = load_calibration(recording / "calibration.toml", cameras)
    truth = _rows(recording / "ground_truth.csv")
    assert list(truth[0]) == ["fnum"] + [f"{k}_{a}" for k in QD_KEYPOINTS for a in "xyz"]
    points_3d = np.array(
        [[float(row[f"{k}_{a}"]) for k in QD_KEYPOINTS for a in "xyz"] for row in truth]
    )
    projected = project(group, points_3d.reshape(-1, 3)).reshape(4, 8, 12, 2)
    rows = _rows(recording / "ground_truth_2d.csv")
    assert len(rows) == 8 * 4 * 12
    for row in rows:
        expected = projected[
            cameras.index(row["camera"]), int(row["frame"]), QD_KEYPOINTS.index(row["keypoint"])
        ]
        np.testing.assert_allclose([float(row["x"]), float(row["y"])], expected, atol=1e-3)
    visible = np.array([int(row["visible"]) for row in rows])
    assert set(visible) <= {0, 1} and 0.3 < visible.mean() < 0.95


def test_seeds_label_only_visible_dots_of_the_first_frames(recording):
    truth = {
        (r["frame"], r["camera"], r["keypoint"]): r
        for r in _rows(recording / "ground_truth_2d.csv")
    }
    seeds = _rows(recording / "seeds.csv")
    assert {row["frame"] for row in seeds} == {"0", "1", "2"}
    offsets = []
    for row in seeds:
        true_row = truth[(row["frame"], row["camera"], row["keypoint"])]
        assert true_row["visible"] == "1"
        offsets.append(
            np.hypot(float(row["x"]) - float(true_row["x"]), float(row["y"]) - float(true_row["y"]))
        )
    shown = sum(1 for key, row in truth.items() if key[0] in "012" and row["visible"] == "1")
    assert len(seeds) == shown
    assert 0.3 < np.mean(offsets) < 3.0  # about 1 px of labelling noise


def test_seed_frames_may_be_anywhere(tmp_path):
    out = tmp_path / "rec"
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--seed-frames", "4", "1", "7"]) == 0
    seeds = _rows(out / "seeds.csv")
    assert sorted({int(row["frame"]) for row in seeds}) == [1, 4, 7]
    truth = {(r["frame"], r["camera"], r["keypoint"]): r["visible"]
             for r in _rows(out / "ground_truth_2d.csv")}
    assert all(truth[(row["frame"], row["camera"], row["keypoint"])] == "1" for row in seeds)


def test_recording_loads_with_the_project_loader(recording):
    loaded = load_recording(recording)
    assert loaded.n_frames == 8 and loaded.keypoints == list(QD_KEYPOINTS)
    assert loaded.ground_truth_3d.shape == (8, 12, 3)
    assert loaded.fluorescence("cam1").read(5).shape == (240, 320)


def test_visible_flags_match_the_rendered_spots(tmp_path):
    options = SynthPoseOptions(
        frames=4,
        cameras=3,
        width=320,
        height=240,
        dropout=0.2,
        spurious=0.0,
        format="images",
        motion="walker",
        seed=3,
    )
    out = synthesize_pose_recording(tmp_path / "rec", options)
    loaded = load_recording(out)
    for camera_index, camera in enumerate(loaded.cameras):
        for frame in range(4):
            image = loaded.fluorescence(camera).read(frame)
            points = loaded.ground_truth_2d[frame, camera_index]
            visible = loaded.ground_truth_visible[frame, camera_index]
            for keypoint, (x, y) in enumerate(points):
                if not (0 <= x < 320 and 0 <= y < 240):
                    continue
                brightness = int(image[int(round(y)), int(round(x))])
                gap = np.linalg.norm(points[visible] - [x, y], axis=1)
                if visible[keypoint]:
                    assert brightness > 60
                elif gap.size == 0 or gap.min() > 8.0:  # no neighbour's spot spills over
                    assert brightness < 30


def test_same_seed_gives_identical_files(tmp_path):
    options = SynthPoseOptions(frames=4, cameras=2, width=160, height=120, motion="walker", seed=11)
    first = synthesize_pose_recording(tmp_path / "a", options)
    second = synthesize_pose_recording(tmp_path / "b", options)
    other = synthesize_pose_recording(
        tmp_path / "c", SynthPoseOptions(**{**options.__dict__, "seed": 12})
    )
    for name in TEXT_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "ground_truth.csv").read_bytes() != (other / "ground_truth.csv").read_bytes()


@pytest.mark.parametrize(
    "option", [["--frames", "2"], ["--cameras", "1"], ["--dropout", "1.5"], ["--blur", "0"],
               ["--seed-frames", "0", "1", "1"], ["--seed-frames", "0", "1", "999"],
               ["--width", "161", "--format", "video"], ["--elevation", "60", "40"],
               ["--elevation", "30", "90"], ["--seed", "-1"]]
)
def test_bad_option_is_one_error_line_and_writes_nothing(tmp_path, capsys, option):
    out = tmp_path / "rec"
    assert main(["synth", "pose", "--out", str(out), *SMALL, *option]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()


def test_non_empty_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["synth", "pose", "--out", str(out), *SMALL]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--overwrite", "--frames", "3"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert load_recording(out).n_frames == 3


LAYOUT_8 = '''[regions]
front = ["ear_L", "ear_R", "back_top"]
rear = ["hindpaw_R", "back_bottom", "hindpaw_L"]
tail = ["tail_base", "tail_tip"]
'''


def test_regions_file_keeps_its_keypoints_and_the_rest_of_the_recording(tmp_path, recording):
    layout = tmp_path / "layout.toml"
    layout.write_text(LAYOUT_8)
    out = tmp_path / "rec8"
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--regions", str(layout)]) == 0
    manifest = tomllib.loads((out / "recording.toml").read_text())
    kept = ["ear_L", "ear_R", "back_top", "back_bottom", "hindpaw_L", "hindpaw_R", "tail_base",
            "tail_tip"]
    assert manifest["keypoints"] == kept  # in the 12-keypoint order
    assert manifest["regions"] == tomllib.loads(LAYOUT_8)["regions"]
    assert load_recording(out).keypoints == kept
    # The same seed gives the full recording's truth for the keypoints kept.
    for name in ("ground_truth_2d.csv", "seeds.csv"):
        full = [row for row in _rows(recording / name) if row["keypoint"] in kept]
        assert _rows(out / name) == full, name
    full_3d = _rows(recording / "ground_truth.csv")
    for row, full_row in zip(_rows(out / "ground_truth.csv"), full_3d, strict=True):
        assert row == {key: full_row[key] for key in row}
    assert list(_rows(out / "ground_truth.csv")[0]) == ["fnum"] + [
        f"{name}_{axis}" for name in kept for axis in "xyz"]
    # Only the kept keypoints' dots are drawn: fewer spots than in the full recording.
    spots = []
    for folder in (recording, out):
        capture = cv2.VideoCapture(str(folder / "videos" / "cam0-fluorescence.mp4"))
        frame = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2GRAY)
        spots.append(cv2.connectedComponents((frame > 100).astype(np.uint8))[0])
    assert spots[1] < spots[0]


@pytest.mark.parametrize("text, problem", [
    (b'[regions]\nhead = ["nose", "ear_L"]\n', "names unknown keypoint 'nose'"),
    (b'[regions]\na = ["ear_L"]\nb = ["ear_L", "ear_R"]\n', "'ear_L' is in two regions"),
    (b"regions = 3\n", "[regions] must be a table"),
    (b"[regions]\n", "[regions] must be a table"),
    (b'[regions]\na = "ear_L"\n', "non-empty list"),
    (b'[regions]\na = []\nb = ["ear_L", "ear_R"]\n', "non-empty list"),
    (b'[regions]\na = ["ear_L", 3]\n', "names unknown keypoint 3"),
    (b'[regions]\na = ["ear_L"]\n', "at least 2 keypoints"),
    (b"[regions\n", "cannot be read as TOML"),
    (b'[regions]\na = ["ear_L", "\xff"]\n', "cannot be read as TOML"),  # not UTF-8
])
def test_a_bad_regions_file_is_one_error_naming_it(tmp_path, capsys, text, problem):
    layout = tmp_path / "layout.toml"
    layout.write_bytes(text)
    out = tmp_path / "rec"
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--regions", str(layout)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(layout) in err and problem in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_missing_regions_file_is_one_error(tmp_path, capsys):
    layout = tmp_path / "missing.toml"
    assert main(["synth", "pose", "--out", str(tmp_path / "rec"), *SMALL,
                 "--regions", str(layout)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(layout) in err and "cannot be read" in err


def test_a_regions_files_summary_counts_only_its_keypoints(tmp_path, recording):
    import json

    assert "regions" not in json.loads((recording / "synth.json").read_text())["options"]
    layout = tmp_path / "layout.toml"
    layout.write_text(LAYOUT_8)
    out = tmp_path / "rec8"
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--regions", str(layout)]) == 0
    summary = json.loads((out / "synth.json").read_text())
    kept = load_recording(out).keypoints
    assert sorted(summary["mean_cameras_seeing_keypoint"]) == sorted(kept)
    shown = [int(row["visible"]) for row in _rows(out / "ground_truth_2d.csv")]
    assert summary["visible_fraction"] == pytest.approx(np.mean(shown), abs=1e-4)


def test_two_keypoints_in_single_keypoint_regions_are_a_layout(tmp_path):
    layout = tmp_path / "layout.toml"
    layout.write_text('[regions]\nhead = ["ear_L"]\ntail = ["tail_tip"]\n')
    out = tmp_path / "rec2"
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--regions", str(layout)]) == 0
    assert load_recording(out).keypoints == ["ear_L", "tail_tip"]


@pytest.mark.parametrize("regions", [
    (("head", ("nose", "ear_L")),),
    (("a", ("ear_L",)), ("b", ("ear_L", "ear_R"))),
    (("a", ()), ("b", ("ear_L", "ear_R"))),
    (),
])
def test_the_python_api_checks_the_layout_before_writing(tmp_path, regions):
    out = tmp_path / "rec"
    with pytest.raises(InputError, match="regions: "):
        synthesize_pose_recording(out, SynthPoseOptions(frames=8, cameras=4, width=320,
                                                        height=240, regions=regions))
    assert not out.exists()


def test_an_overwrite_that_fails_midway_leaves_the_old_recording(tmp_path, monkeypatch):
    from agent import synth_pose

    out = tmp_path / "rec"
    assert main(["synth", "pose", "--out", str(out), *SMALL]) == 0
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth_pose, "dump_calibration", interrupted)  # after the videos
    assert main(["synth", "pose", "--out", str(out), *SMALL, "--seed", "5", "--overwrite"]) == 130
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before
    assert [path.name for path in tmp_path.iterdir()] == ["rec"]  # no staging folder left
