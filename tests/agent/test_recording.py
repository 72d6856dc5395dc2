"""Tests for agent/recording.py: a recording loads whole or fails with one InputError."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from agent.calibration import dump_calibration, load_calibration
from agent.errors import InputError
from agent.recording import load_recording
from tests.conftest import REPO_ROOT
from tests.fixtures.tiny_recording import KEYPOINTS, make_tiny_recording, tiny_motion, tiny_rig
from tools.geometry import Camera, project


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    return make_tiny_recording(tmp_path / "rec")


@pytest.mark.parametrize("stream_format", ["png", "avi", "mp4"])
def test_loads_every_part(tmp_path: Path, stream_format: str) -> None:
    root = make_tiny_recording(tmp_path / "rec", stream_format=stream_format, n_frames=7)
    recording = load_recording(root)
    assert recording.cameras == ["cam0", "cam1", "cam2"] == recording.group.names
    assert recording.keypoints == KEYPOINTS and recording.fps == 30.0 and recording.units == "mm"
    assert recording.regions == {"head": ["ear_L", "ear_R"], "body": ["back_top", "tail_base"]}
    assert recording.n_frames == 7
    np.testing.assert_array_equal(recording.seeds.frames, [0, 3, 6])
    np.testing.assert_allclose(recording.ground_truth_3d, tiny_motion(7), atol=1e-4)
    assert recording.ground_truth_2d.shape == (7, 3, 4, 2)
    assert (
        not recording.ground_truth_visible[2, 0, 1]
        and recording.ground_truth_visible.sum() == 7 * 12 - 2
    )
    with recording.fluorescence("cam1") as stream:
        assert stream.size == (160, 120) and stream.read(6).shape == (120, 160)
    recording.close()


def test_seeds_are_the_projections_and_nan_where_hidden(recording_dir: Path) -> None:
    recording = load_recording(recording_dir)
    frames = recording.seeds.frames
    truth = project(recording.group, tiny_motion(8)[frames].reshape(-1, 3))
    truth = truth.reshape(3, frames.size, 4, 2).transpose(1, 0, 2, 3)
    hidden = np.isnan(recording.seeds.points_2d[..., 0])
    assert np.argwhere(hidden).tolist() == [[1, 1, 3]]  # frame 3, cam1, tail_base
    np.testing.assert_allclose(recording.seeds.points_2d[~hidden], truth[~hidden], atol=1e-3)


def test_a_seed_row_with_empty_x_and_y_is_a_keypoint_not_labelled(recording_dir: Path) -> None:
    """FORMATS.md writes missing values as empty cells: such a row reads as no row."""
    expected = load_recording(recording_dir).seeds.points_2d
    path = recording_dir / "seeds.csv"
    path.write_text(path.read_text() + "3,cam1,tail_base,,\n")
    seeds = load_recording(recording_dir).seeds
    np.testing.assert_array_equal(seeds.frames, [0, 3, 6])
    np.testing.assert_array_equal(seeds.points_2d, expected)


def test_cameras_are_matched_by_name_not_table_order(recording_dir: Path) -> None:
    group = tiny_rig(3)
    dump_calibration(type(group)(group.cameras[::-1]), recording_dir / "calibration.toml")
    recording = load_recording(recording_dir)
    assert recording.group.names == ["cam0", "cam1", "cam2"]
    np.testing.assert_allclose(recording.group.cameras[0].tvec, group.cameras[0].tvec)


def test_streams_open_lazily_and_are_cached(recording_dir: Path) -> None:
    recording = load_recording(recording_dir)
    assert recording._streams == {}
    stream = recording.reflectance("cam2")
    assert recording.reflectance("cam2") is stream
    assert recording.fluorescence("cam2") is not stream
    recording.close()
    assert recording._streams == {}


def test_a_manifest_using_some_of_the_rigs_cameras_leaves_out_their_truth(recording_dir: Path) -> None:
    full = load_recording(recording_dir)
    _edit_toml("recording.toml", lambda m: m.__setitem__("cameras", ["cam2", "cam0"]))(recording_dir)
    subset = load_recording(recording_dir)
    np.testing.assert_array_equal(subset.ground_truth_2d, full.ground_truth_2d[:, [2, 0]])
    np.testing.assert_array_equal(subset.ground_truth_visible, full.ground_truth_visible[:, [2, 0]])


@pytest.mark.parametrize("file_name, columns, damage, expected", [
    ("seeds.csv", 5, lambda cells: cells.__setitem__(3, "abc"), "non-numeric value 'abc' on line {line}"),
    ("ground_truth_2d.csv", 6, lambda cells: cells.__setitem__(3, "abc"), "non-numeric value 'abc' on line {line}"),
    ("ground_truth_2d.csv", 6, None, "line {line} repeats"),
    ("seeds.csv", 5, None, "line {line} repeats"),
])
def test_errors_name_the_files_own_line_where_a_left_out_cameras_rows_come_first(
        recording_dir: Path, file_name: str, columns: int, damage, expected: str) -> None:
    _edit_toml("recording.toml", lambda m: m.__setitem__("cameras", ["cam2", "cam0"]))(recording_dir)
    lines = (recording_dir / file_name).read_text().splitlines()
    cam1 = [i for i, line in enumerate(lines) if line.split(",")[1] == "cam1"]
    later = next(i for i, line in enumerate(lines) if i > cam1[0] and line.split(",")[1] == "cam0")
    cells = lines[later].split(",")
    assert len(cells) == columns
    if damage is None:  # the row again, right after itself
        lines.insert(later + 1, lines[later])
        later += 1
    else:
        damage(cells)
        lines[later] = ",".join(cells)
    (recording_dir / file_name).write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as error:
        load_recording(recording_dir)
    assert file_name in str(error.value) and expected.format(line=later + 1) in str(error.value)


def test_loads_without_ground_truth(tmp_path: Path) -> None:
    recording = load_recording(make_tiny_recording(tmp_path / "rec", ground_truth=False))
    assert recording.ground_truth_3d is None and recording.ground_truth_2d is None


# Each bad input: (change to a valid recording, file the error names, words in the message).
def _edit_toml(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        document = tomllib.loads((root / name).read_text())
        change(document)
        (root / name).write_text(tomli_w.dumps(document))

    return edit


def _edit_csv(name: str, change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        lines = (root / name).read_text().splitlines()
        (root / name).write_text("\n".join(change(lines)) + "\n")

    return edit


def _resize_camera(root: Path) -> None:
    group = load_calibration(root / "calibration.toml")
    cam = group.cameras[1]
    resized = Camera(cam.name, (200, 120), cam.matrix, cam.dist, cam.rvec, cam.tvec)
    dump_calibration(
        type(group)((group.cameras[0], resized, group.cameras[2])), root / "calibration.toml"
    )


def _drop_last_png(root: Path) -> None:
    sorted((root / "videos" / "cam2-fluorescence").iterdir())[-1].unlink()


def _add_region(name: str, members: list[str]) -> Callable[[dict], None]:
    return lambda manifest: manifest["regions"].__setitem__(name, members)


BAD_INPUTS = {
    "missing manifest": (
        lambda r: (r / "recording.toml").unlink(),
        "recording.toml",
        "file not found",
    ),
    "missing calibration": (
        lambda r: (r / "calibration.toml").unlink(),
        "calibration.toml",
        "not found",
    ),
    "missing seeds": (lambda r: (r / "seeds.csv").unlink(), "seeds.csv", "file not found"),
    "missing stream": (
        lambda r: shutil.rmtree(r / "videos" / "cam1-reflectance"),
        "cam1-reflectance",
        "stream not found",
    ),
    "camera not calibrated": (
        _edit_toml("recording.toml", lambda m: m["cameras"].append("cam9")),
        "calibration.toml",
        "cam9",
    ),
    "frame counts differ": (_drop_last_png, "cam2-fluorescence", "has 7 frames but"),
    "frame size differs": (
        _resize_camera,
        "cam1-reflectance",
        "calibration.toml gives camera cam1 size 200x120",
    ),
    "seed unknown keypoint": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "3,cam0,nose,10,10"]),
        "seeds.csv",
        "unknown keypoint 'nose'",
    ),
    "seed unknown camera": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "3,cam7,ear_L,10,10"]),
        "seeds.csv",
        "unknown camera 'cam7'",
    ),
    "seed frame out of range": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "8,cam0,ear_L,10,10"]),
        "seeds.csv",
        "frame 8 on line",
    ),
    "seed not numeric": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "5,cam0,ear_L,abc,10"]),
        "seeds.csv",
        "non-numeric value 'abc'",
    ),
    "seed x empty, y given": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "3,cam1,tail_base,,10"]),
        "seeds.csv",
        "x or y is empty on line",
    ),
    "seed frame with empty cells only": (
        _edit_csv("seeds.csv", lambda lines: [line if not line.startswith("6,") else
                                              ",".join(line.split(",")[:3]) + ",," for line in lines]),
        "seeds.csv",
        "at least 3",
    ),
    "seed repeated": (
        _edit_csv("seeds.csv", lambda lines: [*lines, lines[1]]),
        "seeds.csv",
        "repeats",
    ),
    "too few seed frames": (
        _edit_csv("seeds.csv", lambda lines: [line for line in lines if not line.startswith("6,")]),
        "seeds.csv",
        "at least 3",
    ),
    "keypoint in two regions": (
        _edit_toml("recording.toml", _add_region("extra", ["ear_L"])),
        "recording.toml",
        "'ear_L' is in two regions",
    ),
    "keypoint in no region": (
        _edit_toml("recording.toml", lambda m: m["regions"]["body"].remove("tail_base")),
        "recording.toml",
        "tail_base belong to no region",
    ),
    "region names unknown keypoint": (
        _edit_toml("recording.toml", _add_region("extra", ["whisker"])),
        "recording.toml",
        "unknown keypoint 'whisker'",
    ),
    "fps not positive": (
        _edit_toml("recording.toml", lambda m: m.__setitem__("fps", 0)),
        "recording.toml",
        "fps must be a positive number",
    ),
    "one camera": (
        _edit_toml("recording.toml", lambda m: m.__setitem__("cameras", ["cam0"])),
        "recording.toml",
        "at least 2 cameras",
    ),
    "keypoint twice in one region": (
        _edit_toml("recording.toml", lambda m: m["regions"]["body"].append("tail_base")),
        "recording.toml",
        "'tail_base' is listed twice in region 'body'",
    ),
    "seed outside the image": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "3,cam1,ear_L,99999,10"]),
        "seeds.csv",
        "outside camera cam1's",
    ),
    "seed left of the image": (
        _edit_csv("seeds.csv", lambda lines: [*lines, "3,cam1,ear_L,-0.6,10"]),
        "seeds.csv",
        "outside camera cam1's",
    ),
    "focal length not positive": (
        _edit_toml("calibration.toml", lambda c: c["cam_0"]["matrix"][0].__setitem__(0, -500.0)),
        "calibration.toml",
        "with fx, fy > 0",
    ),
    "matrix not a camera matrix": (
        _edit_toml("calibration.toml", lambda c: c["cam_0"].__setitem__("matrix", [[0.0] * 3] * 3)),
        "calibration.toml",
        "matrix must be",
    ),
    "rotation overflowing": (
        _edit_toml("calibration.toml", lambda c: c["cam_0"].__setitem__("rotation", [1e308, 0.0, 0.0])),
        "calibration.toml",
        "is not a rotation",
    ),
    "ground truth 2d bad visible": (
        _edit_csv(
            "ground_truth_2d.csv", lambda lines: [lines[0], lines[1].rsplit(",", 1)[0] + ",2"]
        ),
        "ground_truth_2d.csv",
        "visible must hold 0 or 1",
    ),
}


BAD_INPUTS["seeds a folder"] = (lambda r: ((r / "seeds.csv").unlink(), (r / "seeds.csv").mkdir()),
                                "seeds.csv", "is a folder, not a CSV file")
BAD_INPUTS["seed infinite"] = (_edit_csv("seeds.csv", lambda lines: [*lines, "5,cam0,ear_L,inf,10"]),
                               "seeds.csv", "non-numeric value 'inf'")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_input_error_naming_the_file(recording_dir: Path, case: str) -> None:
    change, file_part, message = BAD_INPUTS[case]
    change(recording_dir)
    with pytest.raises(InputError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")  # the error line alone: no numpy warning before it
        load_recording(recording_dir)
    assert file_part in str(info.value.path)
    assert message in info.value.problem


@pytest.mark.parametrize("damage", ["unreadable", "truncated"])
def test_bad_video_raises(tmp_path: Path, damage: str) -> None:
    root = make_tiny_recording(tmp_path / "rec", stream_format="avi", n_frames=30)
    video = root / "videos" / "cam1-fluorescence.avi"
    data = video.read_bytes()
    video.write_bytes(b"garbage" * 100 if damage == "unreadable" else data[: len(data) // 2])
    with pytest.raises(
        InputError, match="truncated" if damage == "truncated" else "cannot open"
    ) as info:
        load_recording(root)
    assert info.value.path == str(video)


def test_cli_reports_a_bad_recording_in_one_line(tmp_path: Path) -> None:
    root = make_tiny_recording(tmp_path / "rec", stream_format="avi", n_frames=20)
    video = root / "videos" / "cam0-reflectance.avi"
    video.write_bytes(video.read_bytes()[:3000])
    result = subprocess.run(
        [sys.executable, "-m", "agent.run", "eval", str(root), str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {video}: ")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("units", "factor"), [("m", 1000.0), ("cm", 10.0), ("mm", 1.0)])
def test_lengths_are_held_in_millimetres(recording_dir: Path, units: str, factor: float) -> None:
    # The recording in mm, relabelled: its numbers read as `units` are factor times as many mm.
    plain = load_recording(recording_dir)
    manifest = recording_dir / "recording.toml"
    manifest.write_text(tomli_w.dumps({**tomllib.loads(manifest.read_text()), "units": units}))
    scaled = load_recording(recording_dir)
    assert scaled.units == units and scaled.mm_per_unit == factor
    for before, after in zip(plain.group.cameras, scaled.group.cameras, strict=True):
        np.testing.assert_allclose(after.tvec, factor * before.tvec)
        np.testing.assert_array_equal(after.rvec, before.rvec)
    np.testing.assert_allclose(scaled.ground_truth_3d, factor * plain.ground_truth_3d)


def test_an_unknown_unit_is_refused(recording_dir: Path) -> None:
    manifest = recording_dir / "recording.toml"
    manifest.write_text(tomli_w.dumps({**tomllib.loads(manifest.read_text()), "units": "furlong"}))
    with pytest.raises(InputError, match="furlong") as caught:
        load_recording(recording_dir)
    assert caught.value.path == str(recording_dir / "recording.toml")
