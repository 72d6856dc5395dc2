"""The ``classical`` pose backend: a motion-model tracker with gated optimal assignment.

No model is involved. Each keypoint's position in a camera is predicted from
the 3D track (constant velocity over the rolling window, projected into the
camera: the ``prior`` of the request), or, where the track has no point,
from the camera's own exemplar labels (constant velocity in 2D).

* Stage 1, ``locate_regions``: a region's box is the box of its keypoints'
  predicted positions, padded with the method's crop padding
  (:func:`tools.regions.pad_box`).
* Stage 2, ``assign_within_region``: the centroids inside the box are
  assigned to the region's predicted keypoints by optimal assignment with a
  distance gate (:func:`tools.assignment.assign_points`).
* Stage 3, ``reconcile_regions``: keypoints whose centroid another region
  also claimed, and keypoints left without one, are re-assigned jointly to
  the centroids nobody else holds.

Retries (``strategy`` > 0) double the gate and pad the boxes once more per
step, so a keypoint that moved faster than predicted can be found again.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    CameraView,
    Centroid,
    Label,
    LocateRegionsAnswer,
    LocateRegionsRequest,
    ReconcileRegionsAnswer,
    ReconcileRegionsRequest,
    RegionAssignment,
    RegionBox,
    Stage,
    centroid_xy,
)
from tools.assignment import assign_points, gated_distances, predict_constant_velocity
from tools.regions import Box, box_of_xy, pad_box


@dataclass(frozen=True)
class ClassicalPoseBackend:
    """Tracker settings.

    Attributes
    ----------
    gate_px : float
        Largest distance (pixels) between a prediction and the centroid it
        takes on a first try; each retry doubles it.
    """

    gate_px: float = 12.0
    name: str = "classical"
    # In-process and quick: a graph task per camera and region would cost more
    # in scheduling and checkpointing than the work itself.
    fan_out: Literal["per_view", "per_stage"] = "per_stage"

    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        """Stage 1: the padded box of each region's predicted keypoint positions."""
        predicted = dict(zip(request.keypoints, _predicted_points(request), strict=True))
        boxes = []
        for region, members in request.regions.items():
            points = [predicted[name] for name in members]
            known = sum(math.isfinite(x) and math.isfinite(y) for x, y in points)
            box = _padded_box(points, request.image_size, 1 + request.strategy)
            if box is None:
                reason = "outside_image" if known else "no_prediction"
                boxes.append(RegionBox(region=region, box=None, confidence=0.0, flagged=True,
                                       reason=reason))
                continue
            boxes.append(RegionBox(region=region, box=(box.x0, box.y0, box.x1, box.y1),
                                   confidence=known / len(points)))
        return LocateRegionsAnswer(regions=boxes)

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        """Stage 2: gated optimal assignment of the centroids inside the box."""
        candidates = []
        if request.box is not None:
            box = Box(*request.box)
            candidates = [c for c in request.centroids if box.holds(c.x, c.y)]
        labels = self._assign(request.keypoints, predict_view(request), request.strategy,
                              candidates, "within_region")
        missing = sum(label.centroid < 0 for label in labels)
        return RegionAssignment(camera=request.camera, region=request.region, labels=labels,
                                flagged=missing > 0, reason="unassigned" if missing else "")

    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        """Stage 3: settle centroids claimed twice and give free centroids to unlabelled keypoints."""
        proposed = {label.keypoint: label for p in request.proposals for label in p.labels}
        claims = Counter(label.centroid for label in proposed.values() if label.centroid >= 0)
        conflicted = {c for c, n in claims.items() if n > 1}
        settled = {k: label for k, label in proposed.items()
                   if label.centroid >= 0 and label.centroid not in conflicted}
        taken = {label.centroid for label in settled.values()}
        redo = [i for i, keypoint in enumerate(request.keypoints) if keypoint not in settled]
        free = [c for c in request.centroids if c.index not in taken]
        # A keypoint's prediction is its own (predict_view): the redone rows of the whole view's.
        redone = {label.keypoint: label for label in self._assign(
            [request.keypoints[i] for i in redo], predict_view(request)[redo], request.strategy,
            free, "reconcile")}
        labels = [settled.get(keypoint) or redone[keypoint] for keypoint in request.keypoints]
        missing = sum(label.centroid < 0 for label in labels)
        return ReconcileRegionsAnswer(camera=request.camera, labels=labels,
                                      n_conflicts=len(conflicted), flagged=missing > 0,
                                      reason="unassigned" if missing else "")

    def finds_nothing(self, view: CameraView, centroids: list[Centroid]) -> bool:
        """Whether stages 1-3 on ``view`` with the free ``centroids`` can label none of its keypoints.

        True when no centroid lies within the gate of any keypoint's prediction:
        every assignment of the attempt would come back empty. The graph skips
        retrying such a view whose keypoints are all unlabelled.
        """
        # The assignment's own gate test: with nothing allowed every assignment is empty.
        _, allowed = gated_distances(predict_view(view), centroid_xy(centroids),
                                     self.gate_px * 2.0**view.strategy)
        return not allowed.any()

    def _assign(self, keypoints: list[str], predicted: np.ndarray, strategy: int,
                candidates: list[Centroid], stage: Stage) -> list[Label]:
        """Labels of ``keypoints`` (predicted at ``predicted (n, 2)``) among ``candidates``."""
        gate_px = self.gate_px * 2.0**strategy
        result = assign_points(predicted, centroid_xy(candidates), gate_px)
        labels = []
        # Python numbers: the same floats as numpy's scalars, at a fraction of the cost.
        for keypoint, index, cost, margin in zip(keypoints, result.index.tolist(),
                                                 result.cost.tolist(), result.margin.tolist(),
                                                 strict=True):
            assigned = index >= 0
            labels.append(Label(
                keypoint=keypoint,
                centroid=candidates[index].index if assigned else -1,
                confidence=max(0.0, 1.0 - cost / gate_px) if assigned else 0.0,
                margin_px=margin if assigned else None,
                stage=stage,
            ))
        return labels


def _padded_box(points: list[list[float]], image_size: tuple[int, int], times: int
                ) -> Box | None:
    """The box of ``points`` padded ``times`` times; None if none is known or it misses the image."""
    box = box_of_xy(points)
    width, height = image_size
    if box is None or box.x1 <= 0 or box.y1 <= 0 or box.x0 >= width or box.y0 >= height:
        return None
    for _ in range(times):
        box = pad_box(box, image_size)
    return box


def predict_view(view: CameraView) -> np.ndarray:
    """Predicted ``(n_keypoints, 2)`` positions for ``view.keypoints``: the prior, else 2D motion.

    NaN where neither the 3D track nor the camera's exemplars know the keypoint.
    A keypoint's prediction depends only on its own prior and exemplar points,
    and every stage asks about the same keypoints of a camera again (Stage 1
    for all of them, Stage 2 per region, Stage 3 for the unsettled ones), so
    each is computed once and remembered (:data:`_PREDICTIONS`).
    """
    return np.array(_predicted_points(view), dtype=np.float64).reshape(-1, 2)


def _predicted_points(view: CameraView) -> list[list[float]]:
    """:func:`predict_view` as ``[x, y]`` lists (NaN where unknown), for callers in plain Python."""
    context = (view.frame, tuple(e.frame for e in view.exemplars))
    # Per keypoint: the context, its prior and its point in each exemplar (zip transposes
    # exemplars x keypoints), every tuple built by zip itself: the key costs little to make.
    keys = list(zip([context] * len(view.prior), view.prior, *(e.points for e in view.exemplars),
                    strict=True))
    points = list(map(_PREDICTIONS.get, keys))
    missing = [i for i, point in enumerate(points) if point is None]
    if missing:
        if len(_PREDICTIONS) + len(missing) > _PREDICTIONS_KEPT:
            _PREDICTIONS.clear()
        for i, point in zip(missing, _predict_rows(view, missing).tolist(), strict=True):
            points[i] = _PREDICTIONS[keys[i]] = point
    return points


# Content of a keypoint's prediction ((target frame, exemplar frames), prior, its point in
# each exemplar) -> the prediction; a few frames' worth, cleared when full. Entries never go
# stale: the key is everything the prediction depends on. Parallel per-camera tasks share it
# safely: each call assembles its own result, so another thread's clear costs at most a
# recomputation.
_PREDICTIONS: dict[tuple, list[float]] = {}
_PREDICTIONS_KEPT = 4096


def _predict_rows(view: CameraView, rows: list[int]) -> np.ndarray:
    """The predictions of ``view.keypoints[rows]``, ``(len(rows), 2)``."""
    prior = np.array([view.prior[i] if view.prior[i] is not None else (np.nan, np.nan)
                      for i in rows], dtype=np.float64).reshape(-1, 2)
    if not view.exemplars:
        return prior
    frames = np.array([e.frame for e in view.exemplars])
    history = np.array([[e.points[i] if e.points[i] is not None else (np.nan, np.nan) for i in rows]
                        for e in view.exemplars], dtype=np.float64).reshape(len(frames), -1, 2)
    motion = predict_constant_velocity(frames, history, view.frame)
    return np.where(np.isfinite(prior), prior, motion)
