"""The model pose backend's images: frames read ahead through their own streams, drawn images reused."""

from __future__ import annotations

import numpy as np
import pytest

from agent.backends import pose_images as images
from agent.backends.pose_base import AssignWithinRegionRequest, Exemplar, LocateRegionsRequest
from agent.recording import Recording, load_recording
from tests.fixtures.pose_requests import FRAME, centroids, tiny_pose_recording, view
from tools.regions import Box


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Recording:
    return tiny_pose_recording(tmp_path_factory.mktemp("pose"))


@pytest.fixture
def cache(recording):
    frames = images.FrameCache(recording)
    yield frames
    frames.close()


def test_frames_read_in_any_order_equal_the_streams_and_are_decoded_once(recording, cache, rng):
    camera = recording.cameras[1]
    order = [*rng.permutation(recording.n_frames).tolist(), *range(recording.n_frames)]
    reference = load_recording(recording.root)  # streams of its own: no shared capture position
    for frame in order:
        for kind in ("reflectance", "fluorescence"):
            stream = reference.reflectance(camera) if kind == "reflectance" else reference.fluorescence(camera)
            np.testing.assert_array_equal(cache.read(camera, kind, frame), stream.read(frame))
    reference.close()
    # Read-ahead and foreground reads never decode a frame twice; every frame fits the cache.
    assert cache.n_decoded == 2 * recording.n_frames


def test_a_failed_read_raises_and_the_cache_keeps_working(recording, cache):
    camera = recording.cameras[0]
    with pytest.raises(IndexError):
        cache.read(camera, "reflectance", recording.n_frames)
    np.testing.assert_array_equal(cache.read(camera, "reflectance", 0), recording.reflectance(camera).read(0))
    cache.close()
    cache.close()  # idempotent


def _assign_request(recording, exemplar_frames, frame, region="head") -> AssignWithinRegionRequest:
    truth = recording.ground_truth_2d
    fields = {**view(recording), "frame": frame,
              "exemplars": [Exemplar(frame=f, points=[tuple(p) for p in truth[f, 0]]) for f in exemplar_frames]}
    base = LocateRegionsRequest(**fields, regions=recording.regions)
    return AssignWithinRegionRequest(**base.subset(recording.regions[region]).model_dump(exclude={"regions"}),
                                     region=region, box=(0, 0, 160, 120), centroids=centroids(recording))


def test_an_exemplar_is_drawn_once_for_the_target_frames_that_reuse_it(recording, cache, monkeypatch):
    drawn = []
    original = images.draw_numbered_spots
    monkeypatch.setattr(images, "draw_numbered_spots", lambda *a, **k: drawn.append(1) or original(*a, **k))
    box = Box(0, 0, 160, 120)
    first = _assign_request(recording, [FRAME - 3, FRAME - 2, FRAME - 1], FRAME)
    shown = first.centroids
    pictures, numbering = images.assign_images(cache, first, box, shown)
    assert len(pictures) == 4 and len(drawn) == 4
    # The next target frame shares two exemplars: only the new exemplar and the target are drawn.
    following = _assign_request(recording, [FRAME - 2, FRAME - 1, FRAME], FRAME + 1)
    later, later_numbering = images.assign_images(cache, following, box, shown)
    assert len(drawn) == 6
    assert later[:2] == pictures[1:3] and later_numbering[:2] == numbering[1:3]
    # A cached image is the image a fresh cache draws.
    fresh = images.FrameCache(recording)
    assert images.assign_images(fresh, following, box, shown)[0] == later
    fresh.close()


def test_stage1_images_are_reused_by_a_retry_of_the_same_view(recording, cache):
    request = LocateRegionsRequest(**view(recording), regions=recording.regions)
    view_box = images.animal_view(request)
    boxes = images.exemplar_boxes(request, request.regions)
    colors = images.region_colors(list(request.regions))
    first = images.locate_images(cache, request, view_box, boxes, colors)
    again = images.locate_images(cache, request, view_box, boxes, colors)
    assert len(first) == len(request.exemplars) + 1
    assert all(a is b for a, b in zip(first, again, strict=True))
    fresh = images.FrameCache(recording)
    assert images.locate_images(fresh, request, view_box, boxes, colors) == first
    fresh.close()
