"""Chat over results: tools on a fixed results directory, slash commands, the agent loop."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from agent.chat_tools import ResultsView
from agent.commands.chat import Refusal, run_command
from agent.errors import InputError
from agent.run import main
from graphs.chat import ChatContext, build_chat_graph, final_answer
from tests.fixtures.fake_chat import ScriptedChatModel

FPS = 10.0
# (animal, start_frame, end_frame, label): mouse1 and mouse2 chase overlap 20-40 -> 2.0 s
SEGMENTS = [
    ("mouse1", 0, 20, "locomotion"), ("mouse1", 20, 50, "chase"), ("mouse1", 50, 80, "huddle"), ("mouse1", 80, 100, "chase"),
    ("mouse2", 0, 40, "chase"), ("mouse2", 40, 100, "stationary"),
]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def behavior_results(tmp_path: Path) -> Path:
    out = tmp_path / "behavior"
    (out / "clips").mkdir(parents=True)
    rows, clip_rows = [], []
    for index, (animal, start, end, label) in enumerate(SEGMENTS):
        clip_id = f"c{index:03d}"
        rows.append([f"s{index:03d}", animal, start, end, start / FPS, end / FPS, label, f"{animal} does {label}", clip_id])
        clip_rows.append([clip_id, animal, start, end, start / FPS, end / FPS, index, label, f"clip of {label}"])
        (out / "clips" / f"{clip_id}.mp4").write_bytes(b"")
    _write_csv(out / "segments.csv", ["segment_id", "animal", "start_frame", "end_frame", "start_s", "end_s", "label", "description", "clip_ids"], rows)
    _write_csv(out / "clips.csv", ["clip_id", "animal", "start_frame", "end_frame", "start_s", "end_s", "cluster", "label", "description"], clip_rows)
    return out


@pytest.fixture
def pose_results(tmp_path: Path) -> Path:
    out = tmp_path / "pose"
    out.mkdir()
    rows = [[f, k, 1.0 + f if k == "nose" else 0.5, 3, int(f == 2 and k == "nose"), "reprojection" if f == 2 and k == "nose" else ""]
            for f in range(4) for k in ("nose", "tail")]
    rows[-1][4:] = [1, "tail_order"]  # frame 3, tail
    _write_csv(out / "qc.csv", ["frame", "keypoint", "error_px", "ncams", "flagged", "reason"], rows)
    return out


def test_time_budget_matches_an_independent_count(behavior_results):
    view = ResultsView.open(behavior_results)
    table = view.time_budget("mouse1")
    chase = [line for line in table.splitlines() if " chase " in f" {line} "][0].split()
    expected_total = sum(end - start for a, start, end, label in SEGMENTS if a == "mouse1" and label == "chase") / FPS
    assert float(chase[2]) == pytest.approx(expected_total)
    assert int(chase[4]) == 2  # two chase bouts


def test_segments_filter_and_detail(behavior_results):
    view = ResultsView.open(behavior_results)
    text = run_command(view, "/segments mouse1 chase 0-4")
    assert "s001" in text and "s003" not in text and "mouse2" not in text
    detail = view.segment_detail("s001")
    assert "clip c001" in detail and "clips/c001.mp4" in detail


def test_co_occurrence_and_transitions(behavior_results):
    view = ResultsView.open(behavior_results)
    rows = {tuple(line.split()[:4]): float(line.split()[4]) for line in view.co_occurrence().splitlines()[1:]}
    # mouse1 chase 2-5 s and 8-10 s; mouse2 chase 0-4 s, stationary 4-10 s
    assert rows[("mouse1", "chase", "mouse2", "chase")] == pytest.approx(2.0)
    assert rows[("mouse1", "chase", "mouse2", "stationary")] == pytest.approx(1.0 + 2.0)
    assert rows[("mouse1", "huddle", "mouse2", "stationary")] == pytest.approx(3.0)
    assert "huddle" in view.transitions("mouse1")


def test_pose_commands(pose_results):
    view = ResultsView.open(pose_results)
    assert run_command(view, "/flagged nose").startswith("1 flagged labels in 1 frames")
    errors = view.keypoint_errors().splitlines()
    nose = [line for line in errors if line.split()[0] == "nose"][0].split()
    assert float(nose[1]) == pytest.approx((1 + 2 + 3 + 4) / 4)
    with pytest.raises(Refusal, match="unknown or incomplete command '/stats'"):
        run_command(view, "/stats")


def test_foreign_directory_is_refused(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError):
        ResultsView.open(tmp_path)
    assert main(["chat", str(tmp_path), "--ask", "/stats"]) == 2
    assert "neither segments.csv" in capsys.readouterr().err


def test_offline_ask_without_a_model_says_so(behavior_results, capsys):
    # A refusal is not an answer: --ask exits 2, so a script can tell.
    assert main(["chat", str(behavior_results), "--ask", "who chases most?"]) == 2
    captured = capsys.readouterr()
    assert "--ask: no model configured" in captured.err and not captured.out


def test_ask_exits_2_on_a_refused_command_and_0_on_an_answer(pose_results, capsys):
    assert main(["chat", str(pose_results), "--ask", "/flagged nsoe"]) == 2
    captured = capsys.readouterr()
    assert "'nsoe' is neither a keypoint nor a reason" in captured.err and not captured.out
    assert main(["chat", str(pose_results), "--ask", "/flaged"]) == 2
    assert "unknown or incomplete command '/flaged'" in capsys.readouterr().err
    assert main(["chat", str(pose_results), "--ask", "/flagged nose"]) == 0
    assert capsys.readouterr().out.startswith("1 flagged labels in 1 frames")


def test_the_interactive_chat_prints_a_refusal_and_goes_on(pose_results, capsys, monkeypatch):
    lines = iter(["/flagged nsoe", "/flagged nose", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
    assert main(["chat", str(pose_results)]) == 0
    out = capsys.readouterr().out
    assert "cannot answer: 'nsoe' is neither" in out and "1 flagged labels in 1 frames" in out


def test_agent_loop_calls_tools_and_answers(behavior_results):
    view = ResultsView.open(behavior_results)
    model = ScriptedChatModel(script=[
        AIMessage(content="", tool_calls=[{"name": "time_budget", "args": {"animal": "mouse1"}, "id": "a"}]),
        AIMessage(content="mouse1 chased for 5.0 s in 2 bouts (segments s001, s003)."),
    ])
    graph = build_chat_graph(model, view.tools())
    state = graph.invoke({"messages": [("user", "How long does mouse1 chase?")], "tool_rounds": 0},
                         context=ChatContext(system_prompt="test"))
    assert "5.0 s" in final_answer(state)
    tool_message = state["messages"][2]
    assert tool_message.type == "tool" and "chase" in tool_message.content
    assert model.calls[0][0].type == "system"


def test_agent_loop_is_bounded(behavior_results):
    view = ResultsView.open(behavior_results)
    model = ScriptedChatModel(script=lambda messages: AIMessage(
        content="", tool_calls=[{"name": "co_occurrence", "args": {}, "id": f"x{len(messages)}"}]))
    graph = build_chat_graph(model, view.tools())
    state = graph.invoke({"messages": [("user", "loop")], "tool_rounds": 0}, context=ChatContext(system_prompt="t", max_tool_rounds=2))
    assert state["tool_rounds"] == 2
    assert "tool-call budget" in final_answer(state)


@pytest.mark.parametrize(("command", "named"), [
    ("/segments mouse9", "'mouse9' is not an animal"),       # a typo used to list every animal
    ("/segments mouse1 chse", "'chse' is not an animal"),
    ("/segments mouse1 chase huddle", "one label at most"),
    ("/stats mouse9", "no animal 'mouse9'"),
    ("/transitions mouse9", "no animal 'mouse9'"),
    ("/cooccur mouse1", "takes no words"),
])
def test_behavior_commands_refuse_names_the_run_lacks(behavior_results, command, named):
    with pytest.raises(Refusal) as refused:
        run_command(ResultsView.open(behavior_results), command)
    text = str(refused.value)
    assert text.startswith("cannot answer") and named in text
    assert "mouse1, mouse2" in text or "takes" in text or "at most" in text


def test_pose_flagged_refuses_unknown_keypoint_or_reason(pose_results):
    view = ResultsView.open(pose_results)
    with pytest.raises(Refusal, match="its reasons: reprojection"):
        run_command(view, "/flagged nose reprojectoin")
    with pytest.raises(ValueError, match="its keypoints: nose, tail"):
        view.flagged_labels(keypoint="paw")
    assert run_command(view, "/flagged reprojection").startswith("1 flagged labels")
    # A mistyped keypoint is named with the keypoints as well as the reasons.
    with pytest.raises(Refusal, match="its keypoints: nose, tail"):
        run_command(view, "/flagged nsoe")
    # A reason is matched whole: "order" is not "tail_order".
    with pytest.raises(Refusal, match="its reasons: reprojection, tail_order"):
        run_command(view, "/flagged order")
    assert run_command(view, "/flagged tail_order").startswith("1 flagged labels")


def test_model_tools_answer_unknown_names_with_the_known_ones(behavior_results):
    tools = {tool.name: tool for tool in ResultsView.open(behavior_results).tools()}
    text = tools["list_segments"].invoke({"animal": "mouse9"})
    assert text.startswith("cannot answer") and "mouse1, mouse2" in text


def test_a_hand_edited_qc_csv_is_one_error_naming_it(pose_results, capsys):
    qc = pose_results / "qc.csv"
    qc.write_text(qc.read_text().replace(",1,reprojection", ",yes,reprojection"))
    assert main(["chat", str(pose_results), "--ask", "/flagged"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qc.csv: flagged must be 0 or 1, got 'yes' on line" in err[0]

