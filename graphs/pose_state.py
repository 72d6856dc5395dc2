"""What flows through the pose graph: small lists and paths, never frames or arrays.

Arrays of the current frame (centroids) and of finished frames live in the
run's cache directory (:class:`agent.pose_frames.FrameStore`) and are
referenced by path. Lists below are indexed camera first, then keypoint, in
manifest order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, TypedDict

import numpy as np

from agent.backends.pose_base import PoseBackend
from agent.pose_context import PoseContext
from agent.pose_frames import FrameMemo, FrameStore
from agent.pose_steps import FreeDotSearch, TemplateReview, region_indices
from agent.recording import Recording
from tools.body_distances import DistanceModel
from tools.body_side import SideModel
from tools.keypoint_names import mirror_groups, twin_indices

FanOut = Literal["per_view", "per_stage"]


def extend_or_clear(current: list[dict] | None, update: list[dict] | None) -> list[dict]:
    """Reducer of parallel Stage 2 answers: ``None`` clears, a list extends."""
    if update is None:
        return []
    return [*(current or []), *update]


def merge_by_camera(current: dict[str, Any] | None, update: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of per-camera entries (parallel Stage 3 answers): ``None`` clears, a dict merges."""
    if update is None:
        return {}
    return {**(current or {}), **update}


class PoseState(TypedDict, total=False):
    """State of one pose run (one checkpointer thread)."""

    frame: int  # frame being tracked
    end_frame: int  # exclusive
    direction: int  # 1 forward from the first seed frame, then -1 back from it to frame 0
    window: list[int]  # the last accepted frames in tracking order (at most 3); labels in the frame log
    last_seen_3d: list[list[float]]  # (n_keypoints, 3) last triangulated point, NaN if never
    lost_frames: list[int]  # per keypoint, accepted frames in a row without a 3D point
    reacquired: list[bool]  # per keypoint, triangulated in every frame since it was found again
    side_unsure: list[bool]  # per keypoint, its left/right pair's sides a guess (steps.side_still_unsure)
    body_fit: list[list[int]] | None  # (2, n_keypoints) frames the body judged, and over its limit (steps.body_check)
    centroids_path: str  # this frame's centroids (FrameStore.saved_centroids)
    attempt: int  # retries of stages 1-3 done for this frame
    redo: dict[str, list[str]]  # camera -> keypoints stages 1-3 (re)assign in this attempt
    boxes: list[dict[str, Any]] | None  # per_stage: Stage 1 boxes (camera, region, box, box_reason)
    proposals: Annotated[list[dict], extend_or_clear]  # Stage 2 answers (RegionAssignment dumps)
    labels: Annotated[dict[str, dict[str, list[Any]]], merge_by_camera]  # camera -> {"centroid",
    # "margin_px", "stage"} per keypoint
    model_flags: Annotated[dict[str, dict[str, str]], merge_by_camera]  # camera -> {keypoint: reason}
    # of labels whose model answer stayed invalid
    refined: dict[str, list[Any]]  # Stage 4 output of this frame (triangulate_labels, as lists)
    previous_assignment: list[list[int]] | None  # Stage 4 assignment before this retry
    quality: dict[str, list[Any]]  # quality_control's flagged, reason, score per keypoint
    n_done: int  # frames accepted so far (seed frames included)
    n_flagged: int  # flagged keypoint-frames so far
    finished: bool  # the results are written


class ViewReferences(TypedDict, total=False):
    """What rebuilds one camera's requests of an attempt, by reference.

    The view, exemplars and centroids are rebuilt from the frame log and the
    centroid file these fields name (:func:`graphs.pose.camera_requests`),
    so a ``per_view`` payload stays a few hundred bytes in the checkpoint database.
    """

    frame: int  # frame, camera and region name the task in the trace
    camera: str
    window: list[int]
    last_seen_3d: list[list[float]]
    centroids_path: str
    attempt: int
    redo: dict[str, list[str]]
    labels_before: dict[str, dict[str, list[Any]]] | None  # the frame's labels before the attempt


class CameraStagesState(ViewReferences, total=False):
    """State of one camera's stages 1-3 (``per_view``): its requests' references and its answers.

    The frame's model flags before this attempt come in as
    ``model_flags_before``; ``labels`` and ``model_flags`` hold only this
    camera's new entries, which the subgraph returns to the pose graph
    (:class:`CameraStagesOutput`).
    """

    model_flags_before: dict[str, dict[str, str]] | None
    proposals: Annotated[list[dict], extend_or_clear]
    labels: Annotated[dict[str, dict[str, list[Any]]], merge_by_camera]
    model_flags: Annotated[dict[str, dict[str, str]], merge_by_camera]


class CameraStagesOutput(TypedDict, total=False):
    """What one camera's stages 1-3 hand back to the pose graph."""

    labels: Annotated[dict[str, dict[str, list[Any]]], merge_by_camera]
    model_flags: Annotated[dict[str, dict[str, str]], merge_by_camera]


class ViewTask(ViewReferences, total=False):
    """Payload of one ``per_view`` Stage 2 task: the camera's references and its region's box."""

    region: str  # Stage 2: the region, its Stage 1 box and the reason of a flagged box
    box: list[int] | None
    box_reason: str


@dataclass(frozen=True)
class PoseRuntime:
    """The graph's runtime context: settings plus the run's open resources (not checkpointed).

    Attributes
    ----------
    settings : PoseContext
        The run's configuration.
    recording : Recording
        The open recording.
    backend : PoseBackend
        Perception for stages 1-3.
    store : FrameStore
        Centroid files and the frame log.
    out_dir : str
        Where ``write_results`` writes.
    regions : dict[str, list[str]]
        Regions used by Stage 1 (one region of every keypoint in the naive ablation).
    seed_frames : frozenset[int]
        Frames labelled in seeds.csv: logged before tracking, they join the window when reached.
    detect : callable
        ``detect(frame)``: one ``(n_c, 2)`` array of centroids per camera, saved
        in ``store.centroids_dir`` (:meth:`agent.pose_frames.CentroidPrefetch.get`).
    publish_labels : callable, optional
        Called after Stage 4 with ``(frame, points_2d (n_cameras, n_keypoints, 2))``, the
        frame's label positions (NaN unlabelled), so a model's Stage 3 tools check its
        candidates against the other cameras (:class:`agent.backends.pose_tools.LatestLabels`).
    fan_out : {"per_view", "per_stage"}
        How stages 1-3 fan out: one task per camera (and region, Stage 2) so
        that model calls run concurrently, or one task per stage for every
        camera (an in-process backend, which gains nothing from more tasks).
    seed_distances : DistanceModel, optional
        Distances between keypoints in the seed frames, for Stage 4's identity
        check (:func:`tools.body_distances.region_relabeling`); None outside the
        full pipeline.
    seed_sides : SideModel, optional
        Which twin of each left/right pair the seed frames show on which side of
        the body, for Stage 4's side check (:func:`tools.body_side.order_by_side`);
        None outside the full pipeline or where the seeds order no pair.
    template_review : TemplateReview, optional
        Each keypoint's place along and above the back in the seed frames (the
        results' review then takes them from the labels QC trusts), and the body
        check, for the results' template check
        (:func:`agent.pose_steps.relabel_by_template`); None outside the full
        pipeline or without a side model.
    seed_body_points : dict[int, np.ndarray], optional
        Each seed frame's ``(K, 3)`` points with the keypoints no seed frame
        triangulates placed from their one view: a midline keypoint on the
        body's midplane (:func:`agent.pose_steps.midline_from_one_view`), a
        twin at its twin's height (:func:`agent.pose_steps.twins_at_twin_height`):
        where such a keypoint's track starts (:func:`agent.pose_steps.pass_start`).
        None outside the full pipeline.
    free_dots : FreeDotSearch, optional
        The cameras, the run's centroid files and quality control's thresholds,
        for the results' search of lost keypoints among the dots no label holds
        (:func:`agent.pose_steps.found_in_free_dots`); None where
        ``template_review`` is.
    memo : FrameMemo
        The current frame's motion prediction and Stage 1 views, computed once per
        frame; at the end, the reviewed records (:func:`graphs.pose.reviewed_records`).
    """

    settings: PoseContext
    recording: Recording
    backend: PoseBackend
    store: FrameStore
    out_dir: str
    regions: dict[str, list[str]]
    seed_frames: frozenset[int]
    detect: Callable[[int, int], list[np.ndarray]]
    publish_labels: Callable[[int, np.ndarray], None] | None = None
    fan_out: FanOut = "per_view"
    seed_distances: DistanceModel | None = None
    seed_sides: SideModel | None = None
    template_review: TemplateReview | None = None
    seed_body_points: dict[int, np.ndarray] | None = None
    free_dots: FreeDotSearch | None = None
    memo: FrameMemo = field(default_factory=FrameMemo)

    @cached_property
    def region_index(self) -> list[list[int]]:
        """Keypoint indices of each of the recording's regions (the body checks'), computed once."""
        return region_indices(self.recording.keypoints, self.recording.regions)

    @cached_property
    def mirror_index(self) -> np.ndarray:
        """Left/right pairs among the keypoints (:func:`tools.keypoint_names.mirror_groups`), computed once."""
        return mirror_groups(self.recording.keypoints)

    @cached_property
    def twin_index(self) -> np.ndarray:
        """Each keypoint's left/right twin, itself where none (:func:`tools.keypoint_names.twin_indices`)."""
        return twin_indices(self.mirror_index)
