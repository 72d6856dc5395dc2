"""Pose graph: the four stages of the method, one frame at a time, with a QC retry loop.

One invocation tracks one frame: ``detect_centroids`` -> ``locate_regions``
(Stage 1) -> ``assign_within_region`` (Stage 2) -> ``reconcile_regions``
(Stage 3) -> ``refine_cross_view`` (Stage 4) -> ``quality_control``, which
either sends the low-confidence views back through stages 1-3 with the next
strategy (at most ``max_retries`` times, a counter in state; straight to
Stage 4 when the backend says stages 1-3 would find nothing new in any of
them) or hands the frame to ``accept_frame``. The accepted frame joins the
rolling window and the invocation ends. The runner (:mod:`agent.pose_pipeline`) invokes the
graph again on the same thread for the next frame; once every frame is
tracked, the invocation goes to ``write_results`` instead. A checkpoint per
frame (LangGraph durability ``"exit"``) is what a resume continues from and
a fork (``replay --from FRAME``) starts at.

How stages 1-3 fan out follows the backend (``PoseRuntime.fan_out``):

* ``per_view`` (model backends): each camera runs stages 1-3 in its own
  subgraph (``camera_stages``: ``locate_regions`` -> one
  ``assign_within_region`` task per region -> ``reconcile_regions``), all
  cameras at once, so model calls run concurrently and a camera never waits
  for another between stages; Stage 4 waits for every camera. Payloads name
  their frame, camera and region and reference the state that rebuilds the
  requests (:class:`~graphs.pose_state.ViewTask`).
* ``per_stage`` (the classical tracker): each stage is one task for every
  camera, reading and writing the graph state.

Wiring only: nodes read state and ``runtime.context`` (a
:class:`~graphs.pose_state.PoseRuntime`), call one backend method (per
camera) or one step of :mod:`agent.pose_steps` / :mod:`tools`, and return an
update or a ``Command``. Run it with ``config={"max_concurrency": ...,
"configurable": {"thread_id": ...}}``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from agent import pose_requests as requests
from agent import pose_steps as steps
from agent.pose_context import quality_params
from agent.pose_frames import FrameRecord, flag_model_labels, model_flags, write_results_files
from agent.pose_requests import CameraRequests
from graphs.pose_state import (
    CameraStagesOutput,
    CameraStagesState,
    PoseRuntime,
    PoseState,
    ViewReferences,
    ViewTask,
)
from tools.confidence import assess_frame
from tools.geometry import project
from tools.refine import RefineParams

WINDOW_FRAMES = 3
# What a per_view payload carries by reference (camera_requests rebuilds the requests from it).
VIEW_INPUTS = ("frame", "window", "last_seen_3d", "centroids_path", "attempt", "redo")
CAMERA_STAGES = "camera_stages"


def start_or_finish(state: PoseState) -> Literal["detect_centroids", "write_results"]:
    """Track ``frame``, or write the results when no frame is left to track."""
    return "detect_centroids" if 0 <= state["frame"] < state["end_frame"] else "write_results"


def detect_centroids(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 0: detect and number the quantum-dot centroids of every camera's fluorescence frame."""
    run = runtime.context
    frame = state["frame"]
    centroids = run.detect(frame, state.get("direction", 1))
    everything = {camera: list(run.recording.keypoints) for camera in run.recording.cameras}
    return {"centroids_path": run.store.saved_centroids(frame, centroids), "attempt": 0,
            "redo": everything, "proposals": None, "boxes": None, "labels": None,
            "model_flags": None, "previous_assignment": None}


def dispatch_regions(state: PoseState, runtime: Runtime[PoseRuntime]) -> str | list[Send]:
    """Stages 1-3 for the cameras in ``redo``: one task for all (per_stage) or a subgraph per camera."""
    if runtime.context.fan_out == "per_stage":
        return "locate_regions"
    return [Send(CAMERA_STAGES, {**_references(state), "camera": camera,
                                 "model_flags_before": state.get("model_flags")})
            for camera in state["redo"]]


def _references(state: PoseState | CameraStagesState) -> ViewReferences:
    """The state fields that rebuild an attempt's requests (a ``per_view`` payload's part)."""
    references = {key: state.get(key) for key in VIEW_INPUTS}
    return {**references, "labels_before": _labels_before(state)}  # type: ignore[return-value]


def _labels_before(state: PoseState | CameraStagesState | ViewTask) -> dict | None:
    """The frame's labels before this attempt: the pose state's, or what a per_view payload carries."""
    return state["labels_before"] if "labels_before" in state else state.get("labels")


def camera_requests(state: PoseState | ViewTask, run: PoseRuntime) -> dict[str, CameraRequests]:
    """The requests of the cameras to redo in this attempt; the naive ablation sees only the last frame.

    Each camera's is built once per frame and attempt (the memo key holds
    every input that varies; a retry that leaves views out reuses the
    others'), rebuilt from the state after a resume.
    """
    naive = run.settings.ablation == "naive"
    frames = state["window"][-1:] if naive else state["window"]
    labels = _labels_before(state) or {}

    def build(camera: str, names: list[str]) -> CameraRequests:
        # The prior is the same in every attempt of the frame: projected once.
        projected = None if naive else run.memo.get(
            state["frame"], ("projected_track", tuple(frames)), lambda: project(
                run.recording.group, _predict_track(state, run, frames, with_last_seen=True)))
        return requests.camera_requests(steps.region_tasks(
            run.recording.group, run.recording.keypoints, run.regions, run.store.window(frames),
            projected, state["frame"], run.store.load_centroids(state["centroids_path"]),
            labels, {camera: names}, state.get("attempt", 0),
        ))[camera]

    # A camera's requests read only its labels' centroids (what its kept labels hold).
    return {camera: run.memo.get(state["frame"], (
        "camera_requests", tuple(frames), state["centroids_path"], state.get("attempt", 0),
        camera, tuple(names), tuple(labels.get(camera, {}).get("centroid", ()))),
        lambda camera=camera, names=names: build(camera, names))
        for camera, names in state["redo"].items()}


def _predict_track(state: PoseState | ViewTask, run: PoseRuntime, frames: list[int], *,
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


def _task_cameras(task: PoseState | ViewTask, run: PoseRuntime) -> list[str]:
    """The cameras a stage task works on: its one camera (per_view) or every camera to redo."""
    return [task["camera"]] if run.fan_out == "per_view" else list(task["redo"])


def locate_regions(task: PoseState | CameraStagesState, runtime: Runtime[PoseRuntime]
                   ) -> Command[Literal["assign_within_region"]]:
    """Stage 1: find each region's box in the task's cameras; Stage 2 per box (per_view) or all at once."""
    run = runtime.context
    views = camera_requests(task, run)
    boxes = [box for camera in _task_cameras(task, run)
             for box in requests.region_boxes(camera, run.backend.locate_regions(views[camera].locate))]
    if run.fan_out == "per_stage":
        return Command(goto="assign_within_region", update={"boxes": boxes})
    return Command(goto=[Send("assign_within_region", {**_references(task), **box}) for box in boxes])


def assign_within_region(task: PoseState | ViewTask, runtime: Runtime[PoseRuntime]
                         ) -> dict[str, Any] | Command[Literal["reconcile_regions"]]:
    """Stage 2: label the centroids inside each region's box (one box per_view, every box per_stage)."""
    run = runtime.context
    views = camera_requests(task, run)
    proposals = []
    for item in [task] if run.fan_out == "per_view" else task["boxes"] or []:
        request = requests.assign_request(views[item["camera"]], item["region"], item["box"])
        answer = run.backend.assign_within_region(request)
        if item["box_reason"] and not answer.flagged:  # the region's box was not settled
            answer = answer.model_copy(update={"flagged": True, "reason": item["box_reason"]})
        proposals.append(answer.model_dump())
    if run.fan_out == "per_view":  # the subgraph's edge leads to reconcile_regions
        return {"proposals": proposals}
    return Command(goto="reconcile_regions", update={"proposals": proposals, "boxes": None})


def reconcile_regions(task: PoseState | CameraStagesState, runtime: Runtime[PoseRuntime]
                      ) -> dict[str, Any]:
    """Stage 3: merge each camera's region labels; no centroid is claimed twice."""
    run = runtime.context
    views = camera_requests(task, run)
    previous_labels = _labels_before(task) or {}
    previous_flags = (task["model_flags_before"] if "model_flags_before" in task
                      else task.get("model_flags")) or {}
    labels, flags = {}, {}
    for camera in _task_cameras(task, run):
        proposals = [p for p in task.get("proposals") or [] if p["camera"] == camera]
        answer = run.backend.reconcile_regions(
            requests.reconcile_request(views[camera], proposals)).model_dump()
        labels[camera] = steps.merge_labels(run.recording.keypoints, previous_labels.get(camera),
                                            answer["labels"])
        flags[camera] = model_flags(previous_flags.get(camera, {}), views[camera].locate.keypoints,
                                    [*proposals, answer])
    return {"labels": labels, "model_flags": flags, "proposals": None}


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
    # A retry that changed no camera's labels asks Stage 4 the same question (one call in
    # five): within a frame the labels decide the answer.
    refined = run.memo.get(
        state["frame"], ("triangulate_labels", assignment.tobytes(), tuple(stage.ravel())),
        lambda: steps.triangulate_labels(
            run.recording.group, centroids, assignment, stage, params, prior if full else None,
            body=run.seed_distances, regions=run.region_index, mirror=run.mirror_index,
            history_3d=steps.recent_points(run.store, state["frame"],
                                           direction=state.get("direction", 1)),
            sides=run.seed_sides))
    if run.publish_labels is not None:
        run.publish_labels(state["frame"], steps.label_positions(centroids, refined["assignment"]))
    labels = {camera: steps.refined_labels(state["labels"][camera], refined["assignment"][i],
                                           refined["stage"][i]) for i, camera in enumerate(cameras)}
    return {"labels": labels, "refined": {key: np.asarray(value).tolist()
                                          for key, value in refined.items()}}


def quality_control(state: PoseState, runtime: Runtime[PoseRuntime]
                    ) -> Command[Literal["locate_regions", "camera_stages", "refine_cross_view",
                                         "accept_frame"]]:
    """Stage 5: quality control; retry doubtful views through stages 1-3 while retries last."""
    run = runtime.context
    settings, cameras = run.settings, run.recording.cameras
    refined = state["refined"]
    margins = np.array([[np.nan if m is None else m for m in state["labels"][c]["margin_px"]]
                        for c in cameras], dtype=np.float64)
    points_3d = np.array(refined["points_3d"], dtype=np.float64)
    reacquired = steps.found_again(state["lost_frames"], state["reacquired"], points_3d,
                                   settings.reacquired_lost_frames)
    # A checkpoint of an earlier version has no side_guessed in its refined labels.
    side_guessed = refined.get("side_guessed") or [False] * len(points_3d)
    side_unsure = steps.side_still_unsure(state.get("side_unsure"), side_guessed,
                                          state["lost_frames"], points_3d, run.twin_index,
                                          state.get("last_seen_3d"))
    body_deviation = body_known = reacquired_to_review = None
    body_fit = state.get("body_fit")
    if run.seed_distances is not None:  # the full pipeline checks labels against the body
        body_deviation, body_known, body_fit = steps.body_check(
            points_3d, run.region_index, run.seed_distances, body_fit, settings.max_body_deviation)
        reacquired_to_review = reacquired
    quality = assess_frame(
        points_3d, np.array(refined["ncams"]),
        np.array(refined["mean_error_px"], dtype=np.float64),
        np.array(refined["error_px"], dtype=np.float64), margins,
        _predict_track(state, run, state["window"], with_last_seen=False),
        quality_params(settings, len(cameras)),
        body_deviation, body_known, reacquired_to_review,
        side_unsure & ~steps.side_vouched(points_3d, run.seed_sides),
    )
    attempt = state.get("attempt", 0)
    # A retry that changed no label would change nothing more: accept the frame.
    changed = refined["assignment"] != state.get("previous_assignment")
    if quality.retry.any() and attempt < settings.max_retries and changed:
        redo = {camera: [k for k, r in zip(run.recording.keypoints, row, strict=True) if r]
                for camera, row in zip(cameras, quality.retry, strict=True) if row.any()}
        redo = _worth_retrying(state, run, redo, attempt + 1)
        retry_state = {**state, "redo": redo, "attempt": attempt + 1}
        # Where stages 1-3 would leave every view as it is, the retry is Stage 4's alone:
        # Stage 4 on its own refined labels may still move one (it is not idempotent).
        goto = dispatch_regions(retry_state, runtime) if redo else "refine_cross_view"
        return Command(goto=goto,  # type: ignore[arg-type]
                       update={"redo": redo, "attempt": attempt + 1,
                               "previous_assignment": refined["assignment"]})
    flagged, reason = flag_model_labels(run.recording.keypoints, quality.flagged.tolist(),
                                        quality.reason.tolist(), state.get("model_flags") or {})
    return Command(goto="accept_frame", update={
        "quality": {"flagged": flagged, "reason": reason, "score": quality.score.tolist()},
        "reacquired": reacquired.tolist(), "side_unsure": side_unsure.tolist(),
        "body_fit": body_fit})


def _worth_retrying(state: PoseState, run: PoseRuntime, redo: dict[str, list[str]],
                    attempt: int) -> dict[str, list[str]]:
    """``redo`` without the views whose stages 1-3 a retry would leave as they are.

    A view whose keypoints to redo are all unlabelled and where the backend
    says the retry's requests can label none of them (its optional
    ``finds_nothing``) would come back unchanged.
    """
    finds_nothing = getattr(run.backend, "finds_nothing", None)
    if finds_nothing is None or not redo:
        return redo
    views = camera_requests({**state, "redo": redo, "attempt": attempt}, run)
    keypoints = run.recording.keypoints
    worth = {}
    for camera, names in redo.items():
        centroid = state["labels"][camera]["centroid"]
        unlabelled = all(centroid[keypoints.index(name)] < 0 for name in names)
        if not (unlabelled and finds_nothing(views[camera].locate, views[camera].centroids)):
            worth[camera] = names
    return worth


def accept_frame(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 6: accept the frame: log it, roll the window of the last 3 accepted frames, name the next.

    Forward to the end, then backward from the first seed frame to frame 0.
    """
    run = runtime.context
    record, last_seen = steps.accept(state, run.store.load_centroids(state["centroids_path"]))
    run.store.append(record)
    direction = state.get("direction", 1)
    window, following = steps.advance([*state["window"], state["frame"]],
                                       state["frame"] + direction, run.seed_frames, direction)
    # Seed frames skipped on the way count as done: they were logged before the run started.
    update = {"frame": following, "window": window[-WINDOW_FRAMES:], "last_seen_3d": last_seen,
              "lost_frames": steps.update_lost(state["lost_frames"], record.points_3d),
              "n_done": state.get("n_done", 0) + abs(following - state["frame"]),
              "n_flagged": state.get("n_flagged", 0) + int(record.flagged.sum()),
              # The frame is in the log now: keep frame-boundary checkpoints small.
              "labels": None, "model_flags": None, "refined": {}, "quality": {}, "redo": {},
              "proposals": None, "boxes": None}
    if direction == 1 and following >= state["end_frame"]:
        # Forward tracking is done: the frames before the first seed frame are tracked backward.
        update.update(steps.backward_start(run.store, run.seed_frames,
                                           len(run.recording.keypoints),
                                           body_points=run.seed_body_points))
    return update


def write_results(state: PoseState, runtime: Runtime[PoseRuntime]) -> dict[str, Any]:
    """Stage 7: write keypoints_3d.csv, keypoints_2d.csv and qc.csv from the frame log, reviewed (:func:`reviewed_records`)."""
    run = runtime.context
    write_results_files(run.out_dir, run.recording.cameras, run.recording.keypoints,
                        reviewed_records(run), run.recording.mm_per_unit)
    return {"finished": True}


# The frame memo's slot for the results: no tracked frame has this number.
RESULTS_MEMO_FRAME = -1


def reviewed_records(run: PoseRuntime) -> list[FrameRecord]:
    """The frame log reviewed (:func:`agent.pose_steps.final_records`), computed once for the results files and run.json.

    The log only grows, so its size names its content; after a resume the
    memo is empty and the review is computed again.
    """
    size = run.store.log_path.stat().st_size if run.store.log_path.exists() else 0
    return run.memo.get(RESULTS_MEMO_FRAME, ("final_records", size), lambda: steps.final_records(
        run.store.read_all(), run.seed_frames, run.template_review, run.free_dots))


def build_camera_stages_graph() -> StateGraph:
    """Stages 1-3 of one camera (``per_view``): locate -> one assignment task per region -> reconcile."""
    builder = StateGraph(CameraStagesState, context_schema=PoseRuntime,
                         output_schema=CameraStagesOutput)
    # The nodes' annotations name the pose state; here they read the camera's.
    builder.add_node(locate_regions, input_schema=CameraStagesState)
    builder.add_node(assign_within_region, input_schema=CameraStagesState)
    builder.add_node(reconcile_regions, input_schema=CameraStagesState)
    builder.add_edge(START, "locate_regions")
    builder.add_edge("assign_within_region", "reconcile_regions")
    builder.add_edge("reconcile_regions", END)
    return builder


def build_pose_graph() -> StateGraph:
    """The uncompiled graph (compile it with a checkpointer; the camera subgraph inherits it)."""
    builder = StateGraph(PoseState, context_schema=PoseRuntime)
    builder.add_node(detect_centroids)
    builder.add_node(locate_regions)
    builder.add_node(assign_within_region)
    builder.add_node(reconcile_regions)
    # The Send payloads to the subgraph carry its own keys (camera, labels_before, ...).
    builder.add_node(CAMERA_STAGES, build_camera_stages_graph().compile(),
                     input_schema=CameraStagesState)
    builder.add_node(refine_cross_view)
    builder.add_node(quality_control)
    builder.add_node(accept_frame)
    builder.add_node(write_results)
    builder.add_conditional_edges(START, start_or_finish, ["detect_centroids", "write_results"])
    builder.add_conditional_edges("detect_centroids", dispatch_regions,
                                  ["locate_regions", CAMERA_STAGES])
    builder.add_edge("reconcile_regions", "refine_cross_view")
    builder.add_edge(CAMERA_STAGES, "refine_cross_view")
    builder.add_edge("refine_cross_view", "quality_control")
    builder.add_edge("accept_frame", END)
    builder.add_edge("write_results", END)
    return builder
