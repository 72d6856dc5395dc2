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
