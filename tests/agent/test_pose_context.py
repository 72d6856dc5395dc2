"""Tests for agent/pose_context.py: derived settings."""

from __future__ import annotations

import pytest

from agent.pose_context import PoseContext, review_min_cameras


@pytest.mark.parametrize("n_cameras, expected", [(3, 3), (4, 4), (5, 4), (6, 4), (8, 5), (10, 6)])
def test_review_needs_more_than_half_the_rig_and_four_cameras_by_default(n_cameras, expected):
    assert review_min_cameras(PoseContext(), n_cameras) == expected


def test_an_explicit_review_threshold_wins():
    assert review_min_cameras(PoseContext(review_min_cameras=2), 6) == 2
    assert review_min_cameras(PoseContext(qc_min_cameras=5), 6) == 5
