"""Tests for agent/session.py: every bad input is one InputError; real sessions load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from agent.errors import InputError
from agent.session import iter_frames, load_session, track_session_video

ANIMALS = ["mouse1", "mouse2"]
BODYPARTS = ["nose", "neck", "tail base"]
N_FRAMES = 12


def _write_video(path: Path, n_frames: int = N_FRAMES) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48), False)
    for index in range(n_frames):
        writer.write(np.full((48, 64), 10 * index, dtype=np.uint8))
    writer.release()


def _keypoint_table(n_frames: int, animals: list[str], rng: np.random.Generator) -> pd.DataFrame:
    columns = pd.MultiIndex.from_product(
        [["scorer"], animals, BODYPARTS, ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    return pd.DataFrame(rng.uniform(1, 40, (n_frames, len(columns))), columns=columns)


def _write_session(root: Path, rng: np.random.Generator, *, kp_frames: int = N_FRAMES,
                   kp_animals: list[str] = ANIMALS, kp_name: str = "keypoints.h5",
                   extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write_video(root / "video.avi")
    table = _keypoint_table(kp_frames, kp_animals, rng)
    if kp_name.endswith(".h5"):
        table.to_hdf(root / kp_name, key="df_with_missing")
    else:
        table.to_csv(root / kp_name)
    (root / "session.toml").write_text(
        f'fps = 30.0\nvideo = "video.avi"\nanimals = {ANIMALS!r}\nkeypoints = "{kp_name}"\n'
        + extra
    )
    return root


def test_valid_session_loads_with_all_parts(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _write_session(tmp_path / "s", rng, extra="[arena]\nfood_zone = [1, 2, 30, 40]\n")
    (root / "ground_truth.csv").write_text("animal,start_frame,end_frame,label\nmouse2,0,5,chase\n")
    session = load_session(root)
    assert session.n_frames == N_FRAMES
    assert session.frame_size == (64, 48)
    assert session.keypoints.shape == (N_FRAMES, 2, 3, 2)
    assert session.likelihood.shape == (N_FRAMES, 2, 3)
    assert session.food_zone == (1.0, 2.0, 30.0, 40.0)
    assert session.ground_truth == [("mouse2", 0, 5, "chase")]
    assert len(list(iter_frames(session.video_path))) == N_FRAMES
    assert next(iter_frames(session.video_path, start=3)).shape == (48, 64)


def test_session_video_is_tracked_over_the_analysed_frames(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    writer = cv2.VideoWriter(str(root / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0,
                             (160, 120), False)
    for index in range(30):
        image = np.full((120, 160), 200, dtype=np.uint8)
        cv2.ellipse(image, (30 + 3 * index, 60), (20, 8), 0, 0, 360, 30, -1)
        writer.write(image)
    writer.release()
    (root / "session.toml").write_text('fps = 30\nvideo = "v.avi"\nanimals = ["m"]\n')
    tracks = track_session_video(load_session(root))
    assert tracks.centroid.shape == (30, 1, 2)
    np.testing.assert_allclose(tracks.centroid[:, 0, 0], 30 + 3 * np.arange(30), atol=1.5)


def test_csv_and_h5_give_the_same_arrays(tmp_path: Path) -> None:
    from_h5 = load_session(_write_session(tmp_path / "a", np.random.default_rng(1)))
    from_csv = load_session(
        _write_session(tmp_path / "b", np.random.default_rng(1), kp_name="keypoints.csv")
    )
    np.testing.assert_allclose(from_h5.keypoints, from_csv.keypoints)


@pytest.mark.parametrize("suffix", [".CSV", ".H5"])
def test_an_upper_case_suffix_is_read_as_its_lower_case(tmp_path: Path, suffix: str) -> None:
    lower = load_session(_write_session(tmp_path / "a", np.random.default_rng(1)))
    root = _write_session(tmp_path / "b", np.random.default_rng(1), kp_name="keypoints" + suffix.lower())
    (root / ("keypoints" + suffix.lower())).rename(root / ("keypoints" + suffix))
    (root / "session.toml").write_text((root / "session.toml").read_text().replace(suffix.lower(), suffix))
    np.testing.assert_allclose(load_session(root).keypoints, lower.keypoints)


def test_a_manifest_without_video_means_video_mp4(tmp_path: Path) -> None:
    root = _write_session(tmp_path / "s", np.random.default_rng(1))
    (root / "video.avi").rename(root / "video.mp4")
    (root / "session.toml").write_text((root / "session.toml").read_text().replace('video = "video.avi"\n', ""))
    assert load_session(root).video_path == root / "video.mp4"
    (root / "video.mp4").unlink()
    with pytest.raises(InputError, match="video is required"):
        load_session(root)


def test_a_deeplabcut_label_table_csv_with_three_index_columns_loads(tmp_path: Path) -> None:
    from_h5 = load_session(_write_session(tmp_path / "a", np.random.default_rng(1)))
    root = _write_session(tmp_path / "b", np.random.default_rng(1), kp_name="keypoints.csv")
    # DeepLabCut 2.2+ labels (CollectedData_*.csv): rows indexed by folder, video and image.
    table = _keypoint_table(N_FRAMES, ANIMALS, np.random.default_rng(1))
    table.index = pd.MultiIndex.from_tuples(
        [("labeled-data", "video", f"img{frame:05d}.png") for frame in range(N_FRAMES)])
    table.to_csv(root / "keypoints.csv")
    assert (root / "keypoints.csv").read_text().startswith("scorer,,,scorer")
    np.testing.assert_allclose(load_session(root).keypoints, from_h5.keypoints)


def test_animals_are_matched_by_name_not_order(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _write_session(tmp_path / "s", rng, kp_animals=["mouse2", "mouse1"])
    table = pd.read_hdf(root / "keypoints.h5")
    session = load_session(root)
    np.testing.assert_allclose(session.keypoints[:, 0, 0, 0], table[("scorer", "mouse1", "nose", "x")])


def test_zero_points_are_missing(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _write_session(tmp_path / "s", rng)
    table = pd.read_hdf(root / "keypoints.h5")
    table.loc[3, ("scorer", "mouse1", "neck", "x")] = 0.0
    table.loc[3, ("scorer", "mouse1", "neck", "y")] = 0.0
    table.to_hdf(root / "keypoints.h5", key="df_with_missing", mode="w")
    keypoints = load_session(root).keypoints
    assert np.isnan(keypoints[3, 0, 1]).all()
    assert np.isnan(keypoints).sum() == 2


def test_one_frame_of_difference_analyses_the_shorter(tmp_path: Path, rng) -> None:
    session = load_session(_write_session(tmp_path / "s", rng, kp_frames=N_FRAMES - 1))
    assert session.n_frames == N_FRAMES - 1
    assert session.keypoints.shape[0] == N_FRAMES - 1


def test_single_animal_layout_is_accepted_for_one_animal(tmp_path: Path, rng) -> None:
    root = tmp_path / "s"
    root.mkdir()
    _write_video(root / "video.avi")
    table = _keypoint_table(N_FRAMES, ["mouse"], rng).droplevel("individuals", axis=1)
    table.to_csv(root / "kp.csv")
    (root / "session.toml").write_text(
        'fps = 30\nvideo = "video.avi"\nanimals = ["m"]\nkeypoints = "kp.csv"\n'
    )
    assert load_session(root).keypoints.shape == (N_FRAMES, 1, 3, 2)


def _break_frame_count(root: Path, rng) -> None:
    _keypoint_table(N_FRAMES + 3, ANIMALS, rng).to_hdf(root / "keypoints.h5", key="df_with_missing", mode="w")


def _break_animal(root: Path, rng) -> None:
    _keypoint_table(N_FRAMES, ["mouse1", "rat"], rng).to_hdf(root / "keypoints.h5", key="k", mode="w")


def _break_layout(root: Path, rng) -> None:
    flat = pd.DataFrame(rng.uniform(size=(N_FRAMES, 4)), columns=["a", "b", "c", "d"])
    flat.to_hdf(root / "keypoints.h5", key="df", mode="w")


def test_missing_features_stay_nan(tmp_path: Path, rng: np.random.Generator) -> None:
    """FORMATS.md: missing values are NaN in arrays; the loader keeps them for the features step."""
    root = _write_session(tmp_path / "s", rng, extra='features = "features.npy"\n')
    values = rng.normal(size=(N_FRAMES, 2, 4))
    values[2:5, 0, 1] = np.nan
    np.save(root / "features.npy", values)
    features = load_session(root).features
    np.testing.assert_array_equal(np.isnan(features), np.isnan(values))
    np.testing.assert_array_equal(features[~np.isnan(values)], values[~np.isnan(values)])


def _break_video(root: Path, rng) -> None:
    (root / "video.avi").write_bytes(rng.bytes(5000))


def _truncate_video(root: Path, rng) -> None:
    data = (root / "video.avi").read_bytes()
    (root / "video.avi").write_bytes(data[: len(data) // 2])


def _break_features(root: Path, rng) -> None:
    np.save(root / "features.npy", np.zeros((N_FRAMES, 3, 4)))
    with (root / "session.toml").open("a") as handle:
        handle.write('features = "features.npy"\n')


def _infinite_features(root: Path, rng) -> None:
    values = np.zeros((N_FRAMES, 2, 4))
    values[3, 1, 2] = np.inf
    np.save(root / "features.npy", values)
    with (root / "session.toml").open("a") as handle:
        handle.write('features = "features.npy"\n')


def _empty_features(root: Path, rng) -> None:
    np.save(root / "features.npy", np.full((N_FRAMES, 2, 4), np.nan))
    with (root / "session.toml").open("a") as handle:
        handle.write('features = "features.npy"\n')


def _empty_h5(root: Path, rng) -> None:
    (root / "keypoints.h5").write_bytes(b"")


def _ground_truth(text: str) -> Callable[[Path, np.random.Generator], None]:
    def write(root: Path, rng) -> None:
        (root / "ground_truth.csv").write_text("animal,start_frame,end_frame,label\n" + text)
    return write


def _infinite_keypoint(root: Path, rng) -> None:
    table = _keypoint_table(N_FRAMES, ANIMALS, rng)
    table.iloc[5, 3] = np.inf
    table.to_hdf(root / "keypoints.h5", key="df_with_missing")


def _break_fps(root: Path, rng) -> None:
    text = (root / "session.toml").read_text().replace("fps = 30.0", "fps = 0")
    (root / "session.toml").write_text(text)


@pytest.mark.parametrize(
    ("breaker", "match"),
    [
        (_break_frame_count, "has 15 frames"),
        (_break_animal, "mouse2"),
        (_break_layout, "unknown keypoint layout"),
        (_break_video, "cannot decode"),
        (_truncate_video, "truncated|cannot decode"),
        (_break_features, r"\(T, 2, D\)"),
        (_infinite_features, "1 values are infinite"),
        (_empty_features, "every value is NaN"),
        (_break_fps, "fps"),
        (_empty_h5, "not a readable HDF5 file$"),
        (_infinite_keypoint, "infinite value at frame 5, column mouse1/"),
        (_ground_truth(""), "no reference segments"),
        (_ground_truth("mouse1,0,5.5,chase\n"), r"must be integers \(line 2\)"),
        (_ground_truth("mouse1,0,5,chase\nmouse1,3,8,huddle\n"), "mouse1 overlap on lines 2 and 3"),
        (_ground_truth("mouse1,0,5,chase\nmouse2,6,9,\n"), "label is empty on line 3"),
    ],
)
def test_bad_input_raises_one_input_error(tmp_path: Path, rng, breaker, match) -> None:
    root = _write_session(tmp_path / "s", rng)
    breaker(root, rng)
    with pytest.raises(InputError, match=match):
        load_session(root)


def test_real_mabe_session_loads(shared_data: Path) -> None:
    root = shared_data / "mabe22-triplets-EGS8X2MN4SSUGFWAV976"
    if not root.is_dir():
        pytest.skip("MABe session absent")
    session = load_session(root)
    assert session.n_frames == 1800  # 1801 video frames, 1800 keypoint rows
    assert session.keypoints.shape == (1800, 3, 12, 2)
    assert session.bodyparts[0] == "nose" and session.likelihood is None
    assert session.food_zone is not None


def test_real_openfield_session_loads_video_only(shared_data: Path) -> None:
    root = shared_data / "openfield-single-mouse"
    if not root.is_dir():
        pytest.skip("openfield session absent")
    session = load_session(root)
    assert session.n_frames == 2330 and session.frame_size == (640, 480)
    assert session.keypoints is None and session.bodyparts == []
