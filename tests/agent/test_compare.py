"""``compare``: configurations, prompt hashes, metrics and differing frames of two runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from agent.run import main
from tests.fixtures.tiny_recording import make_tiny_recording
from tests.fixtures.tiny_session import FAST_DEC, make_tiny_session


@pytest.fixture(scope="module")
def behavior_runs(tmp_path_factory):
    """A session and two runs of it, K = 4 and K = 6 clusters."""
    root = tmp_path_factory.mktemp("compare")
    session = root / "session"
    make_tiny_session(session, seed=7)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAST_DEC.items():
            patch.setenv(key, value)
        for clusters in (4, 6):
            assert main(["behavior", str(session), "--out", str(root / f"k{clusters}"), "--features", "keypoint",
                         "--clusters", str(clusters), "--quiet", "--no-clip-videos"]) == 0
    return session, root / "k4", root / "k6"


@pytest.fixture(scope="module")
def pose_runs(tmp_path_factory):
    """A tiny recording tracked with the full method and with the naive ablation."""
    root = tmp_path_factory.mktemp("compare-pose")
    recording = make_tiny_recording(root / "rec", n_frames=10, seed_frames=(0, 1, 2))
    for ablation in ("full", "naive"):
        assert main(["pose", str(recording), "--out", str(root / ablation), "--quiet", "--ablation", ablation]) == 0
    return recording, root / "full", root / "naive"


def _compare_json(capsys, a, b):
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _eval_json(capsys, *args):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _frame_labels(segments: pd.DataFrame, animal: str) -> np.ndarray:
    rows = segments[segments["animal"] == animal].sort_values("start_frame")
    return np.repeat(rows["label"].to_numpy(), (rows["end_frame"] - rows["start_frame"]).to_numpy())


def test_behavior_runs_differ_in_k_and_in_the_frames_counted(behavior_runs, capsys):
    session, k4, k6 = behavior_runs
    comparison = _compare_json(capsys, k4, k6)
    assert comparison["kind"] == "behavior" and comparison["config"] == {"n_clusters": [4, 6]}
    for index, run in enumerate((k4, k6)):
        scores = _eval_json(capsys, "eval-behavior", str(session), str(run))
        assert {key: pair[index] for key, pair in comparison["metrics"].items()} == \
            {key: scores[key] for key in comparison["metrics"]}
    tables = [pd.read_csv(run / "segments.csv") for run in (k4, k6)]
    for animal, diff in comparison["differences"]["animals"].items():
        a, b = (_frame_labels(table, animal) for table in tables)
        assert diff["frames_differing"] == int(np.sum(a != b))
        covered = np.zeros(a.size, dtype=int)
        for start, end, label_a, label_b in diff["ranges"]:
            covered[start:end] += 1
            assert label_a != label_b and set(a[start:end]) == {label_a} and set(b[start:end]) == {label_b}
        assert np.array_equal(covered == 1, a != b)


def test_a_run_and_its_copy_have_no_differences(behavior_runs, tmp_path, capsys):
    _session, k4, _k6 = behavior_runs
    copy = shutil.copytree(k4, tmp_path / "copy")
    comparison = _compare_json(capsys, k4, copy)
    assert comparison["config"] == {}
    assert all(diff["frames_differing"] == 0 and diff["ranges"] == []
               for diff in comparison["differences"]["animals"].values())
    assert all(a == b for a, b in comparison["metrics"].values())
    assert main(["compare", str(k4), str(copy)]) == 0
    assert "(identical)" in capsys.readouterr().out


def _differing_keypoint_frames(full, naive) -> set[tuple[int, str]]:
    """Independently: frame/keypoint pairs whose centroid (any camera) or QC flag differ."""
    index = ["frame", "camera", "keypoint"]
    a, b = (pd.read_csv(run / "keypoints_2d.csv").set_index(index)["centroid"] for run in (full, naive))
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1)
    views = both[both["a"].fillna(-1) != both["b"].fillna(-1)].reset_index()
    qa, qb = (pd.read_csv(run / "qc.csv").set_index(["frame", "keypoint"])["flagged"] for run in (full, naive))
    flags = qa[qa != qb].reset_index()
    return set(zip(views["frame"], views["keypoint"], strict=True)) | set(zip(flags["frame"], flags["keypoint"],
                                                                              strict=True))


def test_pose_full_and_naive_ablation_differ_in_the_listed_keypoint_frames(pose_runs, capsys):
    recording, full, naive = pose_runs
    comparison = _compare_json(capsys, full, naive)
    assert comparison["kind"] == "pose" and comparison["config"] == {"ablation": ["full", "naive"]}
    listed = {(row["frame"], row["keypoint"]) for row in comparison["differences"]["keypoint_frames"]}
    assert listed == _differing_keypoint_frames(full, naive) and listed
    assert comparison["differences"]["n_keypoint_frames_differing"] == len(listed)
    for index, run in enumerate((full, naive)):
        scores = _eval_json(capsys, "eval", str(recording), str(run))
        assert all(pair[index] == pytest.approx(scores[key], nan_ok=True)
                   for key, pair in comparison["metrics"].items())
    assert main(["compare", str(full), str(naive), "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "ablation" in text and "full  ->  naive" in text and "more" in text


def test_runs_of_different_inputs_are_compared_with_a_warning(pose_runs, tmp_path, capsys):
    _recording, full, naive = pose_runs
    other = make_tiny_recording(tmp_path / "other", n_frames=9, seed_frames=(0, 1, 2))
    assert main(["pose", str(other), "--out", str(tmp_path / "other-run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(full), str(tmp_path / "other-run")]) == 0
    assert "warning: the runs were made from different inputs" in capsys.readouterr().err
    assert _compare_json(capsys, full, tmp_path / "other-run")["same_input"] is False
    assert _compare_json(capsys, full, naive)["same_input"] is True
    assert main(["compare", str(full), str(naive)]) == 0
    assert capsys.readouterr().err == ""


def test_runs_of_different_kinds_or_unfinished_are_refused(behavior_runs, pose_runs, tmp_path, capsys):
    _session, k4, _k6 = behavior_runs
    _recording, full, _naive = pose_runs
    capsys.readouterr()
    assert main(["compare", str(k4), str(full)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    unfinished = shutil.copytree(k4, tmp_path / "unfinished")
    (unfinished / "run.json").unlink()
    assert main(["compare", str(k4), str(unfinished)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json" in err[0]
