"""Tests of bench/bench_pose_conditions.py's recording names and summary (the runs are the benchmark)."""

from __future__ import annotations

import pandas as pd

from bench.bench_pose_conditions import CONDITIONS, add_seed_noise, recording_name, report


def _row(condition, seed, within5, triangulable, recall, precision):
    return {"condition": condition, "seed": seed, "gate_px": 12.0, "within5": within5,
            "triangulable": triangulable, "mean_mm": 2.0, "accuracy": within5,
            "qc_recall": recall, "qc_precision": precision}


def test_each_condition_and_seed_has_its_own_recording_folder():
    names = {recording_name(name, seed, 50) for name in CONDITIONS for seed in (0, 1)}
    assert len(names) == 2 * len(CONDITIONS)
    assert recording_name("2x resolution", 1, 50) == "synth-width2048-height1400-seed1-50f"


def test_the_summary_gives_each_condition_its_means_and_qc_goal_count():
    rows = [_row("defaults", 0, 0.8, 0.9, 0.95, 0.6), _row("defaults", 1, 0.6, 0.8, 0.85, 0.7),
            _row("3 cameras", 0, 0.3, 0.7, 0.92, 0.55)]
    text = report(rows, "cmd")
    assert "| defaults | 2 | 70.00% | 85.00% | 2.00 | 1 |" in text
    assert "| 3 cameras | 1 | 30.00% | 70.00% | 2.00 | 1 |" in text
    assert "| 3 cameras | 0 | 12.0 | 30.0% | 70.0% | 2.00 | 30.0% | 0.920 | 0.550 |" in text
    assert "2x resolution" not in text  # conditions without rows are left out


def test_seed_noise_moves_every_label_by_about_its_sigma_and_keeps_the_rows(tmp_path):
    seeds = tmp_path / "seeds.csv"
    rows = [f"{frame},cam{camera},kp{k},{100.0 + k},{200.0 + k}"
            for frame in range(3) for camera in range(4) for k in range(50)]
    seeds.write_text("frame,camera,keypoint,x,y\n" + "\n".join(rows) + "\n")
    before = pd.read_csv(seeds)
    add_seed_noise(seeds, 2.0, seed=0)
    after = pd.read_csv(seeds)
    assert after[["frame", "camera", "keypoint"]].equals(before[["frame", "camera", "keypoint"]])
    moved = after[["x", "y"]].to_numpy() - before[["x", "y"]].to_numpy()
    assert (moved != 0).all() and 1.8 < moved.std() < 2.2
