"""The pose perception Protocol: the stage verbs of stages 1-3.

Every pose backend (``classical`` now; model-backed ``openai`` and ``hybrid``
later) implements :class:`PoseBackend`. The graph hands it small pydantic
requests (frame, camera, region, exemplar labels from the rolling window,
the numbered centroids, a box) and gets small pydantic answers with a
confidence, a margin and, where the backend could not answer well, ``flagged``
and a ``reason``. A backend never raises for a bad answer and never passes
error text on as a label.

Pixel coordinates follow FORMATS.md (origin at the top-left pixel centre).
Keypoint lists are in manifest order; ``None`` marks a missing point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Point = tuple[float, float]
BoxTuple = tuple[int, int, int, int]
Stage = Literal["seed", "within_region", "reconcile", "refine"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Exemplar(_Frozen):
    """Labels of one camera in one accepted frame of the rolling window."""

    frame: int = Field(ge=0)
    points: list[Point | None] = Field(description="per keypoint of the request, None if unlabelled")


class Centroid(_Frozen):
    """One numbered fluorescence centroid (its index in the camera's detection order)."""

    index: int = Field(ge=0)
    x: float
    y: float


def centroid_xy(centroids: Sequence[Centroid]) -> np.ndarray:
    """``(n, 2)`` float64 positions of ``centroids`` (``(0, 2)`` for none), for the array tools."""
    return np.array([[c.x, c.y] for c in centroids], dtype=np.float64).reshape(-1, 2)


class CameraView(_Frozen):
    """What every request about one camera in one frame carries."""

    frame: int = Field(ge=0, description="frame being labelled")
    camera: str
    image_size: tuple[int, int] = Field(description="(width, height) in pixels")
    keypoints: list[str] = Field(description="keypoints to label, manifest order")
    exemplars: list[Exemplar] = Field(description="rolling window, oldest first")
    prior: list[Point | None] = Field(
        description="per keypoint: the 3D track's motion prediction projected into this camera"
    )
    strategy: int = Field(default=0, ge=0, description="0 first try; retries widen boxes and gates")

    def subset(self, keypoints: list[str], **update: object) -> Self:
        """A copy about ``keypoints`` only (exemplars and prior restricted to them), plus ``update``."""
        index = [self.keypoints.index(name) for name in keypoints]
        exemplars = [e.model_copy(update={"points": [e.points[i] for i in index]})
                     for e in self.exemplars]
        return self.model_copy(update={"keypoints": list(keypoints), "exemplars": exemplars,
                                       "prior": [self.prior[i] for i in index], **update})


class LocateRegionsRequest(CameraView):
    """Stage 1: where is each region in this camera?"""

    regions: dict[str, list[str]] = Field(description="region -> its keypoints (subset of keypoints)")


class RegionBox(_Frozen):
    region: str
    box: BoxTuple | None = Field(description="x0, y0, x1, y1 (exclusive), None if not found")
    confidence: float = Field(ge=0.0, le=1.0)
    flagged: bool = False
    reason: str = ""


class LocateRegionsAnswer(_Frozen):
    regions: list[RegionBox]


class AssignWithinRegionRequest(CameraView):
    """Stage 2: which centroid inside ``box`` is which keypoint of ``region``?"""

    region: str
    box: BoxTuple | None
    centroids: list[Centroid] = Field(description="free centroids of the camera (not yet claimed)")


class Label(_Frozen):
    """One keypoint's label in one camera."""

    keypoint: str
    centroid: int = Field(ge=-1, description="centroid index, -1 for none")
    confidence: float = Field(ge=0.0, le=1.0)
    margin_px: float | None = Field(description="cost gap to the second-best choice, None if unassigned")
    stage: Stage


class RegionAssignment(_Frozen):
    """Stage 2 answer for one camera and region."""

    camera: str
    region: str
    labels: list[Label]
    flagged: bool = False
    reason: str = ""


class ReconcileRegionsRequest(CameraView):
    """Stage 3: merge the per-region answers of one camera into one labelling."""

    centroids: list[Centroid] = Field(description="free centroids of the camera (not yet claimed)")
    proposals: list[RegionAssignment]


class ReconcileRegionsAnswer(_Frozen):
    """One label per requested keypoint (request order); no centroid used twice."""

    camera: str
    labels: list[Label]
    n_conflicts: int = Field(ge=0, description="centroids that several regions claimed")
    flagged: bool = False
    reason: str = ""


@runtime_checkable
class PoseBackend(Protocol):
    """What the pose graph needs from a perception backend (stages 1-3).

    A backend may also declare ``fan_out: Literal["per_view", "per_stage"]``:
    ``per_view`` (the default) gives every camera's (and region's) request its
    own graph task, so model calls run concurrently; ``per_stage`` runs each
    stage for all cameras in one task (:func:`agent.pose_pipeline.stage_fan_out`).
    It may also define ``finds_nothing(view, centroids) -> bool``: True when
    stages 1-3 on ``view`` with those free centroids could label none of its
    keypoints, so a retry leaves out such a view whose keypoints are all
    unlabelled (:func:`graphs.pose.quality_control`).
    """

    name: str

    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        """Stage 1: one box per requested region."""
        ...

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        """Stage 2: one label per keypoint of the request (a centroid of the request or -1)."""
        ...

    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        """Stage 3: one label per keypoint, no centroid claimed twice."""
        ...
