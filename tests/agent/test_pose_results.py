"""Tests for agent/pose_results.py: FORMATS.md section 2 writers and readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.errors import InputError
from agent.pose_results import (
    _write_table,
    read_keypoints_2d,
    read_keypoints_3d,
    read_qc,
    write_keypoints_2d,
    write_keypoints_3d,
    write_qc,
)

KEYPOINTS = ["nose", "ear_L", "tail_tip"]
CAMERAS = ["camB", "camA"]  # manifest order, deliberately not alphabetical
FRAMES = np.array([2, 3, 7, 10])


@pytest.fixture
def results_3d(rng: np.random.Generator) -> dict:
    shape = (FRAMES.size, len(KEYPOINTS))
    points_3d = rng.normal(0, 50, (*shape, 3))
    points_3d[1, 2] = np.nan  # untriangulated
    return {
        "keypoints": KEYPOINTS,
        "frames": FRAMES,
        "points_3d": points_3d,
        "error_px": rng.uniform(0, 3, shape),
        "ncams": rng.integers(2, 6, shape),
        "score": rng.uniform(0, 1, shape),
    }


@pytest.fixture
def results_2d(rng: np.random.Generator) -> dict:
    shape = (FRAMES.size, len(CAMERAS), len(KEYPOINTS))
    points_2d = rng.uniform(0, 640, (*shape, 2))
    assigned = rng.uniform(size=shape) < 0.7
    points_2d[~assigned] = np.nan
    centroid = np.where(assigned, rng.integers(0, 20, shape), -1)
    centroid[tuple(np.argwhere(assigned)[0])] = -1  # a label placed without a centroid
    stage = rng.choice(np.array(["seed", "within_region", "refine"]), shape)
    return {
        "cameras": CAMERAS,
        "keypoints": KEYPOINTS,
        "frames": FRAMES,
        "points_2d": points_2d,
        "centroid": centroid,
        "error_px": rng.uniform(0, 2, shape),
        "stage": np.where(assigned, stage, ""),
    }


def test_keypoints_3d_has_anipose_columns(tmp_path: Path, results_3d: dict) -> None:
    path = write_keypoints_3d(tmp_path / "keypoints_3d.csv", **results_3d)
    table = pd.read_csv(path)
    expected = [f"{kp}_{s}" for kp in KEYPOINTS for s in ("x", "y", "z", "error", "ncams", "score")]
    expected += [f"M_{i}{j}" for i in range(3) for j in range(3)] + [
        "center_0",
        "center_1",
        "center_2",
    ]
    assert list(table.columns) == [*expected, "fnum"]
    np.testing.assert_array_equal(table["fnum"], FRAMES)
    transform = (
        table[[f"M_{i}{j}" for i in range(3) for j in range(3)]].to_numpy().reshape(-1, 3, 3)
    )
    np.testing.assert_array_equal(transform, np.broadcast_to(np.eye(3), transform.shape))
    assert (table[["center_0", "center_1", "center_2"]].to_numpy() == 0).all()


def test_untriangulated_keypoint_is_empty_with_ncams_0(tmp_path: Path, results_3d: dict) -> None:
    path = write_keypoints_3d(tmp_path / "keypoints_3d.csv", **results_3d)
    header, _, row = path.read_text().splitlines()[:3]
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert [cells[f"tail_tip_{s}"] for s in ("x", "y", "z", "error", "score")] == [""] * 5
    assert cells["tail_tip_ncams"] == "0"
    assert cells["nose_x"] == f"{results_3d['points_3d'][1, 0, 0]:.4f}"


def test_keypoints_3d_round_trip(tmp_path: Path, results_3d: dict) -> None:
    path = write_keypoints_3d(tmp_path / "keypoints_3d.csv", **results_3d)
    table = read_keypoints_3d(path)
    assert table.keypoints == KEYPOINTS
    np.testing.assert_array_equal(table.frames, FRAMES)
    np.testing.assert_allclose(table.points_3d, results_3d["points_3d"], atol=5e-5)
    missing = np.isnan(results_3d["points_3d"][..., 0])
    assert np.isnan(table.error_px[missing]).all() and (table.ncams[missing] == 0).all()
    np.testing.assert_allclose(
        table.error_px[~missing], results_3d["error_px"][~missing], atol=5e-5
    )
    np.testing.assert_array_equal(table.ncams[~missing], results_3d["ncams"][~missing])
    np.testing.assert_allclose(table.score[~missing], results_3d["score"][~missing], atol=5e-5)


def test_writes_are_byte_identical(tmp_path: Path, results_3d: dict, results_2d: dict) -> None:
    first = write_keypoints_3d(tmp_path / "a.csv", **results_3d).read_bytes()
    assert write_keypoints_3d(tmp_path / "b.csv", **results_3d).read_bytes() == first
    first = write_keypoints_2d(tmp_path / "c.csv", **results_2d).read_bytes()
    assert write_keypoints_2d(tmp_path / "d.csv", **results_2d).read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "c.csv", "d.csv"]


def test_keypoints_2d_rows_are_assigned_labels_in_manifest_order(
    tmp_path: Path, results_2d: dict
) -> None:
    path = write_keypoints_2d(tmp_path / "keypoints_2d.csv", **results_2d)
    table = pd.read_csv(path, keep_default_na=False)
    assert list(table.columns) == [
        "frame",
        "camera",
        "keypoint",
        "x",
        "y",
        "centroid",
        "error_px",
        "stage",
    ]
    assert len(table) == np.isfinite(results_2d["points_2d"][..., 0]).sum()
    order = np.stack(
        [
            table["frame"].to_numpy(),
            table["camera"].map(CAMERAS.index).to_numpy(),
            table["keypoint"].map(KEYPOINTS.index).to_numpy(),
        ],
        axis=1,
    )
    assert [tuple(row) for row in order] == sorted(tuple(row) for row in order)
    assert (table["centroid"] == "").sum() == 1  # the one label without a centroid


def test_keypoints_2d_round_trip(tmp_path: Path, results_2d: dict) -> None:
    path = write_keypoints_2d(tmp_path / "keypoints_2d.csv", **results_2d)
    table = read_keypoints_2d(path, CAMERAS, KEYPOINTS, FRAMES)
    np.testing.assert_allclose(table.points_2d, results_2d["points_2d"], atol=5e-5)
    np.testing.assert_array_equal(table.centroid, results_2d["centroid"])
    assigned = np.isfinite(results_2d["points_2d"][..., 0])
    np.testing.assert_allclose(
        table.error_px[assigned], results_2d["error_px"][assigned], atol=5e-5
    )
    assert np.isnan(table.error_px[~assigned]).all()
    np.testing.assert_array_equal(table.stage.astype(str), results_2d["stage"])


def test_keypoints_2d_reader_keeps_only_requested_frames(tmp_path: Path, results_2d: dict) -> None:
    path = write_keypoints_2d(tmp_path / "keypoints_2d.csv", **results_2d)
    table = read_keypoints_2d(path, CAMERAS, KEYPOINTS, np.array([3, 5]))
    np.testing.assert_allclose(table.points_2d[0], results_2d["points_2d"][1], atol=5e-5)
    assert np.isnan(table.points_2d[1]).all()


def test_qc_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    shape = (FRAMES.size, len(KEYPOINTS))
    error_px = rng.uniform(0, 9, shape)
    error_px[0, 1] = np.nan
    flagged = error_px > 5
    reason = np.where(flagged, "reprojection", "")
    path = write_qc(
        tmp_path / "qc.csv", KEYPOINTS, FRAMES, error_px, np.full(shape, 3), flagged, reason
    )
    assert path.read_text().splitlines()[0] == "frame,keypoint,error_px,ncams,flagged,reason"
    table = read_qc(path, KEYPOINTS)
    np.testing.assert_array_equal(table.frames, FRAMES)
    np.testing.assert_allclose(table.error_px, error_px, atol=5e-5)
    np.testing.assert_array_equal(table.flagged, flagged)
    np.testing.assert_array_equal(table.reason.astype(str), reason)
    assert (table.ncams == 3).all()


def test_writer_checks_shapes(tmp_path: Path, results_3d: dict) -> None:
    results_3d["error_px"] = results_3d["error_px"][:, :2]
    with pytest.raises(ValueError, match=r"error_px must have shape \(4, 3\), got \(4, 2\)"):
        write_keypoints_3d(tmp_path / "keypoints_3d.csv", **results_3d)
    assert not (tmp_path / "keypoints_3d.csv").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file is empty"),
        ("frame,camera,keypoint,x,y\n", "missing column(s) centroid, error_px, stage"),
        (
            "frame,camera,keypoint,x,y,centroid,error_px,stage\n1,camA,nose,1.0,x,,,seed\n",
            "non-numeric",
        ),
        (
            "frame,camera,keypoint,x,y,centroid,error_px,stage\n1,camC,nose,1,2,,,seed\n",
            "unknown camera",
        ),
        (
            "frame,camera,keypoint,x,y,centroid,error_px,stage\n1.5,camA,nose,1,2,,,seed\n",
            "non-integer",
        ),
        (
            "frame,camera,keypoint,x,y,centroid,error_px,stage\n1,camA,nose,1,2,,,seed\n1,camA,nose,3,4,,,seed\n",
            "line 3 repeats",
        ),
    ],
)
def test_malformed_keypoints_2d_raises(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keypoints_2d.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_keypoints_2d(path, CAMERAS, KEYPOINTS)
    assert info.value.path == str(path) and message in info.value.problem


def test_malformed_keypoints_3d_and_qc_raise(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("nose_x,nose_y,nose_z,fnum\n1,2,3,0\n1,2,3,0\n")
    with pytest.raises(InputError, match="repeated frame"):
        read_keypoints_3d(path)
    path.write_text("nose_x,nose_y,fnum\n1,2,0\n")
    with pytest.raises(InputError, match="no keypoint columns"):
        read_keypoints_3d(path)
    with pytest.raises(InputError, match="missing column"):
        read_keypoints_3d(path, ["nose"])
    path.write_text("frame,keypoint,error_px,ncams,flagged,reason\n0,nose,1.0,2,yes,\n")
    with pytest.raises(InputError, match="flagged"):
        read_qc(path, KEYPOINTS)
    with pytest.raises(InputError, match="file not found"):
        read_qc(tmp_path / "absent.csv", KEYPOINTS)


def test_the_csv_writer_writes_the_bytes_pandas_wrote(tmp_path: Path, rng: np.random.Generator) -> None:
    import io

    for trial in range(40):
        n = int(rng.integers(0, 12))
        floats = rng.normal(0, 10.0 ** rng.integers(-3, 5), n)
        floats[rng.random(n) < 0.3] = np.nan
        floats[rng.random(n) < 0.1] = rng.choice([np.inf, -np.inf, -0.0, 0.0])
        centroid = rng.integers(-1, 40, n)
        columns = {
            "frame": np.arange(n),
            "name": rng.choice(["ear_L", "a,b", 'say "hi"', "two\nlines", ""], n).astype(object),
            "x": floats,
            "y": floats.astype(np.float32),
            "ncams": rng.integers(0, 6, n),
            "flagged": rng.random(n) < 0.5,
            "centroid": np.where(centroid < 0, "", centroid.astype(str)),
        }
        float_format = ["%.3f", "%.6f", "%.1f"][trial % 3]
        expected = io.StringIO()
        pd.DataFrame(columns).to_csv(expected, index=False, float_format=float_format, na_rep="",
                                     lineterminator="\n")
        written = _write_table(tmp_path / f"t{trial}.csv", columns, float_format)
        assert written.read_text() == expected.getvalue(), trial
