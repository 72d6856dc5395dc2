"""Tests of bench/bench_pose_sweep.py's plan parsing and summary (the runs themselves are the benchmark)."""

from __future__ import annotations

import argparse

import pytest

from bench.bench_pose_sweep import report, rig_seeds, score_plan


def test_a_rig_names_its_cameras_and_seeds_with_ranges():
    assert rig_seeds("6:0-3,7") == (6, [0, 1, 2, 3, 7])
    assert rig_seeds("4:12") == (4, [12])


@pytest.mark.parametrize("text", ["6", "6:", "x:1", "1:0", "6:a-b"])
def test_a_malformed_rig_is_an_argument_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match="CAMERAS:SEEDS"):
        rig_seeds(text)


def _row(cameras, seed, within5, mean_mm, recall, precision):
    return {"cameras": cameras, "seed": seed, "within5": within5, "mean_mm": mean_mm,
            "accuracy": within5, "qc_recall": recall, "qc_precision": precision}


def test_the_summary_gives_each_rig_its_mean_worst_and_qc_goal_count():
    rows = [_row(6, 0, 0.8, 1.0, 0.95, 0.6), _row(6, 1, 0.6, 3.0, 0.85, 0.7),
            _row(4, 0, 0.5, 5.0, 0.92, 0.45)]
    text = report(rows, "cmd")
    assert "| 6 | 2 | 70.00% | 60.0% | 2.00 | 1 | 1 |" in text
    assert "| 4 | 1 | 50.00% | 50.0% | 5.00 | 0 | 0 |" in text
    assert "| 6 | 1 | 60.0% | 3.00 | 60.0% | 0.850 | 0.700 | **no** |" in text


def test_a_plan_is_simulated_first_then_scored_in_plan_order(tmp_path, capsys):
    events = []

    def simulate(item):
        events.append(("simulate", item))
        return tmp_path / f"rec{item[0]}"

    def score(item, recording):
        events.append(("score", item))
        return {"item": item, "recording": recording.name}

    plan = [(3, 0), (1, 1), (2, 0)]
    rows = score_plan(plan, simulate, score, jobs=2)
    assert [row["item"] for row in rows] == plan
    assert [row["recording"] for row in rows] == ["rec3", "rec1", "rec2"]
    assert events[:3] == [("simulate", item) for item in plan]  # all before any scoring
    assert sorted(events[3:]) == sorted(("score", item) for item in plan)
    assert capsys.readouterr().out.count("\n") == 3  # one printed row each
