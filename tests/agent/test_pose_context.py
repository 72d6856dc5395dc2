"""Tests for agent/pose_context.py: derived settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.pose_context import PoseContext, quality_params, review_min_cameras, tracker_gate_px
from agent.recording import Seeds
from tests.fixtures.pose_requests import tiny_pose_recording
from tools.camera import pixels_per_unit


@pytest.mark.parametrize("n_cameras, expected", [(3, 3), (4, 4), (5, 4), (6, 4), (8, 5), (10, 6)])
def test_review_needs_more_than_half_the_rig_and_four_cameras_by_default(n_cameras, expected):
    assert review_min_cameras(PoseContext(), n_cameras) == expected


def test_an_explicit_review_threshold_wins():
    assert review_min_cameras(PoseContext(review_min_cameras=2), 6) == 2
    assert review_min_cameras(PoseContext(qc_min_cameras=5), 6) == 5


def test_quality_params_copy_each_setting_to_its_threshold():
    ctx = PoseContext(max_error_px=1.5, max_view_error_px=2.25, qc_min_cameras=2,
                      min_margin_px=3.5, max_jump_mm=12.0, max_body_deviation=1.1,
                      confirm_body_deviation=0.4)
    params = quality_params(ctx, 6)
    assert (params.max_error_px, params.max_view_error_px, params.min_cameras,
            params.min_margin_px, params.max_jump_mm, params.max_body_deviation,
            params.confirm_body_deviation) == (1.5, 2.25, 2, 3.5, 12.0, 1.1, 0.4)
    assert params.review_min_cameras == review_min_cameras(ctx, 6) == 4


def test_the_gate_is_gate_mm_at_the_animals_image_scale_where_that_exceeds_gate_px(tmp_path):
    recording = tiny_pose_recording(tmp_path)
    # The seed labels are the true points' projections (rounded): they triangulate to about them.
    truth = recording.ground_truth_3d[recording.seeds.frames].reshape(-1, 3)
    scale = float(np.median(pixels_per_unit(recording.group, truth)))
    assert tracker_gate_px(PoseContext(gate_px=0.0, gate_mm=4.0), recording) == pytest.approx(
        4.0 * scale, rel=1e-4)
    assert tracker_gate_px(PoseContext(gate_px=0.0, gate_mm=8.0), recording) == pytest.approx(
        8.0 * scale, rel=1e-4)
    assert tracker_gate_px(PoseContext(gate_px=4.0 * scale + 1.0, gate_mm=4.0), recording) == (
        4.0 * scale + 1.0)


def test_seeds_that_triangulate_nothing_leave_the_gate_in_pixels(tmp_path):
    recording = tiny_pose_recording(tmp_path)
    one_view = recording.seeds.points_2d.copy()
    one_view[:, 1:] = np.nan  # every label in camera 0 only
    unscaled = dataclasses.replace(recording, seeds=Seeds(recording.seeds.frames, one_view))
    assert tracker_gate_px(PoseContext(gate_px=7.0, gate_mm=100.0), unscaled) == 7.0
