"""``python -m agent.run behavior [SESSION] --out DIR``: segment a session into labelled behaviors.

Writes ``clips.csv``, ``segments.csv``, ``review.csv``, ``ethogram.png``, ``run.json``,
one short video per clip under ``clips/`` and the node-by-node trace
``trace.jsonl`` (``python -m agent.run trace``). The session is validated before
anything is written; a run that fails on bad input removes what it wrote.
Progress is checkpointed (SQLite) so ``--resume`` continues an interrupted
run. Without SESSION a demo session is simulated under
``./data/demo-behavior`` (once; reused afterwards), analysed into
``./runs/demo-behavior`` and scored against its ground truth.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from agent.atomic import write_json_atomic
from agent.backends.factory_behavior import AnswerSource, make_behavior_backend
from agent.behavior_context import BehaviorContext
from agent.behavior_steps import resolve_features_mode
from agent.commands.eval_behavior import format_metrics, score_results
from agent.config import context_to_dict, given_settings, resolve_context, resumed_context
from agent.errors import InputError
from agent.prompts import load_prompt
from agent.rundir import (
    RunDir,
    input_fingerprint,
    open_checkpoints,
    package_versions,
    prepare_run_dir,
)
from agent.session import load_session
from agent.synth_behavior import synthesize_behavior_session
from agent.trace_log import TraceRecorder
from graphs.behavior import build_behavior_graph
from tools.behavior_sim import SimParams

DEMO_SESSION = Path("data/demo-behavior")
DEMO_RESULTS = Path("runs/demo-behavior")
DEMO_PARAMS = SimParams(n_animals=3, seconds=60.0)
BEHAVIOR_PROMPTS = ("behavior/caption_clips", "behavior/merge_segments")
TRACE_FILE = "trace.jsonl"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", nargs="?", type=Path,
                        help="session directory (FORMATS.md section 3); omit for the demo")
    parser.add_argument("--out", type=Path, help="output directory (required with SESSION)")
    parser.add_argument("--features", choices=("keypoint", "visual", "fused"),
                        help="features to cluster (default: features.npy, else fused with keypoints, else visual)")
    parser.add_argument("--clusters", type=int, dest="n_clusters", help="DEC clusters K (default 10)")
    parser.add_argument("--backend", choices=("classical", "openai", "hybrid"),
                        help="caption/merge backend (default classical: no model)")
    parser.add_argument("--base-url", help="OpenAI-compatible server for openai/hybrid, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", dest="vlm_model", help="served vision-language model (captions)")
    parser.add_argument("--llm-model", help="text model for merging (default: --model)")
    parser.add_argument("--prompts", dest="prompts_dir", help="folder replacing prompts/ (same file names)")
    parser.add_argument("--seed", type=int, help="seed of DEC (default 0)")
    parser.add_argument("--no-clip-videos", action="store_true", help="do not cut clip videos")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the results in --out")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


# The BehaviorContext settings the command line sets, and their flags.
FLAGS = {"features": "--features", "n_clusters": "--clusters", "backend": "--backend", "seed": "--seed",
         "base_url": "--base-url", "vlm_model": "--model", "llm_model": "--llm-model",
         "prompts_dir": "--prompts", "clip_videos": "--no-clip-videos"}


def run(args: argparse.Namespace) -> int:
    demo = args.session is None
    session_dir, out = _demo_paths(args) if demo else (args.session, args.out)
    if out is None:
        raise InputError("--out", "is required when a SESSION is given")
    cli = {name: getattr(args, name) for name in FLAGS if name != "clip_videos"}
    cli["clip_videos"] = False if args.no_clip_videos else None
    ctx = resolve_context(BehaviorContext, cli)
    behavior_run = open_behavior_run(session_dir, out, ctx, resume=args.resume,
                                     # The demo replaces its own results, not a --out of the user's.
                                     overwrite=args.overwrite or (demo and args.out is None
                                                                  and not args.resume),
                                     given=given_settings(ctx, cli, FLAGS))
    summary = finish_behavior_run(behavior_run)
    if not args.quiet:
        print("\n".join(_report(summary, behavior_run.run_dir.path)))
        if demo:
            print("\n".join(["", "against the demo's ground truth:", *format_metrics(score_results(session_dir,
                                                                                             out))]))
    return 0


@dataclass(frozen=True)
class BehaviorRun:
    """A run directory opened for the graph, and what the graph runs with.

    Attributes
    ----------
    continue_thread : bool
        Continue the checkpointer thread from its latest checkpoint (``--resume``,
        or a replay fork) instead of starting from the session.
    discard_on_error : bool
        Remove what the run wrote when it fails on bad input (a fresh run).
    """

    run_dir: RunDir
    session_dir: Path
    ctx: BehaviorContext
    mode: str
    continue_thread: bool
    discard_on_error: bool
    existed: bool


def open_behavior_run(
    session_dir: Path, out: Path, ctx: BehaviorContext, *, resume: bool = False, overwrite: bool = False,
    meta: dict[str, Any] | None = None, given: Mapping[str, tuple[str, Any]] | None = None,
) -> BehaviorRun:
    """Check the session and settings, then create (or reopen) the run directory ``out``.

    ``meta`` adds to (or replaces) what ``.bvlm/meta.json`` records: the
    session, the checkpointer thread (``run_id``) and the context. On
    ``resume`` the run continues with the settings it started with; a
    setting the user gave (``given``, :func:`agent.config.given_settings`)
    that differs from them is refused, as is another session.

    Raises
    ------
    InputError
        Bad settings or session (nothing is written), or an occupied ``out``.
    """
    if resume:
        resumed = prepare_run_dir(out, "behavior", {"session": str(Path(session_dir).resolve()),
                                                    "input_fingerprint": input_fingerprint(session_dir, out)},
                                  resume=True, overwrite=overwrite, input_key="session")
        ctx = resumed_context(BehaviorContext, resumed.read_meta()["context"], given or {}, resumed.path)
    if ctx.n_clusters < 1:
        raise InputError("--clusters", f"must be at least 1, got {ctx.n_clusters}")
    session = load_session(session_dir)
    if ctx.n_clusters > session.n_frames:
        raise InputError(session.video_path, f"--clusters {ctx.n_clusters} is more than its {session.n_frames} frames")
    mode = resolve_features_mode(session, ctx.features)
    make_behavior_backend(ctx, None)  # a model backend without server or model fails here, before any output
    existed = out.is_dir() and any(out.iterdir())
    if resume:
        run_dir = resumed
    else:
        stored = {"session": str(Path(session_dir).resolve()), "run_id": _run_id(session_dir, ctx),
                  "input_fingerprint": input_fingerprint(session_dir, out),
                  "context": context_to_dict(ctx), **(meta or {})}
        run_dir = prepare_run_dir(out, "behavior", stored, resume=False, overwrite=overwrite,
                                  input_key="session")
    return BehaviorRun(run_dir, Path(session_dir), ctx, mode, continue_thread=resume,
                       discard_on_error=not resume, existed=existed)


def finish_behavior_run(
    behavior_run: BehaviorRun, *, answer_source: AnswerSource | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the graph into the opened directory and write ``run.json``; returns the summary.

    ``answer_source`` serves model answers (replay); ``provenance`` (what a
    replay or fork came from) is recorded in ``run.json``.
    """
    run_dir, ctx = behavior_run.run_dir, behavior_run.ctx
    if answer_source is not None:
        make_behavior_backend(ctx, run_dir.path, answer_source=answer_source)
    try:
        state, timings = _run_graph(run_dir, behavior_run.session_dir, ctx, behavior_run.continue_thread)
    except InputError:
        if behavior_run.discard_on_error:
            _discard(run_dir.path, behavior_run.existed)
        raise
    summary = _summary(state, behavior_run.mode)
    if not timings and run_dir.run_json.is_file():
        return summary  # a finished run resumed: nothing ran, so its run.json (timings) stays
    meta = run_dir.read_meta()
    write_json_atomic(run_dir.run_json, {
        "kind": "behavior", "session": meta["session"], "config": context_to_dict(ctx),
        "prompts": _prompt_hashes(ctx), "versions": package_versions(), "counts": summary["counts"],
        "timings": timings, "summary": summary, "model": _model_summary(ctx, run_dir), **(provenance or {}),
    })
    return summary


def _model_summary(ctx: BehaviorContext, run_dir: RunDir) -> dict[str, Any]:
    """run.json's ``model``: the backend, its models and its calls per graph node (none when classical)."""
    backend = make_behavior_backend(ctx, run_dir.path)
    calls = dict(sorted(backend.model_calls().items())) if hasattr(backend, "model_calls") else {}
    models = ({} if ctx.backend == "classical" else
              {"vlm_model": ctx.vlm_model, "llm_model": ctx.llm_model or ctx.vlm_model})
    return {"backend": ctx.backend, **models, "model_calls": calls,
            "model_calls_total": sum(calls.values())}


def _prompt_hashes(ctx: BehaviorContext) -> dict[str, str]:
    """SHA-256 of each prompt file a model backend sends (none for the classical backend)."""
    if ctx.backend == "classical":
        return {}
    return {name: load_prompt(name, ctx.prompts_dir).sha256 for name in BEHAVIOR_PROMPTS}


def _demo_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    if not (DEMO_SESSION / "session.toml").is_file():
        if not args.quiet:
            print(f"simulating a demo session in {DEMO_SESSION} (first use only)", file=sys.stderr)
        synthesize_behavior_session(DEMO_SESSION, DEMO_PARAMS, seed=0, overwrite=True)
    return DEMO_SESSION, args.out or DEMO_RESULTS


def _run_id(session_dir: Path, ctx: BehaviorContext) -> str:
    key = f"{Path(session_dir).resolve()}|{sorted(context_to_dict(ctx).items())}"
    return "behavior-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _run_graph(run_dir: RunDir, session_dir: Path, ctx: BehaviorContext, resume: bool) -> tuple[dict, dict]:
    """Run (or continue) the graph; returns the final state and seconds spent per node."""
    thread_id = run_dir.read_meta()["run_id"]
    config = {"max_concurrency": ctx.max_concurrency, "configurable": {"thread_id": thread_id}}
    inputs: dict[str, Any] | None = {"session_dir": str(session_dir), "run_dir": str(run_dir.path),
                                     "cache_dir": str(run_dir.cache_dir)}
    timings: dict[str, float] = collections.defaultdict(float)
    with open_checkpoints(run_dir.checkpoint_db) as connection:
        graph = build_behavior_graph().compile(checkpointer=SqliteSaver(connection))
        snapshot = graph.get_state(config)
        if resume and snapshot.values:
            inputs = None
        if inputs is not None or snapshot.next:
            started = last = time.perf_counter()
            trace = TraceRecorder(run_dir.path / TRACE_FILE)
            for mode, chunk in graph.stream(inputs, config=config, context=ctx, stream_mode=["updates", "tasks"]):
                if mode == "tasks":
                    trace.on_task_event(chunk)
                    continue
                now = time.perf_counter()
                for node in chunk:
                    timings[node] += (now - last) / len(chunk)
                last = now
            timings["total"] = time.perf_counter() - started
        state = graph.get_state(config).values
    return state, {name: round(seconds, 3) for name, seconds in sorted(timings.items())}


def _discard(path: Path, existed: bool) -> None:
    """Remove what a failed fresh run wrote (the directory itself when it was new)."""
    if not existed:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _summary(state: dict, mode: str) -> dict[str, Any]:
    segments = state.get("segments", [])
    captions = state.get("captions", [])
    per_label = collections.Counter(segment["label"] for segment in segments)
    session = state["session"]
    return {
        "animals": session["animals"], "n_frames": session["n_frames"], "fps": session["fps"],
        "features": state["features"]["mode"] if "features" in state else mode,
        "kinematics_from": state.get("features", {}).get("kinematics_from"),
        "dec": {k: v for k, v in state.get("dec", {}).items() if k != "path"},
        "counts": {"clips": len(state.get("clips", [])), "segments": len(segments),
                   "flagged_captions": sum(1 for c in captions if c.get("flagged")),
                   "flagged_merges": len(state.get("merge_flags", [])),
                   "segments_per_label": dict(sorted(per_label.items()))},
    }


def _report(summary: dict[str, Any], out: Path) -> list[str]:
    counts = summary["counts"]
    lines = [
        f"behavior results in {out}",
        f"animals: {', '.join(summary['animals'])} ({summary['n_frames']} frames at {summary['fps']:g} fps)",
        f"features: {summary['features']} (rules from {summary['kinematics_from']}); "
        f"DEC clusters used: {summary['dec'].get('clusters_used')}",
        f"clips: {counts['clips']} ({counts['flagged_captions']} flagged); segments: {counts['segments']}",
    ]
    lines += [f"  {label:24s} {n}" for label, n in counts["segments_per_label"].items()]
    return lines
