"""Tests of tools/behavior_sim.py: scripted bouts, the body model, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from tools.behavior_sim import (
    BEHAVIOR_LABELS,
    BODYPARTS,
    SimParams,
    pose_keypoints,
    render_background,
    render_frames,
    simulate_behavior,
)

NOSE, TAIL_BASE, CENTRE = BODYPARTS.index("nose"), BODYPARTS.index("tail base"), BODYPARTS.index("center back")


@pytest.fixture(scope="module")
def sessions():
    return [simulate_behavior(SimParams(n_animals=3, seconds=60.0), seed=seed) for seed in range(3)]


def test_same_seed_same_session_other_seed_other_session():
    params = SimParams(n_animals=2, seconds=10.0, size=256)
    first, again, other = (simulate_behavior(params, seed) for seed in (4, 4, 5))
    np.testing.assert_array_equal(first.keypoints, again.keypoints)
    assert first.bouts == again.bouts
    assert not np.array_equal(first.keypoints, other.keypoints)


def test_bouts_tile_each_animal_and_last_one_to_six_seconds(sessions):
    for session in sessions:
        for animal in range(session.keypoints.shape[1]):
            bouts = [b for b in session.bouts if b.animal == animal]
            assert bouts[0].start_frame == 0 and bouts[-1].end_frame == session.n_frames
            for before, after in zip(bouts, bouts[1:], strict=False):
                assert before.end_frame == after.start_frame and before.label != after.label
            lengths = np.array([b.end_frame - b.start_frame for b in bouts]) / session.fps
            assert lengths.min() >= 1.0 - 1e-9 and lengths.max() <= 6.0 + 1e-9
            assert {b.label for b in bouts} <= set(BEHAVIOR_LABELS)


def test_every_behavior_appears_over_a_few_sessions(sessions):
    assert {b.label for s in sessions for b in s.bouts} == set(BEHAVIOR_LABELS)


def _frames_of(session, label):
    return [(b.animal, np.arange(b.start_frame, b.end_frame)) for b in session.bouts if b.label == label]


def _closest(kp, animal, frames, own_part, other_part):
    """Median over ``frames`` of the distance from ``own_part`` to the nearest other animal's ``other_part``."""
    others = [o for o in range(kp.shape[1]) if o != animal]
    return min(np.median(np.linalg.norm(kp[frames, animal, own_part] - kp[frames, o, other_part], axis=-1))
               for o in others)


def test_social_bouts_have_their_geometry(sessions):
    """Oral contacts put the nose on the partner; chasers run behind another mouse; huddlers sit close."""
    for session in sessions:
        kp = session.keypoints
        for animal, frames in _frames_of(session, "oral_oral_contact"):
            assert _closest(kp, animal, frames, NOSE, NOSE) < 10.0
        for animal, frames in _frames_of(session, "oral_genital_contact"):
            assert _closest(kp, animal, frames, NOSE, TAIL_BASE) < 10.0
        for animal, frames in _frames_of(session, "chase"):
            speed = np.linalg.norm(np.diff(kp[frames, animal, CENTRE], axis=0), axis=-1) * session.fps
            assert np.median(speed) > 102.0 and _closest(kp, animal, frames, NOSE, TAIL_BASE) < 40.0
        for animal, frames in _frames_of(session, "huddle"):
            assert _closest(kp, animal, frames, CENTRE, CENTRE) < 40.0


def test_feeding_puts_the_nose_in_the_food_zone(sessions):
    for session in sessions:
        x0, y0, x1, y1 = session.food_zone
        for animal, frames in _frames_of(session, "feeding"):
            nose = session.keypoints[frames, animal, NOSE]
            inside = (nose[:, 0] > x0) & (nose[:, 0] < x1) & (nose[:, 1] > y0) & (nose[:, 1] < y1)
            assert inside.mean() > 0.9


def test_straight_pose_has_body_length_and_points_along_heading():
    heading = np.array([[0.3, -2.0]])
    poses = np.stack([np.full((1, 2), 100.0), np.full((1, 2), 80.0), heading, np.zeros((1, 2)),
                      np.zeros((1, 2))], axis=-1)
    length = np.array([40.0, 55.0])
    kp = pose_keypoints(poses, length)
    assert kp.shape == (1, 2, len(BODYPARTS), 2)
    body = kp[0, :, NOSE] - kp[0, :, TAIL_BASE]
    np.testing.assert_allclose(np.linalg.norm(body, axis=-1), length)
    np.testing.assert_allclose(np.arctan2(body[:, 1], body[:, 0]), heading[0])


def test_bend_shortens_the_chord_and_keeps_nose_tailbase_symmetric():
    poses = np.zeros((1, 1, 5))
    poses[0, 0, 3] = 1.0
    kp = pose_keypoints(poses, np.array([50.0]))
    assert np.linalg.norm(kp[0, 0, NOSE] - kp[0, 0, TAIL_BASE]) < 50.0
    np.testing.assert_allclose(np.linalg.norm(kp[0, 0, NOSE]), np.linalg.norm(kp[0, 0, TAIL_BASE]))


def test_pose_keypoints_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n_frames, n_animals, 5\)"):
        pose_keypoints(np.zeros((3, 2, 4)), np.ones(2))


def test_rendered_mice_are_darker_than_the_floor():
    session = simulate_behavior(SimParams(n_animals=2, seconds=2.0, size=192), seed=1)
    background = render_background(session.size, session.food_zone, seed=1)
    frame = next(render_frames(session.keypoints[:1], session.body_length_px, background))
    assert frame.shape == (192, 192) and frame.dtype == np.uint8
    centres = np.round(session.keypoints[0, :, CENTRE]).astype(int)
    assert np.all(frame[centres[:, 1], centres[:, 0]] < background[centres[:, 1], centres[:, 0]] - 60)
