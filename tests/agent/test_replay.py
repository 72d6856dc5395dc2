"""``replay``: byte-identical re-execution without a server, forks from a checkpoint, refusals."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.replay import BEHAVIOR_RESULTS, POSE_RESULTS, lineage
from agent.run import main
from graphs.pose import build_pose_graph
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer
from tests.fixtures.scripted_pose_model import pose_responder
from tests.fixtures.tiny_recording import make_tiny_recording
from tests.fixtures.tiny_session import FAST_DEC, make_tiny_session

FAST = {**FAST_DEC, "BVLM_MAX_CONCURRENCY": "4"}
PROJECT_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
CLIP_LINE = re.compile(r'^\{"clip_id".*\}$', re.MULTILINE)
CLIP_NUMBER = re.compile(r"mouse\d+-(\d{4})")


@pytest.fixture(autouse=True)
def fast_dec(monkeypatch):
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "session"
    make_tiny_session(path, seed=5, seconds=6.0, size=128)
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return make_tiny_recording(tmp_path_factory.mktemp("replay") / "rec", n_frames=10, seed_frames=(0, 1, 2))


def scripted_model(body: dict) -> Reply:
    """Captions alternate two labels by clip number; merges keep one segment per clip (they tile)."""
    if body.get("tools"):
        text = body["messages"][0]["content"]
        clips = [json.loads(line) for line in CLIP_LINE.findall(text)]
        ends = [clip["start_frame"] for clip in clips[1:]] + [clips[-1]["end_frame"]]
        segments = [{"start_frame": clip["start_frame"], "end_frame": end, "label": clip["label"],
                     "description": clip["description"], "clip_ids": [clip["clip_id"]]}
                    for clip, end in zip(clips, ends, strict=True)]
        return Reply(tool_calls=[{"name": "MergeAnswer", "args": {"segments": segments}}])
    text = body["messages"][0]["content"][0]["text"]
    number = int(CLIP_NUMBER.search(text).group(1))
    label = ("locomotion", "grooming")[number % 2]
    return Reply(content=json.dumps({"label": label, "description": f"clip {number} of the scripted model"}))


def _behavior(session, out, *extra):
    return main(["behavior", str(session), "--out", str(out), "--features", "keypoint", "--clusters", "4",
                 "--quiet", *extra])


def _openai_run(session, out, *extra):
    with ScriptedOpenAIServer(scripted_model) as server:
        assert _behavior(session, out, "--backend", "openai", "--base-url", server.base_url,
                         "--model", "scripted", *extra) == 0
    return server


def _nodes(run_dir):
    return [json.loads(line)["node"] for line in (run_dir / "trace.jsonl").read_text().splitlines()]


def _same_results(a, b, names):
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in names)


def test_replay_of_a_classical_behavior_run_is_byte_identical(session_dir, tmp_path, capsys):
    assert _behavior(session_dir, tmp_path / "run", "--no-clip-videos") == 0
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    assert "identical" in capsys.readouterr().out
    assert _same_results(tmp_path / "run", tmp_path / "again", BEHAVIOR_RESULTS)
    run_json = json.loads((tmp_path / "again" / "run.json").read_text())
    assert run_json["replay_of"] == str((tmp_path / "run").resolve())


def test_replay_of_an_openai_run_needs_no_server_and_a_missing_answer_is_an_error(session_dir, tmp_path, capsys):
    server = _openai_run(session_dir, tmp_path / "run")
    original_calls = (tmp_path / "run" / "calls.jsonl").read_text().splitlines()
    assert len(server.requests) == len(original_calls) > 0
    # the server is shut down: every answer must come from the call log
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    assert _same_results(tmp_path / "run", tmp_path / "again", BEHAVIOR_RESULTS)
    replayed_calls = [json.loads(line) for line in (tmp_path / "again" / "calls.jsonl").read_text().splitlines()]
    assert sorted(c["request_sha256"] for c in replayed_calls) == sorted(json.loads(c)["request_sha256"]
                                                                         for c in original_calls)

    first_caption = next(line for line in original_calls if '"caption_clips"' in line)
    (tmp_path / "run" / "calls.jsonl").write_text("\n".join(c for c in original_calls if c != first_caption))
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "diverged")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "calls.jsonl" in err[0]
    assert not (tmp_path / "diverged").exists()


def test_fork_from_a_node_reruns_that_node_and_after_into_the_new_directory(session_dir, tmp_path):
    assert _behavior(session_dir, tmp_path / "run", "--no-clip-videos") == 0
    before = {name: (tmp_path / "run" / name).read_bytes() for name in BEHAVIOR_RESULTS}
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "fork"), "--from", "caption_clips"]) == 0
    nodes = _nodes(tmp_path / "fork")
    assert set(nodes) == {"caption_clips", "merge_segments", "write_results"}
    assert nodes.count("caption_clips") == len((tmp_path / "run" / "clips.csv").read_text().splitlines()) - 1
    assert _same_results(tmp_path / "run", tmp_path / "fork", BEHAVIOR_RESULTS)
    assert before == {name: (tmp_path / "run" / name).read_bytes() for name in BEHAVIOR_RESULTS}
    fork = json.loads((tmp_path / "fork" / ".bvlm" / "meta.json").read_text())["fork"]
    assert fork["node"] == "caption_clips" and fork["checkpoint_id"]
    # replaying the fork repeats the fork from the same checkpoint
    assert main(["replay", str(tmp_path / "fork"), "--out", str(tmp_path / "fork-again")]) == 0
    assert sorted(_nodes(tmp_path / "fork-again")) == sorted(nodes)


def test_fork_with_new_prompts_sends_only_the_changed_requests_to_the_server(session_dir, tmp_path):
    _openai_run(session_dir, tmp_path / "run")
    prompts = shutil.copytree(PROJECT_PROMPTS, tmp_path / "prompts")
    merge_prompt = prompts / "behavior" / "merge_segments.md"
    merge_prompt.write_text(merge_prompt.read_text() + "\nKeep one segment per clip.\n")
    with ScriptedOpenAIServer(scripted_model) as server:
        assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "fork"), "--from", "caption_clips",
                     "--prompts", str(prompts), "--base-url", server.base_url]) == 0
    # captions: same requests, answered from the log; merges: new prompt, asked of the server
    assert server.requests and all(body.get("tools") for body in server.requests)
    original = json.loads((tmp_path / "run" / "run.json").read_text())["prompts"]
    forked = json.loads((tmp_path / "fork" / "run.json").read_text())["prompts"]
    assert forked["behavior/caption_clips"] == original["behavior/caption_clips"]
    assert forked["behavior/merge_segments"] != original["behavior/merge_segments"]
    assert _same_results(tmp_path / "run", tmp_path / "fork", ("clips.csv",))


def test_replay_of_a_pose_run_is_byte_identical(recording, tmp_path):
    assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    assert _same_results(tmp_path / "run", tmp_path / "again", POSE_RESULTS)
    replayed = json.loads((tmp_path / "again" / "run.json").read_text())
    assert replayed["replay_of"] == str((tmp_path / "run").resolve())


def test_replay_of_an_openai_pose_run_needs_no_server(recording, tmp_path):
    with ScriptedOpenAIServer(pose_responder("oracle")) as server:
        assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet", "--backend", "openai",
                     "--base-url", server.base_url, "--model", "scripted"]) == 0
    assert server.requests
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    assert _same_results(tmp_path / "run", tmp_path / "again", POSE_RESULTS)
    assert len((tmp_path / "again" / "calls.jsonl").read_text().splitlines()) == len(server.requests)


def _tracked_frames_after_fork(run_dir: Path) -> list[int]:
    """Frames whose Stage 4 ran in ``run_dir`` (its trace holds only what the fork ran)."""
    records = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    return sorted({record["frame"] for record in records if record["node"] == "refine_cross_view"})


def _fork_branch_in_lineage(run_dir: Path, frame: int) -> bool:
    """Whether the fork's history runs from its end back through the fork's update to the
    checkpoint naming ``frame`` as the next to track."""
    meta = json.loads((run_dir / ".bvlm" / "meta.json").read_text())
    with closing(sqlite3.connect(run_dir / ".bvlm" / "checkpoints.sqlite", check_same_thread=False)) as db:
        graph = build_pose_graph().compile(checkpointer=SqliteSaver(db))
        history = lineage(graph, {"configurable": {"thread_id": meta["thread_id"]}})
    update = next(i for i, snap in enumerate(history) if snap.metadata.get("source") == "update")
    start = history[update + 1]
    return start.values["frame"] == frame and not start.next and start.metadata["source"] == "loop"


def test_fork_of_a_pose_run_tracks_again_from_the_frame(recording, tmp_path):
    assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "fork"), "--from", "6"]) == 0
    assert _tracked_frames_after_fork(tmp_path / "fork") == [6, 7, 8, 9]
    assert _fork_branch_in_lineage(tmp_path / "fork", 6)
    fork = json.loads((tmp_path / "fork" / "run.json").read_text())["fork"]
    assert (fork["frame"], fork["from_run"]) == (6, str((tmp_path / "run").resolve()))
    assert _same_results(tmp_path / "run", tmp_path / "fork", POSE_RESULTS)


@pytest.mark.parametrize(("frame", "message"), [("1", "has no checkpoint where frame"),
                                              ("999", "has no checkpoint where frame"),
                                              ("-1", "frame number (0 or more)")])
def test_a_fork_from_a_frame_the_run_cannot_fork_from_leaves_out_as_it_was(recording, tmp_path,
                                                                           capsys, frame, message):
    assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "keep")
    before = sorted(path.relative_to(tmp_path / "keep") for path in (tmp_path / "keep").rglob("*"))
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "keep"), "--overwrite",
                 "--from", frame]) == 2
    assert message in capsys.readouterr().err
    assert sorted(path.relative_to(tmp_path / "keep")
                  for path in (tmp_path / "keep").rglob("*")) == before


def test_a_fork_from_the_first_tracked_frame_and_a_fork_of_the_fork(recording, tmp_path):
    assert main(["pose", str(recording), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "fork"), "--from", "3"]) == 0
    assert _tracked_frames_after_fork(tmp_path / "fork") == list(range(3, 10))
    assert _same_results(tmp_path / "run", tmp_path / "fork", POSE_RESULTS)
    # From the fork, at a frame before its own fork point: the original run's checkpoint.
    assert main(["replay", str(tmp_path / "fork"), "--out", str(tmp_path / "again"), "--from", "5"]) == 0
    assert _tracked_frames_after_fork(tmp_path / "again") == [5, 6, 7, 8, 9]
    assert _same_results(tmp_path / "run", tmp_path / "again", POSE_RESULTS)


def _no_meta(run):
    shutil.rmtree(run / ".bvlm")
    return "meta.json"


def _garbled_meta(run):
    (run / ".bvlm" / "meta.json").write_text("{not json")
    return "meta.json"


def _foreign_meta(run):
    (run / ".bvlm" / "meta.json").write_text(json.dumps({"kind": "spreadsheet"}))
    return "meta.json"


def _unfinished(run):
    (run / "run.json").unlink()
    return "run.json"


def _model_run_without_calls(run):
    run_json = json.loads((run / "run.json").read_text())
    run_json["config"]["backend"] = "openai"
    meta = json.loads((run / ".bvlm" / "meta.json").read_text())
    meta["context"]["backend"] = "openai"
    (run / "run.json").write_text(json.dumps(run_json))
    (run / ".bvlm" / "meta.json").write_text(json.dumps(meta))
    return "calls.jsonl"


def _damaged_checkpoints(run):
    (run / ".bvlm" / "checkpoints.sqlite").write_bytes(b"not a database " * 100)
    return "damaged checkpoint database"


@pytest.mark.parametrize("breaker", [_no_meta, _garbled_meta, _foreign_meta, _unfinished, _model_run_without_calls,
                                     _damaged_checkpoints])
def test_a_corrupt_or_foreign_run_directory_is_one_error_line(session_dir, tmp_path, capsys, breaker):
    assert _behavior(session_dir, tmp_path / "run", "--no-clip-videos") == 0
    culprit = breaker(tmp_path / "run")
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and culprit in err[0]
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("start", ["no_such_node", "12"])
def test_an_unknown_fork_point_is_refused(session_dir, tmp_path, capsys, start):
    assert _behavior(session_dir, tmp_path / "run", "--no-clip-videos") == 0
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "run"), "--out", str(tmp_path / "fork"), "--from", start]) == 2
    assert capsys.readouterr().err.startswith("error: --from") and not (tmp_path / "fork").exists()
