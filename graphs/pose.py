"""Pose graph: the four stages of the method, one frame at a time, with a QC retry loop.

Per frame: ``detect_centroids`` -> ``locate_regions`` (Stage 1, one task per
camera) -> ``assign_within_region`` (Stage 2, one task per camera and region)
-> ``gather_regions`` -> ``reconcile_regions`` (Stage 3, one task per camera)
-> ``refine_cross_view`` (Stage 4) ->
``quality_control``, which either sends the low-confidence views back
through stages 1-3 with the next strategy (at most ``max_retries`` times, a
counter in state) or hands the frame to ``accept_frame``. The accepted frame
joins the rolling window; then the next frame, or ``write_results``.

Wiring only: nodes read state and ``runtime.context`` (a
:class:`~graphs.pose_state.PoseRuntime`), call one backend method or one step
of :mod:`agent.pose_steps` / :mod:`tools`, and return an update or a
``Command``. Run it with ``config={"max_concurrency": ..., "configurable":
{"thread_id": ...}}``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from agent import pose_steps as steps
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    LocateRegionsRequest,
    ReconcileRegionsRequest,
)
from agent.pose_frames import flag_model_labels, model_flags, write_results_files
from graphs.pose_state import (
    AssignTask,
    PoseRuntime,
    PoseState,
    ReconcileTask,
    RegionTask,
)
from tools.confidence import QualityParams, assess_frame
from tools.refine import RefineParams

WINDOW_FRAMES = 3


def start_or_finish(state: PoseState) -> Literal["detect_centroids", "write_results"]:
    """Track from ``frame`` on, or only write results when every frame is a seed frame."""
    return "detect_centroids" if state["frame"] < state["end_frame"] else "write_results"


def detect_centroids(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 0: detect and number the quantum-dot centroids of every camera's fluorescence frame."""
    run = runtime.context
    frame = state["frame"]
    centroids = run.detect(frame)
    everything = {camera: list(run.recording.keypoints) for camera in run.recording.cameras}
    return {"centroids_path": run.store.save_centroids(frame, centroids), "attempt": 0,
            "redo": everything, "proposals": None, "labels": None, "model_flags": None,
            "previous_assignment": None}


def dispatch_regions(state: PoseState, runtime: Runtime[PoseRuntime]) -> list[Send]:
    """One Stage 1 task per camera whose views are to be (re)assigned."""
    # frame and camera at the top of the payload name the task's item in the trace (trace --frame).
    return [Send("locate_regions", {"frame": state["frame"], "camera": task["view"]["camera"], **task})
            for task in _region_tasks(state, runtime.context)]


def _region_tasks(state: PoseState, run: PoseRuntime) -> list[dict[str, Any]]:
    """Views of the cameras to redo; the naive ablation sees only the last frame, no 3D prior.

    Stage 1's dispatch and Stage 3's of the same attempt see the same state,
    so the views are built once (the memo key holds every input that varies).
    """
    naive = run.settings.ablation == "naive"
    frames = state["window"][-1:] if naive else state["window"]
    key = ("region_tasks", tuple(frames), state["centroids_path"], state.get("attempt", 0),
           repr(state["redo"]), repr(state.get("labels", {})))

    def build() -> list[dict[str, Any]]:
        prior = None if naive else _predict_track(state, run, frames, with_last_seen=True)
        return steps.region_tasks(
            run.recording.group, run.recording.keypoints, run.regions, run.store.window(frames),
            prior, state["frame"], run.store.load_centroids(state["centroids_path"]),
            state.get("labels", {}), state["redo"], state.get("attempt", 0),
        )

    return run.memo.get(state["frame"], key, build)


def _predict_track(state: PoseState, run: PoseRuntime, frames: list[int], *,
                   with_last_seen: bool) -> np.ndarray:
    """:func:`agent.pose_steps.predict_track` of the window ``frames``, once per frame (a copy).

    ``last_seen_3d`` changes only when a frame is accepted, so within a frame
    the window and whether it is used determine the prediction.
    """
    last_seen = state["last_seen_3d"] if with_last_seen else None
    predicted = run.memo.get(
        state["frame"], ("predict_track", tuple(frames), with_last_seen),
        lambda: steps.predict_track(run.store.window(frames), last_seen, state["frame"]))
    return predicted.copy()


def locate_regions(task: RegionTask, runtime: Runtime[PoseRuntime]) -> Command:
    """Stage 1: find each region's box in one camera; fan out one Stage 2 task per region."""
    request = LocateRegionsRequest.model_validate({**task["view"], "regions": task["regions"]})
    answer = runtime.context.backend.locate_regions(request)
    sends = []
    for region in answer.regions:
        # Plain fields of already validated models: assign_within_region validates the request.
        assign = {**request.subset(task["regions"][region.region]).model_dump(exclude={"regions"}),
                  "region": region.region, "box": region.box, "centroids": task["centroids"]}
        sends.append(Send("assign_within_region", {
            "frame": task["frame"], "camera": task["camera"], "region": region.region,
            "request": assign, "box_reason": region.reason if region.flagged else ""}))
    return Command(goto=sends)


def assign_within_region(task: AssignTask, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 2: label the centroids inside one region's box of one camera."""
    request = AssignWithinRegionRequest.model_validate(task["request"])
    answer = runtime.context.backend.assign_within_region(request)
    if task.get("box_reason") and not answer.flagged:  # the region's box was not settled
        answer = answer.model_copy(update={"flagged": True, "reason": task["box_reason"]})
    return {"proposals": [answer.model_dump()]}


def gather_regions(state: PoseState) -> dict[str, Any]:
    """Stage 2 -> 3: wait for every region's answer (the per-camera fan-out is its edge)."""
    return {}


def dispatch_reconcile(state: PoseState, runtime: Runtime[PoseRuntime]) -> list[Send]:
    """One Stage 3 task per camera whose views are being (re)assigned, with its Stage 2 answers."""
    labels, flags = state.get("labels") or {}, state.get("model_flags") or {}
    proposals = state.get("proposals") or []
    return [Send("reconcile_regions", {
        "frame": state["frame"], "camera": task["view"]["camera"], "view": task["view"],
        "centroids": task["centroids"], "labels": labels.get(task["view"]["camera"]),
        "model_flags": flags.get(task["view"]["camera"], {}),
        "proposals": [p for p in proposals if p["camera"] == task["view"]["camera"]],
    }) for task in _region_tasks(state, runtime.context)]


def reconcile_regions(task: ReconcileTask, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 3: merge one camera's region labels; no centroid is claimed twice."""
    run = runtime.context
    request = ReconcileRegionsRequest.model_validate(
        {**task["view"], "centroids": task["centroids"], "proposals": task["proposals"]})
    answer = run.backend.reconcile_regions(request)
    labels = steps.merge_labels(run.recording.keypoints, task["labels"],
                                [label.model_dump() for label in answer.labels])
    answers = [*task["proposals"], answer.model_dump()]
    flags = model_flags(task["model_flags"], task["view"]["keypoints"], answers)
    return {"labels": {task["camera"]: labels}, "model_flags": {task["camera"]: flags},
            "proposals": None}


def refine_cross_view(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 4: consensus triangulation and cross-view correction (plain DLT in the ablations)."""
    run = runtime.context
    cameras = run.recording.cameras
    assignment = np.array([state["labels"][camera]["centroid"] for camera in cameras])
    stage = np.array([state["labels"][camera]["stage"] for camera in cameras], dtype=object)
    full = run.settings.ablation == "full"
    params = RefineParams(inlier_threshold_px=run.settings.inlier_threshold_px) if full else None
    prior = steps.fill_from_regions(
        _predict_track(state, run, state["window"], with_last_seen=True),
        run.recording.keypoints, run.recording.regions)
    centroids = run.store.load_centroids(state["centroids_path"])
    refined = steps.triangulate_labels(run.recording.group, centroids, assignment, stage, params,
                                        prior if full else None)
    if run.publish_labels is not None:
        run.publish_labels(state["frame"], steps.label_positions(centroids, refined["assignment"]))
    labels = {camera: steps.refined_labels(state["labels"][camera], refined["assignment"][i],
                                           refined["stage"][i]) for i, camera in enumerate(cameras)}
    return {"labels": labels, "refined": {key: np.asarray(value).tolist()
                                          for key, value in refined.items()}}


def quality_control(state: PoseState, runtime: Runtime[PoseRuntime]
                    ) -> Command[Literal["locate_regions", "accept_frame"]]:
    """Stage 5: quality control; retry doubtful views through stages 1-3 while retries last."""
    run = runtime.context
    settings, cameras = run.settings, run.recording.cameras
    refined = state["refined"]
    margins = np.array([[np.nan if m is None else m for m in state["labels"][c]["margin_px"]]
                        for c in cameras], dtype=np.float64)
    quality = assess_frame(
        np.array(refined["points_3d"]), np.array(refined["ncams"]),
        np.array(refined["mean_error_px"], dtype=np.float64),
        np.array(refined["error_px"], dtype=np.float64), margins,
        _predict_track(state, run, state["window"], with_last_seen=False),
        QualityParams(max_error_px=settings.max_error_px,
                      max_view_error_px=settings.max_view_error_px,
                      min_cameras=settings.qc_min_cameras, min_margin_px=settings.min_margin_px,
                      max_jump_mm=settings.max_jump_mm),
    )
    attempt = state.get("attempt", 0)
    # A retry that changed no label would change nothing more: accept the frame.
    changed = refined["assignment"] != state.get("previous_assignment")
    if quality.retry.any() and attempt < settings.max_retries and changed:
        redo = {camera: [k for k, r in zip(run.recording.keypoints, row, strict=True) if r]
                for camera, row in zip(cameras, quality.retry, strict=True) if row.any()}
        retry_state = {**state, "redo": redo, "attempt": attempt + 1}
        return Command(goto=dispatch_regions(retry_state, runtime),  # type: ignore[arg-type]
                       update={"redo": redo, "attempt": attempt + 1,
                               "previous_assignment": refined["assignment"]})
    flagged, reason = flag_model_labels(run.recording.keypoints, quality.flagged.tolist(),
                                        quality.reason.tolist(), state.get("model_flags") or {})
    return Command(goto="accept_frame", update={"quality": {
        "flagged": flagged, "reason": reason, "score": quality.score.tolist()}})


def accept_frame(state: PoseState, runtime: Runtime[PoseRuntime]
                 ) -> Command[Literal["detect_centroids", "write_results"]]:
    """Stage 6: accept the frame: log it, roll the window of the last 3 accepted frames, go on."""
    run = runtime.context
    record, last_seen = steps.accept(state, run.store.load_centroids(state["centroids_path"]))
    run.store.append(record)
    window, following = steps.advance([*state["window"], state["frame"]], state["frame"] + 1,
                                       run.seed_frames)
    # Seed frames skipped on the way count as done: they were logged before the run started.
    update = {"frame": following, "window": window[-WINDOW_FRAMES:], "last_seen_3d": last_seen,
              "n_done": state.get("n_done", 0) + following - state["frame"],
              "n_flagged": state.get("n_flagged", 0) + int(record.flagged.sum()),
              # The frame is in the log now: keep frame-boundary checkpoints small.
              "labels": None, "model_flags": None, "refined": {}, "quality": {}, "redo": {},
              "proposals": None}
    goto = "detect_centroids" if following < state["end_frame"] else "write_results"
    return Command(goto=goto, update=update)


def write_results(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 7: write keypoints_3d.csv, keypoints_2d.csv and qc.csv from the frame log."""
    run = runtime.context
    write_results_files(run.out_dir, run.recording.cameras, run.recording.keypoints,
                               run.store.read_all())
    return {}


def build_pose_graph() -> StateGraph:
    """The uncompiled graph (compile it with a checkpointer)."""
    builder = StateGraph(PoseState, context_schema=PoseRuntime)
    builder.add_node(detect_centroids)
    builder.add_node(locate_regions)
    builder.add_node(assign_within_region)
    builder.add_node(gather_regions)
    builder.add_node(reconcile_regions)
    builder.add_node(refine_cross_view)
    builder.add_node(quality_control)
    builder.add_node(accept_frame)
    builder.add_node(write_results)
    builder.add_conditional_edges(START, start_or_finish, ["detect_centroids", "write_results"])
    builder.add_conditional_edges("detect_centroids", dispatch_regions, ["locate_regions"])
    builder.add_edge("assign_within_region", "gather_regions")
    builder.add_conditional_edges("gather_regions", dispatch_reconcile, ["reconcile_regions"])
    builder.add_edge("reconcile_regions", "refine_cross_view")
    builder.add_edge("refine_cross_view", "quality_control")
    builder.add_edge("write_results", END)
    return builder
