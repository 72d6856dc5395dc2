"""The ``openai`` pose backend: a vision-language model answers stages 1-3, geometry checks it.

The method of the BehaviorVLM paper, through any OpenAI-compatible server
(vLLM, Ollama, llama.cpp's server, OpenAI), one :class:`~agent.llm.ModelClient`
call per region and stage (images: :mod:`agent.backends.pose_images`):

* Stage 1, ``locate_regions``: the three rolling exemplar frames with the
  region boxes drawn in colour plus the target frame; the model answers the
  region's box. Accepted only inside the image, not degenerate, of a size
  like the exemplars' boxes and near the prediction.
* Stage 2, ``assign_within_region``: exemplar crops with their verified
  labels plus the target crop with numbered centroids; the model answers
  centroid-to-keypoint assignments. Accepted only when every number was
  shown, none is used twice, every keypoint belongs to the region, every
  assigned centroid lies within the gate of the keypoint's prediction, and
  the labels are not clearly worse than the best assignment geometry finds
  (:mod:`agent.backends.pose_checks`): the model decides what geometry finds
  close, it cannot overrule a clear geometric preference.
* Stage 3, ``reconcile_regions``: the target view with every free centroid
  numbered and a structured description of the regions' proposals; the
  model answers a complete unique assignment and may first call the typed
  tools of :mod:`agent.backends.pose_tools` (``reprojection_error``,
  ``nearest_centroids``). Checked like Stage 2 and for completeness.

No call is made where nothing can be decided (no centroid within the gate of
any keypoint). An answer that stays invalid after the client's bounded
retries comes back ``flagged`` with reason ``model_<what>``
(``model_transport``, ``model_too_far``...) and the classical tracker's
answer to the same request
(:class:`~agent.backends.classical_pose.ClassicalPoseBackend`). Accepted
labels carry the geometric confidence and margin the tracker would give them
(the distance to the keypoint's prediction against the next centroid's), so
a label geometry barely supports reaches quality control with a small or
negative margin. Stage 4 then checks every label against the other cameras.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from agent.backends import pose_images as images
from agent.backends.classical_pose import ClassicalPoseBackend, predict_view
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    CameraView,
    Centroid,
    LocateRegionsAnswer,
    LocateRegionsRequest,
    ReconcileRegionsAnswer,
    ReconcileRegionsRequest,
    RegionAssignment,
    RegionBox,
)
from agent.backends.pose_checks import (
    BOX_SIZE_FACTOR,
    CameraLabelsAnswer,
    RegionBoxAnswer,
    RegionLabelsAnswer,
    can_assign,
    check_box,
    check_choices,
    labels_with_margins,
    unassigned,
)
from agent.backends.pose_tools import PoseGeometry, reconcile_tools
from agent.llm import CallOutcome, CallRequest, ModelClient, image_block
from agent.prompts import Prompt, load_prompt
from agent.recording import Recording
from tools.regions import Box, box_of_points, pad_box

PROMPT_NAMES = ("pose/locate_regions", "pose/assign_within_region", "pose/reconcile_regions")
# Enough for every region of every camera at once (6 x 4); the client's semaphore bounds the requests.
REGION_THREADS = 32
AnswerT = TypeVar("AnswerT", bound=BaseModel)


@dataclass(frozen=True)
class PosePrompts:
    """The three Stage 1-3 templates."""

    locate_regions: Prompt
    assign_within_region: Prompt
    reconcile_regions: Prompt


def load_pose_prompts(prompts_dir: str | Path | None = None) -> PosePrompts:
    """Load ``pose/*.md`` from ``prompts_dir`` (default: the project's ``prompts/``)."""
    return PosePrompts(*(load_prompt(name, prompts_dir) for name in PROMPT_NAMES))


class OpenAIPoseBackend:
    """Stages 1-3 answered by a vision-language model, every answer checked against geometry.

    Parameters
    ----------
    client : ModelClient
        Shared by every request (its concurrency bound, retries and call log).
    recording : Recording
        Source of the reflectance and fluorescence frames.
    prompts : PosePrompts
        The stage templates.
    geometry : PoseGeometry, optional
        For the Stage 3 tools; default: the recording's rig, prediction only.
    gate_px : float
        Largest distance between a keypoint's prediction and the centroid a
        model may give it on a first try; doubled per retry strategy.
    tolerance_px : float, optional
        How much farther from the predictions, in total, a model's labels may
        lie than the best gated assignment's (default: half the first-try
        gate, at every strategy).
    tracker : ClassicalPoseBackend, optional
        Answers, flagged, what the model could not settle.
    """

    name = "openai"

    def __init__(self, client: ModelClient, recording: Recording, prompts: PosePrompts, *,
                 geometry: PoseGeometry | None = None, gate_px: float = 24.0,
                 tolerance_px: float | None = None, tracker: ClassicalPoseBackend | None = None) -> None:
        self.client, self.prompts, self.gate_px = client, prompts, gate_px
        self.tolerance_px = gate_px / 2 if tolerance_px is None else tolerance_px
        self.tracker = tracker or ClassicalPoseBackend()
        self.frames = images.FrameCache(recording)
        self.geometry = geometry or PoseGeometry(recording.group, list(recording.keypoints))
        self._colors = images.region_colors(list(recording.regions))
        # Stage 1's region calls, kept across tasks: starting threads per camera task costs
        # the interpreter lock while other requests wait to be sent.
        self._region_pool = ThreadPoolExecutor(max_workers=REGION_THREADS, thread_name_prefix="regions")
        self._lock = threading.Lock()
        self._drawing = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._flagged: Counter[str] = Counter()

    # -- Stage 1 ----------------------------------------------------------------
    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        """Stage 1: one model call per region, all regions of the camera in parallel."""
        # One camera's images at a time: when every camera starts a frame at once, the
        # first request then leaves after one camera's drawing, not after all of them.
        with self._drawing:
            view_box = images.animal_view(request)
            boxes = images.exemplar_boxes(request, request.regions)
            colors = {r: self._colors.get(r, images.NAMED_COLORS[-1]) for r in request.regions}
            # Encoded once for the camera's regions, which all show the same images.
            shown = [image_block(png)
                     for png in images.locate_images(self.frames, request, view_box, boxes, colors)]

        def locate(region: str) -> RegionBox:
            return self._locate_region(request, region, view_box, boxes, colors[region][0], shown)

        return LocateRegionsAnswer(regions=list(self._region_pool.map(locate, request.regions)))

    def _locate_region(self, request: LocateRegionsRequest, region: str, view_box: Box,
                       boxes: list[dict[str, Box]], color: str, shown: list[dict]) -> RegionBox:
        members = request.regions[region]
        predicted = predict_view(request.subset(members))
        reference = [b[region] for b in boxes if region in b]
        predicted_box = box_of_points(predicted)
        if predicted_box is not None:
            reference.append(pad_box(predicted_box, request.image_size))
        text = self.prompts.locate_regions.render(
            camera=request.camera, frame=request.frame, region=region, color=color,
            keypoints=", ".join(members), n_exemplars=len(request.exemplars),
            image_width=view_box.width, image_height=view_box.height,
            exemplar_boxes=json.dumps([_box_json(images.shift_box(b[region], view_box))
                                       for b in boxes if region in b]),
            predicted=_points_json(members, predicted, view_box),
        )
        scale = 2.0**request.strategy

        def check(answer: RegionBoxAnswer) -> str | None:
            return check_box(answer, view_box, reference, predicted, self.gate_px * scale,
                             BOX_SIZE_FACTOR * scale)

        outcome = self._ask("locate_regions", request, region, self.prompts.locate_regions, text,
                            shown, RegionBoxAnswer, check)
        if outcome.answer is None:
            only = request.model_copy(update={"regions": {region: members}})
            fallback = self.tracker.locate_regions(only).regions[0]
            return fallback.model_copy(update={"confidence": 0.0, "flagged": True, "reason": _reason(outcome)})
        answer = outcome.answer
        box = Box(answer.x0 + view_box.x0, answer.y0 + view_box.y0,
                  answer.x1 + view_box.x0, answer.y1 + view_box.y0)
        known = predicted[np.all(np.isfinite(predicted), axis=1)]
        inside = float(box.contains(known).mean()) if len(known) else 1.0
        return RegionBox(region=region, box=_grown(box, request), confidence=inside)

    # -- Stage 2 ----------------------------------------------------------------
    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        """Stage 2: the model assigns the centroids inside the box; no call when none could be taken."""
        box = None if request.box is None else Box(*request.box)
        shown = [] if box is None else [c for c in request.centroids
                                        if box.contains(np.array([[c.x, c.y]]))[0]]
        predicted = predict_view(request)
        gate_px = self.gate_px * 2.0**request.strategy
        if box is None or not can_assign(predicted, shown, gate_px):
            labels = [unassigned(k, "within_region") for k in request.keypoints]
            return RegionAssignment(camera=request.camera, region=request.region, labels=labels,
                                    flagged=True, reason="no_box" if box is None else "unassigned")
        pictures, numbering = images.assign_images(self.frames, request, box, shown)
        text = self.prompts.assign_within_region.render(
            camera=request.camera, frame=request.frame, region=request.region,
            keypoints=", ".join(request.keypoints), n_exemplars=len(numbering),
            exemplar_labels=json.dumps(numbering), centroids=_centroids_json(shown, box),
            predicted=_points_json(request.keypoints, predicted, box),
        )

        def check(answer: RegionLabelsAnswer) -> str | None:
            return check_choices(answer.assignments, request.keypoints, shown, predicted, gate_px,
                                 self.tolerance_px, complete=False)

        outcome = self._ask("assign_within_region", request, request.region, self.prompts.assign_within_region,
                            text, [image_block(png) for png in pictures], RegionLabelsAnswer, check)
        if outcome.answer is None:
            fallback = self.tracker.assign_within_region(request)
            return fallback.model_copy(update={"flagged": True, "reason": _reason(outcome)})
        labels = labels_with_margins(request, outcome.answer.assignments, shown, predicted, gate_px, "within_region")
        missing = sum(label.centroid < 0 for label in labels)
        return RegionAssignment(camera=request.camera, region=request.region, labels=labels,
                                flagged=missing > 0, reason="unassigned" if missing else "")

    # -- Stage 3 ----------------------------------------------------------------
    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        """Stage 3: the model settles the whole camera, with geometry tools at hand."""
        proposed = {label.keypoint: label for p in request.proposals for label in p.labels
                    if label.keypoint in request.keypoints}
        claims = Counter(label.centroid for label in proposed.values() if label.centroid >= 0)
        conflicted = sorted(c for c, n in claims.items() if n > 1)
        predicted = predict_view(request)
        gate_px = self.gate_px * 2.0**request.strategy
        if not can_assign(predicted, request.centroids, gate_px):
            labels = [unassigned(k, "reconcile") for k in request.keypoints]
            return ReconcileRegionsAnswer(camera=request.camera, labels=labels,
                                          n_conflicts=len(conflicted), flagged=True, reason="unassigned")
        view_box = images.animal_view(request)
        unique = {label.centroid: k for k, label in proposed.items()
                  if label.centroid >= 0 and label.centroid not in conflicted}
        picture = images.reconcile_image(self.frames, request, view_box, request.centroids, unique)
        text = self.prompts.reconcile_regions.render(
            camera=request.camera, frame=request.frame, keypoints=", ".join(request.keypoints),
            proposals=json.dumps({p.region: {label.keypoint: label.centroid for label in p.labels}
                                  for p in request.proposals}),
            conflicts=json.dumps({str(c): sorted(k for k, label in proposed.items() if label.centroid == c)
                                  for c in conflicted}),
            unassigned=json.dumps([k for k in request.keypoints
                                   if k not in proposed or proposed[k].centroid < 0]),
            centroids=_centroids_json(request.centroids, view_box),
            predicted=_points_json(request.keypoints, predicted, view_box),
        )

        def check(answer: CameraLabelsAnswer) -> str | None:
            return check_choices(answer.assignments, request.keypoints, request.centroids, predicted,
                                 gate_px, self.tolerance_px, complete=True)

        outcome = self._ask("reconcile_regions", request, "all", self.prompts.reconcile_regions, text,
                            [image_block(picture)], CameraLabelsAnswer, check,
                            reconcile_tools(request, self.geometry))
        if outcome.answer is None:
            fallback = self.tracker.reconcile_regions(request)
            return fallback.model_copy(update={"flagged": True, "reason": _reason(outcome)})
        fresh = labels_with_margins(request, outcome.answer.assignments, request.centroids, predicted, gate_px, "reconcile")
        # A label the model confirms keeps the stage and margin its region proposed.
        labels = [proposed[label.keypoint] if label.centroid >= 0 and label.keypoint in proposed
                  and proposed[label.keypoint].centroid == label.centroid else label for label in fresh]
        missing = sum(label.centroid < 0 for label in labels)
        return ReconcileRegionsAnswer(camera=request.camera, labels=labels, n_conflicts=len(conflicted),
                                      flagged=missing > 0, reason="unassigned" if missing else "")

    # -- bookkeeping --------------------------------------------------------------
    def _ask(self, node: str, view: CameraView, region: str, prompt: Prompt, text: str,
             pictures: Sequence[dict], schema: type[AnswerT], validate: Callable[[AnswerT], str | None],
             tools: Sequence[BaseTool] = ()) -> CallOutcome[AnswerT]:
        """One checked model call; ``pictures`` are :func:`~agent.llm.image_block` blocks."""
        # Images first and the request's text last: the requests of one camera and frame
        # then share their image prefix, which a server with prefix caching computes once.
        message = HumanMessage(content=[*pictures, {"type": "text", "text": text}])
        item = f"frame={view.frame} camera={view.camera} region={region}"
        outcome = self.client.call(CallRequest(node, item, prompt, [message]), schema,
                                   validate=validate, tools=tools)
        with self._lock:
            self._attempts[node] += outcome.attempts
            self._flagged[node] += outcome.flagged
        return outcome

    def stats(self) -> dict[str, object]:
        """Model calls, attempts and flagged answers per stage, for run.json."""
        calls = dict(sorted(self.client.calls_by_node.items()))
        return {"backend": self.name, "model": self.client.model_name,
                "model_calls": calls, "model_calls_total": sum(calls.values()),
                "model_attempts": dict(sorted(self._attempts.items())),
                "model_flagged": dict(sorted(self._flagged.items())),
                "max_in_flight": self.client.max_in_flight, "frames_decoded": self.frames.n_decoded}

    def close(self) -> None:
        """Release the frame streams and threads (idempotent); the backend is not used afterwards."""
        self._region_pool.shutdown(wait=True)
        self.frames.close()


def _reason(outcome: CallOutcome) -> str:
    """``model_<what>``: the first word of the client's reason (details are in calls.jsonl)."""
    what = (outcome.reason or "no_answer").split(":")[0].strip().replace(" ", "_")
    return f"model_{what}"


def _grown(box: Box | None, view: CameraView) -> tuple[int, int, int, int] | None:
    """The method's crop padding, once more per retry strategy."""
    if box is None:
        return None
    for _ in range(1 + view.strategy):
        box = pad_box(box, view.image_size)
    return (box.x0, box.y0, box.x1, box.y1)


def _box_json(box: Box) -> list[int]:
    return [box.x0, box.y0, box.x1, box.y1]


def _points_json(keypoints: list[str], points: np.ndarray, box: Box) -> str:
    """Keypoint -> ``[x, y]`` in the pixels of the image cut from ``box`` (null if unknown)."""
    shifted = box.to_crop(points)
    return json.dumps({k: (None if not np.all(np.isfinite(p)) else [round(float(p[0]), 1), round(float(p[1]), 1)])
                       for k, p in zip(keypoints, shifted, strict=True)})


def _centroids_json(centroids: list[Centroid], box: Box) -> str:
    return json.dumps([{"number": c.index, "x": round(c.x - box.x0, 1), "y": round(c.y - box.y0, 1)}
                       for c in centroids])
