"""Tests of tools/behavior_rules.py: clip summaries and caption rules."""

from __future__ import annotations

import numpy as np
import pytest

from tools.behavior_rules import (
    caption_from_summary,
    session_body_length,
    summarize_clip,
    tracks_kinematics,
)
from tools.behavior_sim import BODYPARTS, SimParams, simulate_behavior
from tools.features import kinematics

BASE = {"speed_px_s": 5.0, "reference_body_length_px": 46.0, "bend_sd_deg": 2.0, "displacement_px": 2.0,
        "nearest_distance_px": 200.0, "nearest_relative_speed_px_s": 5.0, "nose_nose_px": 190.0,
        "nose_tailbase_px": 190.0, "follow_distance_px": None, "food_zone_fraction": 0.0}


@pytest.mark.parametrize(
    ("changes", "label"),
    [
        ({}, "stationary"),
        ({"nose_nose_px": 4.0, "nearest_distance_px": 50.0}, "oral_oral_contact"),
        # Noses together but the partner beside: side by side, not face to face.
        ({"nose_nose_px": 4.0, "nearest_distance_px": 25.0, "nearest_bearing_deg": 90.0}, "huddle"),
        ({"nose_nose_px": 4.0, "nearest_distance_px": 50.0, "nearest_bearing_deg": -20.0}, "oral_oral_contact"),
        ({"nose_tailbase_px": 5.0, "nearest_distance_px": 50.0}, "oral_genital_contact"),
        ({"speed_px_s": 180.0, "follow_distance_px": 10.0, "nose_tailbase_px": 10.0}, "chase"),
        ({"speed_px_s": 180.0}, "locomotion"),
        ({"nearest_distance_px": 25.0}, "huddle"),
        ({"speed_px_s": 30.0, "displacement_px": 40.0}, "exploring"),
        ({"bend_sd_deg": 15.0}, "grooming"),
        ({"food_zone_fraction": 1.0}, "feeding"),
    ],
)
def test_decision_list(changes, label):
    assert caption_from_summary({**BASE, **changes})[0] == label


@pytest.mark.parametrize("factor", [0.5, 2.0, 3.0])
def test_labels_do_not_depend_on_the_image_scale(factor):
    """Scaling every length (and so speed) and the body length together keeps every label."""
    lengths = ("speed_px_s", "reference_body_length_px", "displacement_px", "nearest_distance_px",
               "nearest_relative_speed_px_s", "nose_nose_px", "nose_tailbase_px", "follow_distance_px")
    cases = [{}, {"nose_nose_px": 4.0}, {"speed_px_s": 180.0, "follow_distance_px": 10.0},
             {"nearest_distance_px": 25.0}, {"speed_px_s": 30.0, "displacement_px": 40.0}]
    for changes in cases:
        summary = {**BASE, **changes}
        scaled = {k: (v * factor if k in lengths and v is not None else v) for k, v in summary.items()}
        assert caption_from_summary(scaled)[0] == caption_from_summary(summary)[0]


def test_description_gives_numbers_and_partner():
    _, text = caption_from_summary({**BASE, "speed_px_s": 85.0, "heading_deg": -45.0, "nearest_animal": "mouse3",
                                    "nearest_distance_px": 40.0, "nearest_bearing_deg": 180.0,
                                    "nearest_approach_px_s": 20.0})
    assert "85 px/s heading north-east" in text and "mouse3 at 40 px behind it, approaching" in text


def _analytic_kinematics(n_frames=60, fps=30.0):
    """Two mice: mouse1 walks east at 90 px/s, mouse2 sits still 30 px south of the start."""
    t = np.arange(n_frames) / fps
    centre = np.zeros((n_frames, 2, 2))
    centre[:, 0] = np.stack([100 + 90 * t, np.full(n_frames, 100.0)], -1)
    centre[:, 1] = [100.0, 130.0]
    return tracks_kinematics(centre, np.zeros((n_frames, 2)), np.full((n_frames, 2), 3.0),
                             np.full((n_frames, 2), 500.0), fps)


def test_summary_of_analytic_motion():
    kin = _analytic_kinematics()
    summary = summarize_clip(kin, 0, 0, 60, 30.0, ["mouse1", "mouse2"], 46.0)
    assert summary["speed_px_s"] == pytest.approx(90.0)
    assert summary["heading_deg"] == pytest.approx(0.0)
    assert summary["displacement_px"] == pytest.approx(90.0 * 59 / 30.0)
    assert summary["nearest_animal"] == "mouse2"
    still = summarize_clip(kin, 1, 0, 60, 30.0, ["mouse1", "mouse2"], 46.0)
    assert still["speed_px_s"] == pytest.approx(0.0)
    assert caption_from_summary(summary)[0] == "locomotion"


def test_lost_blob_gives_none_not_nan():
    kin = _analytic_kinematics()
    kin = {k: np.where(np.ones_like(v, dtype=bool), np.nan, v) if v.dtype.kind == "f" else v for k, v in kin.items()}
    summary = summarize_clip(kin, 0, 0, 30, 30.0, ["mouse1", "mouse2"], 46.0)
    assert summary["speed_px_s"] is None and summary["nearest_animal"] is None


def test_summarize_clip_checks_the_clip():
    with pytest.raises(ValueError, match="outside"):
        summarize_clip(_analytic_kinematics(), 0, 50, 70, 30.0, ["mouse1", "mouse2"], 46.0)


def test_rules_recover_simulated_bouts():
    """Given the true bouts as clips, the rules name most of them (the simulator's contract)."""
    correct = total = 0
    for seed in (0, 1):
        session = simulate_behavior(SimParams(n_animals=3, seconds=40.0), seed=seed)
        kin = kinematics(session.keypoints, list(BODYPARTS), session.fps, session.food_zone)
        names = ["mouse1", "mouse2", "mouse3"]
        for bout in session.bouts:
            summary = summarize_clip(kin, bout.animal, bout.start_frame, bout.end_frame, session.fps, names,
                                     session_body_length(kin))
            correct += caption_from_summary(summary)[0] == bout.label
            total += 1
    assert correct / total >= 0.85


def test_tracks_kinematics_checks_shapes():
    with pytest.raises(ValueError, match="orientation"):
        tracks_kinematics(np.zeros((5, 2, 2)), np.zeros((5, 3)), np.ones((5, 2)), np.ones((5, 2)), 30.0)
    with pytest.raises(ValueError, match="bend"):
        tracks_kinematics(np.zeros((5, 2, 2)), np.zeros((5, 2)), np.ones((5, 2)), np.ones((5, 2)), 30.0,
                          bend=np.zeros((4, 2)))


def test_measured_bend_drives_grooming():
    """A still blob whose outline bends back and forth at 2 Hz grooms; the same blob held straight is stationary."""
    n_frames, fps = 60, 30.0
    centre = np.zeros((n_frames, 2, 2))
    centre[:, 1] = [300.0, 300.0]
    flat = (np.zeros((n_frames, 2)), np.full((n_frames, 2), 2.5), np.full((n_frames, 2), 900.0))
    wagging = np.zeros((n_frames, 2))
    wagging[:, 0] = 0.8 * np.sin(2 * np.pi * 2.0 * np.arange(n_frames) / fps)
    labels = []
    for bend in (wagging, np.zeros((n_frames, 2))):
        kin = tracks_kinematics(centre, *flat, fps, bend=bend)
        np.testing.assert_array_equal(kin["bend"], bend)
        summary = summarize_clip(kin, 0, 0, n_frames, fps, ["mouse1", "mouse2"], 46.0)
        labels.append(caption_from_summary(summary)[0])
    assert labels == ["grooming", "stationary"]
