"""Per-animal behavior features from 2D keypoints (Stage: extract_features).

Pure numpy, vectorized over frames, animals and animal pairs. Two entry
points:

- :func:`kinematics`: raw per-frame quantities in physical units (px, px/s,
  rad, rad/s) for rules such as "chase when the nearest animal is under
  40 px and in front"; NaN where a quantity cannot be measured.
- :func:`keypoint_features`: a ``(n_frames, n_animals, n_features)`` matrix
  for clustering, with no NaN.

Missing data: keypoint gaps up to ``max_gap`` frames are linearly
interpolated in time, then positions are smoothed with a NaN-aware centred
moving average. The body centre is the mean of the torso points available
in that frame. Whatever is still NaN in the feature matrix is filled by
:func:`fill_missing` (nearest valid value in time, then the feature's median,
then 0).

Bodyparts are found by name (case, spaces, ``_`` and ``-`` ignored), see
:func:`match_bodyparts`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

MAX_GAP_FRAMES = 10
SMOOTH_FRAMES = 5

_ROLE_PATTERNS = {
    "nose": r"(nose|snout)(tip)?",
    "left_ear": r"(left|l)ear(tip|base)?|ear(left|l)",
    "right_ear": r"(right|r)ear(tip|base)?|ear(right|r)",
    "neck": r".*neck.*",
    "centre": r".*(center|centre|centroid|midback|backmid(dle)?|middleback|bodymid).*",
    "tail_base": r"tail(base|root|start|0|1)?|(base|root)oftail",
}
_TORSO = r".*(neck|center|centre|centroid|spine|back|hip|shoulder|body|mid).*"
_POSTURE_ROLES = ("nose", "left_ear", "right_ear", "neck", "tail_base")


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of every animal in every frame.

    Attributes
    ----------
    values
        ``(n_frames, n_animals, n_features)`` float32, no NaN.
    names
        ``n_features`` names, in column order.
    """

    values: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.values.shape[2] != len(self.names):
            raise ValueError(
                f"values must be (n_frames, n_animals, {len(self.names)}), got {self.values.shape}"
            )


def match_bodyparts(bodyparts: list[str]) -> dict[str, int]:
    """Find the body's landmarks among free-form bodypart names.

    Names are compared lower-case with spaces, ``_``, ``-`` and ``.``
    removed: ``nose``/``snout``; ``left ear``/``ear_L``/``leftear``;
    ``neck``; ``center back``/``centroid``/``mid_back``; ``tail base``/
    ``tailbase``/``tail_root``. The first matching name wins.

    Returns
    -------
    dict
        Role (``nose``, ``left_ear``, ``right_ear``, ``neck``, ``centre``,
        ``tail_base``) to bodypart index, for the roles found.
    """
    keys = [re.sub(r"[\s_\-.]", "", name.lower()) for name in bodyparts]
    roles: dict[str, int] = {}
    for role, pattern in _ROLE_PATTERNS.items():
        hits = [i for i, key in enumerate(keys) if re.fullmatch(pattern, key)]
        if hits:
            roles[role] = hits[0]
    return roles


def _torso_indices(bodyparts: list[str], roles: dict[str, int]) -> list[int]:
    keys = [re.sub(r"[\s_\-.]", "", name.lower()) for name in bodyparts]
    torso = {i for i, key in enumerate(keys) if re.fullmatch(_TORSO, key) and "tail" not in key}
    torso |= {roles[r] for r in ("neck", "centre", "tail_base") if r in roles}
    return sorted(torso) or list(range(len(bodyparts)))


def interpolate_gaps(values: np.ndarray, max_gap: int = MAX_GAP_FRAMES) -> np.ndarray:
    """Linearly interpolate NaN runs of at most ``max_gap`` frames along axis 0.

    ``values`` is ``(n_frames, ...)``; leading, trailing and longer gaps stay NaN.
    """
    n_frames = values.shape[0]
    flat = values.reshape(n_frames, -1).astype(np.float64)
    prev_idx, next_idx = _neighbour_valid_indices(flat)
    frame = np.arange(n_frames)[:, None]
    fill = np.isnan(flat) & (prev_idx >= 0) & (next_idx < n_frames)
    fill &= next_idx - prev_idx - 1 <= max_gap
    cols = np.arange(flat.shape[1])[None, :]
    before = flat[np.clip(prev_idx, 0, n_frames - 1), cols]
    after = flat[np.clip(next_idx, 0, n_frames - 1), cols]
    weight = (frame - prev_idx) / np.maximum(next_idx - prev_idx, 1)
    out = np.where(fill, before + (after - before) * weight, flat)
    return out.reshape(values.shape)


def _neighbour_valid_indices(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last valid row at or before, and first at or after, each row (-1 / T: none)."""
    n_frames = flat.shape[0]
    valid = ~np.isnan(flat)
    frame = np.arange(n_frames)[:, None]
    prev_idx = np.maximum.accumulate(np.where(valid, frame, -1), axis=0)
    next_idx = np.minimum.accumulate(np.where(valid, frame, n_frames)[::-1], axis=0)[::-1]
    return prev_idx, next_idx


def smooth(values: np.ndarray, window: int = SMOOTH_FRAMES) -> np.ndarray:
    """NaN-aware centred moving average over ``window`` frames along axis 0; NaN stays NaN.

    The ends are extended by point reflection, so a steady drift (constant
    velocity) passes unchanged up to the first and last frame.
    """
    values = values.astype(np.float64)
    if window <= 1 or values.shape[0] < 2:
        return values
    half = window // 2
    padding = [(half, half)] + [(0, 0)] * (values.ndim - 1)
    padded = np.pad(values, padding, mode="reflect", reflect_type="odd")
    missing = np.isnan(padded)
    total = uniform_filter1d(np.where(missing, 0.0, padded), window, axis=0, mode="nearest")
    count = uniform_filter1d((~missing).astype(np.float64), window, axis=0, mode="nearest")
    out = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    out = out[half: half + values.shape[0]]
    out[np.isnan(values)] = np.nan
    return out


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Fill every NaN of ``(n_frames, n_animals, n_features)``; returns float32 without NaN.

    Each (animal, feature) series takes the last valid value before a gap
    (the first valid value for a leading gap); a series with no valid value
    takes the feature's median over all frames and animals, else 0.
    """
    n_frames = values.shape[0]
    flat = values.reshape(n_frames, -1).astype(np.float64)
    prev_idx, next_idx = _neighbour_valid_indices(flat)
    source = np.where(prev_idx >= 0, prev_idx, next_idx)
    cols = np.arange(flat.shape[1])[None, :]
    filled = flat[np.clip(source, 0, n_frames - 1), cols].reshape(values.shape)
    empty = np.isnan(filled)
    if empty.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN feature: median is NaN
            medians = np.nan_to_num(np.nanmedian(values, axis=(0, 1)))
        filled = np.where(empty, np.broadcast_to(medians, values.shape), filled)
    return filled.astype(np.float32)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _time_derivative(values: np.ndarray, fps: float) -> np.ndarray:
    if values.shape[0] < 2:
        return np.zeros_like(values)
    return np.gradient(values, axis=0) * fps


def angular_velocity(angle: np.ndarray, fps: float) -> np.ndarray:
    """Central difference of an angle along axis 0, wrapped to (-pi, pi], in rad/s."""
    if angle.shape[0] < 2:
        return np.zeros_like(angle)
    rate = np.empty_like(angle)
    rate[1:-1] = _wrap(angle[2:] - angle[:-2]) / 2
    rate[0] = _wrap(angle[1] - angle[0])
    rate[-1] = _wrap(angle[-1] - angle[-2])
    return rate * fps


def _first_available(candidates: list[np.ndarray]) -> np.ndarray:
    out = np.full_like(candidates[0], np.nan)
    for point in candidates:
        out = np.where(np.isnan(out), point, out)
    return out


def _landmarks(keypoints: np.ndarray, bodyparts: list[str]) -> dict[str, np.ndarray]:
    """Body centre, front and back points ``(T, A, 2)`` and role points of cleaned keypoints."""
    roles = match_bodyparts(bodyparts)
    centre = _nanmean(keypoints[:, :, _torso_indices(bodyparts, roles)], axis=2)
    centre = _first_available([centre, _nanmean(keypoints, axis=2)])
    points = {role: keypoints[:, :, index] for role, index in roles.items()}
    if "left_ear" in points and "right_ear" in points:
        points["ears"] = _nanmean(np.stack([points["left_ear"], points["right_ear"]]), axis=0)
    front = [points[r] for r in ("nose", "neck", "ears") if r in points]
    back = [points[r] for r in ("tail_base", "centre") if r in points]
    if not front and not back:
        # No recognised names: DeepLabCut projects list the head first and the tail last.
        front, back = [keypoints[:, :, 0]], [keypoints[:, :, -1]]
    points["front"] = _first_available(front) if front else centre
    points["back"] = _first_available(back + [centre]) if back else centre
    points["body_centre"] = centre
    return points


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN (without a warning) where all are NaN."""
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _check_keypoints(keypoints: np.ndarray, bodyparts: list[str], fps: float) -> None:
    if keypoints.ndim != 4 or keypoints.shape[2:] != (len(bodyparts), 2):
        raise ValueError(
            f"keypoints must be (n_frames, n_animals, {len(bodyparts)}, 2), got {keypoints.shape}"
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")


def clean_keypoints(keypoints: np.ndarray, max_gap: int = MAX_GAP_FRAMES,
                    window: int = SMOOTH_FRAMES) -> np.ndarray:
    """Interpolate short gaps, then smooth: ``(T, A, K, 2)`` in, same shape out (NaN stays NaN)."""
    return smooth(interpolate_gaps(keypoints, max_gap), window)


def distance_to_zone(points: np.ndarray, zone: tuple[float, float, float, float]) -> np.ndarray:
    """Distance in px from ``points (..., 2)`` to the rectangle ``(x0, y0, x1, y1)``; 0 inside."""
    x0, y0, x1, y1 = zone
    dx = np.maximum(np.maximum(x0 - points[..., 0], points[..., 0] - x1), 0.0)
    dy = np.maximum(np.maximum(y0 - points[..., 1], points[..., 1] - y1), 0.0)
    return np.hypot(dx, dy)


def pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[t, i, j] = |a[t, i] - b[t, j]|`` for ``a, b (T, A, 2)``; the diagonal is NaN."""
    dist = np.linalg.norm(a[:, :, None, :] - b[:, None, :, :], axis=-1)
    dist[:, np.arange(a.shape[1]), np.arange(a.shape[1])] = np.nan
    return dist


def kinematics(
    keypoints: np.ndarray,
    bodyparts: list[str],
    fps: float,
    food_zone: tuple[float, float, float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Per-frame kinematic quantities in physical units, NaN where not measurable.

    Parameters
    ----------
    keypoints
        ``(n_frames, n_animals, n_bodyparts, 2)`` pixels, NaN missing.
    bodyparts
        Names of the bodyparts axis (matched by :func:`match_bodyparts`).
    fps
        Frames per second.
    food_zone
        Optional ``(x0, y0, x1, y1)``; adds ``food_zone_distance``.

    Returns
    -------
    dict
        ``(T, A)``: ``centre_x``, ``centre_y`` (px), ``speed`` (px/s), ``heading``
        (rad, tail base to nose, image axes: x right, y down), ``turning``
        (rad/s), ``body_length`` (px), ``bend`` (rad, signed angle between the
        rear and front halves), ``nearest_distance`` (px, to the nearest
        other centre), ``food_zone_distance`` (px from the nose, 0 inside).
        ``(T, A, A)``, ``[t, i, j]`` = animal i towards animal j, NaN on the
        diagonal: ``distance`` (centre to centre), ``nose_nose``,
        ``nose_tailbase`` (i's nose to j's tail base), ``relative_speed``
        (|v_i - v_j|, px/s), ``approach_speed`` (-d distance/dt, px/s),
        ``bearing`` (rad, direction of j seen from i relative to i's heading)
        and ``other_in_front`` (bool, j in i's front half-plane, |bearing| < pi/2).
    """
    _check_keypoints(keypoints, bodyparts, fps)
    points = _landmarks(clean_keypoints(keypoints), bodyparts)
    centre, front, back = points["body_centre"], points["front"], points["back"]
    velocity = _time_derivative(centre, fps)
    body_vector = front - back
    heading = np.arctan2(body_vector[..., 1], body_vector[..., 0])
    turning = angular_velocity(heading, fps)
    front_half, rear_half = front - centre, centre - back
    bend = _wrap(
        np.arctan2(front_half[..., 1], front_half[..., 0])
        - np.arctan2(rear_half[..., 1], rear_half[..., 0])
    )
    out = {
        "centre_x": centre[..., 0],
        "centre_y": centre[..., 1],
        "speed": np.linalg.norm(velocity, axis=-1),
        "heading": heading,
        "turning": turning,
        "body_length": np.linalg.norm(body_vector, axis=-1),
        "bend": bend,
    }
    if food_zone is not None:
        out["food_zone_distance"] = distance_to_zone(points.get("nose", front), food_zone)
    out.update(_social_kinematics(points, velocity, heading, fps))
    return out


def _social_kinematics(
    points: dict[str, np.ndarray], velocity: np.ndarray, heading: np.ndarray, fps: float
) -> dict[str, np.ndarray]:
    centre = points["body_centre"]
    nose = points.get("nose", points["front"])
    tail_base = points.get("tail_base", points["back"])
    distance = pairwise_distance(centre, centre)
    offset = centre[:, None, :, :] - centre[:, :, None, :]
    bearing = _wrap(np.arctan2(offset[..., 1], offset[..., 0]) - heading[:, :, None])
    eye = np.eye(centre.shape[1], dtype=bool)
    bearing[:, eye] = np.nan
    nearest = np.fmin.reduce(distance, axis=2)  # NaN only where no other animal is measured
    return {
        "nearest_distance": nearest,
        "distance": distance,
        "nose_nose": pairwise_distance(nose, nose),
        "nose_tailbase": pairwise_distance(nose, tail_base),
        "relative_speed": pairwise_distance(velocity, velocity),
        "approach_speed": -_time_derivative(distance, fps),
        "bearing": bearing,
        "other_in_front": np.abs(bearing) < np.pi / 2,
    }


def rank_others(distance: np.ndarray) -> np.ndarray:
    """Order of the other animals by distance, nearest first: ``(T, A, A-1)`` indices.

    ``distance`` is ``(T, A, A)``; the diagonal (self) is ignored and NaN
    distances sort after every measured one, in animal order.
    """
    n_animals = distance.shape[1]
    key = np.where(np.isnan(distance), np.finfo(np.float64).max, distance)
    key[:, np.arange(n_animals), np.arange(n_animals)] = np.inf
    return np.argsort(key, axis=2, kind="stable")[:, :, : n_animals - 1]


def gather_ranked(pair_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``pair_values (T, A, A)`` reordered by ``order (T, A, A-1)`` -> ``(T, A, A-1)``."""
    return np.take_along_axis(pair_values, order, axis=2)


def keypoint_features(
    keypoints: np.ndarray,
    bodyparts: list[str],
    fps: float,
    food_zone: tuple[float, float, float, float] | None = None,
) -> FeatureSet:
    """Feature matrix ``(n_frames, n_animals, n_features)`` from keypoints, without NaN.

    Per animal: speed, acceleration (px/s, px/s^2), turning (rad/s), body
    length (px), bend (rad), egocentric posture (nose, ears, neck, tail base
    in the body frame: origin at the body centre, x along the heading, px),
    food-zone distance when ``food_zone`` is given; and for the k-th nearest
    other animal (k = 1 .. A-1, so every animal has the same columns):
    centre distance, nose to nose, nose to its tail base, cos and sin of the
    relative heading, approach speed and cos of its bearing (1 = straight ahead).

    Parameters
    ----------
    keypoints
        ``(n_frames, n_animals, n_bodyparts, 2)`` pixels, NaN missing.
    bodyparts, fps, food_zone
        As in :func:`kinematics`.
    """
    kin = kinematics(keypoints, bodyparts, fps, food_zone)
    columns: dict[str, np.ndarray] = {
        "speed": kin["speed"],
        "acceleration": _time_derivative(kin["speed"], fps),
        "turning": kin["turning"],
        "body_length": kin["body_length"],
        "bend": kin["bend"],
    }
    columns.update(_egocentric_posture(keypoints, bodyparts, kin))
    if food_zone is not None:
        columns["food_zone_distance"] = kin["food_zone_distance"]
    n_animals = keypoints.shape[1]
    if n_animals > 1:
        order = rank_others(kin["distance"])
        heading = kin["heading"]
        relative_heading = heading[:, None, :] - heading[:, :, None]
        pair_terms = {
            "distance": kin["distance"],
            "nose_nose": kin["nose_nose"],
            "nose_tailbase": kin["nose_tailbase"],
            "relative_heading_cos": np.cos(relative_heading),
            "relative_heading_sin": np.sin(relative_heading),
            "approach_speed": kin["approach_speed"],
            "in_front": np.cos(kin["bearing"]),
        }
        for term, pair in pair_terms.items():
            ranked = gather_ranked(pair, order)
            for rank in range(n_animals - 1):
                columns[f"other{rank + 1}_{term}"] = ranked[:, :, rank]
    names = list(columns)
    return FeatureSet(fill_missing(np.stack([columns[n] for n in names], axis=-1)), names)


def _egocentric_posture(
    keypoints: np.ndarray, bodyparts: list[str], kin: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    roles = match_bodyparts(bodyparts)
    chosen = {role: roles[role] for role in _POSTURE_ROLES if role in roles}
    if not chosen:
        chosen = {bodyparts[0]: 0, bodyparts[-1]: len(bodyparts) - 1}
    cleaned = clean_keypoints(keypoints[:, :, list(chosen.values())])
    centre = np.stack([kin["centre_x"], kin["centre_y"]], axis=-1)[:, :, None, :]
    offset = cleaned - centre
    cos_h = np.cos(kin["heading"])[:, :, None]
    sin_h = np.sin(kin["heading"])[:, :, None]
    along = offset[..., 0] * cos_h + offset[..., 1] * sin_h
    across = -offset[..., 0] * sin_h + offset[..., 1] * cos_h
    out = {}
    for k, role in enumerate(chosen):
        name = re.sub(r"\W+", "_", role.lower())
        out[f"ego_{name}_x"] = along[:, :, k]
        out[f"ego_{name}_y"] = across[:, :, k]
    return out
