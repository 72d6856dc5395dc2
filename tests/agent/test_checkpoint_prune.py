"""Tests for agent/checkpoint_prune.py: a finished frame keeps only the checkpoints a fork needs."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

import agent.pose_pipeline as pipeline
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.checkpoint_prune import CheckpointPruner
from agent.pose_context import PoseContext
from agent.replay import lineage
from graphs.pose import build_pose_graph
from tests.fixtures.tiny_recording import make_tiny_recording

RESULTS = ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv")
N_FRAMES = 12


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return make_tiny_recording(tmp_path_factory.mktemp("prune") / "rec", n_frames=N_FRAMES,
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
def test_finished_frames_keep_their_start_and_accept_checkpoints(recording, tmp_path, monkeypatch,
                                                                 fan_out):
    backend = ClassicalPoseBackend(fan_out=fan_out)
    pipeline.run_pose(recording, tmp_path / "pruned", PoseContext(), quiet=True, backend=backend)
    monkeypatch.setattr(CheckpointPruner, "prune", lambda self: 0)
    pipeline.run_pose(recording, tmp_path / "kept", PoseContext(), quiet=True, backend=backend)
    for name in RESULTS:  # pruning changes nothing the run computes
        assert (tmp_path / "pruned" / name).read_bytes() == (tmp_path / "kept" / name).read_bytes()
    (pruned_main, pruned_sub), (kept_main, kept_sub) = _checkpoints(tmp_path / "pruned"), \
        _checkpoints(tmp_path / "kept")
    tracked = N_FRAMES - 3
    assert kept_main > 5 * tracked  # a dozen supersteps per frame without pruning
    assert pruned_main <= 2 * tracked + 4  # start and accept per frame, the input, the end
    assert pruned_sub == 0 and (kept_sub > 0) == (fan_out == "per_view")
    # The history is still one chain from the end back to the run's input ...
    history = _history(tmp_path / "pruned")
    assert history[-1].metadata["source"] == "input" and len(history) == pruned_main
    # ... through the start of every tracked frame, where a fork begins.
    starts = [snap.values["frame"] for snap in history if tuple(snap.next) == ("detect_centroids",)]
    assert sorted(starts) == list(range(3, N_FRAMES))
