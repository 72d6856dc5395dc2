"""The behavior script of the simulator: who does what, when, and how each bout moves.

Time is cut into episodes shared by all animals. In a social episode a
group of animals first approaches a joint configuration (``locomotion``)
and then performs the social behavior; the other animals fill the episode
with one or two solo bouts. A solo bout never repeats the label of the
bout before it, so every ground-truth bout is one scripted bout of 1 to 6 s
(rare exception: the passive target of an oral-genital contact, still
before and during it, up to 6 s in total).

Body poses are (x, y, heading, bend, head yaw) per frame; lengths scale
with the image size. Used by :mod:`tools.behavior_sim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

SCRIPT_LABELS: tuple[str, ...] = (
    "locomotion", "exploring", "stationary", "feeding", "grooming",
    "chase", "huddle", "oral_genital_contact", "oral_oral_contact",
)
SOCIAL_LABELS = ("chase", "huddle", "oral_genital_contact", "oral_oral_contact")
_SOLO_WEIGHTS = {"locomotion": 0.25, "exploring": 0.25, "stationary": 0.15, "grooming": 0.15, "feeding": 0.3}
_SOCIAL_PROBABILITY = 0.45
# Speeds at 512 px, px/s.
_LOCOMOTION_SPEED = (100.0, 190.0)
_EXPLORING_SPEED = (22.0, 45.0)
_CHASE_SPEED = (150.0, 210.0)
_APPROACH_SPEED = (80.0, 240.0)


@dataclass
class Segment:
    """Poses of one bout: arrays of shape (n_frames,), and its label."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    bend: np.ndarray
    yaw: np.ndarray
    label: str

    def end_pose(self) -> tuple[float, float, float]:
        return float(self.x[-1]), float(self.y[-1]), float(self.heading[-1])


@dataclass
class AnimalTrack:
    """The bouts of one animal so far."""

    body_length: float
    start: tuple[float, float, float]
    segments: list[Segment] = field(default_factory=list)

    @property
    def frame(self) -> int:
        return sum(len(seg.x) for seg in self.segments)

    @property
    def pose(self) -> tuple[float, float, float]:
        return self.segments[-1].end_pose() if self.segments else self.start

    @property
    def last_label(self) -> str | None:
        return self.segments[-1].label if self.segments else None

    def pose_columns(self) -> list[list[np.ndarray]]:
        """Per pose component, the arrays of all segments (for concatenation)."""
        return [[getattr(seg, name) for seg in self.segments] for name in ("x", "y", "heading", "bend", "yaw")]


@dataclass(frozen=True)
class _World:
    fps: float
    size: int
    food_zone: tuple[float, float, float, float]
    rng: np.random.Generator
    scale: float

    @property
    def low(self) -> float:
        return 0.12 * self.size

    @property
    def high(self) -> float:
        return 0.88 * self.size

    def frames(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.fps)))

    def uniform_s(self, low: float, high: float) -> int:
        return self.frames(float(self.rng.uniform(low, high)))


def script_session(
    *, n_animals: int, n_frames: int, fps: float, size: int, body_length: np.ndarray,
    food_zone: tuple[float, float, float, float], rng: np.random.Generator,
) -> list[AnimalTrack]:
    """Script and generate all bouts of all animals, at least ``n_frames`` long each."""
    world = _World(fps=fps, size=size, food_zone=food_zone, rng=rng, scale=size / 512.0)
    tracks = [
        AnimalTrack(float(length), (*rng.uniform(world.low, world.high, 2), rng.uniform(-np.pi, np.pi)))
        for length in body_length
    ]
    one_second = world.frames(1.0)
    while (remaining := n_frames - tracks[0].frame) > 0:
        if remaining <= 6 * one_second:
            _fill_solo_all(world, tracks, [], remaining, last=True)
            break
        budget = remaining - one_second
        if n_animals >= 2 and rng.random() < _SOCIAL_PROBABILITY and _social_episode(world, tracks, budget):
            continue
        _fill_solo_all(world, tracks, [], min(world.uniform_s(1.5, 6.0), budget), last=False)
    return tracks


def _fill_solo_all(world: _World, tracks: list[AnimalTrack], busy: list[int], n: int, *, last: bool) -> None:
    """Fill the episode of ``n`` frames of every animal not in ``busy`` with solo bouts.

    Each animal keeps its distance from the others' positions in the
    episode: those already generated, and the current pose of the rest.
    """
    start = min(track.frame for track in tracks)
    for index, track in enumerate(tracks):
        if index in busy:
            continue
        others = np.stack([_positions(other, start, n) for i, other in enumerate(tracks) if i != index], 1) \
            if len(tracks) > 1 else np.empty((n, 0, 2))
        _fill_solo(world, track, n, others, allow_split=not last, allow_feeding=not last)


def _positions(track: AnimalTrack, start: int, n: int) -> np.ndarray:
    """Centre positions ``(n, 2)`` of ``track`` from frame ``start``; its last pose where not generated."""
    xs = np.concatenate([seg.x for seg in track.segments]) if track.segments else np.empty(0)
    ys = np.concatenate([seg.y for seg in track.segments]) if track.segments else np.empty(0)
    known = np.stack([xs[start:start + n], ys[start:start + n]], axis=-1)
    missing = n - len(known)
    return np.concatenate([known, np.tile(track.pose[:2], (missing, 1))]) if missing > 0 else known


def _fill_solo(
    world: _World, track: AnimalTrack, n: int, others: np.ndarray, *, allow_split: bool, allow_feeding: bool
) -> None:
    """Fill ``n`` frames of ``track`` with one or two solo bouts, away from ``others (n, k, 2)``.

    A still bout is only chosen where no other animal comes close (that
    would be a huddle), and a feeding bout only where the food zone is free.
    """
    one_second = world.frames(1.0)
    if allow_split and n >= 2.5 * one_second and world.rng.random() < 0.4:
        first = int(world.rng.integers(one_second, n - one_second + 1))
        lengths = [first, n - first]
    else:
        lengths = [n]
    offset = 0
    for length in lengths:
        nearby = others[offset:offset + length]
        offset += length
        personal = 1.6 * track.body_length
        labels = [label for label in _SOLO_WEIGHTS if label != track.last_label]
        if track.last_label == "feeding" or _closest(nearby, track.pose) < personal:
            labels = [label for label in labels if label in ("locomotion", "exploring")]
        feed_at = _food_spot(world, track, nearby) if allow_feeding else None
        if (feed_at is None or length < 2.5 * one_second or track.last_label == "locomotion"
                or _closest(nearby, feed_at) < personal):
            labels = [label for label in labels if label != "feeding"]
        weights = np.array([_SOLO_WEIGHTS[label] for label in labels])
        label = str(world.rng.choice(labels, p=weights / weights.sum()))
        if label == "feeding" and feed_at is not None:
            _feed(world, track, length, feed_at)
        else:
            track.segments.append(_solo(world, track, label, length, nearby))


def _closest(others: np.ndarray, point: tuple[float, ...]) -> float:
    """Smallest distance from ``point`` to ``others (n, k, 2)`` over all frames (inf when none)."""
    if others.size == 0:
        return float("inf")
    return float(np.min(np.hypot(others[..., 0] - point[0], others[..., 1] - point[1])))


def _food_spot(world: _World, track: AnimalTrack, others: np.ndarray) -> tuple[float, float, float]:
    """Feeding pose in the food zone, facing the wall, farthest from the others."""
    x0, y0, x1, y1 = world.food_zone
    candidates = world.rng.uniform(x0 + 0.2 * (x1 - x0), x1 - 0.2 * (x1 - x0), 5)
    y = (y0 + y1) / 2 + 0.5 * track.body_length
    best = max(candidates, key=lambda x: _closest(others, (x, y)))
    return float(best), float(y), -np.pi / 2


def _solo(world: _World, track: AnimalTrack, label: str, n: int, others: np.ndarray | None = None) -> Segment:
    rng = world.rng
    others = np.empty((n, 0, 2)) if others is None else others
    if label == "locomotion":
        speed = rng.uniform(*_LOCOMOTION_SPEED)
        return _wander(world, track, n, speed, turn_sd=1.2, sway=0.1, label=label, others=others)
    if label == "exploring":
        speed = rng.uniform(*_EXPLORING_SPEED)
        return _wander(world, track, n, speed, turn_sd=2.5, sway=0.3, label=label, others=others)
    segment = _still(world, track, n, label)
    if label == "grooming":
        t = np.arange(n) / world.fps
        envelope = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 0.5
        segment.bend = rng.uniform(0.9, 1.2) * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * t) * envelope
        segment.yaw = 0.5 * segment.bend
    return segment


def _feed(world: _World, track: AnimalTrack, n: int, target: tuple[float, float, float]) -> None:
    """Approach the food zone (locomotion), then feed with the nose in it, facing the wall."""
    approach = _approach_frames(world, track.pose, target, max_frames=n - world.frames(1.5))
    track.segments.append(_approach(world, track, target, approach))
    feeding = _still(world, track, n - approach, "feeding")
    feeding.yaw = 0.15 * np.sin(2 * np.pi * 1.5 * np.arange(n - approach) / world.fps)
    track.segments.append(feeding)


def _approach_frames(
    world: _World, start: tuple[float, float, float], end: tuple[float, float, float], max_frames: int
) -> int:
    distance = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    seconds = distance / (world.rng.uniform(110.0, 170.0) * world.scale)
    return int(np.clip(world.frames(seconds), world.frames(1.0), max(world.frames(1.0), max_frames)))


def _social_episode(world: _World, tracks: list[AnimalTrack], budget: int) -> bool:
    """Script one social episode if the animals allow it; False when none fits."""
    rng = world.rng
    kind = str(rng.choice(SOCIAL_LABELS))
    active = [i for i, track in enumerate(tracks) if track.last_label != "locomotion"]
    approach = world.uniform_s(1.2, 2.5)
    social = world.uniform_s(1.5, 4.5)
    if not active or approach + social > budget:
        return False
    first = int(rng.choice(active))
    others = [i for i in range(len(tracks)) if i != first]
    if kind in ("chase", "oral_genital_contact"):
        partner = int(rng.choice(others))
        social = _passive_then_active(world, tracks[partner], tracks[first], kind, approach, social)
        group = [first, partner]
    else:
        partners = [i for i in active if i != first]
        if not partners:
            return False
        size = 3 if kind == "huddle" and len(partners) >= 2 and rng.random() < 0.4 else 2
        group = [first, *(int(i) for i in rng.choice(partners, size - 1, replace=False))]
        _meet(world, [tracks[i] for i in group], kind, approach, social)
    _fill_solo_all(world, tracks, group, approach + social, last=False)
    return True


def _passive_then_active(
    world: _World, passive: AnimalTrack, actor: AnimalTrack, kind: str, approach: int, social: int
) -> int:
    """Chase (leader runs, follower behind) or oral-genital contact (nose at the still target's tail base).

    Returns the length of the social bout, in frames (shortened so that a
    target still before and during the contact stays within 6 s).
    """
    slow = "exploring" if passive.last_label == "stationary" else "stationary"
    if kind == "oral_genital_contact" and slow == "stationary":
        social = min(social, world.frames(6.0) - approach)
    passive.segments.append(_solo(world, passive, slow, approach))
    px, py, ph = passive.pose
    gap = (1.2 if kind == "chase" else 1.05) * passive.body_length / 2 + actor.body_length / 2
    if kind == "oral_genital_contact":
        gap = 0.5 * passive.body_length + 0.55 * actor.body_length
    target = (px - gap * np.cos(ph), py - gap * np.sin(ph), ph)
    actor.segments.append(_approach(world, actor, target, approach))
    if kind == "chase":
        speed = world.rng.uniform(*_CHASE_SPEED)
        leader = _wander(world, passive, social, speed, turn_sd=1.0, sway=0.05, label="locomotion")
        passive.segments.append(leader)
        actor.segments.append(_follow(leader, gap, "chase"))
    else:
        passive.segments.append(_still(world, passive, social, "stationary"))
        actor.segments.append(_still(world, actor, social, kind, sway=0.15))
    return social


def _meet(world: _World, group: list[AnimalTrack], kind: str, approach: int, social: int) -> None:
    """Huddle (side by side) or oral-oral contact (nose to nose): approach, then stay."""
    rng = world.rng
    best, best_cost = None, np.inf
    for _ in range(40):
        centre = rng.uniform(world.low + 40 * world.scale, world.high - 40 * world.scale, 2)
        heading = rng.uniform(-np.pi, np.pi)
        poses = _formation(group, kind, centre, heading)
        speeds = [np.hypot(p[0] - t.pose[0], p[1] - t.pose[1]) * world.fps / approach for p, t in
                  zip(poses, group, strict=True)]
        low, high = (s * world.scale for s in _APPROACH_SPEED)
        cost = sum(max(0.0, low - s) + max(0.0, s - high) for s in speeds)
        if cost < best_cost:
            best, best_cost = poses, cost
        if cost == 0.0:
            break
    for track, pose in zip(group, best, strict=True):
        track.segments.append(_approach(world, track, pose, approach))
        track.segments.append(_still(world, track, social, kind, sway=0.15 if kind != "huddle" else 0.03))


def _formation(
    group: list[AnimalTrack], kind: str, centre: np.ndarray, heading: float
) -> list[tuple[float, float, float]]:
    along = np.array([np.cos(heading), np.sin(heading)])
    across = np.array([-along[1], along[0]])
    if kind == "huddle":
        spacing = 0.42 * np.mean([t.body_length for t in group])
        offsets = [(i - (len(group) - 1) / 2) * spacing * across for i in range(len(group))]
        return [(*(centre + offset), heading) for offset in offsets]
    first, second = group
    reach = [0.5 * first.body_length + 1.5, 0.5 * second.body_length + 1.5]
    return [(*(centre - reach[0] * along), heading), (*(centre + reach[1] * along), heading + np.pi)]


def _smooth_noise(rng: np.random.Generator, n: int, sd: float, sigma_frames: float) -> np.ndarray:
    noise = gaussian_filter1d(rng.normal(0.0, 1.0, n + 1), sigma_frames, mode="reflect")[:n]
    spread = noise.std()
    return noise * (sd / spread) if spread > 0 else noise


def _still(world: _World, track: AnimalTrack, n: int, label: str, sway: float = 0.05) -> Segment:
    rng = world.rng
    x, y, heading = track.pose
    jitter = 0.6 * world.scale
    return Segment(
        x=x + _smooth_noise(rng, n, jitter, 4.0), y=y + _smooth_noise(rng, n, jitter, 4.0),
        heading=heading + _smooth_noise(rng, n, 0.03, 6.0), bend=_smooth_noise(rng, n, 0.03, 6.0),
        yaw=_smooth_noise(rng, n, sway, 3.0), label=label,
    )


def _wander(
    world: _World, track: AnimalTrack, n: int, speed: float, *, turn_sd: float, sway: float, label: str,
    others: np.ndarray | None = None,
) -> Segment:
    """Move at ``speed`` (px/s at 512 px) with a smooth random turning rate.

    Steers away from the walls and from other animals (``others (n, k, 2)``)
    closer than two body lengths.
    """
    rng = world.rng
    speed_px = speed * world.scale * (1.0 + _smooth_noise(rng, n, 0.12, world.fps / 2))
    turning = _smooth_noise(rng, n, turn_sd, world.fps / 4)
    x, y, heading = track.pose
    centre = world.size / 2
    xs, ys, headings, rates = (np.empty(n) for _ in range(4))
    for i in range(n):
        lookahead = 0.5 * speed_px[i] + track.body_length
        ahead_x, ahead_y = x + lookahead * np.cos(heading), y + lookahead * np.sin(heading)
        rate = turning[i]
        if others is not None and others.shape[1]:
            gaps = others[i] - (x, y)
            closest = int(np.argmin(np.hypot(gaps[:, 0], gaps[:, 1])))
            if np.hypot(*gaps[closest]) < 2.0 * track.body_length:
                away = np.arctan2(-gaps[closest, 1], -gaps[closest, 0])
                rate += 6.0 * np.angle(np.exp(1j * (away - heading)))
        if not (world.low < ahead_x < world.high and world.low < ahead_y < world.high):
            to_centre = np.arctan2(centre - y, centre - x)
            rate += 5.0 * np.angle(np.exp(1j * (to_centre - heading)))
        heading += rate / world.fps
        x = float(np.clip(x + speed_px[i] / world.fps * np.cos(heading), world.low, world.high))
        y = float(np.clip(y + speed_px[i] / world.fps * np.sin(heading), world.low, world.high))
        xs[i], ys[i], headings[i], rates[i] = x, y, heading, rate
    bend = np.clip(gaussian_filter1d(0.3 * rates, 2.0), -0.7, 0.7)
    t = np.arange(n) / world.fps
    yaw = sway * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t + rng.uniform(0, 2 * np.pi))
    return Segment(xs, ys, headings, bend, yaw, label)


def _approach(world: _World, track: AnimalTrack, end: tuple[float, float, float], n: int) -> Segment:
    """Walk to ``end`` pose in ``n`` frames (locomotion), detouring when the target is close.

    The path is a quadratic Bezier curve whose control point is pushed sideways
    until the path is long enough for a walking speed; the speed profile is a
    trapezoid and the heading turns to the target heading in the last frames.
    """
    rng = world.rng
    start = np.array(track.pose[:2])
    stop = np.array(end[:2])
    chord = float(np.linalg.norm(stop - start))
    wanted = rng.uniform(*_LOCOMOTION_SPEED) * world.scale * n / world.fps
    middle = (start + stop) / 2
    direction = (stop - start) / chord if chord > 1e-6 else np.array([1.0, 0.0])
    side = np.array([-direction[1], direction[0]]) * rng.choice([-1.0, 1.0])
    offset = np.sqrt(max(0.0, (wanted / 2) ** 2 - (chord / 2) ** 2))
    control = np.clip(middle + 2 * offset * side, world.low, world.high)
    dense = np.linspace(0.0, 1.0, 400)[:, None]
    curve = (1 - dense) ** 2 * start + 2 * (1 - dense) * dense * control + dense ** 2 * stop
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    ramp = max(1, world.frames(0.2))
    profile = np.minimum(np.minimum(np.arange(1, n + 1), np.arange(n, 0, -1)) / ramp, 1.0)
    travelled = np.cumsum(profile) / profile.sum() * arc[-1]
    xs = np.interp(travelled, arc, curve[:, 0])
    ys = np.interp(travelled, arc, curve[:, 1])
    tangent = np.unwrap(np.arctan2(np.gradient(ys), np.gradient(xs))) if n > 1 else np.array([end[2]])
    turn = np.clip((np.arange(n) - (n - 1 - world.frames(0.4))) / max(1, world.frames(0.4)), 0.0, 1.0)
    delta = np.angle(np.exp(1j * (end[2] - tangent)))
    heading = tangent + turn * delta
    bend = np.clip(gaussian_filter1d(0.3 * np.gradient(heading) * world.fps, 2.0), -0.7, 0.7)
    return Segment(xs, ys, heading, bend, 0.05 * np.sin(np.arange(n) / 3.0), "locomotion")


def _follow(leader: Segment, gap: float, label: str) -> Segment:
    """Trail ``leader`` along its own path at ``gap`` px of arc length behind its centre."""
    n = len(leader.x)
    back = np.linspace(-3 * gap, 0.0, 60)[:-1]
    x = np.concatenate([leader.x[0] + back * np.cos(leader.heading[0]), leader.x])
    y = np.concatenate([leader.y[0] + back * np.sin(leader.heading[0]), leader.y])
    heading = np.concatenate([np.full(len(back), leader.heading[0]), leader.heading])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    arc = np.maximum.accumulate(arc + np.arange(len(arc)) * 1e-9)
    query = arc[len(back):] - gap
    bend = np.interp(query, arc, np.concatenate([np.zeros(len(back)), leader.bend]))
    return Segment(
        np.interp(query, arc, x), np.interp(query, arc, y), np.interp(query, arc, heading), bend,
        0.05 * np.sin(np.arange(n) / 2.0), label,
    )
