"""The openai pose backend stage by stage, its geometry tools, and the real client end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage

from agent.backends import factory_pose
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.backends.openai_pose import OpenAIPoseBackend, load_pose_prompts
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    Centroid,
    LocateRegionsRequest,
    ReconcileRegionsRequest,
)
from agent.backends.pose_checks import KeypointChoice, check_choices
from agent.backends.pose_tools import LatestLabels, PoseGeometry
from agent.llm import CallLog, ModelClient
from agent.pose_context import PoseContext
from agent.recording import Recording
from tests.fixtures.fake_chat import ScriptedChatModel
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer
from tests.fixtures.pose_requests import FRAME, centroids, tiny_pose_recording, true_number, view
from tests.fixtures.scripted_pose_model import pose_chat_script, pose_responder


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Recording:
    return tiny_pose_recording(tmp_path_factory.mktemp("pose"))


def assign_request(recording: Recording, region: str, box=(0, 0, 160, 120), strategy: int = 0):
    base = LocateRegionsRequest(**view(recording, strategy=strategy), regions=recording.regions)
    return AssignWithinRegionRequest(**base.subset(recording.regions[region]).model_dump(exclude={"regions"}),
                                     region=region, box=box, centroids=centroids(recording))


def make_backend(recording: Recording, script, tmp_path: Path, geometry=None) -> OpenAIPoseBackend:
    client = ModelClient(ScriptedChatModel(script=script), model_name="scripted", max_retries=2,
                         log=CallLog(tmp_path / "calls.jsonl"), retry_backoff_s=0.0)
    return OpenAIPoseBackend(client, recording, load_pose_prompts(), geometry=geometry, gate_px=24.0)


def logged(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_locate_regions_sends_exemplars_then_target_and_accepts_boxes(recording, tmp_path):
    backend = make_backend(recording, pose_chat_script("oracle"), tmp_path)
    answer = backend.locate_regions(LocateRegionsRequest(**view(recording), regions=recording.regions))
    truth = dict(zip(recording.keypoints, recording.ground_truth_2d[FRAME, 0], strict=True))
    for region in answer.regions:
        assert not region.flagged and region.confidence == 1.0
        x0, y0, x1, y1 = region.box
        for keypoint in recording.regions[region.region]:
            assert x0 <= truth[keypoint][0] < x1 and y0 <= truth[keypoint][1] < y1
    calls = backend.client.chat_model.calls
    pictures = [[b["image_url"]["url"] for b in call[0].content if b["type"] == "image_url"] for call in calls]
    assert [len(p) for p in pictures] == [4, 4]  # three exemplars, then the target
    assert pictures[0] == pictures[1]  # one image prefix for every region of the camera
    assert sorted(e["item"] for e in logged(tmp_path)) == [
        f"frame={FRAME} camera=cam0 region=body", f"frame={FRAME} camera=cam0 region=head"]


@pytest.mark.parametrize(("box", "reason"), [
    ({"x0": -5, "y0": 0, "x1": 40, "y1": 40}, "model_outside_image"),
    ({"x0": 10, "y0": 10, "x1": 12, "y1": 40}, "model_degenerate"),
    ({"x0": 0, "y0": 0, "x1": 2000, "y1": 2000}, "model_outside_image"),
])
def test_impossible_boxes_are_retried_then_flagged_with_the_trackers_box(recording, tmp_path, box, reason):
    backend = make_backend(recording, [json.dumps(box)] * 3, tmp_path)
    request = LocateRegionsRequest(**view(recording), regions={"head": recording.regions["head"]})
    (answer,) = backend.locate_regions(request).regions
    assert answer.flagged and answer.reason == reason and answer.confidence == 0.0
    assert answer.box == ClassicalPoseBackend().locate_regions(request).regions[0].box
    assert [e["outcome"] for e in logged(tmp_path)] == ["invalid"] * 3


def test_box_far_from_the_prediction_or_of_the_wrong_size_is_refused(recording, tmp_path):
    request = LocateRegionsRequest(**view(recording), regions={"head": recording.regions["head"]})
    oracle = pose_chat_script("oracle")
    refused = iter([{"x0": 0, "y0": 0, "x1": 24, "y1": 24}, {"x0": 40, "y0": 40, "x1": 45, "y1": 45}])
    backend = make_backend(recording, lambda messages: json.dumps(next(refused, None)) if (
        len(backend.client.chat_model.calls) <= 2) else oracle(messages), tmp_path)
    (answer,) = backend.locate_regions(request).regions
    errors = [e["error"] for e in logged(tmp_path)]
    assert not answer.flagged and errors[2] is None
    assert errors[0].startswith("far_from_prediction") and errors[1].startswith("implausible_size")


def test_correct_assignment_is_accepted_with_geometric_margins(recording, tmp_path):
    backend = make_backend(recording, pose_chat_script("oracle"), tmp_path)
    answer = backend.assign_within_region(assign_request(recording, "head"))
    assert not answer.flagged
    for label in answer.labels:
        assert label.centroid == true_number(recording, label.keypoint)
        assert label.stage == "within_region" and label.margin_px > 0 and label.confidence > 0.9
    images_sent = [b for b in backend.client.chat_model.calls[0][0].content if b["type"] == "image_url"]
    assert len(images_sent) == 4  # three exemplar crops, then the target crop


@pytest.mark.parametrize(("answer", "reason"), [
    ([("ear_L", 99), ("ear_R", 2)], "model_no_centroid"),
    ([("ear_L", 2), ("ear_R", 2)], "model_centroid_twice"),
    ([("ear_L", 3), ("back_top", 1)], "model_unknown_keypoint"),
    ([("ear_L", 4), ("ear_R", 2)], "model_too_far"),  # 4 is the spurious spot in the corner
    ([("ear_L", 3), ("ear_L", 2)], "model_keypoint_twice"),
])
def test_impossible_assignments_are_retried_then_flagged_with_the_trackers_labels(
        recording, tmp_path, answer, reason):
    text = json.dumps({"assignments": [{"keypoint": k, "centroid": c} for k, c in answer]})
    backend = make_backend(recording, [text] * 3, tmp_path)
    request = assign_request(recording, "head")
    result = backend.assign_within_region(request)
    assert result.flagged and result.reason == reason
    assert result.labels == ClassicalPoseBackend().assign_within_region(request).labels
    assert len(backend.client.chat_model.calls) == 3
    assert "not usable" in backend.client.chat_model.calls[1][-1].content


def test_no_call_when_no_centroid_could_be_taken(recording, tmp_path):
    backend = make_backend(recording, [], tmp_path)  # any call would fail the test
    result = backend.assign_within_region(assign_request(recording, "head", box=(140, 100, 160, 120)))
    assert [label.centroid for label in result.labels] == [-1, -1]
    assert backend.stats()["model_calls_total"] == 0


def test_a_swap_of_well_separated_dots_is_refused(recording, tmp_path):
    swapped = json.dumps({"assignments": [{"keypoint": "ear_L", "centroid": true_number(recording, "ear_R")},
                                          {"keypoint": "ear_R", "centroid": true_number(recording, "ear_L")}]})
    backend = make_backend(recording, [swapped] * 3, tmp_path)
    result = backend.assign_within_region(assign_request(recording, "head"))
    assert result.flagged and result.reason == "model_contradicts_prediction"


def test_a_close_call_is_the_models_but_gets_a_negative_margin(recording, tmp_path):
    request = assign_request(recording, "head")
    ear_l = request.centroids[true_number(recording, "ear_L")]
    prior = np.array(request.prior[0])
    away = (np.array([ear_l.x, ear_l.y]) - prior) / np.linalg.norm(np.array([ear_l.x, ear_l.y]) - prior)
    decoy_xy = prior + away * (np.linalg.norm(np.array([ear_l.x, ear_l.y]) - prior) + 3.0)
    decoy = Centroid(index=len(request.centroids), x=float(decoy_xy[0]), y=float(decoy_xy[1]))
    request = request.model_copy(update={"centroids": [*request.centroids, decoy]})
    answer = json.dumps({"assignments": [{"keypoint": "ear_L", "centroid": decoy.index},
                                         {"keypoint": "ear_R", "centroid": true_number(recording, "ear_R")}]})
    backend = make_backend(recording, [answer], tmp_path)
    result = backend.assign_within_region(request)
    assert not result.flagged and result.labels[0].centroid == decoy.index
    assert result.labels[0].margin_px < 0 < result.labels[1].margin_px  # quality control will see it


def test_check_choices_accepts_exactly_the_possible_assignments(rng):
    keypoints = ["a", "b", "c"]
    shown = [Centroid(index=i, x=10.0 * i, y=0.0) for i in (0, 2, 3, 7)]
    predicted = np.array([[0.0, 0.0], [22.0, 0.0], [np.nan, np.nan]])  # "c" has no prediction
    gate_px, tolerance_px = 15.0, 6.0

    def cost(keypoint: str, number: int) -> float:
        distance = abs(10.0 * number - predicted[keypoints.index(keypoint), 0])
        return gate_px if number < 0 else distance if distance <= gate_px else np.inf

    def geometric(choices: list[KeypointChoice]) -> bool:
        chosen = {c.keypoint: c.centroid for c in choices}
        free = [c.index for c in shown if c.index != chosen.get("c", -1)]
        best = min(cost("a", i) + cost("b", j) for i in [-1, *free] for j in [-1, *free]
                   if i < 0 or i != j)
        return cost("a", chosen.get("a", -1)) + cost("b", chosen.get("b", -1)) - best <= tolerance_px

    for _ in range(400):
        choices = [KeypointChoice(keypoint=str(rng.choice(keypoints + ["z"])), centroid=int(rng.integers(-1, 9)))
                   for _ in range(int(rng.integers(1, 4)))]
        names = [c.keypoint for c in choices]
        numbers = [c.centroid for c in choices if c.centroid >= 0]
        possible = (all(n in keypoints for n in names) and len(set(names)) == len(names)
                    and all(n in (0, 2, 3, 7) for n in numbers) and len(set(numbers)) == len(numbers)
                    and geometric(choices))
        answer = check_choices(choices, keypoints, shown, predicted, gate_px, tolerance_px, complete=False)
        assert (answer is None) == possible, (choices, answer)


def test_reprojection_tool_checks_candidates_against_the_other_cameras(recording):
    labels = LatestLabels()
    labels.publish(FRAME, recording.ground_truth_2d[FRAME])
    geometry = PoseGeometry(recording.group, list(recording.keypoints), labels)
    request = ReconcileRegionsRequest(**view(recording), centroids=centroids(recording), proposals=[])
    right = geometry.check_candidate(request, "ear_L", request.centroids[true_number(recording, "ear_L")])
    wrong = geometry.check_candidate(request, "ear_L", request.centroids[true_number(recording, "ear_R")])
    assert right.basis == "other_cameras" and right.n_other_cameras == 2
    assert right.reprojection_error_px < 0.5 < 3.0 < wrong.reprojection_error_px
    labels.publish(FRAME + 1, recording.ground_truth_2d[FRAME])  # another frame: only the prediction
    fallback = geometry.check_candidate(request, "ear_L", request.centroids[0])
    assert fallback.basis == "prediction"
    assert fallback.reprojection_error_px == fallback.distance_to_prediction_px


def test_reconcile_calls_the_reprojection_tool_then_answers(recording, tmp_path):
    labels = LatestLabels()
    labels.publish(FRAME, recording.ground_truth_2d[FRAME])
    geometry = PoseGeometry(recording.group, list(recording.keypoints), labels)
    final = [{"keypoint": k, "centroid": true_number(recording, k)} for k in recording.keypoints]
    script = [
        AIMessage(content="", tool_calls=[
            {"name": "reprojection_error", "args": {"keypoint": "ear_L", "centroid": true_number(recording, "ear_R")},
             "id": "t1"},
            {"name": "nearest_centroids", "args": {"keypoint": "ear_L"}, "id": "t2"}]),
        AIMessage(content="", tool_calls=[{"name": "CameraLabelsAnswer", "args": {"assignments": final},
                                           "id": "t3"}]),
    ]
    backend = make_backend(recording, script, tmp_path, geometry=geometry)
    head = backend.tracker.assign_within_region(assign_request(recording, "head"))
    request = ReconcileRegionsRequest(**view(recording), centroids=centroids(recording), proposals=[head])
    answer = backend.reconcile_regions(request)
    assert [label.centroid for label in answer.labels] == [f["centroid"] for f in final]
    assert answer.labels[0] == head.labels[0]  # a confirmed proposal keeps its stage and margin
    assert answer.labels[2].stage == "reconcile"
    check, nearest = (m.content for m in backend.client.chat_model.calls[1][-2:])
    assert json.loads(check)["basis"] == "other_cameras" and json.loads(check)["reprojection_error_px"] > 3
    assert json.loads(nearest)[0]["centroid"] == true_number(recording, "ear_L")
    assert [e["outcome"] for e in logged(tmp_path)] == ["tool_call", "accepted"]


def test_failed_reconciliation_falls_back_to_the_tracker_flagged(recording, tmp_path):
    backend = make_backend(recording, ["{broken"] * 3, tmp_path)
    proposals = [backend.tracker.assign_within_region(assign_request(recording, r)) for r in recording.regions]
    request = ReconcileRegionsRequest(**view(recording), centroids=centroids(recording), proposals=proposals)
    answer = backend.reconcile_regions(request)
    assert answer.flagged and answer.reason == "model_invalid_json"
    assert answer.labels == ClassicalPoseBackend().reconcile_regions(request).labels


def run_one_frame(backend, recording: Recording) -> list:
    """Stages 1-3 of ``FRAME`` for every camera, as the graph chains them."""
    answers = []
    for camera in range(len(recording.cameras)):
        request = LocateRegionsRequest(**view(recording, camera), regions=recording.regions)
        spots = centroids(recording, camera)
        proposals = []
        for region in backend.locate_regions(request).regions:
            answers.append(region)
            assign = AssignWithinRegionRequest(
                **request.subset(recording.regions[region.region]).model_dump(exclude={"regions"}),
                region=region.region, box=region.box, centroids=spots)
            proposals.append(backend.assign_within_region(assign))
        answers += proposals
        answers.append(backend.reconcile_regions(ReconcileRegionsRequest(
            **view(recording, camera), centroids=spots, proposals=proposals)))
    return answers


def test_real_client_end_to_end_against_a_scripted_server(recording, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-pose-key")
    oracle = pose_responder("oracle")

    def respond(body: dict) -> Reply:
        text = " ".join(block.get("text", "") for block in body["messages"][0]["content"])
        if "camera cam1" in text and '"head" region' in text:
            return Reply(status=500)  # stage 1 of cam1/head never succeeds
        if "camera cam2" in text and 'on the "body"' in text:
            return Reply(raw_body=b"{not json")  # malformed HTTP body, every time
        if "camera cam0" in text and 'on the "head"' in text:
            return Reply(content='{"assignments": []}', delay_s=1.5)  # too slow, every time
        return oracle(body)

    ctx = PoseContext(backend="openai", vlm_model="scripted-vlm", request_timeout_s=0.5, max_model_retries=1)
    with ScriptedOpenAIServer(respond) as server:
        ctx = PoseContext(**{**ctx.__dict__, "base_url": server.base_url})
        backend = factory_pose.make_pose_backend(ctx, recording, tmp_path)
        backend.client.retry_backoff_s = 0.0
        answers = run_one_frame(backend, recording)
    flagged = {a.reason for a in answers if a.flagged}
    assert flagged == {"model_transport"}
    assert sum(a.flagged for a in answers) == 3
    entries = logged(tmp_path)
    assert len(entries) == len(server.requests)  # every request is in the log, failures included
    assert "sk-secret-pose-key" not in (tmp_path / "calls.jsonl").read_text()
    assert {e["outcome"] for e in entries} == {"accepted", "transport_error", "tool_call"}
    stage_1 = next(b for b in server.requests if "Find the" in json.dumps(b))
    assert stage_1["response_format"]["type"] == "json_schema"
    assert sum(block["type"] == "image_url" for block in stage_1["messages"][0]["content"]) == 4
    stage_3 = next(b for b in server.requests if "tools" in b)
    assert {t["function"]["name"] for t in stage_3["tools"]} == {
        "reprojection_error", "nearest_centroids", "CameraLabelsAnswer"}
    stats = backend.stats()
    assert stats["model_calls"] == {"assign_within_region": 6, "locate_regions": 6, "reconcile_regions": 3}
    assert stats["model_flagged"] == {"assign_within_region": 2, "locate_regions": 1, "reconcile_regions": 0}
