"""The ``hybrid`` pose backend: the classical tracker first, the model only where it is unsure.

Every request is answered by the classical tracker first; the model
(:class:`~agent.backends.openai_pose.OpenAIPoseBackend`) gets only what the
tracker cannot settle:

* Stage 1: a region the tracker has no box for (none of its keypoints predicted).
* Stage 2: a region where a label's margin is under ``ambiguous_margin_px``
  (two centroids almost equally close to the prediction).
* Stage 3: a camera with such an ambiguous label, and every camera the
  graph's ``quality_control`` sends back (``request.strategy >= 1``: its
  conditional edges route the low-confidence views of doubtful keypoints
  through stages 1-3 again). A retry's Stage 1 and 2 stay classical (wider
  boxes and gates); the model then reconciles the whole camera from the
  full view, checking candidates with the ``reprojection_error`` tool
  against the other cameras. One call per doubtful camera instead of the
  2 x regions + 1 of the paper's design.

A keypoint left unassigned is not by itself a reason to ask: its dot is
usually hidden, and Stage 4 recovers the views that are not. The model is not
called where no centroid lies within its gate of any requested keypoint
(the only valid answer would be "none").

A model answer that stays invalid after the client's retries falls back to
the classical answer for the same request, ``flagged`` with the model's
reason. Every model label passes the geometric checks of the model backend
and then Stage 4, so a model that answers fluent nonsense cannot make
hybrid much worse than the classical tracker.
:meth:`HybridPoseBackend.stats` counts the requests each side answered.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TypeVar

import numpy as np

from agent.backends.classical_pose import ClassicalPoseBackend, predict_view
from agent.backends.openai_pose import OpenAIPoseBackend
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    Label,
    LocateRegionsAnswer,
    LocateRegionsRequest,
    ReconcileRegionsAnswer,
    ReconcileRegionsRequest,
    RegionAssignment,
)
from agent.backends.pose_checks import can_assign

AMBIGUOUS_MARGIN_PX = 2.0
AnswerT = TypeVar("AnswerT", RegionAssignment, ReconcileRegionsAnswer)


class HybridPoseBackend:
    """Classical first tries; model retries and ambiguous cases.

    Parameters
    ----------
    classical : ClassicalPoseBackend
        Answers every first try.
    model : OpenAIPoseBackend
        Answers quality-control retries and what the classical tracker left ambiguous.
    ambiguous_margin_px : float
        A first-try label with a smaller margin (pixels) goes to the model.
    """

    name = "hybrid"

    def __init__(self, classical: ClassicalPoseBackend, model: OpenAIPoseBackend,
                 ambiguous_margin_px: float = AMBIGUOUS_MARGIN_PX) -> None:
        self.classical, self.model = classical, model
        self.ambiguous_margin_px = ambiguous_margin_px
        self._lock = threading.Lock()
        self._answered: Counter[str] = Counter()  # "<node>/<classical|model|fallback>"
        self._reconciled: set[tuple[int, str]] = set()  # (frame, camera) the model reconciled

    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        """Stage 1: classical boxes; the model for regions without one."""
        classical = self.classical.locate_regions(request)
        ask = [r.region for r in classical.regions if r.box is None]
        self._count("locate_regions", "classical", len(request.regions) - len(ask))
        if not ask:
            return classical
        asked = request.model_copy(update={"regions": {r: request.regions[r] for r in ask}})
        answered = {r.region: r for r in self.model.locate_regions(asked).regions}
        boxes = []
        for fallback in classical.regions:
            box = answered.get(fallback.region)
            if box is None:
                boxes.append(fallback)
            elif box.flagged and fallback.box is not None:
                self._count("locate_regions", "fallback")
                boxes.append(fallback.model_copy(update={"flagged": True, "reason": box.reason}))
            else:
                self._count("locate_regions", "model")
                boxes.append(box)
        return LocateRegionsAnswer(regions=boxes)

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        """Stage 2: the classical assignment unless it is ambiguous."""
        classical = self.classical.assign_within_region(request)
        if not self._ambiguous(classical.labels):
            self._count("assign_within_region", "classical")
            return classical
        return self._settle("assign_within_region", classical,
                            self.model.assign_within_region(request))

    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        """Stage 3: the classical reconciliation unless it is a retry or ambiguous."""
        classical = self.classical.reconcile_regions(request)
        # Stage 2 already asked about its own ambiguous labels; here only Stage 3's count.
        settled_here = [label for label in classical.labels if label.stage == "reconcile"]
        if not (self._ambiguous(settled_here)
                or (self._decidable(request) and self._first_retry(request))):
            self._count("reconcile_regions", "classical")
            return classical
        return self._settle("reconcile_regions", classical, self.model.reconcile_regions(request))

    def _decidable(self, request: ReconcileRegionsRequest) -> bool:
        """Whether a predicted keypoint has a free centroid within the model's gate.

        A keypoint nobody can predict (never seen) gives the model nothing to
        compare against, so it alone is no reason to ask.
        """
        predicted = predict_view(request)
        known = np.all(np.isfinite(predicted), axis=1)
        gate_px = self.model.gate_px * 2.0**request.strategy
        return can_assign(predicted[known], request.centroids, gate_px)

    def _first_retry(self, request: ReconcileRegionsRequest) -> bool:
        """Whether this is the first retry of the camera in this frame (the model's one opinion).

        A later retry of the same camera (wider gates) stays classical, as does every first try.
        """
        if request.strategy == 0:
            return False
        key = (request.frame, request.camera)
        with self._lock:
            self._reconciled = {seen for seen in self._reconciled if seen[0] >= request.frame}
            first = key not in self._reconciled
            self._reconciled.add(key)
        return first

    def _ambiguous(self, labels: list[Label]) -> bool:
        return any(label.margin_px is not None and label.margin_px < self.ambiguous_margin_px
                   for label in labels)

    def _settle(self, node: str, classical: AnswerT, model: AnswerT) -> AnswerT:
        """The model's answer, or the classical one flagged with the model's reason if it failed."""
        if model.reason.startswith("model_") or (model.flagged and not classical.flagged):
            self._count(node, "fallback")
            return classical.model_copy(update={"flagged": True, "reason": model.reason})
        self._count(node, "model")
        return model

    def _count(self, node: str, side: str, n: int = 1) -> None:
        with self._lock:
            self._answered[f"{node}/{side}"] += n

    def stats(self) -> dict[str, object]:
        """The model backend's call counts plus which side answered each request, for run.json."""
        with self._lock:
            answered = dict(sorted(self._answered.items()))
        return {**self.model.stats(), "backend": self.name, "answered_by": answered}

    def close(self) -> None:
        """Release the model backend's frame streams and threads (idempotent)."""
        self.model.close()
