"""Tests of graphs/pose.py: control flow with scripted backends, and the classical tracker."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.backends.classical_pose import ClassicalPoseBackend
from agent.backends.pose_base import (
    AssignWithinRegionRequest,
    Label,
    LocateRegionsAnswer,
    LocateRegionsRequest,
    PoseBackend,
    ReconcileRegionsAnswer,
    ReconcileRegionsRequest,
    RegionAssignment,
    RegionBox,
)
from agent.pose_context import PoseContext
from agent.pose_pipeline import run_pose
from agent.pose_results import read_keypoints_3d
from agent.recording import load_recording
from tests.fixtures.tiny_recording import make_tiny_recording

N_FRAMES = 10
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_recording(tmp_path_factory.mktemp("pose") / "rec", n_frames=N_FRAMES,
                               seed_frames=SEEDS, hidden=((4, 0, 1), (5, 1, 3)))


@dataclass
class BlindBackend:
    """Never finds anything; counts how often each stage is asked."""

    name: str = "blind"
    calls: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, stage: str) -> None:
        with self.lock:
            self.calls[stage] += 1

    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        self._count("locate_regions")
        return LocateRegionsAnswer(regions=[RegionBox(region=r, box=None, confidence=0.0,
                                                      flagged=True, reason="not_found")
                                            for r in request.regions])

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        self._count("assign_within_region")
        return RegionAssignment(camera=request.camera, region=request.region, flagged=True,
                                reason="unassigned", labels=[_none(k) for k in request.keypoints])

    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        self._count("reconcile_regions")
        return ReconcileRegionsAnswer(camera=request.camera, n_conflicts=0, flagged=True,
                                      reason="unassigned",
                                      labels=[_none(k) for k in request.keypoints])


class RegionBlindBackend(ClassicalPoseBackend):
    """Stage 2 finds nothing, so every label must come from Stage 3's fallback."""

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        return RegionAssignment(camera=request.camera, region=request.region,
                                labels=[_none(k) for k in request.keypoints])


def _none(keypoint: str) -> Label:
    return Label(keypoint=keypoint, centroid=-1, confidence=0.0, margin_px=None,
                 stage="within_region")


def _run(recording: Path, out: Path, backend: PoseBackend | None = None, **settings):
    return run_pose(recording, out, PoseContext(**settings), quiet=True, backend=backend)


def test_what_stays_bad_is_flagged_after_a_fruitless_retry(tiny, tmp_path):
    backend = BlindBackend()
    assert isinstance(backend, PoseBackend)
    # Without Stage 4, whose cross-view search would find the keypoints again.
    _run(tiny, tmp_path / "out", backend, ablation="no-refine", max_retries=2)
    tracked, n_cameras = N_FRAMES - len(SEEDS), 3
    # One retry per frame: it changes no label, so a second one could not help.
    assert backend.calls["locate_regions"] == tracked * n_cameras * 2
    assert backend.calls["reconcile_regions"] == tracked * n_cameras * 2
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False)
    tracked_rows = qc[qc["frame"] >= len(SEEDS)]
    assert (tracked_rows["flagged"] == 1).all()
    assert set(tracked_rows["reason"]) == {"unassigned"}
    assert (qc[qc["frame"] < len(SEEDS)]["flagged"] == 0).all()
    results = read_keypoints_3d(tmp_path / "out" / "keypoints_3d.csv")
    assert np.isnan(results.points_3d[len(SEEDS):]).all()


class RestlessBackend(ClassicalPoseBackend):
    """Stage 2 picks another wrong centroid on every try; records each (frame, camera, strategy)."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "tries", Counter())

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        self.tries[(request.frame, request.camera, request.region)] += 1
        n = len(request.centroids)
        labels = [Label(keypoint=k, centroid=request.centroids[(i + 1 + request.strategy) % n].index,
                        confidence=0.5, margin_px=0.1, stage="within_region")
                  for i, k in enumerate(request.keypoints)]
        return RegionAssignment(camera=request.camera, region=request.region, labels=labels)

    def reconcile_regions(self, request: ReconcileRegionsRequest) -> ReconcileRegionsAnswer:
        labels = [label for p in request.proposals for label in p.labels]
        return ReconcileRegionsAnswer(camera=request.camera, labels=labels, n_conflicts=0)


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_retries_are_bounded_by_the_counter_in_state(tiny, tmp_path, max_retries):
    backend = RestlessBackend()
    _run(tiny, tmp_path / "out", backend, ablation="no-refine", max_retries=max_retries)
    assert max(backend.tries.values()) == 1 + max_retries
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False)
    assert (qc[qc["frame"] >= len(SEEDS)]["flagged"] == 1).any()


def test_reconciliation_falls_back_to_free_centroids(tiny, tmp_path):
    summary = _run(tiny, tmp_path / "out", RegionBlindBackend())
    labels = pd.read_csv(tmp_path / "out" / "keypoints_2d.csv")
    tracked = labels[labels["frame"] >= len(SEEDS)]
    assert set(tracked["stage"]) <= {"reconcile", "refine"}
    assert summary.mean_error_mm is not None and summary.mean_error_mm < 1.0


def test_reconciliation_never_gives_a_centroid_twice():
    view = {"frame": 5, "camera": "cam0", "image_size": (160, 120), "strategy": 0,
            "keypoints": ["a", "b", "c"], "exemplars": [],
            "prior": [(10.0, 10.0), (12.0, 10.0), (40.0, 40.0)]}
    centroids = [{"index": 0, "x": 10.5, "y": 10.0}, {"index": 1, "x": 12.5, "y": 10.0},
                 {"index": 2, "x": 40.0, "y": 41.0}]
    claim = [Label(keypoint=k, centroid=0, confidence=0.9, margin_px=1.0, stage="within_region")
             for k in ("a", "b")]
    keep = Label(keypoint="c", centroid=2, confidence=0.9, margin_px=9.0, stage="within_region")
    proposals = [RegionAssignment(camera="cam0", region="head", labels=claim[:1]),
                 RegionAssignment(camera="cam0", region="body", labels=[claim[1], keep])]
    request = ReconcileRegionsRequest.model_validate(
        {**view, "centroids": centroids, "proposals": proposals})
    answer = ClassicalPoseBackend().reconcile_regions(request)
    assert [label.centroid for label in answer.labels] == [0, 1, 2]
    assert [label.stage for label in answer.labels] == ["reconcile", "reconcile", "within_region"]
    assert answer.n_conflicts == 1


@pytest.mark.parametrize("box", [(0, 0, 30, 30), None])
def test_within_region_assignment_takes_only_centroids_inside_the_box(box):
    # Centroid 1 is nearer b's prediction but outside the box; centroid 2 is inside, within the gate.
    request = AssignWithinRegionRequest.model_validate({
        "frame": 5, "camera": "cam0", "image_size": (160, 120), "strategy": 0,
        "keypoints": ["a", "b"], "exemplars": [], "prior": [(10.0, 10.0), (29.0, 20.0)],
        "region": "head", "box": box,
        "centroids": [{"index": 0, "x": 10.5, "y": 10.0}, {"index": 1, "x": 30.0, "y": 20.0},
                      {"index": 2, "x": 25.0, "y": 20.0}]})
    answer = ClassicalPoseBackend().assign_within_region(request)
    expected = [0, 2] if box is not None else [-1, -1]
    assert [label.centroid for label in answer.labels] == expected
    assert answer.flagged == (box is None)


def test_classical_tracker_follows_the_animal(tiny, tmp_path):
    summary = _run(tiny, tmp_path / "out")
    recording = load_recording(tiny)
    results = read_keypoints_3d(tmp_path / "out" / "keypoints_3d.csv")
    error = np.linalg.norm(results.points_3d - recording.ground_truth_3d, axis=2)
    assert np.nanmax(error) < 2.0
    assert np.isfinite(error).mean() > 0.95
    assert summary.n_frames == N_FRAMES
    labels = pd.read_csv(tmp_path / "out" / "keypoints_2d.csv")
    assert set(labels[labels["frame"] < len(SEEDS)]["stage"]) == {"seed"}
    for _, frame in labels.groupby(["frame", "camera"]):
        assigned = frame["centroid"].dropna()
        assert assigned.is_unique


@pytest.mark.parametrize("ablation", ["no-refine", "naive"])
def test_ablations_write_complete_results(tiny, tmp_path, ablation):
    summary = _run(tiny, tmp_path / "out", ablation=ablation)
    assert summary.n_frames == N_FRAMES
    assert (tmp_path / "out" / "qc.csv").is_file()
    labels = pd.read_csv(tmp_path / "out" / "keypoints_2d.csv")
    assert "refine" not in set(labels["stage"])


class StubbornModelBackend(ClassicalPoseBackend):
    """The classical tracker whose Stage 2 answers for one camera and region stay invalid (a model)."""

    def assign_within_region(self, request: AssignWithinRegionRequest) -> RegionAssignment:
        answer = super().assign_within_region(request)
        if (request.camera, request.region) == ("cam1", FLAKY_REGION):
            return answer.model_copy(update={"flagged": True, "reason": "model_invalid_json"})
        return answer

    def stats(self) -> dict[str, object]:
        return {"model_calls": {"assign_within_region": 1}}


FLAKY_REGION = "head"


def test_an_invalid_model_answer_reaches_qc_flagged(tiny, tmp_path):
    _run(tiny, tmp_path / "out", StubbornModelBackend())
    regions = load_recording(tiny).regions
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False)
    tracked = qc[qc["frame"] >= len(SEEDS)]
    flaky = tracked["keypoint"].isin(regions[FLAKY_REGION])
    assert (tracked[flaky]["flagged"] == 1).all()
    assert "model" in set(tracked[flaky]["reason"])
    assert "model" not in set(tracked[~flaky]["reason"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"] == StubbornModelBackend().stats()



@pytest.mark.parametrize("ablation", ["full", "naive"])
def test_how_stages_fan_out_changes_no_result(tiny, tmp_path, ablation):
    _run(tiny, tmp_path / "per_stage", ClassicalPoseBackend(), ablation=ablation)
    _run(tiny, tmp_path / "per_view", ClassicalPoseBackend(fan_out="per_view"), ablation=ablation)
    for name in ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv"):
        assert (tmp_path / "per_stage" / name).read_bytes() == (tmp_path / "per_view" / name).read_bytes()


def test_frames_before_the_first_seed_frame_are_tracked_backward(tiny, tmp_path):
    recording = make_tiny_recording(tmp_path / "rec", n_frames=N_FRAMES, seed_frames=(4, 5, 6))
    summary = _run(recording, tmp_path / "out")
    assert summary.n_frames == N_FRAMES
    results = read_keypoints_3d(tmp_path / "out" / "keypoints_3d.csv")
    assert results.frames.tolist() == list(range(N_FRAMES))  # one row per frame (FORMATS.md)
    truth = load_recording(recording).ground_truth_3d
    error = np.linalg.norm(results.points_3d - truth, axis=2)
    assert np.isfinite(error[:4]).mean() > 0.9 and np.nanmax(error[:4]) < 2.0
    labels = pd.read_csv(tmp_path / "out" / "keypoints_2d.csv")
    assert set(labels[labels["frame"].isin([4, 5, 6])]["stage"]) == {"seed"}
    assert set(labels[labels["frame"] < 4]["stage"]) - {"seed"}
    # The same frames tracked from seeds at the start agree.
    forward = read_keypoints_3d(_run(tiny, tmp_path / "forward").out_dir + "/keypoints_3d.csv")
    assert np.nanmax(np.abs(forward.points_3d[:4] - results.points_3d[:4])) < 2.0


def test_frames_the_run_does_not_reach_are_written_empty_and_flagged(tmp_path):
    recording = make_tiny_recording(tmp_path / "rec", n_frames=N_FRAMES, seed_frames=(6, 7, 8))
    _run(recording, tmp_path / "out", max_frames=4)  # stops before the first seed frame
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False)
    assert set(qc[qc["frame"] < 6]["reason"]) == {"untracked"}
    assert qc[qc["frame"] < 6]["flagged"].all()
    results = read_keypoints_3d(tmp_path / "out" / "keypoints_3d.csv")
    assert results.frames.tolist() == list(range(9))
    assert np.isnan(results.points_3d[:6]).all()


class CountingTracker(ClassicalPoseBackend):
    """The classical tracker, counting the views of each retry strategy that Stage 1 is asked about."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "views", Counter())

    def locate_regions(self, request: LocateRegionsRequest) -> LocateRegionsAnswer:
        self.views[request.strategy] += 1
        return super().locate_regions(request)


class CountingTrackerRetryingAll(CountingTracker):
    """The same without ``finds_nothing``: every doubtful view is retried."""

    finds_nothing = None


def test_retries_skip_views_with_nothing_to_find_and_change_no_result(tiny, tmp_path):
    pruned, every = CountingTracker(), CountingTrackerRetryingAll()
    _run(tiny, tmp_path / "pruned", pruned)
    _run(tiny, tmp_path / "every", every)
    assert pruned.views[0] == every.views[0]
    retried = sum(n for strategy, n in pruned.views.items() if strategy > 0)
    assert 0 < retried < sum(n for strategy, n in every.views.items() if strategy > 0)
    for name in ("keypoints_3d.csv", "keypoints_2d.csv", "qc.csv"):
        assert (tmp_path / "pruned" / name).read_bytes() == (tmp_path / "every" / name).read_bytes()

    def stage_4_retries(run: str) -> int:  # quality control sending the frame straight to Stage 4
        nodes = [json.loads(line)["node"] for line in (tmp_path / run / "trace.jsonl").open()]
        return sum(pair == ("quality_control", "refine_cross_view")
                   for pair in zip(nodes[:-1], nodes[1:], strict=True))

    assert stage_4_retries("pruned") > 0 and stage_4_retries("every") == 0


@pytest.mark.parametrize("seed_frames", [(0, 1, 2), (20, 21, 22)])
def test_a_tail_base_the_seed_frames_show_in_one_camera_is_tracked_from_them(tmp_path, seed_frames):
    from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording

    recording = synthesize_pose_recording(tmp_path / "rec", SynthPoseOptions(
        frames=40, cameras=4, seed=22, seed_frames=seed_frames))
    seeds = pd.read_csv(recording / "seeds.csv")
    # One camera of four labels the tail base: no seed frame triangulates it.
    seeds[(seeds["keypoint"] != "tail_base") | (seeds["camera"] == "cam2")].to_csv(
        recording / "seeds.csv", index=False)
    _run(recording, tmp_path / "out")
    results = read_keypoints_3d(tmp_path / "out" / "keypoints_3d.csv")
    truth = load_recording(recording).ground_truth_3d
    tail = list(load_recording(recording).keypoints).index("tail_base")
    error = np.linalg.norm(results.points_3d[:, tail] - truth[:, tail], axis=1)
    # Its track starts from the body's estimate (the one view's ray on the midplane), so the
    # tracker finds its dot in the frames next to the seed frames, both ways.
    first, last = seed_frames[0], seed_frames[-1]
    near = [frame for frame in range(40) if 0 < frame - last <= 8 or 0 < first - frame <= 8]
    assert (error[near] < 2.0).mean() > 0.9, error[near]
