"""Quantum-dot rig simulation: camera ring, body model, physical occlusion, frame rendering.

Pure functions on arrays. Keypoints are ``points (n_frames, 12, 3)`` in mm in
:data:`tools.motion.QD_KEYPOINTS` order; per-camera arrays put the camera axis
first. The body is a chain of capsules (segments with a radius) built around
the skeleton; each quantum dot sits on the body surface with an outward
normal, and is visible from a camera when it faces the camera and the segment
from the dot to the camera centre misses every capsule.
"""

from __future__ import annotations

import cv2
import numpy as np

from tools.geometry import Camera, CameraGroup

# Keypoint indices in QD_KEYPOINTS order.
_EAR_L, _EAR_R, _TOP, _MID, _BOT, _FORE_L, _FORE_R, _HIND_L, _HIND_R, _TAIL0, _TAIL1, _TAIL2 = (
    range(12)
)
_SIDE = np.array([1, -1, 0, 0, 0, 1, -1, 1, -1, 0, 0, 0], dtype=np.float64)  # +1 left, -1 right
CAPSULE_NAMES: tuple[str, ...] = (
    "body_front", "body_rear", "rump", "neck", "head", "tail_proximal", "tail_distal",
    "foreleg_L", "foreleg_R", "hindleg_L", "hindleg_R",
    "forepaw_L", "forepaw_R", "hindpaw_L", "hindpaw_R",
)  # fmt: skip
CAPSULE_RADII_MM = np.array([11.0, 13.0, 9.0, 8.0, 8.0, 2.5, 1.8] + [3.0] * 4 + [3.5] * 4)
# A dot seen almost edge-on is too dim and too squashed to show.
MIN_FACING_COS = 0.05


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-9)


def _check_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (12, 3):
        raise ValueError(f"points must have shape (n_frames, 12, 3), got {points.shape}")
    return points


def body_axes(points: np.ndarray) -> np.ndarray:
    """Body axes ``(n_frames, 3, 3)``: rows forward, left, up.

    Forward runs along the spine. Up is world up made square to the spine: a
    mouse keeps its back up, and the tracked motion's left/right labels are
    too often swapped to decide which way the body faces (taking left from
    them turned the animal on its back for whole seconds). Where the spine is
    near vertical (rearing) the left/right points give the lateral direction.
    """
    points = _check_points(points)
    forward = _unit(points[:, _TOP] - points[:, _BOT])
    world_up = np.array([0.0, 0.0, 1.0])
    up_from_world = world_up - forward[:, 2:3] * forward
    lateral = np.einsum("k,fkd->fd", _SIDE, points)  # sum of left minus right points
    lateral = lateral - np.sum(lateral * forward, axis=1, keepdims=True) * forward
    up_from_sides = np.cross(forward, _unit(lateral))
    rearing = np.linalg.norm(up_from_world, axis=1, keepdims=True) < 0.3
    up = _unit(np.where(rearing, up_from_sides, up_from_world))
    left = np.cross(up, forward)
    return np.stack([forward, left, up], axis=1)


def qd_normals(points: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Outward surface normals ``(n_frames, 12, 3)`` of the dots.

    Back dots face the body's up; ear dots up and outwards; paw dots (on top
    of the paw) outwards and a little up; tail dots face up, square to the tail.
    """
    points = _check_points(points)
    left, up = axes[:, 1], axes[:, 2]
    normals = np.repeat(up[:, None, :], 12, axis=1)
    for ear in (_EAR_L, _EAR_R):
        normals[:, ear] = _unit(up + 0.8 * _SIDE[ear] * left)
    for paw in (_FORE_L, _FORE_R, _HIND_L, _HIND_R):
        normals[:, paw] = _unit(0.6 * up + _SIDE[paw] * left)
    along = _unit(points[:, [_TAIL1, _TAIL2, _TAIL2]] - points[:, [_TAIL0, _TAIL0, _TAIL1]])
    tail_up = up[:, None, :] - np.sum(up[:, None, :] * along, axis=2, keepdims=True) * along
    normals[:, _TAIL0:] = _unit(tail_up)
    return normals


def body_capsules(
    points: np.ndarray, axes: np.ndarray, normals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Capsule axes ``starts, ends (n_frames, n_capsules, 3)`` in :data:`CAPSULE_NAMES` order.

    Radii are :data:`CAPSULE_RADII_MM`. The body, rump and tail axes lie one
    radius below their dots and each paw is a ball one radius below its dot,
    so the dots sit on the surface. The head hangs below and in front of the
    ears; legs run from inside the body to the paws. ``axes`` come from
    :func:`body_axes`, ``normals`` from :func:`qd_normals`.
    """
    points = _check_points(points)
    forward, left, up = axes[:, None, 0], axes[:, None, 1], axes[:, None, 2]
    radii = CAPSULE_RADII_MM

    def below(keypoints: list[int], depth: float) -> np.ndarray:
        return points[:, keypoints] - depth * up

    head_back = (points[:, [_EAR_L]] + points[:, [_EAR_R]]) / 2.0 - 9.0 * up - 4.0 * forward
    snout = head_back + 20.0 * forward - 3.0 * up
    tail_axis = points[:, _TAIL0:] - radii[[5, 6, 6], None] * normals[:, _TAIL0:]
    paws = points[:, _FORE_L : _HIND_R + 1] - radii[11:15, None] * normals[:, _FORE_L : _HIND_R + 1]
    leg_roots = below([_TOP, _TOP, _BOT, _BOT], 16.0) + 5.0 * _SIDE[5:9, None] * left
    starts = np.concatenate(
        [below([_TOP], radii[0]), below([_MID], radii[1]), below([_BOT], radii[2]),
         below([_TOP], 12.0), head_back, tail_axis[:, :2], leg_roots, paws],
        axis=1,
    )  # fmt: skip
    ends = np.concatenate(
        [below([_MID], radii[0]), below([_BOT], radii[1]), below([_TAIL0], radii[2]),
         head_back, snout, tail_axis[:, 1:], paws, paws],
        axis=1,
    )  # fmt: skip
    return starts, ends


def _segment_distance(p1: np.ndarray, q1: np.ndarray, p2: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Closest distance between segments p1-q1 and p2-q2 (broadcast over leading axes, last 3).

    Ericson, Real-Time Collision Detection, 5.1.9, with the degenerate cases
    (zero-length segments) handled by the clamps.
    """
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a = np.sum(d1 * d1, axis=-1)
    e = np.sum(d2 * d2, axis=-1)
    f = np.sum(d2 * r, axis=-1)
    c = np.sum(d1 * r, axis=-1)
    b = np.sum(d1 * d2, axis=-1)
    denom = a * e - b * b
    safe_a, safe_e = np.maximum(a, 1e-12), np.maximum(e, 1e-12)
    s = np.where(
        denom > 1e-9 * np.maximum(a * e, 1e-12), (b * f - c * e) / np.maximum(denom, 1e-300), 0.0
    )
    s = np.clip(s, 0.0, 1.0)
    t = np.where(e > 1e-12, (b * s + f) / safe_e, 0.0)
    s = np.where(
        t < 0.0,
        np.clip(-c / safe_a, 0.0, 1.0),
        np.where(t > 1.0, np.clip((b - c) / safe_a, 0.0, 1.0), s),
    )
    t = np.clip(t, 0.0, 1.0)
    closest = (p1 + s[..., None] * d1) - (p2 + t[..., None] * d2)
    return np.linalg.norm(closest, axis=-1)


def visible_dots(
    points: np.ndarray,
    normals: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray = CAPSULE_RADII_MM,
    chunk_frames: int = 128,
) -> np.ndarray:
    """Which dots each camera sees -> ``(n_cameras, n_frames, 12)`` bool.

    A dot is seen when its normal faces the camera (cosine above
    :data:`MIN_FACING_COS`) and the segment from the dot (lifted 0.3 mm off
    the surface) to the camera centre ``centers (n_cameras, 3)`` passes no
    capsule ``starts, ends (n_frames, n_capsules, 3)`` closer than its radius,
    other than the capsules the dot sits on.
    """
    points = _check_points(points)
    n_frames = points.shape[0]
    to_camera = _unit(centers[:, None, None, :] - points[None])
    facing = np.sum(to_camera * normals[None], axis=-1) > MIN_FACING_COS
    clear = np.ones_like(facing)
    lifted = points + 0.3 * normals
    for first in range(0, n_frames, chunk_frames):
        chunk = slice(first, min(first + chunk_frames, n_frames))
        dot = lifted[chunk, :, None, :]
        capsule = starts[chunk, None, :, :], ends[chunk, None, :, :]
        # A dot sits on the capsules it touches; the ray leaves those, so they cannot hide it.
        carrier = _segment_distance(dot, dot, *capsule) < radii + 0.5
        distance = _segment_distance(dot[None], centers[:, None, None, None, :], *capsule)
        clear[:, chunk] = np.all((distance >= radii) | carrier[None], axis=-1)
    return facing & clear


def _look_at(center: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World-to-camera rotation looking from ``center`` at ``target`` (OpenCV: x right, y down)."""
    forward = _unit(target - center)
    right = _unit(np.cross(forward, [0.0, 0.0, 1.0]))
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    roll_matrix = cv2.Rodrigues(np.array([0.0, 0.0, roll]))[0]
    return roll_matrix @ rotation


def make_rig(
    n_cameras: int, size: tuple[int, int], points_mm: np.ndarray, rng: np.random.Generator,
    elevation_deg: tuple[float, float] = (35.0, 55.0),
) -> CameraGroup:
    """A ring of ``n_cameras`` above the working volume, each seeing all of it.

    Cameras sit at evenly spaced azimuths (jittered), ``elevation_deg``
    (uniform between its two angles) above the horizon, looking at the
    centre of the working volume (jittered), with
    focal length about 1.2 x width and small radial and tangential
    distortion. Each camera is moved along its viewing ray until all of
    ``points_mm (n_points, 3)`` (the places the animal visits) project inside
    90 % of the image.
    """
    points_mm = np.asarray(points_mm, dtype=np.float64)
    if points_mm.ndim != 2 or points_mm.shape[1] != 3 or not np.all(np.isfinite(points_mm)):
        raise ValueError(
            f"points_mm must be finite with shape (n_points, 3), got {points_mm.shape}"
        )
    target = (points_mm.min(axis=0) + points_mm.max(axis=0)) / 2.0
    cameras = []
    for index in range(n_cameras):
        azimuth = 2.0 * np.pi * index / n_cameras + rng.uniform(-0.15, 0.15)
        elevation = np.radians(rng.uniform(*elevation_deg))
        direction = np.array([np.cos(azimuth), np.sin(azimuth), np.tan(elevation)])
        direction /= np.linalg.norm(direction)
        aim = target + rng.uniform(-10.0, 10.0, 3)
        rotation = _look_at(aim + direction, aim, rng.uniform(-0.05, 0.05))
        matrix, dist = _random_intrinsics(size, rng)
        distance = _fitting_distance(points_mm, aim, direction, rotation, matrix, size)
        rvec = cv2.Rodrigues(rotation)[0].ravel()
        tvec = -rotation @ (aim + distance * direction)
        cameras.append(Camera(f"cam{index}", size, matrix, dist, rvec, tvec))
    return CameraGroup(tuple(cameras))


def _random_intrinsics(
    size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``(3, 3)`` (focal about 1.2 x width) and distortion ``(5,)``, slightly random."""
    width, height = size
    focal = 1.2 * width * rng.uniform(0.95, 1.05)
    center_x = width / 2.0 + rng.uniform(-8.0, 8.0)
    center_y = height / 2.0 + rng.uniform(-8.0, 8.0)
    matrix = np.array([[focal, 0.0, center_x], [0.0, focal, center_y], [0.0, 0.0, 1.0]])
    k1, k2 = rng.uniform(-0.05, 0.05), rng.uniform(-0.01, 0.01)
    p1, p2 = rng.uniform(-5e-4, 5e-4, 2)
    return matrix, np.array([k1, k2, p1, p2, 0.0])


def _fitting_distance(
    points: np.ndarray,
    aim: np.ndarray,
    direction: np.ndarray,
    rotation: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
) -> float:
    """Nearest distance along ``direction`` from ``aim`` with all points in 90 % of the image.

    Pinhole only: the small distortion moves points by a few pixels at most.
    """
    half = 0.45 * np.array(size, dtype=np.float64)
    principal = matrix[:2, 2]
    for distance in np.geomspace(100.0, 20000.0, 400):
        camera_points = (points - (aim + distance * direction)) @ rotation.T
        if np.any(camera_points[:, 2] <= 1.0):
            continue
        pixels = camera_points[:, :2] / camera_points[:, 2:] * matrix[[0, 1], [0, 1]] + principal
        if np.all(np.abs(pixels - np.array(size) / 2.0) <= half):
            return float(distance)
    raise ValueError("working volume does not fit any camera distance up to 20 m")


def render_spots(
    image: np.ndarray, centers_px: np.ndarray, peaks: np.ndarray, sigmas_px: np.ndarray
) -> np.ndarray:
    """Add Gaussian spots to a uint8 ``image (height, width)`` -> a new uint8 image.

    ``centers_px (n_spots, 2)`` are x, y in FORMATS.md pixel coordinates (origin
    at the centre of the top-left pixel), ``peaks (n_spots,)`` the peak
    intensities and ``sigmas_px (n_spots,)`` the widths. Each spot is drawn
    only within 3.5 sigma of its centre; overlapping spots add up and saturate.
    """
    centers_px = np.asarray(centers_px, dtype=np.float64).reshape(-1, 2)
    out = image.copy()
    if len(centers_px) == 0:
        return out
    height, width = image.shape
    sigmas_px = np.broadcast_to(np.asarray(sigmas_px, dtype=np.float64), (len(centers_px),))
    half = int(np.ceil(3.5 * sigmas_px.max()))
    offsets = np.arange(-half, half + 1)
    xs = np.rint(centers_px[:, 0])[:, None, None] + offsets[None, None, :]
    ys = np.rint(centers_px[:, 1])[:, None, None] + offsets[None, :, None]
    squared = (xs - centers_px[:, 0, None, None]) ** 2 + (ys - centers_px[:, 1, None, None]) ** 2
    values = np.asarray(peaks, dtype=np.float64)[:, None, None] * np.exp(
        -squared / (2.0 * sigmas_px[:, None, None] ** 2)
    )
    xs, ys = np.broadcast_arrays(xs, ys)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    flat = (ys[inside] * width + xs[inside]).astype(np.int64)
    pixels, inverse = np.unique(flat, return_inverse=True)
    added = np.bincount(inverse, weights=values[inside])
    total = out.reshape(-1)[pixels] + added
    out.reshape(-1)[pixels] = np.clip(np.rint(total), 0, 255).astype(np.uint8)
    return out


def project_capsules(
    camera: Camera, starts: np.ndarray, ends: np.ndarray, radii: np.ndarray = CAPSULE_RADII_MM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capsules ``starts, ends (n_frames, n_capsules, 3)`` in one camera.

    Returns ``ends_px (n_frames, n_capsules, 2, 2)`` (start and end pixel),
    ``radii_px (n_frames, n_capsules, 2)`` (apparent radius at each end) and
    ``depth (n_frames, n_capsules)`` (mean distance along the optical axis,
    for drawing far to near).
    """
    both = np.stack([starts, ends], axis=2)
    flat = both.reshape(-1, 3)
    pixels, _ = cv2.projectPoints(flat, camera.rvec, camera.tvec, camera.matrix, camera.dist)
    rotation = cv2.Rodrigues(np.asarray(camera.rvec, dtype=np.float64))[0]
    depth = (flat @ rotation.T + camera.tvec)[:, 2].reshape(both.shape[:3])
    radii_px = camera.matrix[0, 0] * radii[None, :, None] / np.maximum(depth, 1.0)
    return pixels.reshape(both.shape[:3] + (2,)), radii_px, depth.mean(axis=2)


def render_capsules(
    image: np.ndarray, ends_px: np.ndarray, radii_px: np.ndarray, shades: np.ndarray
) -> np.ndarray:
    """Draw filled capsules, in the given order, on a uint8 ``image`` -> a new image.

    ``ends_px (n_capsules, 2, 2)``, ``radii_px (n_capsules, 2)``, ``shades
    (n_capsules,)`` grey levels. Each capsule is the convex hull of its two end
    discs, approximated by the two discs and the quad between them.
    """
    out = image.copy()
    scale = 16.0  # 4 fractional bits for sub-pixel outlines
    axis = ends_px[:, 1] - ends_px[:, 0]
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=1) / np.maximum(
        np.linalg.norm(axis, axis=1, keepdims=True), 1e-9
    )
    quads = np.stack(
        [
            ends_px[:, 0] + radii_px[:, :1] * normal,
            ends_px[:, 1] + radii_px[:, 1:] * normal,
            ends_px[:, 1] - radii_px[:, 1:] * normal,
            ends_px[:, 0] - radii_px[:, :1] * normal,
        ],
        axis=1,
    )
    quads = np.rint(quads * scale).astype(np.int32)
    centers = np.rint(ends_px * scale).astype(np.int32)
    radii = np.maximum(np.rint(radii_px * scale), 1).astype(np.int32)
    for index, shade in enumerate(np.asarray(shades, dtype=np.float64)):
        color = float(shade)
        for end in (0, 1):
            center = (int(centers[index, end, 0]), int(centers[index, end, 1]))
            cv2.circle(out, center, int(radii[index, end]), color, -1, cv2.LINE_8, 4)
        cv2.fillConvexPoly(out, quads[index], color, cv2.LINE_8, 4)
    return out


def floor_background(camera: Camera, half_extent_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Reflectance background ``(height, width)`` uint8: a textured floor seen by ``camera``.

    The floor (z = 0, ``|x|, |y| <= half_extent_mm``) carries smooth mottling
    and tile lines every 50 mm; beyond it is a darker wall grey. Lens
    distortion is ignored for the background.
    """
    side = int(2 * half_extent_mm)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (side, side)), (0, 0), 6.0)
    texture = 160.0 + 18.0 * texture / max(float(np.abs(texture).max()), 1e-9)
    texture[::50, :] -= 35.0
    texture[:, ::50] -= 35.0
    texture = np.clip(texture, 0, 255).astype(np.uint8)
    rotation = cv2.Rodrigues(np.asarray(camera.rvec, dtype=np.float64))[0]
    floor_to_image = camera.matrix @ np.column_stack([rotation[:, 0], rotation[:, 1], camera.tvec])
    texture_to_floor = np.array(
        [[1.0, 0.0, -half_extent_mm], [0.0, 1.0, -half_extent_mm], [0.0, 0.0, 1.0]]
    )
    return cv2.warpPerspective(
        texture,
        floor_to_image @ texture_to_floor,
        camera.size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=90,
    )


def noisy_copies(
    image: np.ndarray, n_copies: int, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """``n_copies`` of a uint8 ``image`` with Gaussian sensor noise -> ``(n_copies, h, w)``.

    Frames pick one of a few precomputed noisy copies: drawing fresh noise for
    every pixel of every frame would dominate the simulator's run time.
    """
    noise = rng.normal(0.0, sigma, (n_copies,) + image.shape)
    return np.clip(np.rint(image[None].astype(np.float64) + noise), 0, 255).astype(np.uint8)
