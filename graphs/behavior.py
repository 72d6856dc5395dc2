"""Behavior segmentation graph: features -> DEC clusters -> clips -> captions -> segments.

Wiring only: each node reads state and ``runtime.context`` (a
:class:`~agent.behavior_context.BehaviorContext`), calls one step of
:mod:`agent.behavior_steps` or one backend method, and returns a partial
update. ``caption_clips`` fans out one task per clip with ``Send``; run it
with ``config={"max_concurrency": ctx.max_concurrency, "configurable":
{"thread_id": ...}}`` so the fan-out is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from agent import behavior_steps as steps
from agent.atomic import write_bytes_atomic
from agent.backends.behavior_base import ClipRequest
from agent.backends.factory_behavior import make_behavior_backend
from agent.behavior_context import BehaviorContext
from agent.behavior_results import (
    CLIPS_FILE,
    REVIEW_FILE,
    SEGMENTS_FILE,
    write_clips_csv,
    write_review_csv,
    write_segments_csv,
)
from agent.session import load_session
from graphs.behavior_state import BehaviorInput, BehaviorState, CaptionTask
from tools.ethogram import render_ethogram

ETHOGRAM_FILE = "ethogram.png"


def extract_features(state: BehaviorState, runtime: Runtime[BehaviorContext]) -> dict[str, Any]:
    """Stage 1: load the session; compute clustering features and per-frame kinematics."""
    session = load_session(state["session_dir"])
    mode = steps.resolve_features_mode(session, runtime.context.features)
    summary = steps.extract_features(session, mode, Path(state["cache_dir"]))
    meta = {"animals": session.animals, "fps": session.fps, "n_frames": session.n_frames,
            "video_path": str(session.video_path)}
    return {"session": meta, "features": summary}


def cluster_dec(state: BehaviorState, runtime: Runtime[BehaviorContext]) -> dict[str, Any]:
    """Stage 2: Deep Embedded Clustering of every frame of every animal into K clusters."""
    ctx = runtime.context
    source = f"{state['session_dir']} ({state['features']['mode']} features)"
    dec = steps.cluster_features(state["features"]["features_path"], ctx.n_clusters, ctx.seed,
                                 ctx.dec_pretrain_iters, ctx.dec_finetune_iters, Path(state["cache_dir"]), source,
                                 state["session"]["animals"])
    return {"dec": dec}


def cut_clips(state: BehaviorState, runtime: Runtime[BehaviorContext]) -> dict[str, Any]:
    """Stage 3: cut each animal's cluster sequence into 0.5-2 s clips, summarize them, cut clip videos."""
    ctx = runtime.context
    settings = {"smooth_min_run_s": ctx.smooth_min_run_s, "min_clip_s": ctx.min_clip_s,
                "max_clip_s": ctx.max_clip_s, "fps_out": ctx.fps_out}
    clips_dir = Path(state["run_dir"]) / "clips" if ctx.clip_videos else None
    clips = steps.plan_clips(state["session"], state["dec"]["path"], state["features"]["kinematics_path"],
                             settings, clips_dir, state["session"]["video_path"])
    return {"clips": clips}


def dispatch_captions(state: BehaviorState) -> list[Send] | Literal["merge_segments"]:
    """One caption task per clip (bounded by the run config's max_concurrency)."""
    if not state["clips"]:
        return "merge_segments"
    # clip_id and animal at the top of the payload name the task's item in the trace (trace --clip).
    return [Send("caption_clips", {"clip_id": clip["clip_id"], "animal": clip["animal"], "clip": clip,
                                   "run_dir": state["run_dir"]}) for clip in state["clips"]]


def caption_clips(task: CaptionTask, runtime: Runtime[BehaviorContext]) -> dict[str, Any]:
    """Stage 4: caption one clip with the backend (label + description, flagged when unsure)."""
    backend = make_behavior_backend(runtime.context, task["run_dir"])
    request = ClipRequest.model_validate(task["clip"])
    caption = backend.caption_clips([request])[0]
    return {"captions": [{"clip_id": request.clip_id, **caption.model_dump()}]}


def merge_segments(state: BehaviorState, runtime: Runtime[BehaviorContext]) -> dict[str, Any]:
    """Stage 5: per animal, merge captioned clips into labelled segments that tile its timeline."""
    ctx = runtime.context
    backend = make_behavior_backend(ctx, state["run_dir"])
    captions = {caption["clip_id"]: caption for caption in state.get("captions", [])}
    segments = []
    for animal in state["session"]["animals"]:
        clips = [clip for clip in state["clips"] if clip["animal"] == animal]
        segments += steps.merge_animal(backend, animal, state["session"]["fps"], clips, captions,
                                       ctx.merge_chunk_clips)
    flags = [dict(vars(flag)) for flag in getattr(backend, "merge_flags", [])]
    return {"segments": segments, "merge_flags": flags}


def write_results(state: BehaviorState) -> dict[str, Any]:
    """Stage 6: write clips.csv, segments.csv, review.csv and ethogram.png (atomically)."""
    session = state["session"]
    captions = {caption["clip_id"]: caption for caption in state.get("captions", [])}
    clip_rows, segment_rows = steps.result_rows(state["clips"], captions, state["segments"], session["animals"])
    run_dir = Path(state["run_dir"])
    write_clips_csv(run_dir / CLIPS_FILE, clip_rows, session["fps"])
    write_segments_csv(run_dir / SEGMENTS_FILE, segment_rows, session["fps"])
    ethogram = render_ethogram([(s.animal, s.start_frame, s.end_frame, s.label) for s in segment_rows],
                               session["animals"], session["n_frames"], session["fps"])
    write_bytes_atomic(run_dir / ETHOGRAM_FILE, ethogram)
    write_review_csv(run_dir / REVIEW_FILE, state.get("captions", []), state["clips"], state.get("merge_flags", []))
    return {"outputs": {name: str(run_dir / name) for name in (CLIPS_FILE, SEGMENTS_FILE, REVIEW_FILE, ETHOGRAM_FILE)}}


def build_behavior_graph() -> StateGraph:
    """The uncompiled graph (compile it with a checkpointer)."""
    builder = StateGraph(BehaviorState, context_schema=BehaviorContext, input_schema=BehaviorInput)
    builder.add_node(extract_features)
    builder.add_node(cluster_dec)
    builder.add_node(cut_clips)
    builder.add_node(caption_clips)
    builder.add_node(merge_segments)
    builder.add_node(write_results)
    builder.add_edge(START, "extract_features")
    builder.add_edge("extract_features", "cluster_dec")
    builder.add_edge("cluster_dec", "cut_clips")
    builder.add_conditional_edges("cut_clips", dispatch_captions, ["caption_clips", "merge_segments"])
    builder.add_edge("caption_clips", "merge_segments")
    builder.add_edge("merge_segments", "write_results")
    builder.add_edge("write_results", END)
    return builder
