"""Simulated multi-mouse behavior: scripted bouts, a body pose model, a rendered top view.

Every mouse follows a timeline of bouts (1 to 6 s) drawn from a seeded
script. Solo bouts (``locomotion``, ``exploring``, ``stationary``,
``grooming``, ``feeding``) are generated per animal; social bouts (``chase``,
``huddle``, ``oral_genital_contact``, ``oral_oral_contact``) are scripted
jointly for the animals involved, after an approach bout (``locomotion``)
that brings them into the configuration. The passive partner of a chase
(the leader) and of an oral-genital contact (the target) keeps its own solo
label (``locomotion`` / ``stationary``), as in MABe, where these behaviors
are labelled on the animal that performs them.

A mouse is a body pose per frame: position of the centre of its back,
heading, spine bend and head yaw. :func:`pose_keypoints` turns poses into 12
keypoints with the MABe22 bodypart names. Everything is pure and
deterministic given the seed; writing files is the caller's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from tools.behavior_script import SCRIPT_LABELS, AnimalTrack, script_session

BODYPARTS: tuple[str, ...] = (
    "nose", "left ear", "right ear", "neck", "left forepaw", "right forepaw", "center back",
    "left hindpaw", "right hindpaw", "tail base", "tail middle", "tail tip",
)
BEHAVIOR_LABELS: tuple[str, ...] = SCRIPT_LABELS
REFERENCE_SIZE_PX = 512
REFERENCE_BODY_LENGTH_PX = 48.0  # nose to tail base at 512 px (MABe22 triplets: median 46 px)

# Keypoints on the body midline: arc length from the centre of the back, in
# body lengths (positive towards the nose), and lateral offset (positive to
# the animal's left). Head points (nose, ears) are rotated by the head yaw
# around the neck.
_MIDLINE_S = np.array([0.5, 0.36, 0.36, 0.28, 0.2, 0.2, 0.0, -0.28, -0.28, -0.5, -0.95, -1.4])
_LATERAL = np.array([0.0, 0.13, -0.13, 0.0, 0.17, -0.17, 0.0, 0.19, -0.19, 0.0, 0.0, 0.0])
_HEAD = np.array([True, True, True] + [False] * 9)
_NECK_S = 0.28
_TAIL_CURL = 0.8  # extra bend of the tail relative to the body bend


@dataclass(frozen=True)
class SimParams:
    """What to simulate.

    Attributes
    ----------
    n_animals : int
        Number of mice (1 to 6).
    seconds : float
        Session length (at least 2 s).
    fps : float
        Frame rate.
    size : int
        Width and height of the square top view, pixels; lengths scale with it.
    keypoint_noise_px : float
        Standard deviation of the Gaussian noise added to keypoints.
    """

    n_animals: int = 3
    seconds: float = 60.0
    fps: float = 30.0
    size: int = 512
    keypoint_noise_px: float = 1.0

    def check(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        if not 1 <= self.n_animals <= 6:
            raise ValueError(f"n_animals must be 1..6, got {self.n_animals}")
        if self.seconds < 2.0:
            raise ValueError(f"seconds must be at least 2, got {self.seconds}")
        if not 5.0 <= self.fps <= 240.0:
            raise ValueError(f"fps must be 5..240, got {self.fps}")
        if not 128 <= self.size <= 2048:
            raise ValueError(f"size must be 128..2048 px, got {self.size}")


@dataclass(frozen=True)
class Bout:
    """One ground-truth bout: ``animal`` index, frames ``[start_frame, end_frame)``, ``label``."""

    animal: int
    start_frame: int
    end_frame: int
    label: str


@dataclass(frozen=True)
class SimulatedSession:
    """A simulated session.

    Attributes
    ----------
    keypoints : ndarray, shape (n_frames, n_animals, 12, 2)
        Noisy keypoints in pixels, bodyparts in :data:`BODYPARTS` order.
    poses : ndarray, shape (n_frames, n_animals, 5)
        Body pose per frame: x, y (centre of back, px), heading, bend, head yaw (rad).
    body_length_px : ndarray, shape (n_animals,)
        Nose to tail base length of each mouse when straight.
    bouts : tuple of Bout
        Ground truth, per animal in time order, tiling ``[0, n_frames)``.
    food_zone : tuple of float
        ``(x0, y0, x1, y1)`` in pixels.
    size : int
        Image width and height.
    fps : float
        Frame rate.
    """

    keypoints: np.ndarray
    poses: np.ndarray
    body_length_px: np.ndarray
    bouts: tuple[Bout, ...]
    food_zone: tuple[float, float, float, float]
    size: int
    fps: float

    @property
    def n_frames(self) -> int:
        return int(self.keypoints.shape[0])


def default_food_zone(size: int) -> tuple[float, float, float, float]:
    """Food zone at the middle of the top wall, as in the MABe22 arena, scaled to ``size``."""
    scale = size / REFERENCE_SIZE_PX
    return (195.0 * scale, 40.0 * scale, 330.0 * scale, 75.0 * scale)


def simulate_behavior(params: SimParams, seed: int) -> SimulatedSession:
    """Script and simulate a session.

    Parameters
    ----------
    params : SimParams
        Number of animals, length, frame rate, image size.
    seed : int
        Seed of every random choice; same seed, same session.

    Returns
    -------
    SimulatedSession
    """
    params.check()
    rng = np.random.default_rng(seed)
    n_frames = int(round(params.seconds * params.fps))
    scale = params.size / REFERENCE_SIZE_PX
    body_length = REFERENCE_BODY_LENGTH_PX * scale * rng.uniform(0.95, 1.05, params.n_animals)
    food_zone = default_food_zone(params.size)
    tracks = script_session(
        n_animals=params.n_animals, n_frames=n_frames, fps=params.fps, size=params.size,
        body_length=body_length, food_zone=food_zone, rng=rng,
    )
    poses = np.stack([_track_poses(track, n_frames) for track in tracks], axis=1)
    keypoints = pose_keypoints(poses, body_length)
    keypoints = keypoints + rng.normal(0.0, params.keypoint_noise_px, keypoints.shape)
    bouts = tuple(bout for index, track in enumerate(tracks) for bout in _bouts(index, track, n_frames))
    return SimulatedSession(
        keypoints=keypoints, poses=poses, body_length_px=body_length, bouts=bouts,
        food_zone=food_zone, size=params.size, fps=params.fps,
    )


def _track_poses(track: AnimalTrack, n_frames: int) -> np.ndarray:
    columns = [np.concatenate(parts)[:n_frames] for parts in track.pose_columns()]
    return np.stack(columns, axis=-1)


def _bouts(animal: int, track: AnimalTrack, n_frames: int) -> Iterator[Bout]:
    labels = np.concatenate([np.full(len(seg.x), seg.label, dtype=object) for seg in track.segments])
    labels = labels[:n_frames]
    changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes, [n_frames]])
    for start, end in zip(starts, ends, strict=True):
        yield Bout(animal, int(start), int(end), str(labels[start]))


def pose_keypoints(poses: np.ndarray, body_length: np.ndarray) -> np.ndarray:
    """Keypoints of body poses.

    The spine is a circular arc through the centre of the back with total
    bend ``bend`` over one body length; the tail curls further.

    Parameters
    ----------
    poses : ndarray, shape (n_frames, n_animals, 5)
        x, y, heading, bend, head yaw per frame and animal (px, rad).
    body_length : ndarray, shape (n_animals,)
        Nose to tail base length when straight, px.

    Returns
    -------
    ndarray, shape (n_frames, n_animals, 12, 2)
        Keypoints in :data:`BODYPARTS` order.
    """
    if poses.ndim != 3 or poses.shape[-1] != 5:
        raise ValueError(f"poses must have shape (n_frames, n_animals, 5), got {poses.shape}")
    if body_length.shape != (poses.shape[1],):
        raise ValueError(f"body_length must have shape ({poses.shape[1]},), got {body_length.shape}")
    x, y, heading, bend, yaw = (poses[..., i, None] for i in range(5))
    length = body_length[None, :, None]
    arc = _MIDLINE_S * length
    curvature = np.where(_MIDLINE_S < -0.5, 1.0 + _TAIL_CURL, 1.0) * bend / length
    mid_x, mid_y = _arc_point(x, y, heading, curvature, arc)
    tangent = heading + curvature * arc
    neck_x, neck_y = _arc_point(x, y, heading, bend / length, np.full_like(arc, _NECK_S) * length)
    # Head points: rotate their offset from the neck by the head yaw.
    dx, dy = mid_x - neck_x, mid_y - neck_y
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    head_x = neck_x + dx * cos_yaw - dy * sin_yaw
    head_y = neck_y + dx * sin_yaw + dy * cos_yaw
    lateral = _LATERAL * length
    base_x = np.where(_HEAD, head_x, mid_x)
    base_y = np.where(_HEAD, head_y, mid_y)
    # Image y points down, so the animal's left is at heading - 90 degrees.
    angle_for_lateral = np.where(_HEAD, tangent + yaw, tangent)
    left_x, left_y = np.sin(angle_for_lateral), -np.cos(angle_for_lateral)
    return np.stack([base_x + lateral * left_x, base_y + lateral * left_y], axis=-1)


def _arc_point(
    x: np.ndarray, y: np.ndarray, heading: np.ndarray, curvature: np.ndarray, arc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Point at signed arc length ``arc`` along a circular arc (stable at zero curvature)."""
    half_turn = curvature * arc / 2.0
    chord = arc * np.sinc(half_turn / np.pi)
    return x + chord * np.cos(heading + half_turn), y + chord * np.sin(heading + half_turn)


def render_background(size: int, food_zone: tuple[float, float, float, float], seed: int) -> np.ndarray:
    """Arena floor: light textured floor, dark walls, a slightly darker food zone.

    Returns
    -------
    ndarray, shape (size, size), uint8
    """
    rng = np.random.default_rng(seed)
    floor = 200.0 + cv2.GaussianBlur(rng.normal(0.0, 6.0, (size, size)), (0, 0), 3.0)
    wall = max(2, size // 40)
    floor[:wall, :] = floor[-wall:, :] = 70.0
    floor[:, :wall] = floor[:, -wall:] = 70.0
    x0, y0, x1, y1 = (int(round(v)) for v in food_zone)
    floor[y0:y1, x0:x1] -= 25.0
    return np.clip(floor, 0, 255).astype(np.uint8)


def render_frames(
    keypoints: np.ndarray, body_length: np.ndarray, background: np.ndarray
) -> Iterator[np.ndarray]:
    """Draw each frame: mice as dark bodies (spine discs, head, tail) on the background.

    Parameters
    ----------
    keypoints : ndarray, shape (n_frames, n_animals, 12, 2)
    body_length : ndarray, shape (n_animals,)
    background : ndarray, shape (height, width), uint8

    Yields
    ------
    ndarray, shape (height, width), uint8
    """
    if keypoints.ndim != 4 or keypoints.shape[2:] != (len(BODYPARTS), 2):
        raise ValueError(f"keypoints must have shape (n_frames, n_animals, 12, 2), got {keypoints.shape}")
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    fixed = np.round(keypoints * (1 << shift)).astype(np.int32)
    # Discs along neck -> centre back -> tail base with tapering radii.
    spine_weights = np.linspace(0.0, 1.0, 7)
    for frame_points in fixed:
        frame = background.copy()
        for animal, points in enumerate(frame_points):
            length = float(body_length[animal])
            shade = 45 + 8 * animal
            cv2.polylines(frame, [points[9:12]], False, shade + 15, max(1, int(0.06 * length)),
                          cv2.LINE_AA, shift)
            for lower, upper in ((3, 6), (6, 9)):
                radii = np.interp(spine_weights, [0, 1], _SPINE_RADII[lower, upper]) * length
                centres = points[lower] + np.outer(spine_weights, points[upper] - points[lower])
                for centre, radius in zip(centres.astype(np.int32), radii, strict=True):
                    cv2.circle(frame, tuple(int(c) for c in centre), int(radius * (1 << shift)), shade,
                               -1, cv2.LINE_AA, shift)
            cv2.fillConvexPoly(frame, points[[0, 1, 3, 2]], shade, cv2.LINE_AA, shift)
        yield frame


_SPINE_RADII = {(3, 6): (0.15, 0.21), (6, 9): (0.21, 0.13)}
