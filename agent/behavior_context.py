"""Run configuration of the behavior pipeline (``python -m agent.run behavior``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.config import CommonContext
from tools.dec import DecParams


def _doc(description: str) -> dict[str, str]:
    return {"description": description}


@dataclass(frozen=True, kw_only=True)
class BehaviorContext(CommonContext):
    """Settings of one behavior run; nodes read them as ``runtime.context``."""

    features: Literal["auto", "keypoint", "visual", "fused"] = field(
        default="auto",
        metadata=_doc("features to cluster: auto = the session's features.npy, else fused with "
                      "keypoints, else visual"),
    )
    n_clusters: int = field(default=10, metadata=_doc("DEC clusters (K)"))
    dec_pretrain_iters: int = field(
        default=DecParams().pretrain_iters, metadata=_doc("DEC autoencoder pretraining iterations")
    )
    dec_finetune_iters: int = field(
        default=DecParams().finetune_iters, metadata=_doc("DEC self-training iterations")
    )
    smooth_min_run_s: float = field(default=0.3, metadata=_doc("cluster runs shorter than this are flicker"))
    min_clip_s: float = field(
        default=0.5, metadata=_doc("shortest clip, seconds (over-segment: merging joins short clips)")
    )
    max_clip_s: float = field(
        default=2.0, metadata=_doc("longest clip, seconds; longer runs split where the state changes most")
    )
    fps_out: float = field(default=10.0, metadata=_doc("frame rate of the clip videos"))
    clip_videos: bool = field(default=True, metadata=_doc("cut one short video per clip under clips/"))
    min_segment_s: float = field(default=1.0, metadata=_doc("clips shorter than this join a neighbour"))
    merge_chunk_clips: int = field(default=100, metadata=_doc("clips per merge request (long sessions)"))

    _AT_LEAST = {**CommonContext._AT_LEAST, "merge_chunk_clips": 1}
    _MORE_THAN = {**CommonContext._MORE_THAN, "fps_out": 0.0, "min_clip_s": 0.0, "max_clip_s": 0.0}
