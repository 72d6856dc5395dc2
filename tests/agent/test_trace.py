"""``trace``: the runners record every node execution, printed in order and filtered by clip or frame."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from agent.backends.classical_pose import ClassicalPoseBackend
from agent.pose_context import PoseContext
from agent.pose_pipeline import run_pose
from agent.run import main
from agent.trace_log import TraceRecorder
from tests.agent.test_replay import scripted_model
from tests.fixtures.openai_server import ScriptedOpenAIServer
from tests.fixtures.tiny_recording import make_tiny_recording
from tests.fixtures.tiny_session import FAST_DEC, make_tiny_session

NODES = ["extract_features", "cluster_dec", "cut_clips", "caption_clips", "merge_segments", "write_results"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny session analysed twice: classical, and openai against the scripted server."""
    root = tmp_path_factory.mktemp("trace")
    session = root / "session"
    make_tiny_session(session, seed=2, seconds=6.0, size=128)
    common = ["behavior", str(session), "--features", "keypoint", "--clusters", "4", "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAST_DEC.items():
            patch.setenv(key, value)
        assert main([*common, "--out", str(root / "classical"), "--no-clip-videos"]) == 0
        with ScriptedOpenAIServer(scripted_model) as server:
            assert main([*common, "--out", str(root / "openai"), "--backend", "openai", "--base-url",
                         server.base_url, "--model", "scripted"]) == 0
    return root / "classical", root / "openai"


def _trace_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]


def _printed_nodes(text):
    return [line.split()[0] for line in text.splitlines()[1:] if line and not line.startswith(" ")
            and not line.startswith("call ")]


def test_every_node_is_traced_in_graph_order_with_one_caption_task_per_clip(runs, capsys):
    classical, _openai = runs
    rows = _trace_rows(classical)
    names = [row["node"] for row in rows]
    assert list(dict.fromkeys(names)) == NODES
    clips = pd.read_csv(classical / "clips.csv")
    captions = [row for row in rows if row["node"] == "caption_clips"]
    assert sorted(row["clip_id"] for row in captions) == sorted(clips["clip_id"])
    assert all(row["animal"] == row["clip_id"].rsplit("-", 1)[0] for row in captions)
    assert all(row["error"] is None and row["duration_s"] >= 0 for row in rows)
    capsys.readouterr()
    assert main(["trace", str(classical)]) == 0
    assert _printed_nodes(capsys.readouterr().out) == names
    # --limit cuts the table, and the header says by how much.
    assert main(["trace", str(classical), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert _printed_nodes(printed) == names[:2]
    assert f"2 of {len(names)} node executions" in printed.splitlines()[0]


def test_clip_filter_keeps_only_that_clips_task_and_model_calls(runs, capsys):
    _classical, openai_run = runs
    clip_id = pd.read_csv(openai_run / "clips.csv")["clip_id"].iloc[1]
    capsys.readouterr()
    assert main(["trace", str(openai_run), "--clip", clip_id]) == 0
    text = capsys.readouterr().out
    assert _printed_nodes(text) == ["caption_clips"] and f"clip_id={clip_id}" in text
    calls = [line for line in text.splitlines() if line.startswith("call ")]
    assert len(calls) == 1 and f"clip={clip_id} " in calls[0] and "caption_clips.md" in calls[0]
    assert main(["trace", str(openai_run), "--node", "merge_segments"]) == 0
    assert set(_printed_nodes(capsys.readouterr().out)) == {"merge_segments"}


def test_a_filter_the_run_cannot_match_is_refused_naming_what_it_has(runs, capsys):
    classical, _openai = runs
    capsys.readouterr()
    # A behavior run has clips, not frames: an empty table would read as "nothing happened".
    assert main(["trace", str(classical), "--frame", "3"]) == 2
    captured = capsys.readouterr()
    assert "--frame" in captured.err and "behavior run" in captured.err and not captured.out
    assert main(["trace", str(classical), "--node", "caption_clip"]) == 2
    err = capsys.readouterr().err
    assert "'caption_clip' is not a node" in err and all(node in err for node in NODES)


def test_pose_trace_names_frame_and_camera_and_filters_by_frame(tmp_path, capsys):
    recording = make_tiny_recording(tmp_path / "rec", n_frames=6, seed_frames=(0, 1, 2))
    assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = _trace_rows(tmp_path / "run")
    # The classical tracker runs each stage as one task for every camera: one row per attempt,
    # but for the retries that go straight to Stage 4 (no view had anything new to find).
    attempts = Counter(row["frame"] for row in rows if row["node"] == "refine_cross_view")
    stage_4_only = Counter(row["frame"] for row, following in zip(rows[:-1], rows[1:], strict=True)
                           if (row["node"], following["node"]) == ("quality_control",
                                                                   "refine_cross_view"))
    for node in ("locate_regions", "assign_within_region", "reconcile_regions"):
        stage = [row for row in rows if row["node"] == node]
        assert Counter(row["frame"] for row in stage) + stage_4_only == attempts
        assert set(attempts) == {3, 4, 5}
        assert not any("camera" in row for row in stage)
    capsys.readouterr()
    assert main(["trace", str(tmp_path / "run"), "--frame", "4"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines()[1:] if not line.startswith(" ")]
    assert printed and all("frame=4" in line for line in printed)
    assert len(printed) == sum(1 for row in rows if row.get("frame") == 4)
    assert main(["trace", str(tmp_path / "run"), "--clip", "mouse1-0"]) == 2
    assert "pose run" in capsys.readouterr().err
    # One task per camera (and region): rows name them.
    per_view = ClassicalPoseBackend(fan_out="per_view")
    run_pose(recording, tmp_path / "per_view", PoseContext(), quiet=True, backend=per_view)
    rows = _trace_rows(tmp_path / "per_view")
    stage_1 = [row for row in rows if row["node"] == "locate_regions"]
    assert {(row["frame"], row["camera"]) for row in stage_1} >= {(frame, camera) for frame in (3, 4, 5)
                                                                   for camera in ("cam0", "cam1", "cam2")}
    assert all("region" in row for row in rows if row["node"] == "assign_within_region")


def test_buffered_trace_keeps_every_line_in_order(tmp_path):
    recorder = TraceRecorder(tmp_path / "trace.jsonl", flush_after=("accept_frame",))
    nodes = ["locate_regions", "assign_within_region", "accept_frame", "locate_regions"]
    for number, node in enumerate(nodes):
        recorder.on_task_event({"id": str(number), "name": node, "input": {"frame": number}})
        recorder.on_task_event({"id": str(number), "name": node, "result": {}})
        if number == 1:  # nothing is written before the frame is accepted
            assert not (tmp_path / "trace.jsonl").exists()
    assert [row["node"] for row in _trace_rows(tmp_path)] == nodes[:3]
    recorder.close()
    assert [(row["frame"], row["node"]) for row in _trace_rows(tmp_path)] == list(enumerate(nodes))
