"""Left or right by the body: which twin of a left/right pair lies on which side of the spine.

Distances cannot tell a left paw from a right one (:mod:`tools.body_distances`:
both twins sit at the same distances from the rest of the body), but their
order across the body can: the left hind paw lies left of the right one
while the spine is not upright. :func:`side_model` learns from the seed
frames a body axis (two midline keypoints), the rig's up direction and
which side is left; :func:`order_by_side` then puts a frame's pair back in
that order when its points reverse it by a clear margin. On the shipped
true motion (500 frames, back_top -> back_bottom axis, z up) a true pair is
reversed by more than 6 mm in 7 to 14% of frames (ears 36, forepaws 42,
hind paws 70 frames: sharp turns and the rearing), so a reversal is only
evidence; the caller decides what it costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tools.camera import check_shape


@dataclass(frozen=True)
class SidedPair:
    """A left/right pair and the side of the body each twin belongs on.

    Attributes
    ----------
    positive, negative : int
        Keypoint indices: ``positive`` belongs on the positive side of
        :func:`lateral_direction` (its name's side, in the rig's handedness
        that the seed frames settled), ``negative`` on the other.
    """

    positive: int
    negative: int


@dataclass(frozen=True)
class SideModel:
    """What :func:`order_by_side` compares a frame with.

    Attributes
    ----------
    up : np.ndarray
        ``(3,)`` unit vector, the rig's up direction (:func:`rig_up`).
    axis_from, axis_to : int
        Midline keypoints whose difference ``axis_to - axis_from`` is the body axis.
    pairs : tuple of SidedPair
        The pairs :func:`order_by_side` puts on their sides.
    vouching_pairs : tuple of SidedPair
        Pairs whose regions hold no other pair (the ears): left in the tracker's order,
        which :func:`order_vouches` compares with their sides.
    """

    up: np.ndarray
    axis_from: int
    axis_to: int
    pairs: tuple[SidedPair, ...]
    vouching_pairs: tuple[SidedPair, ...] = ()


def rig_up(camera_centres: np.ndarray, subject: np.ndarray) -> np.ndarray | None:
    """``(3,)`` unit vector from ``subject (3,)`` towards the cameras: the rig's up direction.

    With three or more cameras not on one line it is the normal of the plane
    that fits the camera centres ``(n_cameras, 3)`` (a ring of cameras at one
    height gives the vertical even when the animal is off the ring's centre),
    turned towards the cameras (either way when the plane holds the subject:
    :func:`side_model` learns which side is left relative to it); otherwise
    the mean direction to the cameras. None when fewer than three cameras, or
    cameras on one line, surround the subject so evenly that no direction
    points towards them.
    """
    centres = np.asarray(camera_centres, dtype=np.float64)
    towards = centres - np.asarray(subject, dtype=np.float64)
    mean_direction = (towards / np.linalg.norm(towards, axis=1, keepdims=True)).mean(axis=0)
    if centres.shape[0] >= 3:
        _, singular, vt = np.linalg.svd(centres - centres.mean(axis=0))
        if singular[1] > 1e-6 * max(singular[0], 1e-12):
            normal = vt[2]
            return -normal if float(np.dot(normal, mean_direction)) < 0 else normal
    norm = float(np.linalg.norm(mean_direction))
    return mean_direction / norm if norm > 0.1 else None


def cross3(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``np.cross`` of ``(..., 3)`` vectors without its axis handling (~20x faster for one pair).

    The body checks take a few cross products per frame and per hypothesis;
    ``np.cross`` spends most of its time normalising axes.
    """
    first, second = np.asarray(first), np.asarray(second)
    return np.stack([first[..., 1] * second[..., 2] - first[..., 2] * second[..., 1],
                     first[..., 2] * second[..., 0] - first[..., 0] * second[..., 2],
                     first[..., 0] * second[..., 1] - first[..., 1] * second[..., 0]], axis=-1)


def lateral_direction(points_3d: np.ndarray, up: np.ndarray, axis_from: int, axis_to: int,
                      max_tilt: float) -> np.ndarray | None:
    """``(3,)`` unit vector across the body in one frame's ``points_3d (K, 3)``; None if unknown.

    The cross product of the rig's ``up`` direction with the body axis
    ``points_3d[axis_to] - points_3d[axis_from]``. Unknown when an axis
    keypoint is missing or the axis is within ``acos(max_tilt)`` of vertical
    (a rearing or climbing animal: across the body is then undefined by up).
    """
    lateral, known = lateral_directions((points_3d[axis_to] - points_3d[axis_from])[None], up,
                                        max_tilt)
    return lateral[0] if known[0] else None


def lateral_directions(axis: np.ndarray, up: np.ndarray, max_tilt: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lateral_direction` of many body axes ``axis (n, 3)`` -> unit vectors ``(n, 3)`` and ``known (n,)``.

    Rows not known (an axis with NaN, of zero length, or upright) hold NaN or
    meaningless values: use ``known``.
    """
    length = np.linalg.norm(axis, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        known = np.isfinite(length) & (length > 0) & (np.abs(axis @ up) < max_tilt * length)
        lateral = cross3(up, axis)
        return lateral / np.linalg.norm(lateral, axis=1, keepdims=True), known


def side_model(seed_points_3d: np.ndarray, twin: np.ndarray, left: np.ndarray,
               regions: Sequence[Sequence[int]], up: np.ndarray | None,
               min_seed_offset: float = 2.0, max_tilt: float = 0.8) -> SideModel | None:
    """Learn the body axis and the rig's handedness from ``seed_points_3d (n_seeds, K, 3)``.

    ``twin (K,)`` is each keypoint's twin (itself on the midline) and
    ``left (K,)`` marks the left twins (:mod:`tools.keypoint_names`);
    ``regions`` lists the keypoint indices of each region. The axis spans the
    region holding most of the midline keypoints nearest each pair the seeds
    show (for a mouse: back_top -> back_bottom). Which side of
    :func:`lateral_direction` is left depends on the rig's coordinates: every
    pair the seed frames show apart, on average by at least
    ``min_seed_offset``, and in the same order in each frame must agree on
    it. Then every pair is sided, those the seeds never show too (a forepaw
    hidden in the seed frames): those whose regions hold keypoints of other
    pairs in ``pairs``, the others in ``vouching_pairs``. None when
    there is no up direction or axis, or the seeds show no pair apart or
    disagree.
    """
    twin, left = np.asarray(twin), np.asarray(left, dtype=bool)
    seeds = check_shape("seed_points_3d", seed_points_3d, (None, twin.size, 3))
    check_shape("left", left, (twin.size,))
    if up is None:
        return None
    known_in = np.all(np.isfinite(seeds), axis=2)  # (n_seeds, K)
    counts = known_in.sum(axis=0)
    sums = np.where(known_in[..., None], seeds, 0.0).sum(axis=0)
    mean_points = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)
    pairs = [(k, int(twin[k])) for k in range(twin.size) if twin[k] > k]
    axis = _axis_keypoints(mean_points, twin, pairs, regions)
    if axis is None:
        return None
    model = SideModel(up=np.asarray(up, dtype=np.float64), axis_from=axis[0], axis_to=axis[1],
                      pairs=())
    votes = set()
    for first, second in pairs:
        lefts_offset = np.array([_offset(frame_points, model, first, second, max_tilt)
                                 for frame_points in seeds])
        if not left[first]:
            lefts_offset = -lefts_offset
        lefts_offset = lefts_offset[np.isfinite(lefts_offset)]
        if lefts_offset.size and (np.all(lefts_offset > 0) or np.all(lefts_offset < 0)) \
                and abs(float(lefts_offset.mean())) >= min_seed_offset:
            votes.add(bool(lefts_offset.mean() > 0))
    if len(votes) != 1:
        return None
    left_positive = votes.pop()
    # Only pairs whose regions hold other pairs (the paws) are put on their sides: any other
    # pair (the ears, alone in their region or beside a back keypoint) keeps the tracker's
    # sides (bench/results/pose.md, sessions 9 and 15), and its order, being left alone,
    # stays evidence (order_vouches).
    sided = {pair: SidedPair(*pair) if left[pair[0]] == left_positive
             else SidedPair(pair[1], pair[0]) for pair in pairs}
    ordered = [p for p in pairs if _among_other_pairs(*p, twin, regions)]
    return replace(model, pairs=tuple(sided[p] for p in ordered),
                   vouching_pairs=tuple(sided[p] for p in pairs if p not in ordered))


def _among_other_pairs(first: int, second: int, twin: np.ndarray,
                       regions: Sequence[Sequence[int]]) -> bool:
    """Whether the region of each twin holds a keypoint of another left/right pair.

    That keypoint's twin may lie in another region (left and right paws in
    regions of their own); :func:`tools.body_distances.region_relabeling`
    by contrast moves points only among pairs whole within one region.

    A tracker confuses keypoints of one region with each other, and a paw
    with a paw of the other pair (forepaws and hind paws) ends up on the
    wrong side; a pair beside midline keypoints only (ears with a back
    keypoint) reverses with the head's turns more often than it is confused.
    """
    return all(any(k not in (first, second) and twin[k] != k
                   for members in regions if member in members for k in members)
               for member in (first, second))


def _axis_keypoints(mean_points: np.ndarray, twin: np.ndarray, pairs: list[tuple[int, int]],
                    regions: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """The two most distant midline keypoints of the region nearest the pairs the seeds show.

    Where that region holds fewer than two midline keypoints: of all midline
    keypoints. The regions are the recording's: with a head region holding
    the nose and the neck, the axis would be the head's.
    """
    known = np.all(np.isfinite(mean_points), axis=1)
    midline = np.flatnonzero((twin == np.arange(twin.size)) & known)
    region_of = {k: r for r, members in enumerate(regions) for k in members}
    anchored: list[int] = []
    for first, second in pairs:
        if known[first] and known[second] and midline.size:
            centre = (mean_points[first] + mean_points[second]) / 2
            nearest = midline[np.argmin(np.linalg.norm(mean_points[midline] - centre, axis=1))]
            anchored.append(region_of.get(int(nearest), -1))
    if not anchored:
        return None
    region = max(sorted(set(anchored)), key=anchored.count)
    members = [k for k in midline.tolist() if region_of.get(k) == region]
    if len(members) < 2:
        members = midline.tolist()
    spans = [(float(np.linalg.norm(mean_points[a] - mean_points[b])), a, b)
             for i, a in enumerate(members) for b in members[i + 1:]]
    if not spans:
        return None
    _, first, second = max(spans)
    return first, second


def _offset(points_3d: np.ndarray, model: SideModel, first: int, second: int,
            max_tilt: float) -> float:
    """How far ``first`` lies on the positive side of ``second`` across the body (NaN unknown)."""
    lateral = lateral_direction(points_3d, model.up, model.axis_from, model.axis_to, max_tilt)
    return float("nan") if lateral is None else _offset_along(points_3d, lateral, first, second)


def _offset_along(points_3d: np.ndarray, lateral: np.ndarray, first: int, second: int) -> float:
    """:func:`_offset` given the frame's ``lateral`` direction (NaN where a twin is missing)."""
    if not np.all(np.isfinite(points_3d[[first, second]])):
        return float("nan")
    return float((points_3d[first] - points_3d[second]) @ lateral)


def order_by_side(points_3d: np.ndarray, model: SideModel, margin: float,
                  max_tilt: float = 0.8) -> np.ndarray:
    """``(K,)`` permutation that puts each pair of ``points_3d (K, 3)`` on its seed frames' sides.

    Keypoint ``k`` takes the point of ``source[k]``: a pair whose points are
    reversed across the body by more than ``margin`` is exchanged; pairs
    closer to the midline, with a twin missing or an upright axis stay.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    source = np.arange(points_3d.shape[0])
    # One lateral direction serves every pair of the frame.
    lateral = lateral_direction(points_3d, model.up, model.axis_from, model.axis_to, max_tilt)
    if lateral is None:
        return source
    for pair in model.pairs:
        if _offset_along(points_3d, lateral, pair.positive, pair.negative) < -margin:
            source[[pair.positive, pair.negative]] = pair.negative, pair.positive
    return source


def reversed_vouching_pairs(points_3d: np.ndarray, model: SideModel, margin: float,
                            max_tilt: float = 0.8) -> np.ndarray:
    """``(n_frames, K)`` bool: twins of ``model.vouching_pairs`` lying reversed across the body by more than ``margin``.

    ``points_3d (n_frames, K, 3)``. The opposite of :func:`order_vouches`,
    frame by frame: a pair the tracker keeps exchanged (the ears after a
    landing) lies reversed for as long as the true pair lies on its sides.
    False where a twin or an axis keypoint is missing or the axis is upright.
    """
    points_3d = check_shape("points_3d", points_3d, (None, None, 3))
    reversed_twins = np.zeros(points_3d.shape[:2], bool)
    for pair in model.vouching_pairs:
        # Frame by frame with order_vouches' own offset (a results step: a few ms a run).
        offsets = np.array([_offset(frame, model, pair.positive, pair.negative, max_tilt)
                            for frame in points_3d])
        reversed_pair = np.nan_to_num(offsets, nan=np.inf) < -margin
        reversed_twins[reversed_pair, pair.positive] = True
        reversed_twins[reversed_pair, pair.negative] = True
    return reversed_twins


def lies_on_sides(points_3d: np.ndarray, model: SideModel, keypoint: int, margin: float,
                  max_tilt: float = 0.8) -> bool:
    """Whether ``keypoint``'s pair in ``model.pairs`` lies on its seed frames' sides by more than ``margin``.

    False where the keypoint has no such pair, a twin or an axis keypoint is
    missing, or the axis is upright.
    """
    for pair in model.pairs:
        if keypoint in (pair.positive, pair.negative):
            return _offset(points_3d, model, pair.positive, pair.negative, max_tilt) > margin
    return False


def order_vouches(points_3d: np.ndarray, model: SideModel, margin: float,
                  max_tilt: float = 0.8) -> np.ndarray:
    """``(K,)`` bool: twins of ``model.vouching_pairs`` that lie on their seed frames' sides by more than ``margin``.

    :func:`order_by_side` leaves those pairs in the tracker's order, so the
    order is evidence on their sides: a pair whose labels were exchanged
    shows it so only while the true pair is reversed by ``margin`` (ears: 7%
    of frames on the shipped true motion). False for every other keypoint.
    """
    points_3d = check_shape("points_3d", points_3d, (None, 3))
    vouched = np.zeros(points_3d.shape[0], bool)
    for pair in model.vouching_pairs:
        if _offset(points_3d, model, pair.positive, pair.negative, max_tilt) > margin:
            vouched[[pair.positive, pair.negative]] = True
    return vouched
