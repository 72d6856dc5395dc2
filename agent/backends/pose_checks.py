"""What a model may answer in pose stages 1-3, and the checks that decide whether it is possible.

The answers are pydantic models sent as the json_schema of the request. A
schema-valid answer can still be impossible for a tracked animal: a box
outside the image or nowhere near the prediction, a centroid number that was
not shown or is used twice, a keypoint of another region, a centroid farther
than the gate from the keypoint's prediction, or labels clearly worse than the
best assignment geometry finds. The checks return a short
reason (``<what>: <details>``, the first word machine-readable) or None; the
model client sends the reason back and retries. Accepted labels get the
geometric confidence and margin the classical tracker would give them.

Shapes: ``predicted (n_keypoints, 2)`` pixels in the order of the request's
keypoints, NaN where unknown.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from agent.backends.pose_base import CameraView, Centroid, Label, Stage, centroid_xy
from tools.assignment import assign_points
from tools.regions import Box

MIN_BOX_PX = 4
BOX_SIZE_FACTOR = 3.0  # a box may be this many times larger or smaller than the exemplars' boxes


class RegionBoxAnswer(BaseModel):
    """Stage 1: the region's box in the last image, in that image's pixels (x1, y1 exclusive)."""

    x0: int = Field(description="left edge")
    y0: int = Field(description="top edge")
    x1: int = Field(description="right edge, exclusive")
    y1: int = Field(description="bottom edge, exclusive")


class KeypointChoice(BaseModel):
    """One keypoint and the number of the centroid that is its quantum dot."""

    keypoint: str = Field(description="keypoint name")
    centroid: int = Field(description="centroid number shown in the image, -1 if its dot is not visible")


class RegionLabelsAnswer(BaseModel):
    """Stage 2: a choice per keypoint of the region (a keypoint left out gets no centroid)."""

    assignments: list[KeypointChoice]


class CameraLabelsAnswer(BaseModel):
    """Stage 3: exactly one choice per keypoint of the request; no centroid number twice."""

    assignments: list[KeypointChoice]


def check_box(answer: RegionBoxAnswer, view_box: Box, reference: list[Box], predicted: np.ndarray,
              near_px: float, size_factor: float) -> str | None:
    """Why a Stage 1 box (in the view's pixels) is impossible, or None.

    ``reference`` are boxes the region had (the exemplars', the prediction's;
    full-image pixels): the answer's width and height must lie within
    ``size_factor`` of theirs. ``predicted (n_keypoints, 2)`` are the region's
    predicted keypoints (NaN unknown): their centre must lie within ``near_px``
    of the box.
    """
    width, height = view_box.width, view_box.height
    if not (0 <= answer.x0 < answer.x1 <= width and 0 <= answer.y0 < answer.y1 <= height):
        return (f"outside_image: box ({answer.x0}, {answer.y0}, {answer.x1}, {answer.y1}) is not "
                f"inside the {width}x{height} image")
    box_w, box_h = answer.x1 - answer.x0, answer.y1 - answer.y0
    if box_w < MIN_BOX_PX or box_h < MIN_BOX_PX:
        return f"degenerate: a {box_w}x{box_h} px box cannot hold the region"
    if reference:
        sizes = np.array([[b.width, b.height] for b in reference], dtype=np.float64)
        low, high = sizes.min(axis=0) / size_factor, sizes.max(axis=0) * size_factor
        if not (low[0] <= box_w <= high[0] and low[1] <= box_h <= high[1]):
            return (f"implausible_size: {box_w}x{box_h} px, the region's boxes so far were "
                    f"{sizes.min(axis=0)[0]:.0f}-{sizes.max(axis=0)[0]:.0f} px wide and "
                    f"{sizes.min(axis=0)[1]:.0f}-{sizes.max(axis=0)[1]:.0f} px high")
    known = predicted[np.all(np.isfinite(predicted), axis=1)]
    if len(known):
        centre = known.mean(axis=0) - (view_box.x0, view_box.y0)
        gap = max(answer.x0 - centre[0], centre[0] - answer.x1, answer.y0 - centre[1], centre[1] - answer.y1)
        if gap > near_px:
            return (f"far_from_prediction: the region is predicted near ({centre[0]:.0f}, {centre[1]:.0f}), "
                    f"{gap:.0f} px outside the box")
    return None


def check_choices(choices: list[KeypointChoice], keypoints: list[str], shown: list[Centroid],
                  predicted: np.ndarray, gate_px: float, tolerance_px: float, *,
                  complete: bool) -> str | None:
    """Why a Stage 2/3 assignment is impossible, or None.

    ``predicted (n_keypoints, 2)`` in ``keypoints`` order. A centroid farther
    than ``gate_px`` from a known prediction is impossible, and so is an
    answer whose labels lie, in total, more than ``tolerance_px`` farther from
    the predictions than the optimal gated assignment's
    (:func:`tools.assignment.assign_points`; "none" costs the gate): the model
    chooses among assignments that geometry finds about equally plausible, it
    cannot overrule a clear geometric preference (a swap of two well-separated
    dots, a visible dot called hidden).
    """
    by_number = {c.index: c for c in shown}
    named = [c.keypoint for c in choices]
    for keypoint in named:
        if keypoint not in keypoints:
            return f"unknown_keypoint: {keypoint!r} is not one of {keypoints}"
    repeated = sorted({k for k in named if named.count(k) > 1})
    if repeated:
        return f"keypoint_twice: {repeated} answered more than once"
    if complete and set(named) != set(keypoints):
        return f"incomplete: no answer for {[k for k in keypoints if k not in named]}"
    numbers = [c.centroid for c in choices if c.centroid != -1]
    for number in numbers:
        if number not in by_number:
            return f"no_centroid: {number} is not a centroid number shown (-1 means not visible)"
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        return f"centroid_twice: {twice} given to several keypoints"
    for choice in choices:
        prediction = predicted[keypoints.index(choice.keypoint)]
        if choice.centroid == -1 or not np.all(np.isfinite(prediction)):
            continue
        centroid = by_number[choice.centroid]
        distance = float(np.hypot(centroid.x - prediction[0], centroid.y - prediction[1]))
        if distance > gate_px:
            return (f"too_far: centroid {choice.centroid} is {distance:.0f} px from where "
                    f"{choice.keypoint} is predicted (at most {gate_px:.0f} px)")
    excess = _excess_cost(choices, keypoints, shown, predicted, gate_px)
    if excess > tolerance_px:
        return (f"contradicts_prediction: these labels lie {excess:.0f} px farther from the predicted "
                f"positions, in total, than the best assignment of the centroids shown")
    return None


def _excess_cost(choices: list[KeypointChoice], keypoints: list[str], shown: list[Centroid],
                 predicted: np.ndarray, gate_px: float) -> float:
    """Summed distance to the predictions of the answer minus that of the optimal gated assignment.

    Over the keypoints with a prediction; a keypoint without a centroid costs
    ``gate_px`` (as in :func:`tools.assignment.assign_points`), and centroids
    the answer gives to unpredicted keypoints are left out of both.
    """
    chosen = {c.keypoint: c.centroid for c in choices}
    known = [i for i, k in enumerate(keypoints) if np.all(np.isfinite(predicted[i]))]
    elsewhere = {chosen.get(keypoints[i], -1) for i in range(len(keypoints)) if i not in known}
    candidates = [c for c in shown if c.index not in elsewhere]
    best = assign_points(predicted[known], centroid_xy(candidates), gate_px)
    best_cost = float(np.where(best.index >= 0, np.nan_to_num(best.cost), gate_px).sum())
    by_number = {c.index: c for c in candidates}
    answer_cost = 0.0
    for i in known:
        number = chosen.get(keypoints[i], -1)
        if number in by_number:
            centroid = by_number[number]
            answer_cost += float(np.hypot(centroid.x - predicted[i, 0], centroid.y - predicted[i, 1]))
        else:
            answer_cost += gate_px
    return answer_cost - best_cost


def can_assign(predicted: np.ndarray, centroids: list[Centroid], gate_px: float) -> bool:
    """Whether some keypoint could take one of ``centroids`` (else only "none" is a valid answer).

    ``predicted (n_keypoints, 2)``; a keypoint without a prediction could take any centroid.
    """
    if not centroids or len(predicted) == 0:
        return False
    xy = centroid_xy(centroids)
    distance = np.linalg.norm(predicted[:, None, :] - xy[None, :, :], axis=2)
    unknown = ~np.all(np.isfinite(predicted), axis=1)
    return bool(unknown.any() or (distance <= gate_px).any())


def labels_with_margins(view: CameraView, choices: list[KeypointChoice], shown: list[Centroid],
            predicted: np.ndarray, gate_px: float, stage: Stage) -> list[Label]:
    """Labels in ``view.keypoints`` order with geometric confidence and margin."""
    chosen = {c.keypoint: c.centroid for c in choices}
    xy = centroid_xy(shown)
    position = {c.index: i for i, c in enumerate(shown)}
    labels = []
    for keypoint, prediction in zip(view.keypoints, predicted, strict=True):
        number = chosen.get(keypoint, -1)
        if number < 0:
            labels.append(unassigned(keypoint, stage))
            continue
        if not np.all(np.isfinite(prediction)):
            labels.append(Label(keypoint=keypoint, centroid=number, confidence=0.5, margin_px=0.0, stage=stage))
            continue
        distance = np.linalg.norm(xy - prediction, axis=1)
        own = float(distance[position[number]])
        others = np.delete(distance, position[number])
        # Cost gap to the second-best choice, as the classical tracker measures it; negative
        # when the model picked a centroid farther from the prediction than another one.
        margin = float(min(others.min(initial=gate_px), gate_px)) - own
        labels.append(Label(keypoint=keypoint, centroid=number, confidence=max(0.0, 1.0 - own / gate_px),
                            margin_px=round(margin, 3), stage=stage))
    return labels


def unassigned(keypoint: str, stage: Stage) -> Label:
    return Label(keypoint=keypoint, centroid=-1, confidence=0.0, margin_px=None, stage=stage)
