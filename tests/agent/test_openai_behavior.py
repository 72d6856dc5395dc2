"""The model-backed behavior backend: captions from clip frames, merges that must tile, fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from langchain_core.messages import AIMessage, ToolMessage

from agent.backends.behavior_base import CaptionedClip, ClipRequest, MergedSegment, MergeRequest
from agent.backends.classical_behavior import ClassicalBehaviorBackend
from agent.backends.factory_behavior import make_behavior_backend
from agent.backends.openai_behavior import (
    CAPTION_LABELS,
    MergeAnswer,
    OpenAIBehaviorBackend,
    SegmentAnswer,
    merge_problem,
    sample_clip_frames,
)
from agent.behavior_context import BehaviorContext
from agent.errors import InputError
from agent.llm import CallLog, ModelClient
from agent.prompts import load_prompt
from tests.fixtures.fake_chat import ScriptedChatModel
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer

# Stable test templates using every placeholder the backend fills; the
# project's own prompts are checked against the same values separately.
CAPTION_TEMPLATE = """<!--
$animal $clip_id $start_s $end_s $duration_s $n_frames $frame_times $features $labels
-->
Describe $animal in clip $clip_id ($duration_s s, frames at $frame_times s). Measured: $features.
Labels: $labels.
"""
MERGE_TEMPLATE = """<!--
$animal $fps $start_frame $end_frame $clips $previous $min_frames $labels
-->
Merge the clips of $animal over frames $start_frame-$end_frame at $fps fps (segments >= $min_frames frames).
Previous: $previous
$clips
Labels: $labels.
"""
FAST = {"speed_px_s": 200.0, "duration_s": 2.0}  # the classical caption of this is "locomotion"


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts" / "behavior"
    folder.mkdir(parents=True)
    (folder / "caption_clips.md").write_text(CAPTION_TEMPLATE)
    (folder / "merge_segments.md").write_text(MERGE_TEMPLATE)
    return tmp_path / "prompts"


@pytest.fixture
def clip_video(tmp_path: Path) -> Path:
    """A 2 s clip at 10 fps, 64x48, a bright square moving right one step per frame."""
    path = tmp_path / "c0.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for index in range(20):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[20:28, 2 * index:2 * index + 8] = (0, 255, 255)
        writer.write(frame)
    writer.release()
    return path


def _backend(model, tmp_path, prompts_dir, mode="openai", max_retries=2, merge_tools=True):
    client = ModelClient(model, model_name="scripted", max_retries=max_retries, retry_backoff_s=0.0,
                         log=CallLog(tmp_path / "calls.jsonl"))
    return OpenAIBehaviorBackend(client, client, load_prompt("behavior/caption_clips", prompts_dir),
                                 load_prompt("behavior/merge_segments", prompts_dir), mode=mode,
                                 max_concurrency=4, frame_side_px=32, merge_tools=merge_tools)


def _clip(clip_id="c0", video=None, features=FAST, start=0, end=20):
    return ClipRequest(clip_id=clip_id, animal="mouse1", start_frame=start, end_frame=end, fps=10.0, cluster=1,
                       video_path=None if video is None else str(video), features=features)


def _caption(label, description="walks along the wall"):
    return json.dumps({"label": label, "description": description})


def _log(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def _merge_request(previous=None):
    clips = [CaptionedClip(clip_id="c1", start_frame=20, end_frame=40, label="locomotion", description="runs"),
             CaptionedClip(clip_id="c2", start_frame=40, end_frame=55, label="locomotion", description="runs"),
             CaptionedClip(clip_id="c3", start_frame=58, end_frame=80, label="grooming", description="licks")]
    return MergeRequest(animal="mouse1", fps=10.0, clips=clips, previous=previous)


def _merge_answer(*segments):
    return json.dumps({"segments": [
        {"start_frame": s, "end_frame": e, "label": label, "description": f"{label} for a while", "clip_ids": ids}
        for s, e, label, ids in segments]})


def test_clip_frames_are_evenly_spaced_downscaled_pngs(clip_video, tmp_path):
    images, times = sample_clip_frames(clip_video, max_frames=8, max_side_px=32)
    assert len(images) == 8 and times[0] == 0.0 and times == sorted(times) and times[-1] == pytest.approx(1.9)
    decoded = [cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) for png in images]
    assert all(image.shape == (24, 32, 3) for image in decoded)
    # the square moves right: its column of maximum brightness grows over the sampled frames
    columns = [int(np.argmax(image[..., 2].sum(axis=0))) for image in decoded]
    assert columns == sorted(columns) and columns[-1] > columns[0]
    assert sample_clip_frames(tmp_path / "missing.mp4", 8, 32) == ([], [])


def test_captions_come_back_in_request_order_with_images(clip_video, tmp_path, prompts_dir):
    def answer(messages):
        text = messages[0].content[0]["text"]
        return _caption("chase" if "clip c2 " in text else "exploring", f"answer to {text.split()[4]}")

    model = ScriptedChatModel(script=answer)
    requests = [_clip(f"c{i}", clip_video) for i in range(5)]
    captions = _backend(model, tmp_path, prompts_dir).caption_clips(requests)
    assert [c.label for c in captions] == ["exploring", "exploring", "chase", "exploring", "exploring"]
    assert [c.description for c in captions] == [f"answer to c{i}" for i in range(5)]
    assert not any(c.flagged for c in captions)
    assert all(sum(b["type"] == "image_url" for b in call[0].content) == 8 for call in model.calls)
    entries = _log(tmp_path)
    assert sorted(e["item"] for e in entries) == [f"clip=c{i} animal=mouse1" for i in range(5)]
    assert {e["node"] for e in entries} == {"caption_clips"} and all(len(e["image_sha256"]) == 8 for e in entries)


def test_invalid_json_then_valid_caption_is_accepted(tmp_path, prompts_dir):
    model = ScriptedChatModel(script=["the mouse is running", _caption("locomotion")])
    (caption,) = _backend(model, tmp_path, prompts_dir).caption_clips([_clip()])
    assert (caption.label, caption.flagged) == ("locomotion", False)
    assert [e["outcome"] for e in _log(tmp_path)] == ["invalid", "accepted"]


@pytest.mark.parametrize("label", ["Running Fast", "", "runs_along_the_wall_very_fast"])
def test_impossible_label_is_retried_then_flagged_with_the_classical_caption(label, tmp_path, prompts_dir):
    model = ScriptedChatModel(script=[_caption(label)] * 3)
    (caption,) = _backend(model, tmp_path, prompts_dir).caption_clips([_clip()])
    assert len(model.calls) == 3 and "not usable" in model.calls[-1][-1].content
    assert caption.flagged and caption.reason.startswith("caption_model: label")
    assert caption.label == ClassicalBehaviorBackend().caption_clips([_clip()])[0].label == "locomotion"


def test_a_model_can_flag_its_own_caption_with_a_short_reason(tmp_path, prompts_dir):
    unclear = {"label": "huddle", "description": "hidden under mouse2", "flagged": True}
    model = ScriptedChatModel(script=[json.dumps({**unclear, "reason": "the mouse is hidden"}),
                                      json.dumps({**unclear, "reason": "not_visible"})])
    (caption,) = _backend(model, tmp_path, prompts_dir).caption_clips([_clip()])
    assert (caption.label, caption.flagged, caption.reason) == ("huddle", True, "not_visible")
    assert "snake_case reason" in model.calls[1][-1].content


def test_unreadable_video_is_captioned_from_features_and_flagged(tmp_path, prompts_dir):
    model = ScriptedChatModel(script=[_caption("locomotion")])
    (caption,) = _backend(model, tmp_path, prompts_dir).caption_clips([_clip(video=tmp_path / "gone.mp4")])
    assert (caption.label, caption.flagged, caption.reason) == ("locomotion", True, "video_unreadable")
    assert isinstance(model.calls[0][0].content, str)  # text only, no image blocks


def test_hybrid_keeps_the_classical_label_and_flags_disagreement(tmp_path, prompts_dir):
    model = ScriptedChatModel(script=[_caption("locomotion", "trots"), _caption("huddle", "sits with mouse2")])
    captions = _backend(model, tmp_path, prompts_dir, mode="hybrid").caption_clips([_clip("a"), _clip("b")])
    by_description = {c.description: c for c in captions}
    assert by_description["trots"].label == "locomotion" and not by_description["trots"].flagged
    disagreeing = by_description["sits with mouse2"]
    assert (disagreeing.label, disagreeing.flagged, disagreeing.reason) == ("locomotion", True, "model_label: huddle")


def test_merge_answer_that_tiles_the_chunk_is_accepted(tmp_path, prompts_dir):
    previous = MergedSegment(start_frame=0, end_frame=20, label="locomotion", description="runs", clip_ids=["a", "b"])
    split_previous = _merge_answer((0, 20, "locomotion", ["a"]), (20, 56, "locomotion", ["b", "c1", "c2"]),
                                   (56, 80, "grooming", ["c3"]))
    model = ScriptedChatModel(script=[split_previous, _merge_answer(
        (0, 56, "locomotion", ["a", "b", "c1", "c2"]), (56, 80, "grooming", ["c3"]))])
    segments = _backend(model, tmp_path, prompts_dir, merge_tools=False).merge_segments(_merge_request(previous))
    assert [(s.start_frame, s.end_frame, s.label) for s in segments] == [(0, 56, "locomotion"), (56, 80, "grooming")]
    assert segments[0].clip_ids == ["a", "b", "c1", "c2"]
    assert json.dumps(previous.model_dump()) in model.calls[0][0].content
    assert "does not contain its clips" in model.calls[1][-1].content  # the previous segment cannot be split
    entries = _log(tmp_path)
    assert [(e["node"], e["item"], e["outcome"]) for e in entries] == [
        ("merge_segments", "animal=mouse1 frames=0-80", "invalid"),
        ("merge_segments", "animal=mouse1 frames=0-80", "accepted")]


def test_overlapping_or_gapped_merges_are_retried_then_fall_back_to_classical(tmp_path, prompts_dir):
    overlap = _merge_answer((20, 60, "locomotion", ["c1", "c2"]), (55, 80, "grooming", ["c3"]))
    gap = _merge_answer((20, 55, "locomotion", ["c1", "c2"]), (58, 80, "grooming", ["c3"]))
    model = ScriptedChatModel(script=[overlap, gap, overlap])
    backend = _backend(model, tmp_path, prompts_dir, merge_tools=False)
    segments = backend.merge_segments(_merge_request())
    assert segments == ClassicalBehaviorBackend().merge_segments(_merge_request())
    assert "overlap between frame 60 and frame 55" in model.calls[1][-1].content
    assert "gap between frame 55 and frame 58" in model.calls[2][-1].content
    (flag,) = backend.merge_flags
    assert (flag.animal, flag.start_frame, flag.end_frame) == ("mouse1", 20, 80) and "overlap" in flag.reason


@pytest.mark.parametrize(("segments", "problem"), [
    ([(20, 80, "locomotion", ["c1", "c3"])], "clip id number 2 is 'c3', expected 'c2'"),
    ([(20, 56, "locomotion", ["c1", "c2"]), (56, 80, "grooming", ["c2", "c3"])], "number 3 is 'c2'"),
    ([(20, 50, "locomotion", ["c1", "c2"]), (50, 80, "grooming", ["c3"])], "does not contain its clips"),
    ([(0, 56, "locomotion", ["c1", "c2"]), (56, 80, "grooming", ["c3"])], "expected [20, 80)"),
    ([(20, 56, "Sprinting", ["c1", "c2"]), (56, 80, "grooming", ["c3"])], "'Sprinting' is not lower snake_case"),
    ([(20, 56, "locomotion", ["c1", "c2"]), (56, 56, "grooming", []), (56, 80, "grooming", ["c3"])], "no clips"),
])
def test_merge_check_names_the_problem(segments, problem):
    answer = MergeAnswer.model_validate_json(_merge_answer(*segments))
    assert problem in merge_problem(answer, _merge_request())


def test_merge_tool_serves_the_features_recorded_at_captioning(tmp_path, prompts_dir):
    model = ScriptedChatModel(script=[
        _caption("locomotion"),
        AIMessage(content="", tool_calls=[{"name": "get_clip_features", "args": {"clip_id": "c1"}, "id": "t1"}]),
        AIMessage(content="", tool_calls=[{"name": "MergeAnswer", "id": "t2", "args": json.loads(_merge_answer(
            (20, 56, "locomotion", ["c1", "c2"]), (56, 80, "grooming", ["c3"])))}]),
    ])
    backend = _backend(model, tmp_path, prompts_dir)
    backend.caption_clips([_clip("c1", features={"speed_px_s": 123.4})])
    segments = backend.merge_segments(_merge_request())
    assert [s.clip_ids for s in segments] == [["c1", "c2"], ["c3"]] and not backend.merge_flags
    tool_reply = model.calls[-1][-1]
    assert isinstance(tool_reply, ToolMessage) and json.loads(tool_reply.content) == {"speed_px_s": 123.4}
    assert model.bound_kwargs[-1]["tools"] == ["get_clip_features", "MergeAnswer"]
    assert backend.model_calls() == {"caption_clips": 1, "merge_segments": 1}


def test_classical_merges_always_pass_the_tiling_check(rng):
    classical = ClassicalBehaviorBackend(min_segment_s=0.5)
    for _ in range(30):
        lengths = rng.integers(1, 30, size=rng.integers(1, 12))
        gaps = rng.integers(0, 3, size=len(lengths))
        starts = 5 + np.cumsum(np.concatenate([[0], lengths[:-1] + gaps[:-1]]))
        labels = rng.choice(CAPTION_LABELS[:3], len(lengths))
        clips = [CaptionedClip(clip_id=f"c{i}", start_frame=int(s), end_frame=int(s + n), label=str(label),
                               description="x")
                 for i, (s, n, label) in enumerate(zip(starts, lengths, labels, strict=True))]
        request = MergeRequest(animal="m", fps=10.0, clips=clips)
        merged = classical.merge_segments(request)
        answer = MergeAnswer(segments=[SegmentAnswer(**s.model_dump()) for s in merged])
        assert merge_problem(answer, request) is None
        if len(merged) > 1:  # moving one inner boundary by a frame opens a gap
            broken = answer.model_copy(deep=True)
            broken.segments[0].end_frame -= 1
            assert merge_problem(broken, request) is not None


def test_the_project_prompts_render_with_the_values_the_backend_fills(clip_video, tmp_path):
    project_prompts = Path(__file__).resolve().parents[2] / "prompts"
    previous = MergedSegment(start_frame=0, end_frame=20, label="locomotion", description="runs", clip_ids=["a"])
    model = ScriptedChatModel(script=[_caption("locomotion"), _merge_answer(
        (0, 56, "locomotion", ["a", "c1", "c2"]), (56, 80, "grooming", ["c3"]))])
    backend = _backend(model, tmp_path, project_prompts, merge_tools=False)
    backend.caption_clips([_clip("c7", clip_video)])
    backend.merge_segments(_merge_request(previous))
    caption_text, merge_text = model.calls[0][0].content[0]["text"], model.calls[1][0].content
    assert "c7" in caption_text and "$" not in caption_text
    assert '"clip_id": "c3"' in merge_text and '"clip_ids": ["a"]' in merge_text and "$" not in merge_text


def _context(prompts_dir, **values):
    return BehaviorContext(prompts_dir=str(prompts_dir), vlm_model="scripted", max_model_retries=2, **values)


def test_factory_picks_the_backend_and_refuses_an_incomplete_model_setup(tmp_path, prompts_dir):
    assert isinstance(make_behavior_backend(_context(prompts_dir), tmp_path), ClassicalBehaviorBackend)
    with pytest.raises(InputError, match="server URL"):
        make_behavior_backend(_context(prompts_dir, backend="openai"), tmp_path)
    ctx = _context(prompts_dir, backend="hybrid", base_url="http://127.0.0.1:9/v1")
    backend = make_behavior_backend(ctx, tmp_path)
    assert backend.name == "hybrid" and make_behavior_backend(ctx, tmp_path) is backend


def test_real_client_sends_images_and_json_schema_and_logs_every_attempt(clip_video, tmp_path, prompts_dir,
                                                                         monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-behavior-secret")
    replies = iter([Reply(status=500), Reply(content=_caption("exploring", "sniffs the corner")),
                    Reply(tool_calls=[{"name": "get_clip_features", "args": {"clip_id": "c1"}}]),
                    Reply(tool_calls=[{"name": "MergeAnswer", "args": json.loads(_merge_answer(
                        (20, 56, "locomotion", ["c1", "c2"]), (56, 80, "grooming", ["c3"])))}])])
    with ScriptedOpenAIServer(lambda body: next(replies)) as server:
        ctx = _context(prompts_dir, backend="openai", base_url=server.base_url)
        backend = make_behavior_backend(ctx, tmp_path)
        (caption,) = backend.caption_clips([_clip("c1", clip_video)])
        segments = backend.merge_segments(_merge_request())
    assert (caption.label, caption.description, caption.flagged) == ("exploring", "sniffs the corner", False)
    assert [s.label for s in segments] == ["locomotion", "grooming"]
    caption_body, merge_body = server.requests[1], server.requests[3]
    assert caption_body["response_format"]["type"] == "json_schema"
    assert caption_body["response_format"]["json_schema"]["name"] == "CaptionAnswer"
    assert sum(block["type"] == "image_url" for block in caption_body["messages"][0]["content"]) == 8
    assert {tool["function"]["name"] for tool in merge_body["tools"]} == {"get_clip_features", "MergeAnswer"}
    assert merge_body["messages"][-1]["role"] == "tool"
    entries = _log(tmp_path)
    assert [(e["node"], e["outcome"]) for e in entries] == [
        ("caption_clips", "transport_error"), ("caption_clips", "accepted"),
        ("merge_segments", "tool_call"), ("merge_segments", "accepted")]
    assert all(e["prompt_sha256"] and e["request_sha256"] for e in entries)
    assert "sk-behavior-secret" not in (tmp_path / "calls.jsonl").read_text()
