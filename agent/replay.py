"""Replay a finished run, or fork it from one of its checkpoints, into a new run directory.

Replay re-executes a run from what its directory recorded: the input and the
settings (``.bvlm/meta.json``, ``run.json``) and, for model backends, every
model answer (``calls.jsonl``, served by request hash through
:class:`~agent.replay_log.ReplayLog`). No server is needed, and a request the
log does not hold is an error rather than a silent call: the results are
byte for byte those of the original run.

A fork starts from a checkpoint of the original run instead (``--from NODE``
for behavior, ``--from FRAME`` for pose), optionally with other prompts or
another backend. The checkpoint database and the cache are copied into the
new directory, the snapshot before NODE (or before FRAME is tracked: a
pose run's checkpoint per frame) is picked from the thread's history, the
paths its state holds are moved to the new directory with
``graph.update_state`` (which starts the fork's branch),
and the runner continues the thread from there. Requests the original run
made are answered from its log; new ones go to the configured backend.

Replaying a fork repeats the fork from the same checkpoint (recorded in its
meta) with the fork's own log.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import StateSnapshot

from agent.atomic import write_json_atomic
from agent.config import context_fields, context_to_dict
from agent.errors import InputError
from agent.llm import ReplayedError
from agent.replay_log import ReplayLog
from agent.rundir import RunDir, open_checkpoints, prepare_run_dir

BEHAVIOR_RESULTS = ("clips.csv", "segments.csv", "review.csv", "ethogram.png")
POSE_RESULTS = ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv")
RESULT_FILES = {"behavior": BEHAVIOR_RESULTS, "pose": POSE_RESULTS}
MODEL_BACKENDS = ("openai", "hybrid")
SETTINGS = ("backend", "base_url", "vlm_model", "llm_model", "prompts_dir")  # what a replay may change
BEHAVIOR_NODES = ("extract_features", "cluster_dec", "cut_clips", "caption_clips", "merge_segments",
                  "write_results")
POSE_BRANCH_NODE = "accept_frame"  # a pose fork's state is written as the node that names the next frame
# A pose checkpoint where a frame's tracking starts: a frame's end (this version), or the
# start of its invocation in runs recorded with a checkpoint per step (before session 8).
POSE_FRAME_STARTS = ((), ("detect_centroids",))
AnswerSource = Callable[[str], AIMessage | ReplayedError | None]


@dataclass(frozen=True)
class RecordedRun:
    """A finished run directory, checked for what replaying it needs.

    Attributes
    ----------
    run_dir : RunDir
        The run's directory.
    kind : str
        ``pose`` or ``behavior``.
    meta : dict
        ``.bvlm/meta.json``.
    config : dict
        The run's context fields (``run.json`` ``config``).
    run_json : dict
        ``run.json``.
    """

    run_dir: RunDir
    kind: str
    meta: dict[str, Any]
    config: dict[str, Any]
    run_json: dict[str, Any]

    @property
    def used_model(self) -> bool:
        return self.config.get("backend") in MODEL_BACKENDS

    @property
    def input_path(self) -> Path:
        """The session (behavior) or recording (pose) the run read."""
        return Path(self.meta["session" if self.kind == "behavior" else "recording"])

    @property
    def thread_id(self) -> str:
        return self.meta["run_id" if self.kind == "behavior" else "thread_id"]


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay wrote, and (plain replays) which results differ from the original."""

    out_dir: Path
    kind: str
    fork: dict[str, Any] | None
    differing: list[str] | None


def load_recorded_run(path: str | Path) -> RecordedRun:
    """Read and check a run directory written by ``pose`` or ``behavior``.

    Raises
    ------
    InputError
        Not a run directory of this tool, corrupt or unfinished, or a model
        run whose call log is missing.
    """
    run_dir = RunDir(Path(path))
    if not run_dir.path.is_dir():
        raise InputError(run_dir.path, "run directory not found")
    meta = run_dir.read_meta()
    if not isinstance(meta, dict) or meta.get("kind") not in RESULT_FILES:
        raise InputError(run_dir.meta_file, "names no pose or behavior run (foreign or corrupt metadata)")
    kind = meta["kind"]
    needed = ("session", "run_id") if kind == "behavior" else ("recording", "thread_id", "context")
    missing = [key for key in needed if not isinstance(meta.get(key), str | dict)]
    if missing:
        raise InputError(run_dir.meta_file, f"corrupt run metadata: no {', '.join(missing)}")
    run_json = read_run_json(run_dir)
    config = meta.get("context") or run_json.get("config")
    if not isinstance(config, dict):
        raise InputError(run_dir.run_json, "corrupt: records no run configuration")
    recorded = RecordedRun(run_dir, kind, meta, config, run_json)
    if recorded.used_model and not run_dir.calls_log.is_file():
        raise InputError(run_dir.calls_log, f"not found: the run used the {config['backend']} backend and "
                                            "replay needs its model-call log")
    if not run_dir.checkpoint_db.is_file():
        raise InputError(run_dir.checkpoint_db, "not found: the run's checkpoints are missing")
    with open_checkpoints(run_dir.checkpoint_db):  # damaged: refused before --out is touched
        pass
    return recorded


def read_run_json(run_dir: RunDir) -> dict[str, Any]:
    """``run.json`` of a finished run; InputError if absent (unfinished run) or corrupt."""
    if not run_dir.run_json.is_file():
        raise InputError(run_dir.run_json, "not found: the run did not finish (resume it first)")
    try:
        run_json = json.loads(run_dir.run_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(run_dir.run_json, f"corrupt: {exc}") from None
    if not isinstance(run_json, dict):
        raise InputError(run_dir.run_json, "corrupt: not a JSON object")
    return run_json


class StrictReplay:
    """Answers only from the log: a request the original run never made is an error.

    This is what makes a plain replay exact, or fail loudly when the code, the
    prompts or the inputs changed since the run (instead of calling a server).
    """

    def __init__(self, log: ReplayLog) -> None:
        self.log = log

    def __call__(self, digest: str) -> AIMessage | ReplayedError:
        answer = self.log(digest)
        if answer is None:
            raise InputError(self.log.path, f"holds no answer for request {digest[:12]}: the replay left the "
                                            "original run's path (changed code, prompts or inputs?)")
        return answer


def replay(
    source: RecordedRun, out: str | Path, *, start: str | None = None,
    settings: dict[str, Any] | None = None, overwrite: bool = False,
) -> ReplayOutcome:
    """Replay ``source`` into ``out``, or fork it from ``start`` (a node or a frame).

    Parameters
    ----------
    source : RecordedRun
        The finished run.
    out : str or Path
        New run directory (must be empty unless ``overwrite``).
    start : str, optional
        Behavior: the node to re-run from (it and everything after it). Pose:
        the frame to track again from. None replays the whole run.
    settings : dict, optional
        Context fields to change (``backend``, ``base_url``, ``vlm_model``,
        ``llm_model``, ``prompts_dir``); None values keep the run's.

    Raises
    ------
    InputError
        Bad ``start`` or settings, an occupied ``out``, or a replay that
        needs an answer the log does not hold.
    """
    out = Path(out)
    if out.resolve() in (source.run_dir.path.resolve(), *source.run_dir.path.resolve().parents):
        raise InputError(out, "is or holds the run being replayed; choose a new directory")
    changes = {key: value for key, value in (settings or {}).items() if value is not None}
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise InputError("replay", f"cannot change {', '.join(unknown)}")
    config = {**source.config, **changes}
    answers = _answer_source(source, strict=not changes and start is None)
    fork = _fork_spec(source, start)
    existed = out.is_dir() and any(out.iterdir())
    try:
        if source.kind == "behavior":
            _replay_behavior(source, out, config, fork, answers, overwrite)
        else:
            _replay_pose(source, out, config, fork, answers, overwrite)
    except InputError:
        if out.is_dir() and not existed:  # nothing half-written stays behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    plain = start is None and not changes
    differing = differing_results(source.run_dir.path, out, source.kind) if plain else None
    return ReplayOutcome(out, source.kind, fork, differing)


def _answer_source(source: RecordedRun, strict: bool) -> AnswerSource | None:
    if not source.run_dir.calls_log.is_file():
        return None
    log = ReplayLog(source.run_dir.calls_log)
    return StrictReplay(log) if strict else log


def _fork_spec(source: RecordedRun, start: str | None) -> dict[str, Any] | None:
    """Where the new run starts: a node/frame of the source, or the source's own fork point."""
    if start is None:
        return dict(source.meta["fork"]) if isinstance(source.meta.get("fork"), dict) else None
    if source.kind == "behavior":
        if start not in BEHAVIOR_NODES:
            raise InputError("--from", f"{start!r} is not a behavior node ({', '.join(BEHAVIOR_NODES)})")
        return {"from_run": str(source.run_dir.path.resolve()), "node": start}
    try:
        frame = int(start)
    except ValueError:
        raise InputError("--from", f"a pose run forks from a frame number, got {start!r}") from None
    if frame < 0:
        raise InputError("--from", f"a pose run forks from a frame number (0 or more), got {frame}")
    return {"from_run": str(source.run_dir.path.resolve()), "frame": frame}


def differing_results(original: Path, replayed: Path, kind: str) -> list[str]:
    """Result files of ``kind`` whose bytes differ (or that exist in only one directory)."""
    differing = []
    for name in RESULT_FILES[kind]:
        a, b = original / name, replayed / name
        if a.is_file() != b.is_file() or (a.is_file() and a.read_bytes() != b.read_bytes()):
            differing.append(name)
    return differing


# -- checkpoints ------------------------------------------------------------------


def copy_run_state(source: RunDir, target: RunDir) -> None:
    """Copy ``source``'s checkpoints, cache and clip videos into the prepared ``target``."""
    with open_checkpoints(source.checkpoint_db) as original, \
            open_checkpoints(target.checkpoint_db) as copy:
        original.backup(copy)  # consistent even with a write-ahead log beside the database
    shutil.copytree(source.cache_dir, target.cache_dir, dirs_exist_ok=True)
    if (source.path / "clips").is_dir():
        shutil.copytree(source.path / "clips", target.path / "clips", dirs_exist_ok=True)


def lineage(graph: Any, config: dict[str, Any]) -> list[StateSnapshot]:
    """Snapshots from the thread's latest checkpoint back to its first, following parents.

    A thread that was forked before holds several branches; only the latest
    branch's ancestry counts.
    """
    by_id = {snap.config["configurable"]["checkpoint_id"]: snap for snap in graph.get_state_history(config)}
    snapshots, snap = [], graph.get_state(config)
    while snap is not None and snap.config["configurable"].get("checkpoint_id") in by_id:
        snapshots.append(by_id[snap.config["configurable"]["checkpoint_id"]])
        parent = snap.parent_config
        snap = None if parent is None else by_id.get(parent["configurable"]["checkpoint_id"])
    return snapshots


def pick_fork_point(
    history: list[StateSnapshot], fork: dict[str, Any], matches: Callable[[StateSnapshot], bool], what: str,
    source: Path,
) -> StateSnapshot:
    """The snapshot to fork from: by recorded checkpoint id, else the newest that ``matches``."""
    if "checkpoint_id" in fork:
        chosen = _snapshot(history, fork["checkpoint_id"])
    else:
        chosen = next((snap for snap in history if matches(snap)), None)
    if chosen is None:
        raise InputError(source, f"has no checkpoint {what}")
    return chosen


def _snapshot(history: list[StateSnapshot], checkpoint_id: str | None) -> StateSnapshot | None:
    """The snapshot of ``history`` with ``checkpoint_id``, if any."""
    return next((snap for snap in history
                 if snap.config["configurable"]["checkpoint_id"] == checkpoint_id), None)


def written_by_run(snap: StateSnapshot) -> bool:
    """Whether the graph's own loop wrote ``snap`` (not an earlier fork's update)."""
    return snap.metadata.get("source") == "loop"


def moved_paths(values: dict[str, Any], old_dir: str, new_dir: str) -> dict[str, Any]:
    """The state keys whose values hold paths under ``old_dir``, with those paths under ``new_dir``."""
    prefix = old_dir.rstrip("/")

    def move(value: Any) -> Any:
        if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
            return new_dir + value[len(prefix):]
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    moved = {key: move(value) for key, value in values.items()}
    return {key: value for key, value in moved.items() if value != values[key]}


def start_branch(graph: Any, history: list[StateSnapshot], snapshot: StateSnapshot,
                 changes: dict[str, Any], source: Path) -> str:
    """Start a branch at ``snapshot``: ``changes`` written as the node that ran before it.

    The new checkpoint becomes the thread's latest, with the same next tasks
    as ``snapshot`` and none of its finished writes, so continuing the thread
    re-runs them. Returns the id of the checkpoint forked from.
    """
    parent = None if snapshot.parent_config is None else \
        _snapshot(history, snapshot.parent_config["configurable"]["checkpoint_id"])
    if parent is None:
        raise InputError(source, "has no checkpoint before the fork point")
    (as_node,) = set(parent.next)  # the step that produced snapshot ran one node (maybe fanned out)
    graph.update_state(snapshot.config, changes, as_node=as_node)
    return snapshot.config["configurable"]["checkpoint_id"]


# -- pipelines -------------------------------------------------------------------


def _replay_behavior(source: RecordedRun, out: Path, config: dict[str, Any], fork: dict[str, Any] | None,
                     answers: AnswerSource | None, overwrite: bool) -> None:
    from agent.behavior_context import BehaviorContext
    from agent.commands.behavior import finish_behavior_run, open_behavior_run

    ctx = BehaviorContext(**context_fields(BehaviorContext, config))
    if fork is None:
        provenance = {"replay_of": str(source.run_dir.path.resolve())}
        behavior_run = open_behavior_run(source.input_path, out, ctx, overwrite=overwrite, meta=provenance)
        finish_behavior_run(behavior_run, answer_source=answers, provenance=provenance)
        return
    behavior_run = open_behavior_run(source.input_path, out, ctx, overwrite=overwrite,
                                     meta={"run_id": source.thread_id, "fork": fork})
    copy_run_state(source.run_dir, behavior_run.run_dir)
    fork = {**fork, "checkpoint_id": _fork_behavior(source, behavior_run.run_dir, fork)}
    write_json_atomic(behavior_run.run_dir.meta_file, {**behavior_run.run_dir.read_meta(), "fork": fork})
    finish_behavior_run(dataclasses.replace(behavior_run, continue_thread=True), answer_source=answers,
                        provenance={"fork": fork})


def _fork_behavior(source: RecordedRun, target: RunDir, fork: dict[str, Any]) -> str:
    from graphs.behavior import build_behavior_graph

    config = {"configurable": {"thread_id": source.thread_id}}
    with open_checkpoints(target.checkpoint_db) as connection:
        graph = build_behavior_graph().compile(checkpointer=SqliteSaver(connection))
        history = lineage(graph, config)
        snapshot = pick_fork_point(history, fork,
                                   lambda snap: written_by_run(snap) and fork["node"] in snap.next,
                                   f"before node {fork['node']}", source.run_dir.path)
        changes = moved_paths(snapshot.values, snapshot.values["run_dir"], str(target.path))
        return start_branch(graph, history, snapshot, changes, source.run_dir.path)


def _replay_pose(source: RecordedRun, out: Path, config: dict[str, Any], fork: dict[str, Any] | None,
                 answers: AnswerSource | None, overwrite: bool) -> None:
    from agent.pose_context import PoseContext
    from agent.pose_pipeline import run_pose

    ctx = PoseContext(**context_fields(PoseContext, config))
    if fork is None:
        run_pose(source.input_path, out, ctx, overwrite=overwrite, quiet=True, answer_source=answers,
                 provenance={"replay_of": str(source.run_dir.path.resolve())})
        return
    # Found in the source's checkpoints: a frame the run cannot fork from is refused before
    # --out is touched (or emptied); the copy holds the same checkpoint.
    start = _pose_fork_point(source, fork)
    meta = {"recording": str(source.input_path), "thread_id": source.thread_id,
            "context": context_to_dict(ctx), "fork": fork}
    target = prepare_run_dir(out, "pose", meta, resume=False, overwrite=overwrite)
    copy_run_state(source.run_dir, target)
    fork = {**fork, "checkpoint_id": _fork_pose(source, target, start)}
    write_json_atomic(target.meta_file, {**target.read_meta(), "fork": fork})
    run_pose(source.input_path, out, ctx, resume=True, quiet=True, answer_source=answers)


def _fork_pose(source: RecordedRun, target: RunDir, start: dict[str, Any]) -> str:
    """Start the fork's branch at the checkpoint ``start`` names (:func:`_pose_fork_point`); its id.

    A pose run checkpoints once per frame, when the frame's invocation ends
    (:mod:`agent.pose_pipeline`), and once before the first: the checkpoint
    whose state names the frame to track next. The branch is that state with
    its paths moved to the fork's directory, written as ``accept_frame``
    wrote it; the runner then invokes the graph for the frame.
    """
    from graphs.pose import build_pose_graph

    with open_checkpoints(target.checkpoint_db) as connection:
        graph = build_pose_graph().compile(checkpointer=SqliteSaver(connection))
        chosen = graph.get_state(start)
        changes = moved_paths(chosen.values, str(source.run_dir.path), str(target.path))
        graph.update_state(chosen.config, changes, as_node=POSE_BRANCH_NODE)
        return chosen.config["configurable"]["checkpoint_id"]


def _pose_fork_point(source: RecordedRun, fork: dict[str, Any]) -> dict[str, Any]:
    """The config of the source run's checkpoint where ``fork["frame"]`` is about to be tracked.

    InputError where the run has none for that frame.
    """
    from graphs.pose import build_pose_graph

    config = {"configurable": {"thread_id": source.thread_id}}
    frame = fork["frame"]
    with open_checkpoints(source.run_dir.checkpoint_db) as connection:
        graph = build_pose_graph().compile(checkpointer=SqliteSaver(connection))
        chosen = pick_fork_point(
            lineage(graph, config), fork,
            # The run's own checkpoints: the loop's, and the first (run_pose writes it).
            lambda snap: (tuple(snap.next) in POSE_FRAME_STARTS and snap.values.get("frame") == frame
                          and not snap.values.get("finished")
                          and (written_by_run(snap) or snap.parent_config is None)),
            f"where frame {frame} is tracked (seed frames and frames past the end are not)",
            source.run_dir.path)
    return chosen.config
