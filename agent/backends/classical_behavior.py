"""The ``classical`` behavior backend: rule-based captions and merging, no model.

A real algorithm, not a stand-in: labels come from the clip's kinematic
summary by the decision list of :mod:`tools.behavior_rules`, descriptions
are templated numbers, and merging (:mod:`tools.segment_merge`) joins neighbours with the same label
after absorbing very short clips. This module only adapts those functions
to :class:`~agent.backends.behavior_base.BehaviorBackend`.
"""

from __future__ import annotations

from agent.backends.behavior_base import ClipCaption, ClipRequest, MergedSegment, MergeRequest
from tools.behavior_rules import CaptionThresholds, caption_from_summary
from tools.segment_merge import CaptionedClip as RuleClip
from tools.segment_merge import SegmentSpan, merge_clips


class ClassicalBehaviorBackend:
    """Captions from kinematics, merging by label.

    Parameters
    ----------
    thresholds : CaptionThresholds, optional
        Decision thresholds (pixels for a 46 px mouse, scaled by body length).
    min_segment_s : float
        Clips shorter than this take a neighbour's label before merging.
    """

    name = "classical"

    def __init__(self, thresholds: CaptionThresholds | None = None, min_segment_s: float = 1.0) -> None:
        self.thresholds = thresholds or CaptionThresholds()
        self.min_segment_s = min_segment_s

    def caption_clips(self, requests: list[ClipRequest]) -> list[ClipCaption]:
        captions = []
        for request in requests:
            if request.features.get("speed_px_s") is None:
                captions.append(ClipCaption(label="unknown", description="the animal was not measured in this clip",
                                            flagged=True, reason="no_measurements"))
                continue
            label, description = caption_from_summary(request.features, self.thresholds)
            captions.append(ClipCaption(label=label, description=description))
        return captions

    def merge_segments(self, request: MergeRequest) -> list[MergedSegment]:
        clips = [RuleClip(c.clip_id, c.start_frame, c.end_frame, c.label, c.description) for c in request.clips]
        previous = None
        if request.previous is not None:
            p = request.previous
            previous = SegmentSpan(p.start_frame, p.end_frame, p.label, p.description, tuple(p.clip_ids),
                                   (p.description,))
        min_frames = max(1, round(self.min_segment_s * request.fps))
        spans = merge_clips(clips, request.fps, min_frames, previous)
        return [
            MergedSegment(start_frame=s.start_frame, end_frame=s.end_frame, label=s.label,
                          description=s.description, clip_ids=list(s.clip_ids))
            for s in spans
        ]
