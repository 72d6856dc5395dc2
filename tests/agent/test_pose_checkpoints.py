"""A pose run's checkpoints (agent/pose_pipeline.py): one per frame, one chain, nothing in subgraphs."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

import agent.pose_pipeline as pipeline
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.pose_context import PoseContext
from agent.replay import lineage
from graphs.pose import build_pose_graph
from tests.fixtures.tiny_recording import make_tiny_recording

RESULTS = ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv")
N_FRAMES = 12


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return make_tiny_recording(tmp_path_factory.mktemp("checkpoints") / "rec", n_frames=N_FRAMES,
                               seed_frames=(0, 1, 2))


def _checkpoints(out: Path) -> tuple[int, int]:
    """Checkpoints of the run's graph and of its subgraph tasks."""
    with closing(sqlite3.connect(out / ".bvlm" / "checkpoints.sqlite")) as db:
        main, = db.execute("SELECT count(*) FROM checkpoints WHERE checkpoint_ns = ''").fetchone()
        sub, = db.execute("SELECT count(*) FROM checkpoints WHERE checkpoint_ns != ''").fetchone()
    return main, sub


def _history(out: Path) -> list:
    meta = json.loads((out / ".bvlm" / "meta.json").read_text())
    with closing(sqlite3.connect(out / ".bvlm" / "checkpoints.sqlite", check_same_thread=False)) as db:
        graph = build_pose_graph().compile(checkpointer=SqliteSaver(db))
        return lineage(graph, {"configurable": {"thread_id": meta["thread_id"]}})


@pytest.mark.parametrize("fan_out", ["per_stage", "per_view"])
def test_each_frame_leaves_one_checkpoint_naming_the_next(recording, tmp_path, fan_out):
    out = tmp_path / "run"
    pipeline.run_pose(recording, out, PoseContext(), quiet=True,
                      backend=ClassicalPoseBackend(fan_out=fan_out))
    tracked = N_FRAMES - 3
    main, sub = _checkpoints(out)
    # Before the first tracked frame, after each, and after the results: nothing between.
    assert (main, sub) == (tracked + 2, 0)
    history = _history(out)  # newest first, following parents
    assert len(history) == main and history[-1].parent_config is None
    assert all(not snap.next for snap in history)
    assert history[0].values["finished"]
    named = [snap.values["frame"] for snap in reversed(history[1:])]
    assert named[:-1] == list(range(3, N_FRAMES))
    assert not 0 <= named[-1] < N_FRAMES  # nothing left: the next invocation wrote the results


def test_resuming_a_finished_run_tracks_nothing_again(recording, tmp_path):
    out = tmp_path / "run"
    pipeline.run_pose(recording, out, PoseContext(), quiet=True)
    written = {name: (out / name).read_bytes() for name in RESULTS}
    trace_lines = len((out / "trace.jsonl").read_text().splitlines())
    pipeline.run_pose(recording, out, PoseContext(), quiet=True, resume=True)
    assert {name: (out / name).read_bytes() for name in RESULTS} == written
    assert len((out / "trace.jsonl").read_text().splitlines()) == trace_lines
    assert _checkpoints(out)[0] == N_FRAMES - 3 + 2


def test_a_resume_finishes_a_step_whose_writes_were_saved(recording, tmp_path, monkeypatch):
    """A run stopped after accept_frame ran but before the next checkpoint keeps its writes."""
    whole = tmp_path / "whole"
    pipeline.run_pose(recording, whole, PoseContext(), quiet=True)
    stopped = tmp_path / "stopped"
    # A checkpoint per step (as before session 8), then cut back to the one that holds
    # accept_frame's saved writes for frame 6: LangGraph's `next` is then empty.
    monkeypatch.setattr(pipeline, "DURABILITY", "sync")
    pipeline.run_pose(recording, stopped, PoseContext(), quiet=True)
    with closing(sqlite3.connect(stopped / ".bvlm" / "checkpoints.sqlite")) as db:
        # accept_frame is the only node that writes `frame` (an invocation's input does too).
        accepts = [checkpoint_id for checkpoint_id, metadata in db.execute(
            "SELECT DISTINCT w.checkpoint_id, c.metadata FROM writes w JOIN checkpoints c "
            "ON c.checkpoint_id = w.checkpoint_id AND c.checkpoint_ns = w.checkpoint_ns "
            "WHERE w.checkpoint_ns = '' AND w.channel = 'frame' ORDER BY w.checkpoint_id")
            if json.loads(metadata)["source"] == "loop"]
        cut = accepts[6 - 3]  # the accept step of frame 6 (frames 3.. are tracked)
        db.execute("DELETE FROM checkpoints WHERE checkpoint_id > ?", (cut,))
        db.execute("DELETE FROM writes WHERE checkpoint_id > ?", (cut,))
        db.commit()
    for name in RESULTS:
        (stopped / name).unlink()
    monkeypatch.setattr(pipeline, "DURABILITY", "exit")
    pipeline.run_pose(recording, stopped, PoseContext(), quiet=True, resume=True)
    for name in RESULTS:
        assert (stopped / name).read_bytes() == (whole / name).read_bytes(), name
    # Frame 7 started from the window frame 6's accept_frame left (not the one before it).
    trace = [json.loads(line) for line in (stopped / "trace.jsonl").read_text().splitlines()]
    starts = [r["input"] for r in trace if r["node"] == "detect_centroids" and r["frame"] == 7]
    assert "window=[4, 5, 6]" in starts[-1]
