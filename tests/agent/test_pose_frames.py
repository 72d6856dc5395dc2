"""Tests for agent/pose_frames.py: the frame log's reason codes."""

from __future__ import annotations

import numpy as np

from agent.centroid_child import centroids_file, save_centroids
from agent.pose_frames import MODEL_REASON, REASON_CODES, FrameRecord, FrameStore
from tools.confidence import REASONS

# The table as it was when the frame log format was introduced: a run logged then must read back.
FIRST_REASON_CODES = ("", "unassigned", "few_cameras", "reprojection", "low_margin", "jump",
                      "body", "unchecked", "reacquired", MODEL_REASON)


def test_every_reason_has_a_code_and_earlier_codes_keep_their_meaning():
    assert set(REASON_CODES) == {"", *REASONS, MODEL_REASON}
    assert len(set(REASON_CODES)) == len(REASON_CODES)
    assert REASON_CODES[:len(FIRST_REASON_CODES)] == FIRST_REASON_CODES


def test_every_reason_reads_back_from_the_log(tmp_path):
    n_cameras, n_keypoints = 2, len(REASON_CODES)
    record = FrameRecord(
        frame=7, points_3d=np.zeros((n_keypoints, 3)), error_px=np.zeros(n_keypoints),
        ncams=np.full(n_keypoints, 2), score=np.ones(n_keypoints),
        flagged=np.array([reason != "" for reason in REASON_CODES]),
        reason=np.array(REASON_CODES), points_2d=np.zeros((n_cameras, n_keypoints, 2)),
        centroid=np.zeros((n_cameras, n_keypoints), np.int64),
        view_error_px=np.zeros((n_cameras, n_keypoints)),
        stage=np.full((n_cameras, n_keypoints), "refine"))
    store = FrameStore(tmp_path, n_cameras, n_keypoints)
    store.append(record)
    (read,) = FrameStore(tmp_path, n_cameras, n_keypoints).read_all()
    assert read.reason.tolist() == list(REASON_CODES)
    assert np.array_equal(read.flagged, record.flagged)


def test_a_frames_centroids_read_back_per_camera(tmp_path):
    store = FrameStore(tmp_path, n_cameras=3, n_keypoints=2)
    saved = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((0, 2)), np.array([[5.5, 6.5]])]
    save_centroids(centroids_file(store.centroids_dir, 4), saved)
    assert store.saved_centroids(4, saved) == str(store.centroids_dir / "000004.npz")
    read = store.centroids_of(4)
    assert len(read) == 3 and [c.shape for c in read] == [(2, 2), (0, 2), (1, 2)]
    for got, want in zip(read, saved, strict=True):
        np.testing.assert_array_equal(got, want)
    assert store.centroids_of(5) is None
