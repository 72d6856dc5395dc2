"""Templated, numeric descriptions of clips and segments (used by :mod:`tools.behavior_rules`).

Directions are compass points of the image: north is up (negative y).
A bearing is the direction of the other animal relative to this animal's
heading, positive clockwise in the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_COMPASS = ("east", "south-east", "south", "south-west", "west", "north-west", "north", "north-east")
_MAX_PARTS = 3
Value = float | int | str | None


def compass(heading_deg: float) -> str:
    """Compass point of an image-axes heading in degrees (0 = east, 90 = south)."""
    return _COMPASS[int(round((heading_deg % 360.0) / 45.0)) % 8]


def _side(bearing_deg: float) -> str:
    if abs(bearing_deg) <= 45.0:
        return "in front of it"
    if abs(bearing_deg) >= 135.0:
        return "behind it"
    return "to its right" if bearing_deg > 0 else "to its left"


def _trend(approach_px_s: Value) -> str:
    if not isinstance(approach_px_s, int | float):
        return "distance unknown"
    if approach_px_s > 5.0:
        return f"approaching at {approach_px_s:.0f} px/s"
    if approach_px_s < -5.0:
        return f"moving away at {-approach_px_s:.0f} px/s"
    return "keeping its distance"


def _motion(summary: Mapping[str, Value]) -> str:
    speed = summary.get("speed_px_s")
    if not isinstance(speed, int | float):
        return "position not measured"
    heading = summary.get("heading_deg")
    direction = f" heading {compass(float(heading))}" if isinstance(heading, int | float) else ""
    text = f"moves at {speed:.0f} px/s{direction}"
    path, net, turning = (summary.get(k) for k in ("path_px", "displacement_px", "turning_deg_s"))
    if isinstance(path, int | float) and isinstance(net, int | float):
        text += f" (path {path:.0f} px, net {net:.0f} px"
        text += f", turning {turning:.0f} deg/s)" if isinstance(turning, int | float) else ")"
    return text


def _body(summary: Mapping[str, Value]) -> str | None:
    length, reference, bend = (summary.get(k) for k in ("body_length_px", "reference_body_length_px",
                                                         "bend_sd_deg"))
    if not isinstance(length, int | float):
        return None
    shape = "extended" if not isinstance(reference, int | float) or length >= 0.85 * reference else "curled"
    bend_text = f", bend varies by {bend:.0f} deg" if isinstance(bend, int | float) else ""
    return f"body {shape} ({length:.0f} px{bend_text})"


def _social(summary: Mapping[str, Value]) -> list[str]:
    parts = []
    nearest, distance = summary.get("nearest_animal"), summary.get("nearest_distance_px")
    if isinstance(nearest, str) and isinstance(distance, int | float):
        bearing = summary.get("nearest_bearing_deg")
        where = f" {_side(float(bearing))}" if isinstance(bearing, int | float) else ""
        parts.append(f"nearest {nearest} at {distance:.0f} px{where}, "
                     f"{_trend(summary.get('nearest_approach_px_s'))}")
    reference = summary.get("reference_body_length_px")
    close = 1.0 * float(reference) if isinstance(reference, int | float) else 46.0
    for key, other_key, part in (("nose_nose_px", "nose_nose_animal", "nose"),
                                 ("nose_tailbase_px", "nose_tailbase_animal", "tail base")):
        value, other = summary.get(key), summary.get(other_key)
        if isinstance(value, int | float) and isinstance(other, str) and value < close:
            parts.append(f"nose {value:.0f} px from {other}'s {part}")
    return parts


def describe_clip(summary: Mapping[str, Value]) -> str:
    """One sentence of numbers for a clip summary (see :func:`tools.behavior_rules.summarize_clip`).

    Example: ``moves at 85 px/s heading north-east (path 120 px, net 100 px,
    turning 30 deg/s); body extended (47 px, bend varies by 5 deg); nearest
    mouse3 at 40 px behind it, approaching at 20 px/s``.
    """
    parts = [_motion(summary)]
    body = _body(summary)
    if body:
        parts.append(body)
    parts.extend(_social(summary))
    food = summary.get("food_zone_fraction")
    if isinstance(food, int | float) and food > 0:
        parts.append(f"nose in the food zone {100 * food:.0f}% of the time")
    return "; ".join(parts)


def describe_segment(
    label: str, start_frame: int, end_frame: int, fps: float, parts: Sequence[str], n_clips: int
) -> str:
    """Description of a merged segment from the descriptions of its clips.

    Consecutive identical clip descriptions are given once; at most the
    first two and the last are quoted.
    """
    duration = (end_frame - start_frame) / fps
    unique = [p for i, p in enumerate(parts) if p and (i == 0 or p != parts[i - 1])]
    if len(unique) > _MAX_PARTS:
        unique = [*unique[: _MAX_PARTS - 1], "...", unique[-1]]
    head = f"{label.replace('_', ' ')} for {duration:.1f} s ({n_clips} clip{'s' if n_clips != 1 else ''})"
    return head + (": " + " | then ".join(unique) if unique else "")
