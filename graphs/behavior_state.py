"""What flows through the behavior graph: paths, ids and small summaries, never arrays."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class BehaviorInput(TypedDict):
    """What a run starts from."""

    session_dir: str
    run_dir: str
    cache_dir: str


class BehaviorState(BehaviorInput, total=False):
    """Full state. Lists that parallel tasks append to have reducers.

    Attributes
    ----------
    session : dict
        ``animals``, ``fps``, ``n_frames``, ``video_path`` of the session.
    features : dict
        Features mode, paths of ``features.npz`` / ``kinematics.npz`` in the cache.
    dec : dict
        Path of ``dec.npz`` (labels, soft assignments) and cluster counts.
    clips : list of dict
        One :class:`~agent.backends.behavior_base.ClipRequest` per clip.
    captions : list of dict
        ``clip_id`` plus :class:`~agent.backends.behavior_base.ClipCaption` fields, appended per clip.
    segments : list of dict
        ``animal`` plus :class:`~agent.backends.behavior_base.MergedSegment` fields.
    merge_flags : list of dict
        Chunks whose model merge fell back to the classical one (animal, frames, reason).
    outputs : dict
        Paths of the written result files.
    """

    session: dict[str, Any]
    features: dict[str, Any]
    dec: dict[str, Any]
    clips: list[dict[str, Any]]
    captions: Annotated[list[dict[str, Any]], operator.add]
    segments: list[dict[str, Any]]
    merge_flags: list[dict[str, Any]]
    outputs: dict[str, str]


class CaptionTask(TypedDict):
    """Payload of one ``caption_clips`` task (a Send per clip)."""

    clip_id: str
    animal: str
    clip: dict[str, Any]
    run_dir: str
