"""The classical backend's motion prediction (agent/backends/classical_pose.py)."""

import numpy as np

from agent.backends import classical_pose
from agent.backends.classical_pose import predict_view
from agent.backends.pose_base import CameraView, Exemplar


def _view(points_by_frame: dict[int, list], prior: list, frame: int = 10) -> CameraView:
    return CameraView(frame=frame, camera="cam0", image_size=(100, 100),
                      keypoints=[f"k{i}" for i in range(len(prior))],
                      exemplars=[Exemplar(frame=f, points=p) for f, p in points_by_frame.items()],
                      prior=prior)


def test_a_subset_view_predicts_the_same_rows_as_the_whole_view():
    view = _view({8: [(0.0, 0.0), (5.0, 5.0), None], 9: [(1.0, 2.0), (5.0, 5.0), (3.0, 3.0)]},
                 prior=[None, (50.0, 60.0), None])
    whole = predict_view(view)
    np.testing.assert_array_equal(whole[0], [2.0, 4.0])  # constant velocity over one frame
    np.testing.assert_array_equal(whole[1], [50.0, 60.0])  # the prior wins where known
    np.testing.assert_array_equal(whole[2], [3.0, 3.0])  # one known position: stays
    classical_pose._PREDICTIONS.clear()  # the subset computes its rows afresh
    np.testing.assert_array_equal(predict_view(view.subset(["k2", "k0"])), whole[[2, 0]])


def test_a_remembered_prediction_never_answers_a_view_with_other_content():
    first = predict_view(_view({8: [(0.0, 0.0)], 9: [(1.0, 0.0)]}, prior=[None]))
    moved = predict_view(_view({8: [(0.0, 0.0)], 9: [(3.0, 0.0)]}, prior=[None]))
    later = predict_view(_view({8: [(0.0, 0.0)], 9: [(1.0, 0.0)]}, prior=[None], frame=11))
    np.testing.assert_array_equal(first, [[2.0, 0.0]])
    np.testing.assert_array_equal(moved, [[6.0, 0.0]])
    np.testing.assert_array_equal(later, [[3.0, 0.0]])  # two frames on: twice the step


def test_the_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(classical_pose, "_PREDICTIONS_KEPT", 3)
    classical_pose._PREDICTIONS.clear()
    for frame in range(10, 20):
        predict_view(_view({8: [(0.0, 0.0), (1.0, 1.0)]}, prior=[None, None], frame=frame))
        assert len(classical_pose._PREDICTIONS) <= 3
    # One keypoint remembered, two new: the memory is cleared on the way, the answer complete.
    predict_view(_view({8: [(0.0, 0.0)]}, prior=[None], frame=30))
    both = predict_view(_view({8: [(0.0, 0.0), (2.0, 2.0), (4.0, 4.0)]}, prior=[None] * 3, frame=30))
    np.testing.assert_array_equal(both, [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    assert len(classical_pose._PREDICTIONS) <= 3


def test_a_view_finds_nothing_only_without_a_centroid_within_the_gate():
    from agent.backends.classical_pose import ClassicalPoseBackend
    from agent.backends.pose_base import Centroid

    backend = ClassicalPoseBackend(gate_px=10.0)
    view = _view({}, prior=[(50.0, 50.0), None])  # the second keypoint has no prediction
    near, far = Centroid(index=0, x=50.0, y=58.0), Centroid(index=1, x=50.0, y=65.0)
    assert not backend.finds_nothing(view, [far, near])
    assert backend.finds_nothing(view, [far])
    assert backend.finds_nothing(view, [])
    # A retry doubles the gate per strategy: 15 px away is within reach then.
    assert not backend.finds_nothing(view.model_copy(update={"strategy": 1}), [far])
    # Nothing predicted, nothing to find.
    assert backend.finds_nothing(_view({}, prior=[None]), [near])
