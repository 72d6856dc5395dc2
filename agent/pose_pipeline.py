"""Run the pose graph on a recording: run directory, checkpointer, seeds, progress, results.

:func:`run_pose` owns the output directory (:func:`agent.rundir.prepare_run_dir`),
checkpoints the graph in ``.bvlm/checkpoints.sqlite`` (one thread per run,
its id in ``.bvlm/meta.json``) and continues a killed run with ``resume``:
finished frames are in the frame log and the checkpoint, so nothing is redone
but the frame in flight, and the results are byte-identical to an
uninterrupted run. ``run.json`` is written last, atomically.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langgraph.checkpoint.sqlite import SqliteSaver

from agent import pose_steps as steps
from agent.atomic import write_json_atomic
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.backends.pose_base import PoseBackend
from agent.backends.pose_tools import LatestLabels
from agent.config import context_to_dict, resumed_context
from agent.errors import InputError
from agent.pose_context import PoseContext, quality_params, tracker_gate_px
from agent.pose_frames import CentroidPrefetch, FrameRecord, FrameStore, padded_records
from agent.recording import Recording, load_recording
from agent.rundir import (
    RunDir,
    input_fingerprint,
    open_checkpoints,
    package_versions,
    prepare_run_dir,
)
from agent.trace_log import TraceRecorder
from graphs.pose import build_pose_graph, reviewed_records
from graphs.pose_state import FanOut, PoseRuntime, PoseState
from tools.centroids import detect_centroids
from tools.pose_metrics import evaluate_pose

if TYPE_CHECKING:  # the factory is imported when a model backend is asked for
    from agent.backends.factory_pose import AnswerSource

# From this many frames on, centroids are detected in a child process (its start costs ~1 s).
PROCESS_PREFETCH_FRAMES = 150
RECURSION_LIMIT = 10**6  # an invocation is one frame, bounded by the retries, never by this
# One checkpoint per frame, when its invocation ends: writing one per superstep (a dozen per
# frame, "sync") cost ~13% of the main process's time for checkpoints a resume never needs
# (bench/results/pose-speed.md).
DURABILITY = "exit"


@dataclass(frozen=True)
class PoseRunSummary:
    """What one run did, as printed and stored in run.json."""

    out_dir: str
    n_frames: int
    n_flagged: int
    flagged_by_reason: dict[str, int]
    wall_s: float
    ms_per_frame: float
    mean_error_mm: float | None
    share_within_5mm: float | None
    # The frames this invocation tracked, which wall_s timed: fewer than n_frames after a resume.
    frames_timed: int = 0
    from_checkpoint: bool = False


def make_pose_backend(ctx: PoseContext, recording: Recording, run: RunDir, board: LatestLabels,
                      answer_source: AnswerSource | None = None) -> PoseBackend:
    """The perception backend named by ``ctx.backend``.

    ``classical`` is built here; the model backends come from
    :func:`agent.backends.factory_pose.make_pose_backend` (imported only then:
    it loads the model client). Their Stage 3 tools read the frame's labels
    from ``board``, which the graph publishes to after Stage 4.
    ``answer_source`` serves logged model answers (replay).
    """
    if ctx.backend == "classical":
        return ClassicalPoseBackend(gate_px=tracker_gate_px(ctx, recording))
    from agent.backends.factory_pose import make_pose_backend as make_model_backend

    return make_model_backend(ctx, recording, run.path, current_labels=board,
                              answer_source=answer_source)


def stage_fan_out(backend: PoseBackend) -> FanOut:
    """How the graph fans stages 1-3 out for ``backend``: its ``fan_out`` attribute, else ``per_view``.

    ``per_view`` (one task per request) lets model calls run concurrently;
    the classical tracker declares ``per_stage``.
    """
    return getattr(backend, "fan_out", "per_view")


def run_pose(recording_path: str | Path, out: str | Path, ctx: PoseContext, *, resume: bool = False,
             overwrite: bool = False, quiet: bool = False,
             backend: PoseBackend | None = None,
             answer_source: AnswerSource | None = None,
             given: Mapping[str, tuple[str, Any]] | None = None,
             provenance: Mapping[str, Any] | None = None) -> PoseRunSummary:
    """Track every frame of the recording into ``out`` (FORMATS.md section 2).

    On ``resume`` the settings stored with the run are used, so the results
    equal those of an uninterrupted run; a setting the user gave (``given``,
    :func:`agent.config.given_settings`) that differs from them is refused
    (:func:`agent.config.resumed_context`), as is another recording.
    ``provenance`` (a replay's ``replay_of``) is kept with the run and
    written to run.json, as a fork's ``fork`` is. ``backend`` replaces the one
    ``ctx.backend`` names (tests script one); ``answer_source`` serves the
    model answers of a replay (:class:`agent.replay_log.ReplayLog`). Every
    node execution is traced to ``trace.jsonl``.
    """
    recording = load_recording(recording_path, on_bad_ground_truth=_warn_without_ground_truth)
    if backend is None and not resume:
        _check_model_settings(ctx)  # before the run directory exists: nothing half-written
    meta = {"recording": str(Path(recording_path).resolve()), "thread_id": uuid.uuid4().hex,
            "input_fingerprint": input_fingerprint(recording_path, out), **(provenance or {}),
            "context": context_to_dict(ctx)}
    run = prepare_run_dir(out, "pose", meta, resume=resume, overwrite=overwrite, input_key="recording")
    stored = run.read_meta()
    ctx = resumed_context(PoseContext, stored["context"], given or {}, run.path)
    started = time.perf_counter()
    store = FrameStore(run.cache_dir, len(recording.cameras), len(recording.keypoints))
    n_to_track = min(recording.n_frames, ctx.max_frames or recording.n_frames)
    board = LatestLabels()
    prefetch = CentroidPrefetch(recording, processes=n_to_track >= PROCESS_PREFETCH_FRAMES,
                                centroids_dir=store.centroids_dir)
    owned = backend is None  # a backend made here holds streams and threads to release
    backend = backend or make_pose_backend(ctx, recording, run, board, answer_source)
    try:
        return _track(run, stored["thread_id"], recording, ctx, backend, store, board, prefetch,
                      quiet, started)
    finally:
        close = getattr(backend, "close", None)
        if owned and close is not None:
            close()


def _track(run: RunDir, thread_id: str, recording: Recording, ctx: PoseContext,
           backend: PoseBackend, store: FrameStore, board: LatestLabels,
           prefetch: CentroidPrefetch, quiet: bool, started: float) -> PoseRunSummary:
    """Run the graph to the end (or on from its checkpoint) and write run.json."""
    seed_frames = _log_seed_frames(recording, store)
    # Stage 4's identity and side checks (full pipeline only) compare with the seed frames' body.
    seed_window = store.window(sorted(seed_frames))
    full = ctx.ablation == "full"
    seed_sides = (steps.seed_side_model(seed_window, recording.group, list(recording.keypoints),
                                        steps.region_indices(recording.keypoints, recording.regions))
                  if full else None)
    body_window = steps.midline_from_one_view(seed_window, recording.group, seed_sides,
                                              list(recording.keypoints))
    seed_distances = steps.seed_distance_model(body_window) if full else None
    template_review = (steps.template_review(
        body_window, seed_sides, list(recording.keypoints),
        steps.region_indices(recording.keypoints, recording.regions), ctx.max_body_deviation,
        ctx.confirm_body_deviation) if full else None)
    runtime = PoseRuntime(
        settings=ctx, recording=recording, backend=backend, store=store,
        out_dir=str(run.path), regions=_regions(recording, ctx), seed_frames=seed_frames,
        detect=prefetch.get, publish_labels=board.publish, fan_out=stage_fan_out(backend),
        seed_distances=seed_distances, seed_sides=seed_sides,
        template_review=template_review,
        seed_body_points=({int(entry["frame"]): np.asarray(entry["points_3d"], dtype=np.float64)
                           for entry in steps.twins_at_twin_height(
                               body_window, recording.group, seed_sides, list(recording.keypoints))}
                          if full else None),
        free_dots=(steps.FreeDotSearch(recording.group, store.centroids_of,
                                       quality_params(ctx, len(recording.cameras)))
                   if template_review is not None else None),
    )
    end_frame = min(recording.n_frames, ctx.max_frames or recording.n_frames)
    config = {"max_concurrency": ctx.max_concurrency, "recursion_limit": RECURSION_LIMIT,
              "configurable": {"thread_id": thread_id}}
    # The trace is written a frame at a time (a kill loses only the frame in flight, which a
    # resume redoes and traces again).
    trace = TraceRecorder(run.path / "trace.jsonl", flush_after=("accept_frame", "write_results"))
    with open_checkpoints(run.checkpoint_db) as connection, closing(prefetch), closing(trace):
        graph = build_pose_graph().compile(checkpointer=SqliteSaver(connection))
        snapshot = graph.get_state(config)
        from_checkpoint = bool(snapshot.values)
        if not snapshot.values:
            # The state before the first tracked frame, checkpointed as accept_frame leaves
            # every frame's: where a fork from that frame starts (agent.replay).
            graph.update_state(config, _initial_state(recording, runtime, end_frame),
                               as_node="accept_frame")
            snapshot = graph.get_state(config)
        # A step in flight (a node raised, or the run stopped with a step's writes saved;
        # an earlier version's checkpoint mid-frame) is continued, not replaced: new input
        # would drop its writes. `tasks`, not `next`: `next` leaves out finished tasks.
        in_flight = bool(snapshot.tasks)
        inputs: PoseState | None = None if in_flight else _next_frame(snapshot.values["frame"])
        done = not in_flight and bool(snapshot.values.get("finished"))
        kept = _recorded_summary(run) if done else None
        if kept is not None:  # a finished run resumed: nothing ran, its run.json (timings) stays
            recording.close()
            return kept
        progress = _Progress(end_frame, quiet)
        try:
            while not done:
                following = _invoke_once(graph, inputs, config, runtime, trace, progress)
                done = following is None
                inputs = None if done else _next_frame(following)
        finally:  # an error or an interrupt is printed on a line of its own
            progress.close()
        frames_timed = (graph.get_state(config).values.get("n_done", 0)
                        - snapshot.values.get("n_done", 0))
    recording.close()
    # run.json counts the rows the results files hold (padded_records, as write_results writes).
    records = padded_records(reviewed_records(runtime), len(recording.cameras),
                             len(recording.keypoints))
    timing = _Timing(time.perf_counter() - started, frames_timed, from_checkpoint)
    return _finish(run, recording, ctx, backend, records, timing,
                   steps.describe_side_model(seed_sides, list(recording.keypoints)))


def _recorded_summary(run: RunDir) -> PoseRunSummary | None:
    """The summary a finished run's run.json holds; None where it is missing or unreadable."""
    try:
        return PoseRunSummary(**json.loads(run.run_json.read_text(encoding="utf-8"))["summary"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _invoke_once(graph: Any, inputs: PoseState | None, config: dict[str, Any],
                 runtime: PoseRuntime, trace: TraceRecorder, progress: _Progress) -> int | None:
    """Run one invocation (one frame, or the results); the frame to track next, None when done.

    The invocation is checkpointed when it ends, so a killed run redoes at most
    the frame in flight. Task events alone feed both the trace and the progress
    line (an "updates" stream would repeat every task's writes). A model
    backend's per-camera stages run in subgraphs, whose tasks are streamed
    (and traced) too; the classical backend has none, and without subgraph
    streaming LangGraph runs a superstep's lone task in the calling thread.
    """
    ended: list[int | None] = []  # the next frame, or None once the results are written
    subgraphs = runtime.fan_out == "per_view"
    for chunk in graph.stream(inputs, config, context=runtime, stream_mode="tasks",
                              durability=DURABILITY, subgraphs=subgraphs):
        event = chunk[1] if subgraphs else chunk  # subgraphs: (namespace, event)
        trace.on_task_event(event)
        result = event.get("result")
        if event.get("name") == "accept_frame" and result:
            progress.show(result["n_done"], result["n_flagged"])
            ended.append(result["frame"])
        elif event.get("name") == "write_results" and result is not None:
            ended.append(None)
    if len(ended) == 1:
        return ended[0]
    # Continuing a step whose writes were saved sends no event: read where it left off.
    values = graph.get_state(config).values
    return None if values.get("finished") else values["frame"]


def _next_frame(frame: int) -> PoseState:
    """The input of the invocation that tracks ``frame`` (or writes the results past the last)."""
    return {"frame": frame}


def _warn_without_ground_truth(problem: InputError) -> None:
    """Tracking needs no ground truth: a file of it that does not fit is named, and left out."""
    print(f"warning: {problem}; tracking goes on without ground truth (eval needs it fixed)",
          file=sys.stderr)


def _check_model_settings(ctx: PoseContext) -> None:
    """Raise the InputError a model backend would raise for a missing server, model or prompt."""
    if ctx.backend == "classical":
        return
    if not ctx.base_url:
        raise InputError("--base-url", f"the {ctx.backend} pose backend needs an OpenAI-compatible "
                                       "server URL, e.g. http://localhost:8000/v1")
    if not ctx.vlm_model:
        raise InputError("--model", f"the {ctx.backend} pose backend needs the served vision model's name")
    from agent.backends.openai_pose import load_pose_prompts

    load_pose_prompts(ctx.prompts_dir)


def _regions(recording: Recording, ctx: PoseContext) -> dict[str, list[str]]:
    if ctx.ablation == "naive":
        return {"all": list(recording.keypoints)}
    return {name: list(members) for name, members in recording.regions.items()}


def _log_seed_frames(recording: Recording, store: FrameStore) -> frozenset[int]:
    """Log the record of every seed frame not logged yet; the seed frames."""
    logged = {record.frame for record in store.read_all()}
    for frame, points_2d in zip(recording.seeds.frames.tolist(), recording.seeds.points_2d,
                                strict=True):
        if frame not in logged:
            centroids = [detect_centroids(recording.fluorescence(camera).read(frame)).xy
                         for camera in recording.cameras]
            store.append(steps.seed_record(recording.group, frame, points_2d, centroids))
    return frozenset(recording.seeds.frames.tolist())


def _initial_state(recording: Recording, runtime: PoseRuntime, end_frame: int) -> PoseState:
    """The first window is the seed frames from the first one on; tracking starts after them."""
    window, frame = steps.advance([], int(recording.seeds.frames[0]), runtime.seed_frames)
    n_keypoints = len(recording.keypoints)
    state: PoseState = {"frame": frame, "end_frame": end_frame, "direction": 1,
                        **steps.pass_start(runtime.store, window, n_keypoints,
                                           body_points=runtime.seed_body_points),
                        "n_done": len(window), "n_flagged": 0}
    if frame >= end_frame:  # nothing after the seed frames: only backward
        state.update(steps.backward_start(runtime.store, runtime.seed_frames, n_keypoints,
                                          body_points=runtime.seed_body_points))
    return state


@dataclass(frozen=True)
class _Timing:
    wall_s: float  # this invocation's, from the recording loaded to the results written
    frames_timed: int  # frames it tracked
    from_checkpoint: bool  # it continued from a run's checkpoint (a resume or a fork)


def _finish(run: RunDir, recording: Recording, ctx: PoseContext, backend: PoseBackend,
            records: list[FrameRecord], timing: _Timing, side_check: dict | None) -> PoseRunSummary:
    flagged = np.stack([r.flagged for r in records])
    reasons = np.concatenate([r.reason for r in records])
    by_reason = {str(name): int(np.sum(reasons == name)) for name in sorted(set(reasons)) if name}
    metrics = None
    if recording.ground_truth_3d is not None:
        index = np.array([r.frame for r in records])
        metrics = evaluate_pose(np.stack([r.points_3d for r in records]),
                                recording.ground_truth_3d[index], flagged)
    summary = PoseRunSummary(
        out_dir=str(run.path), n_frames=len(records), n_flagged=int(flagged.sum()),
        flagged_by_reason=by_reason, wall_s=round(timing.wall_s, 3),
        ms_per_frame=round(1000 * timing.wall_s / max(1, timing.frames_timed), 3),
        mean_error_mm=None if metrics is None else _finite(metrics.mean_error_mm),
        share_within_5mm=None if metrics is None else _finite(metrics.share_within_5mm),
        frames_timed=timing.frames_timed, from_checkpoint=timing.from_checkpoint,
    )
    write_json_atomic(run.run_json, {
        "kind": "pose", "recording": str(recording.root), "config": context_to_dict(ctx),
        "versions": package_versions(),
        "counts": {"frames": len(records), "cameras": len(recording.cameras),
                   "keypoints": len(recording.keypoints), "flagged": summary.n_flagged,
                   "flagged_by_reason": by_reason},
        "timings": {"wall_s": summary.wall_s, "ms_per_frame": summary.ms_per_frame,
                    "frames_timed": summary.frames_timed,
                    "from_checkpoint": summary.from_checkpoint},
        "summary": asdict(summary), "side_check": side_check,
        "tracker_gate_px": round(tracker_gate_px(ctx, recording), 3),
        **_model_provenance(ctx, backend),
        # What the run replays or forks (agent.replay), as its meta keeps it.
        **{key: value for key, value in run.read_meta().items() if key in ("replay_of", "fork")},
    })
    return summary


def _model_provenance(ctx: PoseContext, backend: PoseBackend) -> dict[str, object]:
    """run.json's ``model`` (calls per stage) and ``prompts`` (hash per prompt file; none when classical)."""
    stats = getattr(backend, "stats", None)
    provenance: dict[str, object] = {
        "model": stats() if callable(stats) else {"backend": ctx.backend, "model_calls": {},
                                                  "model_calls_total": 0},
        "prompts": {}}
    if ctx.backend != "classical":
        from agent.backends.openai_pose import PROMPT_NAMES
        from agent.prompts import prompt_hashes

        provenance["prompts"] = prompt_hashes(list(PROMPT_NAMES), ctx.prompts_dir)
    return provenance


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


class _Progress:
    """One stderr line: frames done, frames per second, flagged labels."""

    MIN_INTERVAL_S = 0.2  # between redraws

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.started = self.last = time.perf_counter()
        self.first_done: int | None = None  # set by the first line drawn

    def show(self, done: int, flagged: int) -> None:
        now = time.perf_counter()
        if self.quiet or now - self.last < self.MIN_INTERVAL_S:
            return
        self.first_done = done if self.first_done is None else self.first_done
        rate = (done - self.first_done) / max(now - self.started, 1e-9)
        sys.stderr.write(f"\rpose {done}/{self.total} frames  {rate:5.1f} fps  flagged {flagged}   ")
        sys.stderr.flush()
        self.last = now

    def close(self) -> None:
        """End the progress line, if one was drawn."""
        if self.first_done is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def summary_lines(summary: PoseRunSummary) -> list[str]:
    """The one-screen summary printed by the CLI."""
    after = (f" over the {summary.frames_timed} frames tracked now; the others came from the checkpoint"
             if summary.from_checkpoint else "")
    lines = [f"results: {summary.out_dir}",
             f"frames: {summary.n_frames}   time: {summary.wall_s:.1f} s "
             f"({summary.ms_per_frame:.1f} ms/frame{after})"]
    if summary.mean_error_mm is not None:
        lines.append(f"mean 3D error vs ground truth: {summary.mean_error_mm:.2f} mm   "
                     f"within 5 mm: {100 * (summary.share_within_5mm or 0):.1f}%")
    reasons = ", ".join(f"{name} {count}" for name, count in summary.flagged_by_reason.items())
    lines.append(f"flagged labels: {summary.n_flagged}" + (f" ({reasons})" if reasons else ""))
    return lines
