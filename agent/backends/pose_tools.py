"""Typed deterministic tools the model may call while it reconciles one camera (Stage 3).

A model can be fluent and wrong, so before it answers it can check a
hypothesis against geometry:

* ``reprojection_error(keypoint, centroid)``: triangulate the keypoint from
  the other cameras' current labels of this frame plus the candidate
  centroid and return the candidate's reprojection error in pixels; where no
  other camera has a label, the distance between the candidate and the 3D
  track's prediction projected into this camera (the request's ``prior``);
* ``nearest_centroids(keypoint)``: the numbered centroids closest to the
  keypoint's predicted position, with their distances.

The geometry a backend needs is :class:`PoseGeometry`: the calibrated camera
group, the manifest's keypoints and, optionally, a :data:`LabelSource` that
the graph provides (the current labels of a frame). Everything here is
deterministic and reads no files.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from agent.backends.classical_pose import predict_view
from agent.backends.pose_base import CameraView, Centroid, ReconcileRegionsRequest, centroid_xy
from tools.geometry import CameraGroup, reprojection_error, triangulate

LabelSource = Callable[[int], "np.ndarray | None"]
"""``frame -> (n_cameras, n_keypoints, 2)`` the labels the graph holds for that frame.

Cameras and keypoints in manifest order, NaN where unlabelled; ``None`` when
the graph has none yet (a first try, before Stage 4 ran on the frame).
"""

NEAREST_CENTROIDS = 3


class LatestLabels:
    """A :data:`LabelSource` the graph publishes to: the labels of the frame being tracked.

    The graph calls :meth:`publish` after Stage 4 with the frame's label
    positions; a retry's Stage 3 tools then check candidates against the
    other cameras. Holds one frame (thread-safe); older frames read as None.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: int | None = None
        self._points_2d: np.ndarray | None = None

    def publish(self, frame: int, points_2d: np.ndarray) -> None:
        """Store ``points_2d (n_cameras, n_keypoints, 2)`` pixels (NaN unlabelled) of ``frame``."""
        with self._lock:
            self._frame, self._points_2d = int(frame), np.array(points_2d, dtype=np.float64)

    def __call__(self, frame: int) -> np.ndarray | None:
        with self._lock:
            return self._points_2d if self._frame == frame else None


class CandidateCheck(BaseModel):
    """What ``reprojection_error`` answers for one keypoint-centroid hypothesis."""

    keypoint: str
    centroid: int
    reprojection_error_px: float | None = Field(
        description="error of the candidate after triangulating with the other cameras' labels"
    )
    n_other_cameras: int = Field(description="other cameras labelling this keypoint in this frame")
    distance_to_prediction_px: float | None = Field(
        description="distance between the candidate and the keypoint's predicted position"
    )
    basis: Literal["other_cameras", "prediction", "none"]


class ReprojectionErrorArgs(BaseModel):
    """Arguments of ``reprojection_error``."""

    keypoint: str = Field(description="keypoint name, one of the request's keypoints")
    centroid: int = Field(description="number of a centroid shown in the image")


class NearestCentroidsArgs(BaseModel):
    """Arguments of ``nearest_centroids``."""

    keypoint: str = Field(description="keypoint name, one of the request's keypoints")


@dataclass(frozen=True)
class PoseGeometry:
    """What the geometric checks need about the rig.

    Attributes
    ----------
    group : CameraGroup
        The calibration, cameras in manifest order.
    keypoints : list[str]
        The manifest's keypoints (the order of :data:`LabelSource` arrays).
    current_labels : LabelSource or None
        The graph's current labels of a frame; None: only the prediction is used.
    """

    group: CameraGroup
    keypoints: list[str]
    current_labels: LabelSource | None = None

    def check_candidate(self, view: CameraView, keypoint: str, centroid: Centroid) -> CandidateCheck:
        """Reprojection error of labelling ``keypoint`` with ``centroid`` in ``view.camera``."""
        predicted = predict_view(view)[view.keypoints.index(keypoint)]
        xy = np.array([centroid.x, centroid.y])
        distance = float(np.linalg.norm(xy - predicted)) if np.all(np.isfinite(predicted)) else None
        others = self._other_views(view.frame, view.camera, keypoint)
        n_other = int(np.all(np.isfinite(others), axis=1).sum())
        if n_other >= 1:
            camera = self.group.names.index(view.camera)
            points_2d = others.copy()
            points_2d[camera] = xy
            points_3d = triangulate(self.group, points_2d[:, None, :])
            error = float(reprojection_error(self.group, points_3d, points_2d[:, None, :])[camera, 0])
            if np.isfinite(error):
                return CandidateCheck(keypoint=keypoint, centroid=centroid.index,
                                      reprojection_error_px=round(error, 2), n_other_cameras=n_other,
                                      distance_to_prediction_px=_rounded(distance), basis="other_cameras")
        return CandidateCheck(keypoint=keypoint, centroid=centroid.index,
                              reprojection_error_px=_rounded(distance), n_other_cameras=n_other,
                              distance_to_prediction_px=_rounded(distance),
                              basis="prediction" if distance is not None else "none")

    def _other_views(self, frame: int, camera: str, keypoint: str) -> np.ndarray:
        """``(n_cameras, 2)`` the other cameras' labels of ``keypoint``; NaN rows elsewhere."""
        views = np.full((len(self.group), 2), np.nan)
        labels = None if self.current_labels is None else self.current_labels(frame)
        if labels is None:
            return views
        labels = np.asarray(labels, dtype=np.float64)
        expected = (len(self.group), len(self.keypoints), 2)
        if labels.shape != expected:
            raise ValueError(f"current labels must have shape {expected}, got {labels.shape}")
        views[:] = labels[:, self.keypoints.index(keypoint)]
        views[self.group.names.index(camera)] = np.nan
        return views


def nearest_centroids(view: CameraView, keypoint: str, centroids: list[Centroid],
                      count: int = NEAREST_CENTROIDS) -> list[dict[str, float | int]]:
    """The ``count`` centroids closest to ``keypoint``'s predicted position, nearest first."""
    predicted = predict_view(view)[view.keypoints.index(keypoint)]
    if not centroids or not np.all(np.isfinite(predicted)):
        return []
    distance = np.linalg.norm(centroid_xy(centroids) - predicted, axis=1)
    order = np.argsort(distance, kind="stable")[:count]
    return [{"centroid": centroids[i].index, "distance_px": round(float(distance[i]), 2)} for i in order]


def reconcile_tools(request: ReconcileRegionsRequest, geometry: PoseGeometry) -> list[BaseTool]:
    """The tools bound to one Stage 3 call; their answers are JSON text.

    An unknown keypoint or centroid number raises ``ValueError``, which the
    model client returns to the model as ``error: ...``.
    """
    by_number = {c.index: c for c in request.centroids}

    def known_keypoint(keypoint: str) -> str:
        if keypoint not in request.keypoints:
            raise ValueError(f"unknown keypoint {keypoint!r}; use one of {request.keypoints}")
        return keypoint

    def check(keypoint: str, centroid: int) -> str:
        if centroid not in by_number:
            raise ValueError(f"no centroid numbered {centroid} in this request")
        result = geometry.check_candidate(request, known_keypoint(keypoint), by_number[centroid])
        return result.model_dump_json()

    def nearest(keypoint: str) -> str:
        return json.dumps(nearest_centroids(request, known_keypoint(keypoint), request.centroids))

    return [
        StructuredTool.from_function(
            check, name="reprojection_error", args_schema=ReprojectionErrorArgs,
            description="Reprojection error (pixels) of labelling a keypoint with a numbered "
                        "centroid, given the other cameras' labels or the 3D prediction. "
                        "Correct labels are usually under 3 px.",
        ),
        StructuredTool.from_function(
            nearest, name="nearest_centroids", args_schema=NearestCentroidsArgs,
            description="The numbered centroids nearest to a keypoint's predicted position.",
        ),
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
