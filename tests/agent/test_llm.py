"""The model client: structured answers, bounded retries, tool rounds, call log, replay."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from agent.errors import InputError
from agent.llm import (
    UNREACHABLE_CALLS,
    CallLog,
    CallRequest,
    ModelClient,
    load_chat_model,
    request_hash,
    user_message,
)
from agent.prompts import load_prompt
from agent.replay_log import ReplayLog
from tests.fixtures.fake_chat import ScriptedChatModel
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


class Pick(BaseModel):
    """Which numbered spot is the keypoint."""

    centroid: int = Field(description="spot number")


class ReprojectionArgs(BaseModel):
    centroid: int


@pytest.fixture
def prompt(tmp_path: Path):
    folder = tmp_path / "prompts" / "test"
    folder.mkdir(parents=True)
    (folder / "pick.md").write_text("<!--\n$what: the thing to pick\n-->\nPick $what.\n")
    return load_prompt("test/pick", tmp_path / "prompts")


def _request(prompt, images=()):
    return CallRequest(node="assign_within_region", item="frame=3", prompt=prompt,
                       messages=[user_message(prompt.render(what="the nose"), images)])


def _exists(answer: Pick) -> str | None:
    return None if 0 <= answer.centroid < 5 else f"centroid {answer.centroid} does not exist"


def _client(model, tmp_path, **kwargs):
    return ModelClient(model, model_name="scripted", log=CallLog(tmp_path / "calls.jsonl"), retry_backoff_s=0.0, **kwargs)


def _log(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_prompt_header_is_stripped_and_placeholders_documented(prompt):
    assert prompt.text == "Pick $what.\n"
    assert prompt.placeholders == {"what"}
    with pytest.raises(KeyError):
        prompt.render()


def test_valid_answer_is_accepted_and_logged(prompt, tmp_path):
    model = ScriptedChatModel(script=['{"centroid": 2}'])
    outcome = _client(model, tmp_path).call(_request(prompt, [PNG]), Pick, validate=_exists)
    assert (outcome.answer, outcome.flagged, outcome.attempts) == (Pick(centroid=2), False, 1)
    (entry,) = _log(tmp_path)
    assert entry["prompt_sha256"] == prompt.sha256 and entry["outcome"] == "accepted"
    assert len(entry["image_sha256"]) == 1 and entry["node"] == "assign_within_region"
    assert model.bound_kwargs[0]["response_format"]["json_schema"]["name"] == "Pick"


def test_malformed_then_valid_answer_is_retried_with_the_problem_stated(prompt, tmp_path):
    model = ScriptedChatModel(script=["not json at all", "```json\n{\"centroid\": 1}\n```"])
    outcome = _client(model, tmp_path).call(_request(prompt), Pick, validate=_exists)
    assert outcome.answer == Pick(centroid=1) and outcome.attempts == 2
    assert "not usable" in model.calls[1][-1].content
    assert [e["outcome"] for e in _log(tmp_path)] == ["invalid", "accepted"]


def test_impossible_answers_are_flagged_after_the_bound(prompt, tmp_path):
    model = ScriptedChatModel(script=['{"centroid": 9}'] * 3)
    outcome = _client(model, tmp_path, max_retries=2).call(_request(prompt), Pick, validate=_exists)
    assert outcome.flagged and outcome.answer is None and outcome.attempts == 3
    assert outcome.reason == "centroid 9 does not exist"
    assert len(model.calls) == 3


def test_transport_errors_are_retried_then_flagged(prompt, tmp_path):
    timeout = openai.APITimeoutError(request=__import__("httpx").Request("POST", "http://x"))
    model = ScriptedChatModel(script=[timeout, timeout, '{"centroid": 0}'])
    assert _client(model, tmp_path, max_retries=2).call(_request(prompt), Pick).answer == Pick(centroid=0)
    model = ScriptedChatModel(script=[timeout] * 5)
    outcome = _client(model, tmp_path, max_retries=1).call(_request(prompt), Pick)
    assert outcome.flagged and outcome.reason.startswith("transport") and len(model.calls) == 2


def test_a_server_that_never_answers_stops_the_run_naming_it(prompt, tmp_path):
    refused = openai.APIConnectionError(request=__import__("httpx").Request("POST", "http://x"))
    client = _client(ScriptedChatModel(script=[refused] * 20), tmp_path, max_retries=1,
                     server="http://127.0.0.1:9/v1")
    for _ in range(UNREACHABLE_CALLS - 1):  # flagged call by call at first
        assert client.call(_request(prompt), Pick).reason.startswith("transport")
    with pytest.raises(InputError, match="gave no answer to 3 requests in a row") as info:
        client.call(_request(prompt), Pick)
    assert str(info.value.path) == "http://127.0.0.1:9/v1"


def test_a_server_that_answered_once_is_not_given_up_on(prompt, tmp_path):
    refused = openai.APIConnectionError(request=__import__("httpx").Request("POST", "http://x"))
    client = _client(ScriptedChatModel(script=['{"centroid": 0}', *[refused] * 20]), tmp_path, max_retries=1)
    assert client.call(_request(prompt), Pick).answer == Pick(centroid=0)
    assert all(client.call(_request(prompt), Pick).flagged for _ in range(2 * UNREACHABLE_CALLS))


def test_a_body_that_is_no_completion_is_a_failed_attempt_not_a_crash(prompt, tmp_path):
    with ScriptedOpenAIServer(lambda body: Reply(raw_body=b"<html>sign in</html>", content_type="text/html")) as server:
        model = load_chat_model(base_url=server.base_url, model="scripted", timeout_s=5)
        client = _client(model, tmp_path, max_retries=1, server=server.base_url)
        outcome = client.call(_request(prompt), Pick)
        assert outcome.flagged and outcome.reason.startswith("malformed_response")
        with pytest.raises(InputError, match="no answer"):
            for _ in range(UNREACHABLE_CALLS):
                client.call(_request(prompt), Pick)


def test_tool_round_feeds_the_result_back_before_the_answer(prompt, tmp_path):
    seen = []

    def reprojection_error(centroid: int) -> str:
        seen.append(centroid)
        return f"reprojection error {1.5 * centroid:.1f} px"

    tool = StructuredTool.from_function(reprojection_error, name="reprojection_error",
                                        description="error of a candidate", args_schema=ReprojectionArgs)
    model = ScriptedChatModel(script=[
        AIMessage(content="", tool_calls=[{"name": "reprojection_error", "args": {"centroid": 3}, "id": "t1"}]),
        AIMessage(content="", tool_calls=[{"name": "Pick", "args": {"centroid": 3}, "id": "t2"}]),
    ])
    outcome = _client(model, tmp_path).call(_request(prompt), Pick, tools=[tool], validate=_exists)
    assert outcome.answer == Pick(centroid=3) and outcome.attempts == 1
    assert seen == [3]
    assert "4.5 px" in model.calls[1][-1].content


def test_real_client_against_scripted_server_and_replay(prompt, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test-key")
    answers = iter([Reply(status=500), Reply(raw_body=b"{not json"), Reply(content="oops"), Reply(content='{"centroid": 4}')])

    with ScriptedOpenAIServer(lambda body: next(answers)) as server:
        model = load_chat_model(base_url=server.base_url, model="scripted", timeout_s=5)
        client = _client(model, tmp_path, max_retries=4)
        outcome = client.call(_request(prompt, [PNG]), Pick, validate=_exists)
    assert outcome.answer == Pick(centroid=4)
    body = server.requests[-1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert any(block.get("type") == "image_url" for block in body["messages"][0]["content"])
    log_text = (tmp_path / "calls.jsonl").read_text()
    assert "sk-secret-test-key" not in log_text
    assert [e["outcome"] for e in _log(tmp_path)] == ["transport_error", "transport_error", "invalid", "accepted"]

    # replay: no server, same answers from the log
    (tmp_path / "replayed").mkdir()
    replay = ModelClient(ScriptedChatModel(script=[]), model_name="scripted", max_retries=4, retry_backoff_s=0.0,
                         log=CallLog(tmp_path / "replayed" / "calls.jsonl"), answer_source=ReplayLog(tmp_path / "calls.jsonl"))
    again = replay.call(_request(prompt, [PNG]), Pick, validate=_exists)
    assert again == outcome


def test_slow_server_times_out_and_is_flagged(prompt, tmp_path):
    with ScriptedOpenAIServer(lambda body: Reply(content='{"centroid": 1}', delay_s=1.0)) as server:
        model = load_chat_model(base_url=server.base_url, model="scripted", timeout_s=0.2)
        outcome = _client(model, tmp_path, max_retries=1).call(_request(prompt), Pick)
    assert outcome.flagged and outcome.reason.startswith("transport")


def test_function_calling_mode_sends_a_forced_tool(prompt, tmp_path):
    with ScriptedOpenAIServer(lambda body: Reply(tool_calls=[{"name": "Pick", "args": {"centroid": 2}}])) as server:
        model = load_chat_model(base_url=server.base_url, model="scripted", timeout_s=5)
        outcome = _client(model, tmp_path, structured="function_calling").call(_request(prompt), Pick)
    assert outcome.answer == Pick(centroid=2)
    body = server.requests[0]
    assert "response_format" not in body
    assert body["tool_choice"]["function"]["name"] == "Pick"


def test_request_hash_follows_the_images_content_not_their_objects(prompt):
    text = prompt.render(what="the nose")
    other = bytes(PNG[:-1]) + b"S"
    digest = request_hash("m", [user_message(text, [PNG, other])], "Pick", [])
    # Equal images in fresh objects (as a replay rebuilds them) hash the same...
    assert request_hash("m", [user_message(text, [bytes(PNG), bytes(other)])], "Pick", []) == digest
    # ...while any changed byte, order or text changes the hash.
    changed = [[PNG, PNG], [other, PNG], [PNG]]
    assert all(request_hash("m", [user_message(text, images)], "Pick", []) != digest for images in changed)
    assert request_hash("m", [user_message(text + ".", [PNG, other])], "Pick", []) != digest
