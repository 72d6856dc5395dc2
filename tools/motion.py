"""3D keypoint motion for the simulator: repair of tracked motion and a procedural walker.

Arrays are ``points (n_frames, n_keypoints, 3)`` in millimetres, world z up,
NaN = missing. The repair steps are separate functions so each can be tested
and each says what it does with NaN; :func:`repair_motion` chains them.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter1d

QD_KEYPOINTS: tuple[str, ...] = (
    "ear_L", "ear_R", "back_top", "back_middle", "back_bottom",
    "forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R",
    "tail_base", "tail_middle", "tail_tip",
)  # fmt: skip
QD_REGIONS: dict[str, tuple[str, ...]] = {
    "ears": ("ear_L", "ear_R"),
    "back": ("back_top", "back_middle", "back_bottom"),
    "paws": ("forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R"),
    "tail": ("tail_base", "tail_middle", "tail_tip"),
}
_WORLD_UP = np.array([0.0, 0.0, 1.0])


def _check_points(points: np.ndarray, n_keypoints: int | None = None) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 3 or (n_keypoints and points.shape[1] != n_keypoints):
        expected = f"(n_frames, {n_keypoints or 'n_keypoints'}, 3)"
        raise ValueError(f"points must have shape {expected}, got {points.shape}")
    return points


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return vectors / norm


def _forward_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace rows where ``valid`` is False by the last valid row before (or the first after)."""
    if not valid.any():
        return values
    index = np.where(valid, np.arange(len(valid)), 0)
    np.maximum.accumulate(index, out=index)
    index[: np.argmax(valid)] = np.argmax(valid)
    return values[index]


def body_frames(front: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Body axes from two spine points ``front, back (n_frames, 3)`` -> ``(n_frames, 3, 3)``.

    Rows are forward (back to front), left and up (world z made orthogonal to
    forward). Where the spine is vertical or missing, the previous frame's axes
    are kept, so a climbing animal keeps a defined left side.
    """
    forward = _normalize(front - back)
    up = _WORLD_UP - np.sum(forward * _WORLD_UP, axis=1, keepdims=True) * forward
    up_norm = np.linalg.norm(up, axis=1)
    valid = np.isfinite(up_norm) & (up_norm > 0.25)
    axes = np.stack([forward, np.cross(up, forward), up], axis=1)
    axes = _normalize(axes)
    return _forward_fill(axes, valid)


def to_body_frame(points: np.ndarray, origin: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """World ``points (n_frames, n_keypoints, 3)`` -> body coordinates (forward, left, up)."""
    return np.einsum("fij,fkj->fki", axes, points - origin[:, None, :])


def from_body_frame(local: np.ndarray, origin: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_body_frame`."""
    return np.einsum("fij,fki->fkj", axes, local) + origin[:, None, :]


def zeros_to_nan(points: np.ndarray) -> np.ndarray:
    """Trackers store a missing point as (0, 0, 0): make it NaN. Shape is kept."""
    points = _check_points(points).copy()
    points[np.all(points == 0.0, axis=2)] = np.nan
    return points


def remove_outliers(
    points: np.ndarray, center: int, max_radius_mm: float, max_deviation_mm: float, window: int = 9
) -> np.ndarray:
    """NaN out points far from the body centre or far from their running median (jumps).

    Parameters
    ----------
    points : (n_frames, n_keypoints, 3)
    center : index of the keypoint at the body centre.
    max_radius_mm : farthest plausible distance of any keypoint from ``center``.
    max_deviation_mm : farthest plausible distance from the NaN-aware running
        median over ``window`` frames; larger is a tracking jump.
    """
    points = _check_points(points).copy()
    radius = np.linalg.norm(points - points[:, center : center + 1], axis=2)
    points[radius > max_radius_mm] = np.nan
    half = window // 2
    padded = np.pad(points, ((half, half), (0, 0), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    with warnings.catch_warnings():
        # All-NaN windows (long gaps) give NaN medians, which is what we want.
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(windows, axis=-1)
    deviation = np.linalg.norm(points - median, axis=2)
    points[deviation > max_deviation_mm] = np.nan
    return points


def fix_left_right_swaps(
    points: np.ndarray,
    pairs: list[tuple[int, int]],
    origin: np.ndarray,
    axes: np.ndarray,
    memory_frames: int = 10,
) -> np.ndarray:
    """Relabel left/right keypoints so the left one lies left of the spine and tracks stay smooth.

    For each frame and pair ``(left, right)`` both labellings are scored by how
    far each point lies on the wrong side of the body (``axes`` row 1 is left)
    plus its distance to the last position kept for that label within
    ``memory_frames``; the cheaper labelling wins. A lone point may move to the
    other label. NaN stays NaN. ``origin (n_frames, 3)`` is the body centre and
    ``axes (n_frames, 3, 3)`` come from :func:`body_frames`.
    """
    points = _check_points(points).copy()
    # Sequential over frames: each choice depends on the labels kept before it.
    for left, right in pairs:
        last = np.full((2, 3), np.nan)
        last_frame = np.array([-memory_frames - 1, -memory_frames - 1])
        for frame in range(points.shape[0]):
            pair = points[frame, [left, right]]
            lateral = (pair - origin[frame]) @ axes[frame, 1]
            side_keep = np.nansum(np.maximum(0.0, [-lateral[0], lateral[1]]))
            side_swap = np.nansum(np.maximum(0.0, [-lateral[1], lateral[0]]))
            recent = (frame - last_frame <= memory_frames)[:, None]
            memory = np.where(recent, last, np.nan)
            keep = np.nansum(np.linalg.norm(pair - memory, axis=1))
            swap = np.nansum(np.linalg.norm(pair[::-1] - memory, axis=1))
            if 2.0 * side_swap + swap < 2.0 * side_keep + keep:
                pair = pair[::-1]
                points[frame, [left, right]] = pair
            seen = np.all(np.isfinite(pair), axis=1)
            last[seen] = pair[seen]
            last_frame[seen] = frame
    return points


def interpolate_gaps(points: np.ndarray, max_gap: int | None = None) -> np.ndarray:
    """Linearly interpolate NaN runs in time of at most ``max_gap`` frames (any length if None).

    With ``max_gap=None`` runs at the start or end are held at the nearest
    value; otherwise they, and longer interior runs, stay NaN. A series with
    fewer than two values stays as it is.
    """
    points = _check_points(points).copy()
    n_frames = points.shape[0]
    frames = np.arange(n_frames)
    series = points.reshape(n_frames, -1)
    for column in range(series.shape[1]):
        values = series[:, column]
        known_frames = frames[np.isfinite(values)]
        if len(known_frames) in (0, 1, n_frames):
            continue
        filled = np.interp(frames, known_frames, values[known_frames])
        if max_gap is not None:
            after = np.searchsorted(known_frames, frames)
            interior = (after > 0) & (after < len(known_frames))
            gap = (
                known_frames[np.minimum(after, len(known_frames) - 1)] - known_frames[after - 1] - 1
            )
            filled = np.where(interior & (gap <= max_gap), filled, np.nan)
        series[:, column] = np.where(np.isfinite(values), values, filled)
    return series.reshape(points.shape)


def fill_from_model(points: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Fill NaN points from ``model`` plus the interpolated residual (points - model).

    Interpolating the residual keeps the filled track continuous with the
    observed one at both ends of every gap. Both arrays are
    ``(n_frames, n_keypoints, 3)``; a keypoint never observed is the model.
    """
    points = _check_points(points)
    model = _check_points(model, points.shape[1])
    residual = interpolate_gaps(points - model)
    residual = np.where(np.isfinite(residual), residual, 0.0)
    return np.where(np.isfinite(points), points, model + residual)


def enforce_bone_lengths(points: np.ndarray, chain: list[int], lengths: np.ndarray) -> np.ndarray:
    """Move each keypoint of ``chain`` along its bone so bone ``i`` has ``lengths[i]`` (mm).

    The first keypoint of the chain stays; for an inextensible tail this removes
    the tracker's stretch without changing the bone directions.
    """
    points = _check_points(points).copy()
    for index, (parent, child) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
        direction = _normalize(points[:, child] - points[:, parent])
        points[:, child] = points[:, parent] + lengths[index] * direction
    return points


def body_template(local: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Median body-frame position per keypoint ``(n_keypoints, 3)``, left/right mirrored alike.

    ``local (n_frames, n_keypoints, 3)`` are body coordinates (forward, left,
    up); NaN is ignored.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        template = np.nanmedian(local, axis=0)
    mirror = np.array([1.0, -1.0, 1.0])
    for left, right in pairs:
        both = np.nanmean(np.stack([template[left], template[right] * mirror]), axis=0)
        template[left], template[right] = both, both * mirror
    return template


def remove_template_outliers(
    points: np.ndarray,
    origin: np.ndarray,
    axes: np.ndarray,
    pairs: list[tuple[int, int]],
    spread_factor: float = 3.0,
    limits_mm: tuple[float, float] = (15.0, 60.0),
) -> np.ndarray:
    """NaN out points too far from their place in the body (a wrong detection or a jump).

    A point is an outlier when its body-frame distance from :func:`body_template`
    exceeds ``spread_factor`` times the keypoint's median distance, clipped to
    ``limits_mm``. ``origin (n_frames, 3)``, ``axes (n_frames, 3, 3)``.
    """
    points = _check_points(points).copy()
    local = to_body_frame(points, origin, axes)
    distance = np.linalg.norm(local - body_template(local, pairs), axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        limit = np.clip(spread_factor * np.nanmedian(distance, axis=0), *limits_mm)
    points[distance > limit] = np.nan
    return points


def repair_motion(
    points: np.ndarray,
    *,
    spine: tuple[int, int, int],
    pairs: list[tuple[int, int]],
    tail_chain: list[int],
    max_radius_mm: float = 150.0,
    max_deviation_mm: float = 15.0,
    max_gap: int = 10,
    smooth_sigma_frames: float = 1.5,
) -> np.ndarray:
    """Repair tracked ``points (n_frames, n_keypoints, 3)`` (mm) into complete, plausible motion.

    Steps: zeros -> NaN; jumps (far from the body centre or from the running
    median) -> NaN; left/right relabelling; points far from their body-frame
    template -> NaN; short gaps interpolated in time; long gaps filled from a
    body-frame model (the mirrored partner of a left/right pair where it is
    seen, else the template) with the residual interpolated; tail bones set to
    their median length; light Gaussian smoothing in time. ``spine`` is
    (front, middle, back). Returns an array of the same shape without NaN.
    """
    points = zeros_to_nan(points)
    front, middle, back = spine
    points[:, list(spine)] = interpolate_gaps(points[:, list(spine)])
    points = remove_outliers(points, middle, max_radius_mm, max_deviation_mm)
    points[:, list(spine)] = interpolate_gaps(points[:, list(spine)])
    origin = points[:, middle]
    axes = body_frames(points[:, front], points[:, back])
    points = fix_left_right_swaps(points, pairs, origin, axes)
    points = remove_template_outliers(points, origin, axes, pairs)
    points = interpolate_gaps(points, max_gap)
    points = fill_from_model(points, _body_model(points, origin, axes, pairs))
    lengths = np.median(np.linalg.norm(np.diff(points[:, tail_chain], axis=1), axis=2), axis=0)
    points = enforce_bone_lengths(points, tail_chain, lengths)
    return gaussian_filter1d(points, smooth_sigma_frames, axis=0, mode="nearest")


def _body_model(
    points: np.ndarray, origin: np.ndarray, axes: np.ndarray, pairs: list[tuple[int, int]]
) -> np.ndarray:
    """Model positions: the mirrored partner where it is seen, else the body template."""
    local = to_body_frame(points, origin, axes)
    model_local = np.broadcast_to(body_template(local, pairs), local.shape).copy()
    for left, right in pairs:
        for this, other in ((left, right), (right, left)):
            seen = np.all(np.isfinite(local[:, other]), axis=1)
            model_local[seen, this] = local[seen, other] * [1.0, -1.0, 1.0]
    return from_body_frame(model_local, origin, axes)


def pingpong_indices(n_source: int, n_frames: int) -> np.ndarray:
    """``n_frames`` indices playing ``n_source`` frames forward, backward, forward ..."""
    if n_source < 1 or n_frames < 0:
        raise ValueError(f"need n_source >= 1 and n_frames >= 0, got {n_source}, {n_frames}")
    if n_source == 1:
        return np.zeros(n_frames, dtype=np.int64)
    period = 2 * (n_source - 1)
    phase = np.arange(n_frames) % period
    return np.where(phase < n_source, phase, period - phase)


# Walker template in the body frame (forward, left, up) in mm, origin on the
# floor under back_middle; close to the median pose of the MausHaus3D mouse.
# fmt: off
_WALKER_TEMPLATE = np.array([
    [30.0, 11.0, 32.0], [30.0, -11.0, 32.0],                    # ears
    [16.0, 0.0, 29.0], [0.0, 0.0, 33.0], [-30.0, 0.0, 28.0],    # back
    [20.0, 9.0, 3.0], [20.0, -9.0, 3.0],                        # forepaws
    [-26.0, 12.0, 3.0], [-26.0, -12.0, 3.0],                    # hindpaws
    [-40.0, 0.0, 22.0], [-78.0, 0.0, 5.0], [-118.0, 0.0, 3.0],  # tail
])
# fmt: on
_PAW_PHASE = np.array([0.0, np.pi, np.pi, 0.0])  # trot: diagonal paws move together


def walk_procedural(
    n_frames: int, seed: int, arena_mm: float = 300.0, fps: float = 30.0
) -> np.ndarray:
    """A mouse walking, pausing, turning and rearing in a square arena.

    Returns ``points (n_frames, 12, 3)`` in :data:`QD_KEYPOINTS` order, mm,
    floor at z = 0, arena centred on the origin. Same ``seed`` gives the same
    motion.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    rearing = _bouts(n_frames, rng, rate_per_frame=1.0 / (8.0 * fps), length=int(1.5 * fps))
    position, heading, speed, turn = _walk_path(n_frames, rng, arena_mm / 2.0 - 60.0, fps, rearing)
    gait_phase = np.cumsum(2.0 * np.pi * speed / 60.0 / fps)  # 60 mm stride
    local = np.broadcast_to(_WALKER_TEMPLATE, (n_frames, 12, 3)).copy()
    stride = np.minimum(speed / 10.0, 12.0)[:, None]
    paws = slice(5, 9)
    local[:, paws, 0] += stride * np.sin(gait_phase[:, None] + _PAW_PHASE)
    local[:, paws, 2] += 0.4 * stride * np.maximum(0.0, np.cos(gait_phase[:, None] + _PAW_PHASE))
    sway_phase = np.arange(n_frames) * 2.0 * np.pi * 0.7 / fps + rng.uniform(0.0, 2.0 * np.pi)
    local[:, 10, 1] += 8.0 * np.sin(sway_phase)
    local[:, 11, 1] += 18.0 * np.sin(sway_phase - 0.9)  # the wave runs down the tail
    head_yaw = gaussian_filter1d(rng.normal(0.0, 1.2, n_frames), fps / 3.0)
    local[:, :2] = _yaw_about(local[:, :2], head_yaw, pivot_x=16.0)
    local[:, :9] = _rear(local[:, :9], np.radians(55.0) * rearing, forepaws=(5, 6), hindpaws=(7, 8),
                         hips=4)
    bend = np.clip(turn * fps * 0.15, -0.5, 0.5)  # body bends into a turn
    local = _yaw_about(local, bend[:, None] * np.clip(local[..., 0] / 40.0, -1.0, 1.0), 0.0)
    local += rng.normal(0.0, 0.3, local.shape)
    cos, sin = np.cos(heading)[:, None], np.sin(heading)[:, None]
    world = np.empty_like(local)
    world[..., 0] = position[:, None, 0] + cos * local[..., 0] - sin * local[..., 1]
    world[..., 1] = position[:, None, 1] + sin * local[..., 0] + cos * local[..., 1]
    world[..., 2] = np.maximum(local[..., 2], 2.0)
    return world


def _bouts(
    n_frames: int, rng: np.random.Generator, rate_per_frame: float, length: int
) -> np.ndarray:
    """Smooth 0..1 bouts of about ``length`` frames starting at random times."""
    starts = rng.random(n_frames) < rate_per_frame
    active = np.convolve(starts.astype(float), np.ones(length), mode="full")[:n_frames] > 0
    return np.clip(gaussian_filter1d(active.astype(float), length / 6.0), 0.0, 1.0)


def _walk_path(
    n_frames: int, rng: np.random.Generator, half_extent_mm: float, fps: float, rearing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Floor path: positions (n_frames, 2), heading, speed (mm/s) and turn (rad/frame).

    The mouse pauses now and then and stands still while it rears.
    """
    moving = 1.0 - _bouts(n_frames, rng, rate_per_frame=1.0 / (2.5 * fps), length=int(fps))
    moving *= 1.0 - rearing
    speed = moving * gaussian_filter1d(rng.uniform(60.0, 180.0, n_frames), fps / 2.0)
    wander = gaussian_filter1d(rng.normal(0.0, 0.25, n_frames), fps / 4.0) * (0.3 + moving)
    position = np.zeros((n_frames, 2))
    heading = np.zeros(n_frames)
    heading[0] = rng.uniform(-np.pi, np.pi)
    # Integrating the path needs the previous step (steering back from the walls).
    for frame in range(1, n_frames):
        to_center = np.arctan2(-position[frame - 1, 1], -position[frame - 1, 0])
        off_center = np.abs(position[frame - 1]).max() / half_extent_mm
        steer = np.angle(np.exp(1j * (to_center - heading[frame - 1])))
        heading[frame] = (
            heading[frame - 1] + wander[frame] + 0.15 * max(0.0, off_center - 0.6) * steer
        )
        step = speed[frame] / fps * np.array([np.cos(heading[frame]), np.sin(heading[frame])])
        position[frame] = np.clip(position[frame - 1] + step, -half_extent_mm, half_extent_mm)
    turn = gaussian_filter1d(np.diff(heading, prepend=heading[0]), 2.0)
    return position, heading, speed, turn


def _yaw_about(local: np.ndarray, angle: np.ndarray, pivot_x: float) -> np.ndarray:
    """Rotate body points ``(n_frames, n, 3)`` about a vertical axis at x = ``pivot_x``."""
    angle = np.broadcast_to(
        np.asarray(angle, dtype=np.float64).reshape(len(local), -1), local.shape[:2]
    )
    cos, sin = np.cos(angle), np.sin(angle)
    out = local.copy()
    x = local[..., 0] - pivot_x
    out[..., 0] = pivot_x + cos * x - sin * local[..., 1]
    out[..., 1] = sin * x + cos * local[..., 1]
    return out


def _rear(
    local: np.ndarray, pitch: np.ndarray, forepaws: tuple[int, int], hindpaws: tuple[int, int],
    hips: int,
) -> np.ndarray:
    """Pitch the body up about the hips by ``pitch (n_frames,)``; hind paws stay down.

    The pivot is the template's ``hips`` keypoint (the back bottom), which stays where it
    is, as the tail (not among ``local``'s points) does: pitched about the
    floor under the hind paws instead, the lower back swept back and down
    past the tail base (ahead of it along the back in a fifth of the frames,
    against 3% of the real motion's).
    """
    pivot_x, pivot_z = _WALKER_TEMPLATE[hips, 0], _WALKER_TEMPLATE[hips, 2]
    cos, sin = np.cos(pitch)[:, None], np.sin(pitch)[:, None]
    out = local.copy()
    x, z = local[..., 0] - pivot_x, local[..., 2] - pivot_z
    out[..., 0] = pivot_x + cos * x - sin * z
    out[..., 2] = pivot_z + sin * x + cos * z
    out[:, list(hindpaws)] = local[:, list(hindpaws)]
    out[:, list(forepaws), 2] = np.maximum(out[:, list(forepaws), 2], 3.0)
    return out
