"""End-to-end tests of ``behavior``, ``eval-behavior`` and ``synth behavior`` through agent.run.main."""

from __future__ import annotations

import json
import shutil
import tomllib

import numpy as np
import pandas as pd
import pytest
import tomli_w

from agent.commands import behavior as behavior_command
from agent.run import main
from tests.fixtures.tiny_session import FAST_DEC, make_tiny_session
from tools.behavior_sim import SimParams


@pytest.fixture(autouse=True)
def fast_dec(monkeypatch):
    for key, value in FAST_DEC.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "session"
    make_tiny_session(path, seed=7)
    return path


@pytest.fixture
def session_copy(session_dir, tmp_path):
    return shutil.copytree(session_dir, tmp_path / "copy")


def _behavior(session, out, *extra):
    return main(["behavior", str(session), "--out", str(out), "--features", "keypoint", "--clusters", "4",
                 "--quiet", *extra])


def test_synth_writes_a_session_with_ground_truth(tmp_path, capsys):
    assert main(["synth", "behavior", "--out", str(tmp_path / "s"), "--animals", "2", "--seconds", "3",
                 "--size", "128", "--no-keypoints", "--seed", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["ground_truth.csv", "session.toml", "video.mp4"]
    truth = pd.read_csv(tmp_path / "s" / "ground_truth.csv")
    assert list(truth.columns) == ["animal", "start_frame", "end_frame", "label"]
    assert truth.groupby("animal")["end_frame"].max().eq(90).all()


def test_behavior_writes_results_and_eval_scores_them(session_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _behavior(session_dir, out) == 0
    for name in ("clips.csv", "segments.csv", "ethogram.png", "run.json"):
        assert (out / name).is_file()
    clips = pd.read_csv(out / "clips.csv")
    assert sorted((out / "clips").glob("*.mp4")) and len(list((out / "clips").glob("*.mp4"))) == len(clips)
    segments = pd.read_csv(out / "segments.csv")
    for _, rows in segments.groupby("animal"):
        assert rows["start_frame"].iloc[0] == 0 and rows["end_frame"].iloc[-1] == 240
        assert (rows["start_frame"].to_numpy()[1:] == rows["end_frame"].to_numpy()[:-1]).all()
    assert segments["label"].str.fullmatch(r"[a-z]+(_[a-z]+)*").all()
    run = json.loads((out / "run.json").read_text())
    assert {"config", "versions", "model", "prompts", "counts", "timings", "summary"} <= set(run)
    assert run["counts"]["clips"] == len(clips) and run["config"]["n_clusters"] == 4
    capsys.readouterr()
    assert main(["eval-behavior", str(session_dir), str(out), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["frame_accuracy"] <= 1.0 and 0.0 <= scores["clip_boundary_recall"] <= 1.0
    assert main(["eval-behavior", str(session_dir), str(out)]) == 0
    assert "frame accuracy (many-to-one)" in capsys.readouterr().out


def test_same_inputs_give_identical_results(session_dir, tmp_path):
    for name in ("a", "b"):
        assert _behavior(session_dir, tmp_path / name, "--no-clip-videos") == 0
    for name in ("clips.csv", "segments.csv", "ethogram.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_resume_of_a_finished_run_and_refusal_to_overwrite(session_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _behavior(session_dir, out, "--no-clip-videos") == 0
    before = {name: (out / name).read_bytes() for name in ("segments.csv", "run.json")}
    assert _behavior(session_dir, out, "--no-clip-videos", "--resume") == 0
    assert {name: (out / name).read_bytes() for name in before} == before  # timings included
    capsys.readouterr()
    assert _behavior(session_dir, out, "--no-clip-videos") == 2
    assert "--resume" in capsys.readouterr().err


def test_a_resume_continues_with_the_settings_the_run_started_with(session_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _behavior(session_dir, out, "--no-clip-videos") == 0
    config = json.loads((out / "run.json").read_text())["config"]
    capsys.readouterr()
    assert main(["behavior", str(session_dir), "--out", str(out), "--features", "keypoint",
                 "--clusters", "5", "--quiet", "--resume"]) == 2
    assert "--clusters 5: this run started with n_clusters = 4" in capsys.readouterr().err
    # Settings not given again are the run's own, in its results and in run.json.
    assert _behavior(session_dir, out, "--resume") == 0
    assert json.loads((out / "run.json").read_text())["config"] == config
    assert not (out / "clips").exists()


def test_video_only_session_runs_the_visual_path(tmp_path):
    session = tmp_path / "video-only"
    make_tiny_session(session, seed=1, seconds=6.0, keypoints=False)
    out = tmp_path / "out"
    assert main(["behavior", str(session), "--out", str(out), "--clusters", "4", "--quiet", "--no-clip-videos"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["features"] == "visual" and run["summary"]["kinematics_from"] == "video"


def _rewrite_keypoints(session, change):
    path = session / "keypoints.h5"
    table = pd.read_hdf(path)
    change(table).to_hdf(path, key="df_with_missing", mode="w")


def _break_frame_count(session):
    _rewrite_keypoints(session, lambda t: pd.concat([t, t.iloc[:20]], ignore_index=True))
    return "keypoints.h5"


def _edit_manifest(session, **changes):
    path = session / "session.toml"
    manifest = tomllib.loads(path.read_text())
    for key, change in changes.items():
        manifest[key] = change(manifest.get(key))
    path.write_text(tomli_w.dumps(manifest))


def _drop_animal(session):
    _edit_manifest(session, animals=lambda animals: [*animals, "mouse9"])
    return "keypoints.h5"


def _flatten_layout(session):
    _rewrite_keypoints(session, lambda t: t.set_axis(range(t.shape[1]), axis=1)
                       .pipe(lambda f: f.set_axis(pd.MultiIndex.from_tuples([("a", str(c)) for c in f.columns]),
                                                  axis=1)))
    return "keypoints.h5"


def _corrupt_video(session):
    (session / "video.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return "video.mp4"


def _constant_features(session):
    np.save(session / "features.npy", np.ones((240, 2, 3)))
    _edit_manifest(session, features=lambda _: "features.npy")
    return "features"


@pytest.mark.parametrize("breaker", [_break_frame_count, _drop_animal, _flatten_layout, _corrupt_video,
                                     _constant_features])
def test_bad_input_is_one_error_line_and_writes_nothing(session_copy, tmp_path, capsys, breaker):
    culprit = breaker(session_copy)
    out = tmp_path / "results"
    args = ["behavior", str(session_copy), "--out", str(out), "--quiet", "--clusters", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and culprit in err[0]
    assert not out.exists()


def test_session_features_with_missing_values_run(session_copy, tmp_path):
    """NaN cells of features.npy (missing values) are filled, not refused and not clustered as NaN."""
    rng = np.random.default_rng(3)
    values = np.repeat(rng.normal(size=(8, 2, 3)), 30, axis=0) + rng.normal(0, 0.05, (240, 2, 3))
    values[40:70, 1, :] = np.nan
    values[::7, 0, 2] = np.nan
    np.save(session_copy / "features.npy", values)
    _edit_manifest(session_copy, features=lambda _: "features.npy")
    out = tmp_path / "out"
    assert main(["behavior", str(session_copy), "--out", str(out), "--clusters", "4", "--quiet",
                 "--no-clip-videos"]) == 0
    assert json.loads((out / "run.json").read_text())["summary"]["features"] == "session"
    clips = pd.read_csv(out / "clips.csv")
    assert clips["cluster"].notna().all() and clips["cluster"].nunique() >= 2
    for _, rows in pd.read_csv(out / "segments.csv").groupby("animal"):
        assert rows["start_frame"].iloc[0] == 0 and rows["end_frame"].iloc[-1] == 240


def test_more_clusters_than_frames_is_refused(session_dir, tmp_path, capsys):
    assert main(["behavior", str(session_dir), "--out", str(tmp_path / "o"), "--clusters", "100000"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "o").exists()


def test_demo_simulates_once_runs_and_scores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(behavior_command, "DEMO_PARAMS", SimParams(n_animals=2, seconds=6.0, size=160))
    monkeypatch.setenv("BVLM_FEATURES", "keypoint")
    monkeypatch.setenv("BVLM_N_CLUSTERS", "4")
    assert main(["behavior", "--no-clip-videos"]) == 0
    printed = capsys.readouterr().out
    assert "segments:" in printed and "frame accuracy (many-to-one)" in printed
    assert (tmp_path / "runs" / "demo-behavior" / "segments.csv").is_file()
    made = (tmp_path / "data" / "demo-behavior" / "video.mp4").stat().st_mtime_ns
    assert main(["behavior", "--no-clip-videos", "--quiet"]) == 0
    assert (tmp_path / "data" / "demo-behavior" / "video.mp4").stat().st_mtime_ns == made
    # The demo replaces its own results, never a run in a --out of the user's.
    mine = tmp_path / "runs" / "demo-behavior"
    before = (mine / "segments.csv").read_bytes()
    shutil.copytree(mine, tmp_path / "mine")
    assert main(["behavior", "--no-clip-videos", "--quiet", "--out", str(tmp_path / "mine")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine" / "segments.csv").read_bytes() == before


def test_the_order_animals_are_listed_in_does_not_change_the_results(session_copy, session_dir, tmp_path):
    toml = session_copy / "session.toml"
    manifest = tomllib.loads(toml.read_text())
    manifest["animals"] = manifest["animals"][::-1]
    toml.write_text(tomli_w.dumps(manifest))
    assert _behavior(session_dir, tmp_path / "listed", "--no-clip-videos") == 0
    assert _behavior(session_copy, tmp_path / "reversed", "--no-clip-videos") == 0
    for name in ("segments.csv", "clips.csv"):
        rows = [sorted((tmp_path / run / name).read_text().splitlines()) for run in ("listed", "reversed")]
        assert rows[0] == rows[1], name



def test_reference_past_the_session_end_is_scored_to_the_end_with_a_warning(session_copy, tmp_path, capsys):
    assert _behavior(session_copy, tmp_path / "out", "--no-clip-videos") == 0
    capsys.readouterr()
    assert main(["eval-behavior", str(session_copy), str(tmp_path / "out"), "--json"]) == 0
    fitting = capsys.readouterr()
    assert "warning" not in fitting.err
    n_frames = int(pd.read_csv(tmp_path / "out" / "segments.csv")["end_frame"].max())  # segments cover them all
    truth = pd.read_csv(session_copy / "ground_truth.csv")
    last = truth["end_frame"].idxmax()
    assert truth.loc[last, "end_frame"] == n_frames  # the reference fits the session as made
    truth.loc[last, "end_frame"] += 30
    extra = pd.DataFrame([{"animal": truth.loc[last, "animal"], "start_frame": n_frames + 30,
                           "end_frame": n_frames + 40, "label": "beyond"}])
    pd.concat([truth, extra]).to_csv(session_copy / "ground_truth.csv", index=False)
    assert main(["eval-behavior", str(session_copy), str(tmp_path / "out"), "--json"]) == 0
    longer = capsys.readouterr()
    assert "ground_truth.csv" in longer.err and f"end after the session's {n_frames} frames" in longer.err
    assert f"at end_frame {n_frames + 40}" in longer.err and "1 of them left out" in longer.err
    assert json.loads(longer.out) == json.loads(fitting.out)
