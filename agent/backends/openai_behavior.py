"""The ``openai`` behavior backend: a vision model captions clips, a text model merges them.

``caption_clips`` samples each clip video (10 fps, focal animal marked) into
a few evenly spaced PNG frames and sends them with the ``caption_clips``
prompt (focal animal named, the clip's kinematic summary as context); the
answer is a short snake_case label (the classical labels are offered), a
description, and the model's own flag. ``merge_segments``
sends one animal's captioned clips of one chunk, in time order, to a text
model with the ``merge_segments`` prompt; the model may call the typed tool
``get_clip_features`` and answers with segments that must tile the chunk.

Every call goes through :class:`agent.llm.ModelClient`, which owns the
retries and the call log. After its bound the backend never raises and never
passes error text on:

* a caption the model could not settle gets the classical caption
  (:class:`~agent.backends.classical_behavior.ClassicalBehaviorBackend`,
  labels from the measured kinematics), ``flagged`` with the model's reason;
* a merge the model could not settle gets the classical merge, and the chunk
  is recorded in :attr:`OpenAIBehaviorBackend.merge_flags`
  (:class:`~agent.backends.behavior_base.MergedSegment` has no flag field).

``mode="hybrid"`` keeps the classical labels and merge (so the labels are
exactly as accurate as the classical backend's) and takes only the
descriptions from the model; a clip whose model label disagrees with the
classical one is flagged for review.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from agent.backends.behavior_base import (
    SNAKE_CASE,
    ClipCaption,
    ClipRequest,
    MergedSegment,
    MergeRequest,
)
from agent.backends.classical_behavior import ClassicalBehaviorBackend
from agent.llm import CallRequest, ModelClient, user_message
from agent.prompts import Prompt

# Offered to the models (the classical decision list of tools.behavior_rules);
# the prompts let a model use another label when none fits.
CAPTION_LABELS: tuple[str, ...] = (
    "chase", "huddle", "oral_oral_contact", "oral_genital_contact", "locomotion",
    "exploring", "grooming", "feeding", "stationary",
)
MAX_LABEL_WORDS = 4  # a label names a behavior; a longer one is a sentence
_SNAKE = re.compile(SNAKE_CASE)


class CaptionAnswer(BaseModel):
    """What the vision model answers for one clip."""

    label: str = Field(description="behavior label, lower snake_case, preferably one of those given")
    description: str = Field(
        description="posture, movement direction, speed and interactions of the focal animal"
    )
    flagged: bool = Field(default=False, description="the frames and measurements disagree or are unclear")
    reason: str | None = Field(default=None, description="short snake_case reason when flagged")


class SegmentAnswer(BaseModel):
    """One merged segment; frames ``[start_frame, end_frame)``."""

    start_frame: int = Field(description="first frame (inclusive)")
    end_frame: int = Field(description="frame after the last one (exclusive)")
    label: str = Field(description="behavior label, lower snake_case")
    description: str = Field(description="what the animal does over the whole segment")
    clip_ids: list[str] = Field(description="ids of the consecutive clips the segment covers, in order")


class MergeAnswer(BaseModel):
    """The text model's answer for one chunk: segments in time order."""

    segments: list[SegmentAnswer]


class ClipFeaturesArgs(BaseModel):
    """Arguments of ``get_clip_features``."""

    clip_id: str = Field(description="id of a clip listed in the request")


@dataclass(frozen=True)
class MergeFlag:
    """A chunk whose merge fell back to the classical one; frames ``[start_frame, end_frame)``."""

    animal: str
    start_frame: int
    end_frame: int
    reason: str


def sample_clip_frames(
    video_path: str | Path, max_frames: int, max_side_px: int
) -> tuple[list[bytes], list[float]]:
    """Evenly spaced frames of a short clip video as PNG bytes, with their times.

    Parameters
    ----------
    video_path : str or Path
        Clip video (any format OpenCV reads).
    max_frames : int
        At most this many frames; all of them when the clip is shorter.
    max_side_px : int
        Frames are downscaled (never upscaled) so that the longer side fits.

    Returns
    -------
    tuple of (list of bytes, list of float)
        PNG images in time order and their times in seconds from the clip start.
        Both empty when the video cannot be read.
    """
    capture = cv2.VideoCapture(str(video_path))
    picked: list[tuple[int, bytes]] = []
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        # The clip writer's mp4s report exact frame counts, so only the chosen
        # frames are decoded to images (a clip holds up to max_clip_s * 10 frames).
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        chosen = set(np.linspace(0, n_frames - 1, min(max_frames, n_frames)).round().astype(int).tolist())
        for index in range(n_frames):
            if not capture.grab():
                break
            if index in chosen:
                ok, frame = capture.retrieve()
                if ok:
                    picked.append((index, _png(_downscale(frame, max_side_px))))
    finally:
        capture.release()
    return [png for _, png in picked], [round(index / fps, 2) for index, _ in picked]


def _downscale(image: np.ndarray, max_side_px: int) -> np.ndarray:
    scale = max_side_px / max(image.shape[:2])
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode a clip frame as PNG")
    return encoded.tobytes()


def label_problem(label: str) -> str | None:
    """Why ``label`` is not a label (not lower snake_case, or a sentence), or None."""
    if not _SNAKE.fullmatch(label):
        return f"label {label!r} is not lower snake_case"
    if label.count("_") >= MAX_LABEL_WORDS:
        return f"label {label!r} is longer than {MAX_LABEL_WORDS} words"
    return None


def merge_problem(answer: MergeAnswer, request: MergeRequest) -> str | None:
    """Why ``answer`` does not tile the chunk of ``request``, or None when it does.

    The segments must cover ``[chunk start, last clip end)`` contiguously
    without overlap, where the chunk starts at ``request.previous`` when
    given and at the first clip otherwise; the clip ids, the previous
    segment's first, are each used once in time order (so the first segment
    continues or replaces the previous one), each segment's frames contain
    its clips, and labels are labels.
    """
    segments = answer.segments
    if not segments:
        return "no segments"
    spans = _unit_spans(request)
    expected_ids = list(spans)
    given_ids = [clip_id for segment in segments for clip_id in segment.clip_ids]
    if given_ids != expected_ids:
        return _clip_ids_problem(given_ids, expected_ids)
    start, end = spans[expected_ids[0]][0], spans[expected_ids[-1]][1]
    if segments[0].start_frame != start or segments[-1].end_frame != end:
        return f"segments cover [{segments[0].start_frame}, {segments[-1].end_frame}), expected [{start}, {end})"
    for before, after in zip(segments, segments[1:], strict=False):
        if before.end_frame != after.start_frame:
            kind = "overlap" if before.end_frame > after.start_frame else "gap"
            return f"{kind} between frame {before.end_frame} and frame {after.start_frame}"
    for segment in segments:
        if not segment.clip_ids:
            return f"segment starting at frame {segment.start_frame} has no clips"
        first, last = spans[segment.clip_ids[0]], spans[segment.clip_ids[-1]]
        if segment.start_frame > first[0] or segment.end_frame < last[1]:
            return (f"segment [{segment.start_frame}, {segment.end_frame}) does not contain its clips "
                    f"[{first[0]}, {last[1]})")
        problem = label_problem(segment.label)
        if problem is None and not segment.description.strip():
            problem = f"segment starting at frame {segment.start_frame} has an empty description"
        if problem is not None:
            return problem
    return None


def _clip_ids_problem(given: list[str], expected: list[str]) -> str:
    where = next((i for i, (a, b) in enumerate(zip(given, expected, strict=False)) if a != b),
                 min(len(given), len(expected)))
    found = repr(given[where]) if where < len(given) else "nothing"
    wanted = repr(expected[where]) if where < len(expected) else "nothing"
    return (f"clip_ids must list every clip once, in time order: clip id number {where + 1} "
            f"is {found}, expected {wanted}")


def _unit_spans(request: MergeRequest) -> dict[str, tuple[int, int]]:
    """Frames of every clip id the answer must list; the previous segment's ids share its span."""
    previous = request.previous
    spans = {} if previous is None else {
        clip_id: (previous.start_frame, previous.end_frame) for clip_id in previous.clip_ids}
    spans.update((clip.clip_id, (clip.start_frame, clip.end_frame)) for clip in request.clips)
    return spans


class OpenAIBehaviorBackend:
    """Captions by a vision model, merging by a text model, each checked and bounded.

    Parameters
    ----------
    vlm : ModelClient
        Client of the vision-language model (captions).
    merge_llm : ModelClient
        Client of the text model (merging); may be ``vlm`` itself.
    caption_prompt, merge_prompt : Prompt
        Templates ``behavior/caption_clips`` and ``behavior/merge_segments``.
    mode : {"openai", "hybrid"}
        ``hybrid`` keeps the classical labels and merge (see the module docstring).
    max_concurrency : int
        Clips captioned in parallel by one :meth:`caption_clips` call.
    labels : sequence of str
        Labels offered to the models (others are accepted when snake_case).
    max_frames : int
        Images per clip (vLLM: keep within ``--limit-mm-per-prompt``).
    frame_side_px : int
        Longer side of each image sent.
    merge_tools : bool
        Offer ``get_clip_features`` to the merge model (needs tool-call support).
    min_segment_s : float
        Passed to the classical fallback.
    """

    def __init__(
        self,
        vlm: ModelClient,
        merge_llm: ModelClient,
        caption_prompt: Prompt,
        merge_prompt: Prompt,
        *,
        mode: Literal["openai", "hybrid"] = "openai",
        max_concurrency: int = 8,
        labels: Sequence[str] = CAPTION_LABELS,
        max_frames: int = 8,
        frame_side_px: int = 384,
        merge_tools: bool = True,
        min_segment_s: float = 1.0,
    ) -> None:
        self.name = mode
        self.vlm = vlm
        self.merge_llm = merge_llm
        self.caption_prompt = caption_prompt
        self.merge_prompt = merge_prompt
        self.mode = mode
        self.max_concurrency = max(1, max_concurrency)
        self.labels = tuple(labels)
        self.max_frames = max_frames
        self.frame_side_px = frame_side_px
        self.merge_tools = merge_tools
        self.classical = ClassicalBehaviorBackend(min_segment_s=min_segment_s)
        self.merge_flags: list[MergeFlag] = []
        self._features: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()

    def model_calls(self) -> dict[str, int]:
        """Model calls asked so far, by graph node (for run.json)."""
        counts = dict(self.vlm.calls_by_node)
        if self.merge_llm is not self.vlm:
            for node, count in self.merge_llm.calls_by_node.items():
                counts[node] = counts.get(node, 0) + count
        return counts

    # -- caption_clips ----------------------------------------------------------
    def caption_clips(self, requests: list[ClipRequest]) -> list[ClipCaption]:
        """One caption per request, in request order; at most ``max_concurrency`` at once."""
        with self._lock:
            self._features.update((r.clip_id, dict(r.features)) for r in requests)
        if len(requests) <= 1:
            return [self._caption_one(request) for request in requests]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._caption_one, requests))

    def _caption_one(self, request: ClipRequest) -> ClipCaption:
        images: list[bytes] = []
        times: list[float] = []
        if request.video_path is not None:
            images, times = sample_clip_frames(request.video_path, self.max_frames, self.frame_side_px)
        text = self.caption_prompt.render(**self._caption_values(request, times))
        call = CallRequest(node="caption_clips", item=f"clip={request.clip_id} animal={request.animal}",
                           prompt=self.caption_prompt, messages=[user_message(text, images)])
        outcome = self.vlm.call(call, CaptionAnswer, validate=self._caption_problem)
        if outcome.answer is None:
            fallback = self.classical.caption_clips([request])[0]
            return fallback.model_copy(update={"flagged": True, "reason": f"caption_model: {outcome.reason}"})
        answer = outcome.answer
        caption = ClipCaption(label=answer.label, description=answer.description.strip(), flagged=answer.flagged,
                              reason=answer.reason if answer.flagged else None)
        if self.mode == "hybrid":
            caption = self._keep_classical_label(request, caption)
        if request.video_path is not None and not images and not caption.flagged:
            caption = caption.model_copy(update={"flagged": True, "reason": "video_unreadable"})
        return caption

    def _keep_classical_label(self, request: ClipRequest, caption: ClipCaption) -> ClipCaption:
        classical = self.classical.caption_clips([request])[0]
        if classical.flagged or classical.label == caption.label:
            return caption  # unmeasured clips keep the model's label: it is the only one
        reason = caption.reason if caption.flagged else f"model_label: {caption.label}"
        return ClipCaption(label=classical.label, description=caption.description, flagged=True, reason=reason)

    def _caption_values(self, request: ClipRequest, times: list[float]) -> dict[str, object]:
        duration_s = (request.end_frame - request.start_frame) / request.fps
        return {
            "animal": request.animal,
            "clip_id": request.clip_id,
            "start_s": f"{request.start_frame / request.fps:.2f}",
            "end_s": f"{request.end_frame / request.fps:.2f}",
            "duration_s": f"{duration_s:.2f}",
            "n_frames": len(times),
            "frame_times": ", ".join(f"{t:.2f}" for t in times) if times else "none (no video)",
            "features": json.dumps(request.features, sort_keys=True),
            "labels": ", ".join(self.labels),
        }

    def _caption_problem(self, answer: CaptionAnswer) -> str | None:
        problem = label_problem(answer.label)
        if problem is None and not answer.description.strip():
            problem = "description is empty"
        if problem is None and answer.flagged and not _SNAKE.fullmatch(answer.reason or ""):
            problem = "a flagged answer needs a short lower snake_case reason"
        return problem

    # -- merge_segments ---------------------------------------------------------
    def merge_segments(self, request: MergeRequest) -> list[MergedSegment]:
        """Segments that tile the chunk; the classical merge (recorded in ``merge_flags``) when unsettled."""
        if self.mode == "hybrid" or not request.clips:
            return self.classical.merge_segments(request)
        spans = _unit_spans(request)
        start, end = next(iter(spans.values()))[0], request.clips[-1].end_frame
        text = self.merge_prompt.render(**self._merge_values(request, start, end))
        call = CallRequest(node="merge_segments", item=f"animal={request.animal} frames={start}-{end}",
                           prompt=self.merge_prompt, messages=[user_message(text)])
        tools = [self._features_tool()] if self.merge_tools else []
        outcome = self.merge_llm.call(call, MergeAnswer, tools=tools,
                                      validate=lambda answer: merge_problem(answer, request))
        if outcome.answer is None:
            with self._lock:
                self.merge_flags.append(MergeFlag(request.animal, start, end, f"merge_model: {outcome.reason}"))
            return self.classical.merge_segments(request)
        return [
            MergedSegment(start_frame=segment.start_frame, end_frame=segment.end_frame, label=segment.label,
                          description=segment.description.strip(), clip_ids=segment.clip_ids)
            for segment in outcome.answer.segments
        ]

    def _merge_values(self, request: MergeRequest, start: int, end: int) -> dict[str, object]:
        clip_fields = {"clip_id", "start_frame", "end_frame", "label", "description"}
        previous = request.previous
        return {
            "animal": request.animal,
            "fps": f"{request.fps:g}",
            "start_frame": start,
            "end_frame": end,
            "clips": "\n".join(json.dumps(clip.model_dump(include=clip_fields)) for clip in request.clips),
            "previous": "none" if previous is None else json.dumps(previous.model_dump()),
            "min_frames": max(1, round(self.classical.min_segment_s * request.fps)),
            "labels": ", ".join(self.labels),
        }

    def _features_tool(self) -> StructuredTool:
        def get_clip_features(clip_id: str) -> str:
            with self._lock:
                features = self._features.get(clip_id)
            if features is None:
                return f"no features are known for clip {clip_id!r}"
            return json.dumps(features, sort_keys=True)

        return StructuredTool.from_function(
            get_clip_features, name="get_clip_features", args_schema=ClipFeaturesArgs,
            description="Measured kinematics of one clip (speeds px/s, distances px, angles deg; null = not measured).",
        )
