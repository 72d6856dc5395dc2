"""Classical captions and merging for behavior clips (Stages caption_clips and merge_segments).

Captions: :func:`summarize_clip` reduces the per-frame kinematics of one
animal over one clip to a small dictionary of numbers (medians, so a
quantity holds for most of the clip); :func:`caption_from_summary` turns it
into a label by a decision list and a templated, numeric description. The
thresholds start from the rules used for the MABe22 mouse triplets
(AmadeusGPT): chase when the other mouse is in front, closer than 40 px and
the speed is at least 3.4 px/frame; huddle when closer than 50 px with a
relative speed under 4 px/frame; oral-genital / oral-oral contact when the
nose is within 15 px of the other's tail base / nose. They are pixel values
for a 46 px mouse (nose to tail base, the MABe22 median) at 30 fps and are
scaled by the session's body length, so other resolutions work unchanged.

Merging the captioned clips into segments is :mod:`tools.segment_merge`.

Kinematics come from :func:`tools.features.kinematics` (keypoints) or from
:func:`tracks_kinematics` (blob tracks, video only): the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tools.behavior_text import describe_clip
from tools.features import distance_to_zone, pairwise_distance, smooth

REFERENCE_BODY_LENGTH_PX = 46.0
_TRACK_SMOOTH_FRAMES = 7
_FAR_PX = 1e6  # stands for "nobody there" inside medians
SummaryValue = float | int | str | None


@dataclass(frozen=True)
class CaptionThresholds:
    """Decision thresholds for a 46 px mouse (nose to tail base); scaled by body length.

    Attributes
    ----------
    contact_px : float
        Nose to the other's nose (oral-oral) or tail base (oral-genital).
    facing_bearing_deg : float
        Largest angle between the heading and the nearest animal in an oral-oral
        contact: face to face the partner is in front, two mice side by side
        (huddling) whose noses meet are not in contact nose to nose.
    chase_distance_px : float
        Nose to the tail base of a mouse in front, during a chase.
    chase_speed_px_s : float
        Minimum chasing speed (3.4 px/frame at 30 fps).
    huddle_distance_px : float
        Centre to centre distance of huddling mice.
    huddle_relative_speed_px_s : float
        Maximum relative speed of huddling mice (4 px/frame at 30 fps).
    moving_speed_px_s : float
        Median speed above which the animal is walking (locomotion).
    still_speed_px_s : float
        Median speed under which the animal is still.
    grooming_bend_sd_deg : float
        Standard deviation of the body bend above which a still animal grooms.
    food_fraction : float
        Fraction of the clip with the nose in the food zone for feeding.
    """

    contact_px: float = 15.0
    facing_bearing_deg: float = 60.0
    chase_distance_px: float = 40.0
    chase_speed_px_s: float = 102.0
    huddle_distance_px: float = 50.0
    huddle_relative_speed_px_s: float = 120.0
    moving_speed_px_s: float = 60.0
    still_speed_px_s: float = 14.0
    grooming_bend_sd_deg: float = 10.0
    food_fraction: float = 0.5


def tracks_kinematics(
    centroid: np.ndarray,
    orientation: np.ndarray,
    elongation: np.ndarray,
    area: np.ndarray,
    fps: float,
    food_zone: tuple[float, float, float, float] | None = None,
    *,
    bend: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Kinematics of blob tracks, with the keys of :func:`tools.features.kinematics`.

    Centroids are smoothed over 7 frames (NaN-aware) before speeds are taken.
    Nose and tail base are estimated at the ends of the blob's major axis
    (the blob ellipse's semi-major axis ``sqrt(area * elongation / pi)``),
    the nose on the side the orientation points to.

    Parameters
    ----------
    centroid : ndarray, shape (n_frames, n_animals, 2)
    orientation, elongation, area : ndarray, shape (n_frames, n_animals)
    fps : float
    food_zone : tuple of float, optional
        ``(x0, y0, x1, y1)``; adds ``food_zone_distance``.
    bend : ndarray, shape (n_frames, n_animals), optional
        Body bend measured from the blob's outline (rad, ``Tracks.bend``);
        without it the bend is guessed from the elongation (unsigned, weak).

    Returns
    -------
    dict of ndarray
        ``(T, A)`` and ``(T, A, A)`` arrays, NaN where the blob was lost.
    """
    if centroid.ndim != 3 or centroid.shape[-1] != 2:
        raise ValueError(f"centroid must have shape (n_frames, n_animals, 2), got {centroid.shape}")
    if bend is None:  # a blob curls up when the body bends: it gets rounder
        bend = np.arccos(np.clip(1.0 / np.maximum(elongation, 1.0), -1.0, 1.0))
    for name, values in (("orientation", orientation), ("elongation", elongation), ("area", area),
                         ("bend", bend)):
        if values.shape != centroid.shape[:2]:
            raise ValueError(f"{name} must have shape {centroid.shape[:2]}, got {values.shape}")
    # Blob centroids jitter by a pixel or two from frame to frame; smooth them as
    # keypoints are smoothed before speeds are taken.
    centroid = smooth(centroid, _TRACK_SMOOTH_FRAMES)
    semi_major = np.sqrt(np.maximum(area, 0.0) * np.maximum(elongation, 1.0) / np.pi)
    direction = np.stack([np.cos(orientation), np.sin(orientation)], axis=-1)
    nose = centroid + 0.9 * semi_major[..., None] * direction
    tail_base = centroid - 0.9 * semi_major[..., None] * direction
    velocity = np.gradient(centroid, axis=0) * fps if len(centroid) > 1 else np.zeros_like(centroid)
    distance = pairwise_distance(centroid, centroid)
    offset = centroid[:, None, :, :] - centroid[:, :, None, :]
    bearing = np.angle(np.exp(1j * (np.arctan2(offset[..., 1], offset[..., 0]) - orientation[:, :, None])))
    eye = np.eye(centroid.shape[1], dtype=bool)
    bearing[:, eye] = np.nan
    out = {
        "centre_x": centroid[..., 0],
        "centre_y": centroid[..., 1],
        "speed": np.linalg.norm(velocity, axis=-1),
        "heading": orientation,
        "turning": np.gradient(np.unwrap(np.nan_to_num(orientation), axis=0), axis=0) * fps
        if len(centroid) > 1 else np.zeros_like(orientation),
        "body_length": 1.8 * semi_major,
        "bend": bend,
        "nearest_distance": np.fmin.reduce(distance, axis=2),
        "distance": distance,
        "nose_nose": pairwise_distance(nose, nose),
        "nose_tailbase": pairwise_distance(nose, tail_base),
        "relative_speed": pairwise_distance(velocity, velocity),
        "approach_speed": -(np.gradient(distance, axis=0) * fps if len(centroid) > 1 else 0 * distance),
        "bearing": bearing,
        "other_in_front": np.abs(bearing) < np.pi / 2,
    }
    if food_zone is not None:
        out["food_zone_distance"] = distance_to_zone(nose, food_zone)
    return out


def session_body_length(kinematics: Mapping[str, np.ndarray]) -> float:
    """Median body length over all frames and animals, px (the reference length when unknown)."""
    values = kinematics["body_length"]
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else REFERENCE_BODY_LENGTH_PX


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    median = float(np.median(finite))
    return None if median >= _FAR_PX else round(median, 2)


def _mode_other(pair: np.ndarray, animal: int) -> tuple[int | None, np.ndarray]:
    """The other animal closest most often by ``pair (n, A)`` and, per frame, the minimum over others."""
    others = np.delete(np.arange(pair.shape[1]), animal)
    if others.size == 0:
        return None, np.full(pair.shape[0], np.nan)
    values = pair[:, others]
    filled = np.where(np.isnan(values), np.inf, values)
    nearest = others[np.argmin(filled, axis=1)]
    valid = np.isfinite(filled).any(axis=1)
    if not valid.any():
        return None, np.full(pair.shape[0], np.nan)
    counts = np.bincount(nearest[valid], minlength=pair.shape[1])
    return int(np.argmax(counts)), np.where(valid, filled.min(axis=1), np.nan)


def summarize_clip(
    kinematics: Mapping[str, np.ndarray],
    animal: int,
    start_frame: int,
    end_frame: int,
    fps: float,
    animals: Sequence[str],
    reference_body_length_px: float,
) -> dict[str, SummaryValue]:
    """Numbers that describe one animal over one clip (JSON-ready, rounded to 0.01).

    Parameters
    ----------
    kinematics : mapping of str to ndarray
        Output of :func:`tools.features.kinematics` or :func:`tracks_kinematics`:
        ``(n_frames, n_animals)`` and ``(n_frames, n_animals, n_animals)`` arrays.
    animal : int
        Index of the animal on the animal axis.
    start_frame, end_frame : int
        The clip, end exclusive.
    fps : float
    animals : sequence of str
        Animal names, for naming partners.
    reference_body_length_px : float
        Body length of the session (see :func:`session_body_length`); scales thresholds.

    Returns
    -------
    dict
        Speeds in px/s, distances in px, angles in degrees; None where not measured.
    """
    n_frames, n_animals = kinematics["speed"].shape
    if not 0 <= start_frame < end_frame <= n_frames:
        raise ValueError(f"clip [{start_frame}, {end_frame}) is outside [0, {n_frames})")
    if not 0 <= animal < n_animals or len(animals) != n_animals:
        raise ValueError(f"animal {animal} / {len(animals)} names do not match {n_animals} animals")
    span = slice(start_frame, end_frame)

    def own(name: str) -> np.ndarray:
        return kinematics[name][span, animal]

    def pair(name: str) -> np.ndarray:
        return kinematics[name][span, animal, :]

    speed = own("speed")
    centre = np.stack([own("centre_x"), own("centre_y")], axis=-1)
    valid_centre = centre[np.isfinite(centre).all(axis=1)]
    heading = own("heading")
    summary: dict[str, SummaryValue] = {
        "animal": animals[animal],
        "frames": end_frame - start_frame,
        "duration_s": round((end_frame - start_frame) / fps, 2),
        "speed_px_s": _median(speed),
        "speed_p90_px_s": _none_or_round(np.nanpercentile(speed, 90) if np.isfinite(speed).any() else None),
        "path_px": round(float(np.nansum(speed) / fps), 2),
        "displacement_px": round(float(np.linalg.norm(valid_centre[-1] - valid_centre[0])), 2)
        if len(valid_centre) else None,
        "heading_deg": _circular_mean_deg(heading),
        "turning_deg_s": _median(np.degrees(np.abs(own("turning")))),
        "body_length_px": _median(own("body_length")),
        "reference_body_length_px": round(float(reference_body_length_px), 2),
        "bend_sd_deg": _none_or_round(np.degrees(np.nanstd(own("bend"))) if np.isfinite(own("bend")).any()
                                      else None),
        "food_zone_fraction": round(float(np.mean(own("food_zone_distance") <= 0.0)), 2)
        if "food_zone_distance" in kinematics else None,
    }
    summary.update(_social_summary(kinematics, span, animal, animals))
    return summary


def _social_summary(
    kinematics: Mapping[str, np.ndarray], span: slice, animal: int, animals: Sequence[str]
) -> dict[str, SummaryValue]:
    def pair(name: str) -> np.ndarray:
        return kinematics[name][span, animal, :].astype(np.float64)

    nearest, nearest_distance = _mode_other(pair("distance"), animal)
    nose_nose_animal, nose_nose = _mode_other(pair("nose_nose"), animal)
    nose_tail_animal, nose_tail = _mode_other(pair("nose_tailbase"), animal)
    # Nose to the tail base of the nearest mouse in front; frames with nobody
    # in front count as far, so the median says "most of the clip".
    in_front = kinematics["other_in_front"][span, animal, :].astype(bool)
    follow = np.where(in_front, pair("nose_tailbase"), np.inf)
    follow[:, animal] = np.inf
    follow_distance = np.nan_to_num(follow.min(axis=1), nan=np.inf, posinf=_FAR_PX) if follow.size else follow

    def name(index: int | None) -> str | None:
        return None if index is None else animals[index]

    out: dict[str, SummaryValue] = {
        "nearest_animal": name(nearest),
        "nearest_distance_px": _median(nearest_distance),
        "nose_nose_px": _median(nose_nose),
        "nose_nose_animal": name(nose_nose_animal),
        "nose_tailbase_px": _median(nose_tail),
        "nose_tailbase_animal": name(nose_tail_animal),
        "follow_distance_px": _median(follow_distance) if follow.shape[1] > 1 else None,
        "nearest_bearing_deg": None,
        "nearest_approach_px_s": None,
        "nearest_relative_speed_px_s": None,
    }
    if nearest is not None:
        out["nearest_bearing_deg"] = _circular_mean_deg(kinematics["bearing"][span, animal, nearest])
        out["nearest_approach_px_s"] = _median(kinematics["approach_speed"][span, animal, nearest])
        out["nearest_relative_speed_px_s"] = _median(kinematics["relative_speed"][span, animal, nearest])
    return out


def _none_or_round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 2)


def _circular_mean_deg(angles: np.ndarray) -> float | None:
    finite = angles[np.isfinite(angles)]
    if not finite.size:
        return None
    return round(float(np.degrees(np.arctan2(np.sin(finite).mean(), np.cos(finite).mean()))), 2)


def caption_from_summary(
    summary: Mapping[str, SummaryValue], thresholds: CaptionThresholds = CaptionThresholds()
) -> tuple[str, str]:
    """Label and description of a clip from its :func:`summarize_clip` summary.

    Decision list, first match wins: oral-oral contact (face to face), chase, oral-genital
    contact, huddle, locomotion, then for a still animal grooming, feeding or
    stationary, and exploring for slow movement in between.

    Returns
    -------
    tuple of str
        ``(label, description)``; the label is lower snake_case.
    """
    return _label(summary, thresholds), describe_clip(summary)


def _label(summary: Mapping[str, SummaryValue], thresholds: CaptionThresholds) -> str:
    reference = _number(summary.get("reference_body_length_px"), REFERENCE_BODY_LENGTH_PX)
    scale = float(np.clip(reference / REFERENCE_BODY_LENGTH_PX, 0.25, 4.0))
    speed = _number(summary.get("speed_px_s"), 0.0)
    far = float("inf")
    contact = thresholds.contact_px * scale
    facing = abs(_number(summary.get("nearest_bearing_deg"), 0.0)) <= thresholds.facing_bearing_deg
    if _number(summary.get("nose_nose_px"), far) < contact and facing:
        return "oral_oral_contact"
    if (speed >= thresholds.chase_speed_px_s * scale
            and _number(summary.get("follow_distance_px"), far) < thresholds.chase_distance_px * scale):
        return "chase"
    moving = thresholds.moving_speed_px_s * scale
    if _number(summary.get("nose_tailbase_px"), far) < contact and speed < moving:
        return "oral_genital_contact"
    if (_number(summary.get("nearest_distance_px"), far) < thresholds.huddle_distance_px * scale
            and _number(summary.get("nearest_relative_speed_px_s"), far)
            < thresholds.huddle_relative_speed_px_s * scale
            and speed < moving / 2):
        return "huddle"
    if speed >= moving:
        return "locomotion"
    # Grooming moves the body centre (the spine curls) but the animal stays in place.
    stays = _number(summary.get("displacement_px"), far) < 0.5 * REFERENCE_BODY_LENGTH_PX * scale
    if _number(summary.get("bend_sd_deg"), 0.0) >= thresholds.grooming_bend_sd_deg and stays:
        return "grooming"
    if speed >= thresholds.still_speed_px_s * scale:
        return "exploring"
    if _number(summary.get("food_zone_fraction"), 0.0) >= thresholds.food_fraction:
        return "feeding"
    return "stationary"


def _number(value: SummaryValue, default: float) -> float:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else default
