"""The hybrid pose backend: classical first tries, the model only where the tracker is unsure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.backends import factory_pose
from agent.backends.classical_pose import ClassicalPoseBackend
from agent.backends.factory_pose import make_pose_backend
from agent.backends.hybrid_pose import HybridPoseBackend
from agent.backends.openai_pose import OpenAIPoseBackend, load_pose_prompts
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    Centroid,
    LocateRegionsRequest,
    ReconcileRegionsRequest,
)
from agent.errors import InputError
from agent.llm import CallLog, ModelClient
from agent.pose_context import PoseContext
from tests.fixtures.fake_chat import ScriptedChatModel
from tests.fixtures.pose_requests import centroids, tiny_pose_recording, true_number, view
from tests.fixtures.scripted_pose_model import pose_chat_script


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return tiny_pose_recording(tmp_path_factory.mktemp("pose"))


def make_hybrid(recording, script, tmp_path: Path) -> HybridPoseBackend:
    client = ModelClient(ScriptedChatModel(script=script), model_name="scripted", max_retries=1,
                         log=CallLog(tmp_path / "calls.jsonl"), retry_backoff_s=0.0)
    classical = ClassicalPoseBackend()
    model = OpenAIPoseBackend(client, recording, load_pose_prompts(), gate_px=24.0, tracker=classical)
    return HybridPoseBackend(classical, model)


def calls(backend: HybridPoseBackend) -> dict[str, int]:
    return backend.stats()["model_calls"]


def assign_request(recording, region: str, spots: list[Centroid], strategy: int = 0):
    base = LocateRegionsRequest(**view(recording, strategy=strategy), regions=recording.regions)
    return AssignWithinRegionRequest(**base.subset(recording.regions[region]).model_dump(exclude={"regions"}),
                                     region=region, box=(0, 0, 160, 120), centroids=spots)


def test_confident_first_tries_never_call_the_model(recording, tmp_path):
    backend = make_hybrid(recording, [], tmp_path)  # any model call would fail the test
    request = LocateRegionsRequest(**view(recording), regions=recording.regions)
    assert backend.locate_regions(request) == ClassicalPoseBackend().locate_regions(request)
    proposals = [backend.assign_within_region(assign_request(recording, r, centroids(recording)))
                 for r in recording.regions]
    backend.reconcile_regions(ReconcileRegionsRequest(**view(recording), centroids=centroids(recording),
                                                      proposals=proposals))
    assert calls(backend) == {}
    assert backend.stats()["answered_by"] == {"assign_within_region/classical": 2,
                                              "locate_regions/classical": 2,
                                              "reconcile_regions/classical": 1}


def test_an_ambiguous_first_try_goes_to_the_model(recording, tmp_path):
    spots = centroids(recording)
    ear_l = spots[true_number(recording, "ear_L")]
    prior = view(recording)["prior"][0]
    # A second spot mirrored through ear_L's prediction: two centroids equally close to it.
    decoy = Centroid(index=len(spots), x=2 * prior[0] - ear_l.x, y=2 * prior[1] - ear_l.y)
    request = assign_request(recording, "head", [*spots, decoy])
    assert min(label.margin_px for label in ClassicalPoseBackend().assign_within_region(request).labels) < 2.0
    answer = {"assignments": [{"keypoint": k, "centroid": true_number(recording, k)} for k in ("ear_L", "ear_R")]}
    backend = make_hybrid(recording, [json.dumps(answer)], tmp_path)
    result = backend.assign_within_region(request)
    assert [label.centroid for label in result.labels] == [true_number(recording, "ear_L"),
                                                           true_number(recording, "ear_R")]
    assert calls(backend) == {"assign_within_region": 1}


def test_a_retry_is_reconciled_by_the_model_once_per_camera_and_frame(recording, tmp_path):
    backend = make_hybrid(recording, pose_chat_script("oracle"), tmp_path)
    for strategy in (1, 2):
        request = ReconcileRegionsRequest(**view(recording, strategy=strategy), centroids=centroids(recording),
                                          proposals=[])
        answer = backend.reconcile_regions(request)
        assert [label.centroid for label in answer.labels] == [true_number(recording, k)
                                                               for k in recording.keypoints]
    assert calls(backend) == {"reconcile_regions": 1}
    assert backend.stats()["answered_by"] == {"reconcile_regions/classical": 1, "reconcile_regions/model": 1}


def test_a_model_that_fails_leaves_the_classical_answer_flagged(recording, tmp_path):
    impossible = {"assignments": [{"keypoint": k, "centroid": 99 if k == "ear_L" else -1}
                                  for k in recording.keypoints]}
    backend = make_hybrid(recording, [json.dumps(impossible)] * 2, tmp_path)
    request = ReconcileRegionsRequest(**view(recording, strategy=1), centroids=centroids(recording), proposals=[])
    answer = backend.reconcile_regions(request)
    assert answer.flagged and answer.reason == "model_no_centroid"
    assert answer.labels == ClassicalPoseBackend().reconcile_regions(request).labels
    assert backend.stats()["answered_by"] == {"reconcile_regions/fallback": 1}


def test_a_region_the_tracker_cannot_place_goes_to_the_model(recording, tmp_path):
    backend = make_hybrid(recording, pose_chat_script("oracle"), tmp_path)
    fields = view(recording)
    unknown = {**fields, "prior": [None, None, *fields["prior"][2:]],
               "exemplars": [e.model_copy(update={"points": [None, None, *e.points[2:]]})
                             for e in fields["exemplars"]]}
    answer = backend.locate_regions(LocateRegionsRequest(**unknown, regions=recording.regions))
    assert calls(backend) == {"locate_regions": 1}
    boxes = {region.region: region for region in answer.regions}
    assert boxes["head"].box is not None and boxes["body"].box is not None


def test_factory_builds_each_backend_and_refuses_an_incomplete_model_setup(recording, tmp_path, monkeypatch):
    assert isinstance(make_pose_backend(PoseContext(), recording, None), ClassicalPoseBackend)
    with pytest.raises(InputError, match="base-url"):
        make_pose_backend(PoseContext(backend="openai"), recording, None)
    with pytest.raises(InputError, match="model"):
        make_pose_backend(PoseContext(backend="hybrid", base_url="http://localhost:1/v1"), recording, None)
    monkeypatch.setattr(factory_pose, "load_chat_model", lambda **kwargs: ScriptedChatModel(script=[]))
    ctx = PoseContext(backend="hybrid", base_url="http://localhost:1/v1", vlm_model="m", gate_px=10.0)
    hybrid = make_pose_backend(ctx, recording, tmp_path)
    assert isinstance(hybrid, HybridPoseBackend) and hybrid.model.gate_px == 10.0
    assert hybrid.model.client.log.path == tmp_path / "calls.jsonl"
    assert isinstance(make_pose_backend(PoseContext(**{**ctx.__dict__, "backend": "openai"}), recording, None),
                      OpenAIPoseBackend)
