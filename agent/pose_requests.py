"""Backend requests of stages 1-3, built from what the graph state references.

A frame's attempt asks the backend about the same cameras in stages 1, 2
and 3. Each camera's view (exemplars, prior, free centroids) is validated
once per attempt (:func:`camera_requests`); the Stage 2 and Stage 3
requests are cut from it, their validation taking its exemplars and
centroids as the instances they are, so a request costs the same whether
the graph runs a stage as one task per camera (``per_view``) or as one task
for all cameras (``per_stage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    CameraView,
    Centroid,
    LocateRegionsAnswer,
    LocateRegionsRequest,
    ReconcileRegionsRequest,
)

VIEW_FIELDS = tuple(CameraView.model_fields)


@dataclass(frozen=True)
class CameraRequests:
    """One camera's validated Stage 1 request and its free centroids, for one frame and attempt.

    Attributes
    ----------
    locate : LocateRegionsRequest
        The camera's view restricted to the keypoints to (re)assign, with their regions.
    centroids : list[Centroid]
        The centroids no kept label holds, in detection order.
    """

    locate: LocateRegionsRequest
    centroids: list[Centroid]


def camera_requests(tasks: list[dict[str, Any]]) -> dict[str, CameraRequests]:
    """Validate :func:`agent.pose_steps.region_tasks` payloads; camera name -> its requests."""
    return {task["view"]["camera"]: CameraRequests(
        locate=LocateRegionsRequest.model_validate({**task["view"], "regions": task["regions"]}),
        centroids=_CENTROIDS.validate_python(task["centroids"]),
    ) for task in tasks}


# A camera's centroids validated in one call: half the time of a model_validate per centroid.
_CENTROIDS = TypeAdapter(list[Centroid])


def region_boxes(camera: str, answer: LocateRegionsAnswer) -> list[dict[str, Any]]:
    """Stage 1's answer as Stage 2 items: camera, region, box (None if not found), box_reason.

    ``box_reason`` is the reason of a flagged box ("" otherwise): the region's
    Stage 2 answer inherits it.
    """
    return [{"camera": camera, "region": box.region, "box": box.box,
             "box_reason": box.reason if box.flagged else ""} for box in answer.regions]


def assign_request(camera: CameraRequests, region: str,
                   box: tuple[int, int, int, int] | None) -> AssignWithinRegionRequest:
    """Stage 2 request about ``region`` of the camera, inside ``box``."""
    view = camera.locate
    index = [view.keypoints.index(name) for name in view.regions[region]]
    # One validation in pydantic-core, of plain exemplar fields and of the camera's centroids
    # (instances, taken as they are), costs less than model_construct's Python per model.
    return AssignWithinRegionRequest.model_validate({
        **_view_fields(view), "keypoints": list(view.regions[region]),
        "exemplars": [{"frame": e.frame, "points": [e.points[i] for i in index]}
                      for e in view.exemplars],
        "prior": [view.prior[i] for i in index],
        "region": region, "box": None if box is None else tuple(box), "centroids": camera.centroids})


def reconcile_request(camera: CameraRequests, proposals: list[dict[str, Any]]
                      ) -> ReconcileRegionsRequest:
    """Stage 3 request of the camera with its Stage 2 answers (``RegionAssignment`` dumps)."""
    return ReconcileRegionsRequest.model_validate(
        {**_view_fields(camera.locate), "centroids": camera.centroids, "proposals": proposals})


def _view_fields(view: CameraView) -> dict[str, Any]:
    return {name: getattr(view, name) for name in VIEW_FIELDS}
