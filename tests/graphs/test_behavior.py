"""Tests of graphs/behavior.py: wiring, state without arrays, fan-out, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.behavior_context import BehaviorContext
from graphs import behavior
from graphs.behavior import build_behavior_graph
from tests.fixtures.tiny_session import make_tiny_session

NODES = ["extract_features", "cluster_dec", "cut_clips", "caption_clips", "merge_segments", "write_results"]


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("behavior") / "session"
    make_tiny_session(path, seed=3)
    return path


def _context(**changes):
    return BehaviorContext(features="keypoint", n_clusters=4, dec_pretrain_iters=30, dec_finetune_iters=30,
                           clip_videos=False, max_concurrency=2, **changes)


def _inputs(session_dir, run_dir):
    (run_dir / "cache").mkdir(parents=True, exist_ok=True)
    return {"session_dir": str(session_dir), "run_dir": str(run_dir), "cache_dir": str(run_dir / "cache")}


def _config(thread="t"):
    return {"max_concurrency": 2, "configurable": {"thread_id": thread}}


def test_nodes_are_the_stages_in_order():
    graph = build_behavior_graph().compile()
    assert [n for n in graph.get_graph().nodes if not n.startswith("__")] == NODES
    for number, name in enumerate(NODES, start=1):
        assert getattr(behavior, name).__doc__.startswith(f"Stage {number}: ")


def _assert_small(value, where="state"):
    assert not isinstance(value, np.ndarray | np.generic), f"{where} holds a numpy value"
    if isinstance(value, dict):
        for key, item in value.items():
            _assert_small(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _assert_small(item, f"{where}[{index}]")


def test_run_fans_out_one_caption_per_clip_and_tiles_every_animal(session_dir, tmp_path):
    graph = build_behavior_graph().compile(checkpointer=InMemorySaver())
    state = graph.invoke(_inputs(session_dir, tmp_path), config=_config(), context=_context())
    _assert_small(state)
    json.dumps(state)  # paths, ids and small summaries only
    assert sorted(c["clip_id"] for c in state["captions"]) == sorted(c["clip_id"] for c in state["clips"])
    for animal in state["session"]["animals"]:
        spans = sorted((s["start_frame"], s["end_frame"]) for s in state["segments"] if s["animal"] == animal)
        assert spans[0][0] == 0 and spans[-1][1] == state["session"]["n_frames"]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert {p.split("/")[-1] for p in state["outputs"].values()} == {"clips.csv", "segments.csv", "review.csv", "ethogram.png"}


def test_interrupted_run_resumes_from_its_checkpoint(session_dir, tmp_path):
    saver = InMemorySaver()
    graph = build_behavior_graph().compile(checkpointer=saver, interrupt_before=["merge_segments"])
    graph.invoke(_inputs(session_dir, tmp_path), config=_config("r"), context=_context())
    paused = graph.get_state(_config("r"))
    assert paused.next == ("merge_segments",) and "segments" not in paused.values
    resumed = build_behavior_graph().compile(checkpointer=saver)
    state = resumed.invoke(None, config=_config("r"), context=_context())
    assert state["segments"] and not resumed.get_state(_config("r")).next
    assert len(state["captions"]) == len(state["clips"])
