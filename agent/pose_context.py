"""Run configuration of the pose pipeline (``python -m agent.run pose``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from agent.config import CommonContext
from tools.camera import pixels_per_unit
from tools.confidence import QualityParams
from tools.geometry import triangulate

if TYPE_CHECKING:
    from agent.recording import Recording

# QC thresholds default to the QC tool's own, so the two cannot drift apart.
_QC = QualityParams()


def _doc(description: str) -> dict[str, str]:
    return {"description": description}


@dataclass(frozen=True, kw_only=True)
class PoseContext(CommonContext):
    """Settings of one pose run; nodes read them as ``runtime.context.settings``."""

    ablation: Literal["full", "no-refine", "naive"] = field(
        default="full",
        metadata=_doc("full: all four stages; no-refine: skip Stage 4 (plain DLT of the "
                      "assignments); naive: no regions and no Stage 4, every keypoint assigned "
                      "at once from the last accepted frame"),
    )
    gate_px: float = field(
        default=12.0, metadata=_doc("largest prediction-to-centroid distance of a first try, pixels, "
                                    "where gate_mm at the animal's image scale is less")
    )
    gate_mm: float = field(
        default=5.5, metadata=_doc("largest prediction-to-centroid distance of a first try, "
                                   "millimetres at the animal, where that is more than gate_px "
                                   "(a rig that shows the animal larger)")
    )
    max_retries: int = field(
        default=2, metadata=_doc("retries of stages 1-3 for low-confidence views of one frame")
    )
    max_error_px: float = field(
        default=_QC.max_error_px, metadata=_doc("QC: largest mean reprojection error of an accepted keypoint")
    )
    max_view_error_px: float = field(
        default=_QC.max_view_error_px, metadata=_doc("QC: largest reprojection error of one labelled view")
    )
    qc_min_cameras: int = field(
        default=_QC.min_cameras, metadata=_doc("QC: fewest agreeing cameras of an accepted keypoint")
    )
    review_min_cameras: int | None = field(
        default=None, metadata=_doc("QC: fewest agreeing cameras of a label that needs no review "
                                    "(flagged, not retried); default: more than half the rig's "
                                    "cameras and at least 4 (all of a smaller rig), never below "
                                    "qc_min_cameras")
    )
    max_body_deviation: float = field(
        default=_QC.max_body_deviation, metadata=_doc("QC: flag a label (for review) whose distances to the other "
                                   "regions' keypoints are off the seed frames' by more than this "
                                   "many tolerances on average (full pipeline only)")
    )
    confirm_body_deviation: float = field(
        default=_QC.confirm_body_deviation, metadata=_doc("QC: a triangulated label that few cameras confirm needs no "
                                   "review when its body deviation is under this (it is still "
                                   "retried)")
    )
    reacquired_lost_frames: int = field(
        # 2: over 12 real-motion recordings a keypoint found again after 2 or more
        # lost frames was on another keypoint's dot about 3 times in 4 (bench/results/pose.md).
        default=2, metadata=_doc("QC: a keypoint found again after this many frames without a 3D "
                                  "point is flagged 'reacquired' until the body vouches for it "
                                  "(full pipeline only)")
    )
    min_margin_px: float = field(
        default=_QC.min_margin_px, metadata=_doc("QC: smallest assignment margin (cost gap to second best)")
    )
    max_jump_mm: float = field(
        default=_QC.max_jump_mm, metadata=_doc("QC: largest distance of a 3D point from its motion prediction")
    )
    inlier_threshold_px: float = field(
        default=8.0, metadata=_doc("Stage 4: a view agrees with a 3D point within this error")
    )
    max_frames: int | None = field(
        default=None, metadata=_doc("process only the first N frames of the recording")
    )

    _AT_LEAST = {**CommonContext._AT_LEAST, "max_retries": 0, "max_frames": 1, "qc_min_cameras": 2,
                 "review_min_cameras": 2, "reacquired_lost_frames": 1, "min_margin_px": 0.0,
                 "gate_px": 0.0, "gate_mm": 0.0}
    _MORE_THAN = {**CommonContext._MORE_THAN, "max_error_px": 0.0,
                  "max_view_error_px": 0.0, "max_body_deviation": 0.0, "confirm_body_deviation": 0.0,
                  "max_jump_mm": 0.0, "inlier_threshold_px": 0.0}


def review_min_cameras(ctx: PoseContext, n_cameras: int) -> int:
    """The ``review_min_cameras`` setting, or more than half of ``n_cameras``, at least 4 (all of a smaller rig).

    Never below ``qc_min_cameras``. Three agreeing views of a 4-camera rig
    leave one view to contradict a wrong label; on the benchmark's 4-camera
    recordings a fifth of such labels were wrong (bench/results/pose.md).
    """
    if ctx.review_min_cameras is not None:
        return ctx.review_min_cameras
    return max(ctx.qc_min_cameras, min(n_cameras, max(4, n_cameras // 2 + 1)))


def quality_params(ctx: PoseContext, n_cameras: int) -> QualityParams:
    """Quality control's thresholds from the run's settings (:func:`tools.confidence.assess_frame`)."""
    return QualityParams(max_error_px=ctx.max_error_px, max_view_error_px=ctx.max_view_error_px,
                         min_cameras=ctx.qc_min_cameras, min_margin_px=ctx.min_margin_px,
                         review_min_cameras=review_min_cameras(ctx, n_cameras),
                         max_jump_mm=ctx.max_jump_mm, max_body_deviation=ctx.max_body_deviation,
                         confirm_body_deviation=ctx.confirm_body_deviation)


def tracker_gate_px(ctx: PoseContext, recording: Recording) -> float:
    """The tracker's first-try gate for ``recording``, pixels: ``ctx.gate_px``, or ``ctx.gate_mm`` where that is more.

    ``gate_mm`` is converted with the animal's image scale: the median over
    cameras of each camera's pixels per mm at the seed frames' triangulated
    labels (:func:`tools.camera.pixels_per_unit`; the recording's rig is in
    mm). A keypoint moves as many millimetres between frames whatever the
    resolution, so a rig that shows the animal larger needs a wider gate in
    pixels; below ``gate_px`` the spots' own jitter and blur (pixels) set it.
    The defaults take ``gate_px`` on every benchmark recording (1.5-2.1 px per
    mm) and about 24 px at twice their resolution (bench/results/pose-conditions.md).
    """
    seeds = recording.seeds.points_2d  # (frames, cameras, keypoints, 2)
    by_camera = np.swapaxes(seeds, 0, 1).reshape(seeds.shape[1], -1, 2)
    scale = pixels_per_unit(recording.group, triangulate(recording.group, by_camera))
    scale = scale[np.isfinite(scale)]
    return max(ctx.gate_px, ctx.gate_mm * float(np.median(scale))) if scale.size else ctx.gate_px
